//! Pods that really run (issue 7 item 6): the `e2e/kube` test bed with the workload
//! controllers, `posthorn operator`, and the test-only process kubelet (`e2e/kubelet`),
//! which binds the pods to its node and runs each as a `posthorn serve` process on its
//! own address with its volumes mounted where the pod spec says. Mail goes to a relay
//! host that is a sink run here (tests/common/sink.rs); a load generator submits with
//! AUTH over TLS through the Service's ready endpoints (tests/common/load.rs).
//!
//! Every scenario under load counts what got `250` and what reached the sink: lost must
//! be 0; duplicates are printed. A changed Secret reaches the running pods (the
//! kubelet's `..data` swap). No pod log may contain a panic.

mod common;

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;

use common::kube::{Kube, die_with_test};
use common::load::{Load, Outcome, Submission, submit};
use common::peers::{Guard, free_port};
use common::sink::Sink;
use common::{ALICE, ALICE_PASS, BOB, BOB_PASS, doveadm_hash};

/// The default controllers plus the ones that turn a Deployment or StatefulSet into
/// pods and pods into Endpoints, and the node lifecycle controller that would evict the
/// pods of a node whose heartbeat stops.
const CONTROLLERS: &str = "garbagecollector,namespace,serviceaccount,serviceaccount-token,\
                           deployment,replicaset,statefulset,endpoint,nodelifecycle";
/// The MailServer's pods and objects, whatever the workload kind.
const INSTANCE: &str = "app.kubernetes.io/instance=mail";
const IMAGE: &str = "posthorn:test";
/// Generous: a 2-core machine shared with other builds.
const READY: Duration = Duration::from_secs(180);
const DELIVERED: Duration = Duration::from_secs(120);
/// A recipient the pods relay to the sink; a domain literal needs no DNS.
const RCPT: &str = "sink@[127.0.0.1]";

/// The process kubelet, stopped with SIGTERM so it removes its pod addresses.
struct Kubelet {
    child: Child,
    root: Option<tempfile::TempDir>,
}

impl Kubelet {
    fn root(&self) -> &Path {
        self.root.as_ref().unwrap().path()
    }

    fn log(&self) -> String {
        fs::read_to_string(self.root().join("kubelet.log")).unwrap_or_default()
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        // SAFETY: kill has no memory effects.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking()
            && let Some(root) = self.root.take()
        {
            eprintln!("kubelet root kept: {}", root.keep().display());
        }
    }
}

/// The built kubelet binary (a workspace member, so not a CARGO_BIN_EXE of this crate):
/// `cargo build` it, a no-op when e2e/test.sh already did.
fn kubelet_binary() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cargo = Command::new(env!("CARGO"));
    // Without the variables cargo sets for this test: build scripts that watch them
    // (ring's CARGO_PKG_NAME) would rebuild, and rebuild again on the next plain build.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_PRIMARY_",
            "CARGO_TARGET_TMPDIR",
        ]
        .iter()
        .any(|p| name.starts_with(p))
        {
            cargo.env_remove(name);
        }
    }
    let status = cargo
        .args(["build", "-q", "-p", "posthorn-test-kubelet"])
        .current_dir(manifest)
        .status()
        .expect("running cargo build");
    assert!(status.success(), "building e2e/kubelet failed");
    Path::new(env!("CARGO_BIN_EXE_posthorn")).with_file_name("posthorn-test-kubelet")
}

struct Cluster {
    // Dropped in this order: the kubelet (and with it the pods), then the operator,
    // then the control plane.
    kubelet: Kubelet,
    _operator: Guard,
    sink: Sink,
    kube: Kube,
}

impl Cluster {
    fn start() -> Cluster {
        let kube = Kube::start_with_controllers(CONTROLLERS);
        let root = tempfile::Builder::new()
            .prefix("posthorn-kubelet.")
            .permissions(fs::Permissions::from_mode(0o755))
            .tempdir()
            .unwrap();
        // The pods run as their own user and read the sink's CA from here.
        let sink_dir = root.path().join("sink");
        fs::create_dir(&sink_dir).unwrap();
        fs::set_permissions(&sink_dir, fs::Permissions::from_mode(0o755)).unwrap();
        let sink = Sink::start(&sink_dir);
        fs::set_permissions(&sink.ca_file, fs::Permissions::from_mode(0o644)).unwrap();

        let users = kube.path("passwd");
        fs::write(
            &users,
            format!("{ALICE}:{}\n", doveadm_hash("SHA512-CRYPT", ALICE_PASS)),
        )
        .unwrap();
        kube.kubectl(&[
            "create",
            "secret",
            "generic",
            "mail-users",
            &format!("--from-file=passwd={}", users.display()),
        ]);

        let mut cmd = Command::new(env!("CARGO_BIN_EXE_posthorn"));
        let operator = die_with_test(&mut cmd)
            .args(["operator", "--identity", "pods", "--image", IMAGE])
            .arg("--metrics")
            .arg(format!("127.0.0.1:{}", free_port()))
            .env("KUBECONFIG", kube.kubeconfig())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(kube.path("operator.log")).unwrap())
            .spawn()
            .expect("starting posthorn operator");

        // Pod addresses of our own, in case another test bed runs a kubelet too.
        let network = format!("10.244.{}", std::process::id() % 250);
        let mut cmd = Command::new(kubelet_binary());
        let child = die_with_test(&mut cmd)
            .arg("--root")
            .arg(root.path())
            .args(["--pod-network", &network])
            .arg("--image")
            .arg(format!("{IMAGE}={}", env!("CARGO_BIN_EXE_posthorn")))
            .arg("--image-env")
            .arg(format!("{IMAGE}=SSL_CERT_FILE={}", sink.ca_file.display()))
            .env("KUBECONFIG", kube.kubeconfig())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(root.path().join("kubelet.log")).unwrap())
            .spawn()
            .expect("starting the kubelet");
        Cluster {
            kubelet: Kubelet {
                child,
                root: Some(root),
            },
            _operator: Guard(operator),
            sink,
            kube,
        }
    }

    fn apply_mailserver(&self, replicas: u32) {
        self.kube.apply(&format!(
            "apiVersion: posthorn.dev/v1alpha1\n\
             kind: MailServer\n\
             metadata: {{name: mail}}\n\
             spec:\n  \
               hostname: mail.example.com\n  \
               domains: [example.com]\n  \
               replicas: {replicas}\n  \
               users: {{secretName: mail-users}}\n  \
               relay: {{host: \"127.0.0.1:{}\"}}\n  \
               dns: {{externalDNS: false}}\n",
            self.sink.port
        ));
    }

    /// `kubectl patch KIND NAME --type merge -p PATCH`.
    fn merge_patch(&self, kind: &str, name: &str, patch: &str) {
        self.kube
            .kubectl(&["patch", kind, name, "--type", "merge", "-p", patch]);
    }

    /// The MailServer's pods (by label: Deployment or StatefulSet alike).
    fn pods(&self) -> Vec<Value> {
        self.kube.list("pods", INSTANCE)
    }

    /// Ready addresses of the Service's `submissions` port.
    fn endpoints(&self) -> Vec<SocketAddr> {
        endpoints(&self.kube)
    }

    /// Waits until `done` holds, with the pods and the kubelet's log in the failure.
    fn wait(&self, what: &str, timeout: Duration, mut done: impl FnMut(&Cluster) -> bool) {
        let start = Instant::now();
        while !done(self) {
            if start.elapsed() > timeout {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\npods:\n{}\nkubelet log (tail):\n{}\noperator log (tail):\n{}",
                    self.kube.kubectl(&["get", "pods", "-o", "wide"]),
                    tail(&self.kubelet.log(), 40),
                    tail(
                        &fs::read_to_string(self.kube.path("operator.log")).unwrap_or_default(),
                        20
                    ),
                );
            }
            thread::sleep(Duration::from_secs(1));
        }
    }

    /// `replicas` pods, all Ready and none terminating, behind as many ready endpoints,
    /// and the MailServer Ready.
    fn settled(&self, replicas: usize) -> bool {
        let pods = self.pods();
        let ready = pods.len() == replicas
            && pods
                .iter()
                .all(|p| p["metadata"]["deletionTimestamp"].is_null() && pod_ready(p));
        let server_ready = self.kube.get("mailserver", "mail").is_some_and(|s| {
            s["status"]["observedGeneration"] == s["metadata"]["generation"]
                && s["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
        });
        ready && server_ready && self.endpoints().len() == replicas
    }

    /// The certificate the pods serve (the generated self-signed one), to pin.
    fn server_cert(&self) -> CertificateDer<'static> {
        let secret = self
            .kube
            .get("secret", "mail-tls-self-signed")
            .expect("no self-signed TLS Secret");
        let pem = base64::engine::general_purpose::STANDARD
            .decode(secret["data"]["tls.crt"].as_str().unwrap())
            .unwrap();
        CertificateDer::from_pem_slice(&pem).unwrap()
    }

    fn submission(&self) -> Submission {
        Submission {
            user: ALICE.into(),
            password: ALICE_PASS.into(),
            rcpt: RCPT.into(),
            cert: self.server_cert(),
        }
    }

    /// Runs the load generator through `during`, a few seconds either side, then
    /// waits for the sink and prints and checks the counts.
    fn under_load(&self, scenario: &str, first_id: u64, during: impl FnOnce()) {
        let targets = Arc::new(RwLock::new(self.endpoints()));
        let stop = AtomicBool::new(false);
        let outcome: Outcome = thread::scope(|scope| {
            // The scope joins its threads even when `during` panics: stop them then too.
            let _stop = StopOnDrop(&stop);
            // Re-read the endpoints as kube-proxy would follow them.
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    *targets.write().unwrap() = self.endpoints();
                    thread::sleep(Duration::from_millis(500));
                }
            });
            let load = Load::start(
                targets.clone(),
                self.submission(),
                2,
                Duration::from_millis(50),
                first_id,
            );
            self.wait(
                "the load generator's first 250s",
                Duration::from_secs(60),
                |_| load.accepted_count() >= 10,
            );
            during();
            thread::sleep(Duration::from_secs(5));
            load.stop()
        });
        self.check_delivered(scenario, &outcome);
    }

    /// Every accepted id reached the sink at least once: prints accepted, delivered,
    /// lost and duplicates; fails on any loss.
    fn check_delivered(&self, scenario: &str, outcome: &Outcome) {
        let accepted = &outcome.accepted;
        let start = Instant::now();
        let mut received = self.sink.received();
        while !accepted.iter().all(|id| received.contains_key(id)) && start.elapsed() < DELIVERED {
            thread::sleep(Duration::from_millis(500));
            received = self.sink.received();
        }
        let lost: Vec<u64> = accepted
            .iter()
            .filter(|id| !received.contains_key(id))
            .copied()
            .collect();
        let delivered = accepted.len() - lost.len();
        let duplicates: usize = accepted
            .iter()
            .filter_map(|id| received.get(id))
            .map(|n| n - 1)
            .sum();
        let unacknowledged = received
            .keys()
            .filter(|id| {
                !accepted.contains(id) && (accepted.first()..=accepted.last()).contains(&Some(id))
            })
            .count();
        eprintln!(
            "{scenario}: accepted {}, delivered {delivered}, lost {}, duplicates {duplicates} \
             (submissions without 250: {}, of them delivered anyway: {unacknowledged})",
            accepted.len(),
            lost.len(),
            outcome.failures.len()
        );
        for failure in outcome.failures.iter().take(5) {
            eprintln!("  e.g. {failure}");
        }
        assert!(!accepted.is_empty(), "{scenario}: nothing was accepted");
        assert!(
            lost.is_empty(),
            "{scenario}: accepted but never delivered: {lost:?}"
        );
    }

    /// No pod's log contains a panic.
    fn assert_no_panics(&self) {
        let logs = self.kubelet.root().join("logs");
        let mut scanned = 0;
        for entry in fs::read_dir(&logs).unwrap() {
            let path = entry.unwrap().path();
            let text = fs::read_to_string(&path).unwrap();
            assert!(
                !text.contains("panicked"),
                "a panic in {}:\n{}",
                path.display(),
                tail(&text, 40)
            );
            scanned += 1;
        }
        assert!(scanned > 0, "no pod logs in {}", logs.display());
    }
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn pod_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn endpoints(kube: &Kube) -> Vec<SocketAddr> {
    let Some(endpoints) = kube.get("endpoints", "mail") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for subset in endpoints["subsets"].as_array().into_iter().flatten() {
        let Some(port) = subset["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == "submissions")
            .and_then(|p| p["port"].as_u64())
        else {
            continue;
        };
        for address in subset["addresses"].as_array().into_iter().flatten() {
            let ip = address["ip"].as_str().unwrap().parse().unwrap();
            found.push(SocketAddr::new(ip, port as u16));
        }
    }
    found
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn name(pod: &Value) -> String {
    pod["metadata"]["name"].as_str().unwrap().to_string()
}

/// (a) apply → Ready with 3 pods, mail through the endpoints delivered; (b) a rolling
/// update under load; (d) kill -9 of one pod's server under load. One function: the
/// scenarios share one control plane and its pods.
#[test]
fn pods_really_run() {
    let started = Instant::now();
    let phase = |what: &str| eprintln!("[{:>6.1} s] {what}", started.elapsed().as_secs_f64());
    let cluster = Cluster::start();
    phase("test bed, operator and kubelet up");

    // --- (a) apply → Ready with 3 pods; mail through every endpoint is delivered -------
    cluster.apply_mailserver(3);
    cluster.wait("3 ready pods and Ready=True", READY, |c| c.settled(3));
    phase("(a) MailServer Ready=True with 3 pods behind 3 endpoints");
    let node = cluster
        .kube
        .get("node", "posthorn-test-node")
        .expect("no Node");
    let pods = cluster.pods();
    for pod in &pods {
        assert_eq!(
            pod["spec"]["nodeName"],
            "posthorn-test-node",
            "{}",
            name(pod)
        );
        assert_eq!(pod["status"]["phase"], "Running", "{}", name(pod));
    }
    let mut ips: Vec<&str> = pods
        .iter()
        .map(|p| p["status"]["podIP"].as_str().unwrap())
        .collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 3, "each pod has its own address: {ips:?}");
    assert!(
        node["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    );
    let targets = Arc::new(RwLock::new(cluster.endpoints()));
    let load = Load::start(targets, cluster.submission(), 1, Duration::ZERO, 1);
    cluster.wait("30 messages accepted", Duration::from_secs(60), |_| {
        load.accepted_count() >= 30
    });
    let outcome = load.stop();
    assert!(
        outcome.failures.is_empty(),
        "(a) submissions failed: {:?}",
        outcome.failures
    );
    cluster.check_delivered("(a) apply", &outcome);
    phase("(a) mail through the endpoints delivered");

    // --- (b) a rolling update (a config field changes) under load ----------------------
    // By uid: a StatefulSet's new pod has its predecessor's name.
    let uid = |p: &Value| {
        p["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let before: BTreeSet<String> = cluster.pods().iter().map(uid).collect();
    cluster.under_load("(b) rolling update", 100_000, || {
        cluster.merge_patch(
            "mailserver",
            "mail",
            r#"{"spec": {"submission": {"maxMessageSize": "20Mi"}}}"#,
        );
        cluster.wait("the rollout to replace every pod", READY, |c| {
            c.settled(3) && c.pods().iter().all(|p| !before.contains(&uid(p)))
        });
        phase("(b) rollout done");
    });

    // --- (d) kill -9 of one pod's server under load -------------------------------------
    let victim = cluster.pods().into_iter().next().unwrap();
    let (victim_name, victim_uid) = (name(&victim), victim["metadata"]["uid"].clone());
    let pid_file = cluster
        .kubelet
        .root()
        .join(format!("pods/default/{victim_name}/posthorn.pid"));
    // The pod's queue claim as the kubelet keeps it: a mark left there must survive the
    // container's restart.
    let claim = victim["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "state")
        .and_then(|v| v["persistentVolumeClaim"]["claimName"].as_str())
        .expect("the pod's state volume is a claim")
        .to_string();
    let mark = cluster
        .kubelet
        .root()
        .join(format!("claims/default/{claim}/kill-9-mark"));
    fs::write(&mark, "").unwrap();
    cluster.under_load("(d) kill -9", 200_000, || {
        let pid: libc::pid_t = fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The server runs as the pod's user, not as the kubelet's root.
        let run_as = victim["spec"]["securityContext"]["runAsUser"]
            .as_u64()
            .unwrap();
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert_eq!(
            uid.split_whitespace().nth(1),
            Some(run_as.to_string().as_str()),
            "{uid}"
        );
        // SAFETY: kill has no memory effects.
        assert_eq!(
            unsafe { libc::kill(pid, libc::SIGKILL) },
            0,
            "kill -9 {pid}"
        );
        phase(&format!("(d) killed {victim_name}'s server (pid {pid})"));
        cluster.wait("the container to restart in the same pod", READY, |c| {
            c.kube.get("pod", &victim_name).is_some_and(|p| {
                p["metadata"]["uid"] == victim_uid
                    && p["status"]["containerStatuses"][0]["restartCount"] == 1
                    && pod_ready(&p)
            }) && c.settled(3)
        });
        phase("(d) restarted in the same pod, on the same volumes");
    });
    assert!(
        mark.exists(),
        "the restarted container lost its claim's contents"
    );

    // The node stayed Ready all along: its heartbeat kept the node lifecycle controller
    // (40 s grace) from marking it unknown.
    let node = cluster.kube.get("node", "posthorn-test-node").unwrap();
    let ready = node["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready["status"], "True", "{ready}");
    let beat: jiff::Timestamp = ready["lastHeartbeatTime"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let age = jiff::Timestamp::now().duration_since(beat);
    assert!(age.as_secs() < 30, "last node heartbeat {age:?} ago");

    // --- a Secret changes under running pods: the kubelet swaps `..data`, the server
    // reloads its users, and bob logs in without a restart ------------------------------
    let uids: Vec<Value> = cluster
        .pods()
        .iter()
        .map(|p| p["metadata"]["uid"].clone())
        .collect();
    let users = format!(
        "{ALICE}:{}\n{BOB}:{}\n",
        doveadm_hash("SHA512-CRYPT", ALICE_PASS),
        doveadm_hash("SHA512-CRYPT", BOB_PASS)
    );
    let patch = serde_json::json!({"stringData": {"passwd": users}}).to_string();
    cluster.merge_patch("secret", "mail-users", &patch);
    let bob = Submission {
        user: BOB.into(),
        password: BOB_PASS.into(),
        ..cluster.submission()
    };
    let mut id = 900_000;
    cluster.wait("bob to log in on every pod", Duration::from_secs(60), |c| {
        c.endpoints().iter().all(|target| {
            id += 1;
            submit(*target, &bob, id).is_ok()
        })
    });
    let after: Vec<Value> = cluster
        .pods()
        .iter()
        .map(|p| p["metadata"]["uid"].clone())
        .collect();
    assert_eq!(after, uids, "the Secret change replaced pods");
    phase("users Secret updated in place: bob logs in on every pod");

    cluster.assert_no_panics();
    phase("no panics in any pod log");
}

/// (c) scale 3 → 1 under load, with a slow relay so that every pod has a queue: the
/// pods that go away must deliver or hand over what they accepted before the operator
/// lowers the StatefulSet's replicas.
#[test]
fn scale_down_under_load() {
    let cluster = Cluster::start();
    cluster.apply_mailserver(3);
    cluster.wait("3 ready pods and Ready=True", READY, |c| c.settled(3));
    cluster.under_load("(c) scale 3 → 1", 300_000, || {
        // 10 s per message at the relay: deliveries back up while submissions go on.
        cluster.sink.set_delay(Duration::from_secs(10));
        thread::sleep(Duration::from_secs(15));
        cluster.merge_patch("mailserver", "mail", r#"{"spec": {"replicas": 1}}"#);
        cluster.wait("one pod left", READY, |c| c.settled(1));
        cluster.sink.set_delay(Duration::ZERO);
    });
    cluster.assert_no_panics();
}

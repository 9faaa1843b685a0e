//! The operator end to end against a real Kubernetes 1.20 API server (`e2e/kube`):
//! `posthorn operator` runs as a process with the test bed's kubeconfig while kubectl
//! applies the CRDs and the example MailServer, edits, deletes and breaks things, and
//! the API server is restarted under it. The audit log (one line per API write) counts
//! what the operator writes. Finally the pod it rendered is run here, as a process with
//! its volumes materialised, and answers every row of the behaviour contract
//! (docs/behaviour.md, tests/common/contract.rs) with the exact replies, delivering the
//! mail it accepts.
//!
//! One test function on purpose: the phases share one control plane (starting one takes
//! ~15 s) and the quiet minute runs while the pod runs through, which writes nothing.

mod common;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};

use common::contract::{self, Target};
use common::kube::{Kube, die_with_test};
use common::{
    ALICE, ALICE_PASS, BOB, BOB_PASS, Client, Dnsmasq, doveadm_hash, first_stdout_line, http_get,
    metric_sum, parse_listening_line, parse_metrics,
};

/// The operator's User-Agent, which tells its writes apart in the audit log.
const OPERATOR_AGENT: &str = "posthorn-operator/";
const INSTANCE: &str = "app.kubernetes.io/instance=mail";
/// Every kind the operator may create for a MailServer.
const KINDS: &str = "configmaps,statefulsets,deployments,services,secrets,poddisruptionbudgets,dnsendpoints,certificates";
/// How long the operator may take to react to anything through its watches.
const REACT: Duration = Duration::from_secs(20);
/// How long the watches may take to be back after an API server restart (they took ~5 s
/// here; the minute resync, which also repairs, is well beyond this).
const RECOVER: Duration = Duration::from_secs(15);

#[test]
fn operator_end_to_end() {
    let started = Instant::now();
    let phase = |what: &str| eprintln!("[{:>6.1} s] {what}", started.elapsed().as_secs_f64());

    let kube = Kube::start();
    phase("test bed up, CRDs applied");
    let passwd = format!(
        "{ALICE}:{}\n{BOB}:{}\n",
        doveadm_hash("SHA512-CRYPT", ALICE_PASS),
        doveadm_hash("SHA512-CRYPT", BOB_PASS)
    );
    let users = kube.path("passwd");
    fs::write(&users, passwd).unwrap();
    kube.kubectl(&[
        "create",
        "secret",
        "generic",
        "mail-users",
        &format!("--from-file=passwd={}", users.display()),
    ]);
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mailserver.yaml");
    kube.kubectl(&["apply", "-f", example.to_str().unwrap()]);
    let mut operator = Operator::start(&kube);

    // --- everything created, owned, and reported --------------------------------------
    let server = wait_for_status(&kube, &operator, "mail", |s| {
        cond(s, "DNSPublished").is_some()
    });
    phase("operator reconciled the example");
    let uid = server["metadata"]["uid"].as_str().unwrap().to_string();
    assert_condition(&server, "TLSReady", "False", "SelfSigned");
    assert_condition(&server, "Degraded", "False", "AsExpected");
    // No ExternalDNS runs: the records are written, not yet published.
    assert_condition(&server, "DNSPublished", "Unknown", "WaitingForExternalDNS");
    // No StatefulSet controller runs here: its status never says it saw the spec.
    assert_condition(&server, "Ready", "False", "RollingOut");
    let expected = [
        "ConfigMap/mail-config",
        "StatefulSet/mail",
        "Service/mail",
        "Service/mail-peers",
        "DNSEndpoint/mail",
        "Secret/mail-handover",
        "Secret/mail-tls-self-signed",
    ];
    assert_owned(&kube, &uid, &expected);

    // ExternalDNS takes the DNSEndpoint up: it reports the generation it read on the
    // status subresource, which the operator sees through its DNSEndpoint watch.
    let endpoint = kube.get("dnsendpoints", "mail").unwrap();
    let (status, body) = kube.api(
        "PATCH",
        "/apis/externaldns.k8s.io/v1alpha1/namespaces/default/dnsendpoints/mail/status",
        "application/merge-patch+json",
        &json!({"status": {"observedGeneration": endpoint["metadata"]["generation"]}}).to_string(),
    );
    assert_eq!(status, 200, "patching the DNSEndpoint status: {body}");
    let server = wait_for_status(&kube, &operator, "mail", |s| {
        cond(s, "DNSPublished").is_some_and(|c| c["status"] == "True")
    });
    assert_condition(&server, "DNSPublished", "True", "Published");
    phase("DNSPublished: Unknown until ExternalDNS reported the DNSEndpoint's generation");

    // An earlier operator's Deployment of the same name: kept while the StatefulSet is
    // not Ready.
    let reconciles = operator.reconciles();
    kube.apply(&old_deployment(&uid));
    wait_until(REACT, "a reconcile after the Deployment appeared", || {
        (operator.reconciles() > reconciles).then_some(())
    });
    let deployment = kube.get("deployment", "mail").unwrap();
    assert_eq!(deployment["spec"]["replicas"], 1, "scaled before Ready");

    // Ready: no kubelet runs pods here, so report the pod ready as a kubelet and the
    // StatefulSet controller would, on the status subresource.
    set_ready_replicas(&kube, 1);
    let server = wait_for_status(&kube, &operator, "mail", |s| {
        cond(s, "Ready").is_some_and(|c| c["status"] == "True")
    });
    assert_condition(&server, "Ready", "True", "Available");
    assert_eq!(server["status"]["readyReplicas"], 1);
    phase("Ready flipped with the StatefulSet's ready, updated replicas");

    // --- the old Deployment: scaled to 0 once the StatefulSet is Ready, then deleted --
    wait_until(REACT, "the old Deployment scaled to 0", || {
        let deployment = kube.get("deployment", "mail").expect("deleted too early");
        (deployment["spec"]["replicas"] == 0).then_some(())
    });
    thread::sleep(Duration::from_secs(2));
    assert!(
        kube.get("deployment", "mail").is_some(),
        "deleted before its controller saw the scale-down"
    );
    // Its controller (not run here) reports no pod left.
    let generation = kube.get("deployment", "mail").unwrap()["metadata"]["generation"].clone();
    let (status, body) = kube.api(
        "PATCH",
        "/apis/apps/v1/namespaces/default/deployments/mail/status",
        "application/merge-patch+json",
        &json!({"status": {"observedGeneration": generation, "replicas": 0}}).to_string(),
    );
    assert_eq!(status, 200, "patching the Deployment status: {body}");
    wait_until(REACT, "the old Deployment deleted", || {
        kube.get("deployment", "mail").is_none().then_some(())
    });
    phase("old Deployment scaled to 0, then deleted once its pods were gone");

    // --- a quiet minute, while the rendered pod runs through -------------------------
    // Two more MailServers, so that the minute's resyncs are several.
    for name in OTHERS {
        kube.apply(&other_server(name));
    }
    for name in OTHERS {
        wait_for_status(&kube, &operator, name, |s| cond(s, "Ready").is_some());
    }
    thread::sleep(Duration::from_secs(2));
    let quiet_from = kube.audit_len();
    let reconciles = operator.reconciles();
    let quiet_start = Instant::now();
    pod_run_through(&kube);
    phase("pod run-through: behaviour table answered, authenticated mail delivered");
    let rest = Duration::from_secs(61).saturating_sub(quiet_start.elapsed());
    thread::sleep(rest);
    let writes = operator_writes(&kube, quiet_from);
    let (leases, others): (Vec<_>, Vec<_>) = writes
        .iter()
        .partition(|w| w["objectRef"]["resource"] == "leases");
    assert!(
        others.is_empty(),
        "the operator wrote during a quiet minute: {}",
        describe(&others)
    );
    // The filter does see the operator: it renews its Lease every 5 s.
    assert!(
        leases.len() >= 8,
        "only {} Lease renewals in a minute",
        leases.len()
    );
    let reconciled = operator.reconciles() - reconciles;
    assert!(
        reconciled >= 3.0,
        "only {reconciled} reconciles of 3 MailServers in the quiet minute"
    );
    phase(&format!(
        "quiet minute: {reconciled} reconciles of 3 MailServers, 0 writes besides {} Lease renewals",
        leases.len()
    ));
    for name in OTHERS {
        kube.kubectl(&["delete", "mailserver", name]);
    }

    // --- a bad spec is a condition, not a crash loop ----------------------------------
    // secretName and issuerRef together: CEL rejects that in a current cluster, but 1.20
    // has no CEL, so the schema lets it through and the controller's validation must.
    kube.apply(
        "apiVersion: posthorn.dev/v1alpha1\n\
         kind: MailServer\n\
         metadata: {name: bad}\n\
         spec:\n  hostname: bad.example.org\n  domains: [example.org]\n  \
           users: {secretName: mail-users}\n  \
           tls: {secretName: bad-tls, issuerRef: {kind: ClusterIssuer, name: letsencrypt}}\n",
    );
    let bad = wait_for_status(&kube, &operator, "bad", |s| cond(s, "Degraded").is_some());
    assert_condition(&bad, "Degraded", "True", "InvalidSpec");
    let message = cond(&bad, "Degraded").unwrap()["message"].to_string();
    assert!(message.contains("mutually exclusive"), "{message}");
    assert_condition(&bad, "Ready", "False", "InvalidSpec");
    let from = kube.audit_len();
    let reconciles = operator.reconciles();
    thread::sleep(Duration::from_secs(10));
    assert!(operator.running(), "the operator exited on a bad spec");
    let writes = operator_writes(&kube, from);
    let others: Vec<_> = writes
        .iter()
        .filter(|w| w["objectRef"]["resource"] != "leases")
        .collect();
    assert!(
        others.is_empty(),
        "a bad spec keeps the operator writing: {}",
        describe(&others)
    );
    let more = operator.reconciles() - reconciles;
    assert!(
        more <= 2.0,
        "{more} reconciles in 10 s after a bad spec: a hot loop"
    );
    assert!(
        kube.list(KINDS, "app.kubernetes.io/instance=bad")
            .is_empty()
    );
    kube.kubectl(&["delete", "mailserver", "bad"]);
    phase("bad spec: Degraded with the message, no writes for 10 s, operator running");

    // --- editing the spec updates the objects ----------------------------------------
    let before = kube.get("statefulset", "mail").unwrap();
    let checksum = pod_annotation(&before, "checksum/config");
    kube.kubectl(&[
        "patch",
        "mailserver",
        "mail",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":3,"submission":{"maxMessageSize":"10Mi"}}}"#,
    ]);
    let server = wait_for_status(&kube, &operator, "mail", |s| {
        s["status"]["observedGeneration"] == s["metadata"]["generation"]
    });
    assert_eq!(server["metadata"]["generation"], 2);
    // The StatefulSet's status is of the previous generation now.
    assert_condition(&server, "Ready", "False", "RollingOut");
    let stateful_set = kube.get("statefulset", "mail").unwrap();
    assert_eq!(stateful_set["spec"]["replicas"], 3);
    assert_ne!(pod_annotation(&stateful_set, "checksum/config"), checksum);
    let config = kube.get("configmap", "mail-config").unwrap();
    let text = config["data"]["config.yaml"].as_str().unwrap();
    assert!(text.contains("maxMessageSize: 10485760"), "{text}");
    let pdb = kube
        .get("poddisruptionbudgets", "mail")
        .expect("no PDB for 3 replicas");
    assert_eq!(pdb["apiVersion"], "policy/v1beta1");
    assert_owned(
        &kube,
        &uid,
        &[&expected[..], &["PodDisruptionBudget/mail"]].concat(),
    );
    phase("spec edit: StatefulSet, ConfigMap, checksum and PDB updated, generation observed");

    // --- a hand-deleted Service comes back --------------------------------------------
    kube.kubectl(&["delete", "service", "mail"]);
    let took = wait_until(REACT, "the deleted Service to come back", || {
        kube.get("service", "mail").map(|_| ())
    });
    phase(&format!(
        "deleted Service back after {:.1} s",
        took.as_secs_f64()
    ));

    // --- a rotated TLS Secret does not restart the pods -------------------------------
    kube.apply(&tls_secret("mail-tls"));
    kube.kubectl(&[
        "patch",
        "mailserver",
        "mail",
        "--type=merge",
        "-p",
        r#"{"spec":{"tls":{"secretName":"mail-tls"}}}"#,
    ]);
    let server = wait_for_status(&kube, &operator, "mail", |s| {
        cond(s, "TLSReady").is_some_and(|c| c["status"] == "True")
    });
    assert_condition(&server, "TLSReady", "True", "SecretProvided");
    let stateful_set = kube.get("statefulset", "mail").unwrap();
    let volumes = stateful_set["spec"]["template"]["spec"]["volumes"].to_string();
    assert!(volumes.contains("\"mail-tls\""), "{volumes}");
    let template = stateful_set["spec"]["template"].clone();
    let generation = stateful_set["metadata"]["generation"].clone();
    let reconciles = operator.reconciles();
    let from = kube.audit_len();
    kube.apply(&tls_secret("mail-tls"));
    wait_until(REACT, "a reconcile after the TLS Secret changed", || {
        (operator.reconciles() > reconciles).then_some(())
    });
    thread::sleep(Duration::from_secs(2));
    let stateful_set = kube.get("statefulset", "mail").unwrap();
    assert_eq!(
        stateful_set["spec"]["template"], template,
        "the pod template changed"
    );
    assert_eq!(stateful_set["metadata"]["generation"], generation);
    let others: Vec<_> = operator_writes(&kube, from)
        .into_iter()
        .filter(|w| w["objectRef"]["resource"] != "leases")
        .collect();
    assert!(
        others.is_empty(),
        "the rotation made the operator write: {}",
        describe(&others)
    );
    phase("TLS Secret rotated: reconciled, pod template untouched, nothing written");

    // --- Secrets: those it generated or uses reconcile, others nothing ---------------
    // The generated SRS key has no owner (it outlives the MailServer): its labels tell.
    let reconciles = operator.reconciles();
    kube.kubectl(&["label", "secret", "mail-srs", "touched=1"]);
    wait_until(
        REACT,
        "a reconcile after the generated SRS Secret changed",
        || (operator.reconciles() > reconciles).then_some(()),
    );
    // The next resync is a minute after that reconcile: any reconcile now is a trigger.
    let reconciles = operator.reconciles();
    kube.kubectl(&[
        "create",
        "secret",
        "generic",
        "unrelated",
        "--from-literal=k=v",
    ]);
    kube.kubectl(&["label", "secret", "unrelated", "touched=1"]);
    kube.kubectl(&["delete", "secret", "unrelated"]);
    thread::sleep(Duration::from_secs(5));
    assert_eq!(
        operator.reconciles(),
        reconciles,
        "an unrelated Secret triggered a reconcile"
    );
    phase("Secrets: a generated one reconciles by its labels, an unrelated one does not");

    // --- the API server restarts under the operator ----------------------------------
    // Down for 2 s; the watches then reconnect from versions the new watch cache calls
    // too old (410) and must relist. Before the operator capped its watch backoff that
    // took ~40 s and a deletion meanwhile waited for the minute resync.
    kube.restart_apiserver(2);
    kube.kubectl(&["delete", "service", "mail"]);
    let took = wait_until(RECOVER, "the Service after an API server restart", || {
        kube.get("service", "mail").map(|_| ())
    });
    assert!(
        operator.running(),
        "the operator exited when the API server restarted"
    );
    phase(&format!(
        "API server restarted: deleted Service back {:.1} s after the server was ready",
        took.as_secs_f64()
    ));

    // --- deleting the MailServer garbage-collects what it owned -----------------------
    kube.kubectl(&["delete", "mailserver", "mail"]);
    wait_until(Duration::from_secs(60), "garbage collection", || {
        kube.list(KINDS, INSTANCE)
            .iter()
            .all(|o| {
                o["kind"] == "Secret"
                    && KEPT.contains(
                        &format!("Secret/{}", o["metadata"]["name"].as_str().unwrap()).as_str(),
                    )
            })
            .then_some(())
    });
    for kept in KEPT {
        let name = kept.trim_start_matches("Secret/");
        assert!(
            kube.get("secret", name).is_some(),
            "{kept} went with the MailServer: a re-created one would rotate its key"
        );
    }
    assert!(
        kube.get("secret", "mail-users").is_some(),
        "the users Secret is not the operator's"
    );
    assert!(
        kube.get("secret", "mail-tls").is_some(),
        "the user's TLS Secret is not the operator's"
    );
    assert!(operator.running());
    phase("MailServer deleted: everything it owned is gone");
}

/// The MailServers besides `mail` during the quiet minute.
const OTHERS: [&str; 2] = ["mail-b", "mail-c"];

/// The example under another name and hostname (the same users Secret).
fn other_server(name: &str) -> String {
    let example =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mailserver.yaml"))
            .unwrap();
    example
        .replace("  name: mail\n", &format!("  name: {name}\n"))
        .replace(
            "hostname: mail.example.com",
            &format!("hostname: {name}.example.com"),
        )
}

// ---------------------------------------------------------------------------------------
// The operator process

struct Operator {
    child: Child,
    metrics: u16,
    log: PathBuf,
}

impl Operator {
    fn start(kube: &Kube) -> Operator {
        // A port of our own choosing: the operator does not print the one it bound.
        let metrics = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = kube.path("operator.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_posthorn"));
        let child = die_with_test(&mut cmd)
            .args(["operator", "--identity", "e2e", "--image", "posthorn:e2e"])
            .arg("--metrics")
            .arg(format!("127.0.0.1:{metrics}"))
            .env("KUBECONFIG", kube.kubeconfig())
            .env("RUST_LOG", "posthorn=debug,kube_runtime=debug,info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("starting posthorn operator");
        let mut operator = Operator {
            child,
            metrics,
            log,
        };
        wait_until(Duration::from_secs(15), "the operator's /healthz", || {
            assert!(
                operator.running(),
                "the operator exited:\n{}",
                operator.log()
            );
            std::net::TcpStream::connect(("127.0.0.1", metrics))
                .ok()
                .map(|_| ())
        });
        operator
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Reconciles so far, from its /metrics.
    fn reconciles(&self) -> f64 {
        let (status, body) = http_get(self.metrics, "/metrics");
        assert_eq!(status, 200, "{body}");
        metric_sum(
            &parse_metrics(&body),
            &["posthorn_operator_reconciles_total"],
        )
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            let log = self.log();
            let tail: Vec<_> = log.lines().rev().take(60).collect();
            eprintln!("--- operator log (last lines) ---");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// The operator's writes in the audit log from line `from` on.
fn operator_writes(kube: &Kube, from: usize) -> Vec<Value> {
    kube.audit()
        .into_iter()
        .skip(from)
        .filter(|w| {
            w["userAgent"]
                .as_str()
                .is_some_and(|a| a.starts_with(OPERATOR_AGENT))
        })
        .collect()
}

fn describe(writes: &[impl std::borrow::Borrow<Value>]) -> String {
    writes
        .iter()
        .map(|w| {
            let w = w.borrow();
            let r = &w["objectRef"];
            format!(
                "\n  {} {} {}/{}",
                w["verb"].as_str().unwrap_or(""),
                r["resource"].as_str().unwrap_or(""),
                r["name"].as_str().unwrap_or(""),
                r["subresource"].as_str().unwrap_or("")
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Waiting and checking

/// Polls `f` every 200 ms until it gives a value; panics after `timeout`. Returns how
/// long it took.
fn wait_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> Duration {
    let start = Instant::now();
    loop {
        if f().is_some() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the MailServer's status describes its current generation and `done`
/// holds; returns it.
fn wait_for_status(
    kube: &Kube,
    operator: &Operator,
    name: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let mut last = None;
    let start = Instant::now();
    loop {
        if let Some(server) = kube.get("mailserver", name) {
            if server["status"]["observedGeneration"] == server["metadata"]["generation"]
                && done(&server)
            {
                return server;
            }
            last = Some(server);
        }
        if start.elapsed() > REACT {
            panic!(
                "MailServer {name} did not reach the expected status in {REACT:?}; last seen:\n{}\noperator log:\n{}",
                serde_json::to_string_pretty(&last).unwrap(),
                operator.log()
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
}

fn cond<'a>(server: &'a Value, type_: &str) -> Option<&'a Value> {
    server["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn assert_condition(server: &Value, type_: &str, status: &str, reason: &str) {
    let c = cond(server, type_).unwrap_or_else(|| panic!("no {type_} condition: {server}"));
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some(status), Some(reason)),
        "{type_}: {c}"
    );
    assert_eq!(
        c["observedGeneration"], server["metadata"]["generation"],
        "{c}"
    );
    assert!(!c["message"].as_str().unwrap_or("").is_empty(), "{c}");
}

/// Every object labelled as the MailServer's is owned by it (controller reference with
/// its uid), and they are exactly `expected` (`Kind/name`).
fn assert_owned(kube: &Kube, uid: &str, expected: &[&str]) {
    let mut found = Vec::new();
    let mut kept = Vec::new();
    for object in kube.list(KINDS, INSTANCE) {
        let id = format!(
            "{}/{}",
            object["kind"].as_str().unwrap(),
            object["metadata"]["name"].as_str().unwrap()
        );
        let owners = object["metadata"]["ownerReferences"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if KEPT.contains(&id.as_str()) {
            assert!(owners.is_empty(), "{id} is owned: {owners:?}");
            kept.push(id);
            continue;
        }
        assert_eq!(owners.len(), 1, "{id} owners: {owners:?}");
        let owner = &owners[0];
        assert_eq!(
            (
                owner["apiVersion"].as_str(),
                owner["kind"].as_str(),
                owner["name"].as_str(),
                owner["uid"].as_str(),
                owner["controller"].as_bool()
            ),
            (
                Some("posthorn.dev/v1alpha1"),
                Some("MailServer"),
                Some("mail"),
                Some(uid),
                Some(true)
            ),
            "{id} owner reference"
        );
        found.push(id);
    }
    found.sort();
    let mut expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(found, expected);
    kept.sort();
    assert_eq!(kept, KEPT);
}

/// The generated keys, which outlive their MailServer (README: Storage).
const KEPT: [&str; 2] = ["Secret/mail-dkim", "Secret/mail-srs"];

fn pod_annotation(workload: &Value, key: &str) -> String {
    workload["spec"]["template"]["metadata"]["annotations"][key]
        .as_str()
        .unwrap_or_else(|| panic!("no pod annotation {key}"))
        .to_string()
}

/// Writes the StatefulSet's status as its controller would once `ready` pods of the
/// latest revision are ready.
fn set_ready_replicas(kube: &Kube, ready: i64) {
    let patch = json!({"status": {
        "observedGeneration": kube.get("statefulset", "mail").unwrap()["metadata"]["generation"],
        "replicas": ready, "updatedReplicas": ready, "readyReplicas": ready, "currentReplicas": ready,
    }});
    let (status, body) = kube.api(
        "PATCH",
        "/apis/apps/v1/namespaces/default/statefulsets/mail/status",
        "application/merge-patch+json",
        &patch.to_string(),
    );
    assert_eq!(status, 200, "patching the StatefulSet status: {body}");
}

/// A Deployment `mail` as an operator before the StatefulSet rendered it, owned by the
/// MailServer with `uid`.
fn old_deployment(uid: &str) -> String {
    format!(
        "apiVersion: apps/v1\n\
         kind: Deployment\n\
         metadata:\n  name: mail\n  namespace: default\n  \
           labels: {{app.kubernetes.io/name: posthorn, app.kubernetes.io/instance: mail}}\n  \
           ownerReferences:\n  - {{apiVersion: posthorn.dev/v1alpha1, kind: MailServer, \
           name: mail, uid: {uid}, controller: true, blockOwnerDeletion: true}}\n\
         spec:\n  replicas: 1\n  \
           selector: {{matchLabels: {{app.kubernetes.io/name: posthorn, app.kubernetes.io/instance: mail}}}}\n  \
           template:\n    \
             metadata: {{labels: {{app.kubernetes.io/name: posthorn, app.kubernetes.io/instance: mail}}}}\n    \
             spec: {{containers: [{{name: posthorn, image: posthorn:old}}]}}\n"
    )
}

/// A kubernetes.io/tls Secret with a fresh self-signed certificate for the hostname.
fn tls_secret(name: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("openssl")
        .current_dir(dir.path())
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args([
            "-nodes", "-keyout", "tls.key", "-out", "tls.crt", "-days", "30",
        ])
        .args([
            "-subj",
            "/CN=mail.example.com",
            "-addext",
            "subjectAltName=DNS:mail.example.com",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl req: {out:?}");
    let b64 = |f: &str| {
        base64::engine::general_purpose::STANDARD.encode(fs::read(dir.path().join(f)).unwrap())
    };
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": name},
        "data": {"tls.crt": b64("tls.crt"), "tls.key": b64("tls.key")},
    })
    .to_string()
}

// ---------------------------------------------------------------------------------------
// Pod run-through

/// The pod the operator rendered, run here as a kubelet would run it: the StatefulSet's
/// ConfigMap and Secret volumes are written from the cluster's objects into a temp root
/// at their mount paths (`ROOT/etc/posthorn`, `ROOT/run/posthorn/tls`, ...), emptyDirs
/// and claims (from the claim templates) are directories there, and the container's
/// command runs with its args and env.
///
/// Path rewriting: every string in the args and in the server config that names a path
/// under a volume mount gets ROOT prefixed, so `/etc/posthorn/config.yaml` becomes
/// `ROOT/etc/posthorn/config.yaml` and `/var/lib/posthorn/mail` `ROOT/var/lib/posthorn/
/// mail`; the config (JSON, which is YAML) is written back in place. The listeners, the
/// handover and the metrics address become 127.0.0.1:0 (the pod's ports are unprivileged
/// but may be taken here), and `/usr/local/bin/posthorn` is the binary under test. `dns.nameservers`
/// becomes a dnsmasq of the pod's own (the rendered config uses the system resolver, which
/// here knows none of the test domains), so the domain checks answer as in a cluster.
struct Pod {
    child: Child,
    ports: BTreeMap<String, u16>,
    /// The server config as the pod runs it (paths rebased, listeners on loopback).
    config: Value,
    root: tempfile::TempDir,
    _dns: Dnsmasq,
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pod_run_through(kube: &Kube) {
    let pod = start_pod(kube);
    let stateful_set = kube.get("statefulset", "mail").unwrap();
    let volumes = &stateful_set["spec"]["template"]["spec"]["volumes"];
    let tls_secret = volumes
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "tls")
        .and_then(|v| v["secret"]["secretName"].as_str())
        .expect("no tls Secret volume");
    let secret = kube.get("secret", tls_secret).unwrap();
    let pem = base64::engine::general_purpose::STANDARD
        .decode(secret["data"]["tls.crt"].as_str().unwrap())
        .unwrap();
    let cert = CertificateDer::from_pem_slice(&pem).unwrap();

    // The pod serves the certificate from the cluster's TLS Secret (pinned, exactly).
    let mut client = Client::connect_tls(pod.ports["submissions"], vec![cert.clone()]);
    client.expect_code(220);
    client.cmd_expect("QUIT", 221);

    // Every row of the contract, with the cluster's users Secret and senderLogins (info@
    // shared by alice and bob); rows `own-sender` and `inbound` deliver into the pod's
    // Maildirs.
    let target = Target {
        smtp: pod.ports["smtp"],
        submission: pod.ports["submission"],
        submissions: pod.ports["submissions"],
        cert,
        max_message_size: pod.config["limits"]["maxMessageSize"]
            .as_u64()
            .expect("limits.maxMessageSize in the rendered config"),
        failure_delay: seconds(&pod.config["auth"]["failureDelay"]),
        maildir_root: PathBuf::from(pod.config["spool"]["maildirRoot"].as_str().unwrap()),
    };
    contract::check(&target, &contract::rows(&target));
    let log = fs::read_to_string(pod.root.path().join("pod.log")).unwrap_or_default();
    assert!(
        !log.contains(contract::WRONG_PASS),
        "password appears in the pod's log:\n{log}"
    );
}

/// A whole-seconds duration as the rendered config writes it, e.g. `"2s"`.
fn seconds(value: &Value) -> Duration {
    let secs = value
        .as_str()
        .and_then(|s| s.strip_suffix('s'))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not whole seconds: {value}"));
    Duration::from_secs(secs)
}

fn start_pod(kube: &Kube) -> Pod {
    let root = tempfile::Builder::new()
        .prefix("posthorn-pod.")
        .tempdir()
        .unwrap();
    let stateful_set = kube.get("statefulset", "mail").unwrap();
    let spec = &stateful_set["spec"]["template"]["spec"];
    let claims: Vec<&str> = stateful_set["spec"]["volumeClaimTemplates"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["metadata"]["name"].as_str().unwrap())
        .collect();
    let containers = spec["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1, "one container expected");
    let container = &containers[0];
    let volumes: BTreeMap<&str, &Value> = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v))
        .collect();

    let mut mounts = Vec::new();
    for mount in container["volumeMounts"].as_array().unwrap() {
        assert!(
            mount["subPath"].is_null(),
            "subPath mounts are not materialised: {mount}"
        );
        let at = mount["mountPath"].as_str().unwrap().to_string();
        let dir = root.path().join(at.trim_start_matches('/'));
        fs::create_dir_all(&dir).unwrap();
        let name = mount["name"].as_str().unwrap();
        if claims.contains(&name) {
            // A claim: the directory just made, as a fresh volume would be.
            mounts.push(at);
            continue;
        }
        let volume = volumes[name];
        if let Some(source) = volume.get("configMap") {
            let cm = kube
                .get("configmap", source["name"].as_str().unwrap())
                .unwrap();
            let data: BTreeMap<String, Vec<u8>> = cm["data"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().as_bytes().to_vec()))
                .collect();
            materialise(&dir, source, &data, 0o644);
        } else if let Some(source) = volume.get("secret") {
            let secret = kube
                .get("secret", source["secretName"].as_str().unwrap())
                .unwrap();
            let data: BTreeMap<String, Vec<u8>> = secret["data"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(v.as_str().unwrap())
                        .unwrap();
                    (k.clone(), bytes)
                })
                .collect();
            materialise(&dir, source, &data, 0o644);
        } else if let Some(source) = volume.get("downwardAPI") {
            // No pod object here, so no annotations: this server is never told to drain.
            for item in source["items"].as_array().unwrap() {
                assert_eq!(item["fieldRef"]["fieldPath"], "metadata.annotations");
                fs::write(dir.join(item["path"].as_str().unwrap()), "").unwrap();
            }
        } else {
            assert!(
                volume.get("emptyDir").is_some(),
                "unsupported volume {volume}"
            );
        }
        mounts.push(at);
    }
    // Longest mount first, so a nested mount wins.
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    let rebase = |s: &str| -> String {
        match mounts
            .iter()
            .find(|m| s == m.as_str() || s.starts_with(&format!("{m}/")))
        {
            Some(_) => format!("{}{s}", root.path().display()),
            None => s.to_string(),
        }
    };

    let command: Vec<&str> = container["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        command,
        ["/usr/local/bin/posthorn"],
        "the container's command"
    );
    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| rebase(v.as_str().unwrap()))
        .collect();
    let config_path = args
        .iter()
        .position(|a| a == "--config")
        .map(|i| PathBuf::from(&args[i + 1]))
        .expect("no --config argument");
    let mut config: Value =
        serde_saphyr::from_str(&fs::read_to_string(&config_path).unwrap()).unwrap();
    rebase_strings(&mut config, &rebase);
    for listener in config["listeners"].as_object_mut().unwrap().values_mut() {
        *listener = json!("127.0.0.1:0");
    }
    config["metrics"] = json!("127.0.0.1:0");
    // The pod's 0.0.0.0:5999 would clash with the pods test's kubelet on 127.0.0.N.
    config["handover"]["listen"] = json!("127.0.0.1:0");
    let dns = Dnsmasq::start();
    config["dns"]["nameservers"] = json!([format!("127.0.0.1:{}", dns.port)]);
    // The ConfigMap volume is read-only in the pod; here it is ours to rewrite.
    fs::set_permissions(&config_path, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&config_path, serde_json::to_string_pretty(&config).unwrap()).unwrap();

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_posthorn"));
    cmd.args(&args).env_clear().env("PATH", "/usr/bin:/bin");
    for var in container["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().unwrap();
        let value = match (&var["value"], &var["valueFrom"]["fieldRef"]["fieldPath"]) {
            (Value::String(v), _) => v.clone(),
            (_, Value::String(field)) if field == "metadata.name" => "mail-0".into(),
            (_, Value::String(field)) if field == "metadata.namespace" => "default".into(),
            _ => panic!("cannot supply env {var}"),
        };
        cmd.env(name, value);
    }
    let mut child = die_with_test(&mut cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(File::create(root.path().join("pod.log")).unwrap())
        .spawn()
        .expect("starting the pod's command");
    let Some(line) = first_stdout_line(&mut child, Duration::from_secs(30)) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "the pod's command printed no listening line; its log:\n{}",
            fs::read_to_string(root.path().join("pod.log")).unwrap_or_default()
        );
    };
    Pod {
        child,
        ports: parse_listening_line(&line),
        config,
        root,
        _dns: dns,
    }
}

/// Writes a ConfigMap's or Secret's `data` into `dir` as the kubelet does: the listed
/// `items` (key → path, with their modes) or every key, with `defaultMode`.
fn materialise(dir: &Path, source: &Value, data: &BTreeMap<String, Vec<u8>>, mode: u32) {
    let default_mode = source["defaultMode"].as_u64().map_or(mode, |m| m as u32);
    let items: Vec<(String, String, u32)> = match source["items"].as_array() {
        Some(items) => items
            .iter()
            .map(|i| {
                let mode = i["mode"].as_u64().map_or(default_mode, |m| m as u32);
                (
                    i["key"].as_str().unwrap().to_string(),
                    i["path"].as_str().unwrap().to_string(),
                    mode,
                )
            })
            .collect(),
        None => data
            .keys()
            .map(|k| (k.clone(), k.clone(), default_mode))
            .collect(),
    };
    for (key, path, mode) in items {
        let bytes = data
            .get(&key)
            .unwrap_or_else(|| panic!("volume key {key} missing from {source}"));
        let file = dir.join(path);
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(&file, bytes).unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(mode)).unwrap();
    }
}

fn rebase_strings(value: &mut Value, rebase: &impl Fn(&str) -> String) {
    match value {
        Value::String(s) => *s = rebase(s),
        Value::Array(items) => items.iter_mut().for_each(|v| rebase_strings(v, rebase)),
        Value::Object(map) => map.values_mut().for_each(|v| rebase_strings(v, rebase)),
        _ => {}
    }
}

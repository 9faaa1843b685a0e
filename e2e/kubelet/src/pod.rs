//! One pod from binding to deletion: its volumes, its containers as processes (restarted
//! per restartPolicy), probes, status, and on deletion SIGTERM, the grace period,
//! SIGKILL and the final delete.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::{Value, json};
use tokio::process::Child;
use tokio::sync::watch;

use crate::Kubelet;
use crate::env::{Placement, container_env, expand};
use crate::objects::View;
use crate::probe;
use crate::process::{self, Launch, Mount};
use crate::volumes::{self, Payload};

/// How long an exited container waits before its restart (the kubelet starts at 10 s
/// and doubles; tests want the restart soon).
const RESTART_BACKOFF: Duration = Duration::from_secs(1);
const TICK: Duration = Duration::from_millis(500);

pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[derive(Default)]
struct ProbeState {
    next: Option<Instant>,
    successes: u32,
    failures: u32,
}

impl ProbeState {
    /// Runs `probe` when due; Some(true) on reaching the success threshold, Some(false)
    /// on reaching the failure threshold, None otherwise.
    async fn step(
        &mut self,
        probe: &Probe,
        container: &Container,
        ip: &str,
        since: Instant,
    ) -> Option<bool> {
        let timing = probe::timing(probe);
        let next = *self.next.get_or_insert(since + timing.initial_delay);
        if Instant::now() < next {
            return None;
        }
        self.next = Some(Instant::now() + timing.period);
        match probe::run(probe, container, ip).await {
            Ok(()) => {
                self.failures = 0;
                self.successes += 1;
                (self.successes >= timing.success_threshold).then_some(true)
            }
            Err(_) => {
                self.successes = 0;
                self.failures += 1;
                (self.failures >= timing.failure_threshold).then_some(false)
            }
        }
    }
}

struct Run {
    spec: Container,
    child: Option<Child>,
    pid: Option<u32>,
    started_at: String,
    restart_count: i32,
    restart_at: Option<Instant>,
    spawned: Instant,
    state: Value,
    last_state: Value,
    started: bool,
    ready: bool,
    startup: ProbeState,
    liveness: ProbeState,
    readiness: ProbeState,
}

pub struct PodRun {
    kubelet: Arc<Kubelet>,
    namespace: String,
    name: String,
    uid: String,
    ip: String,
    octet: u8,
    volume_root: PathBuf,
    pod_dir: PathBuf,
    atomic: BTreeMap<String, Payload>,
    volumes_ready: bool,
    runs: Vec<Run>,
    conditions: BTreeMap<&'static str, (bool, String)>,
    reported: Option<Value>,
    start_time: String,
}

impl PodRun {
    fn fs_group(pod: &Pod) -> Option<u32> {
        pod.spec
            .as_ref()?
            .security_context
            .as_ref()?
            .fs_group
            .map(|g| g as u32)
    }

    fn placement(&self) -> Placement<'_> {
        Placement {
            pod_ip: &self.ip,
            host_ip: crate::HOST_IP,
            node_name: &self.kubelet.node,
        }
    }

    /// Materialises every volume; false (and a log line) while one cannot be, e.g. its
    /// Secret does not exist yet. Atomic volumes are rewritten when their contents change.
    fn sync_volumes(&mut self, view: &View) -> bool {
        let pod = &view.pod;
        let gid = Self::fs_group(pod);
        let volumes = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .unwrap_or_default();
        let mut ok = true;
        for volume in &volumes {
            let result = match volumes::payload(pod, volume, &view.objects, &self.placement()) {
                Some(Ok(payload)) => {
                    if self.atomic.get(&volume.name) == Some(&payload) {
                        Ok(())
                    } else {
                        let dir = self.volume_root.join(&volume.name);
                        volumes::write_atomic(&dir, &payload, gid).map(|()| {
                            self.atomic.insert(volume.name.clone(), payload);
                        })
                    }
                }
                Some(Err(e)) => Err(e),
                None if self.volumes_ready => Ok(()),
                None => self.plain_volume(pod, volume, gid).map(|_| ()),
            };
            if let Err(e) = result {
                eprintln!(
                    "kubelet: pod {}/{} volume {}: {e:#}",
                    self.namespace, self.name, volume.name
                );
                ok = false;
            }
        }
        ok
    }

    /// The host directory of a non-atomic volume, created as its kind wants.
    fn plain_volume(
        &self,
        pod: &Pod,
        volume: &k8s_openapi::api::core::v1::Volume,
        gid: Option<u32>,
    ) -> Result<PathBuf> {
        if volume.empty_dir.is_some() {
            let dir = self.volume_root.join(&volume.name);
            volumes::writable_dir(&dir, gid)?;
            Ok(dir)
        } else if let Some(claim) = &volume.persistent_volume_claim {
            let dir = self
                .kubelet
                .root
                .join("claims")
                .join(pod.namespace().unwrap_or_default())
                .join(&claim.claim_name);
            volumes::writable_dir(&dir, gid)?;
            Ok(dir)
        } else if let Some(host) = &volume.host_path {
            Ok(PathBuf::from(&host.path))
        } else {
            bail!("unsupported volume kind")
        }
    }

    fn volume_dir(&self, pod: &Pod, name: &str) -> Result<PathBuf> {
        let volume = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .and_then(|v| v.iter().find(|v| v.name == name))
            .with_context(|| format!("no volume {name}"))?;
        if self.atomic.contains_key(name) {
            return Ok(self.volume_root.join(name));
        }
        self.plain_volume(pod, volume, Self::fs_group(pod))
    }

    fn launch(&self, view: &View, container: &Container) -> Result<Launch> {
        let pod = &view.pod;
        let image = container.image.clone().unwrap_or_default();
        let program = self
            .kubelet
            .images
            .get(&image)
            .with_context(|| format!("image {image} has no executable (--image)"))?
            .clone();
        let base: Vec<(String, String)> = [
            (
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            ),
            ("HOSTNAME", self.name.as_str()),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain(
            self.kubelet
                .image_env
                .get(&image)
                .cloned()
                .unwrap_or_default(),
        )
        .collect();
        let mut env = container_env(pod, container, &view.objects, &self.placement(), &base)?;
        let vars: BTreeMap<String, String> = env.iter().cloned().collect();
        let mut words: Vec<String> = container
            .command
            .iter()
            .flatten()
            .chain(container.args.iter().flatten())
            .map(|w| expand(w, &vars))
            .collect();
        if container.command.is_none() {
            bail!(
                "container {} has no command (image entrypoints are not known here)",
                container.name
            );
        }
        let argv0 = words.remove(0);
        env.push(("POSTHORN_TEST_POD_IP".into(), self.ip.clone()));
        env.push(("LD_PRELOAD".into(), self.kubelet.shim.display().to_string()));
        let mut mounts = Vec::new();
        for m in container.volume_mounts.iter().flatten() {
            let mut source = self.volume_dir(pod, &m.name)?;
            if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                source = source.join(sub);
                if !source.exists() {
                    fs::create_dir_all(&source)?;
                }
            }
            mounts.push(Mount {
                source,
                target: PathBuf::from(&m.mount_path),
                read_only: m.read_only == Some(true),
            });
        }
        let pod_sc = pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.clone())
            .unwrap_or_default();
        let sc = container.security_context.clone().unwrap_or_default();
        let uid = sc.run_as_user.or(pod_sc.run_as_user).map(|u| u as u32);
        let gid = sc.run_as_group.or(pod_sc.run_as_group).map(|g| g as u32);
        let mut groups: Vec<u32> = pod_sc
            .supplemental_groups
            .iter()
            .flatten()
            .map(|g| *g as u32)
            .collect();
        groups.extend(pod_sc.fs_group.map(|g| g as u32));
        Ok(Launch {
            program,
            argv0,
            args: words,
            env,
            mounts,
            working_dir: container.working_dir.as_ref().map(PathBuf::from),
            uid,
            gid: gid.or(uid),
            groups,
            log: self.kubelet.root.join("logs").join(format!(
                "{}_{}_{}.log",
                self.namespace, self.name, container.name
            )),
        })
    }

    fn pid_file(&self, container: &str) -> PathBuf {
        self.pod_dir.join(format!("{container}.pid"))
    }

    fn start_container(&mut self, view: &View, i: usize) {
        let spec = self.runs[i].spec.clone();
        let started = self.launch(view, &spec).and_then(|l| process::spawn(&l));
        let run = &mut self.runs[i];
        match started {
            Ok(child) => {
                run.pid = child.id();
                if let Some(pid) = run.pid {
                    let _ = fs::write(
                        self.pod_dir.join(format!("{}.pid", spec.name)),
                        pid.to_string(),
                    );
                }
                run.child = Some(child);
                run.started_at = now();
                run.spawned = Instant::now();
                run.state = json!({"running": {"startedAt": run.started_at}});
                run.startup = ProbeState::default();
                run.liveness = ProbeState::default();
                run.readiness = ProbeState::default();
                run.started = spec.startup_probe.is_none();
                run.ready = false;
            }
            Err(e) => {
                eprintln!(
                    "kubelet: pod {}/{} container {}: {e:#}",
                    self.namespace, self.name, spec.name
                );
                run.state = json!({"waiting": {"reason": "CreateContainerError", "message": format!("{e:#}")}});
                run.restart_at = Some(Instant::now() + RESTART_BACKOFF);
            }
        }
    }

    /// Notes exits, restarts per restartPolicy, and runs the probes.
    async fn supervise(&mut self, view: &View) {
        let policy = view
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into());
        for i in 0..self.runs.len() {
            let exited = match self.runs[i].child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(status))) => Some(status),
                _ => None,
            };
            if let Some(status) = exited {
                let run = &mut self.runs[i];
                use std::os::unix::process::ExitStatusExt;
                let code = status.code().unwrap_or(128 + status.signal().unwrap_or(0));
                let mut terminated = json!({
                    "exitCode": code,
                    "reason": if code == 0 { "Completed" } else { "Error" },
                    "startedAt": run.started_at, "finishedAt": now(),
                    "containerID": format!("process://{}", run.pid.unwrap_or(0)),
                });
                if let Some(sig) = status.signal() {
                    terminated["signal"] = json!(sig);
                }
                eprintln!(
                    "kubelet: pod {}/{} container {} exited: {status}",
                    self.namespace, self.name, run.spec.name
                );
                run.child = None;
                run.ready = false;
                run.started = false;
                let restart = policy == "Always" || (policy == "OnFailure" && code != 0);
                if restart {
                    run.restart_count += 1;
                    run.last_state = json!({"terminated": terminated});
                    run.state = json!({"waiting": {"reason": "CrashLoopBackOff"}});
                    run.restart_at = Some(Instant::now() + RESTART_BACKOFF);
                } else {
                    run.state = json!({"terminated": terminated});
                }
            }
            if self.runs[i]
                .restart_at
                .is_some_and(|at| Instant::now() >= at)
            {
                self.runs[i].restart_at = None;
                self.start_container(view, i);
            }
            self.probe(i).await;
        }
    }

    async fn probe(&mut self, i: usize) {
        let ip = self.ip.clone();
        let run = &mut self.runs[i];
        if run.child.is_none() {
            return;
        }
        let spec = run.spec.clone();
        if !run.started {
            if let Some(p) = &spec.startup_probe {
                match run.startup.step(p, &spec, &ip, run.spawned).await {
                    Some(true) => run.started = true,
                    Some(false) => self.kill(i, "startup probe failed"),
                    None => {}
                }
            }
            return;
        }
        if let Some(p) = &spec.liveness_probe
            && run.liveness.step(p, &spec, &ip, run.spawned).await == Some(false)
        {
            self.kill(i, "liveness probe failed");
            return;
        }
        let run = &mut self.runs[i];
        match &spec.readiness_probe {
            Some(p) => {
                if let Some(ready) = run.readiness.step(p, &spec, &ip, run.spawned).await {
                    run.ready = ready;
                }
            }
            None => run.ready = true,
        }
    }

    /// Kills a container that failed a probe; supervise() restarts it.
    fn kill(&mut self, i: usize, why: &str) {
        let run = &mut self.runs[i];
        eprintln!(
            "kubelet: pod {}/{} container {}: {why}, killing",
            self.namespace, self.name, run.spec.name
        );
        if let Some(pid) = run.pid {
            process::signal(pid, libc::SIGKILL);
        }
    }

    fn status(&mut self) -> Value {
        let all_ready = self.runs.iter().all(|r| r.ready);
        let running = self
            .runs
            .iter()
            .any(|r| r.child.is_some() || r.restart_at.is_some());
        let exits: Vec<i64> = self
            .runs
            .iter()
            .filter_map(|r| r.state["terminated"]["exitCode"].as_i64())
            .collect();
        let phase = if !self.volumes_ready {
            "Pending"
        } else if running || exits.len() < self.runs.len() {
            "Running"
        } else if exits.iter().all(|c| *c == 0) {
            "Succeeded"
        } else {
            "Failed"
        };
        for (kind, value) in [
            ("PodScheduled", true),
            ("Initialized", self.volumes_ready),
            ("ContainersReady", all_ready),
            ("Ready", all_ready),
        ] {
            let entry = self.conditions.entry(kind).or_insert((value, now()));
            if entry.0 != value {
                *entry = (value, now());
            }
        }
        let conditions: Vec<Value> = self
            .conditions
            .iter()
            .map(|(kind, (value, since))| json!({"type": kind, "status": if *value { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": since}))
            .collect();
        let statuses: Vec<Value> = self
            .runs
            .iter()
            .map(|r| {
                let mut s = json!({
                    "name": r.spec.name, "image": r.spec.image.clone().unwrap_or_default(), "imageID": "",
                    "ready": r.ready, "started": r.child.is_some() && r.started, "restartCount": r.restart_count,
                    "state": r.state, "lastState": r.last_state,
                });
                if let Some(pid) = r.pid {
                    s["containerID"] = json!(format!("process://{pid}"));
                }
                s
            })
            .collect();
        json!({"status": {
            "phase": phase, "hostIP": crate::HOST_IP, "podIP": self.ip, "podIPs": [{"ip": self.ip}],
            "startTime": self.start_time, "conditions": conditions, "containerStatuses": statuses,
        }})
    }

    /// Patches the status when it changed here, or when someone else changed it (the
    /// node lifecycle controller marks pods NotReady): ours is the truth, as the
    /// kubelet's status manager has it.
    async fn report(&mut self, pod: &Pod) {
        let status = self.status();
        let ready = |conditions: Option<&Value>| {
            conditions?
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Ready")
                .map(|c| c["status"].clone())
        };
        let current = serde_json::to_value(&pod.status).unwrap_or_default();
        let in_api = ready(current.get("conditions")) == ready(status["status"].get("conditions"))
            && current["phase"] == status["status"]["phase"];
        if self.reported.as_ref() == Some(&status) && in_api {
            return;
        }
        let api: Api<Pod> = Api::namespaced(self.kubelet.client.clone(), &self.namespace);
        match api
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&status))
            .await
        {
            Ok(_) => self.reported = Some(status),
            Err(e) => eprintln!("kubelet: pod {}/{} status: {e}", self.namespace, self.name),
        }
    }

    /// SIGTERM to every container, up to `grace` for them to exit, then SIGKILL.
    async fn stop(&mut self, grace: Duration) {
        for run in &self.runs {
            if let (Some(pid), Some(_)) = (run.pid, &run.child) {
                process::signal(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + grace;
        for run in &mut self.runs {
            let Some(child) = run.child.as_mut() else {
                continue;
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, child.wait()).await.is_err() {
                eprintln!(
                    "kubelet: pod {}/{} container {}: still running after the grace period, SIGKILL",
                    self.namespace, self.name, run.spec.name
                );
                let _ = child.kill().await;
            }
            run.child = None;
        }
    }

    /// Removes what dies with the pod (emptyDirs, atomic volumes, pid files); claims and
    /// logs stay.
    fn clean_up(&self) {
        let _ = fs::remove_dir_all(&self.volume_root);
        for run in &self.runs {
            let _ = fs::remove_file(self.pid_file(&run.spec.name));
        }
        self.kubelet.release_ip(self.octet, &self.ip);
    }
}

/// Deletes the pod object for good (grace 0), once its processes are gone.
pub async fn final_delete(kubelet: &Kubelet, namespace: &str, name: &str, uid: &str) {
    let api: Api<Pod> = Api::namespaced(kubelet.client.clone(), namespace);
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    if let Err(e) = api.delete(name, &params).await {
        eprintln!("kubelet: final delete of pod {namespace}/{name}: {e}");
    }
}

fn grace_period(pod: &Pod) -> Duration {
    let secs = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| pod.spec.as_ref()?.termination_grace_period_seconds)
        .unwrap_or(30);
    Duration::from_secs(secs.max(0) as u64)
}

/// Runs the pod whose updates come through `rx` until it is deleted (or vanishes).
pub async fn run(kubelet: Arc<Kubelet>, mut rx: watch::Receiver<View>) {
    let mut view = rx.borrow_and_update().clone();
    let pod = view.pod.clone();
    let (namespace, name, uid) = (
        pod.namespace().unwrap_or_default(),
        pod.name_any(),
        pod.uid().unwrap_or_default(),
    );
    let (octet, ip) = match kubelet.allocate_ip() {
        Ok(address) => address,
        Err(e) => {
            eprintln!("kubelet: pod {namespace}/{name}: {e:#}");
            return;
        }
    };
    let pod_dir = kubelet.root.join("pods").join(&namespace).join(&name);
    if let Err(e) = fs::create_dir_all(&pod_dir) {
        eprintln!("kubelet: {}: {e}", pod_dir.display());
    }
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.clone())
        .unwrap_or_default();
    let mut run = PodRun {
        ip,
        octet,
        volume_root: kubelet.root.join("volumes").join(&uid),
        pod_dir,
        atomic: BTreeMap::new(),
        volumes_ready: false,
        runs: containers
            .into_iter()
            .map(|spec| Run {
                spec,
                child: None,
                pid: None,
                started_at: String::new(),
                restart_count: 0,
                restart_at: None,
                spawned: Instant::now(),
                state: json!({"waiting": {"reason": "ContainerCreating"}}),
                last_state: json!({}),
                started: false,
                ready: false,
                startup: ProbeState::default(),
                liveness: ProbeState::default(),
                readiness: ProbeState::default(),
            })
            .collect(),
        conditions: BTreeMap::new(),
        reported: None,
        start_time: now(),
        kubelet: kubelet.clone(),
        namespace: namespace.clone(),
        name: name.clone(),
        uid: uid.clone(),
    };
    eprintln!("kubelet: pod {namespace}/{name} gets {}", run.ip);
    loop {
        match rx.has_changed() {
            Ok(true) => view = rx.borrow_and_update().clone(),
            Ok(false) => {}
            Err(_) => {
                // The pod is gone from the API without us: stop at once.
                run.stop(Duration::ZERO).await;
                run.clean_up();
                return;
            }
        }
        if view.pod.metadata.deletion_timestamp.is_some() {
            let grace = grace_period(&view.pod);
            eprintln!("kubelet: pod {namespace}/{name} deleted, stopping (grace {grace:?})");
            run.stop(grace).await;
            run.clean_up();
            final_delete(&kubelet, &namespace, &name, &run.uid).await;
            return;
        }
        let synced = run.sync_volumes(&view);
        if !run.volumes_ready && synced {
            run.volumes_ready = true;
            for i in 0..run.runs.len() {
                run.start_container(&view, i);
            }
        }
        if run.volumes_ready {
            run.supervise(&view).await;
        }
        run.report(&view.pod).await;
        tokio::time::sleep(TICK).await;
    }
}

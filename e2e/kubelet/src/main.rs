//! A test-only process kubelet for the `e2e/kube` test bed (no scheduler, no container
//! runtime): registers a Ready Node, binds every pending pod to it, and runs each bound
//! pod's containers as local processes with their volumes, env, probes and status, each
//! pod on its own address on the loopback device. Logs go to `ROOT/logs/<ns>_<pod>_<container>.log`,
//! container pids to `ROOT/pods/<ns>/<pod>/<container>.pid`, claims live in
//! `ROOT/claims/<ns>/<claim>`.

mod env;
mod node;
mod objects;
mod pod;
mod probe;
mod process;
mod volumes;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use objects::{Objects, View};

/// The node's address (hostIP); pods get their own next to it.
pub const HOST_IP: &str = "127.0.0.1";
const SYNC: Duration = Duration::from_secs(1);

#[derive(Parser)]
#[command(about = "Test-only process kubelet for the e2e/kube test bed (uses $KUBECONFIG)")]
struct Args {
    /// Directory for volumes, claims, logs and pid files.
    #[arg(long)]
    root: PathBuf,
    #[arg(long, default_value = "posthorn-test-node")]
    node_name: String,
    /// First three octets of the pod addresses: pods get NETWORK.2 to NETWORK.254,
    /// each added to the loopback device while the pod runs.
    #[arg(long, default_value = "10.244.0")]
    pod_network: String,
    /// IMAGE=PATH: containers of IMAGE run the executable PATH (their command's first
    /// word is its argv[0]).
    #[arg(long = "image", value_parser = pair)]
    images: Vec<(String, String)>,
    /// IMAGE=NAME=VALUE: a variable IMAGE's own environment sets (like ENV in a
    /// Dockerfile), under the pod's.
    #[arg(long = "image-env", value_parser = pair)]
    image_env: Vec<(String, String)>,
}

fn pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

pub struct Kubelet {
    client: Client,
    node: String,
    root: PathBuf,
    network: String,
    images: BTreeMap<String, PathBuf>,
    image_env: BTreeMap<String, Vec<(String, String)>>,
    shim: PathBuf,
    used_ips: Mutex<BTreeSet<u8>>,
}

impl Kubelet {
    /// A free pod address, added to the loopback device (the API server refuses
    /// 127.0.0.0/8 in Endpoints, so pods cannot use 127.0.0.N).
    fn allocate_ip(&self) -> Result<(u8, String)> {
        let octet = {
            let mut used = self
                .used_ips
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?;
            let free = (2..=254u8)
                .find(|n| !used.contains(n))
                .context("no free pod address")?;
            used.insert(free);
            free
        };
        let ip = format!("{}.{octet}", self.network);
        let out = std::process::Command::new("ip")
            .args(["addr", "add", &format!("{ip}/32"), "dev", "lo"])
            .output()
            .context("running ip addr add")?;
        // "File exists": left over from a kubelet that was killed; it is ours to reuse.
        if !out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("exists") {
            self.release_ip(octet, &ip);
            bail!("ip addr add {ip}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok((octet, ip))
    }

    /// Removes addresses of our network left on `lo` by a kubelet that was killed.
    fn release_stale(&self) -> Result<()> {
        let out = std::process::Command::new("ip")
            .args(["-o", "-4", "addr", "show", "dev", "lo"])
            .output()
            .context("running ip addr show")?;
        let prefix = format!("{}.", self.network);
        for word in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Some(octet) = word
                .strip_prefix(&prefix)
                .and_then(|w| w.strip_suffix("/32"))
                .and_then(|o| o.parse::<u8>().ok())
            {
                self.release_ip(octet, &format!("{prefix}{octet}"));
            }
        }
        Ok(())
    }

    fn release_ip(&self, octet: u8, ip: &str) {
        let _ = std::process::Command::new("ip")
            .args(["addr", "del", &format!("{ip}/32"), "dev", "lo"])
            .output();
        if let Ok(mut used) = self.used_ips.lock() {
            used.remove(&octet);
        }
    }
}

/// Compiles the bind() shim into ROOT with the system C compiler.
fn build_shim(root: &std::path::Path) -> Result<PathBuf> {
    let source = root.join("bind-shim.c");
    let shim = root.join("bind-shim.so");
    std::fs::write(&source, include_str!("../shim/bind.c"))?;
    let out = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&shim)
        .arg(&source)
        .arg("-ldl")
        .output()
        .context("running cc")?;
    if !out.status.success() {
        bail!("cc failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(shim)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    for dir in ["logs", "pods", "claims", "volumes"] {
        std::fs::create_dir_all(args.root.join(dir))?;
    }
    // Containers run as the pods' users: they must reach the shim and their volumes.
    std::fs::set_permissions(&args.root, std::fs::Permissions::from_mode(0o755))?;
    let shim = build_shim(&args.root)?;
    let mut image_env: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (image, var) in args.image_env {
        let (name, value) = pair(&var).map_err(anyhow::Error::msg)?;
        image_env.entry(image).or_default().push((name, value));
    }
    // kube's rustls needs a process-wide provider: ring, as in the rest of the project.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::try_default()
        .await
        .context("kube client from KUBECONFIG")?;
    node::register(&client, &args.node_name).await?;
    tokio::spawn(node::keep_alive(client.clone(), args.node_name.clone()));
    let kubelet = Arc::new(Kubelet {
        client,
        node: args.node_name,
        root: args.root,
        network: args.pod_network,
        images: args
            .images
            .into_iter()
            .map(|(i, p)| (i, PathBuf::from(p)))
            .collect(),
        image_env,
        shim,
        used_ips: Mutex::new(BTreeSet::new()),
    });
    kubelet.release_stale()?;
    eprintln!("kubelet: node {} ready", kubelet.node);
    let mut workers: HashMap<String, (watch::Sender<View>, JoinHandle<()>)> = HashMap::new();
    let mut term = signal(SignalKind::terminate())?;
    loop {
        if let Err(e) = sync(&kubelet, &mut workers).await {
            eprintln!("kubelet: sync: {e:#}");
        }
        tokio::select! {
            _ = tokio::time::sleep(SYNC) => {}
            _ = term.recv() => break,
        }
    }
    // Stopped: the containers die with us (PR_SET_PDEATHSIG); the addresses would not.
    let used: Vec<u8> = kubelet
        .used_ips
        .lock()
        .map(|u| u.iter().copied().collect())
        .unwrap_or_default();
    for octet in used {
        kubelet.release_ip(octet, &format!("{}.{octet}", kubelet.network));
    }
    Ok(())
}

/// One pass: bind pending pods, hand every bound pod its current view, start workers
/// for new pods, let go of pods that are gone.
async fn sync(
    kubelet: &Arc<Kubelet>,
    workers: &mut HashMap<String, (watch::Sender<View>, JoinHandle<()>)>,
) -> Result<()> {
    let lp = ListParams::default();
    let client = &kubelet.client;
    let pods = Api::<Pod>::all(client.clone()).list(&lp).await?.items;
    let config_maps = Api::<ConfigMap>::all(client.clone()).list(&lp).await?.items;
    let secrets = Api::<Secret>::all(client.clone()).list(&lp).await?.items;
    let objects = Arc::new(Objects::new(config_maps, secrets));
    workers.retain(|_, (_, handle)| !handle.is_finished());
    let mut seen = BTreeSet::new();
    for pod in pods {
        let uid = pod.uid().unwrap_or_default();
        let ns = pod.namespace().unwrap_or_default();
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        let deleting = pod.metadata.deletion_timestamp.is_some();
        if node.is_empty() {
            if !deleting {
                bind(kubelet, &ns, &pod.name_any()).await;
            }
            continue;
        }
        if node != kubelet.node {
            continue;
        }
        seen.insert(uid.clone());
        let view = View {
            pod: pod.clone(),
            objects: objects.clone(),
        };
        if let Some((tx, _)) = workers.get(&uid) {
            tx.send_replace(view);
        } else if deleting {
            // Its worker is done (or never ran here): only the final delete is left.
            pod::final_delete(kubelet, &ns, &pod.name_any(), &uid).await;
        } else if !matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        ) {
            let (tx, rx) = watch::channel(view);
            let handle = tokio::spawn(pod::run(kubelet.clone(), rx));
            workers.insert(uid, (tx, handle));
        }
    }
    // Dropping the sender tells a worker its pod is gone.
    workers.retain(|uid, _| seen.contains(uid));
    Ok(())
}

async fn bind(kubelet: &Kubelet, namespace: &str, name: &str) {
    let api: Api<Pod> = Api::namespaced(kubelet.client.clone(), namespace);
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name, "namespace": namespace},
        "target": {"apiVersion": "v1", "kind": "Node", "name": kubelet.node},
    });
    let bound: Result<serde_json::Value, _> = api
        .create_subresource("binding", name, &PostParams::default(), &binding)
        .await;
    match bound {
        Ok(_) => eprintln!("kubelet: bound pod {namespace}/{name}"),
        Err(e) => eprintln!("kubelet: binding pod {namespace}/{name}: {e}"),
    }
}

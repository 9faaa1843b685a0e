//! The operator: `render` (pure: a MailServer to the objects it needs), `keys` (key
//! material generated once), `apply` (server-side apply of what changed), `status`
//! (conditions), and the `controller` tying them together behind `leader` election.

mod apply;
mod controller;
mod keys;
mod leader;
mod metrics;
pub mod render;
mod status;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;

use render::{PdbApi, RenderOptions, SecretData};

/// The image the operator runs from, used for the mail server pods unless a
/// MailServer names another.
pub const DEFAULT_IMAGE: &str = concat!("ghcr.io/posthorn/posthorn:", env!("CARGO_PKG_VERSION"));

/// The operator's User-Agent towards the API server.
pub const USER_AGENT: &str = concat!("posthorn-operator/", env!("CARGO_PKG_VERSION"));

/// What `posthorn render` is asked for.
pub struct RenderCommand {
    pub manifest: PathBuf,
    pub secrets_dir: Option<PathBuf>,
    pub image: String,
    pub without_cert_manager: bool,
    pub without_external_dns: bool,
    pub pdb_v1beta1: bool,
}

/// `posthorn render`: the objects the operator would apply, as a YAML stream.
pub fn render_command(command: &RenderCommand) -> anyhow::Result<String> {
    let server = crate::api::load_manifest(&command.manifest)?;
    let secrets = match &command.secrets_dir {
        Some(dir) => read_secrets_dir(dir)?,
        None => SecretData::new(),
    };
    let options = RenderOptions {
        image: command.image.clone(),
        certificate_crd: !command.without_cert_manager,
        dns_endpoint_crd: !command.without_external_dns,
        pdb_api: if command.pdb_v1beta1 {
            PdbApi::V1beta1
        } else {
            PdbApi::V1
        },
        // A cluster without policy/v1 (before 1.21) has no claim retention policy either.
        claim_retention_policy: !command.pdb_v1beta1,
    };
    let rendered = render::render(&server, &secrets, &options)?;
    render::to_yaml(&rendered)
}

/// Secrets laid out as the kubelet mounts them: `DIR/<secret-name>/<key>`.
fn read_secrets_dir(dir: &Path) -> anyhow::Result<SecretData> {
    let mut secrets = SecretData::new();
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("reading secrets dir {}", dir.display()))?;
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let mut data = std::collections::BTreeMap::new();
        for file in std::fs::read_dir(entry.path())? {
            let file = file?;
            // Skip the kubelet's `..data` bookkeeping; its files are seen via symlinks.
            let name = file.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !file.path().is_file() {
                continue;
            }
            data.insert(name, std::fs::read(file.path())?);
        }
        secrets.insert(entry.file_name().to_string_lossy().into_owned(), data);
    }
    Ok(secrets)
}

/// What `posthorn operator` is asked for.
pub struct OperatorCommand {
    pub image: String,
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    pub metrics: SocketAddr,
    /// Namespace and name of the leader election Lease.
    pub lease_namespace: String,
    pub lease_name: String,
    /// This replica's name in the Lease (the pod name in a cluster).
    pub identity: String,
}

/// `posthorn operator`: waits for the leader Lease, then runs the controller while
/// renewing it. Losing the Lease ends the process (the Deployment restarts it as a
/// standby), so two replicas never reconcile at once.
pub async fn run(command: OperatorCommand) -> anyhow::Result<()> {
    let mut config = kube::Config::infer()
        .await
        .context("finding the Kubernetes API (KUBECONFIG or in-cluster config)")?;
    // kube-rs sends no User-Agent: name ourselves, so audit logs tell our writes apart.
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(USER_AGENT),
    ));
    let client = kube::Client::try_from(config).context("building the Kubernetes API client")?;
    let metrics = Arc::new(metrics::OperatorMetrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(command.metrics)
        .await
        .with_context(|| format!("binding the metrics address {}", command.metrics))?;
    tokio::spawn(crate::telemetry::serve_http(
        listener,
        metrics.clone(),
        ready.clone(),
    ));
    // A standby replica is healthy and ready too: it is doing its job, waiting.
    ready.store(true, Ordering::Relaxed);

    let election = leader::LeaderElection::new(
        Api::<Lease>::namespaced(client.clone(), &command.lease_namespace),
        &command.lease_name,
        &command.identity,
    );
    tracing::info!(identity = %command.identity, lease = %command.lease_name, "waiting for the leader Lease");
    loop {
        match election.try_acquire_or_renew().await {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "leader election"),
        }
        tokio::time::sleep(leader::RENEW_INTERVAL).await;
    }
    tracing::info!(identity = %command.identity, "leading: starting the controller");
    metrics.set_leader(true);

    let context = Arc::new(controller::Context::new(client, command.image, metrics));
    let mut controller = tokio::spawn(controller::run(context));
    loop {
        tokio::select! {
            result = &mut controller => {
                result.context("controller task")?;
                return Ok(());
            }
            _ = tokio::time::sleep(leader::RENEW_INTERVAL) => {}
        }
        match election.try_acquire_or_renew().await {
            Ok(true) => {}
            Ok(false) => anyhow::bail!("lost the leader Lease to another replica"),
            // The API server is away: nobody can take the Lease meanwhile, and when it
            // is back the next renewal tells whether another replica did. Server-side
            // apply under one field manager makes a few seconds of overlap harmless.
            Err(e) => tracing::warn!(error = %e, "renewing the leader Lease"),
        }
    }
}

//! The operator: `render` (pure: a MailServer to the objects it needs), `keys` (key
//! material generated once), `apply` (server-side apply of what changed), `status`
//! (conditions), `drain` (pure: the scale-down drain) with `pods` (its pod I/O), and
//! the `controller` tying them together behind `leader` election.

mod apply;
mod controller;
mod dns_status;
mod drain;
mod keys;
mod leader;
mod mailbox_status;
mod metrics;
mod pods;
pub mod render;
mod secrets;
mod status;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use tokio_util::sync::CancellationToken;

use crate::signals::Signals;

/// The image the operator runs from, used for the mail server pods unless a
/// MailServer names another.
pub const DEFAULT_IMAGE: &str = concat!("ghcr.io/posthorn/posthorn:", env!("CARGO_PKG_VERSION"));

/// The operator's User-Agent towards the API server.
pub const USER_AGENT: &str = concat!("posthorn-operator/", env!("CARGO_PKG_VERSION"));

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
    /// The namespaces whose MailServers it runs; empty: every namespace.
    pub watch_namespaces: Vec<String>,
}

/// `posthorn operator`: waits for the leader Lease, then runs the controller while
/// renewing it. Losing the Lease, or failing to renew it in time, stops the controller
/// and makes this replica a standby again, so two replicas never reconcile at once.
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

    let mut election = leader::LeaderElection::new(
        Api::<Lease>::namespaced(client.clone(), &command.lease_namespace),
        &command.lease_name,
        &command.identity,
    );
    let context = Arc::new(controller::Context::new(
        client,
        command.image,
        metrics.clone(),
    ));
    // Caught from the start: a standby replica, even one that led before, stops on
    // SIGTERM at once; a leading one lets its reconciles under way finish first.
    let mut signals = Signals::catch()?;
    loop {
        tracing::info!(identity = %command.identity, lease = %command.lease_name, "waiting for the leader Lease");
        loop {
            let acquired = tokio::select! {
                acquired = election.try_acquire_or_renew() => acquired,
                () = signals.recv() => return Ok(()),
            };
            match acquired {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election"),
            }
            tokio::select! {
                () = tokio::time::sleep(leader::RENEW_INTERVAL) => {}
                () = signals.recv() => return Ok(()),
            }
        }
        tracing::info!(identity = %command.identity, "leading: starting the controller");
        metrics.set_leader(true);
        let stop = CancellationToken::new();
        let mut controller = tokio::spawn(controller::run(
            context.clone(),
            command.watch_namespaces.clone(),
            stop.clone(),
        ));
        let stepped_down = loop {
            tokio::select! {
                result = &mut controller => {
                    result.context("controller task")?;
                    return Ok(());
                }
                () = signals.recv() => {
                    stop.cancel();
                    return controller.await.context("controller task");
                }
                () = tokio::time::sleep(leader::RENEW_INTERVAL) => {}
            }
            if let Err(e) = election.keep_leading().await {
                break e;
            }
        };
        // Back to standby: the controller stops before another replica may lead, and
        // leading resumes when the Lease is ours again (after an API server outage,
        // at once: it still names us).
        controller.abort();
        metrics.set_leader(false);
        tracing::warn!(error = %stepped_down, "stopped leading");
    }
}

//! `posthorn serve`: assembles the data plane from a config file and runs it.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::config::{Config, ShutdownConfig};
use crate::handover::{Handover, drain};
use crate::mail::{self, ListenerKind};
use crate::policy::Policy;
use crate::queue::{QueueHandle, QueueRunner, control};
use crate::signals::Signals;
use crate::smtp::{self, ConnectionLimits, Server};
use crate::spool::Spool;
use crate::telemetry::{self, Metrics};

/// The addresses actually bound (ports given as 0 are resolved).
pub struct Bound {
    pub listeners: Vec<(ListenerKind, SocketAddr)>,
    pub metrics: Option<SocketAddr>,
    pub handover: Option<SocketAddr>,
    running: Running,
}

/// What a graceful shutdown stops, waits for, and in what time.
struct Running {
    accept: Vec<JoinHandle<()>>,
    accepting: CancellationToken,
    sessions: TaskTracker,
    spool: Arc<Spool>,
    queue: QueueHandle,
    ready: Arc<AtomicBool>,
    plan: ShutdownConfig,
    signals: Signals,
}

impl Bound {
    /// `listening smtp=… submission=… submissions=… metrics=…`: one line that scripts
    /// and tests parse.
    pub fn summary(&self) -> String {
        let mut line = String::from("listening");
        for (kind, addr) in &self.listeners {
            let _ = write!(line, " {}={addr}", kind.name());
        }
        if let Some(addr) = self.metrics {
            let _ = write!(line, " metrics={addr}");
        }
        if let Some(addr) = self.handover {
            let _ = write!(line, " handover={addr}");
        }
        line
    }

    /// Waits for SIGTERM or Ctrl-C, then call [`Bound::shutdown`].
    pub async fn signalled(&mut self) {
        self.running.signals.recv().await;
        tracing::info!("shutting down");
    }

    pub fn get(&self, kind: ListenerKind) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, a)| *a)
    }

    /// Graceful stop (SIGTERM), in the order of [`ShutdownConfig`]: not ready at once,
    /// accepting for `acceptDelay` more, then sessions and deliveries, all within `grace`
    /// of the signal. What is left stays in the spool for the next start.
    pub async fn shutdown(self) {
        let Running {
            accept,
            accepting,
            sessions,
            spool,
            queue,
            ready,
            plan,
            signals: _,
        } = self.running;
        let signalled = Instant::now();
        let deadline = signalled + plan.grace;
        // The endpoints controller drops the pod on the failing probe; until then,
        // clients that still connect here are served.
        ready.store(false, Ordering::Release);
        tracing::info!(accept_delay = ?plan.accept_delay, "not ready; listeners close after the accept delay");
        tokio::time::sleep_until(signalled + plan.accept_delay).await;
        // An accept task that ends closes its listener: new connections are refused.
        accepting.cancel();
        for task in accept {
            let _ = task.await;
        }
        sessions.close();
        let sessions_end = deadline.min(Instant::now() + plan.session_timeout);
        if tokio::time::timeout_at(sessions_end, sessions.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                sessions = sessions.len(),
                "sessions still open at the session timeout; they end with the process"
            );
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout_at(deadline, queue.drained(left))
            .await
            .is_err()
        {
            tracing::warn!(
                "deliveries still running at the shutdown deadline; their messages stay queued"
            );
        }
        tracing::info!(
            queued = spool.stats().messages,
            "stopped; queued messages resume on the next start"
        );
    }
}

/// Loads every file, binds every socket, and starts serving. Errors here are the
/// operator's to fix (a missing Secret, a port in use) and name what is wrong.
pub async fn start(config: Config) -> anyhow::Result<Bound> {
    let signals = Signals::catch()?;
    // First, so that a second server on this spool stops before doing anything; its
    // errors name the spool, and one in use is a one-line error of its own.
    let spool = Spool::open(&config.spool.directory).await?;
    let metrics = Arc::new(Metrics::new());
    let ecdsa = config
        .tls
        .ecdsa
        .as_ref()
        .map(|p| (p.cert.as_path(), p.key.as_path()));
    let tls = crate::tls::server_config(
        &config.tls.cert,
        &config.tls.key,
        ecdsa,
        config.reload_interval,
    )
    .context("loading the TLS certificate")?;
    let local_domain = mail::primary_domain(&config.domains)
        .unwrap_or(&config.hostname)
        .to_string();
    let auth = Authenticator::new(&config.auth, local_domain, config.reload_interval)
        .context("loading the user database")?;
    let policy = Policy::new(&config).context("setting up the access policy")?;
    let delivery = QueueRunner::start(spool.clone(), &config, metrics.clone())
        .context("setting up delivery")?;
    control::serve(&config.spool.directory, delivery.clone())
        .context("opening the queue control socket")?;
    let delivery_handle = delivery.clone();

    let mut sockets = Vec::new();
    for kind in ListenerKind::ALL {
        if let Some(addr) = config.listeners.get(kind) {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the {} listener to {addr}", kind.name()))?;
            sockets.push((kind, listener));
        }
    }
    let metrics_listener = match config.metrics {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the metrics endpoint to {addr}"))?,
        ),
        None => None,
    };

    let listeners = sockets
        .iter()
        .map(|(kind, l)| Ok((*kind, l.local_addr()?)))
        .collect::<std::io::Result<_>>()?;
    let metrics_addr = metrics_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;

    let limits = ConnectionLimits::new(
        config.limits.max_connections,
        config.limits.max_connections_per_ip,
        config.limits.max_connections_per_network(),
    );
    let plan = config.shutdown.clone();
    let server = Arc::new(Server {
        config,
        tls,
        auth,
        policy,
        spool: spool.clone(),
        delivery: delivery.clone(),
        metrics: metrics.clone(),
        limits,
    });
    let sessions = TaskTracker::new();
    let accepting = CancellationToken::new();
    let accept = sockets
        .into_iter()
        .map(|(kind, listener)| {
            tokio::spawn(smtp::serve(
                server.clone(),
                kind,
                listener,
                sessions.clone(),
                accepting.clone(),
            ))
        })
        .collect();
    let ready = Arc::new(AtomicBool::new(false));
    let serving = drain::Serving {
        ready: ready.clone(),
        accepting: accepting.clone(),
    };
    let (handover, drain_routes) = start_handover(&server, serving).await?;
    if let Some(path) = &server.config.auth.dovecot_socket {
        let listener = crate::auth::dovecot::bind(path, &server.config.auth)?;
        tokio::spawn(crate::auth::dovecot::serve(
            listener,
            server.auth.clone(),
            metrics.clone(),
        ));
    }
    tokio::spawn(publish_spool_size(spool.clone(), metrics.clone()));
    if let Some(listener) = metrics_listener {
        tokio::spawn(telemetry::serve_http_with(
            listener,
            metrics,
            ready.clone(),
            drain_routes,
        ));
    }
    // Every file is loaded and every socket is accepting: ready for traffic.
    ready.store(true, Ordering::Release);
    Ok(Bound {
        listeners,
        metrics: metrics_addr,
        handover,
        running: Running {
            accept,
            accepting,
            sessions,
            spool,
            queue: delivery_handle,
            ready,
            plan,
            signals,
        },
    })
}

/// Binds the handover listener and starts watching for a drain, as `handover` asks;
/// answers the bound address and the `/drain` route for the metrics endpoint.
async fn start_handover(
    server: &Server,
    serving: drain::Serving,
) -> anyhow::Result<(Option<SocketAddr>, Router)> {
    let config = &server.config;
    let Some(token_file) = config.handover.token_file.clone() else {
        return Ok((None, Router::new()));
    };
    let handover = Handover {
        token_file,
        spool: server.spool.clone(),
        queue: server.delivery.clone(),
        // The message and its envelope, however many recipient outcomes it holds.
        max_file: config.limits.max_message_size as u64 + (1 << 20),
    };
    let mut bound = None;
    if let Some(addr) = config.handover.listen {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the handover listener to {addr}"))?;
        bound = Some(listener.local_addr()?);
        tokio::spawn(handover.clone().serve(listener, server.tls.clone()));
    }
    let status = drain::Status::default();
    let routes = status.routes(&handover);
    if let Some(file) = config.handover.annotations_file.clone() {
        tokio::spawn(drain::watch(
            file,
            config.reload_interval,
            handover,
            config.tls.cert.clone(),
            serving,
            status,
        ));
    }
    Ok((bound, routes))
}

async fn publish_spool_size(spool: Arc<Spool>, metrics: Arc<Metrics>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        let stats = spool.stats();
        metrics.set_spool(stats.messages, stats.bytes);
    }
}

//! `posthorn serve`: assembles the data plane from a config file and runs it.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::mail::{self, ListenerKind};
use crate::policy::Policy;
use crate::queue::{QueueHandle, QueueRunner, control};
use crate::smtp::{self, ConnectionLimits, Server};
use crate::spool::Spool;
use crate::telemetry::{self, Metrics};

/// The addresses actually bound (ports given as 0 are resolved).
pub struct Bound {
    pub listeners: Vec<(ListenerKind, SocketAddr)>,
    pub metrics: Option<SocketAddr>,
    running: Running,
}

/// What a graceful shutdown stops, waits for, and in what time.
struct Running {
    accept: Vec<JoinHandle<()>>,
    server: Arc<Server>,
    queue: QueueHandle,
    ready: Arc<AtomicBool>,
    grace: Duration,
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
        line
    }

    pub fn get(&self, kind: ListenerKind) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, a)| *a)
    }

    /// Graceful stop (SIGTERM): stop accepting and report not ready, let the sessions
    /// in flight finish, and keep delivering until nothing is due — all within
    /// `delivery.shutdownGrace`. What is left stays in the spool for the next start.
    pub async fn shutdown(self) {
        let Running {
            accept,
            server,
            queue,
            ready,
            grace,
        } = self.running;
        let deadline = Instant::now() + grace;
        ready.store(false, Ordering::Release);
        for task in accept {
            task.abort();
            let _ = task.await;
        }
        // Each session task holds a reference to the server: they are done when ours
        // is the last one.
        while Arc::strong_count(&server) > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let sessions = Arc::strong_count(&server) - 1;
        if sessions > 0 {
            tracing::warn!(
                sessions,
                "sessions still open at the shutdown deadline; closing them"
            );
        }
        if tokio::time::timeout_at(deadline, queue.drained())
            .await
            .is_err()
        {
            tracing::warn!(
                "deliveries still running at the shutdown deadline; their messages stay queued"
            );
        }
        let left = server.spool.stats().messages;
        tracing::info!(
            queued = left,
            "stopped; queued messages resume on the next start"
        );
    }
}

/// Loads every file, binds every socket, and starts serving. Errors here are the
/// operator's to fix (a missing Secret, a port in use) and name what is wrong.
pub async fn start(config: Config) -> anyhow::Result<Bound> {
    let metrics = Arc::new(Metrics::new());
    let tls = crate::tls::server_config(&config.tls.cert, &config.tls.key, config.reload_interval)
        .context("loading the TLS certificate")?;
    let local_domain = mail::primary_domain(&config.domains)
        .unwrap_or(&config.hostname)
        .to_string();
    let auth = Authenticator::new(&config.auth, local_domain, config.reload_interval)
        .context("loading the user database")?;
    let policy = Policy::new(&config).context("setting up the access policy")?;
    let spool = Spool::open(&config.spool.directory)
        .await
        .with_context(|| format!("opening the spool {}", config.spool.directory.display()))?;
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
    let grace = config.delivery.shutdown_grace;
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
    let accept = sockets
        .into_iter()
        .map(|(kind, listener)| tokio::spawn(smtp::serve(server.clone(), kind, listener)))
        .collect();
    if let Some(path) = &server.config.auth.dovecot_socket {
        let listener = crate::auth::dovecot::bind(path, &server.config.auth)?;
        tokio::spawn(crate::auth::dovecot::serve(
            listener,
            server.auth.clone(),
            metrics.clone(),
        ));
    }
    tokio::spawn(publish_spool_size(spool, metrics.clone()));
    let ready = Arc::new(AtomicBool::new(false));
    if let Some(listener) = metrics_listener {
        tokio::spawn(telemetry::serve_http(listener, metrics, ready.clone()));
    }
    // Every file is loaded and every socket is accepting: ready for traffic.
    ready.store(true, Ordering::Release);
    Ok(Bound {
        listeners,
        metrics: metrics_addr,
        running: Running {
            accept,
            server,
            queue: delivery_handle,
            ready,
            grace,
        },
    })
}

async fn publish_spool_size(spool: Arc<Spool>, metrics: Arc<Metrics>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        let stats = spool.stats();
        metrics.set_spool(stats.messages, stats.bytes);
    }
}

/// Waits for SIGTERM (Kubernetes) or Ctrl-C.
pub async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        result = tokio::signal::ctrl_c() => result?,
    }
    tracing::info!("shutting down");
    Ok(())
}

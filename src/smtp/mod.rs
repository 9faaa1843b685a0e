//! The SMTP side: listeners, connection limits, and the session state machine.

pub mod command;
pub mod data;
mod deadline;
mod duplicates;
mod envelope;
mod limits;
mod path;
pub mod proxy;
mod received;
mod session;
mod size_param;
mod stream;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::mail::ListenerKind;
use crate::policy::Policy;
use crate::queue::QueueHandle;
use crate::spool::Spool;
use crate::telemetry::Metrics;
pub use limits::ConnectionLimits;

/// Everything a session needs, shared by all connections.
pub struct Server {
    pub config: Config,
    pub tls: Arc<rustls::ServerConfig>,
    pub auth: Arc<Authenticator>,
    pub policy: Policy,
    pub spool: Arc<Spool>,
    pub delivery: QueueHandle,
    pub metrics: Arc<Metrics>,
    pub limits: ConnectionLimits,
}

/// Accepts connections until `accepting` is cancelled, then closes the listener; one
/// task per session in `sessions`, so that a shutdown can wait for them.
pub async fn serve(
    server: Arc<Server>,
    kind: ListenerKind,
    listener: TcpListener,
    sessions: TaskTracker,
    accepting: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = accepting.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(conn) => conn,
            Err(err) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(listener = kind.name(), error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        sessions.spawn(start_session(server.clone(), kind, tcp, peer));
    }
}

/// Learns who the client is (from a PROXY header when `peer` is a trusted balancer),
/// then runs the session in a span naming it.
async fn start_session(
    server: Arc<Server>,
    kind: ListenerKind,
    mut tcp: TcpStream,
    peer: SocketAddr,
) {
    // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d.
    let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
    let trusted = &server.config.proxy_protocol.trusted_cidrs;
    let client = match proxy::client_address(trusted, &mut tcp, peer).await {
        Ok(client) => client,
        Err(err) => {
            tracing::warn!(listener = kind.name(), proxy = %peer, error = %err, "connection refused");
            server
                .metrics
                .connection_rejected(kind.name(), "proxy_protocol");
            // Postfix's answer; none on 465, where it would be plaintext.
            if !kind.implicit_tls() {
                let reply = format!(
                    "421 4.3.0 {} Server local error\r\n",
                    server.config.hostname
                );
                let write = tcp.write_all(reply.as_bytes());
                let _ = tokio::time::timeout(Duration::from_secs(5), write).await;
            }
            return;
        }
    };
    let span = tracing::info_span!(
        "session",
        listener = kind.name(),
        client = %client,
        proxy = tracing::field::Empty
    );
    if client != peer {
        span.record("proxy", tracing::field::display(peer));
    }
    let _ = tcp.set_nodelay(true);
    session::run(server, kind, tcp, client)
        .instrument(span)
        .await
}

/// Client-chosen text in logs, replies and headers: one line, no control characters.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Postfix prints clients as `name[ip]`; we never look the name up.
fn client_name(peer: SocketAddr) -> String {
    format!("unknown[{}]", peer.ip())
}

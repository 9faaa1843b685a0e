//! The SMTP side: listeners, connection limits, and the session state machine.

mod limits;
mod received;
pub mod session;
mod stream;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::Instrument;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::delivery::QueueHandle;
use crate::policy::Policy;
use crate::spool::Spool;
use crate::telemetry::Metrics;
pub use limits::ConnectionLimits;

/// The three kinds of listener, with the semantics of Postfix's master.cf entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// Port 25: inbound for the local domains, STARTTLS offered, no AUTH.
    Smtp,
    /// Port 587: `smtpd_tls_security_level=encrypt`, SASL, `permit_sasl_authenticated,reject`.
    Submission,
    /// Port 465: as submission, but TLS from the first byte.
    Submissions,
}

impl ListenerKind {
    /// The tag on every log line, as `syslog_name=postfix/submission` was.
    pub fn name(self) -> &'static str {
        match self {
            ListenerKind::Smtp => "smtp",
            ListenerKind::Submission => "submission",
            ListenerKind::Submissions => "submissions",
        }
    }

    fn auth_enabled(self) -> bool {
        self != ListenerKind::Smtp
    }

    /// Only EHLO/HELO/STARTTLS/NOOP/RSET/QUIT before TLS.
    fn tls_required(self) -> bool {
        self != ListenerKind::Smtp
    }
}

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

/// Accepts connections forever, one task per session.
pub async fn serve(server: Arc<Server>, kind: ListenerKind, listener: TcpListener) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(err) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(listener = kind.name(), error = %err, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let server = server.clone();
        let span = tracing::info_span!("session", listener = kind.name(), client = %peer);
        tokio::spawn(session::run(server, kind, tcp, peer).instrument(span));
    }
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

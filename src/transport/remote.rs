//! Sessions with remote next hops: the relay host (verified TLS, SASL) and MX hosts
//! (opportunistic STARTTLS, like Postfix's `smtp_tls_security_level = may`), and the
//! cache that lets consecutive deliveries to one destination share a session.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use mail_send::{Credentials, SmtpClient};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use smtp_proto::{EXT_START_TLS, EhloResponse};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::client::{self, Attempt, Sent, Transaction};
use crate::config::RelayConfig;
use crate::spool::{Remote, RemoteKind, Status};

/// How long an idle session is kept for the next delivery to the same destination
/// (Postfix `smtp_connection_cache_time_limit` is 2 s).
const IDLE_LIMIT: Duration = Duration::from_secs(5);

pub enum Stream {
    Plain(SmtpClient<TcpStream>),
    Tls(Box<SmtpClient<TlsStream<TcpStream>>>),
}

/// A greeted session, ready for a transaction.
pub struct Session {
    stream: Stream,
    caps: EhloResponse<String>,
    /// The relay or MX host (with the address connected to).
    pub peer: Remote,
    idle_since: Instant,
}

impl Session {
    pub async fn send(&mut self, txn: &Transaction<'_>) -> Sent {
        match &mut self.stream {
            Stream::Plain(c) => client::send(c, &self.caps, &self.peer, txn, false).await,
            Stream::Tls(c) => client::send(c, &self.caps, &self.peer, txn, false).await,
        }
    }

    /// A cheap check that a cached session still works before it carries mail.
    async fn alive(&mut self) -> bool {
        let reply = match &mut self.stream {
            Stream::Plain(c) => c.cmd(b"RSET\r\n").await,
            Stream::Tls(c) => c.cmd(b"RSET\r\n").await,
        };
        matches!(reply, Ok(r) if r.code == 250)
    }
}

/// Why a session could not be opened; `next_host` says whether another MX host is worth
/// trying.
#[derive(Debug)]
pub struct OpenError {
    pub attempt: Attempt,
    pub next_host: bool,
}

impl OpenError {
    fn temporary(status: Status, text: String) -> OpenError {
        OpenError {
            attempt: Attempt::temporary(status, text),
            next_host: true,
        }
    }
}

/// What every outgoing session needs.
pub struct Connector {
    pub helo: String,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    /// Verifies against the system roots plus the relay's CA file.
    verified: TlsConnector,
    /// Accepts any certificate: MX hosts are encrypted to when they offer it, not
    /// authenticated (there is no way to know what name to expect without DANE/MTA-STS).
    opportunistic: TlsConnector,
}

impl Connector {
    pub fn new(
        helo: String,
        connect_timeout: Duration,
        command_timeout: Duration,
        ca_file: Option<&Path>,
    ) -> anyhow::Result<Connector> {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for error in &native.errors {
            tracing::debug!(%error, "skipping a system CA certificate");
        }
        roots.add_parsable_certificates(native.certs);
        if let Some(path) = ca_file {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .with_context(|| format!("reading CA certificates from {}", path.display()))?;
            anyhow::ensure!(
                !certs.is_empty(),
                "no certificate in CA file {}",
                path.display()
            );
            for cert in certs {
                roots.add(cert)?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verified = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let opportunistic = mail_send::smtp::tls::build_tls_connector(true)
            .map_err(|e| anyhow::anyhow!("building the TLS client: {e}"))?;
        Ok(Connector {
            helo,
            connect_timeout,
            command_timeout,
            verified: TlsConnector::from(Arc::new(verified)),
            opportunistic,
        })
    }

    /// Opens a session with the relay host: TCP, implicit TLS or STARTTLS (required),
    /// EHLO, and AUTH when credentials are configured.
    pub async fn open_relay(&self, relay: &RelayConfig) -> Result<Session, OpenError> {
        let peer = Remote {
            kind: RemoteKind::Relay,
            name: relay.host.clone(),
            addr: None,
        };
        let fail =
            |what: String| OpenError::temporary(Status::new(4, 4, 1), format!("{peer}: {what}"));
        let (host, port) = relay.host_port().map_err(|e| fail(format!("{e:#}")))?;
        let tcp = self
            .tcp((host, port))
            .await
            .map_err(|e| fail(format!("connection failed: {e}")))?;
        let plain = SmtpClient {
            stream: tcp,
            timeout: self.command_timeout,
        };
        let mut session = if relay.implicit_tls() {
            let client = plain
                .into_tls(&self.verified, host)
                .await
                .map_err(|e| tls_failed(&peer, &e))?;
            self.greet(Stream::Tls(Box::new(client)), peer.clone())
                .await?
        } else {
            let session = self.greet(Stream::Plain(plain), peer.clone()).await?;
            if !session.caps.has_capability(EXT_START_TLS) {
                return Err(OpenError::temporary(
                    Status::new(4, 7, 4),
                    format!(
                        "{peer}: STARTTLS not offered; refusing to send credentials and \
                     mail in clear text"
                    ),
                ));
            }
            self.start_tls(session, &self.verified, host).await?
        };
        if let Some(dir) = &relay.credentials_dir {
            let (username, password) = read_credentials(dir).map_err(|e| {
                OpenError::temporary(Status::new(4, 7, 0), format!("{peer}: credentials: {e:#}"))
            })?;
            let credentials = Credentials::new(username, password.0);
            let authenticated = match &mut session.stream {
                Stream::Plain(c) => c
                    .authenticate(&credentials, &session.caps)
                    .await
                    .map(|_| ()),
                Stream::Tls(c) => c
                    .authenticate(&credentials, &session.caps)
                    .await
                    .map(|_| ()),
            };
            if let Err(error) = authenticated {
                let why = match &error {
                    mail_send::Error::AuthenticationFailed(reply)
                    | mail_send::Error::UnexpectedReply(reply) => client::reply(reply).to_string(),
                    other => other.to_string(),
                };
                return Err(OpenError::temporary(
                    Status::new(4, 7, 0),
                    format!("{peer}: authentication failed: {why}"),
                ));
            }
        }
        Ok(session)
    }

    /// Opens a session with one MX host address: TCP, greeting, EHLO, and STARTTLS
    /// when offered.
    pub async fn open_mx(&self, host: &str, addr: SocketAddr) -> Result<Session, OpenError> {
        let peer = Remote {
            kind: RemoteKind::Host,
            name: host.to_string(),
            addr: Some(addr.ip()),
        };
        let tcp = self.tcp(addr).await.map_err(|e| {
            OpenError::temporary(
                Status::new(4, 4, 1),
                format!("connect to {peer}:{}: {e}", addr.port()),
            )
        })?;
        let plain = SmtpClient {
            stream: tcp,
            timeout: self.command_timeout,
        };
        let session = self.greet(Stream::Plain(plain), peer).await?;
        if session.caps.has_capability(EXT_START_TLS) {
            let name = host.trim_end_matches('.');
            return self.start_tls(session, &self.opportunistic, name).await;
        }
        Ok(session)
    }

    async fn tcp(&self, addr: impl tokio::net::ToSocketAddrs) -> std::io::Result<TcpStream> {
        match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connection timed out",
            )),
        }
    }

    /// Reads the greeting and says EHLO.
    async fn greet(&self, stream: Stream, peer: Remote) -> Result<Session, OpenError> {
        let (greeting, caps, stream) = match stream {
            Stream::Plain(mut c) => {
                let greeting = self.read_greeting(&mut c).await;
                let caps = match &greeting {
                    Ok(()) => Some(c.ehlo(&self.helo).await),
                    Err(_) => None,
                };
                (greeting, caps, Stream::Plain(c))
            }
            Stream::Tls(mut c) => {
                let greeting = self.read_greeting(&mut c).await;
                let caps = match &greeting {
                    Ok(()) => Some(c.ehlo(&self.helo).await),
                    Err(_) => None,
                };
                (greeting, caps, Stream::Tls(c))
            }
        };
        greeting.map_err(|e| greeting_failed(&peer, e))?;
        let caps = match caps.expect("EHLO sent after a greeting") {
            Ok(caps) => caps,
            Err(error) => return Err(command_failed(&peer, "EHLO", error)),
        };
        Ok(Session {
            stream,
            caps,
            peer,
            idle_since: Instant::now(),
        })
    }

    async fn read_greeting<S>(&self, client: &mut SmtpClient<S>) -> Result<(), mail_send::Error>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let reply = tokio::time::timeout(self.connect_timeout, client.read())
            .await
            .map_err(|_| mail_send::Error::Timeout)??;
        if reply.code == 220 {
            Ok(())
        } else {
            Err(mail_send::Error::UnexpectedReply(reply))
        }
    }

    async fn start_tls(
        &self,
        session: Session,
        connector: &TlsConnector,
        name: &str,
    ) -> Result<Session, OpenError> {
        let Stream::Plain(client) = session.stream else {
            return Ok(session);
        };
        let peer = session.peer;
        let mut client = client
            .start_tls(connector, name)
            .await
            .map_err(|e| tls_failed(&peer, &e))?;
        let caps = client
            .ehlo(&self.helo)
            .await
            .map_err(|e| command_failed(&peer, "EHLO", e))?;
        Ok(Session {
            stream: Stream::Tls(Box::new(client)),
            caps,
            peer,
            idle_since: Instant::now(),
        })
    }
}

fn greeting_failed(peer: &Remote, error: mail_send::Error) -> OpenError {
    match error {
        // RFC 5321 §5: a host that refuses in its greeting is skipped like one that
        // cannot be reached.
        mail_send::Error::UnexpectedReply(reply) => OpenError::temporary(
            Status::new(4, 4, 2),
            format!("{peer} refused to talk to me: {}", client::reply(&reply)),
        ),
        other => OpenError::temporary(
            Status::new(4, 4, 2),
            format!("{peer}: no greeting: {other}"),
        ),
    }
}

fn command_failed(peer: &Remote, command: &str, error: mail_send::Error) -> OpenError {
    let text = match error {
        mail_send::Error::UnexpectedReply(reply) => client::reply(&reply).to_string(),
        other => other.to_string(),
    };
    OpenError::temporary(
        Status::new(4, 4, 2),
        format!("{peer}: {command} failed: {text}"),
    )
}

fn tls_failed(peer: &Remote, error: &mail_send::Error) -> OpenError {
    OpenError::temporary(Status::new(4, 7, 5), format!("{peer}: TLS failed: {error}"))
}

/// A password that never shows up in logs or Debug output.
struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// `username` and `password` from a mounted basic-auth Secret; a trailing newline (as
/// `echo` leaves it) is not part of either.
fn read_credentials(dir: &Path) -> anyhow::Result<(String, Password)> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path)
            .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
            .with_context(|| format!("reading {}", path.display()))
    };
    Ok((read("username")?, Password(read("password")?)))
}

/// Idle sessions by destination, each kept for [`IDLE_LIMIT`].
#[derive(Default)]
pub struct SessionCache {
    idle: Mutex<HashMap<String, Vec<Session>>>,
}

impl SessionCache {
    /// An idle session to `destination` that still answers, if there is one.
    pub async fn take(&self, destination: &str) -> Option<Session> {
        loop {
            let mut session = {
                let mut idle = self.idle.lock().expect("not poisoned");
                let sessions = idle.get_mut(destination)?;
                let session = sessions.pop();
                if sessions.is_empty() {
                    idle.remove(destination);
                }
                session?
            };
            if session.idle_since.elapsed() < IDLE_LIMIT && session.alive().await {
                return Some(session);
            }
        }
    }

    pub fn put(&self, destination: &str, mut session: Session) {
        session.idle_since = Instant::now();
        let mut idle = self.idle.lock().expect("not poisoned");
        // Sessions past their time are dropped here, which closes them.
        idle.retain(|_, sessions| {
            sessions.retain(|s| s.idle_since.elapsed() < IDLE_LIMIT);
            !sessions.is_empty()
        });
        idle.entry(destination.to_string())
            .or_default()
            .push(session);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_files_without_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("username"), "relay-user\n").unwrap();
        std::fs::write(dir.path().join("password"), "s3cret\r\n").unwrap();
        let (user, password) = read_credentials(dir.path()).unwrap();
        assert_eq!(user, "relay-user");
        assert_eq!(password.0, "s3cret");
        assert!(!format!("{password:?}").contains("s3cret"));
        std::fs::remove_file(dir.path().join("password")).unwrap();
        let error = read_credentials(dir.path()).unwrap_err();
        assert!(format!("{error:#}").contains("password"), "{error:#}");
    }
}

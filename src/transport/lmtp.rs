//! Delivery to a mailbox server over LMTP (RFC 2033), e.g. Dovecot's `lmtp` service, on
//! `host:port` or `unix:/path`. Each recipient gets its own reply after the data, so
//! one unknown user fails alone.

use std::path::PathBuf;
use std::time::Duration;

use mail_send::SmtpClient;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

use super::client::{self, Attempt, Sent, Transaction};
use crate::spool::{Outcome, Remote, RemoteKind, Status};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Tcp(String),
    Unix(PathBuf),
}

impl Target {
    pub fn parse(spec: &str) -> anyhow::Result<Target> {
        match spec.strip_prefix("unix:") {
            Some(path) if path.starts_with('/') => Ok(Target::Unix(PathBuf::from(path))),
            Some(_) => anyhow::bail!("LMTP socket {spec:?} must be unix:/absolute/path"),
            None if spec
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()) =>
            {
                Ok(Target::Tcp(spec.to_string()))
            }
            None => anyhow::bail!("LMTP server {spec:?} must be host:port or unix:/path"),
        }
    }
}

pub struct Lmtp {
    target: Target,
    pub peer: Remote,
    lhlo: String,
    connect_timeout: Duration,
    command_timeout: Duration,
}

impl Lmtp {
    pub fn new(
        target: Target,
        lhlo: String,
        connect_timeout: Duration,
        command_timeout: Duration,
    ) -> Lmtp {
        let name = match &target {
            Target::Tcp(addr) => addr.clone(),
            Target::Unix(path) => format!("unix:{}", path.display()),
        };
        let peer = Remote {
            kind: RemoteKind::Lmtp,
            name,
            addr: None,
        };
        Lmtp {
            target,
            peer,
            lhlo,
            connect_timeout,
            command_timeout,
        }
    }

    /// One session, one transaction; a connection failure defers every recipient.
    pub async fn deliver(&self, txn: &Transaction<'_>) -> Sent {
        let connected = tokio::time::timeout(self.connect_timeout, async {
            match &self.target {
                Target::Tcp(addr) => TcpStream::connect(addr.as_str()).await.map(Conn::Tcp),
                Target::Unix(path) => UnixStream::connect(path).await.map(Conn::Unix),
            }
        })
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connection timed out",
            ))
        });
        let outcome = match connected {
            Ok(Conn::Tcp(s)) => self.transact(s, txn).await,
            Ok(Conn::Unix(s)) => self.transact(s, txn).await,
            Err(error) => Err(Outcome::local(
                Status::new(4, 4, 1),
                format!("connect to {}: {error}", self.peer),
            )),
        };
        outcome.unwrap_or_else(|failed| Sent {
            results: txn
                .recipients
                .iter()
                .map(|&i| (i, Attempt::Temporary(failed.clone())))
                .collect(),
            reusable: false,
        })
    }

    async fn transact<S>(&self, stream: S, txn: &Transaction<'_>) -> Result<Sent, Outcome>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut client = SmtpClient {
            stream,
            timeout: self.command_timeout,
        };
        let peer = &self.peer;
        let greeting = client.read().await.map_err(|e| {
            Outcome::local(Status::new(4, 4, 2), format!("{peer}: no greeting: {e}"))
        })?;
        if greeting.code != 220 {
            return Err(Outcome::local(
                Status::new(4, 4, 2),
                format!("{peer} refused to talk to me: {}", client::reply(&greeting)),
            ));
        }
        let caps = client.lhlo(&self.lhlo).await.map_err(|e| {
            let why = match e {
                mail_send::Error::UnexpectedReply(r) => client::reply(&r).to_string(),
                other => other.to_string(),
            };
            Outcome::local(Status::new(4, 4, 2), format!("{peer}: LHLO failed: {why}"))
        })?;
        let outcome = client::send(&mut client, &caps, peer, txn, true).await;
        if outcome.reusable {
            let _ = client.quit().await;
        }
        Ok(outcome)
    }
}

enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            Target::parse("unix:/run/dovecot/lmtp").unwrap(),
            Target::Unix("/run/dovecot/lmtp".into())
        );
        assert_eq!(
            Target::parse("dovecot.mail.svc:24").unwrap(),
            Target::Tcp("dovecot.mail.svc:24".into())
        );
        for bad in ["unix:relative", "dovecot", ":24", "host:port"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}

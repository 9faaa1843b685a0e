//! Delivery to a mailbox server over LMTP (RFC 2033), e.g. Dovecot's `lmtp` service, on
//! `host:port` or `unix:/path`. Each recipient gets its own reply after the data, so
//! one unknown user fails alone.

use std::path::PathBuf;
use std::time::Duration;

use mail_send::SmtpClient;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

use super::client::{self, Attempt, Outcome, Transaction};

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
    pub peer: String,
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
        let peer = match &target {
            Target::Tcp(addr) => format!("lmtp {addr}"),
            Target::Unix(path) => format!("lmtp unix:{}", path.display()),
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
    pub async fn deliver(&self, txn: &Transaction<'_>) -> Outcome {
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
            Err(error) => Err(format!("4.4.1 connect to {}: {error}", self.peer)),
        };
        outcome.unwrap_or_else(|text| Outcome {
            results: txn
                .recipients
                .iter()
                .map(|&i| (i, Attempt::Temporary(text.clone())))
                .collect(),
            reusable: false,
        })
    }

    async fn transact<S>(&self, stream: S, txn: &Transaction<'_>) -> Result<Outcome, String>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut client = SmtpClient {
            stream,
            timeout: self.command_timeout,
        };
        let peer = &self.peer;
        let greeting = client
            .read()
            .await
            .map_err(|e| format!("4.4.2 {peer}: no greeting: {e}"))?;
        if greeting.code != 220 {
            return Err(format!(
                "4.4.2 {peer} refused to talk to me: {}",
                client::reply_text(&greeting)
            ));
        }
        let caps = client.lhlo(&self.lhlo).await.map_err(|e| match e {
            mail_send::Error::UnexpectedReply(r) => {
                format!("4.4.2 {peer}: LHLO failed: {}", client::reply_text(&r))
            }
            other => format!("4.4.2 {peer}: LHLO failed: {other}"),
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

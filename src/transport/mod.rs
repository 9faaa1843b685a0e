//! Next hops: where a group of recipients goes and how it gets there.
//!
//! Local domains go into the built-in Maildir or over LMTP; other domains to the relay
//! host or the domain's MX hosts, one SMTP transaction at a time, over sessions that
//! consecutive deliveries to one destination share. Mail from our domains is DKIM-signed
//! before it leaves. Every attempt ends in an [`Attempt`] per recipient; what to make of
//! it (retry, bounce, report) is the queue's business.

mod client;
pub mod dkim;
mod lmtp;
pub mod maildir;
mod mx;
mod remote;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;

use crate::config::{Config, RelayConfig};
use crate::mail::srs::Srs;
use crate::mail::{Address, Delimiter};
use crate::reload::Watched;
use crate::spool::{BodyType, Envelope, Outcome, QueueId, Status};
pub use client::Attempt;
#[cfg(test)]
pub(crate) use client::tests::{after_data, next_hop};
use client::{Sent, Transaction};
use maildir::Route;
use remote::{Connector, SessionCache};

/// Where a group of recipients goes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Destination {
    Maildir,
    Lmtp,
    Relay,
    /// A recipient domain, lowercased.
    Mx(String),
}

impl Destination {
    /// The `destination` label of the delivery metrics.
    pub fn class(&self) -> &'static str {
        match self {
            Destination::Maildir => "local",
            Destination::Lmtp => "lmtp",
            Destination::Relay => "relay",
            Destination::Mx(_) => "mx",
        }
    }

    /// The name concurrency limits and cached sessions are kept under.
    pub fn key(&self) -> String {
        match self {
            Destination::Mx(domain) => format!("mx:{domain}"),
            other => other.class().to_string(),
        }
    }

    /// Whether mail for this destination leaves us, and so is DKIM-signed.
    pub fn is_remote(&self) -> bool {
        matches!(self, Destination::Relay | Destination::Mx(_))
    }
}

/// Every next hop of one server, with the sessions and keys they keep.
pub struct Transports {
    hostname: String,
    domains: Vec<String>,
    delimiter: Delimiter,
    maildir_root: PathBuf,
    relay: Option<RelayConfig>,
    connector: Connector,
    mx: mx::MxResolver,
    lmtp: Option<lmtp::Lmtp>,
    sessions: SessionCache,
    /// Signs mail from our domains before it leaves; none without a `dkim:` config.
    dkim: Option<Arc<Watched<dkim::Signer>>>,
    /// Rewrites senders of other domains on mail that leaves; none without `srs:`.
    srs: Option<Arc<Watched<Srs>>>,
}

impl Transports {
    /// Sets up the next hops `config` names. Must run inside the tokio runtime (the DKIM
    /// key is watched for rotation).
    pub fn new(config: &Config) -> anyhow::Result<Transports> {
        let delivery = &config.delivery;
        let connector = Connector::new(
            config.hostname.clone(),
            delivery.connect_timeout,
            delivery.command_timeout,
            delivery.relay.as_ref().and_then(|r| r.ca_file.as_deref()),
        )
        .context("setting up TLS for outgoing mail")?;
        let resolver = crate::mail::dns::resolver(&config.dns.nameservers)
            .context("setting up the resolver for MX lookups")?;
        let lmtp = delivery
            .lmtp
            .as_deref()
            .map(|spec| {
                lmtp::Target::parse(spec).map(|target| {
                    lmtp::Lmtp::new(
                        target,
                        config.hostname.clone(),
                        delivery.connect_timeout,
                        delivery.command_timeout,
                    )
                })
            })
            .transpose()
            .context("delivery.lmtp")?;
        let dkim = config
            .dkim
            .as_ref()
            .map(|dkim| dkim::Signer::watch(dkim, &config.domains, config.reload_interval))
            .transpose()
            .context("loading the DKIM key")?;
        Ok(Transports {
            hostname: config.hostname.clone(),
            domains: config.domains.clone(),
            delimiter: config.delimiter(),
            maildir_root: config.spool.maildir_root.clone(),
            relay: delivery.relay.clone(),
            connector,
            mx: mx::MxResolver::new(resolver, delivery.mx_port),
            lmtp,
            sessions: SessionCache::default(),
            dkim,
            srs: config.watch_srs().context("loading the SRS secret")?,
        })
    }

    /// Where mail for `address` goes, or why it cannot go anywhere.
    pub fn route(&self, address: &str) -> Result<Destination, Outcome> {
        match maildir::route(address, &self.domains, self.delimiter) {
            Route::Local(_) if self.lmtp.is_some() => Ok(Destination::Lmtp),
            Route::Local(_) => Ok(Destination::Maildir),
            Route::Refused(reason) => Err(reason),
            Route::Remote if self.relay.is_some() => Ok(Destination::Relay),
            Route::Remote => {
                let domain = Address::parse(address).map_or("", |a| a.domain());
                Ok(Destination::Mx(domain.to_ascii_lowercase()))
            }
        }
    }

    /// One attempt for the recipients `indexes` of `envelope`, bound for `destination`
    /// (as [`route`] answered for each of them).
    ///
    /// [`route`]: Transports::route
    pub async fn transfer(
        &self,
        destination: &Destination,
        envelope: &Envelope,
        indexes: &[usize],
        message: &Bytes,
    ) -> Vec<(usize, Attempt)> {
        let sender = match destination.is_remote() {
            true => self.forward_sender(&envelope.mail_from),
            false => envelope.mail_from.clone(),
        };
        let txn = Transaction {
            envelope,
            sender: &sender,
            recipients: indexes,
            message,
        };
        match destination {
            Destination::Maildir => {
                let mut results = Vec::with_capacity(indexes.len());
                for &index in indexes {
                    results.push((index, self.to_maildir(envelope, index, message).await));
                }
                results
            }
            Destination::Lmtp => {
                let lmtp = self
                    .lmtp
                    .as_ref()
                    .expect("routed to LMTP only when configured");
                lmtp.deliver(&txn).await.results
            }
            Destination::Relay => {
                let relay = self
                    .relay
                    .as_ref()
                    .expect("routed to the relay only when set");
                self.to_relay(relay, &txn, &destination.key()).await
            }
            Destination::Mx(domain) => self.to_mx(domain, &txn, &destination.key()).await,
        }
    }

    async fn to_relay(
        &self,
        relay: &RelayConfig,
        txn: &Transaction<'_>,
        key: &str,
    ) -> Vec<(usize, Attempt)> {
        let mut session = match self.sessions.take(key).await {
            Some(session) => session,
            None => match self.connector.open_relay(relay).await {
                Ok(session) => session,
                Err(error) => return all(txn, error.attempt),
            },
        };
        let Sent { results, reusable } = session.send(txn).await;
        if reusable {
            self.sessions.put(key, session);
        }
        results
    }

    /// Tries the MX hosts in preference order, each address in turn, until one takes
    /// the transaction; hosts that cannot be reached or refuse the session are skipped.
    async fn to_mx(&self, domain: &str, txn: &Transaction<'_>, key: &str) -> Vec<(usize, Attempt)> {
        if let Some(mut session) = self.sessions.take(key).await {
            let Sent { results, reusable } = session.send(txn).await;
            if reusable {
                self.sessions.put(key, session);
            }
            return results;
        }
        let hosts = match self.mx.hosts(domain).await {
            Ok(hosts) => hosts,
            Err(attempt) => return all(txn, attempt),
        };
        let mut last = Attempt::temporary(
            Status::new(4, 4, 1),
            format!("no mail host for {domain} answered"),
        );
        for host in &hosts {
            for &addr in &host.addrs {
                match self.connector.open_mx(&host.name, addr).await {
                    Ok(mut session) => {
                        let Sent { results, reusable } = session.send(txn).await;
                        if reusable {
                            self.sessions.put(key, session);
                        }
                        return results;
                    }
                    Err(error) => {
                        tracing::info!(domain, host = host.name, %addr, reason = %error.attempt.outcome(), "MX host skipped");
                        let next = error.next_host;
                        last = error.attempt;
                        if !next {
                            return all(txn, last);
                        }
                    }
                }
            }
        }
        all(txn, last)
    }

    async fn to_maildir(&self, envelope: &Envelope, index: usize, message: &Bytes) -> Attempt {
        let address = envelope.recipients[index].address.clone();
        let Route::Local(mailbox) = maildir::route(&address, &self.domains, self.delimiter) else {
            unreachable!("routed to the Maildir only when local");
        };
        let dir = mailbox.maildir(&self.maildir_root);
        let sender = envelope.mail_from.clone();
        let binary = envelope.body == Some(BodyType::BinaryMime);
        let (message, hostname, target) = (message.clone(), self.hostname.clone(), dir.clone());
        let written = tokio::task::spawn_blocking(move || {
            let copy = maildir::mailbox_copy(&sender, &address, &message, binary);
            maildir::deliver(&target, &hostname, &copy)
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
        match written {
            Ok(_) => Attempt::Delivered(Outcome::local(
                Status::new(2, 0, 0),
                format!("delivered to maildir {}", dir.display()),
            )),
            Err(error) => Attempt::temporary(
                Status::new(4, 2, 0),
                format!("cannot write to maildir {}: {error}", dir.display()),
            ),
        }
    }

    /// The MAIL FROM for mail that leaves: a sender of another domain (mail an alias
    /// forwards) in its SRS form, so that SPF at the next hop checks our domain, as
    /// postsrsd does for Postfix. Ours, `<>` and everything without `srs:` stay.
    fn forward_sender(&self, sender: &str) -> String {
        let foreign =
            Address::parse(sender).is_some_and(|a| !self.domains.iter().any(|d| a.has_domain(d)));
        match &self.srs {
            Some(srs) if foreign => srs
                .get()
                .forward(sender, std::time::SystemTime::now())
                .unwrap_or_else(|| sender.to_string()),
            _ => sender.to_string(),
        }
    }

    /// Mail whose From domain is ours leaves with a DKIM signature (the From domain is
    /// what DMARC aligns with). A signing failure is logged and the mail goes unsigned:
    /// holding it back would not make it any more deliverable.
    pub async fn dkim_sign(&self, id: &QueueId, message: Bytes) -> Bytes {
        let Some(dkim) = &self.dkim else {
            return message;
        };
        let signer = dkim.get();
        let content = message.clone();
        let signed = tokio::task::spawn_blocking(move || {
            let Some(domain) = dkim::from_domain(&content) else {
                return Ok(None);
            };
            signer.sign(&content, &domain)
        })
        .await;
        match signed {
            Ok(Ok(Some(header))) => {
                let mut out = header;
                out.extend_from_slice(&message);
                Bytes::from(out)
            }
            Ok(Ok(None)) => message,
            Ok(Err(err)) => {
                tracing::warn!(%id, error = format!("{err:#}"), "DKIM signing failed, sending unsigned");
                message
            }
            Err(err) => {
                tracing::warn!(%id, error = %err, "DKIM signing task failed, sending unsigned");
                message
            }
        }
    }
}

fn all(txn: &Transaction<'_>, attempt: Attempt) -> Vec<(usize, Attempt)> {
    txn.recipients
        .iter()
        .map(|&i| (i, attempt.clone()))
        .collect()
}

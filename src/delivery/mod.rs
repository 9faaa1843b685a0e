//! Delivery of queued messages: the queue runner.
//!
//! The recipients of a message are grouped by destination — the built-in Maildir, the
//! LMTP server, the relay host, or one MX domain — and each group goes out in one
//! transaction, under a limit of deliveries in total and per destination. Every
//! outcome is recorded in the spool before the next group is tried, so after a crash
//! only the transaction in flight is repeated; a recipient deferred is tried again
//! after an exponential backoff (see [`schedule`]) until it is delivered, fails, or has
//! been queued for too long. The message leaves the spool once every recipient has a
//! final outcome, and any report to its sender is queued before that outcome is
//! recorded.

mod client;
pub mod control;
pub mod dkim;
pub mod dsn;
mod lmtp;
pub mod maildir;
mod mx;
mod remote;
mod schedule;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use tokio::sync::Semaphore;

use crate::config::{Config, DeliveryConfig, RelayConfig};
use crate::mail::Address;
use crate::reload::Watched;
use crate::spool::{
    BodyType, Envelope, Notify, Outcome, QueueId, QueuedMessage, Recipient, RecipientStatus, Spool,
    Status,
};
use crate::telemetry::Metrics;
use client::{Attempt, Sent, Transaction};
use maildir::Route;
use remote::{Connector, SessionCache};
#[cfg(test)]
pub use schedule::Enqueued;
pub use schedule::QueueHandle;

/// Where a group of recipients goes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Destination {
    Maildir,
    Lmtp,
    Relay,
    /// A recipient domain, lowercased.
    Mx(String),
}

impl Destination {
    /// The `destination` label of the delivery metrics.
    fn class(&self) -> &'static str {
        match self {
            Destination::Maildir => "local",
            Destination::Lmtp => "lmtp",
            Destination::Relay => "relay",
            Destination::Mx(_) => "mx",
        }
    }

    /// The name concurrency limits and cached sessions are kept under.
    fn key(&self) -> String {
        match self {
            Destination::Mx(domain) => format!("mx:{domain}"),
            other => other.class().to_string(),
        }
    }
}

/// What a report to the sender is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    /// Recipients failed for good (RFC 3464 action `failed`).
    Failure,
    /// Recipients still deferred after `delivery.delayWarning` (action `delayed`).
    Delay,
    /// Recipients delivered that asked for NOTIFY=SUCCESS (action `delivered`).
    Success,
}

/// A recipient a report is about: its index in the envelope and its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    pub index: usize,
    pub outcome: Outcome,
}

pub struct QueueRunner {
    spool: Arc<Spool>,
    config: DeliveryConfig,
    hostname: String,
    domains: Vec<String>,
    maildir_root: PathBuf,
    connector: Connector,
    mx: mx::MxResolver,
    lmtp: Option<lmtp::Lmtp>,
    sessions: SessionCache,
    per_destination: Mutex<HashMap<String, Arc<Semaphore>>>,
    metrics: Arc<Metrics>,
    /// The scheduler, for the reports this runner queues; set once it runs.
    queue: OnceLock<QueueHandle>,
    /// Signs mail from our domains before it leaves; none without a `dkim:` config.
    dkim: Option<Arc<Watched<dkim::Signer>>>,
}

impl QueueRunner {
    /// Starts the runner: it resumes every queued message, then delivers what it is
    /// handed through the returned handle.
    pub fn start(
        spool: Arc<Spool>,
        config: &Config,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<QueueHandle> {
        let runner = Arc::new(QueueRunner::new(spool, config, metrics)?);
        Ok(schedule::start(runner))
    }

    fn new(
        spool: Arc<Spool>,
        config: &Config,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<QueueRunner> {
        let delivery = config.delivery.clone();
        let connector = Connector::new(
            config.hostname.clone(),
            delivery.connect_timeout,
            delivery.command_timeout,
            delivery.relay.as_ref().and_then(|r| r.ca_file.as_deref()),
        )
        .context("setting up TLS for outgoing mail")?;
        let resolver = crate::policy::recipient::resolver(&config.dns.nameservers)
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
        Ok(QueueRunner {
            dkim,
            spool,
            mx: mx::MxResolver::new(resolver, delivery.mx_port),
            config: delivery,
            hostname: config.hostname.clone(),
            domains: config.domains.clone(),
            maildir_root: config.spool.maildir_root.clone(),
            connector,
            lmtp,
            sessions: SessionCache::default(),
            per_destination: Mutex::default(),
            metrics,
            queue: OnceLock::new(),
        })
    }

    /// Delivers every recipient of a queued message that is due (all that are not final
    /// with `force`, as `posthorn queue flush` asks), records each outcome, and removes
    /// the message once all are final. Answers when the message is due again (`None`:
    /// it has left the queue) and when it arrived.
    async fn deliver(&self, id: &QueueId, force: bool) -> anyhow::Result<Option<(u64, u64)>> {
        let QueuedMessage {
            mut envelope,
            message,
        } = match self.spool.load(id).await {
            Ok(queued) => queued,
            // Already finished, or deleted by `posthorn queue delete`.
            Err(error) if is_not_found(&error) => return Ok(None),
            Err(error) => return Err(error),
        };
        let now = unix_now();
        let mut next_attempt: Option<u64> = None;
        let mut groups: BTreeMap<Destination, Vec<usize>> = BTreeMap::new();
        let mut refused = Vec::new();
        for (index, rcpt) in envelope.recipients.iter().enumerate() {
            if rcpt.status.is_final() {
                continue;
            }
            if let RecipientStatus::Deferred {
                next_attempt: at, ..
            } = rcpt.status
                && at > now
                && !force
            {
                next_attempt = earliest(next_attempt, Some(at));
                continue;
            }
            match self.route(&rcpt.address) {
                Ok(destination) => groups.entry(destination).or_default().push(index),
                Err(reason) => refused.push((index, Attempt::Permanent(reason))),
            }
        }
        if !refused.is_empty() {
            self.conclude(&mut envelope, &message, "local", refused)
                .await?;
        }
        let mut signed: Option<Bytes> = None;
        for (destination, indexes) in groups {
            let payload = match destination {
                Destination::Relay | Destination::Mx(_) => {
                    if signed.is_none() {
                        signed = Some(self.dkim_sign(&envelope.id, message.clone()).await);
                    }
                    signed.clone().unwrap_or_else(|| message.clone())
                }
                _ => message.clone(),
            };
            let started = Instant::now();
            let results = {
                let _permit = self.destination_slot(&destination).await;
                self.transfer(&destination, &envelope, &indexes, &payload)
                    .await
            };
            self.metrics
                .delivery_duration(destination.class(), started.elapsed().as_secs_f64());
            self.conclude(&mut envelope, &message, destination.class(), results)
                .await?;
        }
        if envelope.is_done() {
            self.spool.remove(id).await?;
            tracing::info!(%id, "removed");
            return Ok(None);
        }
        for rcpt in &envelope.recipients {
            if let RecipientStatus::Deferred {
                next_attempt: at, ..
            } = rcpt.status
            {
                next_attempt = earliest(next_attempt, Some(at));
            }
        }
        // Every recipient that is not final is deferred, so there is a next attempt;
        // the fallback only guards against a status this code does not write.
        let at = next_attempt.unwrap_or(now + self.config.min_backoff.as_secs());
        Ok(Some((at, envelope.received_at)))
    }

    /// Where mail for `address` goes, or why it cannot go anywhere.
    fn route(&self, address: &str) -> Result<Destination, Outcome> {
        match maildir::route(address, &self.domains) {
            Route::Local(_) if self.lmtp.is_some() => Ok(Destination::Lmtp),
            Route::Local(_) => Ok(Destination::Maildir),
            Route::Refused(reason) => Err(reason),
            Route::Remote if self.config.relay.is_some() => Ok(Destination::Relay),
            Route::Remote => {
                let domain = Address::parse(address).map_or("", |a| a.domain());
                Ok(Destination::Mx(domain.to_ascii_lowercase()))
            }
        }
    }

    async fn destination_slot(
        &self,
        destination: &Destination,
    ) -> tokio::sync::OwnedSemaphorePermit {
        let semaphore = {
            let mut slots = self.per_destination.lock().expect("not poisoned");
            // Forget idle destinations now and then, so MX domains don't pile up.
            if slots.len() > 10_000 {
                slots.retain(|_, s| Arc::strong_count(s) > 1);
            }
            slots
                .entry(destination.key())
                .or_insert_with(|| Arc::new(Semaphore::new(self.config.max_per_destination)))
                .clone()
        };
        semaphore.acquire_owned().await.expect("never closed")
    }

    /// One attempt for a group of recipients bound for `destination`.
    async fn transfer(
        &self,
        destination: &Destination,
        envelope: &Envelope,
        indexes: &[usize],
        message: &Bytes,
    ) -> Vec<(usize, Attempt)> {
        let txn = Transaction {
            envelope,
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
                    .config
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
        let Route::Local(mailbox) = maildir::route(&address, &self.domains) else {
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

    /// Turns attempts into recipient statuses, queues the reports they call for, then
    /// records the statuses (a report is queued first so that a crash repeats it rather
    /// than loses it).
    async fn conclude(
        &self,
        envelope: &mut Envelope,
        message: &Bytes,
        class: &'static str,
        results: Vec<(usize, Attempt)>,
    ) -> anyhow::Result<()> {
        let now = unix_now();
        let mut updates = Vec::with_capacity(results.len());
        let mut failures = Vec::new();
        let mut delays = Vec::new();
        let mut successes = Vec::new();
        for (index, attempt) in results {
            let rcpt = &envelope.recipients[index];
            let status = self.status_after(envelope.received_at, &rcpt.status, attempt, now);
            log_outcome(&envelope.id, &rcpt.address, class, &status);
            self.metrics.delivery_outcome(class, outcome_label(&status));
            match &status {
                RecipientStatus::Failed { outcome } => failures.push(Reported {
                    index,
                    outcome: outcome.clone(),
                }),
                RecipientStatus::Delivered { outcome }
                    if rcpt.notify.contains(&Notify::Success) =>
                {
                    successes.push(Reported {
                        index,
                        outcome: outcome.clone(),
                    })
                }
                RecipientStatus::Deferred { outcome, .. }
                    if self.crosses_delay_warning(envelope.received_at, &rcpt.status, now) =>
                {
                    delays.push(Reported {
                        index,
                        outcome: outcome.clone(),
                    })
                }
                _ => {}
            }
            updates.push((index, status));
        }
        if !failures.is_empty() {
            self.report(envelope, message, &failures, ReportKind::Failure)
                .await?;
        }
        if !delays.is_empty() {
            self.report(envelope, message, &delays, ReportKind::Delay)
                .await?;
        }
        if !successes.is_empty() {
            self.report(envelope, message, &successes, ReportKind::Success)
                .await?;
        }
        for (index, status) in &updates {
            envelope.recipients[*index].status = status.clone();
        }
        // A finished message is removed right after; its statuses need no record.
        if !envelope.is_done() {
            self.spool.record(&envelope.id, &updates).await?;
        }
        Ok(())
    }

    fn status_after(
        &self,
        received_at: u64,
        before: &RecipientStatus,
        attempt: Attempt,
        now: u64,
    ) -> RecipientStatus {
        match attempt {
            Attempt::Delivered(outcome) => RecipientStatus::Delivered { outcome },
            Attempt::Permanent(outcome) => RecipientStatus::Failed { outcome },
            Attempt::Temporary(outcome) => {
                if now >= received_at.saturating_add(self.config.max_queue_lifetime.as_secs()) {
                    return RecipientStatus::Failed {
                        outcome: Outcome {
                            expired: true,
                            ..outcome
                        },
                    };
                }
                let attempts = match before {
                    RecipientStatus::Deferred { attempts, .. } => attempts + 1,
                    _ => 1,
                };
                RecipientStatus::Deferred {
                    attempts,
                    next_attempt: now + self.backoff(attempts).as_secs(),
                    outcome,
                }
            }
        }
    }

    /// Postfix's backoff: `minBackoff` after the first failure, doubled after each
    /// further one, at most `maxBackoff`.
    fn backoff(&self, attempts: u32) -> Duration {
        let factor = 1u32 << attempts.saturating_sub(1).min(20);
        self.config
            .min_backoff
            .saturating_mul(factor)
            .min(self.config.max_backoff)
    }

    /// Whether this deferral is the first one past the delay-warning time: the previous
    /// attempt (or none) was before it. Deferral records keep no "warned" flag, so the
    /// previous attempt's time is worked out from its backoff.
    fn crosses_delay_warning(&self, received_at: u64, before: &RecipientStatus, now: u64) -> bool {
        let Some(warning) = self.config.delay_warning else {
            return false;
        };
        let threshold = received_at.saturating_add(warning.as_secs());
        if now < threshold {
            return false;
        }
        match before {
            RecipientStatus::Deferred {
                attempts,
                next_attempt,
                ..
            } => next_attempt.saturating_sub(self.backoff(*attempts).as_secs()) < threshold,
            _ => true,
        }
    }

    /// Queues an RFC 3464 report to the envelope sender about `recipients` (none for
    /// the null sender, nor for recipients whose NOTIFY does not ask for it). It is
    /// committed to the spool, as a message from `<>`, before the caller records the
    /// outcome it reports, so a crash cannot lose it.
    async fn report(
        &self,
        envelope: &Envelope,
        message: &Bytes,
        recipients: &[Reported],
        kind: ReportKind,
    ) -> anyhow::Result<()> {
        let body = match kind {
            ReportKind::Failure => {
                dsn::failure_report(&self.hostname, envelope, message, recipients)
            }
            ReportKind::Delay => {
                let retry_until = envelope
                    .received_at
                    .saturating_add(self.config.max_queue_lifetime.as_secs());
                dsn::delay_report(&self.hostname, envelope, message, recipients, retry_until)
            }
            ReportKind::Success => {
                dsn::success_report(&self.hostname, envelope, message, recipients)
            }
        };
        let Some(body) = body else {
            return Ok(());
        };
        let bounce = Envelope {
            id: Spool::new_id(),
            mail_from: String::new(),
            // The report may return the original's 8-bit or UTF-8 content.
            body: envelope.body,
            smtputf8: envelope.smtputf8,
            ret: None,
            envid: None,
            recipients: vec![Recipient::new(envelope.mail_from.clone())],
            login: None,
            client_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            client_helo: self.hostname.clone(),
            listener: "bounce".into(),
            tls: None,
            received_at: unix_now(),
        };
        self.spool
            .commit(&bounce, Bytes::from(body))
            .await
            .with_context(|| format!("queueing the report on {}", envelope.id))?;
        tracing::info!(id = %envelope.id, report = %bounce.id, ?kind, to = envelope.mail_from, "sender notification queued");
        if let Some(queue) = self.queue.get() {
            queue.enqueue(bounce.id);
        }
        Ok(())
    }

    /// Mail whose From domain is ours leaves with a DKIM signature (the From domain is
    /// what DMARC aligns with). A signing failure is logged and the mail goes unsigned:
    /// holding it back would not make it any more deliverable.
    async fn dkim_sign(&self, id: &QueueId, message: Bytes) -> Bytes {
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

fn outcome_label(status: &RecipientStatus) -> &'static str {
    match status {
        RecipientStatus::Delivered { .. } => "delivered",
        RecipientStatus::Deferred { .. } => "deferred",
        RecipientStatus::Failed { .. } => "failed",
        RecipientStatus::Pending => "pending",
    }
}

/// Postfix-style delivery log lines: `to=<…> relay=… status=sent|deferred|bounced`.
fn log_outcome(id: &QueueId, to: &str, relay: &str, status: &RecipientStatus) {
    match status {
        RecipientStatus::Delivered { outcome } => {
            tracing::info!(%id, to, relay, status = "sent", "{outcome}")
        }
        RecipientStatus::Deferred { outcome, .. } => {
            tracing::warn!(%id, to, relay, status = "deferred", "{outcome}")
        }
        RecipientStatus::Failed { outcome } => {
            tracing::warn!(%id, to, relay, status = "bounced", "{outcome}")
        }
        RecipientStatus::Pending => {}
    }
}

fn is_not_found(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound)
    })
}

fn earliest(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;

//! Delivery of queued messages: the queue runner.
//!
//! The recipients of a message are grouped by destination — the built-in Maildir, the
//! LMTP server, the relay host, or one MX domain (see [`crate::transport`]) — and each
//! group goes out in one transaction, under a limit of deliveries in total and per destination. Every
//! outcome is recorded in the spool before the next group is tried, so after a crash
//! only the transaction in flight is repeated; a recipient deferred is tried again
//! after an exponential backoff (see `schedule`) until it is delivered, fails, or has
//! been queued for too long. The message leaves the spool once every recipient has a
//! final outcome, and any report to its sender is queued before that outcome is
//! recorded.

pub mod control;
pub mod dsn;
mod schedule;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use tokio::sync::Semaphore;

use crate::config::{Config, DeliveryConfig};
use crate::spool::{
    Envelope, Notify, Outcome, QueueId, QueuedMessage, Recipient, RecipientStatus, Spool,
};
use crate::telemetry::Metrics;
use crate::transport::{Attempt, Destination, Transports};
#[cfg(test)]
pub use schedule::Enqueued;
pub use schedule::QueueHandle;

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
    transports: Transports,
    per_destination: Mutex<HashMap<String, Arc<Semaphore>>>,
    metrics: Arc<Metrics>,
    /// The scheduler, for the reports this runner queues; set once it runs.
    queue: OnceLock<QueueHandle>,
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
        Ok(QueueRunner {
            spool,
            config: config.delivery.clone(),
            hostname: config.hostname.clone(),
            transports: Transports::new(config)?,
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
            match self.transports.route(&rcpt.address) {
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
            let payload = if destination.is_remote() {
                if signed.is_none() {
                    signed = Some(
                        self.transports
                            .dkim_sign(&envelope.id, message.clone())
                            .await,
                    );
                }
                signed.clone().unwrap_or_else(|| message.clone())
            } else {
                message.clone()
            };
            let started = Instant::now();
            let results = {
                let _permit = self.destination_slot(&destination).await;
                self.transports
                    .transfer(&destination, &envelope, &indexes, &payload)
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
            let mut status = self.status_after(envelope.received_at, &rcpt.status, attempt, now);
            log_outcome(&envelope.id, &rcpt.address, class, &status);
            self.metrics.delivery_outcome(class, outcome_label(&status));
            match &mut status {
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
                // Recorded with the status, after the report is queued: a crash in
                // between repeats the warning rather than loses it.
                RecipientStatus::Deferred {
                    outcome, warned, ..
                } if !*warned && self.past_delay_warning(envelope.received_at, now) => {
                    *warned = true;
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
                let (attempts, warned) = match before {
                    RecipientStatus::Deferred {
                        attempts, warned, ..
                    } => (attempts + 1, *warned),
                    _ => (1, false),
                };
                RecipientStatus::Deferred {
                    attempts,
                    next_attempt: now + self.backoff(attempts).as_secs(),
                    outcome,
                    warned,
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

    /// Whether `delayWarning` has passed since the message arrived.
    fn past_delay_warning(&self, received_at: u64, now: u64) -> bool {
        self.config
            .delay_warning
            .is_some_and(|warning| now >= received_at.saturating_add(warning.as_secs()))
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

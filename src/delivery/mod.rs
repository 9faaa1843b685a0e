//! Delivery of queued messages. For now: local delivery into Maildir mailboxes for the
//! local domains; recipients elsewhere stay queued for the relay/MX queue runner.
//!
//! The worker is told about new messages through [`LocalDeliveryHandle::enqueue`] after
//! the session's commit, and resumes every queued message when it starts. Each outcome
//! is recorded in the spool before the next recipient is tried, so after a crash only
//! the delivery in flight is repeated; the message leaves the spool once every
//! recipient has a final outcome.

pub mod dkim;
pub mod dsn;
pub mod maildir;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Semaphore, mpsc};

use crate::config::Config;
use crate::spool::{BodyType, Envelope, QueueId, QueuedMessage, RecipientStatus, Spool};
use maildir::Route;

/// Messages delivered at once; each delivery is a few fsyncs on the blocking pool.
const MAX_PARALLEL: usize = 8;
/// Postfix `minimal_backoff_time` and `maximal_backoff_time`.
const MIN_BACKOFF: u64 = 300;
const MAX_BACKOFF: u64 = 4000;
/// Postfix `maximal_queue_lifetime`: a mailbox that cannot be written for this long fails.
const MAX_QUEUE_LIFETIME: u64 = 5 * 24 * 3600;

/// Tells the local delivery worker about newly committed messages.
#[derive(Clone)]
pub struct LocalDeliveryHandle {
    ids: mpsc::UnboundedSender<QueueId>,
}

impl LocalDeliveryHandle {
    /// Hands a committed message to the worker; never blocks.
    pub fn enqueue(&self, id: QueueId) {
        if self.ids.send(id).is_err() {
            tracing::error!(%id, "local delivery worker stopped; message stays queued");
        }
    }
}

pub struct LocalDelivery {
    spool: Arc<Spool>,
    maildir_root: PathBuf,
    hostname: String,
    domains: Vec<String>,
}

impl LocalDelivery {
    /// Starts the worker task: it first resumes every queued message, then delivers
    /// what it is handed. It stops when every handle is dropped.
    pub fn start(spool: Arc<Spool>, config: &Config) -> LocalDeliveryHandle {
        let worker = Arc::new(LocalDelivery::new(spool, config));
        let (ids, queue) = mpsc::unbounded_channel();
        let resume = ids.clone();
        let spool = worker.spool.clone();
        tokio::spawn(async move {
            match spool.list().await {
                Ok(queued) => {
                    if !queued.is_empty() {
                        tracing::info!(messages = queued.len(), "resuming queued messages");
                    }
                    for id in queued {
                        let _ = resume.send(id);
                    }
                }
                Err(error) => {
                    tracing::error!(error = format!("{error:#}"), "cannot list the queue")
                }
            }
        });
        tokio::spawn(worker.run(queue, ids.downgrade()));
        LocalDeliveryHandle { ids }
    }

    fn new(spool: Arc<Spool>, config: &Config) -> LocalDelivery {
        LocalDelivery {
            spool,
            maildir_root: config.spool.maildir_root.clone(),
            hostname: config.hostname.clone(),
            domains: config.domains.clone(),
        }
    }

    async fn run(
        self: Arc<Self>,
        mut queue: mpsc::UnboundedReceiver<QueueId>,
        retry: mpsc::WeakUnboundedSender<QueueId>,
    ) {
        let slots = Arc::new(Semaphore::new(MAX_PARALLEL));
        // A message is handled by one task at a time, even if it is handed over twice.
        let busy = Arc::new(Mutex::new(HashSet::new()));
        while let Some(id) = queue.recv().await {
            if !busy.lock().expect("not poisoned").insert(id) {
                continue;
            }
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let (worker, busy, retry) = (self.clone(), busy.clone(), retry.clone());
            tokio::spawn(async move {
                let next_attempt = match worker.deliver_queued(&id).await {
                    Ok(next) => next,
                    Err(error) => {
                        tracing::error!(%id, error = format!("{error:#}"), "local delivery failed; message stays queued");
                        None
                    }
                };
                busy.lock().expect("not poisoned").remove(&id);
                drop(slot);
                if let Some(at) = next_attempt {
                    tokio::time::sleep(Duration::from_secs(at.saturating_sub(unix_now()))).await;
                    if let Some(retry) = retry.upgrade() {
                        let _ = retry.send(id);
                    }
                }
            });
        }
    }

    /// Delivers every local recipient of a queued message that is due, recording each
    /// outcome, and removes the message once all recipients are final. Answers when a
    /// deferred local recipient is due again.
    async fn deliver_queued(&self, id: &QueueId) -> anyhow::Result<Option<u64>> {
        let QueuedMessage {
            mut envelope,
            message,
        } = match self.spool.load(id).await {
            Ok(queued) => queued,
            // Handed over twice (at resume and by its session) and already finished.
            Err(error) if is_not_found(&error) => return Ok(None),
            Err(error) => return Err(error),
        };
        let now = unix_now();
        let mut next_attempt: Option<u64> = None;
        let mut remote = 0;
        for index in 0..envelope.recipients.len() {
            let rcpt = &envelope.recipients[index];
            let attempts = match &rcpt.status {
                RecipientStatus::Delivered { .. } | RecipientStatus::Failed { .. } => continue,
                RecipientStatus::Pending => 0,
                RecipientStatus::Deferred { attempts, .. } => *attempts,
            };
            let status = match maildir::route(&rcpt.address, &self.domains) {
                Route::Remote => {
                    remote += 1;
                    continue;
                }
                Route::Refused(reason) => RecipientStatus::Failed { reason },
                Route::Local(mailbox) => {
                    if let Some(at) = retry_time(&rcpt.status).filter(|at| *at > now) {
                        next_attempt = earliest(next_attempt, Some(at));
                        continue;
                    }
                    self.deliver_one(&envelope, index, &mailbox, &message, attempts)
                        .await
                }
            };
            log_outcome(id, &envelope.recipients[index].address, &status);
            envelope.recipients[index].status = status.clone();
            if envelope.is_done() {
                break;
            }
            self.spool.record(id, &[(index, status.clone())]).await?;
            next_attempt = earliest(next_attempt, retry_time(&status));
        }
        if envelope.is_done() {
            self.spool.remove(id).await?;
            tracing::info!(%id, "removed");
            return Ok(None);
        }
        if remote > 0 {
            tracing::info!(%id, recipients = remote, "waiting for relay/MX delivery");
        }
        Ok(next_attempt)
    }

    async fn deliver_one(
        &self,
        envelope: &Envelope,
        index: usize,
        mailbox: &maildir::Mailbox,
        message: &bytes::Bytes,
        attempts: u32,
    ) -> RecipientStatus {
        let maildir = mailbox.maildir(&self.maildir_root);
        let sender = envelope.mail_from.clone();
        let recipient = envelope.recipients[index].address.clone();
        let binary = envelope.body == Some(BodyType::BinaryMime);
        let (message, hostname, dir) = (message.clone(), self.hostname.clone(), maildir.clone());
        let written = tokio::task::spawn_blocking(move || {
            let copy = maildir::mailbox_copy(&sender, &recipient, &message, binary);
            maildir::deliver(&dir, &hostname, &copy)
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
        match written {
            Ok(_) => RecipientStatus::Delivered {
                detail: format!("delivered to maildir {}", maildir.display()),
            },
            Err(error) => {
                let reason = format!(
                    "4.2.0 cannot write to maildir {}: {error}",
                    maildir.display()
                );
                let now = unix_now();
                if now >= envelope.received_at + MAX_QUEUE_LIFETIME {
                    RecipientStatus::Failed {
                        reason: format!("{reason} (message expired in the queue)"),
                    }
                } else {
                    let attempts = attempts + 1;
                    let backoff = MIN_BACKOFF
                        .saturating_mul(1 << (attempts - 1).min(16))
                        .min(MAX_BACKOFF);
                    RecipientStatus::Deferred {
                        attempts,
                        next_attempt: now + backoff,
                        reason,
                    }
                }
            }
        }
    }
}

fn log_outcome(id: &QueueId, to: &str, status: &RecipientStatus) {
    match status {
        RecipientStatus::Delivered { detail } => {
            tracing::info!(%id, to, relay = "local", status = "sent", "{detail}")
        }
        RecipientStatus::Deferred { reason, .. } => {
            tracing::warn!(%id, to, relay = "local", status = "deferred", "{reason}")
        }
        RecipientStatus::Failed { reason } => {
            tracing::warn!(%id, to, relay = "local", status = "bounced", "{reason}")
        }
        RecipientStatus::Pending => {}
    }
}

fn is_not_found(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound)
}

fn retry_time(status: &RecipientStatus) -> Option<u64> {
    match status {
        RecipientStatus::Deferred { next_attempt, .. } => Some(*next_attempt),
        _ => None,
    }
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

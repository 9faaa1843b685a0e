//! When each queued message is delivered: one task owns the schedule — messages in
//! flight, and the others sorted by their next attempt time, slept on until the first
//! is due (no polling) — and starts deliveries under the total concurrency limit.
//! Queue commands (`flush`, `delete`) and shutdown go through the same task, so a
//! message is never deleted while it is being delivered.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use super::{QueueRunner, is_not_found, unix_now};
use crate::spool::QueueId;

/// A message whose delivery failed for a reason of ours (an unreadable file, a full
/// disk) is tried again after this long.
const RETRY_AFTER_ERROR: u64 = 60;
/// How often the oldest-message age is refreshed between events.
const AGE_REFRESH: Duration = Duration::from_secs(5);

enum Command {
    Enqueue(QueueId),
    Done {
        id: QueueId,
        /// Next attempt time and arrival time; `None` when the message has left.
        next: Option<(u64, u64)>,
    },
    Flush(oneshot::Sender<usize>),
    Delete(QueueId, oneshot::Sender<anyhow::Result<bool>>),
    Deleted(QueueId),
    /// Answer once nothing is in flight and nothing is due until this unix time.
    Drain(u64, oneshot::Sender<()>),
}

/// Tells the queue runner about new messages and passes queue commands to it.
#[derive(Clone)]
pub struct QueueHandle {
    commands: mpsc::UnboundedSender<Command>,
}

impl QueueHandle {
    /// Hands a committed message to the runner; never blocks.
    pub fn enqueue(&self, id: QueueId) {
        if self.commands.send(Command::Enqueue(id)).is_err() {
            tracing::error!(%id, "queue runner stopped; message stays queued");
        }
    }

    /// Makes every queued message due now, deferred recipients included (`postqueue
    /// -f`); answers how many messages that touched.
    pub async fn flush(&self) -> anyhow::Result<usize> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Flush(reply))?;
        Ok(answer.await?)
    }

    /// Removes a message from the queue without any report (`postsuper -d`), after its
    /// delivery in flight, if any, has finished. Answers whether it was queued.
    pub async fn delete(&self, id: QueueId) -> anyhow::Result<bool> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Delete(id, reply))?;
        answer.await?
    }

    /// Resolves once no delivery is in flight and none is due `within` from now: what
    /// a shutdown waits for (under that deadline) before leaving the rest in the spool.
    pub async fn drained(&self, within: Duration) {
        let (reply, answer) = oneshot::channel();
        let until = unix_now() + within.as_secs();
        if self.send(Command::Drain(until, reply)).is_ok() {
            let _ = answer.await;
        }
    }

    fn send(&self, command: Command) -> anyhow::Result<()> {
        self.commands
            .send(command)
            .map_err(|_| anyhow::anyhow!("the queue runner has stopped"))
    }
}

/// What session tests enqueue, with no runner behind the handle: the spool stays as
/// the session left it.
#[cfg(test)]
pub struct Enqueued(mpsc::UnboundedReceiver<Command>);

#[cfg(test)]
impl Enqueued {
    pub fn handle() -> (QueueHandle, Enqueued) {
        let (commands, inbox) = mpsc::unbounded_channel();
        (QueueHandle { commands }, Enqueued(inbox))
    }

    /// The ids enqueued since the last call.
    pub fn ids(&mut self) -> Vec<QueueId> {
        std::iter::from_fn(|| self.0.try_recv().ok())
            .filter_map(|command| match command {
                Command::Enqueue(id) => Some(id),
                _ => None,
            })
            .collect()
    }
}

/// Starts the scheduler over `runner`; it first resumes every queued message.
pub fn start(runner: Arc<QueueRunner>) -> QueueHandle {
    let (commands, inbox) = mpsc::unbounded_channel();
    let handle = QueueHandle { commands };
    let _ = runner.queue.set(handle.clone());
    let resume = handle.clone();
    let spool = runner.spool.clone();
    tokio::spawn(async move {
        match spool.list().await {
            Ok(queued) => {
                if !queued.is_empty() {
                    tracing::info!(messages = queued.len(), "resuming queued messages");
                }
                for id in queued {
                    resume.enqueue(id);
                }
            }
            Err(error) => tracing::error!(error = format!("{error:#}"), "cannot list the queue"),
        }
    });
    let scheduler = Scheduler {
        slots: Arc::new(Semaphore::new(runner.config.max_concurrent)),
        runner,
        commands: handle.commands.downgrade(),
        busy: HashSet::new(),
        again: HashMap::new(),
        waiting: BTreeSet::new(),
        due: HashMap::new(),
        arrivals: BTreeSet::new(),
        arrived: HashMap::new(),
        deleting: HashSet::new(),
        deletes: HashMap::new(),
        drains: Vec::new(),
    };
    tokio::spawn(scheduler.run(inbox));
    handle
}

struct Scheduler {
    runner: Arc<QueueRunner>,
    slots: Arc<Semaphore>,
    /// For the delivery tasks to report back; weak, so that the scheduler ends when
    /// every handle is gone.
    commands: mpsc::WeakUnboundedSender<Command>,
    busy: HashSet<QueueId>,
    /// Handed over again while in flight: deliver again when done (forced, if a flush
    /// asked for it).
    again: HashMap<QueueId, bool>,
    waiting: BTreeSet<(u64, QueueId)>,
    due: HashMap<QueueId, u64>,
    arrivals: BTreeSet<(u64, QueueId)>,
    arrived: HashMap<QueueId, u64>,
    deleting: HashSet<QueueId>,
    deletes: HashMap<QueueId, Vec<oneshot::Sender<anyhow::Result<bool>>>>,
    drains: Vec<(u64, oneshot::Sender<()>)>,
}

impl Scheduler {
    async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Command>) {
        let mut age = tokio::time::interval(AGE_REFRESH);
        loop {
            let wake = self
                .waiting
                .first()
                .map(|(at, _)| Instant::now() + Duration::from_secs(at.saturating_sub(unix_now())));
            tokio::select! {
                command = inbox.recv() => match command {
                    Some(command) => self.handle(command),
                    None => return,
                },
                () = sleep_until(wake) => self.start_due(),
                _ = age.tick() => {}
            }
            self.publish();
            self.answer_drains();
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Enqueue(id) => self.start(id, false),
            Command::Done { id, next } => {
                self.busy.remove(&id);
                if let Some(replies) = self.deletes.remove(&id) {
                    self.again.remove(&id);
                    self.delete(id, replies);
                    return;
                }
                match next {
                    Some((at, arrived)) => {
                        self.arrivals.insert((arrived, id));
                        self.arrived.insert(id, arrived);
                        match self.again.remove(&id) {
                            Some(force) => self.start(id, force),
                            None => self.wait(id, at),
                        }
                    }
                    None => {
                        self.again.remove(&id);
                        self.forget(&id);
                    }
                }
            }
            Command::Flush(reply) => {
                let waiting: Vec<QueueId> = self.waiting.iter().map(|(_, id)| *id).collect();
                for id in &self.busy {
                    self.again.insert(*id, true);
                }
                let count = waiting.len() + self.busy.len();
                for id in waiting {
                    self.start(id, true);
                }
                let _ = reply.send(count);
            }
            Command::Delete(id, reply) => {
                if self.busy.contains(&id) || self.deleting.contains(&id) {
                    self.deletes.entry(id).or_default().push(reply);
                } else {
                    self.delete(id, vec![reply]);
                }
            }
            Command::Deleted(id) => {
                self.deleting.remove(&id);
                if let Some(replies) = self.deletes.remove(&id) {
                    // Asked again while the first removal ran: it is gone now.
                    for reply in replies {
                        let _ = reply.send(Ok(false));
                    }
                }
            }
            Command::Drain(until, reply) => self.drains.push((until, reply)),
        }
    }

    /// Starts delivering `id` unless it is already in flight or being deleted.
    fn start(&mut self, id: QueueId, force: bool) {
        if self.deleting.contains(&id) {
            return;
        }
        if self.busy.contains(&id) {
            let forced = self.again.entry(id).or_insert(false);
            *forced |= force;
            return;
        }
        if let Some(at) = self.due.remove(&id) {
            self.waiting.remove(&(at, id));
        }
        self.busy.insert(id);
        let (runner, slots, commands) = (
            self.runner.clone(),
            self.slots.clone(),
            self.commands.clone(),
        );
        tokio::spawn(async move {
            let Ok(_slot) = slots.acquire_owned().await else {
                return;
            };
            let next = match runner.deliver(&id, force).await {
                Ok(next) => next,
                Err(error) => {
                    tracing::error!(%id, error = format!("{error:#}"), "delivery run failed; message stays queued");
                    Some((unix_now() + RETRY_AFTER_ERROR, unix_now()))
                }
            };
            if let Some(commands) = commands.upgrade() {
                let _ = commands.send(Command::Done { id, next });
            }
        });
    }

    fn wait(&mut self, id: QueueId, at: u64) {
        if let Some(old) = self.due.insert(id, at) {
            self.waiting.remove(&(old, id));
        }
        self.waiting.insert((at, id));
    }

    fn start_due(&mut self) {
        let now = unix_now();
        while let Some(&(at, id)) = self.waiting.first() {
            if at > now {
                break;
            }
            self.start(id, false);
        }
    }

    fn delete(&mut self, id: QueueId, replies: Vec<oneshot::Sender<anyhow::Result<bool>>>) {
        if let Some(at) = self.due.remove(&id) {
            self.waiting.remove(&(at, id));
        }
        self.forget(&id);
        self.deleting.insert(id);
        let (spool, commands) = (self.runner.spool.clone(), self.commands.clone());
        tokio::spawn(async move {
            let removed = match spool.remove(&id).await {
                Ok(()) => {
                    tracing::info!(%id, "removed by queue delete");
                    Ok(true)
                }
                Err(error) if is_not_found(&error) => Ok(false),
                Err(error) => Err(error),
            };
            let mut result = Some(removed);
            for reply in replies {
                let answer = match result.take() {
                    Some(first) => first,
                    None => Ok(true),
                };
                let _ = reply.send(answer);
            }
            if let Some(commands) = commands.upgrade() {
                let _ = commands.send(Command::Deleted(id));
            }
        });
    }

    fn forget(&mut self, id: &QueueId) {
        if let Some(arrived) = self.arrived.remove(id) {
            self.arrivals.remove(&(arrived, *id));
        }
    }

    fn publish(&self) {
        let oldest = self
            .arrivals
            .first()
            .map(|(arrived, _)| unix_now().saturating_sub(*arrived));
        self.runner.metrics.set_queue(
            self.busy.len() as u64,
            self.waiting.len() as u64,
            oldest.unwrap_or(0),
        );
    }

    /// Shutdown waits until nothing is in flight and nothing is due before its deadline.
    fn answer_drains(&mut self) {
        if self.drains.is_empty() || !self.busy.is_empty() {
            return;
        }
        let next = self.waiting.first().map(|(at, _)| *at);
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.drains)
            .into_iter()
            .partition(|(until, _)| next.is_none_or(|at| at > *until));
        self.drains = waiting;
        for (_, reply) in done {
            let _ = reply.send(());
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

//! Group commit of queue directory changes.
//!
//! Making a new or removed name durable needs an fsync of the directory, and the disk
//! serialises those. One task takes every change pending at that moment, applies them,
//! syncs the directory once and then answers all their waiters, so N concurrent
//! sessions pay about one directory fsync instead of N in a row.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};

/// Size of the queue, kept by the committer so that it changes exactly when a change is
/// durable, even if the caller stopped waiting for it.
#[derive(Default)]
pub struct Counters {
    pub messages: AtomicU64,
    pub bytes: AtomicU64,
}

pub enum Op {
    /// Make the fsynced queue file `from` (`len` bytes) visible as `to`, never replacing
    /// an existing `to`.
    Publish {
        from: PathBuf,
        to: PathBuf,
        len: u64,
    },
    /// Remove a queue file.
    Unlink(PathBuf),
    /// Only wait for the next directory sync (after creating a file in the directory).
    Sync,
}

struct Job {
    op: Op,
    done: oneshot::Sender<io::Result<()>>,
}

pub struct Committer {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Committer {
    /// Starts the task that owns `dir`; it ends when the `Committer` is dropped.
    pub fn start(dir: File, counters: Arc<Counters>) -> Committer {
        let (jobs, mut queue) = mpsc::unbounded_channel::<Job>();
        let dir = Arc::new(dir);
        tokio::spawn(async move {
            while let Some(first) = queue.recv().await {
                let mut batch = vec![first];
                while let Ok(job) = queue.try_recv() {
                    batch.push(job);
                }
                let dir = dir.clone();
                // Answers travel through the jobs' own channels; a panic drops them, which
                // their waiters see as an error.
                let counters = counters.clone();
                let _ =
                    tokio::task::spawn_blocking(move || run_batch(&dir, &counters, batch)).await;
            }
        });
        Committer { jobs }
    }

    /// Applies `op` and returns once it is durable.
    pub async fn run(&self, op: Op) -> io::Result<()> {
        let (done, answer) = oneshot::channel();
        self.jobs
            .send(Job { op, done })
            .map_err(|_| io::Error::other("spool committer stopped"))?;
        answer
            .await
            .map_err(|_| io::Error::other("spool committer failed"))?
    }
}

fn run_batch(dir: &File, counters: &Counters, batch: Vec<Job>) {
    let applied: Vec<(Job, io::Result<u64>)> = batch
        .into_iter()
        .map(|job| {
            let result = apply(&job.op);
            (job, result)
        })
        .collect();
    let synced = dir.sync_all();
    if let Err(error) = &synced {
        tracing::error!(%error, "spool directory fsync failed");
    }
    for (job, result) in applied {
        let answer = match (result, &synced) {
            (Err(e), _) => Err(e),
            (Ok(len), Ok(())) => {
                match job.op {
                    Op::Publish { .. } => {
                        counters.messages.fetch_add(1, Ordering::Relaxed);
                        counters.bytes.fetch_add(len, Ordering::Relaxed);
                    }
                    Op::Unlink(_) => uncount(counters, len),
                    Op::Sync => {}
                }
                Ok(())
            }
            (Ok(len), Err(error)) => {
                match &job.op {
                    // A name that may not survive a crash must not be acknowledged; take
                    // it back so that the client's retry does not make a duplicate.
                    Op::Publish { to, .. } => {
                        let _ = std::fs::remove_file(to);
                    }
                    // Gone from the directory, durably or not.
                    Op::Unlink(_) => uncount(counters, len),
                    Op::Sync => {}
                }
                Err(io::Error::new(error.kind(), error.to_string()))
            }
        };
        let _ = job.done.send(answer);
    }
}

/// Applies an operation; answers with the number of queued bytes it adds or removes.
fn apply(op: &Op) -> io::Result<u64> {
    match op {
        Op::Publish { from, to, len } => {
            // link(2) fails if `to` exists, where rename(2) would replace a queued message.
            let linked = std::fs::hard_link(from, to);
            let _ = std::fs::remove_file(from);
            linked.map(|()| *len)
        }
        Op::Unlink(path) => {
            let len = std::fs::metadata(path)?.len();
            std::fs::remove_file(path)?;
            Ok(len)
        }
        Op::Sync => Ok(0),
    }
}

fn uncount(counters: &Counters, len: u64) {
    saturating_sub(&counters.messages, 1);
    saturating_sub(&counters.bytes, len);
}

fn saturating_sub(counter: &AtomicU64, n: u64) {
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(n))
    });
}

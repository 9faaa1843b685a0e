//! Group commit of queue directory changes, one group per queue subdirectory.
//!
//! A new or removed name is durable only once its directory is fsynced, and the disk
//! serialises those. The thread that made a change (the blocking-pool thread that also
//! wrote and fsynced the queue file) syncs the directory itself when no sync of it is
//! running; otherwise it waits for the running one, after which one waiter syncs for
//! every change made in the meantime. N concurrent changes thus cost about two fsyncs,
//! not N, and a commit crosses threads once (session → blocking pool → session): no
//! committer task, channel and second blocking hop per message as before, and the
//! first writer of a batch waits on no lock at all.

use std::fs::{self, File};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};

/// Size of the queue, changed exactly when a change is durable, even if the session
/// stopped waiting for it.
#[derive(Default)]
pub struct Counters {
    pub messages: AtomicU64,
    pub bytes: AtomicU64,
}

/// The group commits of the queue subdirectories, indexed by bucket. Blocking.
pub struct Committer {
    dirs: Vec<DirSync>,
    counters: Arc<Counters>,
}

impl Committer {
    pub fn new(dirs: Vec<File>, counters: Arc<Counters>) -> Committer {
        let dirs = dirs
            .into_iter()
            .map(|dir| DirSync {
                dir,
                state: Mutex::default(),
                synced: Condvar::new(),
            })
            .collect();
        Committer { dirs, counters }
    }

    /// Makes the fsynced queue file `from` (`len` bytes) visible as `to` in subdirectory
    /// `bucket`, never replacing an existing `to`, and returns once that is durable.
    pub fn publish(&self, from: &Path, to: &Path, bucket: usize, len: u64) -> io::Result<()> {
        // link(2) fails if `to` exists, where rename(2) would replace a queued message.
        let linked = fs::hard_link(from, to);
        let _ = fs::remove_file(from);
        linked?;
        if let Err(error) = self.dirs[bucket].sync() {
            // A name that may not survive a crash must not be acknowledged; take it back
            // so that the client's retry does not make a duplicate.
            let _ = fs::remove_file(to);
            return Err(error);
        }
        self.counters.messages.fetch_add(1, Ordering::Relaxed);
        self.counters.bytes.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }

    /// Removes queue file `path` of subdirectory `bucket`, durably.
    pub fn unlink(&self, path: &Path, bucket: usize) -> io::Result<()> {
        let len = fs::metadata(path)?.len();
        fs::remove_file(path)?;
        // Gone from the directory, durably or not.
        saturating_sub(&self.counters.messages, 1);
        saturating_sub(&self.counters.bytes, len);
        self.dirs[bucket].sync()
    }

    /// Returns once the names created in subdirectory `bucket` so far are durable.
    pub fn sync(&self, bucket: usize) -> io::Result<()> {
        self.dirs[bucket].sync()
    }
}

struct DirSync {
    dir: File,
    state: Mutex<SyncState>,
    synced: Condvar,
}

#[derive(Default)]
struct SyncState {
    /// The changes that the next sync will cover.
    open: Arc<Batch>,
    /// Whether a sync is running (it covers a batch taken out of `open`).
    syncing: bool,
}

/// The result of one directory sync, for every change it covered.
#[derive(Default)]
struct Batch {
    result: OnceLock<Result<(), (io::ErrorKind, String)>>,
}

impl DirSync {
    /// Returns once every change made to the directory before the call is durable.
    fn sync(&self) -> io::Result<()> {
        let mut state = self.lock();
        let batch = state.open.clone();
        while state.syncing {
            state = self
                .synced
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(result) = batch.result.get() {
                return result
                    .clone()
                    .map_err(|(kind, message)| io::Error::new(kind, message));
            }
        }
        // No sync runs and `batch` has no result, so it is still the open one: a sync
        // takes its batch out of `open` and sets the result before it clears `syncing`.
        state.open = Arc::default();
        state.syncing = true;
        drop(state);
        let result = self.dir.sync_all();
        if let Err(error) = &result {
            tracing::error!(%error, "spool directory fsync failed");
        }
        let shared = result
            .as_ref()
            .map(|_| ())
            .map_err(|e| (e.kind(), e.to_string()));
        let _ = batch.result.set(shared);
        self.lock().syncing = false;
        self.synced.notify_all();
        result
    }

    fn lock(&self) -> MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn saturating_sub(counter: &AtomicU64, n: u64) {
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(n))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Changes made while a sync runs wait for it, then one of them syncs for all, and
    /// every one of them gets that sync's result: here an error, as fsync(2) of a pipe
    /// fails with EINVAL.
    #[test]
    fn waiters_share_the_next_sync_and_its_error() {
        let (reader, _writer) = std::io::pipe().unwrap();
        let dir = Arc::new(DirSync {
            dir: File::from(std::os::fd::OwnedFd::from(reader)),
            state: Mutex::default(),
            synced: Condvar::new(),
        });
        // A sync is running: the waiters must join the open batch.
        let batch = {
            let mut state = dir.lock();
            state.syncing = true;
            state.open.clone()
        };
        let waiters: Vec<_> = (0..8)
            .map(|_| {
                let dir = dir.clone();
                std::thread::spawn(move || dir.sync())
            })
            .collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while Arc::strong_count(&batch) < 1 + 1 + 8 {
            assert!(
                std::time::Instant::now() < deadline,
                "the waiters did not join the open batch"
            );
            std::thread::yield_now();
        }
        assert!(batch.result.get().is_none(), "synced while a sync ran");
        dir.lock().syncing = false;
        dir.synced.notify_all();
        for waiter in waiters {
            let error = waiter.join().unwrap().unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{error}");
        }
        assert!(batch.result.get().is_some_and(Result::is_err));
        assert!(!dir.lock().syncing);
    }
}

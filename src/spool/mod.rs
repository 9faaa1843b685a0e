//! The durable queue on disk, Postfix style: one plain file per message under `queue/`,
//! holding the envelope and the message so that one fsync covers both.
//!
//! A message is written to its hashed subdirectory of `tmp/`, fsynced, linked into the
//! same subdirectory of `queue/` (see `layout`), and that directory is fsynced (batched
//! over concurrent commits, see `committer`); only then does
//! [`Spool::commit`] return and the session answer `250`. A crash leaves either a whole
//! queue file or debris in `tmp/`, which [`Spool::open`] removes. Per-recipient outcomes
//! are appended to a sidecar `<id>.status` next to the queue file, fsynced after each update, so a
//! restarted server repeats at most the delivery that was in flight.

mod committer;
mod envelope;
pub mod format;
mod id;
mod layout;
mod legacy;
pub mod lock;
mod outcome;

use std::collections::HashSet;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, ensure};
use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio::task::spawn_blocking;

use committer::{Committer, Counters};
pub use envelope::{BodyType, Envelope, Notify, Recipient, RecipientStatus, Ret, TlsInfo};
pub use id::QueueId;
use lock::{DirLock, SPOOL_LOCK, SpoolInUse};
pub use outcome::{Cause, Command, Outcome, Remote, RemoteKind, Reply, Status};

/// Commits running at once (each a blocking thread from the file write to the
/// directory sync): their fsyncs overlap, but a burst of sessions must not occupy the
/// whole blocking thread pool.
const MAX_CONCURRENT_WRITES: usize = 64;
const SIDECAR_SUFFIX: &str = ".status";

pub struct Spool {
    tmp: PathBuf,
    queue: PathBuf,
    committer: Arc<Committer>,
    writers: Semaphore,
    counters: Arc<Counters>,
    /// Held while the spool is open: one server per spool.
    _lock: DirLock,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolStats {
    /// Messages in `queue/`.
    pub messages: u64,
    /// Their total size on disk (envelope included, status sidecars not).
    pub bytes: u64,
}

/// A queued message as read back: its envelope with the recorded recipient outcomes,
/// and the message bytes exactly as committed.
#[derive(Debug, Clone)]
pub struct QueuedMessage {
    pub envelope: Envelope,
    pub message: Bytes,
}

impl Spool {
    /// Opens (creating, with mode 0700) `dir/{tmp,queue,corrupt}`, removes the debris of
    /// interrupted commits from `tmp/`, moves unreadable queue files to `corrupt/` and
    /// counts the rest; [`Spool::list`] then gives the messages to resume.
    ///
    /// Only one process may have a spool directory open (opening cleans `tmp/`): the
    /// spool stays locked until dropped, and opening a locked one fails at once with
    /// [`SpoolInUse`] as the error itself, one line naming the directory.
    pub async fn open(dir: &Path) -> anyhow::Result<Arc<Spool>> {
        let root = dir.to_path_buf();
        let (lock, (counters, dirs)) = spawn_blocking(move || {
            let lock = lock_spool(&root)?;
            let prepared =
                prepare(&root).with_context(|| format!("opening spool {}", root.display()))?;
            anyhow::Ok((lock, prepared))
        })
        .await??;
        let counters = Arc::new(counters);
        Ok(Arc::new(Spool {
            tmp: dir.join("tmp"),
            queue: dir.join("queue"),
            committer: Arc::new(Committer::new(dirs, counters.clone())),
            writers: Semaphore::new(MAX_CONCURRENT_WRITES),
            counters,
            _lock: lock,
        }))
    }

    /// A fresh queue id, for the session to name the message in its Received header
    /// before the message is committed.
    pub fn new_id() -> QueueId {
        QueueId::generate()
    }

    /// Writes `message` with `envelope` (named by `envelope.id`) and returns once both are
    /// on disk and the name is durable. On error nothing is left in the queue.
    pub async fn commit(&self, envelope: &Envelope, message: Bytes) -> anyhow::Result<()> {
        let id = envelope.id;
        let prefix = format::encode_prefix(envelope, message.len())?;
        let len = (prefix.len() + message.len()) as u64;
        let tmp = layout::hashed_path(&self.tmp, &id);
        let to = self.queue_path(&id);
        let committer = self.committer.clone();
        let _permit = self.writers.acquire().await?;
        // One hop to a blocking thread for the whole commit: write, fsync, link and the
        // (grouped) directory sync, so the session is woken once, when it is durable.
        spawn_blocking(move || {
            write_new_synced(&tmp, &[&prefix, &message])
                .with_context(|| format!("writing {}", tmp.display()))?;
            committer
                .publish(&tmp, &to, layout::bucket(&id), len)
                .with_context(|| format!("queueing {id}"))
        })
        .await?
    }

    /// Ids of the queued messages, oldest first.
    pub async fn list(&self) -> anyhow::Result<Vec<QueueId>> {
        let queue = self.queue.clone();
        let queued = spawn_blocking(move || layout::queued(&queue)).await??;
        Ok(queued.into_iter().map(|(id, _)| id).collect())
    }

    /// The message and its envelope, with the recipient outcomes recorded so far.
    pub async fn load(&self, id: &QueueId) -> anyhow::Result<QueuedMessage> {
        let (path, sidecar, id) = (self.queue_path(id), self.sidecar_path(id), *id);
        spawn_blocking(move || {
            let data = fs::read(&path)?;
            let (mut envelope, start) = format::read_prefix(&mut &data[..], data.len() as u64)?;
            ensure!(
                envelope.id == id,
                "queue file holds message {}",
                envelope.id
            );
            format::apply_status(&mut envelope, &read_optional(&sidecar)?);
            let message = Bytes::from(data).slice(start as usize..);
            Ok(QueuedMessage { envelope, message })
        })
        .await?
        .with_context(|| format!("loading queued message {id}"))
    }

    /// The envelope alone (with recorded outcomes), without reading the message.
    #[cfg(test)]
    pub async fn load_envelope(&self, id: &QueueId) -> anyhow::Result<Envelope> {
        let (path, sidecar) = (self.queue_path(id), self.sidecar_path(id));
        spawn_blocking(move || {
            let mut envelope = read_envelope(&path)?;
            format::apply_status(&mut envelope, &read_optional(&sidecar)?);
            anyhow::Ok(envelope)
        })
        .await?
        .with_context(|| format!("loading envelope of {id}"))
    }

    /// Durably records recipient outcomes (`(index into envelope.recipients, status)`).
    /// Call it after each delivery attempt, before starting the next one.
    pub async fn record(
        &self,
        id: &QueueId,
        updates: &[(usize, RecipientStatus)],
    ) -> anyhow::Result<()> {
        let path = self.sidecar_path(id);
        let records = format::encode_status(updates);
        let (committer, bucket) = (self.committer.clone(), layout::bucket(id));
        spawn_blocking(move || {
            if append_synced(&path, &records)? {
                committer.sync(bucket)?;
            }
            io::Result::Ok(())
        })
        .await?
        .with_context(|| format!("recording status of {id}"))
    }

    /// Takes a message out of the queue, once every recipient has a final outcome (and
    /// any bounce for it is queued).
    pub async fn remove(&self, id: &QueueId) -> anyhow::Result<()> {
        let (path, sidecar) = (self.queue_path(id), self.sidecar_path(id));
        let (committer, bucket, id) = (self.committer.clone(), layout::bucket(id), *id);
        spawn_blocking(move || {
            committer
                .unlink(&path, bucket)
                .with_context(|| format!("removing {id} from the queue"))?;
            // Only now: a sidecar lost before the queue file would repeat finished
            // deliveries. A leftover sidecar without its queue file is removed by `open`.
            remove_optional(&sidecar)?;
            anyhow::Ok(())
        })
        .await?
    }

    /// Whether message `id` is queued here (a handover may offer it twice).
    pub fn contains(&self, id: &QueueId) -> bool {
        self.queue_path(id).exists()
    }

    pub fn stats(&self) -> SpoolStats {
        SpoolStats {
            messages: self.counters.messages.load(Ordering::Relaxed),
            bytes: self.counters.bytes.load(Ordering::Relaxed),
        }
    }

    fn queue_path(&self, id: &QueueId) -> PathBuf {
        layout::hashed_path(&self.queue, id)
    }

    fn sidecar_path(&self, id: &QueueId) -> PathBuf {
        layout::sidecar_path(&self.queue_path(id))
    }
}

/// A queued message as the queue tools see it: envelope with recorded outcomes, and
/// the queue file's size.
#[derive(Debug, Clone)]
pub struct QueueEntry {
    pub envelope: Envelope,
    pub size: u64,
}

/// The queued messages of spool directory `dir`, oldest first, read without opening the
/// spool: nothing is written, cleaned or locked, so this is safe next to a running
/// server. Messages that leave the queue while it reads are skipped. Blocking.
pub fn inspect(dir: &Path) -> anyhow::Result<Vec<QueueEntry>> {
    let queue = dir.join("queue");
    let queued = layout::queued(&queue).with_context(|| format!("reading {}", queue.display()))?;
    let mut entries = Vec::with_capacity(queued.len());
    for (_, path) in queued {
        let read = File::open(&path).and_then(|file| {
            let size = file.metadata()?.len();
            Ok((file, size))
        });
        let (file, size) = match read {
            Ok(opened) => opened,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let mut envelope = format::read_prefix(&mut BufReader::new(file), size)
            .with_context(|| format!("reading {}", path.display()))?
            .0;
        format::apply_status(&mut envelope, &read_optional(&layout::sidecar_path(&path))?);
        entries.push(QueueEntry { envelope, size });
    }
    Ok(entries)
}

/// One queued message of spool directory `dir`, read as [`inspect`] reads. Blocking.
pub fn inspect_message(dir: &Path, id: &QueueId) -> anyhow::Result<QueuedMessage> {
    let queue = dir.join("queue");
    // A spool of an older release, not yet opened by this one, is still flat.
    let path = [layout::hashed_path(&queue, id), queue.join(id.as_str())]
        .into_iter()
        .find(|path| path.exists())
        .with_context(|| format!("no queued message {id}"))?;
    let data = fs::read(&path).with_context(|| format!("no queued message {id}"))?;
    let (mut envelope, start) = format::read_prefix(&mut &data[..], data.len() as u64)?;
    format::apply_status(&mut envelope, &read_optional(&layout::sidecar_path(&path))?);
    let message = Bytes::from(data).slice(start as usize..);
    Ok(QueuedMessage { envelope, message })
}

/// True when a [`Spool::commit`] error means the disk (or quota) is full: the session
/// answers `452 4.3.1 Insufficient system storage` then, `451 4.3.0` otherwise.
pub fn is_out_of_space(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.downcast_ref::<io::Error>().is_some_and(|e| {
            matches!(
                e.kind(),
                io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
            )
        })
    })
}

/// Creates `path` (which must not exist) with mode 0600, writes `parts` and fsyncs it.
/// On error the partial file is removed.
pub fn write_new_synced(path: &Path, parts: &[&[u8]]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    let written = parts
        .iter()
        .try_for_each(|part| file.write_all(part))
        .and_then(|()| file.sync_data());
    if written.is_err() {
        drop(file);
        let _ = fs::remove_file(path);
    }
    written
}

/// Appends `bytes` to `path` and fsyncs; answers whether the file was created (its name
/// then still needs a directory fsync).
fn append_synced(path: &Path, bytes: &[u8]) -> io::Result<bool> {
    let mut options = OpenOptions::new();
    options.append(true).mode(0o600);
    let (mut file, created) = match options.clone().create_new(true).open(path) {
        Ok(file) => (file, true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => (options.open(path)?, false),
        Err(e) => return Err(e),
    };
    file.write_all(bytes)?;
    file.sync_data()?;
    Ok(created)
}

fn read_envelope(path: &Path) -> anyhow::Result<Envelope> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    Ok(format::read_prefix(&mut BufReader::new(file), len)?.0)
}

fn read_optional(path: &Path) -> io::Result<Vec<u8>> {
    match fs::read(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        other => other,
    }
}

fn remove_optional(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Creates the spool directory if needed and locks it, before anything in it is touched.
fn lock_spool(root: &Path) -> anyhow::Result<DirLock> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .and_then(|()| DirLock::try_acquire(&root.join(SPOOL_LOCK)))
        .with_context(|| format!("locking spool {}", root.display()))?
        .ok_or_else(|| SpoolInUse(root.to_path_buf()).into())
}

/// The blocking part of [`Spool::open`]: directories, tmp cleanup, the move of a flat
/// spool into subdirectories, queue check and count. Answers the counters and the
/// queue subdirectories, opened for their syncs.
fn prepare(root: &Path) -> anyhow::Result<(Counters, Vec<File>)> {
    let (tmp, queue, corrupt) = (root.join("tmp"), root.join("queue"), root.join("corrupt"));
    let mut builder = DirBuilder::new();
    builder.mode(0o700);
    let mut created = false;
    for dir in [&tmp, &queue, &corrupt] {
        created |= create_dir(&builder, dir)?;
    }
    if created {
        File::open(root)?.sync_all()?;
    }
    // Nothing in tmp/ outlives a crash, so its subdirectories need no sync.
    let tmp_buckets = layout::BUCKETS.map(|b| tmp.join(b));
    for dir in &tmp_buckets {
        create_dir(&builder, dir)?;
    }
    let buckets: Vec<PathBuf> = layout::BUCKETS.iter().map(|b| queue.join(b)).collect();
    created = false;
    for dir in &buckets {
        created |= create_dir(&builder, dir)?;
    }
    // A message moved into a subdirectory or committed there must not be lost with it.
    if created {
        File::open(&queue)?.sync_all()?;
    }
    let dirs = buckets
        .iter()
        .map(File::open)
        .collect::<io::Result<Vec<File>>>()?;

    // Debris: the files in tmp/<h>/, and in tmp/ itself from a release before the
    // subdirectories.
    let mut debris = 0;
    for dir in std::iter::once(&tmp).chain(&tmp_buckets) {
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            let path = entry.path();
            match fs::remove_file(&path) {
                Ok(()) => debris += 1,
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "cannot remove spool debris")
                }
            }
        }
    }
    if debris > 0 {
        tracing::info!(
            files = debris,
            "removed debris of interrupted commits from spool tmp/"
        );
    }

    let migrated = layout::migrate_flat(&queue)?;
    if migrated > 0 {
        for dir in &dirs {
            dir.sync_all()?;
        }
        File::open(&queue)?.sync_all()?;
        tracing::info!(
            files = migrated,
            "moved the queue files of an older release into queue subdirectories"
        );
    }

    let counters = Counters::default();
    let mut files = Vec::new();
    let mut sidecars = Vec::new();
    // What is left in queue/ itself besides the subdirectories is not ours: quarantined.
    for dir in std::iter::once(&queue).chain(&buckets) {
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if dir == &queue && name.to_str().is_some_and(|n| layout::BUCKETS.contains(&n)) {
                continue;
            }
            match name.to_str().and_then(|n| n.strip_suffix(SIDECAR_SUFFIX)) {
                Some(owner) => sidecars.push((owner.to_string(), entry.path())),
                None => files.push((name, entry.path())),
            }
        }
    }
    let mut queued = HashSet::new();
    let mut moved = false;
    for (name, path) in files {
        let checked = name
            .to_str()
            .and_then(|n| n.parse::<QueueId>().ok())
            .context("not a queue file name")
            .and_then(|id| {
                ensure!(
                    path == layout::hashed_path(&queue, &id),
                    "not in its subdirectory"
                );
                let envelope = read_envelope(&path)?;
                ensure!(
                    envelope.id == id,
                    "queue file holds message {}",
                    envelope.id
                );
                Ok(id)
            });
        match checked {
            Ok(id) => {
                queued.insert(id.to_string());
                counters.messages.fetch_add(1, Ordering::Relaxed);
                counters
                    .bytes
                    .fetch_add(fs::metadata(&path)?.len(), Ordering::Relaxed);
            }
            Err(error) => {
                let to = quarantine(&path, &corrupt)?;
                tracing::error!(
                    file = %path.display(),
                    moved_to = %to.display(),
                    error = format!("{error:#}"),
                    "unreadable queue file moved out of the queue"
                );
                moved = true;
            }
        }
    }
    for (owner, path) in sidecars {
        if queued.contains(&owner) {
            continue;
        }
        if corrupt.join(&owner).exists() {
            // Keep the status of a quarantined message next to it.
            quarantine(&path, &corrupt)?;
        } else {
            remove_optional(&path)?;
        }
        moved = true;
    }
    if moved {
        File::open(&corrupt)?.sync_all()?;
        File::open(&queue)?.sync_all()?;
        for dir in &dirs {
            dir.sync_all()?;
        }
    }
    Ok((counters, dirs))
}

/// Creates directory `dir` unless it exists; answers whether it did.
fn create_dir(builder: &DirBuilder, dir: &Path) -> io::Result<bool> {
    match builder.create(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Moves `path` into `corrupt/`, never over an earlier file of the same name.
fn quarantine(path: &Path, corrupt: &Path) -> io::Result<PathBuf> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut to = corrupt.join(name.as_ref());
    if to.exists() {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        to = corrupt.join(format!("{name}.{micros}"));
    }
    fs::rename(path, &to)?;
    Ok(to)
}

#[cfg(test)]
mod tests;

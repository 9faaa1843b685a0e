//! One process per directory: an exclusive `flock` on a lock file, held for the life of
//! the process. The kernel drops it when the process dies, `kill -9` included, so a
//! crash never leaves a stale lock behind (a PID file would).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// The spool's lock file, beside `queue/` and `tmp/`.
pub const SPOOL_LOCK: &str = "serve.lock";

/// [`super::Spool::open`] found the spool locked by another process.
#[derive(Debug, thiserror::Error)]
#[error("spool {} is in use by another posthorn serve", .0.display())]
pub struct SpoolInUse(pub PathBuf);

/// Holds the lock until dropped.
#[derive(Debug)]
pub struct DirLock {
    _file: Flock<File>,
}

impl DirLock {
    /// Locks `path` (created, mode 0600, if missing) without waiting; `None` when another
    /// open file holds it, in this process or another.
    pub fn try_acquire(path: &Path) -> io::Result<Option<DirLock>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(file) => Ok(Some(DirLock { _file: file })),
            Err((_, Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, errno)) => Err(errno.into()),
        }
    }
}

//! Where queue files live: `queue/<h>/<id>`, `h` one of 16 subdirectories chosen by a
//! hash of the id, like Postfix's `hash_queue_depth = 1`. Creating and removing names
//! churns a directory; spread over 16 the lookups stay short when the queue backs up,
//! and each subdirectory's fsync covers only its own names (see `committer`). A file is
//! written in `tmp/<h>/` first: every create and unlink takes its directory's lock, and
//! with one `tmp/` concurrent commits queued on it (bench/RESULTS.md, "Kernel locks").
//!
//! Releases before the subdirectories kept every file in `queue/` itself:
//! [`migrate_flat`] moves such files into place when the spool is opened, and
//! [`queued`] reads both layouts for the tools that read a spool without opening it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{QueueId, SIDECAR_SUFFIX};

/// The subdirectory names, in bucket order.
pub const BUCKETS: [&str; 16] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "a", "b", "c", "d", "e", "f",
];

/// The bucket of `id`: FNV-1a over its characters, so stable across releases and
/// processes (the std hasher is seeded per process).
pub fn bucket(id: &QueueId) -> usize {
    let hash = id.as_str().bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    (hash % BUCKETS.len() as u32) as usize
}

/// `dir/<h>/<id>`: the place of `id` in `queue/`, and of its file in the making in `tmp/`.
pub fn hashed_path(dir: &Path, id: &QueueId) -> PathBuf {
    dir.join(BUCKETS[bucket(id)]).join(id.as_str())
}

pub fn sidecar_path(queue_file: &Path) -> PathBuf {
    let mut name = queue_file.file_name().unwrap_or_default().to_os_string();
    name.push(SIDECAR_SUFFIX);
    queue_file.with_file_name(name)
}

/// The queue file names under `queue` (its subdirectories and, for a spool of an older
/// release not yet migrated, `queue` itself), sorted by id: oldest first.
pub fn queued(queue: &Path) -> io::Result<Vec<(QueueId, PathBuf)>> {
    let mut found = Vec::new();
    for dir in std::iter::once(queue.to_path_buf()).chain(BUCKETS.map(|b| queue.join(b))) {
        let entries = match fs::read_dir(&dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && dir != queue => continue,
            entries => entries?,
        };
        for entry in entries {
            let entry = entry?;
            if let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<QueueId>().ok())
            {
                found.push((id, entry.path()));
            }
        }
    }
    found.sort_unstable_by_key(|(id, _)| *id);
    Ok(found)
}

/// Moves the queue files and sidecars an older release left in `queue` itself into
/// their subdirectories (which must exist); answers how many it moved. Names that are
/// neither stay where they are. The caller fsyncs the directories.
pub fn migrate_flat(queue: &Path) -> io::Result<usize> {
    let mut moved = 0;
    for entry in fs::read_dir(queue)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(owner) = name
            .to_str()
            .map(|n| n.strip_suffix(SIDECAR_SUFFIX).unwrap_or(n))
            .and_then(|n| n.parse::<QueueId>().ok())
        else {
            continue;
        };
        if entry.file_type()?.is_dir() {
            continue;
        }
        fs::rename(
            entry.path(),
            queue.join(BUCKETS[bucket(&owner)]).join(&name),
        )?;
        moved += 1;
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_stable_and_all_used() {
        // Fixed values: a change of the hash would strand every queued message.
        let id: QueueId = "0123456789ABCDE".parse().unwrap();
        assert_eq!(bucket(&id), 9);
        let mut seen = [0; 16];
        for _ in 0..1600 {
            seen[bucket(&QueueId::generate())] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
    }

    #[test]
    fn queued_needs_the_queue_and_readable_subdirectories() {
        let dir = tempfile::tempdir().unwrap();
        let queue = dir.path().join("queue");
        assert_eq!(queued(&queue).unwrap_err().kind(), io::ErrorKind::NotFound);
        // A flat spool of an older release has no subdirectories.
        fs::create_dir(&queue).unwrap();
        assert!(queued(&queue).unwrap().is_empty());
        fs::write(queue.join("3"), b"").unwrap();
        assert_eq!(
            queued(&queue).unwrap_err().kind(),
            io::ErrorKind::NotADirectory
        );
    }

    #[test]
    fn migrate_flat_counts_what_it_moved() {
        let dir = tempfile::tempdir().unwrap();
        let queue = dir.path().join("queue");
        for bucket in BUCKETS {
            fs::create_dir_all(queue.join(bucket)).unwrap();
        }
        let id = QueueId::generate();
        fs::write(queue.join(id.as_str()), b"x").unwrap();
        fs::write(queue.join(format!("{id}{SIDECAR_SUFFIX}")), b"x").unwrap();
        fs::write(queue.join("not-a-queue-file"), b"x").unwrap();
        assert_eq!(migrate_flat(&queue).unwrap(), 2);
        assert!(hashed_path(&queue, &id).exists());
        assert_eq!(migrate_flat(&queue).unwrap(), 0);
    }
}

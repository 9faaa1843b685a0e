//! Files that are re-read when they change on disk.
//!
//! Kubernetes updates a mounted Secret by swapping the `..data` symlink, so the file's
//! own path never sees a write: we poll the metadata of the resolved target (device,
//! inode, size, mtime) instead of relying on inotify events on the path. A load that
//! fails keeps the previous value and logs why, so a half-written file never takes the
//! server down.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

pub struct Watched<T> {
    current: ArcSwap<T>,
}

impl<T> Watched<T> {
    /// The value as last loaded successfully.
    pub fn get(&self) -> Arc<T> {
        self.current.load_full()
    }
}

type Fingerprint = Vec<Option<(u64, u64, u64, i64, i64)>>;

fn fingerprint(paths: &[PathBuf]) -> Fingerprint {
    paths
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
        })
        .collect()
}

/// Loads the value once (an error here is returned: the server must not start without
/// it), then reloads it in the background whenever one of `paths` changes.
pub fn watch<T, F>(
    what: &'static str,
    paths: Vec<PathBuf>,
    interval: Duration,
    load: F,
) -> anyhow::Result<Arc<Watched<T>>>
where
    T: Send + Sync + 'static,
    F: Fn() -> anyhow::Result<T> + Send + Sync + 'static,
{
    let mut seen = fingerprint(&paths);
    let watched = Arc::new(Watched {
        current: ArcSwap::from_pointee(load()?),
    });
    let weak = Arc::downgrade(&watched);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(watched) = weak.upgrade() else {
                return;
            };
            let now = fingerprint(&paths);
            if now == seen {
                continue;
            }
            seen = now;
            match load() {
                Ok(value) => {
                    watched.current.store(Arc::new(value));
                    tracing::info!(what, paths = ?paths, "reloaded");
                }
                Err(err) => {
                    tracing::warn!(
                        what,
                        error = format!("{err:#}"),
                        "reload failed, keeping the previous version"
                    )
                }
            }
        }
    });
    Ok(watched)
}

/// Convenience for the common one-file case.
pub fn watch_file<T, F>(
    what: &'static str,
    path: &Path,
    interval: Duration,
    load: F,
) -> anyhow::Result<Arc<Watched<T>>>
where
    T: Send + Sync + 'static,
    F: Fn(&Path) -> anyhow::Result<T> + Send + Sync + 'static,
{
    let owned = path.to_path_buf();
    watch(what, vec![owned.clone()], interval, move || load(&owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reloads_after_symlink_swap_and_keeps_old_value_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let data1 = dir.path().join("v1");
        let data2 = dir.path().join("v2");
        std::fs::write(&data1, "1").unwrap();
        std::fs::write(&data2, "2").unwrap();
        let link = dir.path().join("value");
        std::os::unix::fs::symlink(&data1, &link).unwrap();

        let w = watch_file("test", &link, Duration::from_millis(20), |p| {
            let text = std::fs::read_to_string(p)?;
            Ok(text.trim().parse::<u32>()?)
        })
        .unwrap();
        assert_eq!(*w.get(), 1);

        // Swap the symlink atomically, as the kubelet does with `..data`.
        let tmp = dir.path().join("tmp-link");
        std::os::unix::fs::symlink(&data2, &tmp).unwrap();
        std::fs::rename(&tmp, &link).unwrap();
        wait_for(|| *w.get() == 2).await;

        std::fs::write(&data2, "not a number").unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(*w.get(), 2, "a broken file must not replace a good value");
    }

    async fn wait_for(cond: impl Fn() -> bool) {
        for _ in 0..200 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition not reached");
    }
}

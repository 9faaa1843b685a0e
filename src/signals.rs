//! SIGTERM (Kubernetes) and SIGINT (Ctrl-C) for `serve` and `operator`.

use anyhow::Context;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// Both signals, caught from [`Signals::catch`] on: one that arrives before anyone waits
/// for it still counts, and neither kills the process.
pub struct Signals {
    term: Signal,
    interrupt: Signal,
}

impl Signals {
    pub fn catch() -> anyhow::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("catching SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("catching SIGINT")?,
        })
    }

    /// Waits for either signal.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

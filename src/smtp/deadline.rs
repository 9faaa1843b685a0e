//! How long a client may take to send one request, counted from the server's last reply,
//! so that a client trickling a byte at a time cannot hold its slot forever.
//!
//! This is Postfix's `smtpd_per_request_deadline` with `smtpd_min_data_rate`, always on:
//! a command line must be complete within the timeout; DATA and BDAT content starts
//! with the same budget, and each read spends the time it waited and earns
//! `bytes / minDataRate` seconds, but the budget never grows beyond the timeout.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    at: Instant,
}

impl Deadline {
    /// A new request: the whole timeout from `now`.
    pub fn start(now: Instant, timeout: Duration) -> Deadline {
        Deadline { at: now + timeout }
    }

    pub fn at(self) -> Instant {
        self.at
    }

    /// Message content arrived: `bytes / min_rate` more seconds, capped at `timeout`
    /// from `now`. A rate of 0 means no minimum: the budget refills to `timeout`.
    pub fn credit(&mut self, now: Instant, bytes: usize, min_rate: u64, timeout: Duration) {
        let earned = match min_rate {
            0 => timeout,
            rate => Duration::from_secs_f64(bytes as f64 / rate as f64).min(timeout),
        };
        self.at = (self.at + earned).min(now + timeout);
    }

    /// The server came under stress: wait at most `timeout` more from `now`.
    pub fn shorten(&mut self, now: Instant, timeout: Duration) {
        self.at = self.at.min(now + timeout);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn data_earns_bytes_over_rate() {
        let t0 = Instant::now();
        let mut d = Deadline::start(t0, TIMEOUT);
        // 4 s in, 1000 bytes at 500 B/s earn 2 s: 8 s left instead of 6.
        d.credit(t0 + secs(4.0), 1000, 500, TIMEOUT);
        assert_eq!(d.at(), t0 + secs(12.0));
    }

    #[test]
    fn trickled_data_keeps_almost_nothing() {
        let t0 = Instant::now();
        let mut d = Deadline::start(t0, TIMEOUT);
        let mut now = t0;
        // One byte every 300 ms at a minimum of 500 B/s: each read earns 2 ms.
        while now + secs(0.3) < d.at() {
            now += secs(0.3);
            d.credit(now, 1, 500, TIMEOUT);
        }
        assert!(d.at() < t0 + secs(10.1), "{:?}", d.at() - t0);
    }

    #[test]
    fn budget_never_exceeds_the_timeout() {
        let t0 = Instant::now();
        let mut d = Deadline::start(t0, TIMEOUT);
        d.credit(t0 + secs(1.0), 1 << 30, 500, TIMEOUT);
        assert_eq!(d.at(), t0 + secs(11.0));
        d.credit(t0 + secs(2.0), 10, 0, TIMEOUT);
        assert_eq!(d.at(), t0 + secs(12.0));
    }

    #[test]
    fn stress_shortens_but_never_extends() {
        let t0 = Instant::now();
        let mut d = Deadline::start(t0, TIMEOUT);
        d.shorten(t0 + secs(1.0), secs(2.0));
        assert_eq!(d.at(), t0 + secs(3.0));
        d.shorten(t0 + secs(2.0), secs(5.0));
        assert_eq!(d.at(), t0 + secs(3.0));
    }
}

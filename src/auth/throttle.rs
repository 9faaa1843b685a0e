//! Failed-login throttling, like Dovecot's auth penalty and Postfix's anvil.
//!
//! Failures are counted per client network (an IPv4 address, an IPv6 /64) and per login
//! in a sliding window. An attempt is verified only while the failures in the window
//! plus the attempts still being verified stay under the limit, so a burst of parallel
//! sessions cannot get more passwords checked than a patient client. Past that, an
//! attempt waits for one being verified to finish (many clients behind one address,
//! such as an application's connection pool, log in at once with a cold cache), and is
//! refused once the failures alone reach the limit. The delay before a failure is
//! answered doubles with each failure from the same network, up to a cap.
//!
//! A success clears nothing: otherwise one valid account could reset its address's
//! count between guesses. Failures simply age out of the window. The tracked keys live
//! in an LRU map of fixed capacity; logins are kept only as salted 64-bit hashes.

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lru::LruCache;
use tokio::sync::Notify;

use crate::config::AuthConfig;

#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub window: Duration,
    /// Failures per network in the window; 0: no limit.
    pub per_address: usize,
    /// Failures per login in the window; 0: no limit.
    pub per_login: usize,
    /// The first failure's delay; it doubles with each further one.
    pub failure_delay: Duration,
    pub max_failure_delay: Duration,
    /// Keys (networks and logins) remembered at most.
    pub tracked_keys: NonZeroUsize,
}

impl Limits {
    pub fn from_config(cfg: &AuthConfig) -> Limits {
        Limits {
            window: cfg.throttle_window,
            per_address: cfg.max_failures_per_address,
            per_login: cfg.max_failures_per_login,
            failure_delay: cfg.failure_delay,
            max_failure_delay: cfg.max_failure_delay.max(cfg.failure_delay),
            tracked_keys: NonZeroUsize::new(cfg.throttle_tracked_keys).unwrap_or(NonZeroUsize::MIN),
        }
    }

    /// Dovecot's penalty: the delay doubles with each failure, up to the cap.
    fn delay(&self, failures: usize) -> Duration {
        let doublings = u32::try_from(failures.saturating_sub(1))
            .unwrap_or(u32::MAX)
            .min(31);
        self.failure_delay
            .saturating_mul(1 << doublings)
            .min(self.max_failure_delay)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Network(IpAddr),
    Login(u64),
}

#[derive(Default)]
struct Entry {
    failures: VecDeque<Instant>,
    in_flight: usize,
}

impl Entry {
    fn expire(&mut self, now: Instant, window: Duration) {
        while self
            .failures
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            self.failures.pop_front();
        }
    }
}

type Clock = Box<dyn Fn() -> Instant + Send + Sync>;

pub struct Throttle {
    limits: Limits,
    salt: RandomState,
    entries: Mutex<LruCache<Key, Entry>>,
    /// Woken whenever an attempt finishes, for the attempts waiting their turn.
    finished: Notify,
    clock: Clock,
}

/// Why an attempt is not admitted now.
#[derive(Debug, PartialEq)]
enum Denied {
    /// The failures in the window reach a limit: refuse, after this delay.
    Refused(Duration),
    /// Attempts being verified fill what the failures leave of a limit: wait for one.
    Busy,
}

/// An admitted attempt. Dropping it without [`Attempt::succeeded`] counts as a
/// failure, so a client that hangs up during verification gains nothing.
pub struct Attempt<'a> {
    throttle: &'a Throttle,
    /// The network's key and limit, then the login's; None where there is no limit.
    keys: [Option<(Key, usize)>; 2],
    finished: bool,
}

impl Throttle {
    pub fn new(limits: Limits) -> Throttle {
        Throttle::with_clock(limits, Box::new(Instant::now))
    }

    fn with_clock(limits: Limits, clock: Clock) -> Throttle {
        Throttle {
            entries: Mutex::new(LruCache::new(limits.tracked_keys)),
            finished: Notify::new(),
            limits,
            salt: RandomState::new(),
            clock,
        }
    }

    /// Reserves an attempt for this client (absent: the Dovecot socket got no `rip`)
    /// and canonical login, waiting while others are being verified, or returns the
    /// delay to wait before refusing it.
    pub async fn admit(
        &self,
        client: Option<IpAddr>,
        login: &str,
    ) -> Result<Attempt<'_>, Duration> {
        loop {
            // Registered before looking, so a finish in between still wakes us.
            let finished = self.finished.notified();
            tokio::pin!(finished);
            finished.as_mut().enable();
            match self.try_admit(client, login) {
                Ok(attempt) => return Ok(attempt),
                Err(Denied::Refused(delay)) => return Err(delay),
                Err(Denied::Busy) => finished.await,
            }
        }
    }

    /// [`Throttle::admit`] without waiting.
    fn try_admit(&self, client: Option<IpAddr>, login: &str) -> Result<Attempt<'_>, Denied> {
        let keys = [
            client.map(|ip| (Key::Network(network(ip)), self.limits.per_address)),
            Some((Key::Login(self.salt.hash_one(login)), self.limits.per_login)),
        ]
        .map(|key| key.filter(|(_, limit)| *limit > 0));
        let now = (self.clock)();
        let mut entries = self.lock();
        let mut busy = false;
        for (key, limit) in keys.iter().flatten() {
            if let Some(entry) = entries.get_mut(key) {
                entry.expire(now, self.limits.window);
                if entry.failures.len() >= *limit {
                    return Err(Denied::Refused(self.limits.max_failure_delay));
                }
                busy |= entry.failures.len() + entry.in_flight >= *limit;
            }
        }
        if busy {
            return Err(Denied::Busy);
        }
        for (key, _) in keys.iter().flatten() {
            entries.get_or_insert_mut(*key, Entry::default).in_flight += 1;
        }
        Ok(Attempt {
            throttle: self,
            keys,
            finished: false,
        })
    }

    /// Keys remembered now (for the metrics).
    pub fn tracked_keys(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, LruCache<Key, Entry>> {
        // The map stays consistent even if a holder panicked.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Attempt<'_> {
    pub fn succeeded(mut self) {
        self.finish(false);
    }

    /// Records the failure; returns how long to wait before answering it.
    pub fn failed(mut self) -> Duration {
        self.finish(true)
    }

    fn finish(&mut self, failed: bool) -> Duration {
        self.finished = true;
        let throttle = self.throttle;
        let now = (throttle.clock)();
        let mut entries = throttle.lock();
        let mut counts = [0; 2];
        for (i, slot) in self.keys.iter().enumerate() {
            let Some((key, limit)) = slot else {
                continue;
            };
            // Evicted meanwhile by a flood of other keys: start again with this failure.
            if failed && !entries.contains(key) {
                entries.put(*key, Entry::default());
            }
            let Some(entry) = entries.get_mut(key) else {
                continue;
            };
            entry.in_flight = entry.in_flight.saturating_sub(1);
            entry.expire(now, throttle.limits.window);
            if failed {
                entry.failures.push_back(now);
                // More than the limit is never needed to decide.
                if entry.failures.len() > *limit {
                    entry.failures.pop_front();
                }
            }
            counts[i] = entry.failures.len();
            if entry.failures.is_empty() && entry.in_flight == 0 {
                entries.pop(key);
            }
        }
        drop(entries);
        throttle.finished.notify_waiters();
        // The delay follows the client's own failures; with no address tracked, the login's.
        let failures = if self.keys[0].is_some() {
            counts[0]
        } else {
            counts[1]
        };
        throttle.limits.delay(failures)
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.finish(true);
        }
    }
}

/// The unit one client controls: an IPv4 address, or an IPv6 /64 (a single host
/// usually has a whole /64 to pick addresses from).
fn network(ip: IpAddr) -> IpAddr {
    crate::mail::network(ip, 32, 64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const WINDOW: Duration = Duration::from_secs(600);

    fn limits(per_address: usize, per_login: usize, tracked: usize) -> Limits {
        Limits {
            window: WINDOW,
            per_address,
            per_login,
            failure_delay: Duration::from_secs(2),
            max_failure_delay: Duration::from_secs(15),
            tracked_keys: NonZeroUsize::new(tracked).unwrap(),
        }
    }

    /// A throttle whose clock the test moves.
    fn throttle(limits: Limits) -> (Throttle, Arc<Mutex<Instant>>) {
        let now = Arc::new(Mutex::new(Instant::now()));
        let clock = now.clone();
        let t = Throttle::with_clock(limits, Box::new(move || *clock.lock().unwrap()));
        (t, now)
    }

    fn advance(now: &Mutex<Instant>, by: Duration) {
        *now.lock().unwrap() += by;
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn fail(t: &Throttle, client: Option<IpAddr>, login: &str) -> Duration {
        t.try_admit(client, login).expect("admitted").failed()
    }

    #[test]
    fn window_slides() {
        let (t, now) = throttle(limits(3, 0, 100));
        let a = ip("192.0.2.1");
        fail(&t, a, "u1");
        advance(&now, Duration::from_secs(300));
        fail(&t, a, "u2");
        fail(&t, a, "u3");
        assert_eq!(
            t.try_admit(a, "u4").err(),
            Some(Denied::Refused(Duration::from_secs(15)))
        );
        // The first failure leaves the window: one more attempt, then throttled again.
        advance(&now, Duration::from_secs(300));
        fail(&t, a, "u4");
        assert!(t.try_admit(a, "u5").is_err());
        advance(&now, Duration::from_secs(299));
        assert!(t.try_admit(a, "u5").is_err());
        advance(&now, Duration::from_secs(1));
        assert!(t.try_admit(a, "u5").is_ok());
    }

    #[test]
    fn other_addresses_and_successes_are_unaffected() {
        let (t, _) = throttle(limits(2, 0, 100));
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        for _ in 0..5 {
            t.try_admit(a, "alice").unwrap().succeeded();
        }
        fail(&t, a, "alice");
        fail(&t, a, "alice");
        assert!(t.try_admit(a, "alice").is_err());
        t.try_admit(b, "alice").unwrap().succeeded();
        fail(&t, b, "bob");
        assert!(t.try_admit(b, "bob").is_ok());
    }

    #[test]
    fn per_login_limit_counts_over_all_addresses() {
        let (t, _) = throttle(limits(10, 3, 100));
        for i in 1..=3 {
            fail(&t, ip(&format!("198.51.100.{i}")), "alice@example.com");
        }
        assert!(t.try_admit(ip("203.0.113.9"), "alice@example.com").is_err());
        assert!(t.try_admit(ip("203.0.113.9"), "bob@example.com").is_ok());
        // The Dovecot socket without `rip`: the login limit still holds.
        assert!(t.try_admit(None, "alice@example.com").is_err());
    }

    #[test]
    fn attempts_in_flight_count_against_the_limit() {
        let (t, _) = throttle(limits(3, 0, 100));
        let a = ip("192.0.2.1");
        let busy = |t: &Throttle| matches!(t.try_admit(a, "x"), Err(Denied::Busy));
        let in_flight: Vec<_> = (0..3).map(|_| t.try_admit(a, "x").unwrap()).collect();
        assert!(busy(&t), "a fourth parallel attempt waits");
        // Successes free their slot; a dropped attempt counts as a failure.
        let mut in_flight = in_flight.into_iter();
        in_flight.next().unwrap().succeeded();
        drop(in_flight.next());
        let third = in_flight.next().unwrap();
        let fourth = t.try_admit(a, "x").unwrap();
        assert!(busy(&t));
        third.succeeded();
        fourth.succeeded();
        let fifth = t.try_admit(a, "x").unwrap();
        let sixth = t.try_admit(a, "x").unwrap();
        assert!(busy(&t));
        fifth.failed();
        sixth.failed();
        // The failures alone reach the limit: refused, not waiting.
        assert_eq!(
            t.try_admit(a, "x").err(),
            Some(Denied::Refused(Duration::from_secs(15)))
        );
    }

    /// An attempt from `a` that must wait its turn; the task logs in once admitted.
    async fn wait_turn(
        t: &Arc<Throttle>,
        a: Option<IpAddr>,
    ) -> tokio::task::JoinHandle<Result<(), Duration>> {
        let waiting = tokio::spawn({
            let t = t.clone();
            async move { t.admit(a, "x").await.map(Attempt::succeeded) }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        waiting
    }

    /// A waiting attempt is admitted when one being verified succeeds, and refused when
    /// the failure of one fills the limit.
    #[tokio::test]
    async fn a_waiting_attempt_follows_the_one_it_waits_for() {
        let (t, _) = throttle(limits(2, 0, 100));
        let t = Arc::new(t);
        let a = ip("192.0.2.1");
        let first = t.try_admit(a, "x").unwrap();
        fail(&t, a, "x");
        let waiting = wait_turn(&t, a).await;
        first.succeeded();
        assert_eq!(waiting.await.unwrap(), Ok(()));

        let second = t.try_admit(a, "x").unwrap();
        let waiting = wait_turn(&t, a).await;
        second.failed();
        assert_eq!(waiting.await.unwrap(), Err(Duration::from_secs(15)));
    }

    #[test]
    fn delay_doubles_up_to_the_cap() {
        let (t, _) = throttle(limits(10, 0, 100));
        let a = ip("192.0.2.1");
        let delays: Vec<u64> = (0..6).map(|_| fail(&t, a, "x").as_secs()).collect();
        assert_eq!(delays, [2, 4, 8, 15, 15, 15]);
        // Another address starts at the base delay.
        assert_eq!(fail(&t, ip("192.0.2.2"), "x"), Duration::from_secs(2));
    }

    #[test]
    fn ipv6_counts_per_64() {
        let (t, _) = throttle(limits(2, 0, 100));
        fail(&t, ip("2001:db8:1:2::1"), "x");
        fail(&t, ip("2001:db8:1:2:ffff::9"), "x");
        assert!(t.try_admit(ip("2001:db8:1:2::77"), "x").is_err());
        assert!(t.try_admit(ip("2001:db8:1:3::1"), "x").is_ok());
        // An IPv4-mapped address is the IPv4 address.
        fail(&t, ip("192.0.2.7"), "x");
        fail(&t, ip("::ffff:192.0.2.7"), "x");
        assert!(t.try_admit(ip("192.0.2.7"), "x").is_err());
    }

    #[test]
    fn memory_is_bounded_by_evicting_the_least_recent() {
        let (t, _) = throttle(limits(1, 0, 3));
        let first = ip("192.0.2.1");
        fail(&t, first, "x");
        assert!(t.try_admit(first, "x").is_err());
        for i in 2..=10 {
            fail(&t, ip(&format!("192.0.2.{i}")), "x");
            assert!(t.tracked_keys() <= 3);
        }
        assert_eq!(t.tracked_keys(), 3);
        // The oldest was evicted; the most recent are still throttled.
        assert!(t.try_admit(ip("192.0.2.10"), "x").is_err());
        assert!(t.try_admit(first, "x").is_ok());
    }

    /// A client that hangs up while its password is checked gains nothing: the dropped
    /// attempt is a failure, so the next one waits the second failure's delay.
    #[test]
    fn a_dropped_attempt_is_a_failure() {
        let (t, now) = throttle(limits(2, 0, 100));
        let a = ip("192.0.2.1");
        drop(t.try_admit(a, "x").unwrap());
        assert_eq!(fail(&t, a, "x"), Duration::from_secs(4));
        assert!(t.try_admit(a, "x").is_err());
        advance(&now, WINDOW);
        assert!(t.try_admit(a, "x").is_ok());
    }

    #[test]
    fn successes_leave_no_keys_behind() {
        let (t, _) = throttle(limits(5, 5, 100));
        t.try_admit(ip("192.0.2.1"), "alice").unwrap().succeeded();
        assert_eq!(t.tracked_keys(), 0);
        fail(&t, ip("192.0.2.1"), "alice");
        assert_eq!(t.tracked_keys(), 2);
    }
}

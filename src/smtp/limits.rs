//! Connection limits: in total, per client IP (`smtpd_client_connection_count_limit`) and
//! per client network, plus the stress signal that shortens timeouts when most slots are
//! taken (Postfix's stress-adaptive behaviour).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

pub struct ConnectionLimits {
    max_total: usize,
    max_per_ip: usize,
    max_per_network: usize,
    open: Arc<Mutex<Counts>>,
    /// `Counts::stressed` as a plain flag: sessions ask for it on every read and reply,
    /// which must not take the lock that every connection's slot goes through.
    stressed: Arc<AtomicBool>,
}

struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
    per_network: HashMap<IpAddr, usize>,
    /// At or above this many open connections the server is under stress.
    stress_threshold: usize,
    stressed: watch::Sender<bool>,
    stressed_flag: Arc<AtomicBool>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Total,
    PerIp,
    /// The client's /24 (IPv4) or /64 (IPv6) holds its share of the slots already.
    PerNetwork,
}

/// Held for the life of a connection; gives its slot back when dropped.
pub struct Slot {
    ip: IpAddr,
    open: Arc<Mutex<Counts>>,
}

impl ConnectionLimits {
    pub fn new(max_total: usize, max_per_ip: usize, max_per_network: usize) -> ConnectionLimits {
        let stressed = Arc::new(AtomicBool::new(false));
        let counts = Counts {
            total: 0,
            per_ip: HashMap::new(),
            per_network: HashMap::new(),
            // 80 % of the slots, rounded up.
            stress_threshold: max_total - max_total / 5,
            stressed: watch::Sender::new(false),
            stressed_flag: stressed.clone(),
        };
        ConnectionLimits {
            max_total,
            max_per_ip,
            max_per_network,
            open: Arc::new(Mutex::new(counts)),
            stressed,
        }
    }

    pub fn acquire(&self, ip: IpAddr) -> Result<Slot, Refused> {
        let ip = ip.to_canonical();
        let mut counts = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if counts.total >= self.max_total {
            return Err(Refused::Total);
        }
        if counts.per_ip.get(&ip).copied().unwrap_or(0) >= self.max_per_ip {
            return Err(Refused::PerIp);
        }
        let net = network(ip);
        if counts.per_network.get(&net).copied().unwrap_or(0) >= self.max_per_network {
            return Err(Refused::PerNetwork);
        }
        *counts.per_ip.entry(ip).or_default() += 1;
        *counts.per_network.entry(net).or_default() += 1;
        counts.total += 1;
        counts.update_stress();
        Ok(Slot {
            ip,
            open: self.open.clone(),
        })
    }

    pub fn stressed(&self) -> bool {
        self.stressed.load(Ordering::Relaxed)
    }

    /// Follows whether the server is under stress (`true`), for sessions to shorten
    /// their waits when it begins.
    pub fn stress(&self) -> watch::Receiver<bool> {
        let counts = self.open.lock().unwrap_or_else(|e| e.into_inner());
        counts.stressed.subscribe()
    }
}

impl Counts {
    fn update_stress(&self) {
        let stressed = self.total >= self.stress_threshold;
        self.stressed_flag.store(stressed, Ordering::Relaxed);
        self.stressed.send_if_modified(|old| {
            let changed = *old != stressed;
            *old = stressed;
            changed
        });
    }
}

/// The client's network: its IPv4 /24 or IPv6 /64.
fn network(ip: IpAddr) -> IpAddr {
    crate::mail::network(ip, 24, 64)
}

fn release(map: &mut HashMap<IpAddr, usize>, key: IpAddr) {
    if let Some(n) = map.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            map.remove(&key);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.open.lock().unwrap_or_else(|e| e.into_inner());
        counts.total -= 1;
        release(&mut counts.per_ip, self.ip);
        release(&mut counts.per_network, network(self.ip));
        counts.update_stress();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn limits_total_and_per_ip_and_release_on_drop() {
        let limits = ConnectionLimits::new(3, 2, 3);
        let a = ip("192.0.2.1");
        let b = ip("198.51.100.2");
        let s1 = limits.acquire(a).unwrap();
        let _s2 = limits.acquire(a).unwrap();
        assert_eq!(limits.acquire(a).err(), Some(Refused::PerIp));
        let _s3 = limits.acquire(b).unwrap();
        assert_eq!(limits.acquire(b).err(), Some(Refused::Total));
        drop(s1);
        assert!(limits.acquire(a).is_ok());
    }

    #[test]
    fn networks_are_ipv4_24_and_ipv6_64() {
        assert_eq!(network(ip("192.0.2.77")), ip("192.0.2.0"));
        assert_eq!(network(ip("::ffff:192.0.2.77")), ip("192.0.2.0"));
        assert_eq!(network(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
    }

    #[test]
    fn ipv4_network_share() {
        let limits = ConnectionLimits::new(100, 10, 3);
        let held: Vec<Slot> = ["192.0.2.1", "192.0.2.2", "192.0.2.254"]
            .into_iter()
            .map(|a| limits.acquire(ip(a)).unwrap())
            .collect();
        assert_eq!(
            limits.acquire(ip("192.0.2.3")).err(),
            Some(Refused::PerNetwork)
        );
        // The same network written as an IPv4-mapped IPv6 address.
        assert_eq!(
            limits.acquire(ip("::ffff:192.0.2.9")).err(),
            Some(Refused::PerNetwork)
        );
        assert!(limits.acquire(ip("192.0.3.1")).is_ok());
        drop(held);
        assert!(limits.acquire(ip("192.0.2.3")).is_ok());
    }

    #[test]
    fn ipv6_network_share() {
        let limits = ConnectionLimits::new(100, 10, 2);
        let _a = limits.acquire(ip("2001:db8:0:1::1")).unwrap();
        let b = limits.acquire(ip("2001:db8:0:1:ffff::2")).unwrap();
        assert_eq!(
            limits.acquire(ip("2001:db8:0:1::3")).err(),
            Some(Refused::PerNetwork)
        );
        assert!(limits.acquire(ip("2001:db8:0:2::3")).is_ok());
        drop(b);
        assert!(limits.acquire(ip("2001:db8:0:1::3")).is_ok());
    }

    #[test]
    fn stress_from_80_percent_of_the_slots() {
        let limits = ConnectionLimits::new(10, 10, 10);
        let stress = limits.stress();
        let mut held: Vec<Slot> = (1..=7)
            .map(|i| limits.acquire(ip(&format!("192.0.2.{i}"))).unwrap())
            .collect();
        assert!(!*stress.borrow() && !limits.stressed());
        held.push(limits.acquire(ip("192.0.2.8")).unwrap());
        assert!(*stress.borrow(), "8 of 10 slots taken");
        assert!(limits.stressed(), "8 of 10 slots taken");
        held.pop();
        assert!(!*stress.borrow(), "back to 7 of 10");
        assert!(!limits.stressed(), "back to 7 of 10");
        assert_eq!(
            ConnectionLimits::new(5, 1, 1)
                .open
                .lock()
                .unwrap()
                .stress_threshold,
            4
        );
        assert_eq!(
            ConnectionLimits::new(1, 1, 1)
                .open
                .lock()
                .unwrap()
                .stress_threshold,
            1
        );
    }
}

//! Remembers credentials that verified, so a client that logs in for every message pays
//! for the expensive hash once. Only a salted SHA-256 of login and password is kept,
//! never the password; the salt is random per cache, so the digests are useless
//! outside this process.

use std::collections::HashSet;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

pub type CacheKey = [u8; 32];

pub struct CredentialCache {
    salt: [u8; 32],
    capacity: usize,
    keys: Mutex<HashSet<CacheKey>>,
}

impl CredentialCache {
    /// `capacity` 0 disables the cache.
    pub fn new(capacity: usize) -> CredentialCache {
        CredentialCache {
            salt: rand::random(),
            capacity,
            keys: Mutex::new(HashSet::new()),
        }
    }

    pub fn key(&self, login: &str, password: &[u8]) -> CacheKey {
        // The NUL keeps ("ab", "c") and ("a", "bc") apart: a login never contains one.
        Sha256::new()
            .chain_update(self.salt)
            .chain_update(login.as_bytes())
            .chain_update([0])
            .chain_update(password)
            .finalize()
            .into()
    }

    pub fn contains(&self, key: &CacheKey) -> bool {
        self.capacity > 0 && self.lock().contains(key)
    }

    pub fn insert(&self, key: CacheKey) {
        if self.capacity == 0 {
            return;
        }
        let mut keys = self.lock();
        // Starting over when full is crude but bounded; the cost is one extra
        // verification per active client, not a wrong answer.
        if keys.len() >= self.capacity {
            keys.clear();
        }
        keys.insert(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<CacheKey>> {
        // The set is always consistent, even if a holder panicked.
        self.keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_exact_credentials_only() {
        let cache = CredentialCache::new(10);
        cache.insert(cache.key("alice@example.com", b"pw"));
        assert!(cache.contains(&cache.key("alice@example.com", b"pw")));
        assert!(!cache.contains(&cache.key("alice@example.com", b"pw2")));
        assert!(!cache.contains(&cache.key("alice@example.co", b"mpw")));
    }

    #[test]
    fn keeps_every_key_until_full() {
        let cache = CredentialCache::new(3);
        let keys = [b"1", b"2", b"3"].map(|p| cache.key("u", p));
        for key in keys {
            cache.insert(key);
        }
        assert!(keys.iter().all(|key| cache.contains(key)));
    }

    #[test]
    fn salt_differs_per_cache() {
        let (a, b) = (CredentialCache::new(1), CredentialCache::new(1));
        assert_ne!(a.key("u", b"p"), b.key("u", b"p"));
    }

    #[test]
    fn stays_bounded_and_zero_disables() {
        let cache = CredentialCache::new(3);
        for i in 0..10u8 {
            cache.insert(cache.key("u", &[i]));
            assert!(cache.lock().len() <= 3);
            assert!(cache.contains(&cache.key("u", &[i])));
        }
        let off = CredentialCache::new(0);
        off.insert(off.key("u", b"p"));
        assert!(!off.contains(&off.key("u", b"p")));
    }
}

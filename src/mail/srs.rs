//! The Sender Rewriting Scheme (SRS0, as libsrs2 and postsrsd write it), so that mail an
//! alias forwards to another domain passes SPF there:
//! `bob@example.net` leaves as `SRS0=HHHH=TT=example.net=bob@<our domain>`, where `TT` is
//! the day (base32, modulo 1024) and `HHHH` the first four base64 characters of an
//! HMAC-SHA1 over the lowercased `TT`, domain and local part. A bounce to that address is
//! taken only when the hash matches and the day is recent enough.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use ring::hmac;
use subtle::ConstantTimeEq;

use super::Address;

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/// Timestamps count days modulo 2^10.
const PERIOD: u64 = 1024;
const DAY: u64 = 24 * 3600;
const HASH_LEN: usize = 4;

pub struct Srs {
    key: hmac::Key,
    /// The domain rewritten addresses are at.
    domain: String,
    max_age_days: u64,
}

impl Srs {
    pub fn new(secret: &[u8], domain: &str, max_age: Duration) -> Srs {
        Srs {
            key: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret),
            domain: domain.to_string(),
            max_age_days: max_age.as_secs().div_ceil(DAY),
        }
    }

    /// The SRS0 address for `sender` (`local@domain`), as of `now`.
    pub fn forward(&self, sender: &str, now: SystemTime) -> Option<String> {
        let address = Address::parse(sender)?;
        let stamp = stamp(day(now));
        let hash = self.hash(&stamp, address.domain(), address.local());
        Some(format!(
            "SRS0={hash}={stamp}={}={}@{}",
            address.domain(),
            address.local(),
            self.domain
        ))
    }

    /// Whether `address` has the form of a rewritten address at our domain (a forgery
    /// included), which no alias or catch-all may take instead.
    pub fn is_rewritten(&self, address: &str) -> bool {
        Address::parse(address).is_some_and(|a| {
            a.has_domain(&self.domain)
                && a.local().get(..5).is_some_and(|p| {
                    p.eq_ignore_ascii_case("SRS0=") || p.eq_ignore_ascii_case("SRS1=")
                })
        })
    }

    /// The original sender of an SRS0 address at our domain, if its hash is ours and its
    /// day within the maximum age; `None` for anything else.
    pub fn reverse(&self, address: &str, now: SystemTime) -> Option<String> {
        let address = Address::parse(address)?;
        if !address.has_domain(&self.domain) {
            return None;
        }
        let local = address.local();
        let rest = local
            .get(..5)
            .filter(|p| p.eq_ignore_ascii_case("SRS0="))
            .map(|_| &local[5..])?;
        let mut parts = rest.splitn(4, '=');
        let (hash, stamp, domain, user) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if domain.is_empty() || user.is_empty() {
            return None;
        }
        let expected = self.hash(stamp, domain, user);
        // Mail systems on the way may have changed the case of the local part.
        let matches: bool = expected
            .to_ascii_lowercase()
            .as_bytes()
            .ct_eq(hash.to_ascii_lowercase().as_bytes())
            .into();
        let age = (day(now) + PERIOD - decode_stamp(stamp)?) % PERIOD;
        (matches && age <= self.max_age_days).then(|| format!("{user}@{domain}"))
    }

    fn hash(&self, stamp: &str, domain: &str, local: &str) -> String {
        let data = format!("{stamp}{domain}{local}").to_lowercase();
        let tag = hmac::sign(&self.key, data.as_bytes());
        let mut text = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
        text.truncate(HASH_LEN);
        text
    }
}

fn day(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() / DAY % PERIOD
}

fn stamp(day: u64) -> String {
    [BASE32[(day >> 5) as usize & 31], BASE32[day as usize & 31]]
        .iter()
        .map(|&b| char::from(b))
        .collect()
}

fn decode_stamp(stamp: &str) -> Option<u64> {
    let [a, b] = stamp.as_bytes() else {
        return None;
    };
    let value = |c: &u8| {
        BASE32
            .iter()
            .position(|x| x.eq_ignore_ascii_case(c))
            .map(|v| v as u64)
    };
    Some(value(a)? << 5 | value(b)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn srs() -> Srs {
        Srs::new(b"secret", "example.com", Duration::from_secs(21 * DAY))
    }

    fn at(days: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(days * DAY + 3600)
    }

    #[test]
    fn forward_then_reverse() {
        let now = at(20_000);
        let rewritten = srs().forward("Bob.Smith@Example.NET", now).unwrap();
        let (local, domain) = rewritten.rsplit_once('@').unwrap();
        assert_eq!(domain, "example.com");
        let parts: Vec<&str> = local.splitn(5, '=').collect();
        assert_eq!(parts[0], "SRS0");
        assert_eq!(parts[1].len(), 4);
        // Day 20000 is 544 modulo 1024: 17 * 32 + 0.
        assert_eq!(parts[2], "RA");
        assert_eq!(&parts[3..], ["Example.NET", "Bob.Smith"]);
        assert_eq!(
            srs().reverse(&rewritten, now).as_deref(),
            Some("Bob.Smith@Example.NET")
        );
        assert_eq!(
            srs().reverse(&rewritten.to_uppercase(), now).as_deref(),
            Some("BOB.SMITH@EXAMPLE.NET"),
            "hash and stamp compare without case"
        );
        let odd = srs().forward("a=b@example.net", now).unwrap();
        assert_eq!(srs().reverse(&odd, now).as_deref(), Some("a=b@example.net"));
    }

    #[test]
    fn reverse_refuses_forged_expired_or_foreign() {
        let now = at(20_000);
        let good = srs().forward("bob@example.net", now).unwrap();
        let other_key = Srs::new(b"other", "example.com", Duration::from_secs(21 * DAY));
        assert_eq!(other_key.reverse(&good, now), None, "another key's hash");
        let tampered = good.replace("=bob@", "=eve@");
        assert_eq!(srs().reverse(&tampered, now), None);
        assert!(srs().reverse(&good, at(20_021)).is_some(), "21 days old");
        assert_eq!(srs().reverse(&good, at(20_022)), None, "22 days old");
        // The day wraps at 1024 without making old addresses new.
        assert_eq!(srs().reverse(&good, at(20_000 + 1024 + 22)), None);
        assert!(srs().reverse(&good, at(20_000 + 1024 + 3)).is_some());
        let elsewhere = good.replace("@example.com", "@example.org");
        assert_eq!(srs().reverse(&elsewhere, now), None);
        assert!(srs().is_rewritten(&tampered) && srs().is_rewritten("srs1=x@Example.COM"));
        assert!(!srs().is_rewritten(&elsewhere) && !srs().is_rewritten("bob@example.com"));
        for bad in [
            "bob@example.com",
            "SRS0=abcd@example.com",
            "SRS0==AA==@example.com",
        ] {
            assert_eq!(srs().reverse(bad, now), None, "{bad}");
        }
    }

    #[test]
    fn stamps_round_trip() {
        for day in [0, 1, 31, 32, 1023] {
            assert_eq!(decode_stamp(&stamp(day)), Some(day));
        }
        assert_eq!(decode_stamp("A"), None);
        assert_eq!(decode_stamp("A1"), None);
    }
}

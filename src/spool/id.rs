//! Queue ids: Postfix-long-queue-id-like names for queued messages.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Crockford base32: no I, L, O, U, so ids read back unambiguously from logs.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// 11 characters hold 55 bits of microseconds since the epoch (enough until year 3111).
const TIME_CHARS: usize = 11;
/// 4 characters (20 bits) of randomness keep ids from two processes, or from before a
/// clock step back, apart.
const RANDOM_CHARS: usize = 4;
const LEN: usize = TIME_CHARS + RANDOM_CHARS;

/// Last time value handed out: ids from one process are strictly increasing, hence unique.
static LAST_MICROS: AtomicU64 = AtomicU64::new(0);

/// The name of a queued message: 15 characters of base32, sorting by arrival time.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct QueueId([u8; LEN]);

impl QueueId {
    /// A fresh id: an atomic update and a random draw, cheap enough for every DATA command.
    pub fn generate() -> QueueId {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let previous = LAST_MICROS
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                Some(now.max(last + 1))
            })
            .unwrap_or_else(|last| last);
        let micros = now.max(previous + 1);
        let random: u32 = rand::random();
        let mut id = [0u8; LEN];
        for (i, slot) in id[..TIME_CHARS].iter_mut().rev().enumerate() {
            *slot = ALPHABET[((micros >> (5 * i)) & 31) as usize];
        }
        for (i, slot) in id[TIME_CHARS..].iter_mut().enumerate() {
            *slot = ALPHABET[((random >> (5 * i)) & 31) as usize];
        }
        QueueId(id)
    }

    pub fn as_str(&self) -> &str {
        // Only built from ALPHABET bytes, which are ASCII.
        std::str::from_utf8(&self.0).expect("queue ids are ASCII")
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("not a queue id: {0:?}")]
pub struct BadQueueId(String);

impl FromStr for QueueId {
    type Err = BadQueueId;

    fn from_str(s: &str) -> Result<QueueId, BadQueueId> {
        let bytes: [u8; LEN] = s
            .as_bytes()
            .try_into()
            .map_err(|_| BadQueueId(s.to_string()))?;
        if bytes.iter().all(|b| ALPHABET.contains(b)) {
            Ok(QueueId(bytes))
        } else {
            Err(BadQueueId(s.to_string()))
        }
    }
}

impl TryFrom<String> for QueueId {
    type Error = BadQueueId;

    fn try_from(s: String) -> Result<QueueId, BadQueueId> {
        s.parse()
    }
}

impl From<QueueId> for String {
    fn from(id: QueueId) -> String {
        id.as_str().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_distinct_increasing_and_round_trip() {
        let ids: Vec<QueueId> = (0..10_000).map(|_| QueueId::generate()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "not time-sortable");
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());
        for id in &ids[..10] {
            assert_eq!(id.as_str().len(), 15);
            assert_eq!(id.to_string().parse::<QueueId>().unwrap(), *id);
            let json = serde_json::to_string(id).unwrap();
            assert_eq!(serde_json::from_str::<QueueId>(&json).unwrap(), *id);
        }
    }

    /// The last 4 characters carry 20 random bits each time: 1,000 ids from one process
    /// repeat them rarely (about one pair expected).
    #[test]
    fn random_part_takes_all_20_bits() {
        let random: HashSet<String> = (0..1000)
            .map(|_| QueueId::generate().as_str()[TIME_CHARS..].to_string())
            .collect();
        assert!(random.len() > 990, "{} distinct", random.len());
    }

    #[test]
    fn debug_is_the_id() {
        let id = QueueId::generate();
        assert_eq!(format!("{id:?}"), id.as_str());
    }

    #[test]
    fn rejects_foreign_names() {
        for bad in [
            "",
            "short",
            "0123456789ABCDEF",
            "0123456789abcde",
            "0123456789ABCD.",
            "../../etc/passw",
        ] {
            assert!(bad.parse::<QueueId>().is_err(), "{bad:?} accepted");
        }
        assert!("0123456789ABCDE".parse::<QueueId>().is_ok());
    }
}

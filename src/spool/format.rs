//! On-disk layout of a queue file and of its status sidecar.
//!
//! A queue file is one header line, the envelope as one line of JSON, then the raw
//! message:
//!
//! ```text
//! POSTHORN-QUEUE <version> <envelope length> <message length>\n
//! <envelope JSON>\n
//! <message bytes>
//! ```
//!
//! The lengths make a truncated file detectable from its size alone. The sidecar
//! `<id>.status` holds appended records `\n{"v":3,"rcpt":N,"status":{...}}\n`; the
//! leading newline keeps a record torn by a crash from swallowing the next one.
//!
//! Versions: 3 adds whether the delay warning was sent to deferred statuses; 2, read as
//! is, lacks it (not warned: across the upgrade a message may be warned once more, never
//! less). 2 records outcomes as structures ([`super::Outcome`]); 1, written before,
//! recorded them as text and is still read (see `legacy`). A status record
//! without `v` is version 1: a sidecar begun by an older version may continue in the
//! current one.

use std::io::{BufRead, Read};

use anyhow::{Context, bail, ensure};
use serde::{Deserialize, Serialize};

use super::envelope::{Envelope, RecipientStatus};
use super::legacy;

const MAGIC: &str = "POSTHORN-QUEUE";
/// The format version written.
const VERSION: u64 = 3;
/// Upper bound of the header line, so a garbage file is not read to its end looking
/// for a newline.
const MAX_HEADER: u64 = 64;

/// Header line and envelope line to write before the message bytes.
pub fn encode_prefix(envelope: &Envelope, message_len: usize) -> anyhow::Result<Vec<u8>> {
    let json = serde_json::to_vec(envelope)?;
    let mut prefix = format!("{MAGIC} {VERSION} {} {message_len}\n", json.len()).into_bytes();
    prefix.extend_from_slice(&json);
    prefix.push(b'\n');
    Ok(prefix)
}

/// Reads and checks the prefix of a queue file of `file_len` bytes; returns the envelope
/// and the offset where the message starts.
pub fn read_prefix(reader: &mut impl BufRead, file_len: u64) -> anyhow::Result<(Envelope, u64)> {
    let mut line = Vec::new();
    reader.take(MAX_HEADER).read_until(b'\n', &mut line)?;
    ensure!(line.last() == Some(&b'\n'), "no header line");
    let header = std::str::from_utf8(&line[..line.len() - 1]).context("header is not text")?;
    let Some(fields) = header.strip_prefix(MAGIC) else {
        bail!("unknown header {header:?}");
    };
    let mut fields = fields.split_ascii_whitespace().map(str::parse::<u64>);
    let (Some(Ok(version @ (1 | 2 | VERSION))), Some(Ok(json_len)), Some(Ok(message_len)), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        bail!("bad header {header:?}");
    };
    // Lengths from a damaged file may be anything: their sum must not overflow.
    let start = (line.len() as u64)
        .checked_add(json_len)
        .and_then(|n| n.checked_add(1));
    let Some(start) = start.filter(|s| s.checked_add(message_len) == Some(file_len)) else {
        bail!("file is {file_len} bytes, header {header:?} says otherwise");
    };
    let mut json = vec![0; json_len as usize + 1];
    reader.read_exact(&mut json)?;
    ensure!(json.pop() == Some(b'\n'), "envelope line not terminated");
    let envelope = if version == 1 {
        legacy::envelope(&json)
    } else {
        serde_json::from_slice(&json).map_err(Into::into)
    }
    .context("envelope")?;
    Ok((envelope, start))
}

#[derive(Serialize)]
struct StatusRecord<'a> {
    v: u64,
    rcpt: usize,
    status: &'a RecipientStatus,
}

/// A record as read: its status is parsed once its version is known.
#[derive(Deserialize)]
struct ReadRecord {
    #[serde(default = "version_1")]
    v: u64,
    rcpt: usize,
    status: serde_json::Value,
}

fn version_1() -> u64 {
    1
}

impl ReadRecord {
    fn status(self) -> anyhow::Result<RecipientStatus> {
        Ok(match self.v {
            1 => serde_json::from_value::<legacy::TextStatus>(self.status)?.into(),
            2 | VERSION => serde_json::from_value(self.status)?,
            v => bail!("unknown status record version {v}"),
        })
    }
}

pub fn encode_status(updates: &[(usize, RecipientStatus)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (rcpt, status) in updates {
        out.push(b'\n');
        let record = StatusRecord {
            v: VERSION,
            rcpt: *rcpt,
            status,
        };
        serde_json::to_writer(&mut out, &record).expect("status records serialize");
        out.push(b'\n');
    }
    out
}

/// Applies sidecar records in order (the last one for a recipient wins). Records torn by
/// a crash are skipped: they were never acknowledged, so losing them only repeats the
/// delivery that was in flight.
pub fn apply_status(envelope: &mut Envelope, sidecar: &[u8]) {
    for line in sidecar.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let read = serde_json::from_slice::<ReadRecord>(line)
            .map_err(anyhow::Error::from)
            .and_then(|record| Ok((record.rcpt, record.status()?)));
        match read {
            Ok((index, status)) => match envelope.recipients.get_mut(index) {
                Some(rcpt) => rcpt.status = status,
                None => tracing::warn!(
                    id = %envelope.id,
                    rcpt = index,
                    "status record for a recipient the envelope does not have; ignored"
                ),
            },
            Err(error) => tracing::warn!(
                id = %envelope.id,
                error = format!("{error:#}"),
                "torn status record ignored"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_that_overflow_are_an_error() {
        // Found by fuzz/fuzz_targets/spool_file.rs: the sum overflowed (a panic in debug
        // builds, an absurd allocation in release ones).
        let max = u64::MAX;
        for (json_len, message_len) in [(max, max), (max - 17, 3), (2, max)] {
            let file = format!("{MAGIC} {VERSION} {json_len} {message_len}\n{{}}\n");
            let err = read_prefix(&mut file.as_bytes(), file.len() as u64).unwrap_err();
            assert!(err.to_string().contains("says otherwise"), "{err}");
        }
    }

    #[test]
    fn a_bad_header_is_quoted_without_its_newline() {
        let file = format!("{MAGIC} 9 2 0\n{{}}\n");
        let err = read_prefix(&mut file.as_bytes(), file.len() as u64).unwrap_err();
        assert_eq!(err.to_string(), format!("bad header \"{MAGIC} 9 2 0\""));
    }
}

//! On-disk layout of a queue file and of its status sidecar.
//!
//! A queue file is one header line, the envelope as one line of JSON, then the raw
//! message:
//!
//! ```text
//! POSTHORN-QUEUE 1 <envelope length> <message length>\n
//! <envelope JSON>\n
//! <message bytes>
//! ```
//!
//! The lengths make a truncated file detectable from its size alone. The sidecar
//! `<id>.status` holds appended records `\n{"rcpt":N,"status":{...}}\n`; the leading
//! newline keeps a record torn by a crash from swallowing the next one.

use std::io::{BufRead, Read};

use anyhow::{Context, bail, ensure};
use serde::{Deserialize, Serialize};

use super::envelope::{Envelope, RecipientStatus};

const MAGIC: &str = "POSTHORN-QUEUE 1";
/// Upper bound of the header line, so a garbage file is not read to its end looking
/// for a newline.
const MAX_HEADER: u64 = 64;

/// Header line and envelope line to write before the message bytes.
pub fn encode_prefix(envelope: &Envelope, message_len: usize) -> anyhow::Result<Vec<u8>> {
    let json = serde_json::to_vec(envelope)?;
    let mut prefix = format!("{MAGIC} {} {message_len}\n", json.len()).into_bytes();
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
    let Some(lengths) = header.strip_prefix(MAGIC) else {
        bail!("unknown header {header:?}");
    };
    let mut fields = lengths.split_ascii_whitespace().map(str::parse::<u64>);
    let (Some(Ok(json_len)), Some(Ok(message_len)), None) =
        (fields.next(), fields.next(), fields.next())
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
    let envelope = serde_json::from_slice(&json).context("envelope")?;
    Ok((envelope, start))
}

#[derive(Serialize, Deserialize)]
struct StatusRecord {
    rcpt: usize,
    status: RecipientStatus,
}

pub fn encode_status(updates: &[(usize, RecipientStatus)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (rcpt, status) in updates {
        out.push(b'\n');
        let record = StatusRecord {
            rcpt: *rcpt,
            status: status.clone(),
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
        match serde_json::from_slice::<StatusRecord>(line) {
            Ok(record) => match envelope.recipients.get_mut(record.rcpt) {
                Some(rcpt) => rcpt.status = record.status,
                None => tracing::warn!(
                    id = %envelope.id,
                    rcpt = record.rcpt,
                    "status record for a recipient the envelope does not have; ignored"
                ),
            },
            Err(error) => tracing::warn!(
                id = %envelope.id,
                %error,
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
            let file = format!("{MAGIC} {json_len} {message_len}\n{{}}\n");
            let err = read_prefix(&mut file.as_bytes(), file.len() as u64).unwrap_err();
            assert!(err.to_string().contains("says otherwise"), "{err}");
        }
    }
}

//! DATA content, fed to the receiver in reads of any size: the result must not depend on
//! the read boundaries, and the receiver must stop at the end of data without reading a
//! byte of what the client pipelined after it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use posthorn::smtp::data::{DataReceiver, Discard};

/// What the receiver made of a stream.
#[derive(Debug, PartialEq)]
struct Received {
    message: Vec<u8>,
    /// Bytes taken from the stream; the rest is the next command.
    consumed: usize,
    done: bool,
}

/// The session's DATA state (src/smtp/session.rs): each read goes to the receiver; from
/// read number `discard_from` on, the message is over the size limit and the rest is
/// only read to find its end, which must be the same.
fn receive<'a>(reads: impl Iterator<Item = &'a [u8]>, discard_from: usize) -> Received {
    let mut receiver = DataReceiver::new();
    let mut message = Vec::new();
    let mut consumed = 0;
    for (n, read) in reads.enumerate() {
        let used = if n >= discard_from {
            receiver.ingest(read, &mut Discard)
        } else {
            receiver.ingest(read, &mut message)
        };
        match used {
            Some(used) => {
                return Received {
                    message,
                    consumed: consumed + used,
                    done: true,
                };
            }
            None => consumed += read.len(),
        }
    }
    Received {
        message,
        consumed,
        done: false,
    }
}

/// Whether every CR and LF in `message` is part of a CRLF.
fn crlf_only(message: &[u8]) -> bool {
    message.iter().enumerate().all(|(i, &b)| match b {
        b'\r' => message.get(i + 1) == Some(&b'\n'),
        b'\n' => i > 0 && message[i - 1] == b'\r',
        _ => true,
    })
}

/// Where the data ends by RFC 5321 §4.1.1.4: after the first `.` line, counting the CRLF
/// that ended the DATA command as the start of a line.
fn end_of_data(stream: &[u8]) -> Option<usize> {
    let mut framed = b"\r\n".to_vec();
    framed.extend_from_slice(stream);
    let at = framed.windows(5).position(|w| w == b"\r\n.\r\n")?;
    Some(at + 3)
}

fuzz_target!(|input: &[u8]| {
    let (reads, stream) = posthorn_fuzz::reads(input);
    let whole = receive(std::iter::once(stream), usize::MAX);
    assert!(whole.consumed <= stream.len());
    // A bare LF is stored as CRLF: at most one byte more per byte read.
    assert!(whole.message.len() <= 2 * whole.consumed);
    assert!(crlf_only(&whole.message), "bare CR or LF stored: {whole:?}");
    // The data ends exactly there: neither later, nor earlier (SMTP smuggling).
    assert_eq!(
        whole.done.then_some(whole.consumed),
        end_of_data(stream),
        "{whole:?}"
    );
    if whole.done {
        // The end was found without looking at the bytes after it.
        let prefix = receive(std::iter::once(&stream[..whole.consumed]), usize::MAX);
        assert_eq!(prefix, whole);
    }
    let split = receive(reads.of(stream), usize::MAX);
    assert_eq!(split, whole, "depends on the read boundaries");
    // The discarding receiver takes over after the first read, as when the limit is hit.
    let discarded = receive(reads.of(stream), 1);
    assert_eq!(
        (discarded.consumed, discarded.done),
        (whole.consumed, whole.done),
        "the discarding receiver ends elsewhere"
    );
});

//! DATA content, fed to the receiver in reads of any size: the result must not depend on
//! the read boundaries, and the receiver must stop at the end of data without reading a
//! byte of what the client pipelined after it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use posthorn::smtp::session::data_receiver;
use smtp_proto::request::receiver::DummyDataReceiver;

/// What the receiver made of a stream.
#[derive(Debug, PartialEq)]
struct Received {
    message: Vec<u8>,
    /// Bytes taken from the stream; the rest is the next command.
    consumed: usize,
    done: bool,
}

/// The session's DATA state (src/smtp/session.rs): each read goes to the receiver; from
/// read number `discard_from` on, the message is over the size limit and the rest goes
/// to the discarding receiver, which must find the same end.
fn receive<'a>(reads: impl Iterator<Item = &'a [u8]>, discard_from: usize) -> Received {
    let mut receiver = data_receiver();
    let mut discard: Option<DummyDataReceiver> = None;
    let mut message = Vec::new();
    let mut consumed = 0;
    for (n, read) in reads.enumerate() {
        let mut bytes = read.iter();
        if n == discard_from {
            discard = Some(DummyDataReceiver::new_data(&receiver));
        }
        let done = match &mut discard {
            Some(discard) => discard.ingest(&mut bytes),
            None => receiver.ingest(&mut bytes, &mut message),
        };
        consumed += read.len() - bytes.as_slice().len();
        if done {
            return Received {
                message,
                consumed,
                done,
            };
        }
        assert!(
            bytes.as_slice().is_empty(),
            "stopped before the end of a read"
        );
    }
    Received {
        message,
        consumed,
        done: false,
    }
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
    assert!(whole.message.len() <= whole.consumed);
    if let Some(end) = end_of_data(stream) {
        assert!(
            whole.done && whole.consumed <= end,
            "read past the end of data at {end}: {whole:?}"
        );
    }
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

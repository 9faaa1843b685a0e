//! A BDAT chunk, fed to the receiver in reads of any size: it takes exactly the announced
//! number of bytes, unchanged, and leaves the rest for the next command. The chunk size
//! is the first two bytes of the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smtp_proto::request::receiver::{BdatReceiver, DummyDataReceiver};

/// The session's BDAT state (src/smtp/session.rs) or, with `discard`, the receiver that
/// drops a refused chunk; returns the chunk and the bytes taken from the stream.
fn receive<'a>(
    size: usize,
    reads: impl Iterator<Item = &'a [u8]>,
    discard: bool,
) -> (Vec<u8>, usize, bool) {
    let mut receiver = BdatReceiver::new(size, true);
    let mut discarding = DummyDataReceiver::new_bdat(size);
    let mut chunk = Vec::new();
    let mut consumed = 0;
    if size == 0 {
        // The session answers `BDAT 0` without a receiver.
        return (chunk, 0, true);
    }
    for read in reads {
        let mut bytes = read.iter();
        let done = if discard {
            discarding.ingest(&mut bytes)
        } else {
            receiver.ingest(&mut bytes, &mut chunk)
        };
        consumed += read.len() - bytes.as_slice().len();
        if done {
            return (chunk, consumed, true);
        }
        assert!(
            bytes.as_slice().is_empty(),
            "stopped before the end of a read"
        );
    }
    (chunk, consumed, false)
}

fuzz_target!(|input: &[u8]| {
    let (reads, stream) = posthorn_fuzz::reads(input);
    let Some((size, stream)) = stream.split_first_chunk::<2>() else {
        return;
    };
    let size = usize::from(u16::from_be_bytes(*size));
    let expected = size.min(stream.len());
    let (chunk, consumed, done) = receive(size, reads.of(stream), false);
    assert_eq!(consumed, expected);
    assert_eq!(chunk, stream[..expected]);
    assert_eq!(done, expected == size);
    let (_, consumed, done) = receive(size, reads.of(stream), true);
    assert_eq!((consumed, done), (expected, expected == size));
});

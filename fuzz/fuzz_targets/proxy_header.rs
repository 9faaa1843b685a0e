//! A PROXY protocol header (v1 or v2) at the start of a connection from a trusted load
//! balancer: whatever the bytes, the reader stops at the end of the header, never past
//! it, so the session sees the client's first byte; and a v1 line is at most 107 bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use posthorn::smtp::proxy::read_header;

/// The header's outcome, and the bytes the reader took.
fn read(input: &[u8]) -> (String, usize) {
    let mut rest = input;
    let outcome = futures::executor::block_on(read_header(&mut rest));
    (format!("{outcome:?}"), input.len() - rest.len())
}

fuzz_target!(|input: &[u8]| {
    let (outcome, taken) = read(input);
    if input.starts_with(b"PROXY ") {
        assert!(taken <= 107, "v1 read {taken} bytes");
    }
    if outcome.starts_with("Ok") {
        // The header alone gives the same answer: nothing after it was looked at.
        assert_eq!(read(&input[..taken]), (outcome, taken));
    }
});

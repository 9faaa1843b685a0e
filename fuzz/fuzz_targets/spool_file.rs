//! Queue files and their status sidecars as the spool reads them after a crash or on a
//! damaged disk: any bytes are read or refused with an error, never a panic, and the
//! message found lies inside the file. The first two bytes give the sidecar's length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use posthorn::spool::format::{apply_status, read_prefix};

fuzz_target!(|input: &[u8]| {
    let Some((len, rest)) = input.split_first_chunk::<2>() else {
        return;
    };
    let len = usize::from(u16::from_be_bytes(*len)).min(rest.len());
    let (sidecar, file) = rest.split_at(len);
    let Ok((mut envelope, start)) = read_prefix(&mut &file[..], file.len() as u64) else {
        return;
    };
    assert!(start <= file.len() as u64);
    apply_status(&mut envelope, sidecar);
});

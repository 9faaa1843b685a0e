//! One command line as the session parses it. Whatever the bytes, parsing must not panic,
//! and what the session keeps from a command (the HELO name, addresses, DSN parameters)
//! must hold no control characters: they go into `Received:` headers, the queue file and
//! the commands sent to the next hop.
#![no_main]

use libfuzzer_sys::fuzz_target;
use posthorn::smtp::command::parse_command;
use smtp_proto::Request;

fn check(what: &str, value: &str) {
    assert!(
        !value.chars().any(char::is_control),
        "{what} holds a control character: {value:?}"
    );
}

fuzz_target!(|input: &[u8]| {
    // The session hands over one line, up to its LF, of at most 4096 bytes.
    let mut line = input.to_vec();
    match input.iter().position(|&b| b == b'\n') {
        Some(end) => line.truncate(end + 1),
        None => line.extend_from_slice(b"\r\n"),
    }
    if line.len() > 4096 {
        return;
    }
    let Ok(request) = parse_command(&line) else {
        return;
    };
    match request {
        Request::Ehlo { host } | Request::Helo { host } => check("HELO name", &host),
        Request::Mail { from } => {
            check("sender", &from.address);
            if let Some(envid) = &from.env_id {
                check("ENVID", envid);
            }
        }
        Request::Rcpt { to } => {
            check("recipient", &to.address);
            if let Some(orcpt) = &to.orcpt {
                check("ORCPT", orcpt);
            }
        }
        _ => {}
    }
});

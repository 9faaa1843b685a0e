//! Client lines of the Dovecot auth protocol, as the auth socket parses them, with the
//! SASL data they carry decoded the way the socket does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use posthorn::auth::dovecot::{Mechanism, Request, escape, parse, unescape};
use posthorn::auth::sasl;

fuzz_target!(|input: &[u8]| {
    // The socket reads up to LF and decodes lossily.
    let line = String::from_utf8_lossy(input);
    let line = line.split('\n').next().unwrap_or_default();
    match parse(line) {
        Some(Request::Auth(request)) => {
            assert!(!request.id.contains('\t'));
            if let Some(response) = request.response {
                match request.mechanism {
                    Some(Mechanism::Plain) => drop(sasl::decode_plain(response.as_bytes())),
                    Some(Mechanism::Login) => {
                        drop(sasl::decode_login_username(response.as_bytes()))
                    }
                    None => {}
                }
            }
        }
        Some(Request::Cont { id, data }) => {
            assert!(!id.contains('\t') && !data.contains('\t'));
            drop(sasl::decode_plain(data.as_bytes()));
            drop(sasl::decode_login_password(data.as_bytes()));
        }
        Some(Request::Version { .. } | Request::Cpid) | None => {}
    }
    // What the socket writes back (a login, a user name) must stay one field.
    let escaped = escape(line);
    assert!(!escaped.contains(['\t', '\n', '\r', '\0']));
    assert_eq!(unescape(&escaped), line);
});

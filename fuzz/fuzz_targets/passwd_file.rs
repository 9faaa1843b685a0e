//! The passwd-file parser (and the password-hash parsers it calls): any file loads
//! without panicking, and every line with a usable user name makes that user exist,
//! whatever its password field holds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use posthorn::auth::userdb::{UserDb, canonical_login};

fuzz_target!(|input: &[u8]| {
    let Some((&flags, text)) = input.split_first() else {
        return;
    };
    let db = UserDb::parse(text, "fuzz", flags & 1 != 0, "example.com", 4);
    for line in text.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        if line.trim().starts_with('#') {
            continue;
        }
        let Some((user, _)) = line.split_once(':') else {
            continue;
        };
        if !user.is_empty() && !user.chars().any(|c| c.is_whitespace() || c.is_control()) {
            let user = canonical_login(user, "example.com");
            assert!(db.user_exists(&user), "{user:?} is missing");
        }
    }
});

//! SASL PLAIN and LOGIN responses as the SMTP session and the Dovecot auth socket decode
//! them: no panic, and whatever decodes is a well-formed message of its mechanism that
//! encodes back to the same credentials.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use libfuzzer_sys::fuzz_target;
use posthorn::auth::sasl::{
    decode_base64_line, decode_login_password, decode_login_username, decode_plain,
};

fuzz_target!(|line: &[u8]| {
    if let Ok(creds) = decode_plain(line) {
        assert!(!creds.authcid.is_empty() && !creds.password.as_bytes().is_empty());
        assert!(!creds.authcid.contains('\0') && !creds.authzid.contains('\0'));
        assert!(!creds.password.as_bytes().contains(&0));
        let mut message = format!("{}\0{}\0", creds.authzid, creds.authcid).into_bytes();
        message.extend_from_slice(creds.password.as_bytes());
        assert_eq!(decode_base64_line(line).as_deref(), Ok(&message[..]));
        assert_eq!(
            decode_plain(STANDARD.encode(&message).as_bytes()),
            Ok(creds)
        );
    }
    if let Ok(user) = decode_login_username(line) {
        assert!(!user.is_empty() && !user.contains('\0'));
        assert_eq!(decode_base64_line(line).as_deref(), Ok(user.as_bytes()));
    }
    if let Ok(password) = decode_login_password(line) {
        assert!(!password.as_bytes().is_empty());
        assert_eq!(decode_base64_line(line).as_deref(), Ok(password.as_bytes()));
    }
});

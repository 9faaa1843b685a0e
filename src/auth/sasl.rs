//! Decoding of the SASL PLAIN (RFC 4616) and LOGIN exchanges as they arrive in SMTP AUTH
//! (RFC 4954): base64 lines, `=` for an empty initial response, `*` to cancel.

use std::fmt;

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// `334` challenges of the LOGIN mechanism: "Username:" and "Password:" in base64.
pub const LOGIN_USERNAME_CHALLENGE: &str = "VXNlcm5hbWU6";
pub const LOGIN_PASSWORD_CHALLENGE: &str = "UGFzc3dvcmQ6";

/// Some clients leave out the `=` padding; accept both.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    /// Not base64: answer `501 5.5.2 Cannot decode response`.
    #[error("cannot decode response")]
    InvalidBase64,
    /// The client sent `*`: answer `501 5.7.0 Authentication aborted`.
    #[error("authentication aborted by the client")]
    Cancelled,
    /// Decoded, but not a valid message of the mechanism: answer `535 5.7.8`.
    #[error("malformed {0}")]
    Malformed(&'static str),
}

impl SaslError {
    /// The SMTP reply (without CRLF) for this error, in Postfix's words.
    pub fn smtp_reply(self) -> &'static str {
        match self {
            SaslError::InvalidBase64 => "501 5.5.2 Cannot decode response",
            SaslError::Cancelled => "501 5.7.0 Authentication aborted",
            SaslError::Malformed(_) => "535 5.7.8 Error: authentication failed: malformed response",
        }
    }
}

/// A password as received; its Debug output is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(Vec<u8>);

impl Password {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// A decoded PLAIN message. `authzid` is empty when the client acts as itself.
#[derive(Clone, PartialEq, Eq)]
pub struct PlainCredentials {
    pub authzid: String,
    pub authcid: String,
    pub password: Password,
}

impl fmt::Debug for PlainCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlainCredentials")
            .field("authzid", &self.authzid)
            .field("authcid", &self.authcid)
            .field("password", &self.password)
            .finish()
    }
}

/// Decodes one client line of an AUTH exchange (the initial response or the answer to a
/// `334`). Surrounding whitespace and CRLF are ignored; `=` (RFC 4954's empty initial
/// response) and an empty line give no bytes; `*` is [`SaslError::Cancelled`].
pub fn decode_base64_line(line: &[u8]) -> Result<Vec<u8>, SaslError> {
    let line = line.trim_ascii();
    match line {
        b"*" => Err(SaslError::Cancelled),
        b"=" => Ok(Vec::new()),
        _ => BASE64.decode(line).map_err(|_| SaslError::InvalidBase64),
    }
}

/// Decodes a PLAIN message, `[authzid] NUL authcid NUL password`, from its base64 line.
pub fn decode_plain(b64: &[u8]) -> Result<PlainCredentials, SaslError> {
    parse_plain(&decode_base64_line(b64)?)
}

fn parse_plain(message: &[u8]) -> Result<PlainCredentials, SaslError> {
    let malformed = SaslError::Malformed("PLAIN message");
    let mut parts = message.splitn(3, |&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed);
    };
    if authcid.is_empty() || password.is_empty() || password.contains(&0) {
        return Err(malformed);
    }
    let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).map_err(|_| malformed);
    Ok(PlainCredentials {
        authzid: text(authzid)?,
        authcid: text(authcid)?,
        password: Password(password.to_vec()),
    })
}

/// Decodes the LOGIN user name (answer to [`LOGIN_USERNAME_CHALLENGE`], or the initial
/// response of `AUTH LOGIN <b64>`).
pub fn decode_login_username(line: &[u8]) -> Result<String, SaslError> {
    let bytes = decode_base64_line(line)?;
    if bytes.is_empty() || bytes.contains(&0) {
        return Err(SaslError::Malformed("LOGIN user name"));
    }
    String::from_utf8(bytes).map_err(|_| SaslError::Malformed("LOGIN user name"))
}

/// Decodes the LOGIN password (answer to [`LOGIN_PASSWORD_CHALLENGE`]).
pub fn decode_login_password(line: &[u8]) -> Result<Password, SaslError> {
    let bytes = decode_base64_line(line)?;
    if bytes.is_empty() {
        return Err(SaslError::Malformed("LOGIN password"));
    }
    Ok(Password(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .encode(bytes)
            .into_bytes()
    }

    #[test]
    fn login_challenges_decode_to_the_prompts() {
        assert_eq!(
            decode_base64_line(LOGIN_USERNAME_CHALLENGE.as_bytes()).unwrap(),
            b"Username:"
        );
        assert_eq!(
            decode_base64_line(LOGIN_PASSWORD_CHALLENGE.as_bytes()).unwrap(),
            b"Password:"
        );
    }

    #[test]
    fn decodes_plain_with_and_without_authzid() {
        // swaks: AUTH PLAIN AGFsaWNlAHNlY3JldA== is "\0alice\0secret".
        let creds = decode_plain(b"AGFsaWNlAHNlY3JldA==\r\n").unwrap();
        assert_eq!(creds.authzid, "");
        assert_eq!(creds.authcid, "alice");
        assert_eq!(creds.password.as_bytes(), b"secret");

        let creds = decode_plain(&b64(b"admin@example.com\0bob@example.com\0p\xc3\xa4ss")).unwrap();
        assert_eq!(creds.authzid, "admin@example.com");
        assert_eq!(creds.authcid, "bob@example.com");
        assert_eq!(creds.password.as_bytes(), "päss".as_bytes());
    }

    #[test]
    fn accepts_missing_padding() {
        let creds = decode_plain(b"AGFsaWNlAHNlY3JldA").unwrap();
        assert_eq!(creds.authcid, "alice");
    }

    #[test]
    fn tells_bad_base64_from_bad_plain() {
        assert_eq!(
            decode_plain(b"not base64!").unwrap_err(),
            SaslError::InvalidBase64
        );
        assert_eq!(decode_plain(b"*").unwrap_err(), SaslError::Cancelled);
        let malformed = [
            &b""[..],
            b"alice\0secret",
            b"\0\0secret",
            b"\0alice\0",
            b"\0alice\0sec\0ret",
            b"\0al\xffice\0secret",
        ];
        for message in malformed {
            let err = decode_plain(&b64(message)).unwrap_err();
            assert!(
                matches!(err, SaslError::Malformed(_)),
                "{message:?}: {err:?}"
            );
            assert!(err.smtp_reply().starts_with("535 5.7.8 "));
        }
        // `=` is an empty initial response: for PLAIN that is a malformed message.
        assert!(matches!(
            decode_plain(b"=").unwrap_err(),
            SaslError::Malformed(_)
        ));
        assert_eq!(decode_base64_line(b"=").unwrap(), b"");
        assert_eq!(
            SaslError::InvalidBase64.smtp_reply(),
            "501 5.5.2 Cannot decode response"
        );
    }

    #[test]
    fn login_steps() {
        assert_eq!(decode_login_username(b"YWxpY2U=").unwrap(), "alice");
        assert_eq!(
            decode_login_password(b"c2VjcmV0").unwrap().as_bytes(),
            b"secret"
        );
        assert!(matches!(
            decode_login_username(b"").unwrap_err(),
            SaslError::Malformed(_)
        ));
        assert!(matches!(
            decode_login_password(b"=").unwrap_err(),
            SaslError::Malformed(_)
        ));
        assert_eq!(
            decode_login_password(b"*").unwrap_err(),
            SaslError::Cancelled
        );
    }

    #[test]
    fn debug_redacts_the_password() {
        let creds = decode_plain(&b64(b"\0alice\0hunter2")).unwrap();
        let shown = format!("{creds:?}");
        assert!(
            shown.contains("alice") && !shown.contains("hunter2"),
            "{shown}"
        );
        assert_eq!(format!("{:?}", creds.password), "Password(<redacted>)");
    }
}

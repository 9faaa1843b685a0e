//! One SMTP command line parsed as the session takes it: smtp-proto's parser, plus the
//! paths it refuses that Postfix accepts (address literals, `RCPT TO:<bob>`), and no
//! control characters in what is stored or sent on.

use smtp_proto::{Error as ParseError, Request};

use super::path;
use super::printable;

/// Parses one command line (LF included) as the session does.
pub fn parse_command(line: &[u8]) -> Result<Request<String>, ParseError> {
    let parsed = match Request::parse(&mut line.iter()).map(Request::into_owned) {
        // smtp-proto reads both `<>` and `<postmaster>` as "".
        Ok(Request::Rcpt { to }) if to.address.is_empty() => {
            path::reparse(line, ParseError::InvalidRecipientAddress)
        }
        // Address literals and `RCPT TO:<bob>`, which smtp-proto refuses.
        Err(err @ (ParseError::InvalidSenderAddress | ParseError::InvalidRecipientAddress)) => {
            path::reparse(line, err)
        }
        parsed => parsed,
    };
    match parsed {
        // Kept for the Received header and the queue file: as Postfix, `?` for controls.
        Ok(Request::Ehlo { host }) => Ok(Request::Ehlo {
            host: printable(&host),
        }),
        Ok(Request::Helo { host }) => Ok(Request::Helo {
            host: printable(&host),
        }),
        // Addresses and DSN parameters reach the next hop: no control characters (the
        // xtext of ORCPT and ENVID may decode to any byte).
        Ok(Request::Mail { from }) if has_control(&from.address) => {
            Err(ParseError::InvalidSenderAddress)
        }
        Ok(Request::Mail { from }) if from.env_id.as_deref().is_some_and(has_control) => {
            Err(ParseError::InvalidParameter { param: "ENVID" })
        }
        Ok(Request::Rcpt { to }) if has_control(&to.address) => {
            Err(ParseError::InvalidRecipientAddress)
        }
        Ok(Request::Rcpt { to }) if to.orcpt.as_deref().is_some_and(has_control) => {
            Err(ParseError::InvalidParameter { param: "ORCPT" })
        }
        parsed => parsed,
    }
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_command_takes_a_bare_local_part() {
        let Ok(Request::Rcpt { to }) = parse_command(b"RCPT TO:<bob>\r\n") else {
            panic!("RCPT");
        };
        assert_eq!(to.address, "bob");
        assert_eq!(
            parse_command(b"RCPT TO:<b ob>\r\n").unwrap_err(),
            ParseError::InvalidRecipientAddress
        );
    }

    #[test]
    fn parse_command_neuters_control_characters_in_the_helo_name() {
        // Found by fuzz/fuzz_targets/smtp_command.rs.
        let line = b"HELO CP\x01\x01\0T.\xb0.2.1]\r\n";
        let Ok(Request::Helo { host }) = parse_command(line) else {
            panic!("HELO");
        };
        assert_eq!(host, "CP???T.\u{fffd}.2.1]");
        let Ok(Request::Ehlo { host }) = parse_command(b"EHLO a\x1bb\r\n") else {
            panic!("EHLO");
        };
        assert_eq!(host, "a?b");
    }

    #[test]
    fn parse_command_refuses_control_characters_in_addresses_and_dsn_parameters() {
        // Found by fuzz/fuzz_targets/smtp_command.rs: a DEL in ORCPT; and a CR as xtext.
        for line in [
            &b"RCPT TO:<bob@example.com> ORCPT=rfc822;bob@exa\rmple.c\x7fm\r\n"[..],
            b"RCPT TO:<bob@example.com> ORCPT=rfc822;bob@exa+0Dmple.com\r\n",
        ] {
            assert_eq!(
                parse_command(line).unwrap_err(),
                ParseError::InvalidParameter { param: "ORCPT" }
            );
        }
        assert_eq!(
            parse_command(b"MAIL FROM:<a@example.com> ENVID=a+0Ab\r\n").unwrap_err(),
            ParseError::InvalidParameter { param: "ENVID" }
        );
        assert!(parse_command(b"RCPT TO:<bob@example.com> ORCPT=rfc822;b+2Bob@x.y\r\n").is_ok());
    }
}

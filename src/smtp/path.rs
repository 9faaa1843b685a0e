//! MAIL FROM and RCPT TO paths that smtp-proto refuses but Postfix accepts: a domain that
//! is an address literal (RFC 5321 §4.1.3: `alice@[192.0.2.1]`, `alice@[IPv6:2001:db8::1]`,
//! also in a source route, which is then dropped), and in RCPT a local part alone (`<bob>`,
//! `<postmaster>`, which smtp-proto reads as the null path).
//!
//! smtp-proto stays the one parser: the path is rewritten into one it accepts (each literal
//! replaced by a placeholder domain of the same length, so that its length limit still
//! holds; `@x` added to a local part), the line is parsed with its parameters as usual,
//! and the parsed address gets back what was replaced.

use smtp_proto::{Error as ParseError, Request};

/// Postfix's room for the text between the brackets (`MAI_HOSTADDR_STRSIZE`, that is
/// `INET6_ADDRSTRLEN` with its NUL): 45 bytes, `IPv6:` included.
const MAX_LITERAL_TEXT: usize = 45;

/// Parses a MAIL or RCPT line again after smtp-proto refused its path with `refused`
/// (`InvalidSenderAddress` or `InvalidRecipientAddress`; a RCPT read as the null path
/// counts as the latter). A local part alone is a recipient only. Paths that Postfix
/// refuses too keep `refused`; parameters are then checked as for any other path.
pub fn reparse(line: &[u8], refused: ParseError) -> Result<Request<String>, ParseError> {
    let recipient = refused == ParseError::InvalidRecipientAddress;
    let Some((open, close)) = span(line) else {
        return Err(refused);
    };
    let Some(rewrite) = Rewrite::new(&line[open + 1..close], recipient) else {
        return Err(refused);
    };
    let mut fixed = Vec::with_capacity(line.len() + 2);
    fixed.extend_from_slice(&line[..=open]);
    fixed.extend_from_slice(&rewrite.path);
    fixed.extend_from_slice(&line[close..]);
    match Request::parse(&mut fixed.iter()).map(Request::into_owned)? {
        Request::Mail { mut from } if !recipient => {
            from.address = rewrite.restore(&from.address).ok_or(refused)?;
            Ok(Request::Mail { from })
        }
        Request::Rcpt { mut to } if recipient => {
            to.address = rewrite.restore(&to.address).ok_or(refused)?;
            Ok(Request::Rcpt { to })
        }
        _ => Err(refused),
    }
}

/// Where the path of a MAIL or RCPT line is: the positions of its `<` and of the `>` that
/// closes it, skipping quoted strings (so `"a>b"@example.com` is one path).
pub fn span(line: &[u8]) -> Option<(usize, usize)> {
    let open = line.iter().position(|&b| b == b'<')?;
    let (mut quoted, mut escaped) = (false, false);
    for (i, &b) in line.iter().enumerate().skip(open + 1) {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b'>' if !quoted => return Some((open, i)),
            _ => {}
        }
    }
    None
}

/// A path smtp-proto accepts, and how to turn the address it parses back into the one the
/// client gave: `added` at its end is replaced by `original`.
struct Rewrite {
    path: Vec<u8>,
    added: String,
    original: String,
}

impl Rewrite {
    fn new(path: &[u8], recipient: bool) -> Option<Rewrite> {
        let mut rewrite = Rewrite {
            path: path.to_vec(),
            added: String::new(),
            original: String::new(),
        };
        let literals = literals(path);
        match literals.last() {
            // The domain: only a valid literal, as Postfix's trivial-rewrite checks it.
            Some(&(start, end)) if end == path.len() => {
                let literal = std::str::from_utf8(&path[start..end]).ok()?;
                if !valid_literal(literal) {
                    return None;
                }
                rewrite.added = "x".repeat(literal.len());
                rewrite.original = literal.to_string();
            }
            // Only in a source route, which smtp-proto drops as Postfix does, unchecked.
            Some(_) => {}
            None if recipient => {
                let local = bare_local_part(path)?;
                rewrite.path = format!("{local}@x").into_bytes();
                rewrite.added = "@x".into();
                return Some(rewrite);
            }
            None => return None,
        }
        for &(start, end) in &literals {
            rewrite.path[start..end].fill(b'x');
        }
        Some(rewrite)
    }

    fn restore(&self, address: &str) -> Option<String> {
        let kept = address.strip_suffix(self.added.as_str())?;
        Some(format!("{kept}{}", self.original))
    }
}

/// The address literals in a path: `[...]` after an `@` outside quotes, ending the path or
/// a source-route domain (`:` or `,` follows). Anything else stays for smtp-proto to refuse.
fn literals(path: &[u8]) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let (mut quoted, mut escaped) = (false, false);
    let mut i = 0;
    while i < path.len() {
        match path[i] {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b'@' if !quoted && path.get(i + 1) == Some(&b'[') => {
                let start = i + 1;
                let Some(len) = path[start..].iter().position(|&b| b == b']') else {
                    break;
                };
                let end = start + len + 1;
                if matches!(path.get(end), None | Some(b':' | b',')) {
                    found.push((start, end));
                }
                i = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// `<bob>`: a local part alone, when that is all there is (valid syntax, which
/// reject_non_fqdn_recipient answers with 504, and postmaster).
fn bare_local_part(path: &[u8]) -> Option<&str> {
    let local = std::str::from_utf8(path).ok()?;
    let valid = !local.is_empty()
        && local.len() <= 64
        && local
            .chars()
            .all(|c| !c.is_control() && !c.is_whitespace() && !"<>@,;:\\\"[]()".contains(c));
    valid.then_some(local)
}

/// Postfix's `valid_mailhost_literal`: `[` dotted quad `]` or `[IPv6:` address `]` (the tag
/// in any case), with at most 45 bytes between the brackets.
fn valid_literal(literal: &str) -> bool {
    let Some(text) = literal.strip_prefix('[').and_then(|l| l.strip_suffix(']')) else {
        return false;
    };
    if text.len() > MAX_LITERAL_TEXT {
        return false;
    }
    match text.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => valid_ipv6(&text.as_bytes()[5..]),
        _ => valid_ipv4(text.as_bytes()),
    }
}

/// Postfix's `valid_ipv4_hostaddr`: four decimal octets up to 255, leading zeros allowed;
/// a first octet of 0 only in an address of zeros (`0.0.0.0`).
fn valid_ipv4(addr: &[u8]) -> bool {
    let octet = |field: &[u8]| -> Option<u32> {
        if field.is_empty() {
            return None;
        }
        field.iter().try_fold(0u32, |value, &b| {
            let value = value * 10
                + u32::from(b)
                    .checked_sub(u32::from(b'0'))
                    .filter(|d| *d < 10)?;
            (value <= 255).then_some(value)
        })
    };
    let fields: Vec<&[u8]> = addr.split(|&b| b == b'.').collect();
    fields.len() == 4
        && fields.iter().all(|f| octet(f).is_some())
        && (octet(fields[0]) != Some(0) || addr.iter().all(|b| b"0.".contains(b)))
}

/// Postfix's `valid_ipv6_hostaddr`, step by step: hex fields of up to four digits between
/// colons, at most one `::`, at most eight fields, and optionally a dotted quad in the last
/// two. Postfix does not insist on eight fields without `::` (`1:2:3` passes), nor do we.
fn valid_ipv6(addr: &[u8]) -> bool {
    let (mut field, mut null_field, mut len) = (0, 0, 0);
    let mut i = 0;
    loop {
        match addr.get(i) {
            None => return field >= 2 && (len > 0 || null_field == field - 1),
            Some(b'.') => return (2..=6).contains(&field) && valid_ipv4(&addr[i - len..]),
            Some(b':') => {
                // A leading single colon: `:1::`.
                if field == 0 && len == 0 && addr.get(i + 1).is_some_and(u8::is_ascii_alphanumeric)
                {
                    return false;
                }
                field += 1;
                if field > 7 {
                    return false;
                }
                i += 1;
                len = 0;
                if addr.get(i) == Some(&b':') {
                    if null_field > 0 {
                        return false;
                    }
                    null_field = field;
                }
            }
            Some(_) => {
                len = addr[i..]
                    .iter()
                    .take_while(|b| b.is_ascii_hexdigit())
                    .count();
                if !(1..=4).contains(&len) {
                    return false;
                }
                i += len;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use smtp_proto::{MAIL_BODY_8BITMIME, MailFrom, RCPT_NOTIFY_FAILURE, RCPT_NOTIFY_NEVER};
    use smtp_proto::{RCPT_NOTIFY_SUCCESS, RcptTo};

    use super::*;

    const SENDER: ParseError = ParseError::InvalidSenderAddress;
    const RECIPIENT: ParseError = ParseError::InvalidRecipientAddress;

    /// What the session gets for `line`: smtp-proto's reading, or ours where it refuses.
    fn parse(line: &str) -> Result<Request<String>, ParseError> {
        let line = format!("{line}\r\n");
        match Request::parse(&mut line.as_bytes().iter()).map(Request::into_owned) {
            Ok(Request::Rcpt { to }) if to.address.is_empty() => {
                reparse(line.as_bytes(), RECIPIENT)
            }
            Err(err @ (SENDER | RECIPIENT)) => reparse(line.as_bytes(), err),
            parsed => parsed,
        }
    }

    fn mail(line: &str) -> MailFrom<String> {
        match parse(line) {
            Ok(Request::Mail { from }) => from,
            other => panic!("{line}: {other:?}"),
        }
    }

    fn rcpt(line: &str) -> RcptTo<String> {
        match parse(line) {
            Ok(Request::Rcpt { to }) => to,
            other => panic!("{line}: {other:?}"),
        }
    }

    /// Each answer as Postfix 3.7.11 gave it (250 or 501) to `MAIL FROM:<a@LITERAL>`.
    #[test]
    fn literals_postfix_accepts() {
        let accepted = [
            "[127.0.0.1]",
            "[0.0.0.0]",
            "[00.0.0.0]",
            "[01.2.3.4]",
            "[0001.2.3.4]",
            "[255.255.255.255]",
            "[IPv6:2001:db8::1]",
            "[ipv6:2001:DB8::1]",
            "[IPv6:::]",
            "[IPv6:::1.2.3.4]",
            "[IPv6:::ffff:1.2.3.4]",
            "[IPv6:1:2:3]",
            "[IPv6:1:2:3:4:5:6:7]",
            "[IPv6:1:2:3:4:5:6:7:8]",
            "[IPv6:1:2:3:4:5:6:1.2.3.4]",
            // 45 bytes between the brackets.
            "[IPv6:ffff:ffff:ffff:ffff:ffff:ffff:255.25.3.4]",
        ];
        let refused = [
            "[]",
            "[foo]",
            "[999.1.1.1]",
            "[256.1.1.1]",
            "[1.2.3]",
            "[1.2.3.4.]",
            "[1.2.3.4.5]",
            "[0.1.2.3]",
            "[0.0.0.1]",
            "[[1.2.3.4]",
            "[2001:db8::1]",
            "[IPv6:]",
            "[IPv6::]",
            "[IPv6::1]",
            "[IPv6:1.2.3.4]",
            "[IPv6:g::1]",
            "[IPv6:12345::1]",
            "[IPv6:1::2::3]",
            "[IPv6:1:2:]",
            "[IPv6:1:2:3:4:5:6:7::]",
            "[IPv6:1:2:3:4:5:6:7:8:]",
            "[IPv6:1:2:3:4:5:6:7:8:9]",
            "[IPv6:1:2:3:4:5:6:7:1.2.3.4]",
            // 46 bytes between the brackets.
            "[IPv6:ffff:ffff:ffff:ffff:ffff:ffff:255.255.3.4]",
            // The literal must end the domain.
            "[1.2.3.4]]",
            "[1.2.3.4]x",
            "[1.2.3.4]:b@example.com",
        ];
        for literal in accepted {
            assert_eq!(
                mail(&format!("MAIL FROM:<a@{literal}>")).address,
                format!("a@{literal}")
            );
        }
        for literal in refused {
            let line = format!("MAIL FROM:<a@{literal}>");
            assert_eq!(parse(&line), Err(SENDER), "{line}");
            let line = format!("RCPT TO:<a@{literal}>");
            assert_eq!(parse(&line), Err(RECIPIENT), "{line}");
        }
    }

    /// A literal changes nothing else: the parameters read as with a domain name.
    #[test]
    fn parameters_as_with_a_domain_name() {
        let params = "SIZE=1000 BODY=8BITMIME RET=HDRS ENVID=QQ314159";
        let literal = mail(&format!("MAIL FROM:<alice@[127.0.0.1]> {params}"));
        let name = mail(&format!("MAIL FROM:<alice@example.com> {params}"));
        assert_eq!(literal.address, "alice@[127.0.0.1]");
        assert_eq!(
            (literal.flags, literal.size, &literal.env_id),
            (name.flags, name.size, &name.env_id)
        );
        assert_ne!(literal.flags & MAIL_BODY_8BITMIME, 0);
        assert_eq!(literal.size, 1000);

        let to = rcpt(
            "RCPT TO:<bob@[IPv6:2001:db8::1]> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@[IPv6:2001:db8::1]",
        );
        assert_eq!(to.address, "bob@[IPv6:2001:db8::1]");
        assert_eq!(to.flags, RCPT_NOTIFY_SUCCESS | RCPT_NOTIFY_FAILURE);
        assert_eq!(to.orcpt.as_deref(), Some("bob@[IPv6:2001:db8::1]"));

        // A bad parameter after a good literal is refused as after any address...
        assert_eq!(
            parse("MAIL FROM:<alice@[127.0.0.1]> SIZE=abc"),
            Err(ParseError::InvalidParameter { param: "SIZE" })
        );
        assert!(matches!(
            parse("RCPT TO:<bob@[192.0.2.1]> FOO=bar"),
            Err(ParseError::UnsupportedParameter { .. })
        ));
        // ...but a bad literal is found first, as Postfix checks the address first.
        assert_eq!(parse("MAIL FROM:<alice@[foo]> SIZE=abc"), Err(SENDER));
    }

    #[test]
    fn the_address_length_limit_counts_the_literal() {
        let domain = "@[192.0.2.1]";
        let longest = format!("{}{domain}", "a".repeat(256 - domain.len()));
        assert_eq!(mail(&format!("MAIL FROM:<{longest}>")).address, longest);
        assert_eq!(parse(&format!("MAIL FROM:<a{longest}>")), Err(SENDER));
    }

    /// nmap's smtp-open-relay forms: the route is dropped, quotes go as smtp-proto
    /// dequotes (Postfix answered each of these with the address shown here).
    #[test]
    fn routes_and_quoted_local_parts() {
        for (path, address) in [
            (
                "@[127.0.0.1]:relaytest@example.net",
                "relaytest@example.net",
            ),
            ("@[foo]:bob@example.net", "bob@example.net"),
            (
                "@[127.0.0.1],@example.org:bob@[192.0.2.1]",
                "bob@[192.0.2.1]",
            ),
            (
                "\"relaytest@example.net\"@[127.0.0.1]",
                "relaytest@example.net@[127.0.0.1]",
            ),
            (
                "relaytest%example.net@[127.0.0.1]",
                "relaytest%example.net@[127.0.0.1]",
            ),
            (
                "example.net!relaytest@[127.0.0.1]",
                "example.net!relaytest@[127.0.0.1]",
            ),
            // What looks like a route inside quotes is part of the local part.
            ("\"@[127.0.0.1]:\"@[192.0.2.1]", "@[127.0.0.1]:@[192.0.2.1]"),
        ] {
            assert_eq!(
                rcpt(&format!("RCPT TO:<{path}>")).address,
                address,
                "{path}"
            );
        }
        // A literal inside quotes is part of the local part, and a local part alone has no
        // quotes.
        assert_eq!(parse("RCPT TO:<\"a@[1.2.3.4]\">"), Err(RECIPIENT));
        // Still one @ in the mailbox, as smtp-proto requires.
        assert_eq!(
            parse("RCPT TO:<relaytest@example.net@[127.0.0.1]>"),
            Err(RECIPIENT)
        );
    }

    #[test]
    fn a_local_part_alone_is_a_recipient_only() {
        let to = rcpt("RCPT TO:<PostMaster> NOTIFY=NEVER");
        assert_eq!(
            (to.address.as_str(), to.flags),
            ("PostMaster", RCPT_NOTIFY_NEVER)
        );
        assert_eq!(rcpt("RCPT TO:<bob>").address, "bob");
        assert!(matches!(
            parse("RCPT TO:<bob> FOO=bar"),
            Err(ParseError::UnsupportedParameter { .. })
        ));
        assert_eq!(parse("RCPT TO:<>"), Err(RECIPIENT));
        assert_eq!(parse("RCPT TO:<bo b>"), Err(RECIPIENT));
        assert_eq!(
            parse(&format!("RCPT TO:<{}>", "b".repeat(65))),
            Err(RECIPIENT)
        );
        assert_eq!(parse("MAIL FROM:<bob>"), Err(SENDER));
    }

    #[test]
    fn span_skips_quoted_strings() {
        assert_eq!(
            span(b"MAIL FROM:<\"a>b\"@example.com> SIZE=1"),
            Some((10, 28))
        );
        assert_eq!(span(b"RCPT TO:<bob"), None);
    }
}

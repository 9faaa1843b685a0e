//! The `Received:` trace header (RFC 5321 §4.4), in Postfix's layout, without naming
//! the software (the banner hides it too).

use std::io::Write;
use std::net::IpAddr;

use super::printable;

/// Postfix `hopcount_limit`: a message with this many `Received:` headers, ours
/// included, is refused as looping (cleanup's check, so ours counts).
pub const HOPCOUNT_LIMIT: usize = 50;

/// The `Received:` headers in the header section of `message` (CRLF or LF lines).
pub fn hops(message: &[u8]) -> usize {
    message
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .take_while(|line| !line.is_empty())
        .filter(|line| {
            line.get(..9)
                .is_some_and(|name| name.eq_ignore_ascii_case(b"received:"))
        })
        .count()
}

pub struct Trace<'a> {
    pub helo: &'a str,
    pub ip: IpAddr,
    /// (protocol version, cipher suite) when the session is encrypted.
    pub tls: Option<(&'a str, &'a str)>,
    pub hostname: &'a str,
    pub authenticated: bool,
    pub esmtp: bool,
    pub id: &'a str,
    /// Named only when there is exactly one, as Postfix does, so Bcc stays private.
    pub single_recipient: Option<&'a str>,
}

impl Trace<'_> {
    /// RFC 3848 protocol keyword.
    fn protocol(&self) -> &'static str {
        match (self.esmtp, self.tls.is_some(), self.authenticated) {
            (false, _, _) => "SMTP",
            (true, false, false) => "ESMTP",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, true, true) => "ESMTPSA",
        }
    }

    /// Appends the header, folded, to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        let date = jiff::fmt::rfc2822::to_string(&jiff::Zoned::now())
            .unwrap_or_else(|_| jiff::Timestamp::now().to_string());
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            "Received: from {} (unknown [{}])\r\n",
            printable(self.helo),
            address_literal(self.ip)
        );
        if let Some((version, cipher)) = self.tls {
            let _ = write!(out, "\t(using {version} with cipher {cipher})\r\n");
        }
        let _ = write!(
            out,
            "\tby {} with {} id {}",
            self.hostname,
            self.protocol(),
            self.id
        );
        if let Some(rcpt) = self.single_recipient {
            let _ = write!(out, "\r\n\tfor <{}>", printable(rcpt));
        }
        let _ = write!(out, "; {date}\r\n");
    }
}

/// RFC 5321 §4.1.3 address literal, as Postfix writes the client: IPv6 gets its tag.
fn address_literal(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("IPv6:{v6}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hops_count_received_headers_of_the_header_section_only() {
        let message = b"Received: from a\r\n\tby b\r\nRECEIVED: from c\r\nX-Received: no\r\n\
                        Subject: received: no\r\n\r\nReceived: in the body\r\n";
        assert_eq!(hops(message), 2);
        assert_eq!(hops(b"Received: x\nreceived: y\n\nReceived: z\n"), 2);
        assert_eq!(hops(b""), 0);
    }

    #[test]
    fn postfix_like_layout() {
        let mut out = Vec::new();
        Trace {
            helo: "client.example\r\nX-Injected: 1",
            ip: "192.0.2.7".parse().unwrap(),
            tls: Some(("TLSv1.3", "TLS13_AES_256_GCM_SHA384")),
            hostname: "mail.example.com",
            authenticated: true,
            esmtp: true,
            id: "4ABCDEF",
            single_recipient: Some("bob@example.net"),
        }
        .write(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("Received: from client.example??X-Injected: 1 (unknown [192.0.2.7])\r\n\t(using TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384)\r\n\tby mail.example.com with ESMTPSA id 4ABCDEF\r\n\tfor <bob@example.net>; "),
            "{text}"
        );
        assert!(text.ends_with("\r\n"));
        assert_eq!(text.matches("\r\n").count(), 4, "{text}");
    }

    #[test]
    fn ipv6_client_is_tagged() {
        let mut out = Vec::new();
        Trace {
            helo: "client.example",
            ip: "2001:db8::7".parse().unwrap(),
            tls: None,
            hostname: "mail.example.com",
            authenticated: false,
            esmtp: true,
            id: "4ABCDEF",
            single_recipient: None,
        }
        .write(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("Received: from client.example (unknown [IPv6:2001:db8::7])\r\n\tby mail.example.com with ESMTP id 4ABCDEF; "),
            "{text}"
        );
    }
}

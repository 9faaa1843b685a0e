//! Delivery status notifications (RFC 3464 inside an RFC 6522 multipart/report), worded
//! as Postfix words them: bounces, delay warnings and success notices to the envelope
//! sender. Pure functions: the queue runner queues what they return as a new message
//! from the null sender `<>` to the original sender, with the original's BODY= and
//! SMTPUTF8 (the report carries the original's 8-bit bytes when it returns it).
//!
//! Each recipient's [`Outcome`] gives its `Status`, and its diagnostic:
//! - an MX host's reply: `Remote-MTA: dns; <name>` and `Diagnostic-Code: smtp; <reply>
//!   (in reply to <command>)`;
//! - a local reason already typed (`smtp; 550 5.1.1 <x>: user unknown`), as it is;
//! - any other reason: `Diagnostic-Code: X-Posthorn; <text>`.
//!
//! mail-builder assembles the MIME structure; every part names its transfer encoding,
//! so each body goes out byte for byte as rendered here.

use std::borrow::Cow;
use std::fmt::Write as _;

use mail_builder::MessageBuilder;
use mail_builder::headers::HeaderType;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::{BodyPart, MimePart};

use super::Reported;
use crate::spool::{BodyType, Cause, Envelope, Notify, Outcome, RemoteKind, Ret, Status};

/// Postfix `bounce_size_limit`: a larger original is returned as its headers only.
pub const MAX_RETURNED_SIZE: usize = 50_000;
/// Longest diagnostic copied into a report field (lines must stay under 998 bytes).
const MAX_FIELD: usize = 900;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Failure,
    /// Unix time until which delivery is retried.
    Delay {
        retry_until: u64,
    },
    Success,
}

/// A bounce for the recipients in `failed` (index into `envelope.recipients`, reason),
/// or None when nobody is to be told: the sender is null (never bounce a bounce), or
/// no listed recipient asked for failure notices (NOTIFY default: FAILURE,DELAY).
/// Returns the whole message (RET=FULL, the default) or its headers (RET=HDRS, or
/// when it is larger than [`MAX_RETURNED_SIZE`], or BINARYMIME).
pub fn failure_report(
    hostname: &str,
    envelope: &Envelope,
    message: &[u8],
    failed: &[Reported],
) -> Option<Vec<u8>> {
    report(Kind::Failure, hostname, envelope, message, failed)
}

/// A delay warning for the recipients in `delayed` that still are being retried until
/// `retry_until` (unix seconds); the original's headers are attached.
pub fn delay_report(
    hostname: &str,
    envelope: &Envelope,
    message: &[u8],
    delayed: &[Reported],
    retry_until: u64,
) -> Option<Vec<u8>> {
    report(
        Kind::Delay { retry_until },
        hostname,
        envelope,
        message,
        delayed,
    )
}

/// A success notice for the recipients in `delivered` (index, where it went) that
/// asked for one with NOTIFY=SUCCESS; the original's headers are attached.
pub fn success_report(
    hostname: &str,
    envelope: &Envelope,
    message: &[u8],
    delivered: &[Reported],
) -> Option<Vec<u8>> {
    report(Kind::Success, hostname, envelope, message, delivered)
}

/// RFC 3461 §4.1: no NOTIFY means FAILURE,DELAY; NEVER means none.
fn wants(kind: Kind, notify: &[Notify]) -> bool {
    if notify.is_empty() {
        return kind != Kind::Success;
    }
    let asked = match kind {
        Kind::Failure => Notify::Failure,
        Kind::Delay { .. } => Notify::Delay,
        Kind::Success => Notify::Success,
    };
    notify.contains(&asked) && !notify.contains(&Notify::Never)
}

/// One recipient's line in the report.
struct Entry<'a> {
    address: &'a str,
    orcpt: Option<&'a str>,
    status: Status,
    remote_mta: Option<&'a str>,
    /// `type; text`
    diagnostic: Option<String>,
    /// What the text part says about it.
    human: String,
}

fn entry<'a>(
    kind: Kind,
    address: &'a str,
    orcpt: Option<&'a str>,
    outcome: &'a Outcome,
) -> Entry<'a> {
    let class = match kind {
        Kind::Failure => 5,
        Kind::Delay { .. } => 4,
        Kind::Success => 2,
    };
    // The class must match the action (RFC 3464 §2.3.4), whatever was recorded.
    let status = Status {
        class,
        ..outcome.status
    };
    let detail = outcome.detail();
    let (remote_mta, diagnostic) = match &outcome.cause {
        Cause::Reply { remote, .. } if remote.kind == RemoteKind::Host => {
            let said = detail.split_once(" said: ").map_or("", |(_, said)| said);
            (Some(remote.name.as_str()), Some(format!("smtp; {said}")))
        }
        _ if kind == Kind::Success => (None, None),
        _ if has_type(&detail) => (None, Some(detail.clone())),
        _ if detail.is_empty() => (None, None),
        _ => (None, Some(format!("X-Posthorn; {detail}"))),
    };
    Entry {
        address,
        orcpt,
        status,
        remote_mta,
        diagnostic,
        human: if detail.is_empty() {
            outcome.status.to_string()
        } else {
            detail
        },
    }
}

/// Starts with a diagnostic-type (`smtp;`, `X-Something;`).
fn has_type(text: &str) -> bool {
    text.split_once(';').is_some_and(|(t, _)| {
        !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    })
}

fn report(
    kind: Kind,
    hostname: &str,
    envelope: &Envelope,
    message: &[u8],
    outcomes: &[Reported],
) -> Option<Vec<u8>> {
    if envelope.mail_from.is_empty() {
        return None;
    }
    let entries: Vec<Entry> = outcomes
        .iter()
        .filter_map(|r| {
            let rcpt = envelope.recipients.get(r.index)?;
            wants(kind, &rcpt.notify)
                .then(|| entry(kind, &rcpt.address, rcpt.orcpt.as_deref(), &r.outcome))
        })
        .collect();
    if entries.is_empty() {
        return None;
    }
    let now = jiff::Zoned::now();
    let report = Report::new(hostname, envelope, message, kind);
    Some(report.render(&entries, &now))
}

/// What of the original is returned, and how the parts are typed.
struct Report<'a> {
    kind: Kind,
    hostname: &'a str,
    envelope: &'a Envelope,
    /// The original or its header section.
    returned: &'a [u8],
    headers_only: bool,
    /// Returned as headers only although the sender asked for all of it.
    truncated: bool,
    /// RFC 6533 types: an SMTPUTF8 message with a non-ASCII address.
    global: bool,
}

impl<'a> Report<'a> {
    fn new(hostname: &'a str, envelope: &'a Envelope, message: &'a [u8], kind: Kind) -> Self {
        let full_asked = kind == Kind::Failure && envelope.ret != Some(Ret::Hdrs);
        let too_big =
            message.len() > MAX_RETURNED_SIZE || envelope.body == Some(BodyType::BinaryMime);
        let headers_only = !full_asked || too_big;
        let returned = if headers_only {
            header_section(message)
        } else {
            message
        };
        let global = envelope.smtputf8
            && (!envelope.mail_from.is_ascii()
                || envelope.recipients.iter().any(|r| !r.address.is_ascii()));
        Report {
            kind,
            hostname,
            envelope,
            returned,
            headers_only,
            truncated: full_asked && too_big,
            global,
        }
    }

    fn render(&self, entries: &[Entry], now: &jiff::Zoned) -> Vec<u8> {
        let boundary = boundary(self.hostname, self.returned);
        let eight_bit = !self.returned.is_ascii() || self.global;
        let hostname = self.hostname;
        let (subject, description) = match self.kind {
            Kind::Failure => ("Undelivered Mail Returned to Sender", "Undelivered Message"),
            Kind::Delay { .. } => ("Delayed Mail (still being retried)", "Message Headers"),
            Kind::Success => ("Successful Mail Delivery Report", "Message Headers"),
        };
        let description = if self.headers_only && self.kind == Kind::Failure {
            "Undelivered Message Headers"
        } else {
            description
        };

        let eight_bit_returned = !self.returned.is_ascii();
        let notification = leaf(
            "Notification",
            if self.global {
                "text/plain; charset=utf-8"
            } else {
                "text/plain; charset=us-ascii"
            },
            self.global,
            self.human_text(entries, now).into_bytes(),
        );
        let status = leaf(
            "Delivery report",
            if self.global {
                "message/global-delivery-status"
            } else {
                "message/delivery-status"
            },
            self.global,
            self.status_fields(entries).into_bytes(),
        );
        let returned_type = match (self.headers_only, self.global) {
            (false, false) => "message/rfc822",
            (false, true) => "message/global",
            (true, false) => "text/rfc822-headers",
            (true, true) => "message/global-headers",
        };
        let mut returned = self.returned.to_vec();
        if !returned.ends_with(b"\n") {
            returned.extend_from_slice(b"\r\n");
        }
        let returned = leaf(description, returned_type, eight_bit_returned, returned);
        let report = MimePart {
            headers: vec![
                header(
                    "Content-Type",
                    format!(
                        "multipart/report; report-type=delivery-status; boundary=\"{boundary}\""
                    ),
                ),
                header("Content-Transfer-Encoding", transfer_encoding(eight_bit)),
            ],
            contents: BodyPart::Multipart(vec![notification, status, returned]),
        };
        let mut out = Vec::new();
        MessageBuilder::new()
            .header(
                "From",
                Raw::new(format!("Mail Delivery System <MAILER-DAEMON@{hostname}>")),
            )
            .header(
                "To",
                Raw::new(format!("<{}>", self.text(&self.envelope.mail_from))),
            )
            .header("Subject", Raw::new(subject))
            .header(
                "Date",
                Raw::new(jiff::fmt::rfc2822::to_string(now).unwrap_or_default()),
            )
            .header(
                "Message-ID",
                Raw::new(format!(
                    "<{stamp}.{id}.{nonce:08x}@{hostname}>",
                    stamp = now.timestamp().as_second(),
                    id = self.envelope.id,
                    nonce = rand::random::<u32>(),
                )),
            )
            .header("Auto-Submitted", Raw::new("auto-replied"))
            .header("MIME-Version", Raw::new("1.0"))
            .body(report)
            .serialize(&mut out);
        out
    }

    /// Postfix's wording.
    fn human_text(&self, entries: &[Entry], now: &jiff::Zoned) -> String {
        let mut text = format!("This is the mail system at host {}.\r\n\r\n", self.hostname);
        match self.kind {
            Kind::Failure => {
                text.push_str(
                    "I'm sorry to have to inform you that your message could not\r\n\
                     be delivered to one or more recipients. It's attached below.\r\n\r\n",
                );
                if self.truncated {
                    let _ = write!(
                        text,
                        "The message was too large to be returned in full\r\n\
                         (over {MAX_RETURNED_SIZE} bytes); only its headers are attached.\r\n\r\n"
                    );
                }
                text.push_str(
                    "For further assistance, please send mail to postmaster.\r\n\r\n\
                     If you do so, please include this problem report. You can\r\n\
                     delete your own text from the attached returned message.\r\n",
                );
            }
            Kind::Delay { retry_until } => {
                let hours = (now.timestamp().as_second() as u64)
                    .saturating_sub(self.envelope.received_at)
                    / 3600;
                let _ = write!(
                    text,
                    "####################################################################\r\n\
                     # THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\r\n\
                     ####################################################################\r\n\r\n\
                     Your message could not be delivered for more than {hours} hour(s).\r\n\
                     It will be retried until {until}.\r\n\r\n\
                     For further assistance, please send mail to postmaster.\r\n\r\n\
                     If you do so, please include this problem report. You can\r\n\
                     delete your own text from the attached returned message.\r\n",
                    until = rfc2822(retry_until),
                );
            }
            Kind::Success => text.push_str(
                "Your message was successfully delivered to the destination(s)\r\n\
                 listed below. If the message was delivered to mailbox you will\r\n\
                 receive no further notifications. Otherwise you may still receive\r\n\
                 notifications of mail delivery errors from other systems.\r\n",
            ),
        }
        text.push_str("\r\n                   The mail system\r\n");
        for e in entries {
            let (address, human) = (self.text(e.address), self.text(&e.human));
            // Each line well under SMTP's 1000 bytes, however long both parts are.
            let separator = if address.len() + human.len() > MAX_FIELD {
                "\r\n    "
            } else {
                " "
            };
            let _ = write!(text, "\r\n<{address}>:{separator}{human}\r\n");
        }
        text
    }

    /// The message/delivery-status body: per-message fields, then a block per recipient.
    fn status_fields(&self, entries: &[Entry]) -> String {
        let envelope = self.envelope;
        let mut fields = format!(
            "Reporting-MTA: dns; {}\r\nX-Posthorn-Queue-ID: {}\r\n",
            self.hostname, envelope.id
        );
        let _ = write!(
            fields,
            "X-Posthorn-Sender: {}\r\n",
            self.address(&envelope.mail_from)
        );
        if let Some(envid) = &envelope.envid {
            let _ = write!(fields, "Original-Envelope-Id: {}\r\n", self.text(envid));
        }
        let _ = write!(
            fields,
            "Arrival-Date: {}\r\n",
            rfc2822(envelope.received_at)
        );
        for e in entries {
            let _ = write!(
                fields,
                "\r\nFinal-Recipient: {}\r\n",
                self.address(e.address)
            );
            if let Some(orcpt) = e.orcpt {
                let typed = if has_type(orcpt) {
                    self.text(orcpt)
                } else {
                    self.address(orcpt)
                };
                let _ = write!(fields, "Original-Recipient: {typed}\r\n");
            }
            let action = match self.kind {
                Kind::Failure => "failed",
                Kind::Delay { .. } => "delayed",
                Kind::Success => "delivered",
            };
            let _ = write!(fields, "Action: {action}\r\nStatus: {}\r\n", e.status);
            if let Some(mta) = e.remote_mta {
                let _ = write!(fields, "Remote-MTA: dns; {}\r\n", self.text(mta));
            }
            if let Some(diagnostic) = &e.diagnostic {
                let _ = write!(fields, "Diagnostic-Code: {}\r\n", self.text(diagnostic));
            }
            if let Kind::Delay { retry_until } = self.kind {
                let _ = write!(fields, "Will-Retry-Until: {}\r\n", rfc2822(retry_until));
            }
        }
        fields
    }

    /// `rfc822; a@b`, or RFC 6533's `utf-8; ...` for a non-ASCII address.
    fn address(&self, address: &str) -> String {
        if address.is_ascii() || !self.global {
            format!("rfc822; {}", self.text(address))
        } else {
            format!("utf-8; {}", self.text(address))
        }
    }

    /// A field value on one line of bounded length; non-ASCII only where allowed.
    fn text(&self, value: &str) -> String {
        let mut text: String = value
            .chars()
            .map(|c| match c {
                c if c.is_control() => ' ',
                c if !c.is_ascii() && !self.global => '?',
                c => c,
            })
            .collect();
        if text.len() > MAX_FIELD {
            let mut end = MAX_FIELD;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        text
    }
}

/// A part whose bytes go out as they are: the transfer encoding is always given, so
/// mail-builder neither picks one nor re-encodes (`message/*` may only be 7bit or 8bit).
fn leaf(
    description: &str,
    content_type: &str,
    eight_bit: bool,
    body: Vec<u8>,
) -> MimePart<'static> {
    MimePart {
        headers: vec![
            header("Content-Description", description.to_string()),
            header("Content-Type", content_type.to_string()),
            header("Content-Transfer-Encoding", transfer_encoding(eight_bit)),
        ],
        contents: BodyPart::Binary(body.into()),
    }
}

fn header(
    name: &'static str,
    value: impl Into<String>,
) -> (Cow<'static, str>, HeaderType<'static>) {
    (name.into(), Raw::new(value.into()).into())
}

fn transfer_encoding(eight_bit: bool) -> &'static str {
    if eight_bit { "8bit" } else { "7bit" }
}

/// The header section of a message, with its terminating empty line.
fn header_section(message: &[u8]) -> &[u8] {
    let crlf = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4);
    let lf = message.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => &message[..a.min(b)],
        (a, b) => &message[..a.or(b).unwrap_or(message.len())],
    }
}

/// A boundary that does not occur in the returned text.
fn boundary(hostname: &str, returned: &[u8]) -> String {
    loop {
        let candidate = format!("{:016x}/{hostname}", rand::random::<u64>());
        if !returned
            .windows(candidate.len())
            .any(|w| w == candidate.as_bytes())
        {
            return candidate;
        }
    }
}

fn rfc2822(unix: u64) -> String {
    let zoned = jiff::Timestamp::from_second(unix as i64)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_zoned(jiff::tz::TimeZone::system());
    jiff::fmt::rfc2822::to_string(&zoned).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::{Command, QueueId, Recipient, Remote, Reply};

    fn local(index: usize, status: &str, text: &str) -> Reported {
        Reported {
            index,
            outcome: Outcome::local(status.parse().unwrap(), text),
        }
    }

    /// An MX host's reply to RCPT TO.
    fn said(index: usize, host: &str, code: u16, enhanced: Option<&str>, text: &str) -> Reported {
        let enhanced = enhanced.map(|e| e.parse::<Status>().unwrap());
        let status = enhanced.unwrap_or(Status::new((code / 100) as u8, 0, 0));
        Reported {
            index,
            outcome: Outcome {
                status,
                cause: Cause::Reply {
                    remote: Remote {
                        kind: RemoteKind::Host,
                        name: host.into(),
                        addr: Some([192, 0, 2, 1].into()),
                    },
                    reply: Reply {
                        code,
                        enhanced,
                        text: text.into(),
                    },
                    command: Command::RcptTo,
                },
                expired: false,
            },
        }
    }

    const MESSAGE: &[u8] =
        b"From: alice@example.com\r\nTo: bob@example.net\r\nSubject: hi\r\n\r\nBody line\r\n";

    fn envelope() -> Envelope {
        Envelope {
            id: QueueId::generate(),
            mail_from: "alice@example.com".into(),
            body: None,
            smtputf8: false,
            ret: None,
            envid: None,
            recipients: vec![
                Recipient::new("bob@example.net"),
                Recipient::new("carol@example.org"),
            ],
            login: Some("alice@example.com".into()),
            client_addr: "127.0.0.1:1234".parse().unwrap(),
            client_helo: "client.example.com".into(),
            listener: "submission".into(),
            tls: None,
            received_at: 1_700_000_000,
        }
    }

    fn text(report: &[u8]) -> String {
        String::from_utf8(report.to_vec()).unwrap()
    }

    #[test]
    fn never_bounces_to_the_null_sender() {
        let mut env = envelope();
        env.mail_from.clear();
        let failed = [local(0, "5.1.1", "smtp; 550 no")];
        assert!(failure_report("mx.example.com", &env, MESSAGE, &failed).is_none());
    }

    #[test]
    fn honours_notify() {
        let mut env = envelope();
        let failed = [local(0, "5.1.1", "smtp; 550 no")];
        let delayed = [local(0, "4.4.1", "connection refused")];
        // Default: failure and delay, not success.
        assert!(failure_report("h.example", &env, MESSAGE, &failed).is_some());
        assert!(delay_report("h.example", &env, MESSAGE, &delayed, 0).is_some());
        assert!(success_report("h.example", &env, MESSAGE, &failed).is_none());
        env.recipients[0].notify = vec![Notify::Never];
        assert!(failure_report("h.example", &env, MESSAGE, &failed).is_none());
        assert!(delay_report("h.example", &env, MESSAGE, &delayed, 0).is_none());
        env.recipients[0].notify = vec![Notify::Success];
        assert!(failure_report("h.example", &env, MESSAGE, &failed).is_none());
        assert!(success_report("h.example", &env, MESSAGE, &failed).is_some());
        env.recipients[0].notify = vec![Notify::Failure];
        assert!(failure_report("h.example", &env, MESSAGE, &failed).is_some());
        assert!(delay_report("h.example", &env, MESSAGE, &delayed, 0).is_none());
        // Only recipients that want it are listed.
        let both = [
            local(0, "5.1.1", "smtp; 550 no"),
            local(1, "5.1.1", "smtp; 550 no"),
        ];
        env.recipients[1].notify = vec![Notify::Never];
        let report = text(&failure_report("h.example", &env, MESSAGE, &both).unwrap());
        assert!(report.contains("Final-Recipient: rfc822; bob@example.net"));
        assert!(!report.contains("carol"), "{report}");
    }

    #[test]
    fn reads_outcomes() {
        let kind = Kind::Failure;
        let bounced = said(0, "mx.x", 550, Some("5.1.1"), "<b@x>: user unknown").outcome;
        let e = entry(kind, "b@x", None, &bounced);
        assert_eq!(e.status, Status::new(5, 1, 1));
        assert_eq!(e.remote_mta, Some("mx.x"));
        assert_eq!(
            e.diagnostic.as_deref(),
            Some("smtp; 550 5.1.1 <b@x>: user unknown (in reply to RCPT TO command)")
        );
        // Expired: the diagnostic says so, as the recorded text did.
        let expired = Outcome {
            expired: true,
            ..bounced.clone()
        };
        assert_eq!(
            entry(kind, "b@x", None, &expired).diagnostic.as_deref(),
            Some(
                "smtp; 550 5.1.1 <b@x>: user unknown (in reply to RCPT TO command) \
                 (message expired in the queue)"
            )
        );
        // The relay's and the LMTP server's replies are local diagnostics.
        let relayed = Outcome {
            cause: Cause::Reply {
                remote: Remote {
                    kind: RemoteKind::Relay,
                    name: "smtp.x:587".into(),
                    addr: None,
                },
                reply: Reply {
                    code: 554,
                    enhanced: None,
                    text: "no".into(),
                },
                command: Command::EndOfData,
            },
            ..bounced
        };
        let e = entry(kind, "b@x", None, &relayed);
        assert_eq!(e.remote_mta, None);
        assert_eq!(
            e.diagnostic.as_deref(),
            Some("X-Posthorn; relay smtp.x:587 said: 554 no (in reply to end of DATA command)")
        );
        // A success through an MX host names it too; a local one has no diagnostic.
        let sent = said(0, "mx.x", 250, Some("2.0.0"), "Ok").outcome;
        let e = entry(Kind::Success, "b@x", None, &sent);
        assert_eq!(e.remote_mta, Some("mx.x"));
        assert_eq!(
            e.diagnostic.as_deref(),
            Some("smtp; 250 2.0.0 Ok (in reply to RCPT TO command)")
        );
        let stored = Outcome::local(Status::new(2, 0, 0), "delivered to maildir /m");
        assert_eq!(entry(Kind::Success, "b@x", None, &stored).diagnostic, None);
        let typed = Outcome::local(Status::new(5, 1, 1), "smtp; 550 no such user");
        let e = entry(kind, "b@x", None, &typed);
        assert_eq!(e.diagnostic.as_deref(), Some("smtp; 550 no such user"));
        assert_eq!(e.remote_mta, None);
        let local = Outcome::local(Status::new(5, 1, 3), "bad destination mailbox address");
        assert_eq!(
            entry(kind, "b@x", None, &local).diagnostic.as_deref(),
            Some("X-Posthorn; bad destination mailbox address")
        );
        // A mismatched class is made to agree with the action.
        let timeout = Outcome::local(Status::new(4, 4, 1), "timeout");
        assert_eq!(
            entry(kind, "b@x", None, &timeout).status,
            Status::new(5, 4, 1)
        );
        let delay = Kind::Delay { retry_until: 0 };
        assert_eq!(
            entry(delay, "b@x", None, &timeout).status,
            Status::new(4, 4, 1)
        );
    }

    #[test]
    fn returns_full_message_or_headers() {
        let mut env = envelope();
        let failed = [local(0, "5.1.1", "smtp; 550 no")];
        let full = text(&failure_report("h.example", &env, MESSAGE, &failed).unwrap());
        assert!(full.contains("Content-Type: message/rfc822\r\n"));
        assert!(full.contains("Body line"));
        env.ret = Some(Ret::Hdrs);
        let hdrs = text(&failure_report("h.example", &env, MESSAGE, &failed).unwrap());
        assert!(hdrs.contains("Content-Type: text/rfc822-headers\r\n"));
        assert!(hdrs.contains("Subject: hi"));
        assert!(!hdrs.contains("Body line"));
        // Too large for RET=FULL: headers, and the text says so.
        env.ret = Some(Ret::Full);
        let big = [MESSAGE, &vec![b'x'; MAX_RETURNED_SIZE]].concat();
        let report = text(&failure_report("h.example", &env, &big, &failed).unwrap());
        assert!(report.contains("Content-Type: text/rfc822-headers\r\n"));
        assert!(report.contains("too large to be returned"));
        assert!(report.len() < 5000);
    }

    #[test]
    fn fields_are_one_line_and_ascii() {
        let env = envelope();
        let failed = [local(0, "5.1.1", "smtp; 550 b\u{e4}d\r\nBcc: injected")];
        let report = failure_report("h.example", &env, MESSAGE, &failed).unwrap();
        let report = text(&report);
        assert!(report.contains("Diagnostic-Code: smtp; 550 b?d  Bcc: injected\r\n"));
        assert!(report.is_ascii());
        assert!(!report.contains("\r\nBcc:"));
    }

    #[test]
    fn lines_stay_under_the_smtp_limit() {
        let mut env = envelope();
        env.recipients[0].address = format!("{}@example.net", "b".repeat(240));
        let failed = [local(
            0,
            "5.1.1",
            &format!("smtp; 550 {}", "x".repeat(5000)),
        )];
        let report = failure_report("h.example", &env, MESSAGE, &failed).unwrap();
        let longest = report.split(|&b| b == b'\n').map(<[u8]>::len).max();
        assert!(longest.unwrap() < 998, "{longest:?}");
    }

    #[test]
    fn international_report_for_smtputf8() {
        let mut env = envelope();
        env.smtputf8 = true;
        env.recipients[0].address = "j\u{f6}rg@example.net".into();
        let failed = [local(0, "5.1.1", "smtp; 550 unknown")];
        let report = text(&failure_report("h.example", &env, MESSAGE, &failed).unwrap());
        assert!(report.contains("Content-Type: message/global-delivery-status\r\n"));
        assert!(report.contains("Final-Recipient: utf-8; j\u{f6}rg@example.net\r\n"));
        assert!(report.contains("Content-Type: message/global\r\n"));
    }

    /// Python's `email` package (an independent MIME parser) reads the report and prints
    /// what it found as JSON. Needs python3 (CI has it): without it the test fails.
    fn python_parse(report: &[u8]) -> serde_json::Value {
        use std::io::Write;
        const SCRIPT: &str = r#"
import email, email.policy, json, sys
msg = email.message_from_bytes(sys.stdin.buffer.read(), policy=email.policy.compat32)
assert not msg.defects, msg.defects
parts = msg.get_payload()
status = parts[1]
blocks = status.get_payload()
returned = parts[2]
if returned.get_content_type() == 'message/rfc822':
    inner = returned.get_payload()[0]
    returned_info = {'subject': inner['Subject'], 'body': inner.get_payload()}
else:
    returned_info = {'text': returned.get_payload(decode=True).decode('utf-8', 'replace')}
print(json.dumps({
    'type': msg.get_content_type(),
    'report_type': msg.get_param('report-type'),
    'from': msg['From'], 'to': msg['To'], 'subject': msg['Subject'],
    'auto_submitted': msg['Auto-Submitted'], 'date': msg['Date'],
    'part_types': [p.get_content_type() for p in parts],
    'text': parts[0].get_payload(decode=True).decode('utf-8', 'replace'),
    'per_message': dict(blocks[0].items()),
    'per_recipient': [dict(b.items()) for b in blocks[1:]],
    'returned_type': returned.get_content_type(),
    'returned': returned_info,
    'defects': [str(d) for p in msg.walk() for d in p.defects],
}))
"#;
        let mut child = std::process::Command::new("python3")
            .args(["-c", SCRIPT])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 is needed to check reports with a real MIME parser");
        child.stdin.take().unwrap().write_all(report).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "python failed on:\n{}", text(report));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    #[test]
    fn python_reads_a_bounce_with_the_returned_message() {
        let mut env = envelope();
        env.envid = Some("QQ314159".into());
        env.recipients[0].orcpt = Some("Bob@Example.NET".into());
        let failed = [
            said(
                0,
                "mx.example.net",
                550,
                Some("5.1.1"),
                "<bob@example.net>: user unknown",
            ),
            local(1, "5.4.4", "smtp; 550 no route"),
        ];
        let report = failure_report("mail.example.com", &env, MESSAGE, &failed).unwrap();
        let r = python_parse(&report);
        assert_eq!(r["type"], "multipart/report");
        assert_eq!(r["report_type"], "delivery-status");
        assert_eq!(
            r["from"],
            "Mail Delivery System <MAILER-DAEMON@mail.example.com>"
        );
        assert_eq!(r["to"], "<alice@example.com>");
        assert_eq!(r["subject"], "Undelivered Mail Returned to Sender");
        assert_eq!(r["auto_submitted"], "auto-replied");
        assert_eq!(
            r["part_types"],
            serde_json::json!(["text/plain", "message/delivery-status", "message/rfc822"])
        );
        assert!(r["text"].as_str().unwrap().contains(
            "<bob@example.net>: host mx.example.net[192.0.2.1] said: 550 5.1.1 <bob@example.net>: user unknown"
        ));
        let per_message = &r["per_message"];
        assert_eq!(per_message["Reporting-MTA"], "dns; mail.example.com");
        assert_eq!(per_message["Original-Envelope-Id"], "QQ314159");
        assert!(
            per_message["Arrival-Date"]
                .as_str()
                .unwrap()
                .contains("2023")
        );
        let bob = &r["per_recipient"][0];
        assert_eq!(bob["Final-Recipient"], "rfc822; bob@example.net");
        assert_eq!(bob["Original-Recipient"], "rfc822; Bob@Example.NET");
        assert_eq!(bob["Action"], "failed");
        assert_eq!(bob["Status"], "5.1.1");
        assert_eq!(bob["Remote-MTA"], "dns; mx.example.net");
        assert_eq!(
            bob["Diagnostic-Code"],
            "smtp; 550 5.1.1 <bob@example.net>: user unknown (in reply to RCPT TO command)"
        );
        let carol = &r["per_recipient"][1];
        assert_eq!(carol["Final-Recipient"], "rfc822; carol@example.org");
        assert_eq!(carol["Status"], "5.4.4");
        assert_eq!(carol["Diagnostic-Code"], "smtp; 550 no route");
        assert_eq!(r["returned"]["subject"], "hi");
        assert_eq!(r["returned"]["body"], "Body line\r\n");
        assert_eq!(r["defects"], serde_json::json!([]));
    }

    #[test]
    fn python_reads_headers_only_and_8bit_returns() {
        let mut env = envelope();
        env.ret = Some(Ret::Hdrs);
        let message = "From: alice@example.com\r\nSubject: caf\u{e9}\r\n\r\nBody \u{e9}\r\n";
        let failed = [local(0, "5.1.1", "smtp; 550 no")];
        let report = failure_report("mail.example.com", &env, message.as_bytes(), &failed).unwrap();
        let r = python_parse(&report);
        assert_eq!(r["returned_type"], "text/rfc822-headers");
        let returned = r["returned"]["text"].as_str().unwrap();
        assert!(returned.contains("Subject: caf"), "{returned}");
        assert!(!returned.contains("Body"), "{returned}");
    }

    #[test]
    fn python_reads_a_delay_warning() {
        let env = envelope();
        let delayed = [said(1, "mx.example.org", 421, Some("4.4.1"), "try later")];
        let until = env.received_at + 5 * 24 * 3600;
        let report = delay_report("mail.example.com", &env, MESSAGE, &delayed, until).unwrap();
        let r = python_parse(&report);
        assert_eq!(r["type"], "multipart/report");
        assert_eq!(r["subject"], "Delayed Mail (still being retried)");
        assert!(
            r["text"]
                .as_str()
                .unwrap()
                .contains("THIS IS A WARNING ONLY")
        );
        let carol = &r["per_recipient"][0];
        assert_eq!(carol["Action"], "delayed");
        assert_eq!(carol["Status"], "4.4.1");
        assert_eq!(carol["Remote-MTA"], "dns; mx.example.org");
        assert_eq!(carol["Will-Retry-Until"].as_str().unwrap(), rfc2822(until));
        assert_eq!(r["per_recipient"].as_array().unwrap().len(), 1);
        assert_eq!(r["returned_type"], "text/rfc822-headers");
    }

    #[test]
    fn python_reads_a_success_notice() {
        let mut env = envelope();
        env.recipients[0].notify = vec![Notify::Success, Notify::Failure];
        let delivered = [local(0, "2.0.0", "delivered to maildir /var/mail/x")];
        let report = success_report("mail.example.com", &env, MESSAGE, &delivered).unwrap();
        let r = python_parse(&report);
        assert_eq!(r["subject"], "Successful Mail Delivery Report");
        let bob = &r["per_recipient"][0];
        assert_eq!(bob["Action"], "delivered");
        assert_eq!(bob["Status"], "2.0.0");
        assert!(
            r["text"]
                .as_str()
                .unwrap()
                .contains("<bob@example.net>: delivered to maildir")
        );
    }

    #[test]
    fn header_section_stops_at_the_blank_line() {
        assert_eq!(header_section(b"A: b\r\n\r\nbody"), b"A: b\r\n\r\n");
        assert_eq!(header_section(b"A: b\r\n"), b"A: b\r\n");
    }
}

//! What became of a recipient's last delivery attempt, as data: the enhanced status
//! code, and either the next hop's reply (who said it, to which command) or a local
//! reason. Logs, `posthorn queue list` and reports render it through [`Outcome`]'s
//! `Display`, so their wording can change without touching the spool format or the
//! DSN fields read from it.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub status: Status,
    #[serde(flatten)]
    pub cause: Cause,
    /// The attempt was the last one: the message had been queued for too long.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub expired: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cause", rename_all = "lowercase")]
pub enum Cause {
    /// The next hop answered `reply` to `command`.
    Reply {
        remote: Remote,
        reply: Reply,
        command: Command,
    },
    /// No reply to quote: DNS failure, connection refused or lost, a Maildir write
    /// error, a local policy.
    Local { text: String },
}

/// A next hop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remote {
    pub kind: RemoteKind,
    /// Host name (MX), `host:port` (relay) or the LMTP target.
    pub name: String,
    /// The address connected to, where the name alone does not say it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<IpAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RemoteKind {
    /// An MX host (or the domain's address record).
    Host,
    /// The configured relay host.
    Relay,
    /// The configured LMTP server.
    Lmtp,
}

/// An SMTP reply, multi-line text joined with spaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub code: u16,
    /// The enhanced status code the reply carried, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enhanced: Option<Status>,
    pub text: String,
}

/// What a reply answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    MailFrom,
    RcptTo,
    Data,
    EndOfData,
}

impl Command {
    const ALL: [Command; 4] = [
        Command::MailFrom,
        Command::RcptTo,
        Command::Data,
        Command::EndOfData,
    ];

    /// Postfix's words after `in reply to`.
    pub fn text(self) -> &'static str {
        match self {
            Command::MailFrom => "MAIL FROM command",
            Command::RcptTo => "RCPT TO command",
            Command::Data => "DATA command",
            Command::EndOfData => "end of DATA command",
        }
    }

    pub fn from_text(text: &str) -> Option<Command> {
        Command::ALL.into_iter().find(|c| c.text() == text)
    }
}

/// An RFC 3463 enhanced status code, `class.subject.detail`; on disk as its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Status {
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl Status {
    pub const fn new(class: u8, subject: u16, detail: u16) -> Status {
        Status {
            class,
            subject,
            detail,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

impl FromStr for Status {
    type Err = String;

    /// Class 2, 4 or 5; subject and detail of one to three digits.
    fn from_str(code: &str) -> Result<Status, String> {
        let bad = || format!("not an enhanced status code: {code:?}");
        let mut parts = code.split('.');
        let (Some(class), Some(subject), Some(detail), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let number = |p: &str| {
            ((1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse::<u16>().ok())
                .flatten()
        };
        match (class, number(subject), number(detail)) {
            ("2" | "4" | "5", Some(subject), Some(detail)) => Ok(Status {
                class: class.as_bytes()[0] - b'0',
                subject,
                detail,
            }),
            _ => Err(bad()),
        }
    }
}

impl TryFrom<String> for Status {
    type Error = String;

    fn try_from(code: String) -> Result<Status, String> {
        code.parse()
    }
}

impl From<Status> for String {
    fn from(status: Status) -> String {
        status.to_string()
    }
}

impl Outcome {
    pub fn local(status: Status, text: impl Into<String>) -> Outcome {
        Outcome {
            status,
            cause: Cause::Local { text: text.into() },
            expired: false,
        }
    }

    /// What happened, without the status code: the text of a report's recipient line.
    pub fn detail(&self) -> String {
        let expired = if self.expired {
            " (message expired in the queue)"
        } else {
            ""
        };
        format!("{}{expired}", self.cause)
    }
}

/// `5.1.1 host mx.example.net[192.0.2.1] said: 550 5.1.1 <b@example.net>: user unknown
/// (in reply to RCPT TO command)`, Postfix's wording.
impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.detail())
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Reply {
                remote,
                reply,
                command,
            } => write!(f, "{remote} said: {reply} (in reply to {})", command.text()),
            Cause::Local { text } => f.write_str(text),
        }
    }
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            RemoteKind::Host => "host",
            RemoteKind::Relay => "relay",
            RemoteKind::Lmtp => "lmtp",
        };
        write!(f, "{kind} {}", self.name)?;
        match self.addr {
            Some(addr) => write!(f, "[{addr}]"),
            None => Ok(()),
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.enhanced {
            Some(enhanced) => write!(f, "{} {enhanced} {}", self.code, self.text),
            None => write!(f, "{} {}", self.code, self.text),
        }
    }
}

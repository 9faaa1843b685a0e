//! Reading what format version 1 wrote (releases before outcomes were structured):
//! recipient outcomes were one line of text, `<status> <diagnostic>`, parsed here once
//! into an [`Outcome`]. Nothing else reads that text.

use std::net::IpAddr;

use serde::Deserialize;

use super::envelope::{Envelope, RecipientStatus};
use super::outcome::{Cause, Command, Outcome, Remote, RemoteKind, Reply, Status};

#[derive(Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum TextStatus {
    Pending,
    Deferred {
        attempts: u32,
        next_attempt: u64,
        reason: String,
    },
    Delivered {
        detail: String,
    },
    Failed {
        reason: String,
    },
}

impl From<TextStatus> for RecipientStatus {
    fn from(status: TextStatus) -> RecipientStatus {
        match status {
            TextStatus::Pending => RecipientStatus::Pending,
            TextStatus::Deferred {
                attempts,
                next_attempt,
                reason,
            } => RecipientStatus::Deferred {
                attempts,
                next_attempt,
                outcome: outcome(&reason, Status::new(4, 0, 0)),
                warned: false,
            },
            TextStatus::Delivered { detail } => RecipientStatus::Delivered {
                outcome: outcome(&detail, Status::new(2, 0, 0)),
            },
            TextStatus::Failed { reason } => RecipientStatus::Failed {
                outcome: outcome(&reason, Status::new(5, 0, 0)),
            },
        }
    }
}

/// A version 1 envelope line: its recipients' statuses are converted.
pub fn envelope(json: &[u8]) -> anyhow::Result<Envelope> {
    let mut value: serde_json::Value = serde_json::from_slice(json)?;
    if let Some(recipients) = value
        .get_mut("recipients")
        .and_then(serde_json::Value::as_array_mut)
    {
        for status in recipients.iter_mut().filter_map(|r| r.get_mut("status")) {
            let old: TextStatus = serde_json::from_value(status.take())?;
            *status = serde_json::to_value(RecipientStatus::from(old))?;
        }
    }
    Ok(serde_json::from_value(value)?)
}

/// Reads `<status> <diagnostic>` as version 1 wrote it; `class` is the status code
/// assumed when the text has none.
pub fn outcome(text: &str, class: Status) -> Outcome {
    let (code, rest) = text.split_once(' ').unwrap_or((text, ""));
    let (status, rest) = match code.parse() {
        Ok(status) => (status, rest),
        Err(_) => (class, text),
    };
    let (rest, expired) = match rest.strip_suffix(" (message expired in the queue)") {
        Some(rest) => (rest, true),
        None => (rest, false),
    };
    Outcome {
        status,
        cause: said(rest).unwrap_or_else(|| Cause::Local {
            text: rest.to_string(),
        }),
        expired,
    }
}

/// `<peer> said: <reply> (in reply to <command>)`.
fn said(text: &str) -> Option<Cause> {
    let (peer, said) = text.split_once(" said: ")?;
    let (reply, command) = said.strip_suffix(')')?.rsplit_once(" (in reply to ")?;
    let (code, rest) = reply.split_once(' ')?;
    let code = code.parse().ok().filter(|c| (200..600).contains(c))?;
    let (enhanced, text) = match rest.split_once(' ').map(|(e, t)| (e.parse::<Status>(), t)) {
        Some((Ok(enhanced), text)) => (Some(enhanced), text),
        _ => (None, rest),
    };
    Some(Cause::Reply {
        remote: remote(peer)?,
        reply: Reply {
            code,
            enhanced,
            text: text.to_string(),
        },
        command: Command::from_text(command)?,
    })
}

/// `host mx.example.net[192.0.2.1]`, `relay smtp.example:587`, `lmtp unix:/run/lmtp`.
fn remote(peer: &str) -> Option<Remote> {
    if let Some(host) = peer.strip_prefix("host ") {
        let (name, addr) = host.strip_suffix(']')?.rsplit_once('[')?;
        return Some(Remote {
            kind: RemoteKind::Host,
            name: name.to_string(),
            addr: Some(addr.parse::<IpAddr>().ok()?),
        });
    }
    let (kind, name) = match peer.split_once(' ')? {
        ("relay", name) => (RemoteKind::Relay, name),
        ("lmtp", name) => (RemoteKind::Lmtp, name),
        _ => return None,
    };
    Some(Remote {
        kind,
        name: name.to_string(),
        addr: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The relay's reply is read whole: who said it, its enhanced code apart from the
    /// text, and to which command (the rendered text alone would not tell).
    #[test]
    fn a_relay_s_reply_is_read_into_its_fields() {
        let text =
            "4.7.1 relay smtp.example:587 said: 451 4.7.1 try later (in reply to RCPT TO command)";
        let outcome = outcome(text, Status::new(5, 0, 0));
        assert_eq!(
            outcome,
            Outcome {
                status: Status::new(4, 7, 1),
                cause: Cause::Reply {
                    remote: Remote {
                        kind: RemoteKind::Relay,
                        name: "smtp.example:587".into(),
                        addr: None,
                    },
                    reply: Reply {
                        code: 451,
                        enhanced: Some(Status::new(4, 7, 1)),
                        text: "try later".into(),
                    },
                    command: Command::RcptTo,
                },
                expired: false,
            }
        );
        assert_eq!(outcome.to_string(), text);
    }
}

//! What is kept with a queued message besides its bytes: the SMTP envelope, the DSN
//! parameters of RFC 3461, where the message came from, and each recipient's outcome.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::QueueId;
use super::outcome::Outcome;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub id: QueueId,
    /// Envelope sender; empty for the null sender `<>`.
    pub mail_from: String,
    /// MAIL FROM BODY= parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<BodyType>,
    #[serde(default)]
    pub smtputf8: bool,
    /// MAIL FROM RET= (RFC 3461): what a bounce should carry of the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret: Option<Ret>,
    /// MAIL FROM ENVID= (RFC 3461), xtext-decoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envid: Option<String>,
    pub recipients: Vec<Recipient>,
    /// SASL login of the submitting client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<String>,
    pub client_addr: SocketAddr,
    pub client_helo: String,
    /// Name of the listener the message came in on (smtp, submission, submissions).
    pub listener: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsInfo>,
    /// Unix time (seconds) the message was accepted.
    pub received_at: u64,
}

impl Envelope {
    /// A plain envelope for tests, received now: no DSN parameters, login or TLS.
    #[cfg(test)]
    pub fn sample(mail_from: &str, recipients: &[&str]) -> Envelope {
        Envelope {
            id: QueueId::generate(),
            mail_from: mail_from.into(),
            body: None,
            smtputf8: false,
            ret: None,
            envid: None,
            recipients: recipients.iter().map(|a| Recipient::new(*a)).collect(),
            login: None,
            client_addr: "192.0.2.1:2525".parse().unwrap(),
            client_helo: "client.example.net".into(),
            listener: "smtp".into(),
            tls: None,
            received_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        }
    }

    /// Every recipient has a final outcome: the message may leave the queue.
    pub fn is_done(&self) -> bool {
        self.recipients.iter().all(|r| r.status.is_final())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BodyType {
    #[serde(rename = "7BIT")]
    SevenBit,
    #[serde(rename = "8BITMIME")]
    EightBitMime,
    #[serde(rename = "BINARYMIME")]
    BinaryMime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Ret {
    Full,
    Hdrs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Notify {
    Success,
    Failure,
    Delay,
    Never,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsInfo {
    pub version: String,
    pub cipher: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recipient {
    pub address: String,
    /// RCPT TO ORCPT= (RFC 3461), as given: `rfc822;user@example.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orcpt: Option<String>,
    /// RCPT TO NOTIFY= (RFC 3461); empty when not given (the default: FAILURE, DELAY).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<Notify>,
    #[serde(default)]
    pub status: RecipientStatus,
}

impl Recipient {
    pub fn new(address: impl Into<String>) -> Recipient {
        Recipient {
            address: address.into(),
            orcpt: None,
            notify: Vec::new(),
            status: RecipientStatus::Pending,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum RecipientStatus {
    /// Not tried yet.
    #[default]
    Pending,
    /// Tried and failed temporarily; try again at `next_attempt` (unix seconds).
    Deferred {
        attempts: u32,
        next_attempt: u64,
        outcome: Outcome,
        /// The sender has been sent the delay warning for this recipient, so no later
        /// retry or flush sends another. Absent before format version 3: not warned.
        #[serde(default)]
        warned: bool,
    },
    /// Final: accepted by the mailbox or the next hop.
    Delivered { outcome: Outcome },
    /// Final: permanently refused.
    Failed { outcome: Outcome },
}

impl RecipientStatus {
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            RecipientStatus::Delivered { .. } | RecipientStatus::Failed { .. }
        )
    }
}

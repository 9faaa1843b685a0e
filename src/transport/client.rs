//! One mail transaction to a next hop (relay host, MX host, LMTP server) over an open
//! session of `mail-send`'s client: MAIL, one RCPT per recipient, DATA (or BDAT for
//! BINARYMIME), with each recipient's reply kept, as Postfix's smtp(8) and lmtp(8) do.

use std::fmt::Write as _;

use mail_send::SmtpClient;
use smtp_proto::{
    EXT_8BIT_MIME, EXT_BINARY_MIME, EXT_CHUNKING, EXT_DSN, EXT_SIZE, EXT_SMTP_UTF8, EhloResponse,
    Response,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::spool::{
    BodyType, Cause, Command, Envelope, Notify, Outcome, Recipient, Remote, Reply, Ret, Status,
};

/// What became of one recipient in one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Delivered(Outcome),
    /// 4xx, or no answer: try again later.
    Temporary(Outcome),
    /// 5xx: give up on this recipient.
    Permanent(Outcome),
}

impl Attempt {
    /// The outcome a reply means for a recipient; `peer` is who said it.
    pub fn from_reply(peer: &Remote, reply: &Response<String>, after: Command) -> Attempt {
        let class = match reply.code {
            200..=399 => 2,
            400..=499 => 4,
            _ => 5,
        };
        let outcome = Outcome {
            // The reply's own code, or one made from its class when the peer sent none.
            status: enhanced(reply).unwrap_or(Status::new(class, 0, 0)),
            cause: Cause::Reply {
                remote: peer.clone(),
                reply: self::reply(reply),
                command: after,
            },
            expired: false,
        };
        match class {
            2 => Attempt::Delivered(outcome),
            4 => Attempt::Temporary(outcome),
            _ => Attempt::Permanent(outcome),
        }
    }

    pub fn temporary(status: Status, text: String) -> Attempt {
        Attempt::Temporary(Outcome::local(status, text))
    }

    pub fn permanent(status: Status, text: String) -> Attempt {
        Attempt::Permanent(Outcome::local(status, text))
    }

    pub fn outcome(&self) -> &Outcome {
        match self {
            Attempt::Delivered(o) | Attempt::Temporary(o) | Attempt::Permanent(o) => o,
        }
    }
}

/// The enhanced status code a reply carried (one of RFC 3463's classes).
fn enhanced(reply: &Response<String>) -> Option<Status> {
    match reply.esc {
        [class @ (2 | 4 | 5), subject, detail] => {
            Some(Status::new(class, subject.into(), detail.into()))
        }
        _ => None,
    }
}

/// A reply as recorded; its `Display` is `550 5.1.1 <bob@example.net>: Recipient address
/// rejected`, multi-line replies joined.
pub fn reply(reply: &Response<String>) -> Reply {
    Reply {
        code: reply.code,
        enhanced: enhanced(reply),
        text: reply.message.replace(['\r', '\n'], " "),
    }
}

/// The part of a queued message one transaction carries: the recipients (indexes into
/// `envelope.recipients`) bound for one next hop.
pub struct Transaction<'a> {
    pub envelope: &'a Envelope,
    /// MAIL FROM: the envelope's, or its SRS form when forwarded elsewhere.
    pub sender: &'a str,
    pub recipients: &'a [usize],
    pub message: &'a [u8],
}

/// The outcome per recipient, and whether the session may carry another transaction.
pub struct Sent {
    pub results: Vec<(usize, Attempt)>,
    pub reusable: bool,
}

impl Sent {
    fn all(txn: &Transaction<'_>, attempt: Attempt, reusable: bool) -> Sent {
        Sent {
            results: txn
                .recipients
                .iter()
                .map(|&i| (i, attempt.clone()))
                .collect(),
            reusable,
        }
    }
}

/// Runs one transaction on a session that has been greeted (EHLO or LHLO answered with
/// `caps`). With `lmtp`, the end of data brings one reply per accepted recipient (RFC
/// 2033 §4.2).
pub async fn send<S>(
    client: &mut SmtpClient<S>,
    caps: &EhloResponse<String>,
    peer: &Remote,
    txn: &Transaction<'_>,
    lmtp: bool,
) -> Sent
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if let Some(refused) = unsupported(caps, txn.envelope, peer) {
        return Sent::all(txn, refused, true);
    }
    let dsn = caps.has_capability(EXT_DSN);
    let mail = mail_command(caps, txn, dsn);
    let reply = match client.cmd(mail.as_bytes()).await {
        Ok(reply) => reply,
        Err(error) => return Sent::all(txn, lost(peer, "MAIL FROM", &error), false),
    };
    if reply.code != 250 {
        let attempt = Attempt::from_reply(peer, &reply, Command::MailFrom);
        return Sent::all(txn, attempt, rset(client).await);
    }
    let (mut results, accepted) = match send_recipients(client, peer, txn, dsn).await {
        Ok(answered) => answered,
        Err(lost) => return lost,
    };
    if accepted.is_empty() {
        let reusable = rset(client).await;
        return Sent { results, reusable };
    }
    let (content, reusable) = send_content(client, peer, txn, &accepted, lmtp).await;
    results.extend(content);
    Sent { results, reusable }
}

/// Why the peer cannot take this message at all: it needs an extension (BINARYMIME,
/// SMTPUTF8) that `caps` lacks.
fn unsupported(caps: &EhloResponse<String>, envelope: &Envelope, peer: &Remote) -> Option<Attempt> {
    let binary = envelope.body == Some(BodyType::BinaryMime);
    if binary && !(caps.has_capability(EXT_BINARY_MIME) && caps.has_capability(EXT_CHUNKING)) {
        let text = format!("{peer} does not support BINARYMIME, which the message needs");
        return Some(Attempt::permanent(Status::new(5, 6, 3), text));
    }
    if envelope.smtputf8 && !caps.has_capability(EXT_SMTP_UTF8) {
        let text = format!("{peer} does not support SMTPUTF8, which the message needs");
        return Some(Attempt::permanent(Status::new(5, 6, 7), text));
    }
    None
}

/// The MAIL FROM command line, with the parameters the peer announced support for.
fn mail_command(caps: &EhloResponse<String>, txn: &Transaction<'_>, dsn: bool) -> String {
    let envelope = txn.envelope;
    let mut mail = format!("MAIL FROM:<{}>", txn.sender);
    match envelope.body {
        Some(BodyType::BinaryMime) => mail.push_str(" BODY=BINARYMIME"),
        Some(BodyType::EightBitMime) if caps.has_capability(EXT_8BIT_MIME) => {
            mail.push_str(" BODY=8BITMIME")
        }
        _ => {}
    }
    if envelope.smtputf8 {
        mail.push_str(" SMTPUTF8");
    }
    if caps.has_capability(EXT_SIZE) {
        let _ = write!(mail, " SIZE={}", txn.message.len());
    }
    if dsn {
        match envelope.ret {
            Some(Ret::Full) => mail.push_str(" RET=FULL"),
            Some(Ret::Hdrs) => mail.push_str(" RET=HDRS"),
            None => {}
        }
        if let Some(envid) = &envelope.envid {
            let _ = write!(mail, " ENVID={}", xtext(envid));
        }
    }
    mail.push_str("\r\n");
    mail
}

/// The RCPT TO command line for one recipient, with its DSN parameters when the peer
/// supports DSN.
fn rcpt_command(rcpt: &Recipient, dsn: bool) -> String {
    let mut command = format!("RCPT TO:<{}>", rcpt.address);
    if dsn {
        if !rcpt.notify.is_empty() {
            let notify: Vec<&str> = rcpt
                .notify
                .iter()
                .map(|n| match n {
                    Notify::Success => "SUCCESS",
                    Notify::Failure => "FAILURE",
                    Notify::Delay => "DELAY",
                    Notify::Never => "NEVER",
                })
                .collect();
            let _ = write!(command, " NOTIFY={}", notify.join(","));
        }
        if let Some(orcpt) = &rcpt.orcpt {
            let _ = write!(command, " ORCPT={}", xtext(orcpt));
        }
    }
    command.push_str("\r\n");
    command
}

/// One RCPT per recipient: the attempts of those refused, and the indexes of those
/// accepted. A lost connection ends the transaction (`Err`), every recipient not yet
/// refused deferred.
async fn send_recipients<S>(
    client: &mut SmtpClient<S>,
    peer: &Remote,
    txn: &Transaction<'_>,
    dsn: bool,
) -> Result<(Vec<(usize, Attempt)>, Vec<usize>), Sent>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut results = Vec::with_capacity(txn.recipients.len());
    let mut accepted = Vec::new();
    for &index in txn.recipients {
        let command = rcpt_command(&txn.envelope.recipients[index], dsn);
        match client.cmd(command.as_bytes()).await {
            Ok(reply) if reply.code == 250 || reply.code == 251 => accepted.push(index),
            Ok(reply) => results.push((index, Attempt::from_reply(peer, &reply, Command::RcptTo))),
            Err(error) => {
                let attempt = lost(peer, "RCPT TO", &error);
                let answered: Vec<usize> = results.iter().map(|(i, _)| *i).collect();
                results.extend(
                    txn.recipients
                        .iter()
                        .filter(|i| !answered.contains(i))
                        .map(|&i| (i, attempt.clone())),
                );
                return Err(Sent {
                    results,
                    reusable: false,
                });
            }
        }
    }
    Ok((results, accepted))
}

/// The message itself (DATA, or BDAT for BINARYMIME) for the `accepted` recipients, and
/// the replies at its end: an attempt per accepted recipient, and whether the session
/// may carry another transaction.
async fn send_content<S>(
    client: &mut SmtpClient<S>,
    peer: &Remote,
    txn: &Transaction<'_>,
    accepted: &[usize],
    lmtp: bool,
) -> (Vec<(usize, Attempt)>, bool)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let every = |attempt: Attempt| accepted.iter().map(|&i| (i, attempt.clone())).collect();
    let sent = if txn.envelope.body == Some(BodyType::BinaryMime) {
        send_bdat(client, txn.message).await
    } else {
        send_data(client, txn.message, peer).await
    };
    let end = match sent {
        Ok(Ok(())) => Command::EndOfData,
        Ok(Err(refused)) => return (every(refused), rset(client).await),
        Err(error) => return (every(lost(peer, "DATA", &error)), false),
    };
    let wanted = if lmtp { accepted.len() } else { 1 };
    let replies = match read_replies(client, wanted).await {
        Ok(replies) => replies,
        // Unknown whether the peer took the message: deliver again later (a possible
        // duplicate rather than a loss, as RFC 1047 advises).
        Err(error) => return (every(lost(peer, "end of DATA", &error)), false),
    };
    let results = accepted
        .iter()
        .enumerate()
        .map(|(n, &index)| {
            let reply = &replies[if lmtp { n } else { 0 }];
            (index, Attempt::from_reply(peer, reply, end))
        })
        .collect();
    (results, true)
}

/// DATA, the dot-stuffed message and its terminator. `Ok(Err(_))` when DATA itself is
/// refused.
async fn send_data<S>(
    client: &mut SmtpClient<S>,
    message: &[u8],
    peer: &Remote,
) -> mail_send::Result<Result<(), Attempt>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let reply = client.cmd(b"DATA\r\n").await?;
    if reply.code != 354 {
        return Ok(Err(Attempt::from_reply(peer, &reply, Command::Data)));
    }
    let stuffed = dot_stuff(message);
    tokio::time::timeout(client.timeout, async {
        client.stream.write_all(&stuffed).await?;
        client.stream.flush().await
    })
    .await
    .map_err(|_| mail_send::Error::Timeout)??;
    Ok(Ok(()))
}

/// `BDAT <len> LAST` and the bytes as they are (RFC 3030); the reply is read by the caller.
/// Only BINARYMIME goes this way: its bytes must not change, and the length, not a line,
/// ends the chunk.
async fn send_bdat<S>(
    client: &mut SmtpClient<S>,
    message: &[u8],
) -> mail_send::Result<Result<(), Attempt>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio::time::timeout(client.timeout, async {
        let head = format!("BDAT {} LAST\r\n", message.len());
        client.stream.write_all(head.as_bytes()).await?;
        client.stream.write_all(message).await?;
        client.stream.flush().await
    })
    .await
    .map_err(|_| mail_send::Error::Timeout)??;
    Ok(Ok(()))
}

async fn read_replies<S>(
    client: &mut SmtpClient<S>,
    wanted: usize,
) -> mail_send::Result<Vec<Response<String>>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let timeout = client.timeout;
    tokio::time::timeout(timeout, client.read_many(wanted))
        .await
        .map_err(|_| mail_send::Error::Timeout)?
}

/// RSET after a failed transaction; whether the session is still good for another.
async fn rset<S>(client: &mut SmtpClient<S>) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    matches!(client.cmd(b"RSET\r\n").await, Ok(reply) if reply.code == 250)
}

fn lost(peer: &Remote, during: &str, error: &mail_send::Error) -> Attempt {
    Attempt::temporary(
        Status::new(4, 4, 2),
        format!("lost connection with {peer} while sending {during}: {error}"),
    )
}

/// The message in canonical form ([`crate::crlf`]: a bare CR or LF in the spool never
/// reaches a next hop, whose idea of the end of data may differ from ours), with every
/// line starting with `.` doubled (RFC 5321 §4.5.2), and the end-of-data line after it.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let fixed = crate::crlf::canonical(message);
    let message = fixed.as_deref().unwrap_or(message);
    let mut out = Vec::with_capacity(message.len() + message.len() / 64 + 3);
    let mut line_start = true;
    for &byte in message {
        if line_start && byte == b'.' {
            out.push(b'.');
        }
        out.push(byte);
        line_start = byte == b'\n';
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// xtext (RFC 3461 §4): `+XX` for `+`, `=`, and bytes outside `!`..=`~`.
pub fn xtext(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if (b'!'..=b'~').contains(&byte) && byte != b'+' && byte != b'=' {
            out.push(byte as char);
        } else {
            let _ = write!(out, "+{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn dot_stuffing_doubles_leading_dots_and_terminates_once() {
        assert_eq!(dot_stuff(b"a\r\n.b\r\n..\r\n"), b"a\r\n..b\r\n...\r\n.\r\n");
        assert_eq!(dot_stuff(b".x"), b"..x\r\n.\r\n");
        assert_eq!(dot_stuff(b"no newline"), b"no newline\r\n.\r\n");
        assert_eq!(dot_stuff(b""), b".\r\n");
    }

    #[test]
    fn dot_stuffing_sends_no_bare_cr_or_lf() {
        assert_eq!(
            dot_stuff(b"a\n.\nMAIL\r.\r\nb\r\n.\r\r\nc"),
            b"a\r\n..\r\nMAIL .\r\nb\r\n.. \r\nc\r\n.\r\n"
        );
    }

    /// What a next hop got after its `DATA` command: the message as sent.
    pub fn after_data(seen: &[u8]) -> &[u8] {
        let at = seen
            .windows(6)
            .position(|w| w == b"DATA\r\n")
            .expect("a DATA command");
        &seen[at + 6..]
    }

    /// A next hop (SMTP, or LMTP with one recipient) that accepts everything and records
    /// the bytes it got.
    pub async fn next_hop(io: impl AsyncRead + AsyncWrite, greet: bool) -> Vec<u8> {
        use tokio::io::AsyncBufReadExt;
        let (read, mut write) = tokio::io::split(io);
        if greet {
            write
                .write_all(b"220 hop.example.net ESMTP\r\n")
                .await
                .unwrap();
        }
        let mut read = tokio::io::BufReader::new(read);
        let (mut seen, mut in_data) = (Vec::new(), false);
        loop {
            let mut line = Vec::new();
            if read.read_until(b'\n', &mut line).await.unwrap() == 0 {
                return seen;
            }
            seen.extend_from_slice(&line);
            let reply: &[u8] = match (in_data, line.as_slice()) {
                (false, b"DATA\r\n") => b"354 go ahead\r\n",
                (false, _) | (true, b".\r\n") => b"250 2.0.0 Ok\r\n",
                (true, _) => continue,
            };
            in_data = reply.starts_with(b"354");
            write.write_all(reply).await.unwrap();
        }
    }

    #[tokio::test]
    async fn the_wire_gets_crlf_lines_whatever_the_spool_holds() {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let hop = tokio::spawn(next_hop(theirs, false));
        let envelope = Envelope::sample("alice@example.com", &["bob@example.net"]);
        let message = b"Subject: x\r\n\r\nbare\nlf\rcr\n.\nMAIL FROM:<a@b>\r\n.\r\rend";
        let txn = Transaction {
            envelope: &envelope,
            sender: &envelope.mail_from,
            recipients: &[0],
            message,
        };
        let mut client = SmtpClient {
            stream: ours,
            timeout: std::time::Duration::from_secs(10),
        };
        let caps = EhloResponse::new("hop.example.net".to_string());
        let outcome = send(&mut client, &caps, &mx(), &txn, false).await;
        assert!(matches!(outcome.results[..], [(0, Attempt::Delivered(_))]));
        drop(client);
        let seen = hop.await.unwrap();
        assert_eq!(
            after_data(&seen),
            b"Subject: x\r\n\r\nbare\r\nlf cr\r\n..\r\nMAIL FROM:<a@b>\r\n..  end\r\n.\r\n"
        );
    }

    /// LMTP: a refused RCPT keeps its own reply, and the end of data brings one reply
    /// per accepted recipient, in RCPT order (RFC 2033 §4.2).
    #[tokio::test]
    async fn lmtp_end_of_data_brings_one_reply_per_accepted_recipient() {
        use tokio::io::AsyncBufReadExt;
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let hop = tokio::spawn(async move {
            let (read, mut write) = tokio::io::split(theirs);
            let mut read = tokio::io::BufReader::new(read);
            let mut in_data = false;
            loop {
                let mut line = Vec::new();
                if read.read_until(b'\n', &mut line).await.unwrap() == 0 {
                    return;
                }
                let reply: &[u8] = match (in_data, line.as_slice()) {
                    (false, b"DATA\r\n") => b"354 go ahead\r\n",
                    (false, l) if l.starts_with(b"RCPT TO:<carol@") => {
                        b"550 5.1.1 <carol@example.com>: no such user\r\n"
                    }
                    (false, _) => b"250 2.1.0 Ok\r\n",
                    (true, b".\r\n") => {
                        b"250 2.0.0 <bob@example.com> saved\r\n\
                        452 4.2.2 <dave@example.com> over quota\r\n"
                    }
                    (true, _) => continue,
                };
                in_data = reply.starts_with(b"354");
                write.write_all(reply).await.unwrap();
            }
        });
        let envelope = Envelope::sample(
            "alice@example.net",
            &["bob@example.com", "carol@example.com", "dave@example.com"],
        );
        let txn = Transaction {
            envelope: &envelope,
            sender: &envelope.mail_from,
            recipients: &[0, 1, 2],
            message: b"Subject: x\r\n\r\nhi\r\n",
        };
        let mut client = SmtpClient {
            stream: ours,
            timeout: std::time::Duration::from_secs(10),
        };
        let caps = EhloResponse::new("lmtp.example.com".to_string());
        let Sent { results, reusable } = send(&mut client, &caps, &mx(), &txn, true).await;
        assert!(reusable);
        let kinds: Vec<(usize, &str)> = results
            .iter()
            .map(|(i, attempt)| match attempt {
                Attempt::Delivered(_) => (*i, "delivered"),
                Attempt::Temporary(_) => (*i, "temporary"),
                Attempt::Permanent(_) => (*i, "permanent"),
            })
            .collect();
        assert_eq!(
            kinds,
            [(1, "permanent"), (0, "delivered"), (2, "temporary")]
        );
        assert_eq!(results[2].1.outcome().status, Status::new(4, 2, 2));
        drop(client);
        hop.await.unwrap();
    }

    #[test]
    fn xtext_encodes_plus_equals_and_spaces() {
        assert_eq!(
            xtext("rfc822;bob+x@example.com"),
            "rfc822;bob+2Bx@example.com"
        );
        assert_eq!(xtext("a=b c"), "a+3Db+20c");
    }

    fn mx() -> Remote {
        Remote {
            kind: crate::spool::RemoteKind::Host,
            name: "mx".into(),
            addr: Some([192, 0, 2, 1].into()),
        }
    }

    #[test]
    fn replies_map_to_outcomes_with_status_codes() {
        let reply = Response::new(550, 5, 1, 1, "<bob@example.net>: unknown".to_string());
        let Attempt::Permanent(outcome) = Attempt::from_reply(&mx(), &reply, Command::RcptTo)
        else {
            panic!("a 5xx reply is permanent");
        };
        assert_eq!(outcome.status, Status::new(5, 1, 1));
        assert_eq!(
            outcome.cause,
            Cause::Reply {
                remote: mx(),
                reply: Reply {
                    code: 550,
                    enhanced: Some(Status::new(5, 1, 1)),
                    text: "<bob@example.net>: unknown".into()
                },
                command: Command::RcptTo
            }
        );
        assert_eq!(
            outcome.to_string(),
            "5.1.1 host mx[192.0.2.1] said: 550 5.1.1 <bob@example.net>: unknown \
             (in reply to RCPT TO command)"
        );
        let reply = Response::new(451, 0, 0, 0, "try\r\nlater".to_string());
        assert!(matches!(
            Attempt::from_reply(&mx(), &reply, Command::Data),
            Attempt::Temporary(o) if o.to_string() == "4.0.0 host mx[192.0.2.1] said: 451 try  later (in reply to DATA command)"
        ));
        let reply = Response::new(250, 2, 0, 0, "Ok: queued as X".to_string());
        assert!(matches!(
            Attempt::from_reply(&mx(), &reply, Command::Data),
            Attempt::Delivered(o) if o.status == Status::new(2, 0, 0)
        ));
    }
}

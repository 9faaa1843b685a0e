//! `posthorn queue`: the queue tools (`mailq`, `postqueue -f`, `postsuper -d`).
//!
//! `list` and `show` read the spool files directly, read-only. `flush` and `delete`
//! must go through the running server, whose runner owns the schedule and knows what
//! is in flight: they talk to it over a unix socket in the spool directory, mode 0600,
//! one command line and one answer line per connection.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader as AsyncBufReader};
use tokio::net::UnixListener;

use super::QueueHandle;
use crate::spool::{self, QueueId, RecipientStatus};

const SOCKET: &str = "control.sock";
/// A command line is a verb and a queue id; anything longer is not ours.
const MAX_LINE: u64 = 256;

pub fn socket_path(spool_dir: &Path) -> PathBuf {
    spool_dir.join(SOCKET)
}

/// Binds the control socket of `spool_dir` (replacing a stale one from an earlier run)
/// and serves it until the task is dropped.
pub fn serve(spool_dir: &Path, queue: QueueHandle) -> anyhow::Result<()> {
    let path = socket_path(spool_dir);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing the old {}", path.display()));
        }
        _ => {}
    }
    let listener =
        UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "control socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let queue = queue.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut line = String::new();
                let mut reader = AsyncBufReader::new(tokio::io::AsyncReadExt::take(read, MAX_LINE));
                if reader.read_line(&mut line).await.is_err() {
                    return;
                }
                let answer = match execute(&queue, line.trim()).await {
                    Ok(text) => format!("ok {text}\n"),
                    Err(error) => format!("error {error:#}\n"),
                };
                let _ = write.write_all(answer.as_bytes()).await;
            });
        }
    });
    Ok(())
}

async fn execute(queue: &QueueHandle, line: &str) -> anyhow::Result<String> {
    let mut words = line.split_ascii_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("flush"), None, None) => {
            let n = queue.flush().await?;
            tracing::info!(messages = n, "queue flushed");
            Ok(format!("{n} messages scheduled for delivery now"))
        }
        (Some("delete"), Some(id), None) => {
            let id: QueueId = id.parse()?;
            if queue.delete(id).await? {
                Ok(format!("{id} deleted"))
            } else {
                bail!("{id}: no such message in the queue")
            }
        }
        _ => bail!("unknown command {line:?}: expected flush or delete ID"),
    }
}

/// Sends one command to the server running on `spool_dir`. Blocking (the CLI side).
pub fn request(spool_dir: &Path, command: &str) -> anyhow::Result<String> {
    let path = socket_path(spool_dir);
    let mut stream = StdUnixStream::connect(&path).with_context(|| {
        format!(
            "no server is running on spool {} (control socket {})",
            spool_dir.display(),
            path.display()
        )
    })?;
    stream.write_all(format!("{command}\n").as_bytes())?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    match answer.trim_end().split_once(' ') {
        Some(("ok", text)) => Ok(text.to_string()),
        Some(("error", text)) => bail!("{text}"),
        _ => bail!("unexpected answer from the server: {answer:?}"),
    }
}

/// `mailq` output: each message with its size, arrival time and sender, then each
/// recipient not yet final, with the reason of its last deferral.
pub fn list(spool_dir: &Path) -> anyhow::Result<String> {
    let entries = spool::inspect(spool_dir)?;
    if entries.is_empty() {
        return Ok("Mail queue is empty\n".into());
    }
    let mut out =
        String::from("-Queue ID-       --Size-- ----Arrival Time---- -Sender/Recipient-------\n");
    let mut bytes = 0;
    for entry in &entries {
        let envelope = &entry.envelope;
        bytes += entry.size;
        let arrival = jiff::Timestamp::from_second(envelope.received_at as i64)
            .map(|t| t.strftime("%a %b %e %H:%M:%S").to_string())
            .unwrap_or_default();
        let sender = if envelope.mail_from.is_empty() {
            "MAILER-DAEMON"
        } else {
            &envelope.mail_from
        };
        let _ = writeln!(
            out,
            "{:<16} {:>8} {:<20} {sender}",
            envelope.id.as_str(),
            entry.size,
            arrival
        );
        for rcpt in &envelope.recipients {
            match &rcpt.status {
                RecipientStatus::Deferred { outcome, .. } => {
                    let _ = writeln!(out, "{:47}({outcome})", "");
                    let _ = writeln!(out, "{:47}{}", "", rcpt.address);
                }
                RecipientStatus::Pending => {
                    let _ = writeln!(out, "{:47}{}", "", rcpt.address);
                }
                _ => {}
            }
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "-- {} Kbytes in {} Request{}.",
        bytes.div_ceil(1024),
        entries.len(),
        if entries.len() == 1 { "" } else { "s" }
    );
    Ok(out)
}

/// `postcat -q`: the envelope (with each recipient's status) as JSON, a blank line,
/// and the message.
pub fn show(spool_dir: &Path, id: &QueueId) -> anyhow::Result<Vec<u8>> {
    let queued = spool::inspect_message(spool_dir, id)?;
    let mut out = serde_json::to_vec_pretty(&queued.envelope)?;
    out.extend_from_slice(b"\n\n");
    out.extend_from_slice(&queued.message);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::spool::{Envelope, Outcome, Spool, Status};

    fn envelope(rcpts: &[&str]) -> Envelope {
        Envelope::sample("alice@example.com", rcpts)
    }

    #[tokio::test]
    async fn list_and_show_read_a_live_spool_without_changing_it() {
        let dir = tempfile::tempdir().unwrap();
        let spool: Arc<Spool> = Spool::open(dir.path()).await.unwrap();
        assert_eq!(list(dir.path()).unwrap(), "Mail queue is empty\n");
        let first = envelope(&["bob@example.net", "carol@example.net"]);
        spool
            .commit(&first, Bytes::from_static(b"Subject: one\r\n\r\nbody\r\n"))
            .await
            .unwrap();
        spool
            .record(
                &first.id,
                &[
                    (
                        0,
                        RecipientStatus::Deferred {
                            attempts: 1,
                            next_attempt: 1_700_000_300,
                            outcome: Outcome::local(
                                Status::new(4, 7, 0),
                                "relay smtp.example:587: authentication failed",
                            ),
                            warned: false,
                        },
                    ),
                    (
                        1,
                        RecipientStatus::Delivered {
                            outcome: Outcome::local(Status::new(2, 0, 0), "ok"),
                        },
                    ),
                ],
            )
            .await
            .unwrap();
        // Debris a running server's commit may have in tmp/ must stay untouched.
        std::fs::write(dir.path().join("tmp/inflight"), b"x").unwrap();

        let text = list(dir.path()).unwrap();
        assert!(text.contains(first.id.as_str()), "{text}");
        assert!(text.contains("alice@example.com"), "{text}");
        assert!(
            text.contains("(4.7.0 relay smtp.example:587: authentication failed)"),
            "{text}"
        );
        assert!(text.contains("bob@example.net"), "{text}");
        assert!(
            !text.contains("carol@example.net"),
            "delivered recipients are not listed: {text}"
        );
        assert!(text.ends_with("in 1 Request.\n"), "{text}");

        let shown = String::from_utf8(show(dir.path(), &first.id).unwrap()).unwrap();
        assert!(shown.contains("\"state\": \"deferred\""), "{shown}");
        assert!(
            shown.ends_with("\n\nSubject: one\r\n\r\nbody\r\n"),
            "{shown}"
        );
        assert!(dir.path().join("tmp/inflight").exists());
        assert!(show(dir.path(), &Spool::new_id()).is_err());
    }

    #[test]
    fn request_without_a_server_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let error = request(dir.path(), "flush").unwrap_err();
        assert!(
            format!("{error:#}").contains("no server is running"),
            "{error:#}"
        );
    }
}

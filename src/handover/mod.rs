//! Handing queued messages from a pod that goes away to one that stays (scale-down
//! drain, issue 7 item 4): the receiving side listens, the drain ([`drain`]) sends.
//!
//! **What travels is the queue file itself**, envelope and message as [`crate::spool::format`] writes
//! them, with the recipient outcomes recorded so far folded into the envelope. So the
//! receiver queues the message exactly as the sender had it: queue id, MAIL and RCPT
//! parameters (ORCPT, NOTIFY, RET, ENVID), arrival time (for `maxQueueLifetime` and the
//! delay warning), attempts and next attempt per recipient, and the recipients already
//! done, which are not delivered twice. An SMTP or LMTP hop with AUTH and DSN would keep
//! the envelope but not the retry state, would restart the queue lifetime, add a
//! `Received:` header and need every queued message re-submitted as new mail.
//!
//! **Wire.** TLS on a dedicated port. All pods of a MailServer serve the same TLS
//! Secret, so the sender pins the peer's certificate to its own (the file as it is at
//! connect time: rotation changes both). The sender then proves it is a pod of the same
//! MailServer with a shared token (`handover.tokenFile`, compared in constant time):
//!
//! ```text
//! > HANDOVER <token>\n                   < ok\n
//! > <length>\n<queue file bytes>         < ok <queue id>\n   (or: error <text>\n)
//! ```
//!
//! **Durability.** The receiver answers `ok` only after [`Spool::commit`] (file and
//! directory fsynced); the sender removes its copy only after that answer. A crash in
//! between leaves the message on both sides: a repeated handover of a queue id the
//! receiver already holds is answered `ok` without a second copy, and at worst a
//! recipient is delivered twice, never lost.

pub mod drain;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::queue::QueueHandle;
use crate::spool::{QueueId, Spool, format};
use crate::tls;

/// Longest command or answer line.
const MAX_LINE: u64 = 512;

/// What both sides need: the shared token and, for TLS, the server config (receiver) or
/// the certificate file to pin (sender).
#[derive(Clone)]
pub struct Handover {
    pub token_file: PathBuf,
    pub spool: Arc<Spool>,
    pub queue: QueueHandle,
    /// Largest queue file accepted: the message size limit plus room for the envelope.
    pub max_file: u64,
}

impl Handover {
    /// Accepts handovers on `listener` until the task is dropped.
    pub async fn serve(self, listener: TcpListener, tls: Arc<rustls::ServerConfig>) {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            };
            let (acceptor, this) = (acceptor.clone(), self.clone());
            tokio::spawn(async move {
                let received = match acceptor.accept(tcp).await {
                    Ok(stream) => this.receive(stream).await,
                    Err(error) => Err(error.into()),
                };
                if let Err(error) = received {
                    tracing::warn!(%peer, error = format!("{error:#}"), "handover refused");
                }
            });
        }
    }

    async fn receive(&self, stream: impl AsyncRead + AsyncWrite + Unpin) -> anyhow::Result<()> {
        let (read, mut write) = tokio::io::split(stream);
        let mut read = BufReader::new(read);
        let hello = read_line(&mut read).await?.unwrap_or_default();
        let token = read_token(&self.token_file)?;
        let offered = hello.strip_prefix("HANDOVER ").unwrap_or_default();
        if !bool::from(offered.as_bytes().ct_eq(token.as_bytes())) {
            write.write_all(b"error not authorized\n").await?;
            bail!("wrong handover token");
        }
        write.write_all(b"ok\n").await?;
        while let Some(line) = read_line(&mut read).await? {
            let len: u64 = line.parse().context("bad length line")?;
            ensure!(
                len <= self.max_file,
                "queue file of {len} bytes is too large"
            );
            let mut data = vec![0; usize::try_from(len)?];
            read.read_exact(&mut data).await?;
            let answer = match self.accept_file(Bytes::from(data)).await {
                Ok(id) => format!("ok {id}\n"),
                Err(error) => format!("error {}\n", format!("{error:#}").replace('\n', " ")),
            };
            write.write_all(answer.as_bytes()).await?;
        }
        Ok(())
    }

    /// Queues one handed-over file, durably, and hands it to the runner.
    async fn accept_file(&self, data: Bytes) -> anyhow::Result<QueueId> {
        let (envelope, start) = format::read_prefix(&mut &data[..], data.len() as u64)?;
        let id = envelope.id;
        if !self.spool.contains(&id) {
            self.spool
                .commit(&envelope, data.slice(start as usize..))
                .await?;
            tracing::info!(%id, "queued by handover");
        }
        self.queue.enqueue(id);
        Ok(id)
    }

    /// Sends every message of the queue to `peer` (`host:port`), removing each one the
    /// peer has answered for; returns how many went.
    pub async fn send_all(&self, peer: &str, cert_file: &Path) -> anyhow::Result<usize> {
        let pinned = CertificateDer::from_pem_file(cert_file)
            .with_context(|| format!("reading {}", cert_file.display()))?;
        let connector =
            tokio_rustls::TlsConnector::from(Arc::new(tls::pinned_client_config(vec![pinned])?));
        let tcp = TcpStream::connect(peer).await?;
        // The name is not checked (the certificate is pinned); SNI needs one.
        let name = ServerName::try_from("posthorn-handover")?;
        let stream = connector.connect(name, tcp).await?;
        let (read, mut write) = tokio::io::split(stream);
        let mut read = BufReader::new(read);
        let token = read_token(&self.token_file)?;
        write
            .write_all(format!("HANDOVER {token}\n").as_bytes())
            .await?;
        expect_ok(read_line(&mut read).await?)?;
        let mut sent = 0;
        for id in self.spool.list().await? {
            let queued = self.spool.load(&id).await?;
            let prefix = format::encode_prefix(&queued.envelope, queued.message.len())?;
            let len = prefix.len() + queued.message.len();
            write.write_all(format!("{len}\n").as_bytes()).await?;
            write.write_all(&prefix).await?;
            write.write_all(&queued.message).await?;
            let answer = read_line(&mut read).await?;
            ensure!(
                answer.as_deref() == Some(&format!("ok {id}")),
                "{peer} answered {answer:?} for {id}"
            );
            // Through the runner: it waits for a delivery of the message in flight.
            self.queue.delete(id).await?;
            tracing::info!(%id, %peer, "handed over");
            sent += 1;
        }
        Ok(sent)
    }
}

fn read_token(path: &Path) -> anyhow::Result<String> {
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("reading the handover token {}", path.display()))?;
    let token = token.trim();
    ensure!(!token.is_empty(), "the handover token file is empty");
    Ok(token.to_string())
}

fn expect_ok(line: Option<String>) -> anyhow::Result<()> {
    match line.as_deref() {
        Some("ok") => Ok(()),
        other => bail!("handover refused: {other:?}"),
    }
}

/// One `\n`-terminated line without it; `None` at the end of the stream.
async fn read_line(read: &mut (impl AsyncBufReadExt + Unpin)) -> anyhow::Result<Option<String>> {
    let mut line = String::new();
    if read.take(MAX_LINE).read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    ensure!(line.ends_with('\n'), "line too long or cut off");
    line.pop();
    Ok(Some(line))
}

//! One SMTP submission connection: EHLO, STARTTLS, EHLO, AUTH PLAIN, M messages, QUIT.
//! No pipelining, so both servers see the same sequence of round trips.

use std::time::{Duration, Instant};

use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// What every connection of a run shares.
pub struct Setup {
    pub addr: String,
    pub tls: TlsConnector,
    pub server_name: rustls::pki_types::ServerName<'static>,
    /// Base64 of `\0user\0password`.
    pub auth_plain: String,
    pub from: String,
    pub rcpt: String,
    /// Message body after the headers, CRLF lines, no line starting with a dot.
    pub body: String,
    /// Prefix of every Message-ID of this run, unique per run.
    pub run_id: String,
    /// Longest wait for any one reply.
    pub reply_timeout: Duration,
}

/// The outcome of one connection.
#[derive(Default)]
pub struct Outcome {
    /// Latency of each accepted message: MAIL FROM sent to the 250 after the data.
    pub message_latencies: Vec<Duration>,
    /// Messages for which MAIL FROM was sent.
    pub attempted: u64,
    /// Connect to QUIT's reply, for connections that got that far.
    pub connection_time: Option<Duration>,
    /// `stage: first reply line` (or the I/O error) that ended the connection early.
    pub error: Option<String>,
    /// The TLS handshake resumed a session (rather than a full one); None without TLS.
    pub resumed: Option<bool>,
}

/// Runs one connection sending `messages` messages; `first_seq` numbers their ids.
pub async fn run(setup: &Setup, client: usize, first_seq: u64, messages: u64) -> Outcome {
    let mut outcome = Outcome::default();
    let started = Instant::now();
    if let Err(e) = session(setup, client, first_seq, messages, &mut outcome).await {
        outcome.error = Some(e);
    } else {
        outcome.connection_time = Some(started.elapsed());
    }
    outcome
}

async fn session(
    setup: &Setup,
    client: usize,
    first_seq: u64,
    messages: u64,
    outcome: &mut Outcome,
) -> Result<(), String> {
    let mut conn = open(setup, None).await?;
    outcome.resumed = conn
        .io
        .get_ref()
        .get_ref()
        .1
        .handshake_kind()
        .map(|kind| kind == rustls::HandshakeKind::Resumed);
    for seq in first_seq..first_seq + messages {
        outcome.attempted += 1;
        let sent = Instant::now();
        let mail = format!("MAIL FROM:<{}>\r\n", setup.from);
        conn.expect("MAIL", Some(&mail), 250).await?;
        let rcpt = format!("RCPT TO:<{}>\r\n", setup.rcpt);
        conn.expect("RCPT", Some(&rcpt), 250).await?;
        conn.expect("DATA", Some("DATA\r\n"), 354).await?;
        let message = format!(
            "From: <{from}>\r\nTo: <{rcpt}>\r\nSubject: bench {seq}\r\n\
             Message-ID: <{run}.{client}.{seq}@loadgen.test>\r\n\r\n{body}.\r\n",
            from = setup.from,
            rcpt = setup.rcpt,
            run = setup.run_id,
            body = setup.body,
        );
        conn.expect("end of data", Some(&message), 250).await?;
        outcome.message_latencies.push(sent.elapsed());
    }
    conn.expect("QUIT", Some("QUIT\r\n"), 221).await?;
    Ok(())
}

/// An authenticated session: connect (from `source`, if given), EHLO, STARTTLS, EHLO,
/// AUTH PLAIN.
pub async fn open(
    setup: &Setup,
    source: Option<std::net::IpAddr>,
) -> Result<Conn<tokio_rustls::client::TlsStream<TcpStream>>, String> {
    let tcp = match source {
        None => TcpStream::connect(&setup.addr).await,
        Some(ip) => connect_from(ip, &setup.addr).await,
    }
    .map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| format!("connect: {e}"))?;
    let mut plain = Conn::new(tcp, setup.reply_timeout);
    plain.expect("greeting", None, 220).await?;
    plain
        .expect("EHLO", Some("EHLO loadgen.test\r\n"), 250)
        .await?;
    plain.expect("STARTTLS", Some("STARTTLS\r\n"), 220).await?;
    // The server sent nothing after its 220 (no pipelining), so the buffer is empty.
    let tcp = plain.io.into_inner();
    let tls = setup
        .tls
        .connect(setup.server_name.clone(), tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let mut conn = Conn::new(tls, setup.reply_timeout);
    conn.expect("EHLO", Some("EHLO loadgen.test\r\n"), 250)
        .await?;
    let auth = format!("AUTH PLAIN {}\r\n", setup.auth_plain);
    conn.expect("AUTH", Some(&auth), 235).await?;
    Ok(conn)
}

/// A connection bound to `source` (another 127.0.0.x: more ephemeral ports, and the
/// server's per-address limits see several clients).
async fn connect_from(source: std::net::IpAddr, addr: &str) -> std::io::Result<TcpStream> {
    let target = tokio::net::lookup_host(addr)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::other("no address"))?;
    let socket = match target {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.bind((source, 0).into())?;
    socket.connect(target).await
}

pub struct Conn<S> {
    io: BufReader<S>,
    timeout: Duration,
    line: String,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    fn new(io: S, timeout: Duration) -> Self {
        Conn {
            io: BufReader::new(io),
            timeout,
            line: String::new(),
        }
    }

    /// Sends `command` (if any), reads the whole reply and checks its code; on any other
    /// code the error is `stage: ` and the reply's first line.
    async fn expect(
        &mut self,
        stage: &str,
        command: Option<&str>,
        code: u16,
    ) -> Result<(), String> {
        if let Some(command) = command {
            self.io
                .get_mut()
                .write_all(command.as_bytes())
                .await
                .map_err(|e| format!("{stage}: write: {e}"))?;
        }
        let first = tokio::time::timeout(self.timeout, self.reply())
            .await
            .map_err(|_| format!("{stage}: no reply within {:?}", self.timeout))?
            .map_err(|e| format!("{stage}: read: {e}"))?;
        if first.starts_with(&code.to_string()) {
            Ok(())
        } else {
            Err(format!("{stage}: {first}"))
        }
    }

    /// Reads the lines of one reply; returns the first, without its line end.
    async fn reply(&mut self) -> std::io::Result<String> {
        let mut first = None;
        loop {
            self.line.clear();
            if self.io.read_line(&mut self.line).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let line = self.line.trim_end();
            if first.is_none() {
                first = Some(line.to_string());
            }
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(first.unwrap_or_default());
            }
        }
    }
}

/// Base64 of the AUTH PLAIN initial response for `user` and `password`.
pub fn auth_plain(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"))
}

/// A body that makes the whole message about `size` bytes: the headers take about 200,
/// the rest is lines of 62 printable characters and CRLF.
pub fn body(size: usize) -> String {
    let line = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\r\n";
    line.repeat(size.saturating_sub(200).div_ceil(line.len()).max(1))
}

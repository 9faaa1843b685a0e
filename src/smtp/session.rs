//! One SMTP session: the state machine from greeting to QUIT.
//!
//! Input is read into a fixed buffer and fed to incremental parsers (smtp-proto's, and
//! [`super::data`] for DATA, which decides where a message ends); replies are collected
//! and written once per read, which is what PIPELINING needs. All policy decisions are
//! made at RCPT (`smtpd_delay_reject = yes`).

use std::net::SocketAddr;
use std::slice::Iter;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use smtp_proto::request::receiver::{BdatReceiver, DummyDataReceiver, LineReceiver};
use smtp_proto::{Error as ParseError, MailFrom, RcptTo, Request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::command::parse_command;
use super::data::{DataReceiver, Discard};
use super::deadline::Deadline;
use super::duplicates::DuplicateFilter;
use super::envelope::{body_type, recipients, ret_type};
use super::limits::{Refused, Slot};
use super::received::{self, Trace};
use super::size_param::{DeclaredSize, declared_size};
use super::stream::Stream;
use super::{ListenerKind, Server, client_name, printable};
use crate::auth::{Verdict, sasl};
use crate::policy::RcptContext;
use crate::spool::{self, Envelope, QueueId, Spool, TlsInfo};

/// What one read takes while message content streams in: 4 KiB, like Postfix's stream
/// buffers. The bytes are parsed as they come, so a larger buffer only saves read calls
/// on large plaintext messages.
const READ_BUFFER: usize = 4 * 1024;
/// What one read takes between commands. Idle sessions wait here, so this is what each
/// of them holds; a longer command line continues in `partial`.
const COMMAND_READ_BUFFER: usize = 512;
/// Longest command line accepted (RFC 5321 §4.5.3.1.4 allows 512; extensions need more).
const MAX_COMMAND_LINE: usize = 4096;
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the connection loop must do after a batch of input.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    Continue,
    StartTls,
    Close,
}

enum State {
    Command,
    /// Discarding the rest of an overlong or unparsable command line.
    SkipLine,
    Data(DataReceiver),
    /// The rest of a DATA message that grew past the size limit: 552 at its end.
    DataTooBig(DataReceiver),
    Bdat(BdatReceiver),
    /// BDAT content that will be refused (too big, or no transaction).
    Discard(DummyDataReceiver, Discarding),
    Auth(AuthStep, LineReceiver<()>),
}

#[derive(Clone, Copy)]
enum Discarding {
    /// Message grew past the size limit: 552 at the end, transaction dropped.
    TooBig,
    /// BDAT without a valid transaction: 503 at the end of the chunk.
    NoTransaction,
}

enum AuthStep {
    PlainResponse,
    LoginUser,
    LoginPassword(String),
}

struct Transaction {
    from: MailFrom<String>,
    /// Recipients as given, without duplicates.
    rcpts: Vec<RcptTo<String>>,
    /// RCPT commands accepted, duplicates included (Postfix's `rcpt_count`).
    accepted: usize,
    duplicates: DuplicateFilter,
    /// Received header, then the content as it arrives.
    message: Vec<u8>,
    id: Option<QueueId>,
}

struct Session {
    server: Arc<Server>,
    kind: ListenerKind,
    peer: SocketAddr,
    client: String,
    helo: Option<String>,
    esmtp: bool,
    tls: Option<TlsInfo>,
    login: Option<String>,
    txn: Option<Transaction>,
    errors: usize,
    state: State,
    /// The start of a command line that has not ended yet.
    partial: Vec<u8>,
    out: Vec<u8>,
    /// This connection's place in the connection limits. Given back before the last
    /// reply is written, so a client may connect again as soon as it has read it; a
    /// client that does not read keeps the socket only until the write timeout.
    slot: Option<Slot>,
}

/// Runs a session over `io`, a connection from `peer` (TCP in production, a
/// `tokio::io::duplex` pipe in tests).
pub async fn run<S>(server: Arc<Server>, kind: ListenerKind, io: S, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let metrics = server.metrics.clone();
    let slot = match server.limits.acquire(peer.ip()) {
        Ok(slot) => slot,
        Err(refused) => {
            let hostname = &server.config.hostname;
            let too_many_from = || {
                format!(
                    "421 4.7.0 {hostname} Error: too many connections from {}\r\n",
                    peer.ip()
                )
            };
            let (reason, reply) = match refused {
                Refused::Total => (
                    "limit_total",
                    format!("421 4.7.0 {hostname} Error: too many connections\r\n"),
                ),
                Refused::PerIp => ("limit_per_ip", too_many_from()),
                // Same words as per IP: the client need not know how addresses are grouped.
                Refused::PerNetwork => ("limit_per_network", too_many_from()),
            };
            tracing::warn!(reason, "connection refused");
            metrics.connection_rejected(kind.name(), reason);
            // On 465 the client expects TLS from the first byte; a handshake just to say
            // no would cost what the limit saves, so the connection is closed unanswered.
            if kind.implicit_tls() {
                return;
            }
            let mut io = io;
            let _ =
                tokio::time::timeout(Duration::from_secs(5), io.write_all(reply.as_bytes())).await;
            return;
        }
    };
    metrics.connection_opened(kind.name());
    tracing::info!("connect");
    let mut session = Session {
        client: client_name(peer),
        server,
        kind,
        peer,
        helo: None,
        esmtp: false,
        tls: None,
        login: None,
        txn: None,
        errors: 0,
        state: State::Command,
        partial: Vec::new(),
        out: Vec::new(),
        slot: Some(slot),
    };
    let result = session.converse(io).await;
    metrics.connection_closed(kind.name());
    match result {
        Ok(()) => tracing::info!("disconnect"),
        Err(err) => tracing::info!(error = %err, "disconnect"),
    }
}

impl Session {
    fn hostname(&self) -> &str {
        &self.server.config.hostname
    }

    async fn converse<S>(&mut self, io: S) -> std::io::Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut stream = Stream::Plain(io);
        if self.kind.implicit_tls() {
            stream = match self.handshake(stream).await {
                Some(tls) => tls,
                None => return Ok(()),
            };
        }
        let greeting = format!("220 {} ESMTP\r\n", self.hostname());
        self.write(&mut stream, greeting.as_bytes()).await?;

        let limits = &self.server.config.limits;
        let (min_rate, stress_timeout) = (limits.min_data_rate, limits.stress_idle_timeout);
        let mut stress = self.server.limits.stress();
        let mut deadline = Deadline::start(Instant::now(), self.timeout());
        let mut buf = Vec::new();
        loop {
            let size = if self.receiving_content() {
                READ_BUFFER
            } else {
                COMMAND_READ_BUFFER
            };
            if buf.len() != size {
                buf.resize(size, 0);
                buf.shrink_to_fit();
            }
            let n = tokio::select! {
                read = stream.read(&mut buf) => read?,
                () = tokio::time::sleep_until(deadline.at()) => {
                    tracing::info!(stress = *stress.borrow(), "timeout after {}", self.state_name());
                    self.slot = None;
                    let reply =
                        format!("421 4.4.2 {} Error: timeout exceeded\r\n", self.hostname());
                    self.write(&mut stream, reply.as_bytes()).await?;
                    return Ok(());
                }
                Ok(()) = stress.changed() => {
                    if *stress.borrow_and_update() {
                        deadline.shorten(Instant::now(), stress_timeout);
                    }
                    continue;
                }
            };
            if n == 0 {
                if !matches!(self.state, State::Command | State::SkipLine) {
                    tracing::info!("lost connection after {}", self.state_name());
                }
                return Ok(());
            }
            // Boxed: what the commands await (a recipient's DNS lookups, the spool commit)
            // is several times the size of the rest of the session, and inline it would
            // be part of every idle session's task.
            let action = Box::pin(self.ingest(&mut buf[..n].iter())).await;
            if action == Action::Close {
                self.slot = None;
            }
            let replied = !self.out.is_empty();
            // Taken, not reused: an idle session keeps no reply buffer.
            let out = std::mem::take(&mut self.out);
            self.write(&mut stream, &out).await?;
            match action {
                Action::Continue => {}
                Action::Close => {
                    let _ = tokio::time::timeout(self.timeout(), stream.shutdown()).await;
                    return Ok(());
                }
                // Bytes pipelined after STARTTLS were dropped by `ingest` (they are
                // plaintext the attacker may have injected, CVE-2011-0411).
                Action::StartTls => {
                    stream = match self.handshake(stream).await {
                        Some(tls) => tls,
                        None => return Ok(()),
                    };
                    // RFC 3207 §4.2: forget everything learned before TLS.
                    self.helo = None;
                    self.esmtp = false;
                    self.login = None;
                    self.txn = None;
                }
            }
            // Each reply starts the clock for the next request; message content may
            // extend it by its rate, anything else (a trickled line) may not.
            let now = Instant::now();
            if replied {
                deadline = Deadline::start(now, self.timeout());
            } else if self.receiving_content() {
                deadline.credit(now, n, min_rate, self.timeout());
            }
        }
    }

    /// The time a client has for a request, and a write of ours: shorter under stress.
    fn timeout(&self) -> Duration {
        let limits = &self.server.config.limits;
        if self.server.limits.stressed() {
            limits.stress_idle_timeout
        } else {
            limits.idle_timeout
        }
    }

    fn receiving_content(&self) -> bool {
        matches!(
            self.state,
            State::Data(_) | State::DataTooBig(_) | State::Bdat(_) | State::Discard(..)
        )
    }

    async fn write<S>(&self, stream: &mut Stream<S>, bytes: &[u8]) -> std::io::Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if bytes.is_empty() {
            return Ok(());
        }
        match tokio::time::timeout(self.timeout(), async {
            stream.write_all(bytes).await?;
            stream.flush().await
        })
        .await
        {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "write timeout",
            )),
        }
    }

    async fn handshake<S>(&mut self, stream: Stream<S>) -> Option<Stream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let Stream::Plain(io) = stream else {
            return Some(stream);
        };
        let acceptor = TlsAcceptor::from(self.server.tls.clone());
        let name = self.kind.name();
        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
            Ok(Ok(tls)) => {
                let (version, cipher) = crate::tls::session_info(tls.get_ref().1);
                tracing::info!(%version, %cipher, "TLS established");
                self.server.metrics.tls_handshake(name, true);
                self.tls = Some(TlsInfo {
                    version: version.to_string(),
                    cipher: cipher.to_string(),
                });
                Some(Stream::Tls(Box::new(tls)))
            }
            Ok(Err(err)) => {
                tracing::info!(error = %err, "TLS handshake failed");
                self.server.metrics.tls_handshake(name, false);
                None
            }
            Err(_) => {
                tracing::info!("TLS handshake timed out");
                self.server.metrics.tls_handshake(name, false);
                None
            }
        }
    }

    fn state_name(&self) -> &'static str {
        match self.state {
            State::Command | State::SkipLine => match &self.txn {
                None => "CONNECT",
                Some(t) if t.rcpts.is_empty() => "MAIL",
                Some(_) => "RCPT",
            },
            State::Data(_) | State::DataTooBig(_) => "DATA",
            State::Bdat(_) | State::Discard(..) => "BDAT",
            State::Auth(..) => "AUTH",
        }
    }

    fn reply(&mut self, line: &str) {
        self.out.extend_from_slice(line.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    /// A 4xx/5xx reply that counts towards `maxErrors`.
    fn error(&mut self, line: &str) {
        self.errors += 1;
        self.reply(line);
    }

    /// Consumes the bytes of one read, advancing the state machine.
    async fn ingest(&mut self, bytes: &mut Iter<'_, u8>) -> Action {
        while !bytes.as_slice().is_empty() {
            let action = match &mut self.state {
                State::Command => {
                    // A command ends at LF, CR or not before it, as with Postfix's
                    // `smtpd_forbid_bare_newline = normalize`.
                    let rest = bytes.as_slice();
                    let Some(end) = rest.iter().position(|&b| b == b'\n') else {
                        // An incomplete line: keep it for the next read, within bounds.
                        *bytes = [].iter();
                        if self.partial.len() + rest.len() > MAX_COMMAND_LINE {
                            self.partial.clear();
                            self.state = State::SkipLine;
                            self.error("500 5.5.2 Error: line too long");
                        } else {
                            self.partial.extend_from_slice(rest);
                        }
                        continue;
                    };
                    *bytes = rest[end + 1..].iter();
                    let mut joined = std::mem::take(&mut self.partial);
                    let line = if joined.is_empty() {
                        &rest[..=end]
                    } else {
                        joined.extend_from_slice(&rest[..=end]);
                        &joined[..]
                    };
                    let action = self.line(line).await;
                    // Reuse the allocation for the next partial line.
                    joined.clear();
                    self.partial = joined;
                    action
                }
                State::SkipLine => {
                    let rest = bytes.as_slice();
                    match rest.iter().position(|&b| b == b'\n') {
                        Some(pos) => {
                            *bytes = rest[pos + 1..].iter();
                            self.state = State::Command;
                        }
                        None => *bytes = [].iter(),
                    }
                    Action::Continue
                }
                State::Data(receiver) => {
                    let txn = self.txn.as_mut().expect("DATA state has a transaction");
                    let rest = bytes.as_slice();
                    let taken = receiver.ingest(rest, &mut txn.message);
                    *bytes = rest[taken.unwrap_or(rest.len())..].iter();
                    let done = taken.is_some();
                    if done && receiver.saw_bare_lf() {
                        // Postfix's `smtpd_forbid_bare_newline = note` would say so too.
                        tracing::info!("bare <LF> received, stored as <CR><LF>");
                    }
                    let too_big = txn.message.len() > self.server.config.limits.max_message_size;
                    if too_big {
                        txn.message = Vec::new();
                    }
                    match (done, too_big) {
                        (true, false) => {
                            self.state = State::Command;
                            self.commit().await;
                        }
                        (true, true) => {
                            self.state = State::Command;
                            self.too_big();
                        }
                        (false, true) => self.state = State::DataTooBig(*receiver),
                        (false, false) => {}
                    }
                    Action::Continue
                }
                State::Bdat(receiver) => {
                    let txn = self.txn.as_mut().expect("BDAT state has a transaction");
                    if receiver.ingest(bytes, &mut txn.message) {
                        let last = receiver.is_last;
                        self.state = State::Command;
                        if last {
                            self.commit().await;
                        } else {
                            let size = txn.message.len();
                            self.reply(&format!("250 2.0.0 Ok: {size} bytes"));
                        }
                    }
                    Action::Continue
                }
                State::DataTooBig(receiver) => {
                    let rest = bytes.as_slice();
                    let taken = receiver.ingest(rest, &mut Discard);
                    *bytes = rest[taken.unwrap_or(rest.len())..].iter();
                    if taken.is_some() {
                        self.state = State::Command;
                        self.too_big();
                    }
                    Action::Continue
                }
                State::Discard(receiver, why) => {
                    if receiver.ingest(bytes) {
                        let why = *why;
                        self.state = State::Command;
                        self.discarded(why);
                    }
                    Action::Continue
                }
                State::Auth(_, lines) => {
                    if lines.ingest(bytes) {
                        let line = std::mem::take(&mut lines.buf);
                        self.auth_line(line).await;
                    }
                    Action::Continue
                }
            };
            if self.errors >= self.server.config.limits.max_errors {
                tracing::info!("too many errors after {}", self.state_name());
                let hostname = self.hostname().to_string();
                self.reply(&format!("421 4.7.0 {hostname} Error: too many errors"));
                return Action::Close;
            }
            match action {
                Action::Continue => {}
                // Anything pipelined after STARTTLS or QUIT is dropped.
                other => return other,
            }
        }
        Action::Continue
    }

    /// One complete command line, LF included.
    async fn line(&mut self, line: &[u8]) -> Action {
        if line.len() > MAX_COMMAND_LINE {
            self.error("500 5.5.2 Error: line too long");
            return Action::Continue;
        }
        match parse_command(line) {
            Ok(request) => self.command(request, line).await,
            Err(ParseError::InvalidParameter { param: "SIZE" }) => {
                let limit = self.server.config.limits.max_message_size;
                match declared_size(line).refusal(limit) {
                    Some(reply) if reply.starts_with("552") => {
                        self.server
                            .metrics
                            .message_rejected(self.kind.name(), "size");
                        self.error(reply);
                    }
                    _ => self.error("501 5.5.4 Bad message size syntax"),
                }
                Action::Continue
            }
            Err(err) => {
                self.parse_error(err);
                Action::Continue
            }
        }
    }

    fn discarded(&mut self, why: Discarding) {
        match why {
            Discarding::TooBig => self.too_big(),
            Discarding::NoTransaction => self.error("503 5.5.1 Error: need RCPT command"),
        }
    }

    fn too_big(&mut self) {
        self.txn = None;
        self.server
            .metrics
            .message_rejected(self.kind.name(), "size");
        self.error("552 5.3.4 Message size exceeds fixed limit");
    }

    fn parse_error(&mut self, err: ParseError) {
        let reply = match err {
            ParseError::UnknownCommand => "502 5.5.2 Error: command not recognized".to_string(),
            ParseError::SyntaxError { syntax } => format!("501 5.5.4 Syntax: {syntax}"),
            ParseError::InvalidSenderAddress => "501 5.1.7 Bad sender address syntax".into(),
            ParseError::InvalidRecipientAddress => "501 5.1.3 Bad recipient address syntax".into(),
            ParseError::InvalidParameter { param } => format!("501 5.5.4 Bad {param} parameter"),
            ParseError::UnsupportedParameter { param } => {
                format!("555 5.5.4 Unsupported option: {}", printable(&param))
            }
            ParseError::ResponseTooLong => "500 5.5.2 Error: line too long".into(),
            ParseError::NeedsMoreData { .. } | ParseError::InvalidResponse { .. } => {
                "500 5.5.2 Error: bad syntax".into()
            }
        };
        self.error(&reply);
    }

    /// One parsed command; `line` is its raw text.
    async fn command(&mut self, request: Request<String>, line: &[u8]) -> Action {
        if self.kind.tls_required()
            && self.tls.is_none()
            && !matches!(
                request,
                Request::Ehlo { .. }
                    | Request::Helo { .. }
                    | Request::StartTls
                    | Request::Noop { .. }
                    | Request::Rset
                    | Request::Quit
            )
        {
            self.error("530 5.7.0 Must issue a STARTTLS command first");
            return Action::Continue;
        }
        match request {
            Request::Ehlo { host } => self.ehlo(host, true),
            Request::Helo { host } => self.ehlo(host, false),
            Request::StartTls => return self.starttls(),
            Request::Auth {
                mechanism,
                initial_response,
            } => self.auth(mechanism, initial_response).await,
            Request::Mail { from } => self.mail(from, declared_size(line)),
            Request::Rcpt { to } => self.rcpt(to).await,
            Request::Data => self.data(),
            Request::Bdat {
                chunk_size,
                is_last,
            } => self.bdat(chunk_size, is_last).await,
            Request::Rset => {
                self.txn = None;
                self.reply("250 2.0.0 Ok");
            }
            Request::Noop { .. } => self.reply("250 2.0.0 Ok"),
            Request::Quit => {
                self.reply("221 2.0.0 Bye");
                return Action::Close;
            }
            Request::Vrfy { .. } => self.error("502 5.5.1 VRFY command is disabled"),
            Request::Lhlo { .. }
            | Request::Expn { .. }
            | Request::Help { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => self.error("502 5.5.2 Error: command not recognized"),
        }
        Action::Continue
    }

    fn ehlo(&mut self, host: String, esmtp: bool) {
        self.helo = Some(host);
        self.esmtp = esmtp;
        self.txn = None;
        let hostname = self.hostname().to_string();
        if !esmtp {
            self.reply(&format!("250 {hostname}"));
            return;
        }
        let mut lines = vec![
            hostname,
            "PIPELINING".to_string(),
            format!("SIZE {}", self.server.config.limits.max_message_size),
        ];
        if self.tls.is_none() {
            lines.push("STARTTLS".into());
        }
        if self.kind.auth_enabled() && self.tls.is_some() {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        lines.extend(
            [
                "ENHANCEDSTATUSCODES",
                "8BITMIME",
                "DSN",
                "SMTPUTF8",
                "CHUNKING",
            ]
            .map(String::from),
        );
        let last = lines.len() - 1;
        for (i, line) in lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            self.out
                .extend_from_slice(format!("250{sep}{line}\r\n").as_bytes());
        }
    }

    fn starttls(&mut self) -> Action {
        if self.tls.is_some() {
            self.error("554 5.5.1 Error: TLS already active");
            return Action::Continue;
        }
        self.reply("220 2.0.0 Ready to start TLS");
        Action::StartTls
    }

    async fn auth(&mut self, mechanism: u64, initial: String) {
        if !self.kind.auth_enabled() {
            return self.error("503 5.5.1 Error: authentication not enabled");
        }
        if self.helo.is_none() {
            return self.error("503 5.5.1 Error: send HELO/EHLO first");
        }
        if self.login.is_some() {
            return self.error("503 5.5.1 Error: already authenticated");
        }
        if self.txn.is_some() {
            return self.error("503 5.5.1 Error: MAIL transaction in progress");
        }
        match mechanism {
            smtp_proto::AUTH_PLAIN if initial.is_empty() => {
                self.reply("334 ");
                self.state = State::Auth(AuthStep::PlainResponse, LineReceiver::new(()));
            }
            smtp_proto::AUTH_PLAIN => self.auth_plain(initial.as_bytes()).await,
            smtp_proto::AUTH_LOGIN if initial.is_empty() => {
                self.reply(&format!("334 {}", sasl::LOGIN_USERNAME_CHALLENGE));
                self.state = State::Auth(AuthStep::LoginUser, LineReceiver::new(()));
            }
            smtp_proto::AUTH_LOGIN => self.auth_login_user(initial.as_bytes()),
            _ => self
                .error("535 5.7.8 Error: authentication failed: Invalid authentication mechanism"),
        }
    }

    async fn auth_line(&mut self, line: Vec<u8>) {
        let State::Auth(step, _) = std::mem::replace(&mut self.state, State::Command) else {
            return;
        };
        match step {
            AuthStep::PlainResponse => self.auth_plain(&line).await,
            AuthStep::LoginUser => self.auth_login_user(&line),
            AuthStep::LoginPassword(user) => match sasl::decode_login_password(&line) {
                Ok(password) => self.verify("LOGIN", "", &user, password.as_bytes()).await,
                Err(err) => self.error(err.smtp_reply()),
            },
        }
    }

    async fn auth_plain(&mut self, response: &[u8]) {
        match sasl::decode_plain(response) {
            Ok(creds) => {
                let password = creds.password.as_bytes();
                self.verify("PLAIN", &creds.authzid, &creds.authcid, password)
                    .await
            }
            Err(err) => {
                if matches!(err, sasl::SaslError::Malformed(_)) {
                    self.server
                        .metrics
                        .auth_attempt(self.kind.name(), "PLAIN", false);
                }
                self.error(err.smtp_reply())
            }
        }
    }

    fn auth_login_user(&mut self, response: &[u8]) {
        match sasl::decode_login_username(response) {
            Ok(user) => {
                self.reply(&format!("334 {}", sasl::LOGIN_PASSWORD_CHALLENGE));
                self.state = State::Auth(AuthStep::LoginPassword(user), LineReceiver::new(()));
            }
            Err(err) => self.error(err.smtp_reply()),
        }
    }

    async fn verify(
        &mut self,
        mechanism: &'static str,
        authzid: &str,
        authcid: &str,
        password: &[u8],
    ) {
        let auth = self.server.auth.clone();
        let verdict = auth
            .authenticate(Some(self.peer.ip()), authzid, authcid, password)
            .await;
        let metrics = &self.server.metrics;
        metrics.set_auth_throttle_keys(auth.throttle_tracked_keys());
        match verdict {
            Verdict::Authenticated(login) => {
                metrics.auth_attempt(self.kind.name(), mechanism, true);
                tracing::info!(sasl_method = mechanism, sasl_username = %login, "authenticated");
                self.login = Some(login);
                self.reply("235 2.7.0 Authentication successful");
            }
            Verdict::Failed => {
                metrics.auth_attempt(self.kind.name(), mechanism, false);
                tracing::warn!(sasl_method = mechanism, "SASL authentication failed");
                self.error("535 5.7.8 Error: authentication failed: authentication failure");
            }
            Verdict::Throttled => {
                metrics.auth_throttled(self.kind.name());
                tracing::warn!(sasl_method = mechanism, "SASL authentication throttled");
                // Postfix's reply to a temporary failure of its SASL backend.
                let reason = crate::auth::THROTTLED_REASON;
                self.error(&format!(
                    "454 4.7.0 Temporary authentication failure: {reason}"
                ));
            }
        }
    }

    fn mail(&mut self, from: MailFrom<String>, size: DeclaredSize) {
        if self.helo.is_none() {
            return self.error("503 5.5.1 Error: send HELO/EHLO first");
        }
        if self.txn.is_some() {
            return self.error("503 5.5.1 Error: nested MAIL command");
        }
        // BINARYMIME is not offered (as in Postfix): content is always text with CRLF
        // lines, so nothing but CRLF ever reaches a next hop.
        if from.flags & smtp_proto::MAIL_BODY_BINARYMIME != 0 {
            return self.error("555 5.5.4 Unsupported option: BODY=BINARYMIME");
        }
        // The size as declared, not smtp-proto's reading of it (see `size_param`).
        if let Some(reply) = size.refusal(self.server.config.limits.max_message_size) {
            self.server
                .metrics
                .message_rejected(self.kind.name(), "size");
            return self.error(reply);
        }
        self.txn = Some(Transaction {
            from,
            rcpts: Vec::new(),
            accepted: 0,
            duplicates: DuplicateFilter::default(),
            message: Vec::new(),
            id: None,
        });
        self.reply("250 2.1.0 Ok");
    }

    async fn rcpt(&mut self, to: RcptTo<String>) {
        let Some(txn) = &self.txn else {
            return self.error("503 5.5.1 Error: need MAIL command");
        };
        if txn.accepted >= self.server.config.limits.max_recipients {
            // Not counted as an error: the client is told to send the rest later.
            return self.reply("452 4.5.3 Error: too many recipients");
        }
        let ctx = RcptContext {
            kind: self.kind,
            client: &self.client,
            login: self.login.as_deref(),
            sender: &txn.from.address,
        };
        let server = self.server.clone();
        match server
            .policy
            .check_rcpt(&ctx, &to.address, &server.auth)
            .await
        {
            Ok(()) => {
                if let Some(txn) = self.txn.as_mut() {
                    txn.accepted += 1;
                    if txn.duplicates.is_new(&to) {
                        txn.rcpts.push(to);
                    }
                }
                self.reply("250 2.1.5 Ok");
            }
            Err(reject) => {
                tracing::info!(
                    reason = reject.reason,
                    from = %printable(self.txn.as_ref().map(|t| t.from.address.as_str()).unwrap_or_default()),
                    to = %printable(&to.address),
                    "NOQUEUE: reject: RCPT: {}", reject.reply
                );
                self.server
                    .metrics
                    .message_rejected(self.kind.name(), reject.reason);
                self.error(&reject.reply);
            }
        }
    }

    /// Common start of DATA and the first BDAT: give the message its id and trace header.
    fn begin_content(&mut self) -> bool {
        let Some(txn) = self.txn.as_mut() else {
            return false;
        };
        if txn.rcpts.is_empty() {
            return false;
        }
        if txn.id.is_none() {
            let id = Spool::new_id();
            Trace {
                helo: self.helo.as_deref().unwrap_or_default(),
                ip: self.peer.ip(),
                tls: self
                    .tls
                    .as_ref()
                    .map(|t| (t.version.as_str(), t.cipher.as_str())),
                hostname: &self.server.config.hostname,
                authenticated: self.login.is_some(),
                esmtp: self.esmtp,
                id: &id.to_string(),
                single_recipient: match txn.rcpts.as_slice() {
                    [one] if txn.accepted == 1 => Some(one.address.as_str()),
                    _ => None,
                },
            }
            .write(&mut txn.message);
            txn.id = Some(id);
        }
        true
    }

    fn data(&mut self) {
        match &self.txn {
            None => return self.error("503 5.5.1 Error: need RCPT command"),
            Some(t) if t.rcpts.is_empty() => {
                return self.error("554 5.5.1 Error: no valid recipients");
            }
            Some(t) if t.id.is_some() => return self.error("503 5.5.1 Error: BDAT in progress"),
            Some(_) => {}
        }
        self.begin_content();
        self.reply("354 End data with <CR><LF>.<CR><LF>");
        self.state = State::Data(DataReceiver::new());
    }

    async fn bdat(&mut self, chunk_size: usize, is_last: bool) {
        let refused = if !self.begin_content() {
            Some(Discarding::NoTransaction)
        } else if self.txn.as_ref().map_or(0, |t| t.message.len()) + chunk_size
            > self.server.config.limits.max_message_size
        {
            Some(Discarding::TooBig)
        } else {
            None
        };
        match (refused, chunk_size) {
            (Some(why), 0) => self.discarded(why),
            (Some(why), n) => {
                self.state = State::Discard(DummyDataReceiver::new_bdat(n), why);
            }
            (None, 0) if is_last => self.commit().await,
            (None, 0) => {
                let size = self.txn.as_ref().map_or(0, |t| t.message.len());
                self.reply(&format!("250 2.0.0 Ok: {size} bytes"));
            }
            (None, n) => self.state = State::Bdat(BdatReceiver::new(n, is_last)),
        }
    }

    /// The end of DATA or the last BDAT: make the message durable, then answer.
    async fn commit(&mut self) {
        let Some(txn) = self.txn.take() else { return };
        let Some(id) = txn.id else { return };
        let envelope = Envelope {
            id,
            mail_from: txn.from.address.clone(),
            body: body_type(txn.from.flags),
            smtputf8: txn.from.flags & smtp_proto::MAIL_SMTPUTF8 != 0,
            ret: ret_type(txn.from.flags),
            envid: txn.from.env_id.clone(),
            recipients: recipients(&txn.rcpts, |address| {
                // Resolved at RCPT already; an alias file reloaded since with a loop in it
                // leaves the address as it is.
                let server = &self.server;
                server.policy.resolve(address, &server.auth).ok().flatten()
            }),
            login: self.login.clone(),
            client_addr: self.peer,
            client_helo: self.helo.clone().unwrap_or_default(),
            listener: self.kind.name().to_string(),
            tls: self.tls.clone(),
            received_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default(),
        };
        let mut message = txn.message;
        // BDAT content arrives as the client wrote it (DATA's is canonical already).
        if let Some(fixed) = crate::crlf::canonical(&message) {
            message = fixed;
        }
        let size = message.len();
        if size > self.server.config.limits.max_message_size {
            // Bare LFs made CRLF can take it over the limit.
            return self.too_big();
        }
        if received::hops(&message) >= received::HOPCOUNT_LIMIT {
            tracing::warn!(queue_id = %id, "message rejected: hopcount exceeded");
            let metrics = &self.server.metrics;
            metrics.message_rejected(self.kind.name(), "too_many_hops");
            return self.error("554 5.4.0 Error: too many hops");
        }
        match self.server.spool.commit(&envelope, message.into()).await {
            Ok(()) => {
                tracing::info!(
                    queue_id = %id,
                    from = %printable(&envelope.mail_from),
                    nrcpt = envelope.recipients.len(),
                    size,
                    "queued"
                );
                self.server
                    .metrics
                    .message_accepted(self.kind.name(), size as u64);
                self.server.delivery.enqueue(id);
                self.reply(&format!("250 2.0.0 Ok: queued as {id}"));
            }
            Err(err) => {
                tracing::error!(queue_id = %id, error = format!("{err:#}"), "queue file write error");
                self.server
                    .metrics
                    .message_rejected(self.kind.name(), "spool_error");
                if spool::is_out_of_space(&err) {
                    self.error("452 4.3.1 Insufficient system storage");
                } else {
                    self.error("451 4.3.0 Error: queue file write error");
                }
            }
        }
    }
}

//! Whole SMTP sessions in process: [`session::run`] over a `tokio::io::duplex` pipe,
//! against a [`Server`] with a temp spool, passwd file and self-signed certificate. No
//! queue runner (what is queued stays in the spool to be checked) and no DNS (only
//! local domains are asked about). Replies are the exact lines the integration tests
//! (tests/behaviour.rs) expect from a real `posthorn serve`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, DuplexStream,
};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::{ConnectionLimits, ListenerKind, Server, session};
use crate::auth::Authenticator;
use crate::auth::scheme::{Scheme, hash_password};
use crate::config::Config;
use crate::policy::Policy;
use crate::queue::Enqueued;
use crate::spool::Spool;
use crate::telemetry::Metrics;

mod addressing;

const HOSTNAME: &str = "mail.example.com";
const ALICE: &str = "alice@example.com";
const ALICE_PASS: &str = "alice-Secret-1";
const BOB: &str = "bob@example.com";
const BOB_PASS: &str = "bob-Secret-2";
const PEER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40000);
/// Only a broken session ever waits this long.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
const WRONG_PASSWORD: &str = "535 5.7.8 Error: authentication failed: authentication failure";
const MUST_STARTTLS: &str = "530 5.7.0 Must issue a STARTTLS command first";
const UNKNOWN_USER: &str = "550 5.1.1 <nobody@example.com>: Recipient address rejected: \
                            User unknown in virtual mailbox table";

struct Harness {
    _dir: tempfile::TempDir,
    server: Arc<Server>,
    enqueued: Enqueued,
    cert: CertificateDer<'static>,
}

impl Harness {
    async fn new() -> Harness {
        Self::with(|_| {}).await
    }

    /// A server for `example.com` with users alice and bob; `adjust` changes the config.
    async fn with(adjust: impl FnOnce(&mut Config)) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (cert, key) =
            crate::tls::self_signed_pem(HOSTNAME, Duration::from_secs(86400)).unwrap();
        std::fs::write(root.join("tls.crt"), &cert).unwrap();
        std::fs::write(root.join("tls.key"), key).unwrap();
        let hash = |password| hash_password(Scheme::Sha512Crypt, password).unwrap();
        let passwd = format!("{ALICE}:{}\n{BOB}:{}\n", hash(ALICE_PASS), hash(BOB_PASS));
        std::fs::write(root.join("passwd"), passwd).unwrap();
        let d = root.display();
        // Failed logins are answered at once and never throttled here. The name server
        // is a closed local port: a lookup (none is expected) never leaves the machine.
        let yaml = format!(
            "hostname: {HOSTNAME}\n\
             domains: [example.com]\n\
             tls: {{cert: {d}/tls.crt, key: {d}/tls.key}}\n\
             auth: {{passwdFile: {d}/passwd, failureDelay: 0s, maxFailureDelay: 0s, \
                     maxFailuresPerAddress: 0, maxFailuresPerLogin: 0}}\n\
             dns: {{nameservers: [\"127.0.0.1:9\"]}}\n\
             spool: {{directory: {d}/spool, maildirRoot: {d}/mail}}\n\
             limits: {{maxMessageSize: 1048576, maxRecipients: 100, maxErrors: 10, \
                       idleTimeout: 10s}}\n"
        );
        let mut config: Config = serde_saphyr::from_str(&yaml).unwrap();
        adjust(&mut config);
        config.validate().unwrap();
        let (delivery, enqueued) = Enqueued::handle();
        let reload = config.reload_interval;
        let server = Server {
            tls: crate::tls::server_config(&config.tls.cert, &config.tls.key, None, reload)
                .unwrap(),
            auth: Authenticator::new(&config.auth, "example.com".into(), reload).unwrap(),
            policy: Policy::new(&config).unwrap(),
            spool: Spool::open(&config.spool.directory).await.unwrap(),
            delivery,
            metrics: Arc::new(Metrics::new()),
            limits: ConnectionLimits::new(
                config.limits.max_connections,
                config.limits.max_connections_per_ip,
                config.limits.max_connections_per_network(),
            ),
            config,
        };
        Harness {
            _dir: dir,
            server: Arc::new(server),
            enqueued,
            cert: CertificateDer::from_pem_slice(cert.as_bytes()).unwrap(),
        }
    }

    /// A new session on a `kind` listener, before its greeting (which on 465 comes
    /// only after the TLS handshake).
    fn connect(&self, kind: ListenerKind) -> Client<DuplexStream> {
        let (client, server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(session::run(self.server.clone(), kind, server, PEER));
        Client {
            io: BufReader::new(client),
        }
    }

    /// A greeted session on `kind` (25 or 587) after EHLO.
    async fn ehlo(&self, kind: ListenerKind) -> Client<DuplexStream> {
        let mut c = self.connect(kind);
        c.greeting().await;
        c.cmd("EHLO client.example.org").await;
        c
    }

    /// A greeted session over TLS: implicit on 465, STARTTLS on 25 and 587; after EHLO.
    async fn tls(&self, kind: ListenerKind) -> Client<TlsStream<DuplexStream>> {
        let mut c = if kind == ListenerKind::Submissions {
            let mut c = self.connect(kind).tls(&self.cert).await;
            c.greeting().await;
            c
        } else {
            let mut c = self.ehlo(kind).await;
            c.expect("STARTTLS", "220 2.0.0 Ready to start TLS").await;
            c.tls(&self.cert).await
        };
        c.cmd("EHLO client.example.org").await;
        c
    }

    /// A session on 465 logged in as alice.
    async fn alice(&self) -> Client<TlsStream<DuplexStream>> {
        let mut c = self.tls(ListenerKind::Submissions).await;
        let plain = B64.encode(format!("\0{ALICE}\0{ALICE_PASS}"));
        c.expect(
            &format!("AUTH PLAIN {plain}"),
            "235 2.7.0 Authentication successful",
        )
        .await;
        c
    }

    /// The one message queued since the last call: its id, envelope and content.
    async fn queued(&mut self) -> (String, crate::spool::Envelope, Vec<u8>) {
        let ids = self.enqueued.ids();
        let [id] = ids.as_slice() else {
            panic!("expected one queued message, got {ids:?}");
        };
        let queued = self.server.spool.load(id).await.unwrap();
        (id.to_string(), queued.envelope, queued.message.to_vec())
    }
}

struct Client<S> {
    io: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    async fn send(&mut self, bytes: &str) {
        let io = self.io.get_mut();
        io.write_all(bytes.as_bytes()).await.unwrap();
        io.flush().await.unwrap();
    }

    /// The lines of one reply, without their CRLF.
    async fn reply(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let read = tokio::time::timeout(IO_TIMEOUT, self.io.read_line(&mut line)).await;
            let n = read
                .unwrap_or_else(|_| panic!("no reply after {lines:?}"))
                .unwrap();
            assert!(n > 0, "connection closed after {lines:?}");
            let line = line
                .strip_suffix("\r\n")
                .unwrap_or_else(|| panic!("reply line without CRLF: {line:?}"));
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line.to_string());
            if last {
                return lines;
            }
        }
    }

    async fn cmd(&mut self, line: &str) -> Vec<String> {
        self.send(&format!("{line}\r\n")).await;
        self.reply().await
    }

    /// Sends one command and checks its one-line reply.
    async fn expect(&mut self, line: &str, reply: &str) {
        assert_eq!(self.cmd(line).await, [reply], "reply to {line:?}");
    }

    async fn greeting(&mut self) {
        assert_eq!(self.reply().await, ["220 mail.example.com ESMTP"]);
    }

    /// True once the server has closed the connection, with nothing more sent.
    async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(IO_TIMEOUT, self.io.read_to_end(&mut rest)).await;
        matches!(read, Ok(Ok(0)))
    }

    /// The TLS handshake over this connection, trusting `cert` for mail.example.com.
    /// Nothing the server sent may be left unread: it would be plaintext after STARTTLS.
    async fn tls(self, cert: &CertificateDer<'static>) -> Client<TlsStream<S>> {
        assert_eq!(
            self.io.buffer(),
            b"",
            "plaintext after the reply to STARTTLS"
        );
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from(HOSTNAME).unwrap();
        let handshake = TlsConnector::from(Arc::new(config)).connect(name, self.io.into_inner());
        let tls = tokio::time::timeout(IO_TIMEOUT, handshake)
            .await
            .expect("TLS handshake timed out")
            .expect("TLS handshake");
        Client {
            io: BufReader::new(tls),
        }
    }
}

/// A multiline reply as the server writes it: `250-` on all lines but the last.
fn multiline(code: &str, lines: &[&str]) -> Vec<String> {
    let last = lines.len() - 1;
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| format!("{code}{}{line}", if i == last { ' ' } else { '-' }))
        .collect()
}

// Greeting, EHLO and HELO

#[tokio::test]
async fn greeting_names_the_host() {
    let h = Harness::new().await;
    h.connect(ListenerKind::Smtp).greeting().await;
    h.connect(ListenerKind::Submission).greeting().await;
}

#[tokio::test]
async fn ehlo_on_port_25_offers_starttls_and_no_auth() {
    let h = Harness::new().await;
    let mut c = h.connect(ListenerKind::Smtp);
    c.greeting().await;
    assert_eq!(
        c.cmd("EHLO client.example.org").await,
        multiline(
            "250",
            &[
                HOSTNAME,
                "PIPELINING",
                "SIZE 1048576",
                "STARTTLS",
                "ENHANCEDSTATUSCODES",
                "8BITMIME",
                "DSN",
                "SMTPUTF8",
                "CHUNKING",
            ]
        )
    );
}

#[tokio::test]
async fn ehlo_on_port_25_after_tls_offers_neither_starttls_nor_auth() {
    let h = Harness::new().await;
    let mut c = h.ehlo(ListenerKind::Smtp).await;
    c.expect("STARTTLS", "220 2.0.0 Ready to start TLS").await;
    let mut c = c.tls(&h.cert).await;
    assert_eq!(
        c.cmd("EHLO client.example.org").await,
        multiline(
            "250",
            &[
                HOSTNAME,
                "PIPELINING",
                "SIZE 1048576",
                "ENHANCEDSTATUSCODES",
                "8BITMIME",
                "DSN",
                "SMTPUTF8",
                "CHUNKING",
            ]
        )
    );
}

#[tokio::test]
async fn ehlo_on_submission_offers_auth_only_after_starttls() {
    let h = Harness::new().await;
    let mut c = h.connect(ListenerKind::Submission);
    c.greeting().await;
    let before = c.cmd("EHLO client.example.org").await;
    assert_eq!(
        before,
        multiline(
            "250",
            &[
                HOSTNAME,
                "PIPELINING",
                "SIZE 1048576",
                "STARTTLS",
                "ENHANCEDSTATUSCODES",
                "8BITMIME",
                "DSN",
                "SMTPUTF8",
                "CHUNKING",
            ]
        )
    );
    c.expect("STARTTLS", "220 2.0.0 Ready to start TLS").await;
    let mut c = c.tls(&h.cert).await;
    assert_eq!(
        c.cmd("EHLO client.example.org").await,
        multiline(
            "250",
            &[
                HOSTNAME,
                "PIPELINING",
                "SIZE 1048576",
                "AUTH PLAIN LOGIN",
                "ENHANCEDSTATUSCODES",
                "8BITMIME",
                "DSN",
                "SMTPUTF8",
                "CHUNKING",
            ]
        )
    );
}

#[tokio::test]
async fn submissions_greets_over_tls_and_offers_auth() {
    let h = Harness::new().await;
    let mut c = h.connect(ListenerKind::Submissions).tls(&h.cert).await;
    c.greeting().await;
    let ehlo = c.cmd("EHLO client.example.org").await;
    assert_eq!(ehlo[3], "250-AUTH PLAIN LOGIN", "{ehlo:?}");
    assert!(!ehlo.iter().any(|l| l.contains("STARTTLS")), "{ehlo:?}");
}

#[tokio::test]
async fn helo_answers_with_the_hostname_alone() {
    let h = Harness::new().await;
    let mut c = h.connect(ListenerKind::Smtp);
    c.greeting().await;
    c.expect("HELO client.example.org", "250 mail.example.com")
        .await;
}

#[tokio::test]
async fn mail_before_helo_is_refused() {
    let h = Harness::new().await;
    let mut c = h.connect(ListenerKind::Smtp);
    c.greeting().await;
    c.expect(
        "MAIL FROM:<sender@example.net>",
        "503 5.5.1 Error: send HELO/EHLO first",
    )
    .await;
}

// STARTTLS

#[tokio::test]
async fn submission_refuses_auth_and_mail_before_starttls() {
    let h = Harness::new().await;
    let mut c = h.ehlo(ListenerKind::Submission).await;
    let plain = B64.encode(format!("\0{ALICE}\0{ALICE_PASS}"));
    c.expect(&format!("AUTH PLAIN {plain}"), MUST_STARTTLS)
        .await;
    c.expect(&format!("MAIL FROM:<{ALICE}>"), MUST_STARTTLS)
        .await;
    c.expect("NOOP", "250 2.0.0 Ok").await;
}

#[tokio::test]
async fn starttls_twice_is_refused() {
    let h = Harness::new().await;
    let mut c = h.tls(ListenerKind::Submission).await;
    c.expect("STARTTLS", "554 5.5.1 Error: TLS already active")
        .await;
}

#[tokio::test]
async fn bytes_pipelined_after_starttls_are_dropped() {
    let h = Harness::new().await;
    let mut c = h.ehlo(ListenerKind::Submission).await;
    // Plaintext injected behind STARTTLS (CVE-2011-0411) must not be answered, before
    // or after the handshake: `tls` checks nothing follows the 220.
    c.send("STARTTLS\r\nNOOP\r\n").await;
    assert_eq!(c.reply().await, ["220 2.0.0 Ready to start TLS"]);
    let mut c = c.tls(&h.cert).await;
    assert_eq!(
        c.cmd("EHLO again.example.org").await[0],
        "250-mail.example.com"
    );
}

#[tokio::test]
async fn starttls_forgets_the_ehlo_before_it() {
    let h = Harness::new().await;
    let mut c = h.ehlo(ListenerKind::Smtp).await;
    c.expect("STARTTLS", "220 2.0.0 Ready to start TLS").await;
    let mut c = c.tls(&h.cert).await;
    c.expect(
        "MAIL FROM:<sender@example.net>",
        "503 5.5.1 Error: send HELO/EHLO first",
    )
    .await;
}

// AUTH

#[tokio::test]
async fn auth_plain_after_starttls_logs_in() {
    let h = Harness::new().await;
    let mut c = h.tls(ListenerKind::Submission).await;
    let plain = B64.encode(format!("\0{BOB}\0{BOB_PASS}"));
    c.expect("AUTH PLAIN", "334 ").await;
    c.expect(&plain, "235 2.7.0 Authentication successful")
        .await;
    c.expect(&format!("MAIL FROM:<{BOB}>"), "250 2.1.0 Ok")
        .await;
    c.expect(&format!("RCPT TO:<{ALICE}>"), "250 2.1.5 Ok")
        .await;
}

#[tokio::test]
async fn auth_login_logs_in() {
    let h = Harness::new().await;
    let mut c = h.tls(ListenerKind::Submissions).await;
    c.expect("AUTH LOGIN", "334 VXNlcm5hbWU6").await;
    c.expect(&B64.encode(ALICE), "334 UGFzc3dvcmQ6").await;
    c.expect(
        &B64.encode(ALICE_PASS),
        "235 2.7.0 Authentication successful",
    )
    .await;
}

#[tokio::test]
async fn auth_with_a_wrong_password_fails() {
    let h = Harness::new().await;
    let mut c = h.tls(ListenerKind::Submissions).await;
    let plain = B64.encode(format!("\0{ALICE}\0{BOB_PASS}"));
    c.expect(&format!("AUTH PLAIN {plain}"), WRONG_PASSWORD)
        .await;
    c.expect("AUTH LOGIN", "334 VXNlcm5hbWU6").await;
    c.expect(&B64.encode("nobody@example.com"), "334 UGFzc3dvcmQ6")
        .await;
    c.expect(&B64.encode(ALICE_PASS), WRONG_PASSWORD).await;
    // Still not logged in.
    c.expect(&format!("MAIL FROM:<{ALICE}>"), "250 2.1.0 Ok")
        .await;
    c.expect(
        &format!("RCPT TO:<{BOB}>"),
        "554 5.7.1 <unknown[127.0.0.1]>: Client host rejected: Access denied",
    )
    .await;
}

#[tokio::test]
async fn auth_on_port_25_is_not_enabled() {
    let h = Harness::new().await;
    let plain = B64.encode(format!("\0{ALICE}\0{ALICE_PASS}"));
    let auth = format!("AUTH PLAIN {plain}");
    let refused = "503 5.5.1 Error: authentication not enabled";
    let mut c = h.ehlo(ListenerKind::Smtp).await;
    c.expect(&auth, refused).await;
    let mut c = h.tls(ListenerKind::Smtp).await;
    c.expect(&auth, refused).await;
}

#[tokio::test]
async fn auth_twice_is_refused() {
    let h = Harness::new().await;
    let mut c = h.alice().await;
    let plain = B64.encode(format!("\0{BOB}\0{BOB_PASS}"));
    c.expect(
        &format!("AUTH PLAIN {plain}"),
        "503 5.5.1 Error: already authenticated",
    )
    .await;
}

// MAIL and RCPT

#[tokio::test]
async fn port_25_refuses_relaying() {
    let h = Harness::new().await;
    let mut c = h.ehlo(ListenerKind::Smtp).await;
    c.expect("MAIL FROM:<sender@example.net>", "250 2.1.0 Ok")
        .await;
    c.expect(
        "RCPT TO:<other@example.net>",
        "454 4.7.1 <other@example.net>: Relay access denied",
    )
    .await;
}

#[tokio::test]
async fn submission_without_login_is_refused_at_rcpt() {
    let h = Harness::new().await;
    let mut c = h.tls(ListenerKind::Submission).await;
    c.expect(&format!("MAIL FROM:<{ALICE}>"), "250 2.1.0 Ok")
        .await;
    c.expect(
        &format!("RCPT TO:<{BOB}>"),
        "554 5.7.1 <unknown[127.0.0.1]>: Client host rejected: Access denied",
    )
    .await;
}

#[tokio::test]
async fn unknown_local_user_is_refused() {
    let h = Harness::new().await;
    let mut c = h.ehlo(ListenerKind::Smtp).await;
    c.expect("MAIL FROM:<sender@example.net>", "250 2.1.0 Ok")
        .await;
    c.expect("RCPT TO:<nobody@example.com>", UNKNOWN_USER).await;
    c.expect(&format!("RCPT TO:<{BOB}>"), "250 2.1.5 Ok").await;
}

#[tokio::test]
async fn sender_not_owned_by_the_login_is_refused() {
    let h = Harness::new().await;
    let mut c = h.alice().await;
    c.expect(&format!("MAIL FROM:<{BOB}>"), "250 2.1.0 Ok")
        .await;
    c.expect(
        &format!("RCPT TO:<{BOB}>"),
        &format!("553 5.7.1 <{BOB}>: Sender address rejected: not owned by user {ALICE}"),
    )
    .await;
}

#[tokio::test]
async fn mail_and_rcpt_out_of_order_are_refused() {
    let h = Harness::new().await;
    let mut c = h.ehlo(ListenerKind::Smtp).await;
    c.expect(
        &format!("RCPT TO:<{BOB}>"),
        "503 5.5.1 Error: need MAIL command",
    )
    .await;
    c.expect("MAIL FROM:<sender@example.net>", "250 2.1.0 Ok")
        .await;
    c.expect(
        "MAIL FROM:<sender@example.net>",
        "503 5.5.1 Error: nested MAIL command",
    )
    .await;
}

#[tokio::test]
async fn recipients_past_the_limit_are_deferred() {
    let h = Harness::with(|c| c.limits.max_recipients = 2).await;
    let mut c = h.ehlo(ListenerKind::Smtp).await;
    c.expect("MAIL FROM:<sender@example.net>", "250 2.1.0 Ok")
        .await;
    c.expect(&format!("RCPT TO:<{ALICE}>"), "250 2.1.5 Ok")
        .await;
    c.expect(&format!("RCPT TO:<{BOB}>"), "250 2.1.5 Ok").await;
    c.expect(
        "RCPT TO:<alice+more@example.com>",
        "452 4.5.3 Error: too many recipients",
    )
    .await;
}

// DATA and BDAT

#[tokio::test]
async fn data_queues_the_message_with_its_envelope() {
    let mut h = Harness::new().await;
    let mut c = h.alice().await;
    // Pipelined: one write, three replies.
    c.send(&format!(
        "MAIL FROM:<{ALICE}>\r\nRCPT TO:<{BOB}>\r\nRCPT TO:<nobody@example.com>\r\nDATA\r\n"
    ))
    .await;
    assert_eq!(c.reply().await, ["250 2.1.0 Ok"]);
    assert_eq!(c.reply().await, ["250 2.1.5 Ok"]);
    assert_eq!(c.reply().await, [UNKNOWN_USER]);
    assert_eq!(c.reply().await, ["354 End data with <CR><LF>.<CR><LF>"]);
    c.send("Subject: hi\r\n\r\nHello\r\n..dot\r\n.\r\n").await;
    let reply = c.reply().await;
    let (id, envelope, message) = h.queued().await;
    assert_eq!(reply, [format!("250 2.0.0 Ok: queued as {id}")]);
    assert_eq!(envelope.mail_from, ALICE);
    let rcpts: Vec<_> = envelope.recipients.iter().map(|r| &r.address).collect();
    assert_eq!(rcpts, [BOB]);
    assert_eq!(envelope.login.as_deref(), Some(ALICE));
    assert_eq!(envelope.listener, "submissions");
    assert_eq!(envelope.client_helo, "client.example.org");
    let message = String::from_utf8(message).unwrap();
    assert!(
        message.starts_with("Received: from client.example.org"),
        "{message}"
    );
    assert!(
        message.contains(&format!("with ESMTPSA id {id}")),
        "{message}"
    );
    // Dot-unstuffed, the final dot gone.
    assert!(
        message.ends_with("\r\nSubject: hi\r\n\r\nHello\r\n.dot\r\n"),
        "{message}"
    );
}

#[tokio::test]
async fn data_without_valid_recipients_is_refused() {
    let mut h = Harness::new().await;
    let mut c = h.ehlo(ListenerKind::Smtp).await;
    c.expect("MAIL FROM:<sender@example.net>", "250 2.1.0 Ok")
        .await;
    c.expect("RCPT TO:<nobody@example.com>", UNKNOWN_USER).await;
    c.expect("DATA", "554 5.5.1 Error: no valid recipients")
        .await;
    assert_eq!(h.enqueued.ids(), []);
}

#[tokio::test]
async fn data_over_the_size_limit_is_refused() {
    let mut h = Harness::with(|c| c.limits.max_message_size = 2000).await;
    let mut c = h.ehlo(ListenerKind::Smtp).await;
    c.expect("MAIL FROM:<sender@example.net>", "250 2.1.0 Ok")
        .await;
    c.expect(&format!("RCPT TO:<{ALICE}>"), "250 2.1.5 Ok")
        .await;
    c.expect("DATA", "354 End data with <CR><LF>.<CR><LF>")
        .await;
    let body = "x".repeat(70) + "\r\n";
    c.send(&format!("Subject: big\r\n\r\n{}.\r\n", body.repeat(40)))
        .await;
    assert_eq!(
        c.reply().await,
        ["552 5.3.4 Message size exceeds fixed limit"]
    );
    assert_eq!(h.enqueued.ids(), []);
    // The transaction is gone with it.
    c.expect("DATA", "503 5.5.1 Error: need RCPT command").await;
}

#[tokio::test]
async fn bdat_chunks_make_one_message() {
    let mut h = Harness::new().await;
    let mut c = h.ehlo(ListenerKind::Smtp).await;
    c.expect("MAIL FROM:<sender@example.net>", "250 2.1.0 Ok")
        .await;
    c.expect(&format!("RCPT TO:<{ALICE}>"), "250 2.1.5 Ok")
        .await;
    let (first, second) = ("Subject: chunks\r\n\r\n", ".not a dot line\r\n");
    c.send(&format!("BDAT {}\r\n{first}", first.len())).await;
    let so_far = c.reply().await;
    c.send(&format!("BDAT {} LAST\r\n{second}", second.len()))
        .await;
    let last = c.reply().await;
    let (id, envelope, message) = h.queued().await;
    // Received header and the first chunk.
    let size = message.len() - second.len();
    assert_eq!(so_far, [format!("250 2.0.0 Ok: {size} bytes")]);
    assert_eq!(last, [format!("250 2.0.0 Ok: queued as {id}")]);
    assert_eq!(envelope.mail_from, "sender@example.net");
    assert!(message.ends_with(format!("\r\n{first}{second}").as_bytes()));
}

#[tokio::test]
async fn bdat_without_a_transaction_is_refused() {
    let mut h = Harness::new().await;
    let mut c = h.ehlo(ListenerKind::Smtp).await;
    // The chunk is read and thrown away; the session goes on.
    c.send("BDAT 4 LAST\r\nabcd").await;
    assert_eq!(c.reply().await, ["503 5.5.1 Error: need RCPT command"]);
    c.expect("NOOP", "250 2.0.0 Ok").await;
    assert_eq!(h.enqueued.ids(), []);
}

// Limits and QUIT

#[tokio::test]
async fn connections_over_the_limit_are_refused() {
    let h = Harness::with(|c| c.limits.max_connections = 1).await;
    let mut first = h.connect(ListenerKind::Smtp);
    first.greeting().await;
    let mut second = h.connect(ListenerKind::Smtp);
    assert_eq!(
        second.reply().await,
        ["421 4.7.0 mail.example.com Error: too many connections"]
    );
    assert!(second.closed().await, "refused session still open");
    // On 465 a refusal would need a handshake first: closed unanswered.
    assert!(h.connect(ListenerKind::Submissions).closed().await);
    // QUIT gives the slot back.
    first.expect("QUIT", "221 2.0.0 Bye").await;
    assert!(first.closed().await);
    h.connect(ListenerKind::Smtp).greeting().await;
}

/// Issue 9: the slot is given back before the 221 is written, so a client that reconnects
/// as soon as it reads 221 finds it free. Here the 221 cannot even be written yet (the
/// pipe is full of unread EHLO replies) and the slot must already be free.
#[tokio::test]
async fn quit_frees_the_slot_before_its_reply_is_written() {
    let h = Harness::with(|c| c.limits.max_connections_per_ip = 1).await;
    let mut first = h.connect(ListenerKind::Smtp);
    first.greeting().await;
    // About 75 KiB of replies into a 64 KiB pipe that the client does not read, for
    // commands that fit in one read of the session (4 KiB).
    first
        .send(&format!("{}QUIT\r\n", "EHLO a\r\n".repeat(500)))
        .await;
    let mut second = h.connect(ListenerKind::Smtp);
    second.greeting().await;
    let mut rest = Vec::new();
    tokio::time::timeout(IO_TIMEOUT, first.io.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(rest.len() > 64 * 1024, "only {} bytes", rest.len());
    assert!(rest.ends_with(b"250 CHUNKING\r\n221 2.0.0 Bye\r\n"));
}

#[tokio::test]
async fn too_many_errors_end_the_session() {
    let h = Harness::with(|c| c.limits.max_errors = 3).await;
    let mut c = h.ehlo(ListenerKind::Smtp).await;
    let unknown = "502 5.5.2 Error: command not recognized";
    c.expect("FOO", unknown).await;
    c.expect("BAR", unknown).await;
    c.expect("BAZ", unknown).await;
    assert_eq!(
        c.reply().await,
        ["421 4.7.0 mail.example.com Error: too many errors"]
    );
    assert!(c.closed().await, "session still open after 421");
}

#[tokio::test]
async fn overlong_line_is_refused_and_the_session_goes_on() {
    let h = Harness::new().await;
    let mut c = h.ehlo(ListenerKind::Smtp).await;
    c.expect(
        &format!("NOOP {}", "a".repeat(5000)),
        "500 5.5.2 Error: line too long",
    )
    .await;
    c.expect("NOOP", "250 2.0.0 Ok").await;
}

#[tokio::test]
async fn quit_says_bye_and_closes() {
    let h = Harness::new().await;
    let mut c = h.ehlo(ListenerKind::Smtp).await;
    c.expect("QUIT", "221 2.0.0 Bye").await;
    assert!(c.closed().await, "session still open after QUIT");
}

//! The server side of Dovecot's authentication protocol (v1.2), so an existing Postfix
//! can check logins against Posthorn with `smtpd_sasl_type = dovecot`.
//!
//! One request at a time per connection, as Postfix's smtpd sends them; each failure
//! waits the authenticator's failure delay, which holds back only that connection.
//! Failed logins are throttled per `rip` (the SMTP client's address) as on the SMTP
//! listeners; a throttled request fails with Dovecot's `code=temp_fail` and a reason
//! (Postfix 3.7 treats every FAIL alike: 535 with that reason). A client must start
//! with `VERSION`, as Dovecot requires.

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::Instrument;

use super::sasl::{self, SaslError};
use super::{Authenticator, THROTTLED_REASON, Verdict};
use crate::config::AuthConfig;
use crate::telemetry::Metrics;

/// Longest line either side may send.
const MAX_LINE: u64 = 16384;
const LISTENER: &str = "dovecot-auth";

/// Binds the socket (replacing a stale one) with the configured permissions, owner and
/// group.
pub fn bind(path: &Path, cfg: &AuthConfig) -> anyhow::Result<UnixListener> {
    let mode = cfg.socket_mode()?;
    let owner = cfg
        .dovecot_socket_owner
        .as_deref()
        .map(uid)
        .transpose()
        .context("auth.dovecotSocketOwner")?;
    let group = cfg
        .dovecot_socket_group
        .as_deref()
        .map(gid)
        .transpose()
        .context("auth.dovecotSocketGroup")?;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("removing stale socket {}", path.display()));
        }
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("binding the Dovecot auth socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    if owner.is_some() || group.is_some() {
        std::os::unix::fs::chown(path, owner, group)
            .with_context(|| format!("changing the owner of {}", path.display()))?;
    }
    Ok(listener)
}

/// A user name or a numeric uid.
fn uid(user: &str) -> anyhow::Result<u32> {
    if let Ok(id) = user.parse() {
        return Ok(id);
    }
    match nix::unistd::User::from_name(user) {
        Ok(Some(found)) => Ok(found.uid.as_raw()),
        Ok(None) => anyhow::bail!("no user named {user:?}"),
        Err(err) => Err(err).with_context(|| format!("looking up user {user:?}")),
    }
}

/// A group name or a numeric gid.
fn gid(group: &str) -> anyhow::Result<u32> {
    if let Ok(id) = group.parse() {
        return Ok(id);
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(found)) => Ok(found.gid.as_raw()),
        Ok(None) => anyhow::bail!("no group named {group:?}"),
        Err(err) => Err(err).with_context(|| format!("looking up group {group:?}")),
    }
}

pub async fn serve(listener: UnixListener, auth: Arc<Authenticator>, metrics: Arc<Metrics>) {
    let connections = AtomicU64::new(1);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!(listener = LISTENER, error = %err, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let cuid = connections.fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!("session", listener = LISTENER, cuid);
        let (auth, metrics) = (auth.clone(), metrics.clone());
        tokio::spawn(
            async move {
                if let Err(err) = Connection::new(auth, metrics).run(stream, cuid).await {
                    tracing::info!(error = %err, "auth client disconnected");
                }
            }
            .instrument(span),
        );
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Login,
}

impl Mechanism {
    fn name(&self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
        }
    }
}

/// What a client sent to log in with.
struct Credentials<'a> {
    authzid: &'a str,
    authcid: &'a str,
    password: &'a [u8],
}

/// One client line (without its LF), parsed.
#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// `VERSION major minor`: only major version 1 is spoken.
    Version {
        supported: bool,
    },
    Cpid,
    Auth(AuthRequest<'a>),
    Cont {
        id: &'a str,
        data: &'a str,
    },
}

#[derive(Debug, PartialEq, Eq)]
pub struct AuthRequest<'a> {
    pub id: &'a str,
    /// `None`: a mechanism that was not advertised.
    pub mechanism: Option<Mechanism>,
    /// `secured`: the client's connection is protected by TLS.
    pub secured: bool,
    /// `rip`: the client's address.
    pub remote: Option<IpAddr>,
    /// `resp`: the initial response, base64.
    pub response: Option<&'a str>,
}

/// Parses a client line; `None` if it is no command a client may send.
pub fn parse(line: &str) -> Option<Request<'_>> {
    let fields: Vec<&str> = line.split('\t').collect();
    Some(match fields.as_slice() {
        ["VERSION", major, ..] => Request::Version {
            supported: *major == "1",
        },
        ["VERSION"] => Request::Version { supported: false },
        ["CPID", ..] => Request::Cpid,
        ["AUTH", id, mechanism, params @ ..] => {
            let mechanism = match mechanism.to_ascii_uppercase().as_str() {
                "PLAIN" => Some(Mechanism::Plain),
                "LOGIN" => Some(Mechanism::Login),
                _ => None,
            };
            let mut request = AuthRequest {
                id,
                mechanism,
                secured: false,
                remote: None,
                response: None,
            };
            for param in params {
                match param.split_once('=') {
                    Some(("rip", ip)) => request.remote = unescape(ip).parse().ok(),
                    Some(("resp", value)) => request.response = Some(value),
                    None if *param == "secured" => request.secured = true,
                    _ => {}
                }
            }
            Request::Auth(request)
        }
        ["CONT", id, data] => Request::Cont { id, data },
        _ => return None,
    })
}

/// A request waiting for the client's next `CONT`.
enum Pending {
    PlainResponse,
    LoginUser,
    LoginPassword(String),
}

struct Connection {
    auth: Arc<Authenticator>,
    metrics: Arc<Metrics>,
    /// Set by the client's `VERSION` line, which must come first.
    versioned: bool,
    /// Requests waiting for a `CONT`, with their `rip`.
    pending: HashMap<String, (Pending, Option<IpAddr>)>,
    out: Vec<u8>,
}

/// What the server does after a client line.
enum Next {
    Continue,
    Disconnect(&'static str),
}

impl Connection {
    fn new(auth: Arc<Authenticator>, metrics: Arc<Metrics>) -> Connection {
        Connection {
            auth,
            metrics,
            versioned: false,
            pending: HashMap::new(),
            out: Vec::new(),
        }
    }

    async fn run(mut self, stream: UnixStream, cuid: u64) -> anyhow::Result<()> {
        let (read, mut write) = stream.into_split();
        let mut reader = BufReader::new(read);
        // MECH lines must precede SPID: Postfix takes a SPID without MECH for the
        // auth-master socket and gives up.
        let cookie: [u8; 16] = rand::random();
        let cookie: String = cookie.iter().map(|b| format!("{b:02x}")).collect();
        let handshake = format!(
            "VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\nSPID\t{}\nCUID\t{cuid}\nCOOKIE\t{cookie}\nDONE\n",
            std::process::id()
        );
        write.write_all(handshake.as_bytes()).await?;

        let mut line = Vec::new();
        loop {
            line.clear();
            let n = (&mut reader)
                .take(MAX_LINE + 1)
                .read_until(b'\n', &mut line)
                .await?;
            if n == 0 {
                return Ok(());
            }
            if line.last() != Some(&b'\n') {
                anyhow::bail!("line too long or truncated");
            }
            line.pop();
            let text = String::from_utf8_lossy(&line).into_owned();
            match self.handle(&text).await {
                Next::Continue => {}
                Next::Disconnect(why) => anyhow::bail!("{why}"),
            }
            if !self.out.is_empty() {
                write.write_all(&self.out).await?;
                self.out.clear();
            }
        }
    }

    async fn handle(&mut self, line: &str) -> Next {
        let request = parse(line);
        match request {
            Some(Request::Version { supported: true }) => {
                self.versioned = true;
                Next::Continue
            }
            Some(Request::Version { supported: false }) => {
                Next::Disconnect("unsupported protocol version")
            }
            // Dovecot drops a client whose first line is not VERSION.
            _ if !self.versioned => Next::Disconnect("no VERSION handshake"),
            Some(Request::Cpid) => Next::Continue,
            Some(Request::Auth(request)) => self.auth(request).await,
            Some(Request::Cont { id, data }) => self.cont(id, data).await,
            None => Next::Disconnect("unexpected command"),
        }
    }

    async fn auth(&mut self, request: AuthRequest<'_>) -> Next {
        let AuthRequest {
            id,
            mechanism,
            secured,
            remote,
            response,
        } = request;
        // Dovecot drops a client asking for a mechanism it did not advertise.
        let Some(mechanism) = mechanism else {
            return Next::Disconnect("unadvertised mechanism");
        };
        // Dovecot's disable_plaintext_auth: PLAIN and LOGIN only under TLS or from the
        // machine itself.
        if !secured && !remote.is_some_and(|ip| ip.is_loopback()) {
            self.fail(
                id,
                "reason=Plaintext authentication disallowed on non-secure (SSL/TLS) connections.",
            );
            return Next::Continue;
        }
        match (mechanism, response) {
            (Mechanism::Plain, Some(resp)) => self.plain(id, remote, resp.as_bytes()).await,
            (Mechanism::Plain, None) => self.ask(id, "", Pending::PlainResponse, remote),
            (Mechanism::Login, Some(resp)) => self.login_user(id, remote, resp.as_bytes()),
            (Mechanism::Login, None) => self.ask(
                id,
                sasl::LOGIN_USERNAME_CHALLENGE,
                Pending::LoginUser,
                remote,
            ),
        }
        Next::Continue
    }

    async fn cont(&mut self, id: &str, data: &str) -> Next {
        let Some((pending, remote)) = self.pending.remove(id) else {
            self.fail(id, "reason=Unexpected continuation");
            return Next::Continue;
        };
        match pending {
            Pending::PlainResponse => self.plain(id, remote, data.as_bytes()).await,
            Pending::LoginUser => self.login_user(id, remote, data.as_bytes()),
            Pending::LoginPassword(user) => match sasl::decode_login_password(data.as_bytes()) {
                Ok(password) => {
                    let creds = Credentials {
                        authzid: "",
                        authcid: &user,
                        password: password.as_bytes(),
                    };
                    self.verify(id, remote, &Mechanism::Login, creds).await
                }
                Err(err) => self.decode_failed(id, err),
            },
        }
        Next::Continue
    }

    fn ask(&mut self, id: &str, challenge: &str, pending: Pending, remote: Option<IpAddr>) {
        self.out
            .extend_from_slice(format!("CONT\t{id}\t{challenge}\n").as_bytes());
        self.pending.insert(id.to_string(), (pending, remote));
    }

    async fn plain(&mut self, id: &str, remote: Option<IpAddr>, response: &[u8]) {
        match sasl::decode_plain(response) {
            Ok(creds) => {
                let creds = Credentials {
                    authzid: &creds.authzid,
                    authcid: &creds.authcid,
                    password: creds.password.as_bytes(),
                };
                self.verify(id, remote, &Mechanism::Plain, creds).await
            }
            Err(err) => self.decode_failed(id, err),
        }
    }

    fn login_user(&mut self, id: &str, remote: Option<IpAddr>, response: &[u8]) {
        match sasl::decode_login_username(response) {
            Ok(user) => self.ask(
                id,
                sasl::LOGIN_PASSWORD_CHALLENGE,
                Pending::LoginPassword(user),
                remote,
            ),
            Err(err) => self.decode_failed(id, err),
        }
    }

    fn decode_failed(&mut self, id: &str, err: SaslError) {
        match err {
            SaslError::InvalidBase64 => self.fail(id, "code=invalid_base64"),
            SaslError::Cancelled => self.fail(id, "reason=Authentication aborted"),
            SaslError::Malformed(_) => self.fail(id, "reason=Invalid authentication data"),
        }
    }

    async fn verify(
        &mut self,
        id: &str,
        remote: Option<IpAddr>,
        mechanism: &Mechanism,
        creds: Credentials<'_>,
    ) {
        let verdict = self
            .auth
            .authenticate(remote, creds.authzid, creds.authcid, creds.password)
            .await;
        self.metrics
            .set_auth_throttle_keys(self.auth.throttle_tracked_keys());
        match verdict {
            Verdict::Authenticated(login) => {
                self.metrics.auth_attempt(LISTENER, mechanism.name(), true);
                tracing::info!(sasl_method = mechanism.name(), sasl_username = %login, "authenticated");
                self.out
                    .extend_from_slice(format!("OK\t{id}\tuser={}\n", escape(&login)).as_bytes());
            }
            Verdict::Failed => {
                self.metrics.auth_attempt(LISTENER, mechanism.name(), false);
                let user = format!("user={}", escape(creds.authcid));
                self.fail(id, &user);
            }
            Verdict::Throttled => {
                self.metrics.auth_throttled(LISTENER);
                let detail = format!(
                    "user={}\tcode=temp_fail\treason={THROTTLED_REASON}",
                    escape(creds.authcid)
                );
                self.fail(id, &detail);
            }
        }
    }

    fn fail(&mut self, id: &str, detail: &str) {
        self.out
            .extend_from_slice(format!("FAIL\t{id}\t{detail}\n").as_bytes());
    }
}

/// Protocol v1.2 value escaping with \001.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\x01' => out.push_str("\x011"),
            '\0' => out.push_str("\x010"),
            '\t' => out.push_str("\x01t"),
            '\r' => out.push_str("\x01r"),
            '\n' => out.push_str("\x01n"),
            c => out.push(c),
        }
    }
    out
}

pub fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\x01' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('0') => out.push('\0'),
            Some('1') => out.push('\x01'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    use std::os::unix::fs::MetadataExt;

    use super::*;
    use crate::auth::scheme::{Scheme, hash_password};

    struct Client {
        reader: BufReader<tokio::net::unix::OwnedReadHalf>,
        writer: tokio::net::unix::OwnedWriteHalf,
    }

    impl Client {
        async fn send(&mut self, line: &str) {
            self.writer
                .write_all(format!("{line}\n").as_bytes())
                .await
                .unwrap();
        }

        async fn line(&mut self) -> Option<String> {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(5), self.reader.read_line(&mut line))
                .await
                .expect("server answers")
                .unwrap();
            (n > 0).then(|| line.trim_end_matches('\n').to_string())
        }
    }

    /// A server with alice@example.com / secret, at most 3 failures per address; the
    /// socket's path and the server's metrics.
    async fn server(dir: &tempfile::TempDir) -> (std::path::PathBuf, Arc<Metrics>) {
        let passwd = dir.path().join("passwd");
        let hash = hash_password(Scheme::Sha512Crypt, "secret").unwrap();
        std::fs::write(&passwd, format!("alice@example.com:{hash}\n")).unwrap();
        let cfg = AuthConfig {
            failure_delay: Duration::from_millis(200),
            max_failure_delay: Duration::from_millis(200),
            max_failures_per_address: 3,
            ..AuthConfig::new(passwd)
        };
        let auth = Authenticator::new(&cfg, "example.com".into(), Duration::from_secs(60)).unwrap();
        let path = dir.path().join("auth");
        let listener = bind(&path, &cfg).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let metrics = Arc::new(Metrics::new());
        tokio::spawn(serve(listener, auth, metrics.clone()));
        (path, metrics)
    }

    async fn open(path: &Path) -> Client {
        let (read, writer) = UnixStream::connect(path).await.unwrap().into_split();
        Client {
            reader: BufReader::new(read),
            writer,
        }
    }

    /// A client past the handshake that checked the server's half of it.
    async fn connect(dir: &tempfile::TempDir) -> Client {
        connect_with_metrics(dir).await.0
    }

    /// [`connect`], with the server's metrics.
    async fn connect_with_metrics(dir: &tempfile::TempDir) -> (Client, Arc<Metrics>) {
        let (path, metrics) = server(dir).await;
        let mut client = open(&path).await;
        // What Postfix's xsasl_dovecot_server sends.
        client.send("VERSION\t1\t0").await;
        client.send(&format!("CPID\t{}", std::process::id())).await;
        let mut lines = Vec::new();
        while let Some(line) = client.line().await {
            let done = line == "DONE";
            lines.push(line);
            if done {
                break;
            }
        }
        assert_eq!(lines[0], "VERSION\t1\t2");
        assert_eq!(lines[1], "MECH\tPLAIN\tplaintext");
        assert_eq!(lines[2], "MECH\tLOGIN\tplaintext");
        assert!(lines[3].starts_with("SPID\t"), "{lines:?}");
        assert!(lines[4].starts_with("CUID\t"), "{lines:?}");
        assert!(
            lines[5].starts_with("COOKIE\t") && lines[5].len() == 7 + 32,
            "{lines:?}"
        );
        (client, metrics)
    }

    #[tokio::test]
    async fn auth_before_version_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = server(&dir).await;
        for first in ["CPID\t42", "CONT\t1\tAAAA"] {
            let mut c = open(&path).await;
            c.send(first).await;
            while c.line().await.is_some() {}
        }
        let mut c = open(&path).await;
        let resp = b64("\0alice@example.com\0secret");
        c.send(&format!(
            "AUTH\t1\tPLAIN\tservice=smtp\tsecured\tresp={resp}"
        ))
        .await;
        // The server's handshake, then the end: never an OK.
        let mut lines = Vec::new();
        while let Some(line) = c.line().await {
            lines.push(line);
        }
        assert_eq!(lines.last().map(String::as_str), Some("DONE"), "{lines:?}");
    }

    #[tokio::test]
    async fn throttles_per_rip() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = connect(&dir).await;
        let auth = |id: u32, rip: &str, password: &str| {
            let resp = b64(&format!("\0alice@example.com\0{password}"));
            format!("AUTH\t{id}\tPLAIN\tservice=smtp\trip={rip}\tsecured\tresp={resp}")
        };
        for id in 1..=3 {
            c.send(&auth(id, "192.0.2.9", "wrong")).await;
            assert_eq!(
                c.line().await.unwrap(),
                format!("FAIL\t{id}\tuser=alice@example.com")
            );
        }
        // The right password from the same rip is refused unchecked, as temporary.
        c.send(&auth(4, "192.0.2.9", "secret")).await;
        assert_eq!(
            c.line().await.unwrap(),
            "FAIL\t4\tuser=alice@example.com\tcode=temp_fail\treason=Too many failed logins, try again later"
        );
        c.send(&auth(5, "192.0.2.10", "secret")).await;
        assert_eq!(c.line().await.unwrap(), "OK\t5\tuser=alice@example.com");
    }

    #[test]
    fn socket_owner_and_group_by_name_or_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth");
        let postfix = nix::unistd::User::from_name("postfix")
            .unwrap()
            .expect("a postfix user (e2e/setup.sh installs Postfix)");
        let mut cfg = AuthConfig::new(dir.path().join("passwd"));
        cfg.dovecot_socket_owner = Some("postfix".into());
        cfg.dovecot_socket_group = Some("postfix".into());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        drop(bind(&path, &cfg).unwrap());
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (postfix.uid.as_raw(), postfix.gid.as_raw())
        );
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);

        cfg.dovecot_socket_owner = Some("4242".into());
        cfg.dovecot_socket_group = Some("4343".into());
        drop(bind(&path, &cfg).unwrap());
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (4242, 4343));

        cfg.dovecot_socket_owner = Some("no-such-user".into());
        let err = format!("{:#}", bind(&path, &cfg).unwrap_err());
        assert_eq!(
            err,
            "auth.dovecotSocketOwner: no user named \"no-such-user\""
        );
        cfg.dovecot_socket_owner = None;
        cfg.dovecot_socket_group = Some("no-such-group".into());
        let err = format!("{:#}", bind(&path, &cfg).unwrap_err());
        assert_eq!(
            err,
            "auth.dovecotSocketGroup: no group named \"no-such-group\""
        );
    }

    fn b64(s: &str) -> String {
        STANDARD.encode(s)
    }

    #[tokio::test]
    async fn plain_with_initial_response_as_postfix_sends_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = connect(&dir).await;
        let resp = b64("\0alice@example.com\0secret");
        c.send(&format!("AUTH\t1\tPLAIN\tservice=smtp\tnologin\tlip=127.0.0.1\trip=192.0.2.9\tsecured\tresp={resp}")).await;
        assert_eq!(c.line().await.unwrap(), "OK\t1\tuser=alice@example.com");

        let started = Instant::now();
        let resp = b64("\0alice@example.com\0wrong");
        c.send(&format!("AUTH\t2\tPLAIN\tservice=smtp\tnologin\tlip=127.0.0.1\trip=192.0.2.9\tsecured\tresp={resp}")).await;
        assert_eq!(c.line().await.unwrap(), "FAIL\t2\tuser=alice@example.com");
        assert!(
            started.elapsed() >= Duration::from_millis(200),
            "failure is delayed"
        );
    }

    #[tokio::test]
    async fn plain_and_login_with_continuations() {
        let dir = tempfile::tempdir().unwrap();
        let (mut c, metrics) = connect_with_metrics(&dir).await;
        c.send("AUTH\t7\tPLAIN\tservice=smtp\tsecured").await;
        assert_eq!(c.line().await.unwrap(), "CONT\t7\t");
        c.send(&format!("CONT\t7\t{}", b64("\0alice\0secret")))
            .await;
        assert_eq!(c.line().await.unwrap(), "OK\t7\tuser=alice@example.com");

        c.send("AUTH\t8\tLOGIN\tservice=smtp\tsecured").await;
        assert_eq!(c.line().await.unwrap(), "CONT\t8\tVXNlcm5hbWU6");
        c.send(&format!("CONT\t8\t{}", b64("alice@example.com")))
            .await;
        assert_eq!(c.line().await.unwrap(), "CONT\t8\tUGFzc3dvcmQ6");
        c.send(&format!("CONT\t8\t{}", b64("secret"))).await;
        assert_eq!(c.line().await.unwrap(), "OK\t8\tuser=alice@example.com");
        let text = metrics.encode();
        for mechanism in ["PLAIN", "LOGIN"] {
            let line = format!(
                "auth_attempts_total{{listener=\"dovecot-auth\",mechanism=\"{mechanism}\",result=\"success\"}} 1\n"
            );
            assert!(text.contains(&line), "{line} in\n{text}");
        }
    }

    #[tokio::test]
    async fn protocol_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = connect(&dir).await;
        c.send("CONT\t5\tAAAA").await;
        assert_eq!(
            c.line().await.unwrap(),
            "FAIL\t5\treason=Unexpected continuation"
        );
        c.send("AUTH\t6\tPLAIN\tservice=smtp\tsecured\tresp=!!!")
            .await;
        assert_eq!(c.line().await.unwrap(), "FAIL\t6\tcode=invalid_base64");
        // Plaintext mechanisms need TLS unless the client is local.
        let resp = b64("\0alice@example.com\0secret");
        c.send(&format!(
            "AUTH\t9\tPLAIN\tservice=smtp\trip=192.0.2.9\tresp={resp}"
        ))
        .await;
        let line = c.line().await.unwrap();
        assert!(
            line.starts_with("FAIL\t9\treason=Plaintext authentication disallowed"),
            "{line}"
        );
        c.send(&format!(
            "AUTH\t10\tPLAIN\tservice=smtp\trip=127.0.0.1\tresp={resp}"
        ))
        .await;
        assert_eq!(c.line().await.unwrap(), "OK\t10\tuser=alice@example.com");
        // A mechanism that was never advertised ends the connection.
        c.send("AUTH\t11\tCRAM-MD5\tservice=smtp\tsecured").await;
        assert_eq!(c.line().await, None);
    }

    #[test]
    fn parses_client_lines() {
        let line = "AUTH\t1\tplain\tservice=smtp\tnologin\tlip=127.0.0.1\trip=192.0.2.9\tsecured\tresp=AGEAYg==";
        assert_eq!(
            parse(line),
            Some(Request::Auth(AuthRequest {
                id: "1",
                mechanism: Some(Mechanism::Plain),
                secured: true,
                remote: Some("192.0.2.9".parse().unwrap()),
                response: Some("AGEAYg=="),
            }))
        );
        let Some(Request::Auth(request)) = parse("AUTH\t2\tCRAM-MD5\trip=not-an-address") else {
            panic!("an AUTH line");
        };
        assert_eq!((request.mechanism, request.remote), (None, None));
        assert!(!request.secured);
        assert_eq!(
            parse("VERSION\t1\t0"),
            Some(Request::Version { supported: true })
        );
        assert_eq!(
            parse("VERSION\t2\t0"),
            Some(Request::Version { supported: false })
        );
        assert_eq!(
            parse("VERSION"),
            Some(Request::Version { supported: false })
        );
        let Some(Request::Auth(request)) = parse("AUTH\t3\tPLAIN\tnologin\tsecure") else {
            panic!("an AUTH line");
        };
        assert!(!request.secured, "only the flag `secured` says so");
        assert_eq!(
            parse("CONT\t7\tAAAA"),
            Some(Request::Cont {
                id: "7",
                data: "AAAA"
            })
        );
        for bad in [
            "",
            "AUTH\t1",
            "CONT\t7",
            "CONT\t7\tAA\tAA",
            "auth\t1\tPLAIN",
            "BOGUS",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    /// A line of `MAX_LINE` bytes is read; a longer one ends the connection.
    #[tokio::test]
    async fn longest_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = connect(&dir).await;
        let longest = format!("CPID\t{}", "7".repeat(MAX_LINE as usize - 5));
        c.send(&longest).await;
        c.send("CONT\t5\tAAAA").await;
        assert_eq!(
            c.line().await.unwrap(),
            "FAIL\t5\treason=Unexpected continuation"
        );
        c.send(&format!("{longest}7")).await;
        assert_eq!(c.line().await, None);
    }

    /// A stale socket is replaced, but nothing else is removed to make room; an owner
    /// alone is set without a group.
    #[test]
    fn bind_replaces_only_a_socket_and_sets_a_lone_owner() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth");
        let mut cfg = AuthConfig::new(dir.path().join("passwd"));
        cfg.dovecot_socket_owner = Some("4242".into());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        drop(bind(&path, &cfg).unwrap());
        drop(bind(&path, &cfg).unwrap());
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (4242, nix::unistd::getgid().as_raw())
        );

        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("keep"), b"").unwrap();
        let err = format!("{:#}", bind(&path, &cfg).unwrap_err());
        assert!(err.starts_with("removing stale socket "), "{err}");
        assert!(path.join("keep").exists());
    }

    #[test]
    fn escaping_round_trips() {
        let raw = "a\tb\nc\x01d\0e\rf";
        let escaped = escape(raw);
        assert!(!escaped.contains(['\t', '\n', '\0', '\r']));
        assert_eq!(unescape(&escaped), raw);
    }
}

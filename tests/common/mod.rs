//! Test harness: a `posthorn serve` with its own temp directory, self-signed certificate,
//! users hashed by the real `doveadm pw`, a sender login map and a dnsmasq answering for
//! the test domains; plus drivers for real clients (swaks, openssl) and a small raw SMTP
//! client for what those cannot do (BDAT, pipelined floods, garbage, dropped sessions).
//!
//! Every test binary uses a different subset of these helpers, hence the allow below.
#![allow(dead_code)]

mod client;
pub use client::*;
pub mod contract;
pub mod dns;
mod dnsmasq;
pub use dnsmasq::Dnsmasq;
pub mod chart;
pub mod kube;
pub mod load;
pub mod metrics;
pub mod mx_sink;
pub mod peers;
mod process;
pub mod sink;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

pub const HOSTNAME: &str = "mail.example.com";
pub const ALICE: &str = "alice@example.com";
pub const ALICE_PASS: &str = "alice-Secret-1";
pub const BOB: &str = "bob@example.com";
pub const BOB_PASS: &str = "bob-Secret-2";
/// Sender login map written for every server: a shared address and one owned by bob only.
pub const SENDERS: &str = "info@example.com  alice@example.com, bob@example.com\n\
                           sales@example.com bob@example.com\n";
/// Postfix's name for a client whose address has no reverse DNS.
pub const CLIENT: &str = "unknown[127.0.0.1]";
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
pub const IO_TIMEOUT: Duration = Duration::from_secs(15);

/// Which listener to talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    Smtp,
    Submission,
    Submissions,
}

/// Config knobs a test may change; everything else is fixed by the harness.
pub struct Builder {
    limits: BTreeMap<String, String>,
    /// Top-level config entries (camelCase key, YAML value) besides the harness's own.
    settings: BTreeMap<String, String>,
    auth: BTreeMap<String, String>,
    /// Environment variables for the server process (e.g. an `LD_PRELOAD` shim).
    env: Vec<(String, String)>,
}

impl Builder {
    /// Sets a top-level config entry, e.g. `postmaster`, or replaces `domains`, `dns` or
    /// `tls` (where `$DIR` is the server's directory).
    pub fn config(mut self, key: &str, value: impl ToString) -> Self {
        self.settings.insert(key.to_string(), value.to_string());
        self
    }

    /// Overrides one `limits:` entry (camelCase key, YAML value).
    pub fn limit(mut self, key: &str, value: impl ToString) -> Self {
        self.limits.insert(key.to_string(), value.to_string());
        self
    }

    /// Networks whose connections must start with a PROXY protocol header.
    pub fn proxy_trusted(self, cidrs: &[&str]) -> Self {
        self.config("proxyProtocol", format!("{{trustedCidrs: {cidrs:?}}}"))
    }

    /// Adds or overrides one `auth:` entry; `$DIR` in the value is the server's directory.
    pub fn auth(mut self, key: &str, value: impl ToString) -> Self {
        self.auth.insert(key.to_string(), value.to_string());
        self
    }

    /// Sets an environment variable of the server process.
    pub fn env(mut self, key: &str, value: impl ToString) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn start(self) -> Server {
        Server::start_with(self)
    }
}

pub struct Server {
    pub dir: tempfile::TempDir,
    pub smtp: u16,
    pub submission: u16,
    pub submissions: u16,
    pub metrics: u16,
    /// The handover listener's port, when the config has one.
    pub handover: Option<u16>,
    tls_generation: Mutex<u32>,
    /// The server process's extra environment, kept for restarts.
    env: Vec<(String, String)>,
    child: Child,
    stderr: Arc<Mutex<String>>,
    stderr_thread: Option<JoinHandle<()>>,
    _dns: Dnsmasq,
}

impl Server {
    pub fn builder() -> Builder {
        let limits = [
            ("maxMessageSize", "1048576"),
            ("maxRecipients", "100"),
            ("maxConnections", "100"),
            ("maxConnectionsPerIp", "20"),
            ("maxErrors", "10"),
            ("idleTimeout", "5s"),
        ];
        Builder {
            limits: limits
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            settings: BTreeMap::new(),
            // Short delays, and no throttling for tests that are not about it.
            auth: [
                ("failureDelay", "200ms"),
                ("maxFailureDelay", "200ms"),
                ("maxFailuresPerAddress", "0"),
                ("maxFailuresPerLogin", "0"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            env: Vec::new(),
        }
    }

    pub fn start() -> Server {
        Self::builder().start()
    }

    fn start_with(mut builder: Builder) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        let dns = Dnsmasq::start();

        std::fs::create_dir_all(root.join("tls")).unwrap();
        install_cert_generation(&root.join("tls"), 1);

        let passwd = format!(
            "{ALICE}:{}\n{BOB}:{}::::::\n",
            doveadm_hash("SHA512-CRYPT", ALICE_PASS),
            doveadm_hash("SHA512-CRYPT", BOB_PASS)
        );
        std::fs::write(root.join("passwd"), passwd).unwrap();
        std::fs::write(root.join("senders"), SENDERS).unwrap();

        let mut limits = String::new();
        for (k, v) in &builder.limits {
            write!(limits, "{k}: {v}, ").unwrap();
        }
        let domains = builder
            .settings
            .remove("domains")
            .unwrap_or_else(|| "[example.com]".into());
        let dns_setting = builder
            .settings
            .remove("dns")
            .unwrap_or_else(|| format!("{{nameservers: [\"127.0.0.1:{}\"]}}", dns.port));
        let d = root.display();
        let tls = builder
            .settings
            .remove("tls")
            .unwrap_or_else(|| "{cert: $DIR/tls/tls.crt, key: $DIR/tls/tls.key}".into())
            .replace("$DIR", &d.to_string());
        let mut settings = String::new();
        for (k, v) in &builder.settings {
            writeln!(settings, "{k}: {v}").unwrap();
        }
        let mut auth = String::new();
        for (k, v) in &builder.auth {
            write!(auth, ", {k}: {}", v.replace("$DIR", &d.to_string())).unwrap();
        }
        let config = format!(
            "hostname: {HOSTNAME}\n\
             domains: {domains}\n\
             listeners: {{smtp: \"127.0.0.1:0\", submission: \"127.0.0.1:0\", submissions: \"127.0.0.1:0\"}}\n\
             metrics: \"127.0.0.1:0\"\n\
             tls: {tls}\n\
             auth: {{passwdFile: {d}/passwd{auth}}}\n\
             senderLoginMap: {d}/senders\n\
             dns: {dns_setting}\n\
             spool: {{directory: {d}/spool, maildirRoot: {d}/mail}}\n\
             limits: {{{}}}\n\
             reloadInterval: 200ms\n\
             {settings}",
            limits.trim_end_matches([',', ' ']),
        );
        std::fs::write(root.join("config.yaml"), config).unwrap();

        let stderr = Arc::new(Mutex::new(String::new()));
        let (child, stderr_thread, ports, handover) =
            process::spawn_serve(root, &builder.env, &stderr);
        Server {
            smtp: ports[0],
            submission: ports[1],
            submissions: ports[2],
            metrics: ports[3],
            handover,
            dir,
            tls_generation: Mutex::new(1),
            env: builder.env,
            child,
            stderr,
            stderr_thread: Some(stderr_thread),
            _dns: dns,
        }
    }

    /// Sends SIGTERM, as the kubelet does to stop a pod.
    pub fn terminate(&self) {
        terminate(&self.child);
    }

    /// The exit status once the process has ended, `None` if it still runs after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        wait_exit(&mut self.child, limit)
    }

    /// Starts `posthorn serve` again on the same config and spool, once the last one has
    /// ended; the listeners get new ports.
    pub fn restart(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_some(),
            "restart while the server still runs"
        );
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
        let (child, stderr_thread, ports, handover) =
            process::spawn_serve(self.dir.path(), &self.env, &self.stderr);
        self.child = child;
        self.stderr_thread = Some(stderr_thread);
        [self.smtp, self.submission, self.submissions, self.metrics] = ports;
        self.handover = handover;
    }

    pub fn port(&self, port: Port) -> u16 {
        match port {
            Port::Smtp => self.smtp,
            Port::Submission => self.submission,
            Port::Submissions => self.submissions,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server logged so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The certificate currently served (through the `..data` symlink).
    pub fn cert_path(&self) -> PathBuf {
        self.path("tls/tls.crt")
    }

    pub fn cert_der(&self) -> CertificateDer<'static> {
        CertificateDer::from_pem_file(self.cert_path()).expect("reading test certificate")
    }

    /// Writes a fresh certificate and key into a new directory and swaps the `..data`
    /// symlink to it, the way the kubelet updates a mounted Secret.
    pub fn rotate_cert(&self) {
        let mut generation = self.tls_generation.lock().unwrap();
        *generation += 1;
        install_cert_generation(&self.path("tls"), *generation);
    }

    /// Runs swaks against one listener; `args` come after `--server/--port/--timeout`.
    pub fn swaks(&self, port: Port, args: &[&str]) -> Transcript {
        swaks(self.port(port), args)
    }

    /// swaks with TLS as the listener needs it (STARTTLS on 25/587, implicit on 465) and
    /// AUTH PLAIN as `user`.
    pub fn swaks_auth(&self, port: Port, user: &str, pass: &str, args: &[&str]) -> Transcript {
        let mut all = vec![
            tls_flag(port),
            "--auth",
            "PLAIN",
            "--auth-user",
            user,
            "--auth-password",
            pass,
        ];
        all.extend_from_slice(args);
        self.swaks(port, &all)
    }

    pub fn maildir_new(&self, local: &str) -> PathBuf {
        self.path(&format!("mail/example.com/{local}/Maildir/new"))
    }

    /// Files delivered to `local@example.com` so far.
    pub fn mails(&self, local: &str) -> Vec<(PathBuf, String)> {
        let Ok(entries) = std::fs::read_dir(self.maildir_new(local)) else {
            return Vec::new();
        };
        let mut out: Vec<_> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .map(|p| {
                let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned();
                (p, text)
            })
            .collect();
        out.sort();
        out
    }

    /// Waits until a delivered mail for `local@example.com` contains `marker`.
    pub fn wait_for_mail(&self, local: &str, marker: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some((_, text)) = self
                .mails(local)
                .into_iter()
                .find(|(_, t)| t.contains(marker))
            {
                return text;
            }
            if Instant::now() > deadline {
                panic!(
                    "no mail containing {marker:?} arrived in {} within 10 s; found {:?}",
                    self.maildir_new(local).display(),
                    self.mails(local)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every file under the spool and mail directories whose content contains `marker`.
    pub fn stored_files_containing(&self, marker: &str) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for dir in ["spool", "mail"] {
            walk(&self.path(dir), &mut |p| {
                if let Ok(bytes) = std::fs::read(p)
                    && bytes.windows(marker.len()).any(|w| w == marker.as_bytes())
                {
                    found.push(p.to_path_buf());
                }
            });
        }
        found
    }

    /// Raw plaintext connection to a listener.
    pub fn connect(&self, port: Port) -> Client {
        Client::connect(self.port(port))
    }

    /// Raw plaintext connection from a chosen loopback address (all of 127.0.0.0/8).
    pub fn connect_from(&self, port: Port, source: std::net::Ipv4Addr) -> Client {
        Client::connect_from(self.port(port), source)
    }

    /// Connection on 587 (STARTTLS) or 465 (implicit TLS), EHLO done, authenticated.
    pub fn authenticated_client(&self, port: Port, user: &str, pass: &str) -> Client {
        let mut c = match port {
            Port::Submissions => Client::connect_tls(self.submissions, vec![self.cert_der()]),
            _ => {
                let mut c = Client::connect(self.port(port));
                c.expect_code(220);
                c.cmd_expect("EHLO client.example.org", 250);
                c.starttls(vec![self.cert_der()]);
                c
            }
        };
        if port == Port::Submissions {
            c.expect_code(220);
        }
        c.cmd_expect("EHLO client.example.org", 250);
        let reply = c.auth_plain(user, pass);
        assert_eq!(reply.code, 235, "AUTH PLAIN as {user}: {reply:?}");
        c
    }

    /// GET on the metrics listener: (status code, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.metrics, path)
    }

    /// Prometheus samples as `name{labels}` → value.
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        let (status, body) = self.http_get("/metrics");
        assert_eq!(status, 200, "/metrics answered {status}: {body}");
        parse_metrics(&body)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
        assert_no_panic("posthorn serve", &self.stderr.lock().unwrap());
    }
}

/// Fails the test if a posthorn process panicked (in any task), as its log shows; every
/// harness that runs a server calls it when the server stops. Quiet while the test is
/// already failing, so the first failure is the one reported.
pub fn assert_no_panic(what: &str, log: &str) {
    if !thread::panicking() && log.contains("panicked") {
        panic!("{what} panicked; its log:\n{log}");
    }
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, f);
        } else {
            f(&p);
        }
    }
}

pub fn tls_flag(port: Port) -> &'static str {
    match port {
        Port::Submissions => "-tlsc",
        _ => "-tls",
    }
}

/// `listening smtp=127.0.0.1:1 submission=...` → name → port.
/// The first line a child prints on its piped stdout (the `listening …` line), or None
/// if none comes within `timeout`. The rest of its stdout is drained in the background
/// so the child never blocks on a full pipe.
pub fn first_stdout_line(child: &mut Child, timeout: Duration) -> Option<String> {
    let (tx, rx) = mpsc::channel();
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
    thread::spawn(move || {
        let mut first = String::new();
        let _ = stdout.read_line(&mut first);
        let _ = tx.send(first);
        let _ = std::io::copy(&mut stdout, &mut std::io::sink());
    });
    rx.recv_timeout(timeout)
        .ok()
        .filter(|line| !line.is_empty())
}

pub fn parse_listening_line(line: &str) -> BTreeMap<String, u16> {
    let mut words = line.split_whitespace();
    assert_eq!(words.next(), Some("listening"), "unexpected line {line:?}");
    words
        .map(|w| {
            let (name, addr) = w
                .split_once('=')
                .unwrap_or_else(|| panic!("bad word {w:?} in {line:?}"));
            let addr: SocketAddr = addr
                .parse()
                .unwrap_or_else(|e| panic!("bad address in {w:?}: {e}"));
            assert_ne!(addr.port(), 0, "port 0 in listening line {line:?}");
            (name.to_string(), addr.port())
        })
        .collect()
}

/// Runs a command to completion; panics with its output if it cannot start.
pub fn run(cmd: &mut Command) -> std::process::Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

/// `{SCHEME}hash` from Dovecot's own tool.
pub fn doveadm_hash(scheme: &str, pass: &str) -> String {
    let out = run(Command::new("doveadm").args(["pw", "-s", scheme, "-p", pass]));
    assert!(out.status.success(), "doveadm pw: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Self-signed P-256 certificate for `mail.example.com` in `tls/..genN`, made current by
/// an atomic `..data` symlink swap; `tls.crt`/`tls.key` point through `..data`.
fn install_cert_generation(tls: &Path, generation: u32) {
    let gen_dir = format!("..gen{generation}");
    std::fs::create_dir_all(tls.join(&gen_dir)).unwrap();
    let out = run(Command::new("openssl")
        .current_dir(tls.join(&gen_dir))
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "tls.key",
            "-out",
            "tls.crt",
            "-days",
            "30",
            "-subj",
            "/CN=mail.example.com",
            "-addext",
            "subjectAltName=DNS:mail.example.com",
        ]));
    assert!(out.status.success(), "openssl req: {out:?}");
    let tmp = tls.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&gen_dir, &tmp).unwrap();
    std::fs::rename(&tmp, tls.join("..data")).unwrap();
    for f in ["tls.crt", "tls.key"] {
        if std::fs::symlink_metadata(tls.join(f)).is_err() {
            std::os::unix::fs::symlink(format!("..data/{f}"), tls.join(f)).unwrap();
        }
    }
}

/// SHA-256 fingerprint line of a PEM certificate, as `openssl x509 -fingerprint` prints it.
pub fn fingerprint_of_pem(pem: &[u8]) -> String {
    let mut child = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl x509");
    child.stdin.take().unwrap().write_all(pem).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl x509: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

// ---------------------------------------------------------------------------------------
// swaks

pub struct Transcript {
    pub code: i32,
    pub text: String,
}

/// swaks exit code when the server rejected something it expected to succeed.
pub fn swaks(port: u16, args: &[&str]) -> Transcript {
    let port = port.to_string();
    let out = run(Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port", &port, "--timeout", "15"])
        .args(args));
    Transcript {
        code: out.status.code().unwrap_or(-1),
        text: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// A server line in a swaks transcript (`<-  `, `<~  `, `<** `, `<~* `) without its prefix.
fn server_line(line: &str) -> Option<&str> {
    let rest = line.strip_prefix('<')?;
    let text = rest.trim_start_matches(['-', '~', '*']).trim_start();
    (text.len() >= 3 && text.as_bytes()[..3].iter().all(u8::is_ascii_digit)).then_some(text)
}

/// A client line (` -> `, ` ~> `, `**> `) without its prefix.
fn client_line(line: &str) -> Option<&str> {
    let t = line.trim_start();
    ["-> ", "~> ", "**> ", "*~> "]
        .iter()
        .find_map(|p| t.strip_prefix(p))
}

impl Transcript {
    /// Every reply line the server sent, in order.
    pub fn replies(&self) -> Vec<&str> {
        self.text.lines().filter_map(server_line).collect()
    }

    pub fn has_reply(&self, expected: &str) -> bool {
        self.replies().contains(&expected)
    }

    pub fn assert_reply(&self, expected: &str) {
        assert!(
            self.has_reply(expected),
            "expected reply line {expected:?}; swaks exit {}, transcript:\n{}",
            self.code,
            self.text
        );
    }

    /// Reply lines that answered the last client line starting with `command`
    /// (case-insensitive), e.g. `"RCPT TO"`.
    pub fn reply_to(&self, command: &str) -> Vec<&str> {
        let mut answer = Vec::new();
        let mut inside = false;
        for line in self.text.lines() {
            if let Some(c) = client_line(line) {
                inside = c
                    .to_ascii_uppercase()
                    .starts_with(&command.to_ascii_uppercase());
                if inside {
                    answer.clear();
                }
            } else if inside && let Some(s) = server_line(line) {
                answer.push(s);
            }
        }
        answer
    }

    /// Asserts the (last line of the) reply to `command` is exactly `expected`.
    pub fn assert_reply_to(&self, command: &str, expected: &str) {
        let got = self.reply_to(command);
        assert_eq!(
            got.last().copied(),
            Some(expected),
            "reply to {command}; transcript:\n{}",
            self.text
        );
    }

    /// The queue id from `250 2.0.0 Ok: queued as <id>`.
    pub fn queued_id(&self) -> Option<String> {
        self.replies().iter().find_map(|l| {
            l.strip_prefix("250 2.0.0 Ok: queued as ")
                .map(|id| id.trim().to_string())
                .filter(|id| !id.is_empty())
        })
    }

    pub fn assert_queued(&self) -> String {
        self.queued_id().unwrap_or_else(|| {
            panic!(
                "expected `250 2.0.0 Ok: queued as <id>`; swaks exit {}, transcript:\n{}",
                self.code, self.text
            )
        })
    }

    /// EHLO keywords from the last multi-line 250 reply to EHLO.
    pub fn ehlo_keywords(&self) -> Vec<String> {
        ehlo_keywords(&self.reply_to("EHLO"))
    }
}

/// `250-SIZE 100` lines (first line is the greeting name) → `["SIZE 100", ...]`.
pub fn ehlo_keywords<S: AsRef<str>>(lines: &[S]) -> Vec<String> {
    lines
        .iter()
        .skip(1)
        .map(|l| l.as_ref().get(4..).unwrap_or("").to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------
// HTTP and metrics

pub fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connect to metrics port {port}: {e}"));
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Parses Prometheus/OpenMetrics text (chunked encoding artefacts are simply not samples).
pub fn parse_metrics(body: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// Sum of samples whose series (name and labels) contains every one of `words`
/// (case-insensitive).
pub fn metric_sum(samples: &BTreeMap<String, f64>, words: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(k, _)| {
            let k = k.to_ascii_lowercase();
            words.iter().all(|w| k.contains(w))
        })
        .map(|(_, v)| v)
        .sum()
}

/// Writes `text` to `path` as the kubelet and editors that keep a file whole do: a new
/// file renamed over the old, so a reload never reads it half-written.
pub fn write_whole(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// A unique marker for one test message.
pub fn marker(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("posthorn-test-{name}-{}-{nanos}", std::process::id())
}

/// Sends SIGTERM to `child`, as the kubelet does to stop a pod.
pub fn terminate(child: &Child) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -TERM failed");
}

/// `child`'s exit status once it has ended, `None` if it still runs after `limit`.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

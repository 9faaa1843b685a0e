//! Real mail peers for delivery tests: a private Postfix relay host with Dovecot SASL
//! (`e2e/delivery/relay.sh`), smtp-sink as an MX host, dnsmasq serving the records they
//! are found by, and dkimpy (Debian's python3-dkim) as the independent DKIM verifier.
//!
//! The peers come from Debian packages that `e2e/setup.sh` installs; Postfix and
//! smtp-sink need root (they drop to the `postfix` user from there). A missing tool
//! fails the test.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `cmd`; panics with its output unless it succeeds, else returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `done` every 100 ms until it holds; panics with `what` after `limit`.
pub fn wait_for(what: &str, limit: Duration, done: impl FnMut() -> bool) {
    assert!(poll(limit, done), "timed out waiting for {what}");
}

/// Polls `done` every 100 ms until it holds (true) or `limit` passes (false).
pub fn poll(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

/// A test CA and a certificate it signed for 127.0.0.1/localhost plus `names`:
/// `dir/ca.crt`, `dir/tls.crt`, `dir/tls.key`.
pub fn certificates(dir: &Path, names: &[&str]) {
    let sh = |script: &str| {
        run_ok(Command::new("sh").arg("-ec").arg(script).current_dir(dir));
    };
    let mut san = String::from("subjectAltName=IP:127.0.0.1,DNS:localhost");
    for name in names {
        san.push_str(&format!(",DNS:{name}"));
    }
    sh(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout ca.key -out ca.crt -days 2 -subj /CN=TestCA 2>/dev/null",
    );
    sh(&format!(
        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout tls.key \
         -out tls.csr -subj /CN={} 2>/dev/null
         printf '{san}' > san.ext
         openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
         -out tls.crt -days 2 -extfile san.ext 2>/dev/null",
        names.first().unwrap_or(&"localhost")
    ));
}

/// A child process killed when dropped.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// dnsmasq on a loopback port answering from the given dnsmasq options without their
/// leading `--` (e.g. `mx-host=ok.test,mx1.ok.test,10`, `txt-record=name,value`).
pub fn dns(records: &[&str]) -> (Guard, SocketAddr) {
    let port = free_port();
    let mut cmd = Command::new("dnsmasq");
    cmd.args([
        "-k",
        "-C",
        "/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        "--listen-address=127.0.0.1",
        // Answer for the test TLD from the records alone: NXDOMAIN or no data, never
        // REFUSED for lack of an upstream server.
        "--local=/test/",
        &format!("--port={port}"),
    ]);
    for record in records {
        cmd.arg(format!("--{record}"));
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dnsmasq (e2e/setup.sh installs it)");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    // Up when it answers over TCP.
    wait_for("dnsmasq", Duration::from_secs(10), || {
        std::net::TcpStream::connect(addr).is_ok()
    });
    (Guard(child), addr)
}

/// smtp-sink on `addr` dumping each message into `dir`, with extra options (`-r RCPT`
/// to answer RCPT with 4xx, `-f RCPT` with 5xx).
pub fn sink(addr: SocketAddr, dir: &Path, options: &[&str]) -> Guard {
    std::fs::create_dir_all(dir).unwrap();
    run_ok(Command::new("chown").arg("postfix").arg(dir));
    let child = Command::new("smtp-sink")
        .args(["-u", "postfix", "-d"])
        .arg(format!("{}/%H%M%S.", dir.display()))
        .args(options)
        .arg(addr.to_string())
        .arg("256")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("smtp-sink (from the postfix package)");
    wait_for("smtp-sink", Duration::from_secs(10), || {
        std::net::TcpStream::connect(addr).is_ok()
    });
    Guard(child)
}

/// The messages in an smtp-sink dump directory, as text.
pub fn sink_messages(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect()
}

/// The Message-IDs of the messages in an smtp-sink dump directory.
pub fn sink_message_ids(dir: &Path) -> Vec<String> {
    let mut ids = Vec::new();
    for text in sink_messages(dir) {
        for line in text.lines() {
            if let Some(id) = line
                .strip_prefix("Message-ID:")
                .or_else(|| line.strip_prefix("Message-Id:"))
            {
                ids.push(id.trim().to_string());
            }
        }
    }
    ids
}

/// The private Postfix relay host of `e2e/delivery/relay.sh` with its own test CA
/// (`dir/ca.crt`), relaying everything it accepts to an smtp-sink dumping into
/// `dir/sink`; stopped when dropped.
pub struct Relay {
    pub dir: PathBuf,
    pub port: u16,
}

impl Relay {
    pub fn start(dir: &Path, user: &str, password: &str) -> Relay {
        std::fs::create_dir_all(dir).unwrap();
        certificates(dir, &["relay.test"]);
        let (port, sink_port) = (free_port(), free_port());
        run_ok(
            Command::new(repo().join("e2e/delivery/relay.sh"))
                .arg("start")
                .arg(dir)
                .arg(port.to_string())
                .arg(sink_port.to_string())
                .args([user, password]),
        );
        Relay {
            dir: dir.to_path_buf(),
            port,
        }
    }

    /// The Message-IDs the relay passed on to its sink.
    pub fn received(&self) -> Vec<String> {
        sink_message_ids(&self.dir.join("sink"))
    }

    /// The messages the relay passed on to its sink.
    pub fn messages(&self) -> Vec<String> {
        sink_messages(&self.dir.join("sink"))
    }

    /// Postfix's log (`maillog_file`).
    pub fn maillog(&self) -> String {
        std::fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("e2e/delivery/relay.sh"))
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

/// The name and value of the TXT record in a zone line as `posthorn dkim keygen` prints
/// it: `<name> IN TXT ( "..." "..." )`, the value split into strings of at most 255.
pub fn dkim_zone_record(line: &str) -> (String, String) {
    let (name, rest) = line
        .split_once(" IN TXT ( ")
        .unwrap_or_else(|| panic!("not a TXT zone line: {line}"));
    let strings: Vec<&str> = rest.split('"').skip(1).step_by(2).collect();
    assert!(strings.iter().all(|s| s.len() <= 255), "{line}");
    (name.to_string(), strings.concat())
}

/// dkimpy with its DNS lookups sent to our dnsmasq; prints `pass` or `fail`, and fails
/// unless exactly the expected key record was looked up.
const DKIMPY_VERIFY: &str = r#"
import sys, dkim, dns.resolver
resolver = dns.resolver.Resolver(configure=False)
resolver.nameservers = ['127.0.0.1']
resolver.port = int(sys.argv[1])
looked_up = []
def dnsfunc(name, timeout=5):
    name = name.decode() if isinstance(name, bytes) else name
    looked_up.append(name)
    answer = resolver.resolve(name, 'TXT', lifetime=timeout)
    return b''.join(answer[0].strings)
message = sys.stdin.buffer.read()
ok = dkim.verify(message, dnsfunc=dnsfunc)
assert looked_up == [sys.argv[2] + '.'], looked_up
print('pass' if ok else 'fail')
"#;

fn python_with_dkimpy() -> &'static str {
    // Debian's python3-dkim installs for the system interpreter, which a pyenv shim
    // earlier in PATH may hide.
    for python in ["/usr/bin/python3", "python3"] {
        let ok = Command::new(python)
            .args(["-c", "import dkim, dns.resolver, nacl"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return python;
        }
    }
    panic!("dkimpy is needed (apt-get install python3-dkim)");
}

/// dkimpy's verdict on `message` (`pass` or `fail`), the key fetched from the name
/// server on `dns_port` at `record` (e.g. `posthorn._domainkey.example.com`).
pub fn dkimpy_verify(dns_port: u16, record: &str, message: &[u8]) -> String {
    let mut child = Command::new(python_with_dkimpy())
        .args(["-c", DKIMPY_VERIFY, &dns_port.to_string(), record])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(message).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "dkimpy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

//! Mail submitted through `posthorn up` leaves through a real Postfix relay host (SASL
//! over verified STARTTLS) and to a direct-MX smtp-sink, local mail lands in its
//! Maildir, and the DKIM signature the server added verifies with dkimpy against the
//! key record dnsmasq serves.
//!
//! `up` binds fixed ports (2525/5587/5465/9090): nextest runs this binary and
//! tests/up.rs in one test group of one thread (.config/nextest.toml), and the lock
//! below keeps `cargo test`'s threads apart. Needs root, Postfix, Dovecot, dnsmasq and
//! python3-dkim (e2e/setup.sh installs them).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use common::doveadm_hash;
use common::peers::{Relay, dkim_zone_record, dkimpy_verify, dns, poll, run_ok, sink};

const POSTHORN: &str = env!("CARGO_BIN_EXE_posthorn");
const DKIM_RECORD: &str = "posthorn._domainkey.example.com";
const RELAY_USER: &str = "posthorn-relay";
const RELAY_PASSWORD: &str = "relay-Secret-9";
/// Where the direct-MX test's smtp-sink listens: port 25, as `up` cannot be told
/// another MX port, on a loopback address of its own.
const MX_IP: &str = "127.0.0.25";

static UP_PORTS: Mutex<()> = Mutex::new(());

/// A `posthorn up` child process, killed when dropped.
struct Up {
    child: Child,
    state: PathBuf,
    log: PathBuf,
}

impl Up {
    /// Starts `posthorn up -f manifest` with `extra_env` and returns once it printed its
    /// `config:` line (it listens by then).
    fn start(
        dir: &Path,
        manifest: &Path,
        secrets: &Path,
        dns: std::net::SocketAddr,
        extra_env: &[(&str, &Path)],
    ) -> Up {
        let state = dir.join("state");
        let (out, log) = (dir.join("up.out"), dir.join("up.log"));
        let mut command = Command::new(POSTHORN);
        command
            .args(["up", "-f"])
            .arg(manifest)
            .arg("--state-dir")
            .arg(&state)
            .arg("--secrets-dir")
            .arg(secrets)
            .args(["--dns-server", &dns.to_string()])
            .env("RUST_LOG", "info")
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&log).unwrap());
        for (name, value) in extra_env {
            command.env(name, value);
        }
        let mut up = Up {
            child: command.spawn().expect("starting posthorn up"),
            state,
            log,
        };
        let started = poll(Duration::from_secs(30), || {
            let printed = std::fs::read_to_string(&out).unwrap_or_default();
            printed.lines().any(|l| l.starts_with("config: "))
                || up.child.try_wait().unwrap().is_some()
        });
        let printed = std::fs::read_to_string(&out).unwrap_or_default();
        assert!(
            started && up.child.try_wait().unwrap().is_none(),
            "posthorn up did not start; it printed {printed:?}; log:\n{}",
            up.log()
        );
        assert!(
            printed.contains("smtp=127.0.0.1:2525 submission=127.0.0.1:5587"),
            "{printed}"
        );
        up
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `posthorn queue list` on this instance's spool.
    fn queue_list(&self) -> String {
        run_ok(
            Command::new(POSTHORN)
                .args(["queue", "list", "--config"])
                .arg(self.state.join("config.yaml")),
        )
    }

    /// Panics with the queue and the log unless `done` holds within `limit`.
    fn wait(&self, what: &str, limit: Duration, done: impl FnMut() -> bool) {
        if !poll(limit, done) {
            panic!(
                "timed out waiting for {what}; queue:\n{}\nlog:\n{}",
                self.queue_list(),
                self.log()
            );
        }
    }

    /// Messages in a local user's Maildir `new/`.
    fn mailbox(&self, user: &str) -> Vec<String> {
        read_texts(
            &self
                .state
                .join("mail/example.com")
                .join(user)
                .join("Maildir/new"),
        )
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        common::assert_no_panic("posthorn up", &self.log());
    }
}

fn read_texts(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Secrets as the kubelet mounts them: users alice and bob, the DKIM key from
/// `posthorn dkim keygen --out` in the `dkim` Secret, and the relay login. Returns the
/// key's TXT record value.
fn secrets(dir: &Path) -> String {
    let users = dir.join("mail-users");
    std::fs::create_dir_all(&users).unwrap();
    let passwd = [("alice", "alice-pass"), ("bob", "bob-pass")]
        .iter()
        .map(|(user, pass)| {
            format!(
                "{user}@example.com:{}\n",
                doveadm_hash("SHA512-CRYPT", pass)
            )
        })
        .collect::<String>();
    std::fs::write(users.join("passwd"), passwd).unwrap();

    let relay = dir.join("relay-credentials");
    std::fs::create_dir_all(&relay).unwrap();
    std::fs::write(relay.join("username"), RELAY_USER).unwrap();
    std::fs::write(relay.join("password"), RELAY_PASSWORD).unwrap();

    let dkim = dir.join("dkim");
    std::fs::create_dir_all(&dkim).unwrap();
    let line = run_ok(
        Command::new(POSTHORN)
            .args(["dkim", "keygen", "--domain", "example.com", "--out"])
            .arg(dkim.join("dkim.key")),
    );
    let (name, value) = dkim_zone_record(&line);
    assert_eq!(name, format!("{DKIM_RECORD}."));
    value
}

/// A MailServer manifest like examples/mailserver-relay.yaml, with `relay` (a YAML
/// block at spec level) or without.
fn manifest(dir: &Path, relay: &str) -> PathBuf {
    let path = dir.join("mailserver.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: posthorn.dev/v1alpha1
kind: MailServer
metadata:
  name: mail
spec:
  hostname: mail.example.com
  domains:
    - example.com
  users:
    secretName: mail-users
  dkim:
    selector: posthorn
    secretName: dkim
{relay}"
        ),
    )
    .unwrap();
    path
}

/// Submits one message as alice over STARTTLS + AUTH on the submission port.
fn submit(to: &str, message_id: &str) {
    let out = Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port", "5587", "--tls"])
        .args(["--auth", "PLAIN", "--auth-user", "alice@example.com"])
        .args(["--auth-password", "alice-pass"])
        .args(["--from", "alice@example.com", "--to", to])
        .args(["--ehlo", "client.example.org", "--timeout", "30"])
        .args(["--header", &format!("Message-Id: {message_id}")])
        .args(["--header", "Subject: through posthorn up"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(
        transcript
            .lines()
            .any(|l| l.starts_with("<~  250 2.0.0") && l.contains("queued")),
        "{transcript}"
    );
}

/// The delivered copy carries our signature for example.com, dkimpy verifies it, and a
/// changed subject fails.
fn assert_signed(dns_port: u16, message: &str) {
    let signature = message
        .lines()
        .find(|l| l.starts_with("DKIM-Signature:"))
        .unwrap_or_else(|| panic!("no DKIM-Signature in {message}"));
    assert!(signature.contains(" d=example.com;"), "{signature}");
    assert!(signature.contains(" s=posthorn;"), "{signature}");
    assert_eq!(
        dkimpy_verify(dns_port, DKIM_RECORD, message.as_bytes()),
        "pass",
        "{message}"
    );
    let tampered = message.replace(
        "Subject: through posthorn up",
        "Subject: through posthorn UP",
    );
    assert_ne!(tampered, message);
    assert_eq!(
        dkimpy_verify(dns_port, DKIM_RECORD, tampered.as_bytes()),
        "fail"
    );
}

#[test]
fn up_relays_through_postfix_with_a_verifiable_dkim_signature() {
    let _ports = UP_PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let relay = Relay::start(&tmp.path().join("relay"), RELAY_USER, RELAY_PASSWORD);
    let secrets_dir = tmp.path().join("secrets");
    let record = secrets(&secrets_dir);
    let txt = format!("txt-record={DKIM_RECORD},{record}");
    let (_dns, dns) = dns(&[
        "mx-host=example.net,mx.example.net,10",
        "host-record=mx.example.net,127.0.0.1",
        &txt,
    ]);
    let manifest = manifest(
        tmp.path(),
        &format!(
            "  relay:\n    host: 127.0.0.1:{}\n    credentialsSecret: relay-credentials\n",
            relay.port
        ),
    );

    // Without the relay's CA among the trusted roots the relay is not trusted: the
    // message waits in the queue and nothing reaches the relay.
    let untrusting = tmp.path().join("untrusting");
    std::fs::create_dir_all(&untrusting).unwrap();
    let up = Up::start(&untrusting, &manifest, &secrets_dir, dns, &[]);
    submit("someone@example.net", "<untrusted@up.test>");
    let mut listed = String::new();
    up.wait("the deferral", Duration::from_secs(30), || {
        listed = up.queue_list();
        listed.contains("someone@example.net") && listed.contains("relay 127.0.0.1:")
    });
    assert!(
        listed.to_lowercase().contains("certificate"),
        "deferred for the untrusted certificate: {listed}"
    );
    drop(up);
    assert!(relay.received().is_empty(), "{:?}", relay.received());

    // SSL_CERT_FILE names the CA bundle, as a mounted bundle in a pod would.
    let trusting = tmp.path().join("trusting");
    std::fs::create_dir_all(&trusting).unwrap();
    let ca = relay.dir.join("ca.crt");
    let up = Up::start(
        &trusting,
        &manifest,
        &secrets_dir,
        dns,
        &[("SSL_CERT_FILE", &ca)],
    );
    submit("someone@example.net,bob@example.com", "<relayed@up.test>");
    up.wait("the relay to pass it on", Duration::from_secs(30), || {
        relay.received() == ["<relayed@up.test>"]
    });
    let maillog = relay.maillog();
    assert!(
        maillog.contains(&format!("sasl_username={RELAY_USER}")),
        "{maillog}"
    );
    assert!(maillog.contains("to=<someone@example.net>"), "{maillog}");
    let delivered = relay.messages().remove(0);
    assert_signed(dns.port(), &delivered);

    // bob is local: his copy stays here.
    up.wait("bob's copy", Duration::from_secs(30), || {
        !up.mailbox("bob").is_empty()
    });
    let local = up.mailbox("bob").remove(0);
    assert!(local.contains("Message-Id: <relayed@up.test>"), "{local}");
    assert!(local.contains("Delivered-To: bob@example.com"), "{local}");
    up.wait("an empty queue", Duration::from_secs(10), || {
        up.queue_list().contains("Mail queue is empty")
    });
}

#[test]
fn up_delivers_to_the_mx_host_with_a_verifiable_dkim_signature() {
    let _ports = UP_PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let received = tmp.path().join("sink");
    let _sink = sink(format!("{MX_IP}:25").parse().unwrap(), &received, &[]);
    let secrets_dir = tmp.path().join("secrets");
    let record = secrets(&secrets_dir);
    let txt = format!("txt-record={DKIM_RECORD},{record}");
    let mx_address = format!("host-record=mx.example.net,{MX_IP}");
    let (_dns, dns) = dns(&["mx-host=example.net,mx.example.net,10", &mx_address, &txt]);
    let manifest = manifest(tmp.path(), "");

    let up = Up::start(tmp.path(), &manifest, &secrets_dir, dns, &[]);
    submit("someone@example.net", "<direct@up.test>");
    up.wait("the MX host to get it", Duration::from_secs(30), || {
        !read_texts(&received).is_empty()
    });
    let delivered = read_texts(&received).remove(0);
    assert!(
        delivered.contains("Message-Id: <direct@up.test>"),
        "{delivered}"
    );
    assert_signed(dns.port(), &delivered);
    up.wait("an empty queue", Duration::from_secs(10), || {
        up.queue_list().contains("Mail queue is empty")
    });
}

//! Delivery against real peers — a private Postfix relay host with Dovecot SASL,
//! dnsmasq serving MX records for smtp-sink instances, Dovecot LMTP — with
//! `posthorn serve` run as a child process, and the kill -9 no-loss test.
//!
//! The peers come from Debian packages that `e2e/setup.sh` installs; these tests need
//! root (Postfix and Dovecot drop to their own users from there).

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::peers::{
    Guard, Relay, certificates, dns, free_port, poll, run_ok, sink, sink_message_ids,
    sink_messages, wait_for,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sha2::{Digest, Sha256};

pub const PASSWORD: &str = "submit-secret";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `posthorn serve` on a private spool, restartable on the same ports and spool.
pub struct Server {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub submission: SocketAddr,
    child: Option<Child>,
}

impl Server {
    /// Writes a config for `hostname mail.example.com`, local domain example.com, the
    /// user `alice@example.com` (and `bob@`, `postmaster@`), name server `dns`, and the
    /// given `delivery:` section (YAML flow mapping), then starts the server.
    pub fn start(dir: &Path, dns: SocketAddr, delivery: &str) -> Server {
        std::fs::create_dir_all(dir).unwrap();
        certificates(dir, &["mail.example.com"]);
        let users: String = ["alice", "bob", "postmaster"]
            .iter()
            .map(|u| format!("{u}@example.com:{{PLAIN}}{PASSWORD}\n"))
            .collect();
        std::fs::write(dir.join("passwd"), users).unwrap();
        let submission = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = dir.join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "hostname: mail.example.com
domains: [example.com]
listeners: {{smtp: null, submission: '{submission}', submissions: null}}
metrics: null
tls: {{cert: {d}/tls.crt, key: {d}/tls.key}}
auth: {{passwdFile: {d}/passwd, allowPlaintext: true, failureDelay: 0s}}
dns: {{nameservers: ['{dns}']}}
spool: {{directory: {d}/spool, maildirRoot: {d}/mail}}
delivery: {delivery}
",
                d = dir.display()
            ),
        )
        .unwrap();
        let mut server = Server {
            dir: dir.to_path_buf(),
            config,
            submission,
            child: None,
        };
        server.restart();
        server
    }

    /// (Re)starts the server process; returns once it listens.
    pub fn restart(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_posthorn"))
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let addr = self.submission;
        wait_for("posthorn to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(addr).is_ok()
        });
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and the exit status once it stopped.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        common::terminate(&child);
        child.wait().unwrap()
    }

    /// [`wait_for`], with the server's log in the panic message.
    pub fn wait(&self, what: &str, limit: Duration, done: impl FnMut() -> bool) {
        if !poll(limit, done) {
            panic!("timed out waiting for {what}; server log:\n{}", self.log());
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Submits one message as alice over STARTTLS + AUTH (swaks); answers whether it
    /// was accepted.
    pub fn submit(&self, to: &[&str], message_id: &str) -> bool {
        let out = Command::new("swaks")
            .args(["--server", "127.0.0.1", "--port"])
            .arg(self.submission.port().to_string())
            .args([
                "--tls",
                "--auth",
                "PLAIN",
                "--auth-user",
                "alice@example.com",
            ])
            .args(["--auth-password", PASSWORD, "--from", "alice@example.com"])
            .args(["--to", &to.join(",")])
            .args(["--ehlo", "client.example.com", "--timeout", "30"])
            .args(["--header", &format!("Message-Id: {message_id}")])
            .args(["--header", "Subject: delivery test"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .any(|l| l.starts_with("<~  250 2.0.0") && l.contains("queued"))
    }

    /// `posthorn queue ARGS --config CONFIG`.
    pub fn queue(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_posthorn"))
            .arg("queue")
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .unwrap();
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    pub fn queue_is_empty(&self) -> bool {
        self.queue(&["list"]).1.contains("Mail queue is empty")
    }

    /// Files in a local Maildir `new/` of the built-in delivery.
    pub fn mailbox(&self, user: &str) -> Vec<String> {
        read_dir_texts(
            &self
                .dir
                .join("mail/example.com")
                .join(user)
                .join("Maildir/new"),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        common::assert_no_panic("posthorn serve", &self.log());
    }
}

pub fn read_dir_texts(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The queue ids in `posthorn queue list` output.
pub fn listed_ids(list: &str) -> Vec<String> {
    list.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.len() == 15 && w.chars().all(|c| c.is_ascii_alphanumeric()))
        .map(str::to_string)
        .collect()
}

#[test]
fn relay_host_postfix_with_sasl_over_starttls() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = Relay::start(&tmp.path().join("relay"), "posthorn", "relay-secret");
    let (_dns, dns) = dns(&[
        "mx-host=remote.test,mx.remote.test,10",
        "host-record=mx.remote.test,127.0.0.9",
    ]);
    let credentials = tmp.path().join("relay-credentials");
    std::fs::create_dir_all(&credentials).unwrap();
    std::fs::write(credentials.join("username"), "posthorn\n").unwrap();
    std::fs::write(credentials.join("password"), "wrong\n").unwrap();
    let server = Server::start(
        &tmp.path().join("posthorn"),
        dns,
        &format!(
            "{{relay: {{host: '127.0.0.1:{}', caFile: {}, credentialsDir: {}}}}}",
            relay.port,
            relay.dir.join("ca.crt").display(),
            credentials.display()
        ),
    );

    // Wrong credentials: the message stays queued, and the queue tools say why.
    assert!(server.submit(&["bob@remote.test"], "<wrong-credentials@test>"));
    let mut listed = String::new();
    server.wait("the deferral", Duration::from_secs(30), || {
        listed = server.queue(&["list"]).1;
        listed.contains("authentication failed")
    });
    assert!(
        listed.contains(&format!(
            "(4.7.0 relay 127.0.0.1:{}: authentication failed: 535 5.7.8",
            relay.port
        )),
        "{listed}"
    );
    assert!(listed.contains("bob@remote.test"), "{listed}");
    let ids = listed_ids(&listed);
    assert_eq!(ids.len(), 1, "{listed}");
    let (ok, shown) = server.queue(&["show", &ids[0]]);
    assert!(ok, "{shown}");
    assert!(shown.contains("\"state\": \"deferred\""), "{shown}");
    assert!(
        shown.contains("Message-Id: <wrong-credentials@test>"),
        "{shown}"
    );
    assert!(relay.received().is_empty());

    // The Secret is fixed (files rewritten in place) and the queue flushed: delivered.
    std::fs::write(credentials.join("password"), "relay-secret\n").unwrap();
    let (ok, flushed) = server.queue(&["flush"]);
    assert!(ok, "{flushed}");
    assert!(server.submit(&["carol@remote.test", "dave@remote.test"], "<second@test>"));
    server.wait("the relay to pass both on", Duration::from_secs(30), || {
        relay.received().len() == 2
    });
    let mut received = relay.received();
    received.sort();
    assert_eq!(received, ["<second@test>", "<wrong-credentials@test>"]);
    server.wait("an empty queue", Duration::from_secs(10), || {
        server.queue_is_empty()
    });
    let maillog = std::fs::read_to_string(relay.dir.join("maillog")).unwrap();
    assert!(
        maillog.contains("sasl_method=PLAIN, sasl_username=posthorn")
            || maillog.contains("sasl_method=LOGIN, sasl_username=posthorn"),
        "{maillog}"
    );
    assert!(
        maillog.contains("TLS connection established") || maillog.contains("starttls=1"),
        "{maillog}"
    );
    // Both recipients of the second message went in one transaction.
    assert!(
        maillog.contains("to=<carol@remote.test>") && maillog.contains("to=<dave@remote.test>"),
        "{maillog}"
    );
}

#[test]
fn direct_mx_delivery_with_fallback_retry_and_bounce() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let at = |ip: [u8; 4]| SocketAddr::from((ip, port));
    let ok = tmp.path().join("sink-ok");
    let _ok = sink(at([127, 0, 0, 1]), &ok, &[]);
    let _temp = sink(
        at([127, 0, 0, 3]),
        &tmp.path().join("sink-temp"),
        &["-r", "RCPT"],
    );
    let _reject = sink(
        at([127, 0, 0, 4]),
        &tmp.path().join("sink-reject"),
        &["-f", "RCPT"],
    );
    let (_dns, dns) = dns(&[
        // The preferred MX host is down (nothing listens on 127.0.0.2): the next is used.
        "mx-host=ok.test,dead.ok.test,5",
        "mx-host=ok.test,mx.ok.test,10",
        "host-record=dead.ok.test,127.0.0.2",
        "host-record=mx.ok.test,127.0.0.1",
        "mx-host=temp.test,mx.temp.test,10",
        "host-record=mx.temp.test,127.0.0.3",
        "mx-host=reject.test,mx.reject.test,10",
        "host-record=mx.reject.test,127.0.0.4",
        // No MX at all: the domain's own address (RFC 5321 §5.1).
        "host-record=plain.test,127.0.0.1",
    ]);
    let mut server = Server::start(
        &tmp.path().join("posthorn"),
        dns,
        &format!("{{mxPort: {port}, minBackoff: 1s, maxBackoff: 2s}}"),
    );
    assert!(server.submit(
        &["a@ok.test", "b@temp.test", "c@reject.test", "d@plain.test"],
        "<mx@test>"
    ));

    server.wait("both good domains", Duration::from_secs(30), || {
        sink_message_ids(&ok).len() == 2
    });
    assert_eq!(sink_message_ids(&ok), ["<mx@test>", "<mx@test>"]);

    // 5xx: that recipient failed, and the sender (a local user) got a report.
    server.wait("the bounce", Duration::from_secs(30), || {
        !server.mailbox("alice").is_empty()
    });
    let bounce = server.mailbox("alice").remove(0);
    assert!(bounce.contains("Return-Path: <>"), "{bounce}");
    // An RFC 3464 report (Maildir copies have LF line ends).
    assert!(bounce.contains("report-type=delivery-status"), "{bounce}");
    assert!(
        bounce.contains("Final-Recipient: rfc822; c@reject.test\nAction: failed\nStatus: 5.3.0\nRemote-MTA: dns; mx.reject.test"),
        "{bounce}"
    );
    assert!(
        bounce.contains("host mx.reject.test[127.0.0.4] said: 500 5.3.0"),
        "{bounce}"
    );
    assert!(
        !bounce.contains("Final-Recipient: rfc822; b@temp.test"),
        "{bounce}"
    );

    // 4xx: deferred with the reply as reason, and retried on its own (backoff 1-2 s).
    let mut listed = String::new();
    wait_for(
        "a second attempt at temp.test",
        Duration::from_secs(30),
        || {
            listed = server.queue(&["list"]).1;
            let ids = listed_ids(&listed);
            ids.len() == 1
                && server
                    .queue(&["show", &ids[0]])
                    .1
                    .contains("\"attempts\": 2")
        },
    );
    assert!(
        listed.contains("(4.3.0 host mx.temp.test[127.0.0.3] said: 450 4.3.0"),
        "{listed}"
    );
    assert!(
        listed.contains("b@temp.test") && !listed.contains("a@ok.test"),
        "{listed}"
    );

    // A graceful stop leaves the deferred message queued; it resumes after a restart
    // and goes once the destination accepts it... here it is deleted instead.
    let status = server.terminate();
    assert!(status.success(), "{status:?}\n{}", server.log());
    assert!(
        server.log().contains("stopped; queued messages resume"),
        "{}",
        server.log()
    );
    server.restart();
    let id = listed_ids(&listed).remove(0);
    let (ok_delete, text) = server.queue(&["delete", &id]);
    assert!(ok_delete, "{text}");
    assert!(server.queue_is_empty(), "{}", server.queue(&["list"]).1);
    let (deleted_again, text) = server.queue(&["delete", &id]);
    assert!(!deleted_again && text.contains("no such message"), "{text}");
}

/// The private Dovecot LMTP server of `e2e/delivery/lmtp.sh`, stopped when dropped.
struct Dovecot {
    dir: PathBuf,
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("e2e/delivery/lmtp.sh"))
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

#[test]
fn local_delivery_over_lmtp_to_dovecot_honours_each_recipient_reply() {
    let tmp = tempfile::tempdir().unwrap();
    let dovecot = Dovecot {
        dir: tmp.path().join("dovecot"),
    };
    std::fs::create_dir_all(&dovecot.dir).unwrap();
    run_ok(
        Command::new(repo().join("e2e/delivery/lmtp.sh"))
            .arg("start")
            .arg(&dovecot.dir)
            .arg(free_port().to_string())
            .args(["alice@example.com", "bob@example.com"]),
    );
    let (_dns, dns) = dns(&[]);
    let server = Server::start(
        &tmp.path().join("posthorn"),
        dns,
        &format!("{{lmtp: 'unix:{}/lmtp.sock'}}", dovecot.dir.display()),
    );
    // postmaster@ is a Posthorn user, but Dovecot has no mailbox for it.
    assert!(server.submit(
        &["bob@example.com", "postmaster@example.com"],
        "<lmtp@test>"
    ));
    let mailbox = |user: &str| {
        read_dir_texts(
            &dovecot
                .dir
                .join("mail/example.com")
                .join(user)
                .join("Maildir/new"),
        )
    };
    server.wait("bob's copy in Dovecot", Duration::from_secs(30), || {
        !mailbox("bob").is_empty()
    });
    assert!(mailbox("bob")[0].contains("Message-Id: <lmtp@test>"));
    server.wait("the report to alice", Duration::from_secs(30), || {
        !mailbox("alice").is_empty()
    });
    let report = mailbox("alice").remove(0);
    assert!(
        report.contains(
            "Final-Recipient: rfc822; postmaster@example.com\nAction: failed\nStatus: 5.1.1"
        ),
        "{report}"
    );
    assert!(
        report.contains(&format!(
            "lmtp unix:{}/lmtp.sock said: 550 5.1.1",
            dovecot.dir.display()
        )),
        "{report}"
    );
    assert!(
        !report.contains("Final-Recipient: rfc822; bob@example.com"),
        "{report}"
    );
    server.wait("an empty queue", Duration::from_secs(10), || {
        server.queue_is_empty()
    });
    // Nothing went to the built-in Maildir.
    assert!(server.mailbox("bob").is_empty() && server.mailbox("alice").is_empty());
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Under a steady load of submissions the server is killed (SIGKILL) 20 times at
/// random moments and restarted on the same spool; once the queue has drained, every
/// message a client got `250` for has reached the MX sink.
#[test]
fn no_loss_across_twenty_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let received = tmp.path().join("sink");
    let _sink = sink(SocketAddr::from(([127, 0, 0, 1], port)), &received, &[]);
    let (_dns, dns) = dns(&[
        "mx-host=far.test,mx.far.test,10",
        "host-record=mx.far.test,127.0.0.1",
    ]);
    let mut server = Server::start(
        &tmp.path().join("posthorn"),
        dns,
        &format!("{{mxPort: {port}, minBackoff: 1s, maxBackoff: 2s}}"),
    );
    let out = tmp.path().join("load");
    std::fs::create_dir_all(&out).unwrap();
    let stop = tmp.path().join("stop");
    let mut load = Guard(
        Command::new(repo().join("e2e/delivery/load.py"))
            .arg("127.0.0.1")
            .arg(server.submission.port().to_string())
            .args(["alice@example.com", PASSWORD, "rcpt@far.test"])
            .arg(&out)
            .arg(&stop)
            .spawn()
            .expect("python3"),
    );

    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(rand::random_range(300..2000)));
        server.kill();
        server.restart();
    }
    std::thread::sleep(Duration::from_secs(1));
    std::fs::write(&stop, b"").unwrap();
    let mut load_exited = false;
    for _ in 0..200 {
        if load.0.try_wait().unwrap().is_some() {
            load_exited = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(load_exited, "the load client did not stop");

    server.wait("the queue to drain", Duration::from_secs(60), || {
        server.queue_is_empty()
    });
    server.kill();
    common::assert_no_panic("posthorn serve", &server.log());
    let hashes = |name: &str| -> Vec<(String, String)> {
        lines(&out.join(name))
            .iter()
            .map(|l| {
                let (id, hash) = l.split_once(' ').unwrap_or_else(|| panic!("{name}: {l:?}"));
                (id.to_string(), hash.to_string())
            })
            .collect()
    };
    let accepted = hashes("accepted");
    let attempted: HashMap<String, String> = hashes("attempted").into_iter().collect();
    let copies = sink_bodies(&received);
    assert!(
        accepted.len() > 100,
        "too little load: {} accepted",
        accepted.len()
    );
    let mut delivered: HashMap<&str, usize> = HashMap::new();
    for (id, hash) in &copies {
        // Nothing that was not submitted, and each copy whole: the body's hash is the one
        // the client sent.
        let sent = attempted
            .get(id)
            .unwrap_or_else(|| panic!("delivered {id}, which was never submitted"));
        assert_eq!(hash, sent, "the body of {id} changed on its way");
        *delivered.entry(id).or_default() += 1;
    }
    let lost: Vec<&String> = accepted
        .iter()
        .map(|(id, _)| id)
        .filter(|id| !delivered.contains_key(id.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} accepted messages never arrived, e.g. {:?}",
        lost.len(),
        accepted.len(),
        &lost[..lost.len().min(5)]
    );
    // Messages committed just before a kill whose 250 the client never saw.
    let unacknowledged = delivered.len() - accepted.len();
    assert!(
        unacknowledged <= 20 * 4,
        "{unacknowledged} delivered without a 250"
    );
    // A delivery in flight at a kill is repeated after the restart: a few, not many.
    let mut duplicates: Vec<(&str, usize)> = delivered
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, n)| (*id, *n))
        .collect();
    duplicates.sort();
    let extra_copies = copies.len() - delivered.len();
    println!(
        "accepted {} (all delivered whole), {unacknowledged} more delivered without a 250 \
         (killed between commit and reply), {extra_copies} extra copies: {duplicates:?}",
        accepted.len()
    );
    assert!(
        extra_copies * 50 <= accepted.len(),
        "{extra_copies} duplicate deliveries is over 2 % of {} accepted: {duplicates:?}",
        accepted.len()
    );
}

/// (Message-ID, SHA-256 of the body) of each message smtp-sink dumped into `dir`: the
/// body is what follows the message's header, its lines joined by LF, as `load.py`
/// hashes it.
fn sink_bodies(dir: &Path) -> Vec<(String, String)> {
    sink_messages(dir)
        .iter()
        .map(|text| {
            let id = text
                .lines()
                .find_map(|l| l.strip_prefix("Message-ID:"))
                .unwrap_or_else(|| panic!("a dumped message without Message-ID:\n{text}"))
                .trim()
                .to_string();
            let (_, body) = text
                .split_once("\n\n")
                .unwrap_or_else(|| panic!("a dumped message without a body:\n{text}"));
            let digest = Sha256::digest(body.trim_end_matches('\n').as_bytes());
            let hash = digest.iter().map(|b| format!("{b:02x}")).collect();
            (id, hash)
        })
        .collect()
}

/// Reports reach a local sender through the queue runner and the spool: `NOTIFY=SUCCESS`
/// gives a success report, and a recipient deferred past `delayWarning` exactly one delay
/// warning, however often it is retried or the queue flushed.
#[test]
fn success_report_and_one_delay_warning_reach_a_local_sender() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let ok = tmp.path().join("sink-ok");
    let _ok = sink(SocketAddr::from(([127, 0, 0, 1], port)), &ok, &[]);
    let _temp = sink(
        SocketAddr::from(([127, 0, 0, 3], port)),
        &tmp.path().join("sink-temp"),
        &["-r", "RCPT"],
    );
    let (_dns, dns) = dns(&[
        "mx-host=ok.test,mx.ok.test,10",
        "host-record=mx.ok.test,127.0.0.1",
        "mx-host=temp.test,mx.temp.test,10",
        "host-record=mx.temp.test,127.0.0.3",
    ]);
    let server = Server::start(
        &tmp.path().join("posthorn"),
        dns,
        &format!("{{mxPort: {port}, minBackoff: 1s, maxBackoff: 1s, delayWarning: 2s}}"),
    );
    let mut c = common::Client::connect(server.submission.port());
    c.expect_code(220);
    c.cmd_expect("EHLO client.example.com", 250);
    let cert = server.dir.join("tls.crt");
    c.starttls(vec![
        CertificateDer::from_pem_file(&cert).expect("the test certificate"),
    ]);
    c.cmd_expect("EHLO client.example.com", 250);
    assert_eq!(c.auth_plain("alice@example.com", PASSWORD).code, 235);
    for (rcpt, id) in [
        ("<a@ok.test> NOTIFY=SUCCESS", "<notify-success@test>"),
        ("<b@temp.test>", "<delayed@test>"),
    ] {
        c.cmd_expect("MAIL FROM:<alice@example.com>", 250);
        c.cmd_expect(&format!("RCPT TO:{rcpt}"), 250);
        c.cmd_expect("DATA", 354);
        c.send(
            format!("Message-ID: {id}\r\nSubject: report test\r\n\r\nhello\r\n.\r\n").as_bytes(),
        )
        .unwrap();
        assert_eq!(c.reply().code, 250);
    }
    c.cmd_expect("QUIT", 221);

    let reports = |action: &str| -> Vec<String> {
        server
            .mailbox("alice")
            .into_iter()
            .filter(|r| r.contains(&format!("Action: {action}")))
            .collect()
    };
    server.wait("the success report", Duration::from_secs(30), || {
        !reports("delivered").is_empty()
    });
    let success = reports("delivered").remove(0);
    assert!(
        success.contains("Final-Recipient: rfc822; a@ok.test\nAction: delivered\nStatus: 2.0.0"),
        "{success}"
    );
    assert!(success.contains("<notify-success@test>"), "{success}");
    server.wait("the delay warning", Duration::from_secs(30), || {
        !reports("delayed").is_empty()
    });
    // Retries every second, and flushes in between: still one warning.
    for _ in 0..4 {
        let (flushed, text) = server.queue(&["flush"]);
        assert!(flushed, "{text}");
        std::thread::sleep(Duration::from_millis(1500));
    }
    let delayed = reports("delayed");
    assert_eq!(delayed.len(), 1, "{delayed:#?}");
    assert!(
        delayed[0].contains("Final-Recipient: rfc822; b@temp.test\nAction: delayed"),
        "{}",
        delayed[0]
    );
    assert!(delayed[0].contains("<delayed@test>"), "{}", delayed[0]);
    assert_eq!(
        server.mailbox("alice").len(),
        2,
        "{:#?}",
        server.mailbox("alice")
    );
}

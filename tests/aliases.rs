//! Aliases end to end: swaks and a raw client submit to `posthorn serve`, which delivers
//! into its Maildirs, or through the MX path (dnsmasq) to smtp-sink for addresses an
//! alias forwards elsewhere, with the sender rewritten by SRS. Needs root, dnsmasq,
//! swaks and smtp-sink (`e2e/setup.sh`), like tests/delivery_e2e.rs.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::Client;
use common::peers::{certificates, dns, free_port, poll, sink, sink_messages, wait_for};

const PASSWORD: &str = "alias-secret";
const LIMIT: Duration = Duration::from_secs(30);
/// A closed port: tests that only use local domains need no name server.
const NO_DNS: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9);

const ALIASES: &str = "
# one target, several (with a duplicate), the catch-all and an exact entry beside it
info@example.com      alice@example.com
team@example.com      alice, bob@example.com,
    alice@example.com
@example.com          bob@example.com
exact@example.com     alice@example.com
forward@example.com   friend@remote.test
";

/// `posthorn serve` for example.com with users alice, bob and postmaster, port 25 and
/// submission on loopback ports, the alias file `aliases` and SRS.
struct Server {
    dir: PathBuf,
    smtp: u16,
    submission: u16,
    child: Option<Child>,
}

impl Server {
    fn start(dir: &Path, dns: SocketAddr, mx_port: u16) -> Server {
        std::fs::create_dir_all(dir).unwrap();
        certificates(dir, &["mail.example.com"]);
        let users: String = ["alice", "bob", "postmaster"]
            .iter()
            .map(|u| format!("{u}@example.com:{{PLAIN}}{PASSWORD}\n"))
            .collect();
        std::fs::write(dir.join("passwd"), users).unwrap();
        std::fs::write(dir.join("srs-secret"), "e2e-srs-key\n").unwrap();
        if !dir.join("aliases").exists() {
            std::fs::write(dir.join("aliases"), ALIASES).unwrap();
        }
        let (smtp, submission) = (free_port(), free_port());
        std::fs::write(
            dir.join("config.yaml"),
            format!(
                "hostname: mail.example.com
domains: [example.com]
listeners: {{smtp: '127.0.0.1:{smtp}', submission: '127.0.0.1:{submission}', submissions: null}}
metrics: null
tls: {{cert: {d}/tls.crt, key: {d}/tls.key}}
auth: {{passwdFile: {d}/passwd, allowPlaintext: true, failureDelay: 0s}}
aliases: {{file: {d}/aliases}}
srs: {{secretFile: {d}/srs-secret}}
dns: {{nameservers: ['{dns}']}}
spool: {{directory: {d}/spool, maildirRoot: {d}/mail}}
delivery: {{mxPort: {mx_port}, minBackoff: 1s, maxBackoff: 2s}}
reloadInterval: 100ms
",
                d = dir.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_posthorn"))
            .args(["serve", "--config"])
            .arg(dir.join("config.yaml"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        wait_for("posthorn to listen", LIMIT, || {
            std::net::TcpStream::connect(("127.0.0.1", submission)).is_ok()
        });
        Server {
            dir: dir.to_path_buf(),
            smtp,
            submission,
            child: Some(child),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    fn wait(&self, what: &str, done: impl FnMut() -> bool) {
        if !poll(LIMIT, done) {
            panic!("timed out waiting for {what}; server log:\n{}", self.log());
        }
    }

    /// swaks to port 25 from `from`; the last line the server answered.
    fn inbound(&self, from: &str, to: &str, message_id: &str) -> String {
        swaks(&[
            "--port",
            &self.smtp.to_string(),
            "--from",
            from,
            "--to",
            to,
            "--header",
            &format!("Message-Id: {message_id}"),
        ])
    }

    /// swaks to submission as alice, sending as `from`; the last server line.
    fn submit_as(&self, from: &str, to: &str) -> String {
        swaks(&[
            "--port",
            &self.submission.to_string(),
            "--tls",
            "--auth",
            "PLAIN",
            "--auth-user",
            "alice@example.com",
            "--auth-password",
            PASSWORD,
            "--from",
            from,
            "--to",
            to,
        ])
    }

    /// The messages in `user`'s Maildir `new/`.
    fn mailbox(&self, user: &str) -> Vec<String> {
        let dir = self
            .dir
            .join("mail/example.com")
            .join(user)
            .join("Maildir/new");
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect()
    }

    /// The messages in `user`'s mailbox carrying `message_id`.
    fn copies(&self, user: &str, message_id: &str) -> Vec<String> {
        self.mailbox(user)
            .into_iter()
            .filter(|m| m.contains(&format!("Message-Id: {message_id}")))
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        common::assert_no_panic("posthorn serve", &self.log());
    }
}

/// Runs swaks against 127.0.0.1 with `args`; the last line the server sent before QUIT
/// (`<-`, `<~` or `<**` prefixed in swaks' transcript), without the prefix.
fn swaks(args: &[&str]) -> String {
    let out = Command::new("swaks")
        .args(["--server", "127.0.0.1", "--ehlo", "client.example.net"])
        .args(["--timeout", "30", "--header", "Subject: alias test"])
        .args(args)
        .output()
        .expect("swaks (e2e/setup.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .rev()
        .filter(|l| l.starts_with("<-") || l.starts_with("<~") || l.starts_with("<**"))
        .find(|l| !l.contains(" 221 "))
        .map(|l| l.trim_start_matches(['<', '-', '~', '*', ' ']).to_string())
        .unwrap_or_else(|| panic!("no reply in swaks output:\n{text}"))
}

fn queued(reply: &str) -> bool {
    reply.starts_with("250 2.0.0 Ok: queued as")
}

#[test]
fn aliases_deliver_forward_with_srs_and_take_the_bounce_back() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let friend = tmp.path().join("sink-remote");
    let origin = tmp.path().join("sink-origin");
    let _friend = sink(SocketAddr::from(([127, 0, 0, 1], port)), &friend, &[]);
    let _origin = sink(SocketAddr::from(([127, 0, 0, 2], port)), &origin, &[]);
    let (_dns, dns) = dns(&[
        "mx-host=remote.test,mx.remote.test,10",
        "host-record=mx.remote.test,127.0.0.1",
        "mx-host=origin.test,mx.origin.test,10",
        "host-record=mx.origin.test,127.0.0.2",
    ]);
    let server = Server::start(&tmp.path().join("posthorn"), dns, port);

    let cases = [
        ("info@example.com", "<info@t>"),
        ("team@example.com", "<team@t>"),
        ("random@example.com", "<catch-all@t>"),
        ("exact@example.com", "<exact@t>"),
        ("alice+news@example.com", "<tag@t>"),
        ("postmaster@example.com", "<postmaster@t>"),
        ("abuse@example.com", "<abuse@t>"),
        ("forward@example.com", "<forward@t>"),
    ];
    for (to, id) in cases {
        let reply = server.inbound("sender@origin.test", to, id);
        assert!(queued(&reply), "{to}: {reply}");
    }
    server.wait("every local copy", || server.mailbox("alice").len() == 4);
    server.wait("bob's copies", || server.mailbox("bob").len() == 2);
    server.wait("postmaster's copies", || {
        server.mailbox("postmaster").len() == 2
    });
    for (user, id) in [
        ("alice", "<info@t>"),
        ("alice", "<team@t>"),
        ("bob", "<team@t>"),
        ("bob", "<catch-all@t>"),
        ("alice", "<exact@t>"),
        ("postmaster", "<postmaster@t>"),
        ("postmaster", "<abuse@t>"),
    ] {
        assert_eq!(server.copies(user, id).len(), 1, "{user} {id}");
    }
    let tagged = server.copies("alice", "<tag@t>");
    assert_eq!(tagged.len(), 1);
    assert!(
        tagged[0].contains("\nDelivered-To: alice+news@example.com\n"),
        "{}",
        tagged[0]
    );
    assert!(
        server.copies("bob", "<exact@t>").is_empty(),
        "exact beats catch-all"
    );

    // The forward leaves with an SRS sender at our domain.
    server.wait("the forward at the sink", || {
        !sink_messages(&friend).is_empty()
    });
    let forwarded = sink_messages(&friend).remove(0);
    let mail_args = forwarded
        .lines()
        .find_map(|l| l.strip_prefix("X-Mail-Args: <"))
        .unwrap_or_else(|| panic!("{forwarded}"));
    let srs = mail_args.split(['>', ' ']).next().unwrap().to_string();
    assert!(
        srs.starts_with("SRS0=") && srs.ends_with("=origin.test=sender@example.com"),
        "{srs}"
    );
    assert!(
        forwarded.contains("X-Rcpt-Args: <friend@remote.test>"),
        "{forwarded}"
    );

    // Its bounce comes back to the SRS address and reaches the original sender; a
    // forged one is an unknown user.
    let mut c = Client::connect(server.smtp);
    c.expect_code(220);
    c.cmd_expect("EHLO remote.test", 250);
    c.cmd_expect("MAIL FROM:<>", 250);
    let forged = srs.replacen("SRS0=", "SRS0=x", 1);
    let refused = c.cmd(&format!("RCPT TO:<{forged}>"));
    assert_eq!(
        refused.lines,
        [format!(
            "550 5.1.1 <{forged}>: Recipient address rejected: User unknown in virtual mailbox table"
        )]
    );
    c.cmd_expect(&format!("RCPT TO:<{srs}>"), 250);
    c.cmd_expect("DATA", 354);
    c.send(b"Subject: Undelivered Mail\r\nMessage-Id: <bounce@t>\r\n\r\nbounced\r\n.\r\n")
        .unwrap();
    c.expect_code(250);
    server.wait("the bounce at the original sender", || {
        sink_messages(&origin)
            .iter()
            .any(|m| m.contains("X-Rcpt-Args: <sender@origin.test>") && m.contains("<bounce@t>"))
    });
}

#[test]
fn sending_as_aliases_and_extensions_and_the_hop_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let dns = NO_DNS;
    let server = Server::start(&tmp.path().join("posthorn"), dns, free_port());
    assert!(queued(
        &server.submit_as("info@example.com", "bob@example.com")
    ));
    assert!(queued(
        &server.submit_as("alice+lists@example.com", "bob@example.com")
    ));
    assert_eq!(
        server.submit_as("bob@example.com", "bob@example.com"),
        "553 5.7.1 <bob@example.com>: Sender address rejected: not owned by user alice@example.com"
    );

    // 49 Received headers and ours make 50: refused as a loop, as Postfix does.
    let mut c = Client::connect(server.smtp);
    c.expect_code(220);
    c.cmd_expect("EHLO relay.example.net", 250);
    for hops in [48, 49] {
        c.cmd_expect("MAIL FROM:<sender@origin.test>", 250);
        c.cmd_expect("RCPT TO:<alice@example.com>", 250);
        c.cmd_expect("DATA", 354);
        let trace = "Received: from hop.example.net\r\n".repeat(hops);
        c.send(format!("{trace}Subject: loop {hops}\r\n\r\nhi\r\n.\r\n").as_bytes())
            .unwrap();
        let reply = c.reply();
        match hops {
            48 => assert!(queued(reply.last()), "{:?}", reply.lines),
            _ => assert_eq!(reply.lines, ["554 5.4.0 Error: too many hops"]),
        }
    }
}

#[test]
fn a_changed_alias_file_is_reloaded_and_a_bad_line_keeps_the_old_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dns = NO_DNS;
    let dir = tmp.path().join("posthorn");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("aliases"), "info@example.com alice@example.com\n").unwrap();
    let server = Server::start(&dir, dns, free_port());
    assert!(queued(&server.inbound(
        "s@origin.test",
        "info@example.com",
        "<one@t>"
    )));
    server.wait("the first copy", || {
        server.copies("alice", "<one@t>").len() == 1
    });

    let reloads = || server.log().matches("reloaded").count();
    let before = reloads();
    common::write_whole(&dir.join("aliases"), "info@example.com   bob@example.com\n");
    server.wait("the reload", || reloads() > before);
    assert!(queued(&server.inbound(
        "s@origin.test",
        "info@example.com",
        "<two@t>"
    )));
    server.wait("the copy for bob", || {
        server.copies("bob", "<two@t>").len() == 1
    });

    common::write_whole(
        &dir.join("aliases"),
        "info@example.com alice@example.com\nbroken-line-without-target\n",
    );
    let file = dir.join("aliases");
    server.wait("the failed reload", || {
        server.log().contains("reload failed")
    });
    let log = server.log();
    let expected = format!(
        "{}: line 2: \\\"broken-line-without-target\\\" lists nothing",
        file.display()
    );
    assert!(log.contains(&expected), "{expected} not in:\n{log}");
    assert!(queued(&server.inbound(
        "s@origin.test",
        "info@example.com",
        "<three@t>"
    )));
    server.wait("the copy under the old table", || {
        server.copies("bob", "<three@t>").len() == 1
    });
    assert!(server.copies("alice", "<three@t>").is_empty());
}

#[test]
fn serve_refuses_to_start_with_a_bad_alias_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    certificates(dir, &["mail.example.com"]);
    std::fs::write(dir.join("passwd"), "").unwrap();
    std::fs::write(
        dir.join("aliases"),
        "a@example.com b@example.com\nb@example.com a@example.com\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("config.yaml"),
        format!(
            "hostname: mail.example.com\ndomains: [example.com]\nmetrics: null\n\
             listeners: {{smtp: '127.0.0.1:{}'}}\n\
             tls: {{cert: {d}/tls.crt, key: {d}/tls.key}}\nauth: {{passwdFile: {d}/passwd}}\n\
             aliases: {{file: {d}/aliases}}\nspool: {{directory: {d}/spool, maildirRoot: {d}/mail}}\n",
            free_port(),
            d = dir.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_posthorn"))
        .args(["serve", "--config"])
        .arg(dir.join("config.yaml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}: line 1: alias loop: a@example.com -> b@example.com -> a@example.com",
            dir.join("aliases").display()
        )),
        "{stderr}"
    );
}

//! The envelope's edges against a real `posthorn serve`: duplicate recipients are
//! delivered once, postmaster is always accepted on port 25 and lands in its configured
//! mailbox, `SIZE=` values past the limit or past any integer are refused as Postfix
//! refuses them, address literals are accepted as Postfix accepts them, and a config
//! string with a CR LF stops the server before it listens.
//!
//! docs/behaviour.md, rows `duplicates`, `too-many-recipients`, `postmaster`,
//! `rcpt-null`, `size-param`, `size-huge`, `size-syntax`.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits until nothing containing `marker` is left in the spool (every recipient done),
/// then returns the delivered copies in `local@example.com`'s Maildir.
fn delivered_copies(s: &Server, local: &str, marker: &str) -> usize {
    s.wait_for_mail(local, marker);
    let spool = s.path("spool");
    assert!(
        eventually(DELIVERY_TIMEOUT, || s
            .stored_files_containing(marker)
            .iter()
            .all(|p| !p.starts_with(&spool))),
        "message {marker} still in the spool: {:?}",
        s.stored_files_containing(marker)
    );
    s.mails(local)
        .iter()
        .filter(|(_, text)| text.contains(marker))
        .count()
}

fn inbound_client(s: &Server) -> Client {
    let mut c = s.connect(Port::Smtp);
    c.expect_code(220);
    c.cmd_expect("EHLO client.example.org", 250);
    c
}

fn send_data(c: &mut Client, marker: &str) {
    c.cmd_expect("DATA", 354);
    c.send(format!("Subject: {marker}\r\n\r\nhello\r\n.\r\n").as_bytes())
        .unwrap();
    let r = c.reply();
    assert!(r.last().starts_with("250 2.0.0 Ok: queued as "), "{r:?}");
}

#[test]
fn fifty_identical_recipients_in_any_case_get_one_copy() {
    let s = Server::start();
    let mut c = inbound_client(&s);
    c.cmd_expect("MAIL FROM:<someone@example.net>", 250);
    for i in 0..50 {
        let to = ["bob@example.com", "BOB@EXAMPLE.COM", "Bob@Example.com"][i % 3];
        let r = c.cmd(&format!("RCPT TO:<{to}>"));
        assert_eq!(r.lines, ["250 2.1.5 Ok"], "RCPT #{}", i + 1);
    }
    let m = marker("dup-rcpts");
    send_data(&mut c, &m);
    assert_eq!(delivered_copies(&s, "bob", &m), 1);
    // Several RCPTs were accepted, so the Received header names none (as Postfix).
    let mail = s.wait_for_mail("bob", &m);
    assert!(!mail.contains("\tfor <"), "{mail}");
}

#[test]
fn swaks_with_repeated_recipients_delivers_one_copy_each() {
    let s = Server::start();
    let m = marker("swaks-dup");
    let subject = format!("Subject: {m}");
    let t = s.swaks(
        Port::Smtp,
        &[
            "--from",
            "someone@example.net",
            "--to",
            "bob@example.com,alice@example.com,BOB@example.com,bob@EXAMPLE.com,Alice@Example.Com",
            "--header",
            &subject,
        ],
    );
    t.assert_queued();
    assert_eq!(
        t.replies().iter().filter(|l| **l == "250 2.1.5 Ok").count(),
        5,
        "{}",
        t.text
    );
    assert_eq!(delivered_copies(&s, "bob", &m), 1);
    assert_eq!(delivered_copies(&s, "alice", &m), 1);
}

#[test]
fn duplicates_count_towards_max_recipients() {
    let s = Server::builder().limit("maxRecipients", 5).start();
    let mut c = inbound_client(&s);
    c.cmd_expect("MAIL FROM:<someone@example.net>", 250);
    for _ in 0..5 {
        c.cmd_expect("RCPT TO:<bob@example.com>", 250);
    }
    let r = c.cmd("RCPT TO:<alice@example.com>");
    assert_eq!(r.lines, ["452 4.5.3 Error: too many recipients"]);
    let m = marker("dup-limit");
    send_data(&mut c, &m);
    assert_eq!(delivered_copies(&s, "bob", &m), 1);
    assert!(s.mails("alice").is_empty());
}

#[test]
fn postmaster_in_any_case_and_at_each_local_domain_reaches_the_configured_address() {
    let s = Server::builder()
        .config("domains", "[example.com, example.org]")
        .config("postmaster", ALICE)
        .start();
    for to in [
        "postmaster",
        "PostMaster",
        "postmaster@example.com",
        "POSTMASTER@EXAMPLE.COM",
        "postmaster@example.org",
        "Postmaster@Example.Org",
    ] {
        let m = marker("postmaster");
        let subject = format!("Subject: {m}");
        let t = s.swaks(
            Port::Smtp,
            &[
                "--from",
                "someone@example.net",
                "--to",
                to,
                "--header",
                &subject,
            ],
        );
        t.assert_reply_to("RCPT TO", "250 2.1.5 Ok");
        t.assert_queued();
        let mail = s.wait_for_mail("alice", &m);
        assert!(mail.contains("Received: "), "{to}: {mail}");
    }
    assert!(s.mails("postmaster").is_empty());
    // Postmaster of a domain that is not local is still relaying.
    let t = s.swaks(
        Port::Smtp,
        &[
            "--from",
            "someone@example.net",
            "--to",
            "postmaster@example.net",
            "--quit-after",
            "RCPT",
        ],
    );
    t.assert_reply_to(
        "RCPT TO",
        "454 4.7.1 <postmaster@example.net>: Relay access denied",
    );
}

#[test]
fn postmaster_defaults_to_postmaster_at_the_first_domain_without_such_a_user() {
    let s = Server::start();
    let m = marker("postmaster-default");
    let subject = format!("Subject: {m}");
    let t = s.swaks(
        Port::Smtp,
        &[
            "--from",
            "someone@example.net",
            "--to",
            "postmaster",
            "--header",
            &subject,
        ],
    );
    t.assert_queued();
    s.wait_for_mail("postmaster", &m);
    // The null path is not postmaster.
    let mut c = inbound_client(&s);
    c.cmd_expect("MAIL FROM:<someone@example.net>", 250);
    let r = c.cmd("RCPT TO:<>");
    assert_eq!(r.lines, ["501 5.1.3 Bad recipient address syntax"]);
}

#[test]
fn authenticated_users_can_write_to_postmaster() {
    let s = Server::builder().config("postmaster", BOB).start();
    for to in ["postmaster", "postmaster@example.com"] {
        let m = marker("postmaster-submission");
        let t = s.swaks_auth(
            Port::Submission,
            ALICE,
            ALICE_PASS,
            &[
                "--from",
                ALICE,
                "--to",
                to,
                "--header",
                &format!("Subject: {m}"),
            ],
        );
        t.assert_queued();
        s.wait_for_mail("bob", &m);
    }
    // The sender rules still hold.
    let t = s.swaks_auth(
        Port::Submission,
        ALICE,
        ALICE_PASS,
        &[
            "--from",
            "sales@example.com",
            "--to",
            "postmaster",
            "--quit-after",
            "RCPT",
        ],
    );
    t.assert_reply_to(
        "RCPT TO",
        "553 5.7.1 <sales@example.com>: Sender address rejected: not owned by user alice@example.com",
    );
}

/// Address literals (RFC 5321 §4.1.3) as Postfix takes them: on port 25 a literal sender
/// is accepted with its parameters and travels on as typed; a malformed literal is a
/// syntax error; on submission an authenticated user may write to one.
#[test]
fn address_literals_are_accepted_as_postfix_accepts_them() {
    let s = Server::start();
    let mut c = inbound_client(&s);
    let r = c.cmd("MAIL FROM:<alice@[999.1.1.1]> SIZE=100");
    assert_eq!(r.lines, ["501 5.1.7 Bad sender address syntax"]);
    let from = "alice@[IPv6:2001:db8::1]";
    c.cmd_expect(&format!("MAIL FROM:<{from}> SIZE=100 BODY=8BITMIME"), 250);
    let r = c.cmd("RCPT TO:<bob@[foo]>");
    assert_eq!(r.lines, ["501 5.1.3 Bad recipient address syntax"]);
    c.cmd_expect("RCPT TO:<bob@example.com> NOTIFY=NEVER", 250);
    let m = marker("literal-sender");
    send_data(&mut c, &m);
    let mail = s.wait_for_mail("bob", &m);
    assert_eq!(
        mail.lines().next(),
        Some(format!("Return-Path: <{from}>").as_str())
    );

    let t = s.swaks_auth(
        Port::Submission,
        ALICE,
        ALICE_PASS,
        &[
            "--from",
            ALICE,
            "--to",
            "bob@[192.0.2.1]",
            "--quit-after",
            "RCPT",
        ],
    );
    t.assert_reply_to("RCPT TO", "250 2.1.5 Ok");
}

#[test]
fn size_parameter_over_the_limit_or_any_integer_is_refused() {
    let s = Server::start();
    let mut c = inbound_client(&s);
    let cases = [
        (
            "99999999999999999999999",
            "552 5.3.4 Message size exceeds file system imposed limit",
        ),
        (
            "18446744073709551616",
            "552 5.3.4 Message size exceeds file system imposed limit",
        ),
        (
            "9223372036854775808",
            "552 5.3.4 Message size exceeds file system imposed limit",
        ),
        (
            "9223372036854775807",
            "552 5.3.4 Message size exceeds fixed limit",
        ),
        ("1048577", "552 5.3.4 Message size exceeds fixed limit"),
        ("", "501 5.5.4 Bad message size syntax"),
        ("-1", "501 5.5.4 Bad message size syntax"),
        ("1M", "501 5.5.4 Bad message size syntax"),
    ];
    for (size, expected) in cases {
        let r = c.cmd(&format!("MAIL FROM:<someone@example.net> SIZE={size}"));
        assert_eq!(r.lines, [expected], "SIZE={size}");
    }
    // The limit itself is fine, and the session goes on.
    c.cmd_expect("MAIL FROM:<someone@example.net> SIZE=1048576", 250);
    c.cmd_expect("RCPT TO:<bob@example.com>", 250);
}

#[test]
fn serve_refuses_a_hostname_with_crlf_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "hostname: \"mail.example.com\\r\\n250 injected\"\n\
         domains: [example.com]\n\
         listeners: {smtp: \"127.0.0.1:0\", submission: null, submissions: null}\n\
         metrics: null\n\
         tls: {cert: /nonexistent/tls.crt, key: /nonexistent/tls.key}\n\
         auth: {passwdFile: /nonexistent/passwd}\n\
         spool: {directory: /nonexistent/spool, maildirRoot: /nonexistent/mail}\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_posthorn"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        // As in a pod: anyhow appends a backtrace when these ask for one.
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn posthorn serve");
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("posthorn serve kept running with a CR LF in its hostname");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "Error: {}: hostname: \"mail.example.com\\r\\n250 injected\" contains '\\r': only \
             letters, digits, '-' and '.' are allowed (write international names in their xn-- \
             form)\n",
            config.display()
        )
    );
    assert!(out.stdout.is_empty(), "{out:?}");
}

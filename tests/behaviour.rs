//! The behaviour contract (DESIGN §5, issue 2) driven by swaks against a running
//! `posthorn serve`, with dnsmasq answering for the test domains. Every reply is compared
//! with the exact line Postfix 3.7 + Dovecot 2.3 sent.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const GREETING: &str = "220 mail.example.com ESMTP";
const MUST_STARTTLS: &str = "530 5.7.0 Must issue a STARTTLS command first";
const AUTH_FAILED: &str = "535 5.7.8 Error: authentication failed:";

#[test]
fn greeting_on_every_port() {
    let s = Server::start();
    for port in [Port::Smtp, Port::Submission] {
        let t = s.swaks(port, &["--quit-after", "CONNECT"]);
        t.assert_reply(GREETING);
        assert_eq!(t.replies()[0], GREETING, "{port:?}:\n{}", t.text);
    }
    let t = s.swaks(Port::Submissions, &["-tlsc", "--quit-after", "CONNECT"]);
    t.assert_reply(GREETING);
}

#[test]
fn submission_ehlo_before_starttls_offers_starttls_not_auth() {
    let s = Server::start();
    let t = s.swaks(Port::Submission, &["--quit-after", "EHLO"]);
    let kw = t.ehlo_keywords();
    assert!(kw.iter().any(|k| k == "STARTTLS"), "{kw:?}\n{}", t.text);
    assert!(
        !kw.iter().any(|k| k.starts_with("AUTH")),
        "AUTH offered before TLS: {kw:?}"
    );
}

#[test]
fn submission_ehlo_after_starttls_offers_the_extensions() {
    let s = Server::start();
    let t = s.swaks(Port::Submission, &["-tls", "--quit-after", "HELO"]);
    let kw = t.ehlo_keywords();
    for want in [
        "AUTH PLAIN LOGIN",
        "PIPELINING",
        "SIZE 1048576",
        "ENHANCEDSTATUSCODES",
        "8BITMIME",
        "SMTPUTF8",
        "CHUNKING",
        "DSN",
    ] {
        assert!(
            kw.iter().any(|k| k == want),
            "EHLO after STARTTLS lacks {want:?}: {kw:?}\n{}",
            t.text
        );
    }
    assert!(
        !kw.iter().any(|k| k == "STARTTLS"),
        "STARTTLS offered again inside TLS: {kw:?}"
    );
}

#[test]
fn submissions_ehlo_offers_auth() {
    let s = Server::start();
    let t = s.swaks(Port::Submissions, &["-tlsc", "--quit-after", "EHLO"]);
    let kw = t.ehlo_keywords();
    assert!(
        kw.iter().any(|k| k == "AUTH PLAIN LOGIN"),
        "{kw:?}\n{}",
        t.text
    );
}

#[test]
fn smtp_port_offers_starttls_not_auth() {
    let s = Server::start();
    let t = s.swaks(Port::Smtp, &["--quit-after", "EHLO"]);
    let kw = t.ehlo_keywords();
    assert!(kw.iter().any(|k| k == "STARTTLS"), "{kw:?}\n{}", t.text);
    assert!(!kw.iter().any(|k| k.starts_with("AUTH")), "{kw:?}");
}

#[test]
fn submission_mail_before_starttls_is_refused() {
    let s = Server::start();
    let t = s.swaks(
        Port::Submission,
        &["--from", ALICE, "--to", BOB, "--quit-after", "MAIL"],
    );
    t.assert_reply_to("MAIL FROM", MUST_STARTTLS);
}

#[test]
fn submission_auth_before_starttls_is_refused() {
    // swaks will not send AUTH that is not advertised, so speak it directly.
    let s = Server::start();
    let mut c = s.connect(Port::Submission);
    c.expect_code(220);
    c.cmd_expect("EHLO client.example.org", 250);
    let r = c.auth_plain(ALICE, ALICE_PASS);
    assert_eq!(r.lines, [MUST_STARTTLS]);
    let r = c.cmd("AUTH LOGIN");
    assert_eq!(r.lines, [MUST_STARTTLS]);
    // Nothing but EHLO/STARTTLS/NOOP/RSET/QUIT before TLS.
    let r = c.cmd(&format!("RCPT TO:<{BOB}>"));
    assert_eq!(r.lines, [MUST_STARTTLS]);
    c.cmd_expect("NOOP", 250);
    c.cmd_expect("RSET", 250);
    c.cmd_expect("QUIT", 221);
}

#[test]
fn bad_password_and_unknown_user_get_the_same_535() {
    let s = Server::start();
    let mut lines = Vec::new();
    for (mech, user, pass) in [
        ("PLAIN", ALICE, "wrong-Pass-77"),
        ("PLAIN", "nobody@example.com", "wrong-Pass-77"),
        ("LOGIN", ALICE, "wrong-Pass-77"),
        ("LOGIN", "nobody@example.com", "wrong-Pass-77"),
    ] {
        let t = s.swaks(
            Port::Submission,
            &[
                "-tls",
                "--auth",
                mech,
                "--auth-user",
                user,
                "--auth-password",
                pass,
                "--quit-after",
                "AUTH",
            ],
        );
        let failure = t
            .replies()
            .into_iter()
            .find(|l| l.starts_with("535"))
            .unwrap_or_else(|| panic!("{mech} {user}: no 535 reply:\n{}", t.text))
            .to_string();
        assert!(
            failure.starts_with(AUTH_FAILED),
            "{mech} {user}: {failure:?}"
        );
        lines.push(failure);
    }
    assert!(
        lines.windows(2).all(|w| w[0] == w[1]),
        "replies differ, hinting whether the user exists: {lines:?}"
    );
    let log = s.stderr();
    assert!(
        !log.contains("wrong-Pass-77"),
        "password appears in the log:\n{log}"
    );
}

#[test]
fn failed_login_is_delayed() {
    let s = Server::start();
    let mut c = s.connect(Port::Submission);
    c.expect_code(220);
    c.cmd_expect("EHLO client.example.org", 250);
    c.starttls(vec![s.cert_der()]);
    c.cmd_expect("EHLO client.example.org", 250);
    let started = std::time::Instant::now();
    let r = c.auth_plain(ALICE, "not-the-password");
    assert!(r.last().starts_with(AUTH_FAILED), "{r:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(180),
        "535 came after {:?}, failureDelay is 200ms",
        started.elapsed()
    );
    // The session goes on: a correct login afterwards works.
    assert_eq!(c.auth_plain(ALICE, ALICE_PASS).code, 235);
}

#[test]
fn authenticated_own_sender_is_queued_and_delivered_with_received_header() {
    let s = Server::start();
    let m = marker("own-sender");
    let t = s.swaks_auth(
        Port::Submission,
        ALICE,
        ALICE_PASS,
        &[
            "--from",
            ALICE,
            "--to",
            BOB,
            "--header",
            &format!("Subject: {m}"),
        ],
    );
    assert_eq!(t.code, 0, "{}", t.text);
    t.assert_queued();
    let mail = s.wait_for_mail("bob", &m);
    let mail = mail.replace("\r\n", "\n");
    let headers = mail.split("\n\n").next().unwrap_or(&mail);
    assert!(
        headers.lines().any(|l| l.starts_with("Received: ")),
        "no Received: header in delivered mail:\n{mail}"
    );
    assert!(
        headers.contains(HOSTNAME),
        "Received: header does not name {HOSTNAME}:\n{mail}"
    );
}

#[test]
fn auth_login_mechanism_works() {
    let s = Server::start();
    let m = marker("auth-login");
    let t = s.swaks(
        Port::Submission,
        &[
            "-tls",
            "--auth",
            "LOGIN",
            "--auth-user",
            BOB,
            "--auth-password",
            BOB_PASS,
            "--from",
            BOB,
            "--to",
            ALICE,
            "--header",
            &format!("Subject: {m}"),
        ],
    );
    t.assert_reply("235 2.7.0 Authentication successful");
    t.assert_queued();
    s.wait_for_mail("alice", &m);
}

#[test]
fn sender_owned_by_another_login_is_rejected_at_rcpt() {
    let s = Server::start();
    // sales@ belongs to bob only; bob@ is bob's own address.
    for from in ["sales@example.com", BOB] {
        let t = s.swaks_auth(
            Port::Submission,
            ALICE,
            ALICE_PASS,
            &["--from", from, "--to", BOB, "--quit-after", "RCPT"],
        );
        assert_eq!(
            t.reply_to("MAIL FROM").last().map(|l| &l[..3]),
            Some("250"),
            "MAIL must be accepted, the check is reported at RCPT (smtpd_delay_reject):\n{}",
            t.text
        );
        t.assert_reply_to(
            "RCPT TO",
            &format!("553 5.7.1 <{from}>: Sender address rejected: not owned by user {ALICE}"),
        );
    }
}

#[test]
fn sender_in_no_map_entry_is_rejected_at_rcpt() {
    let s = Server::start();
    let t = s.swaks_auth(
        Port::Submission,
        ALICE,
        ALICE_PASS,
        &[
            "--from",
            "stranger@example.org",
            "--to",
            BOB,
            "--quit-after",
            "RCPT",
        ],
    );
    t.assert_reply_to(
        "RCPT TO",
        &format!(
            "553 5.7.1 <stranger@example.org>: Sender address rejected: not owned by user {ALICE}"
        ),
    );
}

#[test]
fn address_shared_by_several_logins_is_usable_by_each() {
    let s = Server::start();
    for (user, pass) in [(ALICE, ALICE_PASS), (BOB, BOB_PASS)] {
        let t = s.swaks_auth(
            Port::Submission,
            user,
            pass,
            &["--from", "info@example.com", "--to", BOB],
        );
        t.assert_queued();
    }
}

#[test]
fn null_sender_is_accepted_when_authenticated() {
    let s = Server::start();
    let t = s.swaks_auth(
        Port::Submission,
        ALICE,
        ALICE_PASS,
        &["--from", "<>", "--to", BOB],
    );
    assert!(
        t.text.contains("MAIL FROM:<>"),
        "swaks did not send the null sender:\n{}",
        t.text
    );
    t.assert_queued();
}

#[test]
fn recipient_without_fqdn_is_rejected() {
    let s = Server::start();
    let mut wrong = Vec::new();
    for rcpt in ["bob", "bob@localhost"] {
        let t = s.swaks_auth(
            Port::Submission,
            ALICE,
            ALICE_PASS,
            &["--from", ALICE, "--to", rcpt, "--quit-after", "RCPT"],
        );
        let want =
            format!("504 5.5.2 <{rcpt}>: Recipient address rejected: need fully-qualified address");
        let got = t.reply_to("RCPT TO").last().map(|l| l.to_string());
        if got.as_deref() != Some(want.as_str()) {
            wrong.push(format!("RCPT TO:<{rcpt}>: expected {want:?}, got {got:?}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn recipient_domain_that_does_not_resolve_is_rejected() {
    let s = Server::start();
    for rcpt in ["someone@nonexistent.invalid", "someone@no-such-domain.test"] {
        let t = s.swaks_auth(
            Port::Submission,
            ALICE,
            ALICE_PASS,
            &["--from", ALICE, "--to", rcpt, "--quit-after", "RCPT"],
        );
        t.assert_reply_to(
            "RCPT TO",
            &format!("450 4.1.2 <{rcpt}>: Recipient address rejected: Domain not found"),
        );
    }
}

#[test]
fn remote_recipient_with_mx_or_a_record_is_accepted_when_authenticated() {
    let s = Server::start();
    // example.net has an MX; aonly.example.org only an A record (MX, then A/AAAA).
    for rcpt in ["friend@example.net", "friend@aonly.example.org"] {
        let t = s.swaks_auth(
            Port::Submission,
            ALICE,
            ALICE_PASS,
            &["--from", ALICE, "--to", rcpt],
        );
        t.assert_queued();
    }
}

#[test]
fn tls_without_auth_is_denied_at_rcpt() {
    let s = Server::start();
    let t = s.swaks(
        Port::Submission,
        &["-tls", "--from", ALICE, "--to", BOB, "--quit-after", "RCPT"],
    );
    t.assert_reply_to(
        "RCPT TO",
        &format!("554 5.7.1 <{CLIENT}>: Client host rejected: Access denied"),
    );
}

#[test]
fn smtp_port_refuses_relaying() {
    let s = Server::start();
    let t = s.swaks(
        Port::Smtp,
        &[
            "--from",
            "someone@example.net",
            "--to",
            "other@example.net",
            "--quit-after",
            "RCPT",
        ],
    );
    t.assert_reply_to(
        "RCPT TO",
        "454 4.7.1 <other@example.net>: Relay access denied",
    );
}

#[test]
fn smtp_port_rejects_unknown_local_user() {
    let s = Server::start();
    let t = s.swaks(
        Port::Smtp,
        &[
            "--from",
            "someone@example.net",
            "--to",
            "nobody@example.com",
            "--quit-after",
            "RCPT",
        ],
    );
    t.assert_reply_to(
        "RCPT TO",
        "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown in virtual mailbox table",
    );
}

#[test]
fn smtp_port_delivers_to_local_user() {
    let s = Server::start();
    for (tls, name) in [(false, "plain"), (true, "starttls")] {
        let m = marker(&format!("inbound-{name}"));
        let subject = format!("Subject: {m}");
        let mut args = vec![
            "--from",
            "someone@example.net",
            "--to",
            BOB,
            "--header",
            &subject,
        ];
        if tls {
            args.push("-tls");
        }
        let t = s.swaks(Port::Smtp, &args);
        t.assert_queued();
        let mail = s.wait_for_mail("bob", &m);
        assert!(mail.contains("Received: "), "{mail}");
    }
}

#[test]
fn submissions_implicit_tls_auth_and_mail() {
    let s = Server::start();
    let m = marker("implicit-tls");
    let t = s.swaks_auth(
        Port::Submissions,
        ALICE,
        ALICE_PASS,
        &[
            "--from",
            ALICE,
            "--to",
            BOB,
            "--header",
            &format!("Subject: {m}"),
        ],
    );
    t.assert_reply("235 2.7.0 Authentication successful");
    t.assert_queued();
    s.wait_for_mail("bob", &m);
}

#[test]
fn message_over_size_limit_is_refused() {
    let s = Server::start();
    let body = s.path("big-body.txt");
    let big = "y".repeat(1100 * 1024);
    let lines: Vec<&str> = big
        .as_bytes()
        .chunks(998)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    std::fs::write(&body, lines.join("\r\n")).unwrap();
    let t = s.swaks_auth(
        Port::Submission,
        ALICE,
        ALICE_PASS,
        &[
            "--from",
            ALICE,
            "--to",
            BOB,
            "--body",
            body.to_str().unwrap(),
        ],
    );
    t.assert_reply("552 5.3.4 Message size exceeds fixed limit");
    assert!(
        t.queued_id().is_none(),
        "oversized message queued:\n{}",
        t.text
    );
}

#[test]
fn mail_from_with_size_over_limit_is_refused() {
    let s = Server::start();
    let mut c = s.authenticated_client(Port::Submission, ALICE, ALICE_PASS);
    let r = c.cmd(&format!("MAIL FROM:<{ALICE}> SIZE=2000000"));
    assert_eq!(r.lines, ["552 5.3.4 Message size exceeds fixed limit"]);
    // Within the limit it is fine.
    c.cmd_expect(&format!("MAIL FROM:<{ALICE}> SIZE=1000"), 250);
}

#[test]
fn malformed_commands_get_500_or_501_and_the_session_goes_on() {
    let s = Server::start();
    let mut c = s.connect(Port::Smtp);
    c.expect_code(220);
    c.cmd_expect("EHLO client.example.org", 250);
    // Postfix answers an unknown verb with 502 (not 500).
    let r = c.cmd("FROBNICATE now");
    assert_eq!(r.lines, ["502 5.5.2 Error: command not recognized"]);
    let r = c.cmd("MAIL FROM:not-an-address");
    assert_eq!(r.code, 501, "bad MAIL syntax: {r:?}");
    let r = c.cmd("MAIL FROM:<someone@example.net> BOGUS=1");
    assert!(matches!(r.code, 501 | 555), "unknown MAIL parameter: {r:?}");
    let r = c.cmd("RCPT TO:<bob@example.com>");
    assert_eq!(r.code, 503, "RCPT before MAIL: {r:?}");
    let r = c.cmd("HELO");
    assert_eq!(r.code, 501, "HELO without a name: {r:?}");
    c.cmd_expect("NOOP", 250);
    c.cmd_expect("MAIL FROM:<someone@example.net>", 250);
    c.cmd_expect(&format!("RCPT TO:<{BOB}>"), 250);
    c.cmd_expect("QUIT", 221);
}

#[test]
fn too_many_errors_end_the_session_with_421() {
    let s = Server::start();
    let mut c = s.connect(Port::Smtp);
    c.expect_code(220);
    let mut last = None;
    for i in 0..20 {
        // The server may already have closed after its 421.
        let _ = c.send(format!("BOGUS{i}\r\n").as_bytes());
        match c.read_reply() {
            Ok(r) if r.code == 421 => {
                last = Some((i, r));
                break;
            }
            Ok(r) => assert!(r.code >= 500, "error {i} answered {r:?}"),
            Err(e) => panic!("connection ended after {i} errors without a 421: {e}"),
        }
    }
    let (i, r) = last.expect("no 421 after 20 bad commands (maxErrors is 10)");
    assert!(
        i <= 11,
        "421 only after {} errors with maxErrors 10: {r:?}",
        i + 1
    );
    assert!(c.is_closed(), "connection still open after 421");
}

#[test]
fn dsn_parameters_are_accepted() {
    let s = Server::start();
    let mut c = s.authenticated_client(Port::Submission, ALICE, ALICE_PASS);
    c.cmd_expect(&format!("MAIL FROM:<{ALICE}> RET=HDRS ENVID=x"), 250);
    c.cmd_expect(
        &format!("RCPT TO:<{BOB}> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;{BOB}"),
        250,
    );
    c.cmd_expect("DATA", 354);
    let m = marker("dsn");
    c.send(format!("Subject: {m}\r\n\r\nDSN test\r\n.\r\n").as_bytes())
        .unwrap();
    let r = c.reply();
    assert!(r.last().starts_with("250 2.0.0 Ok: queued as "), "{r:?}");
    s.wait_for_mail("bob", &m);
}

#[test]
fn bdat_chunks_are_accepted_and_delivered() {
    let s = Server::start();
    let mut c = s.authenticated_client(Port::Submission, ALICE, ALICE_PASS);
    let m = marker("bdat");
    c.cmd_expect(&format!("MAIL FROM:<{ALICE}>"), 250);
    c.cmd_expect(&format!("RCPT TO:<{BOB}>"), 250);
    let first = format!("Subject: {m}\r\nFrom: {ALICE}\r\n\r\nfirst chunk\r\n");
    // A line starting with a dot is not special in BDAT.
    let second = ".second chunk\r\n";
    c.send(format!("BDAT {}\r\n{first}", first.len()).as_bytes())
        .unwrap();
    let r = c.reply();
    assert_eq!(r.code, 250, "first BDAT: {r:?}");
    c.send(format!("BDAT {} LAST\r\n{second}", second.len()).as_bytes())
        .unwrap();
    let r = c.reply();
    assert!(
        r.last().starts_with("250 2.0.0 Ok: queued as "),
        "BDAT LAST: {r:?}"
    );
    let mail = s.wait_for_mail("bob", &m);
    // Maildir files hold LF line endings; the chunk boundary and the leading dot survive.
    assert!(
        mail.replace("\r\n", "\n")
            .contains("first chunk\n.second chunk\n"),
        "{mail}"
    );
}

#[test]
fn sender_login_map_edited_at_runtime_takes_effect() {
    let s = Server::start();
    let send_as_alias = || {
        s.swaks_auth(
            Port::Submission,
            ALICE,
            ALICE_PASS,
            &[
                "--from",
                "alias@example.com",
                "--to",
                BOB,
                "--quit-after",
                "RCPT",
            ],
        )
    };
    send_as_alias().assert_reply_to(
        "RCPT TO",
        &format!(
            "553 5.7.1 <alias@example.com>: Sender address rejected: not owned by user {ALICE}"
        ),
    );
    std::fs::write(
        s.path("senders"),
        format!("{SENDERS}alias@example.com   {ALICE}\n"),
    )
    .unwrap();
    let mut last = String::new();
    let ok = eventually(Duration::from_secs(5), || {
        let t = send_as_alias();
        last = t.text.clone();
        t.reply_to("RCPT TO")
            .last()
            .is_some_and(|l| l.starts_with("250"))
    });
    assert!(
        ok,
        "map change not picked up within 5 s (reloadInterval 200ms):\n{last}"
    );
}

#[test]
fn passwd_file_edited_at_runtime_takes_effect() {
    let s = Server::start();
    let login = |user: &str, pass: &str| {
        s.swaks(
            Port::Submission,
            &[
                "-tls",
                "--auth",
                "PLAIN",
                "--auth-user",
                user,
                "--auth-password",
                pass,
                "--quit-after",
                "AUTH",
            ],
        )
    };
    let carol = "carol@example.com";
    let t = login(carol, "carol-Pass-3");
    assert!(
        t.replies().iter().any(|l| l.starts_with(AUTH_FAILED)),
        "unknown user logged in:\n{}",
        t.text
    );
    let mut passwd = std::fs::read_to_string(s.path("passwd")).unwrap();
    passwd.push_str(&format!(
        "{carol}:{}\n",
        doveadm_hash("SHA512-CRYPT", "carol-Pass-3")
    ));
    // Replace atomically, as a Secret update would.
    std::fs::write(s.path("passwd.new"), passwd).unwrap();
    std::fs::rename(s.path("passwd.new"), s.path("passwd")).unwrap();
    let mut last = String::new();
    let ok = eventually(Duration::from_secs(5), || {
        let t = login(carol, "carol-Pass-3");
        last = t.text.clone();
        t.has_reply("235 2.7.0 Authentication successful")
    });
    assert!(ok, "new user not usable within 5 s:\n{last}");
    // The old users still work.
    login(ALICE, ALICE_PASS).assert_reply("235 2.7.0 Authentication successful");
}

/// Hashes made by the real tools (and by `posthorn passwd`) verify; a wrong password
/// does not.
#[test]
fn hashes_from_real_tools_verify() {
    let s = Server::start();
    let tool = |cmd: &mut Command| {
        let out = run(cmd);
        assert!(out.status.success(), "{cmd:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let mut users: Vec<(String, String)> = vec![
        (
            "u-sha256@example.com".to_string(),
            doveadm_hash("SHA256-CRYPT", "pw-sha256"),
        ),
        (
            "u-blf@example.com".to_string(),
            doveadm_hash("BLF-CRYPT", "pw-blf"),
        ),
        (
            "u-argon@example.com".to_string(),
            doveadm_hash("ARGON2ID", "pw-argon"),
        ),
        (
            "u-openssl@example.com".to_string(),
            format!(
                "{{SHA512-CRYPT}}{}",
                tool(Command::new("openssl").args(["passwd", "-6", "pw-openssl"]))
            ),
        ),
        (
            "u-mkpasswd@example.com".to_string(),
            format!(
                "{{SHA256-CRYPT}}{}",
                tool(Command::new("mkpasswd").args(["-m", "sha-256", "pw-mkpasswd"]))
            ),
        ),
    ];
    for scheme in ["argon2id", "sha512-crypt", "sha256-crypt", "blf-crypt"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_posthorn"))
            .args(["passwd", "--scheme", scheme])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("pw-{scheme}\n").as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "posthorn passwd --scheme {scheme}: {out:?}"
        );
        let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
        assert!(
            hash.starts_with(&format!("{{{}}}", scheme.to_uppercase())),
            "posthorn passwd --scheme {scheme} printed {hash:?}"
        );
        users.push((format!("u-{scheme}@example.com"), hash));
    }
    let mut passwd = std::fs::read_to_string(s.path("passwd")).unwrap();
    for (user, hash) in &users {
        passwd.push_str(&format!("{user}:{hash}\n"));
    }
    std::fs::write(s.path("passwd.new"), passwd).unwrap();
    std::fs::rename(s.path("passwd.new"), s.path("passwd")).unwrap();

    let password_of = |user: &str| -> String {
        let base = user.trim_start_matches("u-").split('@').next().unwrap();
        format!("pw-{base}")
    };
    for (user, _) in &users {
        let pass = password_of(user);
        let mut ok = false;
        let mut last = String::new();
        eventually(Duration::from_secs(5), || {
            let t = s.swaks(
                Port::Submission,
                &[
                    "-tls",
                    "--auth",
                    "PLAIN",
                    "--auth-user",
                    user,
                    "--auth-password",
                    &pass,
                    "--quit-after",
                    "AUTH",
                ],
            );
            ok = t.has_reply("235 2.7.0 Authentication successful");
            last = t.text;
            ok
        });
        assert!(ok, "{user} with {pass} did not log in:\n{last}");
        let t = s.swaks(
            Port::Submission,
            &[
                "-tls",
                "--auth",
                "PLAIN",
                "--auth-user",
                user,
                "--auth-password",
                "wrong",
                "--quit-after",
                "AUTH",
            ],
        );
        assert!(
            t.replies().iter().any(|l| l.starts_with(AUTH_FAILED)),
            "{user} logged in with a wrong password:\n{}",
            t.text
        );
    }
}

#[test]
fn health_endpoints_answer() {
    let s = Server::start();
    for path in ["/healthz", "/readyz"] {
        let (status, body) = s.http_get(path);
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (status, _) = s.http_get("/no-such-page");
    assert_eq!(status, 404);
}

#[test]
fn metrics_count_auth_failures_and_accepted_messages() {
    let s = Server::start();
    let before = s.metrics();
    let t = s.swaks(
        Port::Submission,
        &[
            "-tls",
            "--auth",
            "PLAIN",
            "--auth-user",
            ALICE,
            "--auth-password",
            "wrong",
            "--quit-after",
            "AUTH",
        ],
    );
    assert!(
        t.replies().iter().any(|l| l.starts_with(AUTH_FAILED)),
        "{}",
        t.text
    );
    s.swaks_auth(
        Port::Submission,
        ALICE,
        ALICE_PASS,
        &["--from", ALICE, "--to", BOB],
    )
    .assert_queued();
    let after = s.metrics();
    let grew = |words: &[&str]| metric_sum(&after, words) > metric_sum(&before, words);
    assert!(
        grew(&["auth", "fail"]),
        "no auth failure metric grew; metrics now:\n{after:#?}"
    );
    assert!(
        grew(&["message", "accept"]),
        "no accepted-message metric grew; metrics now:\n{after:#?}"
    );
    assert!(
        grew(&["connection"]),
        "no connection metric grew; metrics now:\n{after:#?}"
    );
}

//! The behaviour contract (docs/behaviour.md) against a running `posthorn serve`, with
//! dnsmasq answering for the test domains: the shared table (tests/common/contract.rs),
//! then the rows that need this harness's own config (a 1 MiB size limit,
//! files edited at runtime). Every reply is compared with the exact line Postfix 3.7 +
//! Dovecot 2.3 sent.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::contract::{self, Target};
use common::*;

/// The start of every failed-login reply (docs/behaviour.md, row `auth-failed`).
const AUTH_FAILED: &str = "535 5.7.8 Error: authentication failed:";

/// Every row of the contract table, on one server.
#[test]
fn contract_table() {
    let s = Server::start();
    let target = Target::of(&s);
    contract::check(&target, &contract::rows(&target));
    let log = s.stderr();
    assert!(
        !log.contains(contract::WRONG_PASS),
        "password appears in the log:\n{log}"
    );
}

/// docs/behaviour.md, row `size-content`.
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

/// docs/behaviour.md, row `sender-not-owned`, and the map is reloaded.
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

/// docs/behaviour.md, row `auth-ok`, and the user file is reloaded.
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

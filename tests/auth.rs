//! Failed-login throttling against a running `posthorn serve`, and its Dovecot auth
//! socket used by a real Postfix (`smtpd_sasl_type = dovecot`) that swaks logs in to.
//!
//! docs/behaviour.md, rows `auth-throttle`, `auth-dovecot`.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::thread;

use common::peers::{certificates, free_port, run_ok};
use common::*;

const THROTTLED: &str =
    "454 4.7.0 Temporary authentication failure: Too many failed logins, try again later";
const AUTH_FAILED: &str = "535 5.7.8 Error: authentication failed: authentication failure";
/// What Postfix 3.7 answers when Dovecot 2.3 fails a login (`FAIL <id> user=<login>`).
const POSTFIX_AUTH_FAILED: &str = "535 5.7.8 Error: authentication failed: (reason unavailable)";

/// One session on 587: STARTTLS, EHLO, then AUTH PLAIN; the reply's last line.
fn try_login(s: &Server, user: &str, pass: &str) -> String {
    let mut c = s.connect(Port::Submission);
    c.expect_code(220);
    c.cmd_expect("EHLO client.example.org", 250);
    c.starttls(vec![s.cert_der()]);
    c.cmd_expect("EHLO client.example.org", 250);
    c.auth_plain(user, pass).last().to_string()
}

#[test]
fn failed_logins_throttle_the_address_not_others() {
    let s = Server::builder()
        .auth("maxFailuresPerAddress", 5)
        .auth("failureDelay", "50ms")
        .auth("maxFailureDelay", "200ms")
        .start();
    // A burst of parallel guesses, each for another login: only the limit gets checked.
    let users: Vec<String> = (0..12).map(|i| format!("guess{i}@example.com")).collect();
    let replies: Vec<String> = thread::scope(|scope| {
        let s = &s;
        let sessions: Vec<_> = users
            .iter()
            .map(|user| scope.spawn(move || try_login(s, user, "wrong")))
            .collect();
        sessions.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let failed = replies.iter().filter(|r| *r == AUTH_FAILED).count();
    let throttled = replies.iter().filter(|r| *r == THROTTLED).count();
    assert_eq!((failed, throttled), (5, 7), "{replies:#?}");

    // The right password from the same address is refused without being checked.
    let t = s.swaks_auth(
        Port::Submission,
        ALICE,
        ALICE_PASS,
        &["--quit-after", "AUTH"],
    );
    t.assert_reply_to("AUTH", THROTTLED);
    // Another address is unaffected.
    let t = s.swaks_auth(
        Port::Submission,
        ALICE,
        ALICE_PASS,
        &["--local-interface", "127.0.0.2", "--quit-after", "AUTH"],
    );
    t.assert_reply_to("AUTH", "235 2.7.0 Authentication successful");

    let m = s.metrics();
    assert_eq!(
        m.get(r#"posthorn_auth_throttled_total{listener="submission"}"#),
        Some(&8.0),
        "{m:#?}"
    );
    assert_eq!(
        metric_sum(&m, &["posthorn_auth_attempts_total", "failure"]),
        5.0
    );
    assert!(m["posthorn_auth_throttle_tracked_keys"] >= 1.0, "{m:#?}");
    let log = s.stderr();
    assert_eq!(log.matches("attempt refused unchecked").count(), 8, "{log}");
}

/// Postfix as `postfix-sasl.sh` runs it: STARTTLS, then SASL through `socket`.
struct Postfix {
    dir: std::path::PathBuf,
    port: u16,
}

impl Postfix {
    fn start(dir: &Path, socket: &Path) -> Postfix {
        std::fs::create_dir_all(dir).unwrap();
        certificates(dir, &["postfix.test"]);
        let port = free_port();
        run_ok(
            Command::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/e2e/auth/postfix-sasl.sh"
            ))
            .arg("start")
            .arg(dir)
            .arg(port.to_string())
            .arg(socket),
        );
        Postfix {
            dir: dir.to_path_buf(),
            port,
        }
    }

    fn login(&self, user: &str, pass: &str) -> Transcript {
        swaks(
            self.port,
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
    }

    fn maillog(&self) -> String {
        std::fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/e2e/auth/postfix-sasl.sh"
        ))
        .arg("stop")
        .arg(&self.dir)
        .status();
    }
}

#[test]
fn postfix_authenticates_through_the_dovecot_socket() {
    let s = Server::builder()
        .auth("dovecotSocket", "$DIR/auth")
        .auth("dovecotSocketOwner", "postfix")
        .auth("dovecotSocketGroup", "postfix")
        .auth("maxFailuresPerAddress", 3)
        .auth("failureDelay", "50ms")
        .auth("maxFailureDelay", "200ms")
        .start();
    // Postfix runs as `postfix` and must reach the socket, which only its owner may use.
    std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = s.path("auth");
    let meta = std::fs::metadata(&socket).unwrap();
    let postfix_uid = run_ok(Command::new("id").args(["-u", "postfix"]));
    assert_eq!(meta.uid().to_string(), postfix_uid.trim());
    assert_eq!(meta.mode() & 0o777, 0o600);

    let tmp = tempfile::tempdir().unwrap();
    let postfix = Postfix::start(&tmp.path().join("postfix"), &socket);
    let t = postfix.login(ALICE, ALICE_PASS);
    t.assert_reply_to("AUTH", "235 2.7.0 Authentication successful");
    let t = postfix.login(ALICE, "wrong");
    t.assert_reply_to("AUTH", POSTFIX_AUTH_FAILED);

    // Throttled by Postfix's client address (`rip`): two more failures reach the limit,
    // then even the right password is refused. Postfix 3.7 answers any FAIL with 535,
    // so the throttle shows in the reason only.
    for _ in 0..2 {
        postfix
            .login(BOB, "wrong")
            .assert_reply_to("AUTH", POSTFIX_AUTH_FAILED);
    }
    let t = postfix.login(ALICE, ALICE_PASS);
    t.assert_reply_to(
        "AUTH",
        "535 5.7.8 Error: authentication failed: Too many failed logins, try again later",
    );
    let m = s.metrics();
    assert_eq!(
        m.get(r#"posthorn_auth_throttled_total{listener="dovecot-auth"}"#),
        Some(&1.0),
        "{m:#?}\n{}",
        postfix.maillog()
    );
}

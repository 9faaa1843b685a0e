//! A server's life on its spool, with real `posthorn serve` processes: one server per
//! spool, and what SIGTERM does, step by step (README: Shutdown). Each step has a test
//! that fails without it: `/readyz` fails at once, new connections are still served
//! during `acceptDelay` and refused after it, a session mid-DATA gets its 250, sessions
//! get no more than `sessionTimeout`, a retry due within `grace` is made before the
//! process exits, and what is left is delivered after a restart.
//!
//! Remote mail goes to [`Sink`] (MX example.net is 127.0.0.1 in the harness's dnsmasq),
//! which defers as many RCPTs as it is told to, then accepts.

mod common;

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::mx_sink::MxSink;
use common::{ALICE, ALICE_PASS, Client, Port, Server, eventually, marker};

/// Long enough for a loaded machine; the tests wait for events, not for this.
const PATIENCE: Duration = Duration::from_secs(60);

fn server(shutdown: &str, delivery: Option<&str>) -> Server {
    let mut builder = Server::builder()
        .config("shutdown", shutdown)
        // Sessions wait on the test between steps; only the shutdown may end them.
        .limit("idleTimeout", "300s");
    if let Some(delivery) = delivery {
        builder = builder.config("delivery", delivery);
    }
    builder.start()
}

/// MAIL, RCPT `to`, DATA and a message with `marker` in its subject, on an open
/// session; answers the reply to the final dot.
fn send(c: &mut Client, to: &str, marker: &str) -> common::Reply {
    c.cmd_expect(&format!("MAIL FROM:<{ALICE}>"), 250);
    c.cmd_expect(&format!("RCPT TO:<{to}>"), 250);
    c.cmd_expect("DATA", 354);
    c.send(format!("Subject: {marker}\r\n\r\nbody\r\n.\r\n").as_bytes())
        .unwrap();
    c.reply()
}

fn readyz(s: &Server) -> u16 {
    s.http_get("/readyz").0
}

fn is_running(s: &mut Server) -> bool {
    s.wait_exit(Duration::ZERO).is_none()
}

/// Queue files (not their status sidecars) in the server's spool, in its hashed
/// subdirectories `queue/<h>/`.
fn queued(s: &Server) -> usize {
    std::fs::read_dir(s.path("spool/queue"))
        .unwrap()
        .flat_map(|bucket| std::fs::read_dir(bucket.unwrap().path()).unwrap())
        .filter(|e| {
            !e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains('.')
        })
        .count()
}

#[test]
fn a_second_server_on_the_same_spool_exits_at_once_naming_it() {
    let s = Server::start();
    let mut second = Command::new(env!("CARGO_BIN_EXE_posthorn"))
        .arg("serve")
        .arg("--config")
        .arg(s.path("config.yaml"))
        // As in a pod: no backtrace under the one-line error.
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    while second.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = second.kill();
            panic!("the second server kept running on a spool in use");
        }
        thread::sleep(Duration::from_millis(20));
    }
    let out = second.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "Error: spool {} is in use by another posthorn serve\n",
            s.path("spool").display()
        )
    );
    // The first one is untouched: ready, and its queue control socket still answers.
    assert_eq!(readyz(&s), 200);
    let flush = Command::new(env!("CARGO_BIN_EXE_posthorn"))
        .args(["queue", "flush", "--config"])
        .arg(s.path("config.yaml"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&flush.stdout),
        "0 messages scheduled for delivery now\n"
    );
}

#[test]
fn readyz_fails_at_once_and_new_connections_are_served_during_the_accept_delay() {
    let mut s = server(
        "{acceptDelay: 120s, sessionTimeout: 10s, grace: 180s}",
        None,
    );
    assert_eq!(readyz(&s), 200);
    s.terminate();
    assert!(
        eventually(PATIENCE, || readyz(&s) == 503),
        "/readyz still answers 200 after SIGTERM"
    );
    let tag = marker("accept-delay");
    let mut c = s.authenticated_client(Port::Submission, ALICE, ALICE_PASS);
    let reply = send(&mut c, ALICE, &tag);
    assert_eq!(reply.code, 250, "{reply:?}");
    s.wait_for_mail("alice", &tag);
    assert!(is_running(&mut s));
}

#[test]
fn after_the_delay_connections_are_refused_and_a_session_mid_data_gets_its_250() {
    let mut s = server("{acceptDelay: 1s, sessionTimeout: 120s, grace: 180s}", None);
    let tag = marker("mid-data");
    let mut c = s.authenticated_client(Port::Submission, ALICE, ALICE_PASS);
    c.cmd_expect(&format!("MAIL FROM:<{ALICE}>"), 250);
    c.cmd_expect(&format!("RCPT TO:<{ALICE}>"), 250);
    c.cmd_expect("DATA", 354);
    c.send(format!("Subject: {tag}\r\n\r\nfirst half\r\n").as_bytes())
        .unwrap();

    s.terminate();
    let port = s.submission;
    assert!(
        eventually(PATIENCE, || TcpStream::connect(("127.0.0.1", port))
            .is_err()),
        "the submission listener still accepts after the accept delay"
    );
    assert!(
        is_running(&mut s),
        "the server left before its session ended"
    );
    c.send(b"second half\r\n.\r\n").unwrap();
    let reply = c.reply();
    assert_eq!(reply.code, 250, "{reply:?}");
    assert!(reply.last().contains("queued as"), "{reply:?}");
    c.cmd_expect("QUIT", 221);

    let status = s.wait_exit(PATIENCE).expect("the server exits");
    assert!(status.success(), "{status:?}");
    let mails = s.mails("alice");
    assert!(
        mails
            .iter()
            .any(|(_, text)| text.contains(&tag) && text.contains("first half\nsecond half\n")),
        "{mails:?}"
    );
}

#[test]
fn open_sessions_get_no_more_than_the_session_timeout() {
    let mut s = server("{acceptDelay: 0s, sessionTimeout: 1s, grace: 300s}", None);
    let mut c = s.authenticated_client(Port::Submission, ALICE, ALICE_PASS);
    s.terminate();
    let status = s
        .wait_exit(PATIENCE)
        .expect("exit after the session timeout");
    assert!(status.success(), "{status:?}");
    assert!(c.is_closed());
}

#[test]
fn a_retry_due_within_the_grace_is_made_before_the_process_exits() {
    let sink = MxSink::start(1);
    let delivery = format!("{{mxPort: {}, minBackoff: 2s, maxBackoff: 2s}}", sink.port);
    let mut s = server(
        "{acceptDelay: 0s, sessionTimeout: 10s, grace: 120s}",
        Some(&delivery),
    );
    let tag = marker("retry-in-grace");
    let mut c = s.authenticated_client(Port::Submission, ALICE, ALICE_PASS);
    assert_eq!(send(&mut c, "bob@example.net", &tag).code, 250);
    c.cmd_expect("QUIT", 221);
    assert!(eventually(PATIENCE, || sink.attempts() == 1));
    assert!(sink.messages().is_empty());

    s.terminate();
    let status = s.wait_exit(PATIENCE).expect("the server exits");
    assert!(status.success(), "{status:?}\n{}", s.stderr());
    assert_eq!(sink.attempts(), 2);
    let messages = sink.messages();
    assert_eq!(messages.len(), 1);
    assert!(messages[0].contains(&tag), "{messages:?}");
    assert_eq!(queued(&s), 0);
}

#[test]
fn a_deferred_message_stays_queued_and_is_delivered_after_a_restart() {
    let sink = MxSink::start(usize::MAX);
    let delivery = format!("{{mxPort: {}, minBackoff: 3s, maxBackoff: 3s}}", sink.port);
    let mut s = server(
        "{acceptDelay: 0s, sessionTimeout: 1s, grace: 1s}",
        Some(&delivery),
    );
    let tag = marker("after-restart");
    let mut c = s.authenticated_client(Port::Submission, ALICE, ALICE_PASS);
    assert_eq!(send(&mut c, "bob@example.net", &tag).code, 250);
    c.cmd_expect("QUIT", 221);
    assert!(eventually(PATIENCE, || sink.attempts() == 1));

    s.terminate();
    let status = s.wait_exit(PATIENCE).expect("the server exits");
    assert!(status.success(), "{status:?}");
    assert_eq!(queued(&s), 1);
    assert!(sink.messages().is_empty());

    sink.accept_from_now();
    s.restart();
    assert!(
        eventually(PATIENCE, || sink.messages().len() == 1),
        "not delivered after the restart; log:\n{}",
        s.stderr()
    );
    assert!(sink.messages()[0].contains(&tag));
    assert!(eventually(PATIENCE, || queued(&s) == 0));
}

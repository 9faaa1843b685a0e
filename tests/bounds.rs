//! Limits and counters checked exactly: `maxErrors` ends the session on exactly the
//! configured error, `idleTimeout` within a tight window, and the metrics of a scripted
//! session, family by family.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::metrics::Families;
use common::{ALICE, ALICE_PASS, BOB, Client, Port, Server};

const UNKNOWN_COMMAND: &str = "502 5.5.2 Error: command not recognized";

/// docs/behaviour.md, row `too-many-errors`. Postfix checks `smtpd_hard_error_limit`
/// before reading each command, so the error that reaches the limit gets its own reply
/// and then the 421, with no further command read.
#[test]
fn max_errors_ends_the_session_on_exactly_the_configured_error() {
    let s = Server::builder().limit("maxErrors", 3).start();
    let mut c = s.connect(Port::Smtp);
    c.expect_code(220);
    for i in 1..=2 {
        assert_eq!(
            c.cmd(&format!("BOGUS{i}")).lines,
            [UNKNOWN_COMMAND],
            "error {i}"
        );
    }
    // A good command between errors neither counts nor resets the count.
    c.cmd_expect("NOOP", 250);
    assert_eq!(c.cmd("BOGUS3").lines, [UNKNOWN_COMMAND]);
    assert_eq!(
        c.reply().lines,
        ["421 4.7.0 mail.example.com Error: too many errors"]
    );
    assert!(c.is_closed(), "connection open after the 421");
}

/// Margin allowed past the timeout on a busy two-core machine. The timer starts later
/// than our clock does, so the lower bound is exact.
const MARGIN: Duration = Duration::from_millis(500);
const IDLE: Duration = Duration::from_secs(1);

fn assert_timed_out_in_window(c: &mut Client, started: Instant, when: &str) {
    let reply = c.reply();
    let took = started.elapsed();
    assert_eq!(
        reply.lines,
        ["421 4.4.2 mail.example.com Error: timeout exceeded"],
        "{when}, after {took:?}"
    );
    assert!(
        took >= IDLE && took < IDLE + MARGIN,
        "{when}: closed after {took:?}, want [{IDLE:?}, {:?})",
        IDLE + MARGIN
    );
    assert!(
        c.is_closed(),
        "{when}: connection open after the timeout reply"
    );
}

/// docs/behaviour.md, row `timeout`: measured from before the connection, and from
/// before the last command, both of which precede the server's timer.
#[test]
fn idle_timeout_is_honoured_within_a_tight_window() {
    let s = Server::builder().limit("idleTimeout", "1s").start();
    let started = Instant::now();
    let mut c = s.connect(Port::Smtp);
    c.expect_code(220);
    assert_timed_out_in_window(&mut c, started, "after the greeting");

    let mut c = s.connect(Port::Smtp);
    c.expect_code(220);
    let started = Instant::now();
    c.cmd_expect("EHLO client.example.org", 250);
    assert_timed_out_in_window(&mut c, started, "after EHLO");
}

fn family_values(rows: &[(&[&str], f64)]) -> BTreeMap<Vec<String>, f64> {
    rows.iter()
        .map(|(labels, v)| (labels.iter().map(|l| l.to_string()).collect(), *v))
        .collect()
}

/// A scripted session, then every family it touches compared whole: a label typo, a
/// double count or a missing count fails. Labels are listed in name order.
#[test]
fn metrics_after_a_scripted_session_are_exact() {
    let s = Server::start();
    // 587: STARTTLS, a wrong password, the right one, one message to bob.
    let mut c = s.connect(Port::Submission);
    c.expect_code(220);
    c.cmd_expect("EHLO client.example.org", 250);
    c.starttls(vec![s.cert_der()]);
    c.cmd_expect("EHLO client.example.org", 250);
    assert_eq!(c.auth_plain(ALICE, "wrong").code, 535);
    assert_eq!(c.auth_plain(ALICE, ALICE_PASS).code, 235);
    c.cmd_expect(&format!("MAIL FROM:<{ALICE}>"), 250);
    c.cmd_expect(&format!("RCPT TO:<{BOB}>"), 250);
    c.cmd_expect("DATA", 354);
    c.send(b"Subject: metrics\r\n\r\ncounted\r\n.\r\n").unwrap();
    c.expect_code(250);
    c.cmd_expect("QUIT", 221);
    // 25: one relay attempt, refused.
    let mut c = s.connect(Port::Smtp);
    c.expect_code(220);
    c.cmd_expect("EHLO client.example.org", 250);
    c.cmd_expect("MAIL FROM:<someone@example.net>", 250);
    c.cmd_expect("RCPT TO:<someone@example.org>", 454);
    c.cmd_expect("QUIT", 221);
    s.wait_for_mail("bob", "counted");

    // Closing and delivery are counted after the client sees them (the deliveries family
    // appears with its first count): poll until settled.
    let settled = |f: &Families| {
        f.values("posthorn_connections_active")
            .values()
            .all(|v| *v == 0.0)
            && f.has("posthorn_deliveries")
            && f.values("posthorn_deliveries").values().sum::<f64>() >= 1.0
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let f = loop {
        let f = Families::parse(&s.http_get("/metrics").1);
        if settled(&f) || Instant::now() > deadline {
            break f;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        f.values("posthorn_connections"),
        family_values(&[(&["smtp"], 1.0), (&["submission"], 1.0)])
    );
    assert_eq!(
        f.values("posthorn_connections_active"),
        family_values(&[(&["smtp"], 0.0), (&["submission"], 0.0)])
    );
    assert_eq!(
        f.values("posthorn_tls_handshakes"),
        family_values(&[(&["submission", "ok"], 1.0)])
    );
    assert_eq!(
        f.values("posthorn_auth_attempts"),
        family_values(&[
            (&["submission", "PLAIN", "failure"], 1.0),
            (&["submission", "PLAIN", "success"], 1.0),
        ])
    );
    assert_eq!(
        f.values("posthorn_messages_accepted"),
        family_values(&[(&["submission"], 1.0)])
    );
    assert_eq!(
        f.values("posthorn_messages_rejected"),
        family_values(&[(&["smtp", "relay_denied"], 1.0)])
    );
    // A family without samples is not exposed at all.
    assert!(!f.0.contains_key("posthorn_connections_rejected"));
    assert_eq!(
        f.values("posthorn_deliveries"),
        family_values(&[(&["local", "delivered"], 1.0)])
    );
}

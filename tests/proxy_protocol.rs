//! PROXY protocol v1 and v2 against the real server: a header from a trusted load
//! balancer (here loopback) names the client for limits, logs and `Received:`; a trusted
//! peer without one gets Postfix's 421 (nothing on 465); an untrusted peer's header is a
//! bad command.
//!
//! docs/behaviour.md, rows `proxy-ok`, `proxy-bad`, `proxy-untrusted`, `conn-465-silent`.

mod common;

use std::time::Duration;

use common::*;

const TRUSTED_LOOPBACK: &[&str] = &["127.0.0.0/8"];

/// v2 PROXY command for a TCP over IPv4 connection from `src:port` to 127.0.0.1:465,
/// with one TLV (a unique id) the server must skip.
fn v2_header(src: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend([0x21, 0x11]);
    let tlv = [0x05, 0, 2, b'i', b'd'];
    h.extend(u16::try_from(12 + tlv.len()).unwrap().to_be_bytes());
    h.extend(src);
    h.extend([127, 0, 0, 1]);
    h.extend(port.to_be_bytes());
    h.extend(465u16.to_be_bytes());
    h.extend(tlv);
    h
}

/// A message to bob over an open session; returns the delivered text.
fn send_to_bob(s: &Server, c: &mut Client, from: &str, name: &str) -> String {
    let m = marker(name);
    c.cmd_expect(&format!("MAIL FROM:<{from}>"), 250);
    c.cmd_expect(&format!("RCPT TO:<{BOB}>"), 250);
    c.cmd_expect("DATA", 354);
    c.send(format!("Subject: {m}\r\n\r\nhello\r\n.\r\n").as_bytes())
        .unwrap();
    let r = c.reply();
    assert!(r.last().starts_with("250 2.0.0 Ok: queued as "), "{r:?}");
    c.cmd_expect("QUIT", 221);
    s.wait_for_mail("bob", &m)
}

fn rejected_by_proxy(s: &Server, listener: &str) -> f64 {
    let key = format!(
        "posthorn_connections_rejected_total{{listener=\"{listener}\",reason=\"proxy_protocol\"}}"
    );
    s.metrics().get(&key).copied().unwrap_or(0.0)
}

#[test]
fn v1_header_names_the_client_in_received_and_logs() {
    let s = Server::builder().proxy_trusted(TRUSTED_LOOPBACK).start();
    let mut c = s.connect(Port::Smtp);
    c.send(b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 25\r\n")
        .unwrap();
    c.expect_code(220);
    c.cmd_expect("EHLO client.example", 250);
    let mail = send_to_bob(&s, &mut c, "someone@example.net", "proxy-v1");
    assert!(
        mail.contains("Received: from client.example (unknown [203.0.113.7])"),
        "{mail}"
    );
    let log = s.stderr();
    assert!(
        log.lines()
            .any(|l| l.contains("client=203.0.113.7:51234 proxy=127.0.0.1:")
                && l.contains("connect")),
        "{log}"
    );
}

#[test]
fn v2_header_comes_before_the_tls_handshake_on_465() {
    let s = Server::builder().proxy_trusted(TRUSTED_LOOPBACK).start();
    let mut c = s.connect(Port::Submissions);
    c.send(&v2_header([203, 0, 113, 8], 40000)).unwrap();
    c.handshake(vec![s.cert_der()]);
    c.expect_code(220);
    c.cmd_expect("EHLO client.example", 250);
    c.auth_plain(ALICE, ALICE_PASS);
    let mail = send_to_bob(&s, &mut c, ALICE, "proxy-v2");
    assert!(
        mail.contains("Received: from client.example (unknown [203.0.113.8])"),
        "{mail}"
    );
    assert!(s.stderr().contains("client=203.0.113.8:40000"));
}

#[test]
fn per_ip_limit_counts_the_claimed_address() {
    let s = Server::builder()
        .proxy_trusted(TRUSTED_LOOPBACK)
        .limit("maxConnectionsPerIp", 1)
        .start();
    let open = |line: &str| {
        let mut c = s.connect(Port::Submission);
        c.send(line.as_bytes()).unwrap();
        c
    };
    let mut first = open("PROXY TCP4 203.0.113.7 127.0.0.1 1000 587\r\n");
    first.expect_code(220);
    let mut same = open("PROXY TCP4 203.0.113.7 127.0.0.1 1001 587\r\n");
    assert_eq!(
        same.reply().lines,
        [format!(
            "421 4.7.0 {HOSTNAME} Error: too many connections from 203.0.113.7"
        )]
    );
    // Every connection comes from 127.0.0.1, yet another claimed client gets in.
    let mut other = open("PROXY TCP4 203.0.113.9 127.0.0.1 1002 587\r\n");
    other.expect_code(220);
    other.cmd_expect("QUIT", 221);
    first.cmd_expect("QUIT", 221);
}

#[test]
fn trusted_peer_without_a_valid_header_is_refused() {
    let s = Server::builder().proxy_trusted(TRUSTED_LOOPBACK).start();
    let refused = format!("421 4.3.0 {HOSTNAME} Server local error");

    // Both wait for a greeting that never comes, until the header deadline (5 s); on
    // 465 the refusal would be plaintext, so there is none.
    let mut silent = s.connect(Port::Smtp);
    let mut silent_tls = s.connect(Port::Submissions);
    silent.set_read_timeout(Duration::from_secs(60));
    silent_tls.set_read_timeout(Duration::from_secs(60));
    assert_eq!(silent.read_to_close(), format!("{refused}\r\n"));
    assert_eq!(silent_tls.read_to_close(), "");

    // Speaks SMTP straight away.
    let mut c = s.connect(Port::Submission);
    c.send(b"EHLO client.example\r\n").unwrap();
    assert_eq!(c.reply().lines, std::slice::from_ref(&refused));

    // Starts TLS without a header on 465.
    let mut c = s.connect(Port::Submissions);
    assert!(c.try_handshake(vec![s.cert_der()]).is_err());

    // A malformed header (port out of range).
    let mut c = s.connect(Port::Smtp);
    c.send(b"PROXY TCP4 203.0.113.7 127.0.0.1 99999 25\r\n")
        .unwrap();
    assert_eq!(c.reply().lines, [refused]);

    // Counted when refused: the silent ones were closed, not left open.
    assert_eq!(rejected_by_proxy(&s, "smtp"), 2.0);
    assert_eq!(rejected_by_proxy(&s, "submission"), 1.0);
    assert_eq!(rejected_by_proxy(&s, "submissions"), 2.0);
}

#[test]
fn untrusted_peer_header_is_a_bad_command() {
    let s = Server::builder().proxy_trusted(&["192.0.2.0/24"]).start();
    let mut c = s.connect(Port::Smtp);
    c.expect_code(220);
    let r = c.cmd("PROXY TCP4 203.0.113.7 127.0.0.1 51234 25");
    assert_eq!(r.lines, ["502 5.5.2 Error: command not recognized"]);
    c.cmd_expect("EHLO client.example", 250);
    let mail = send_to_bob(&s, &mut c, "someone@example.net", "proxy-untrusted");
    assert!(
        mail.contains("Received: from client.example (unknown [127.0.0.1])"),
        "{mail}"
    );
    assert!(!s.stderr().contains("203.0.113.7:"));
}

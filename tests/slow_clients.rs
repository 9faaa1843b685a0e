//! Slow and greedy clients: a trickled command or message is cut off at its deadline,
//! timeouts shrink when most slots are taken, one network gets only its share of the
//! slots, and a slot is free again the moment QUIT is answered.
//!
//! docs/behaviour.md, rows `timeout`, `stress`, `conn-per-ip`, `quit`.

mod common;

use std::io::Write;
use std::net::{Ipv4Addr, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::*;

const TIMEOUT_REPLY: &str = "421 4.4.2 mail.example.com Error: timeout exceeded";
/// Noisy shared machine: a deadline of a few seconds may be met this much later.
const SLACK: Duration = Duration::from_secs(5);

/// Writes `bytes` one at a time, 300 ms apart, until done or the server hangs up.
fn trickle(mut sock: TcpStream, bytes: Vec<u8>) -> JoinHandle<()> {
    thread::spawn(move || {
        for b in bytes {
            if sock.write_all(&[b]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(300));
        }
    })
}

/// A client that is never idle for long but takes 15 s to send one command line or
/// message: with a 2 s `idleTimeout` it must be cut off after about 2 s.
fn assert_cut_off(s: &Server, c: &mut Client, started: Instant, state: &str) {
    let r = c.reply();
    let took = started.elapsed();
    assert_eq!(r.lines, [TIMEOUT_REPLY], "after {took:?}");
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(2) + SLACK,
        "cut off after {took:?}"
    );
    assert!(c.is_closed(), "connection open after the timeout reply");
    assert!(
        eventually(Duration::from_secs(5), || s
            .stderr()
            .contains(&format!("timeout after {state}"))),
        "no 'timeout after {state}' in the log:\n{}",
        s.stderr()
    );
}

#[test]
fn trickled_command_line_is_cut_off() {
    let s = Server::builder().limit("idleTimeout", "2s").start();
    let mut c = s.connect(Port::Smtp);
    c.expect_code(220);
    let started = Instant::now();
    let writer = trickle(
        c.try_clone_plain(),
        [b"EHLO ".as_slice(), &[b'a'; 45]].concat(),
    );
    assert_cut_off(&s, &mut c, started, "CONNECT");
    writer.join().unwrap();
}

#[test]
fn trickled_data_and_bdat_are_cut_off() {
    let s = Server::builder().limit("idleTimeout", "2s").start();
    let m = marker("trickled");
    // Whole short lines, so that no single line is slow.
    let message = format!("Subject: {m}\r\n\r\n{}", "short line\r\n".repeat(4)).into_bytes();

    let mut c = s.connect(Port::Smtp);
    c.expect_code(220);
    c.cmd_expect("EHLO client.example.org", 250);
    c.cmd_expect("MAIL FROM:<someone@example.net>", 250);
    c.cmd_expect(&format!("RCPT TO:<{BOB}>"), 250);
    c.cmd_expect("DATA", 354);
    let started = Instant::now();
    let writer = trickle(c.try_clone_plain(), message.clone());
    assert_cut_off(&s, &mut c, started, "DATA");
    writer.join().unwrap();

    let mut c = s.connect(Port::Smtp);
    c.expect_code(220);
    c.cmd_expect("EHLO client.example.org", 250);
    c.cmd_expect("MAIL FROM:<someone@example.net>", 250);
    c.cmd_expect(&format!("RCPT TO:<{BOB}>"), 250);
    c.send(b"BDAT 1000 LAST\r\n").unwrap();
    let started = Instant::now();
    let writer = trickle(c.try_clone_plain(), message);
    assert_cut_off(&s, &mut c, started, "BDAT");
    writer.join().unwrap();

    assert!(
        s.stored_files_containing(&m).is_empty(),
        "partial message stored"
    );
}

/// The deadline is a minimum rate, not a cap on the message's total time: content that
/// keeps up with `minDataRate` may take longer than `idleTimeout`.
#[test]
fn data_faster_than_the_minimum_rate_may_take_longer_than_the_timeout() {
    let s = Server::builder()
        .limit("idleTimeout", "3s")
        .limit("minDataRate", 1000)
        .start();
    let m = marker("steady");
    let mut c = s.connect(Port::Smtp);
    c.expect_code(220);
    c.cmd_expect("EHLO client.example.org", 250);
    c.cmd_expect("MAIL FROM:<someone@example.net>", 250);
    c.cmd_expect(&format!("RCPT TO:<{BOB}>"), 250);
    c.cmd_expect("DATA", 354);
    c.send(format!("Subject: {m}\r\n\r\n").as_bytes()).unwrap();
    let started = Instant::now();
    // 2000 bytes a second earn 2 s a second: 8 s in all, well past the 3 s timeout.
    for _ in 0..8 {
        let line = format!("{}\r\n", "y".repeat(998));
        c.send(line.repeat(2).as_bytes()).unwrap();
        thread::sleep(Duration::from_secs(1));
    }
    let r = c.cmd(".");
    assert_eq!(r.code, 250, "after {:?}: {:?}", started.elapsed(), r.lines);
    assert!(started.elapsed() > Duration::from_secs(3));
    s.wait_for_mail("bob", &m);
}

/// With 4 of 5 slots taken the server is under stress: every idle session, including
/// one that began waiting before, is cut after `stressIdleTimeout`, not `idleTimeout`.
#[test]
fn stress_shortens_the_idle_timeout() {
    let s = Server::builder()
        .limit("maxConnections", 5)
        .limit("idleTimeout", "60s")
        .limit("stressIdleTimeout", "2s")
        .start();
    let mut early = s.connect(Port::Smtp);
    early.expect_code(220);
    early.cmd_expect("EHLO client.example.org", 250);
    let mut clients: Vec<Client> = (0..3)
        .map(|_| {
            let mut c = s.connect(Port::Smtp);
            c.expect_code(220);
            c
        })
        .collect();
    let stressed = Instant::now();
    clients.insert(0, early);
    for c in &mut clients {
        let r = c.reply();
        assert_eq!(r.lines, [TIMEOUT_REPLY], "after {:?}", stressed.elapsed());
    }
    let took = stressed.elapsed();
    assert!(took < Duration::from_secs(2) + SLACK, "{took:?}");
    // The log line may reach our reader after the replies did.
    let logged = Instant::now() + SLACK;
    while !s.stderr().contains("stress=true") && Instant::now() < logged {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(s.stderr().contains("stress=true"), "{}", s.stderr());

    // Stress is over once they are gone: the normal timeout applies again.
    for c in &mut clients {
        assert!(c.is_closed());
    }
    let mut calm = s.connect(Port::Smtp);
    calm.expect_code(220);
    thread::sleep(Duration::from_secs(4));
    calm.cmd_expect("NOOP", 250);
}

/// 127.0.0.0/24 gets 3 of the 100 slots; 127.0.1.0/24 is another network.
#[test]
fn one_network_gets_only_its_share_of_the_slots() {
    let s = Server::builder()
        .limit("maxConnectionsPerNetwork", 3)
        .start();
    let mut open: Vec<Client> = (2..5)
        .map(|i| {
            let mut c = s.connect_from(Port::Smtp, Ipv4Addr::new(127, 0, 0, i));
            c.expect_code(220);
            c
        })
        .collect();
    let mut refused = s.connect_from(Port::Submission, Ipv4Addr::new(127, 0, 0, 5));
    assert_eq!(
        refused.reply().lines,
        ["421 4.7.0 mail.example.com Error: too many connections from 127.0.0.5"]
    );
    assert!(refused.is_closed());

    let mut other = s.connect_from(Port::Smtp, Ipv4Addr::new(127, 0, 1, 2));
    other.expect_code(220);
    other.cmd_expect("QUIT", 221);

    // The slot is free as soon as QUIT is answered, not some time after.
    open.pop().unwrap().cmd_expect("QUIT", 221);
    let mut next = s.connect_from(Port::Smtp, Ipv4Addr::new(127, 0, 0, 5));
    next.expect_code(220);

    let samples = s.metrics();
    assert_eq!(
        metric_sum(&samples, &["connections_rejected", "limit_per_network"]),
        1.0,
        "{samples:?}"
    );
}

/// Issue 9: at full use from one address, a client that reconnects right after its
/// QUIT was answered must never find its old slot still taken.
#[test]
fn slot_is_free_when_quit_is_answered() {
    let s = Server::builder().limit("maxConnectionsPerIp", 1).start();
    for i in 0..200 {
        let mut c = s.connect(Port::Smtp);
        let r = c.reply();
        assert_eq!(r.code, 220, "connection {i}: {:?}", r.lines);
        c.cmd_expect("QUIT", 221);
    }
}

//! Hostile and broken clients: the server answers or closes cleanly, never panics (the
//! harness fails any test whose server stderr says "panicked"), never stores a partial
//! message, and keeps serving the next client.
//!
//! docs/behaviour.md, rows `line-too-long`, `timeout`, `too-many-recipients`,
//! `conn-per-ip`, `conn-total`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// The server still greets and answers a fresh client.
fn assert_still_serving(s: &Server) {
    let mut c = s.connect(Port::Smtp);
    c.expect_code(220);
    c.cmd_expect("EHLO client.example.org", 250);
    c.cmd_expect("NOOP", 250);
    c.cmd_expect("QUIT", 221);
}

/// Deterministic pseudo-random bytes (xorshift), so a failure can be replayed.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

#[test]
fn random_bytes() {
    let s = Server::start();
    for seed in [1u64, 0xdead_beef, 42] {
        let mut c = s.connect(Port::Smtp);
        c.expect_code(220);
        // The server may close before reading it all; a reset here is fine.
        let _ = c.send(&noise(64 * 1024, seed));
        let _ = c.send(b"\r\n");
        let rest = c.read_to_close();
        assert!(
            rest.lines().any(|l| l.starts_with("421")),
            "seed {seed}: 64 KiB of noise (hundreds of bad lines, maxErrors 10) did not end \
             in a 421: {rest:?}"
        );
        for line in rest.lines() {
            let code = line.get(..3).and_then(|c| c.parse::<u16>().ok());
            assert!(
                matches!(code, Some(400..=599)),
                "seed {seed}: unexpected line {line:?} in answer to noise"
            );
        }
    }
    assert_still_serving(&s);
}

#[test]
fn one_megabyte_line() {
    let s = Server::start();
    let mut c = s.connect(Port::Smtp);
    c.expect_code(220);
    c.cmd_expect("EHLO client.example.org", 250);
    let mut line = b"MAIL FROM:<".to_vec();
    line.extend(std::iter::repeat_n(b'a', 1024 * 1024));
    line.extend_from_slice(b"@example.net>\r\n");
    let _ = c.send(&line);
    match c.read_reply() {
        Ok(r) => assert!(
            r.code == 421 || (500..=599).contains(&r.code),
            "1 MB command line answered {r:?}"
        ),
        Err(e) => panic!("server dropped the connection without a reply to a 1 MB line: {e}"),
    }
    assert_still_serving(&s);
}

#[test]
fn ten_thousand_recipients() {
    const N: usize = 10_000;
    let s = Server::start();
    let mut c = s.connect(Port::Smtp);
    c.expect_code(220);
    c.cmd_expect("EHLO client.example.org", 250);
    c.cmd_expect("MAIL FROM:<someone@example.net>", 250);

    // Pipelined from another thread so neither side blocks on a full socket buffer.
    let mut writer = c.try_clone_plain();
    let sender = thread::spawn(move || {
        let mut buf = Vec::with_capacity(N * 30);
        for _ in 0..N {
            buf.extend_from_slice(b"RCPT TO:<bob@example.com>\r\n");
        }
        writer.write_all(&buf)
    });
    let mut accepted = 0;
    for i in 0..N {
        let r = c
            .read_reply()
            .unwrap_or_else(|e| panic!("reply to RCPT #{}: {e} (accepted {accepted})", i + 1));
        if i < 100 {
            assert_eq!(r.code, 250, "RCPT #{} within the limit: {r:?}", i + 1);
            accepted += 1;
        } else {
            assert_eq!(
                r.lines,
                ["452 4.5.3 Error: too many recipients"],
                "RCPT #{} over maxRecipients 100",
                i + 1
            );
        }
    }
    sender.join().unwrap().expect("sending the RCPT flood");
    // The session survives and the 100 accepted recipients still get the message.
    c.cmd_expect("NOOP", 250);
    c.cmd_expect("DATA", 354);
    let m = marker("many-rcpts");
    c.send(format!("Subject: {m}\r\n\r\nhello\r\n.\r\n").as_bytes())
        .unwrap();
    let r = c.reply();
    assert!(r.last().starts_with("250 2.0.0 Ok: queued as "), "{r:?}");
    s.wait_for_mail("bob", &m);
    assert_still_serving(&s);
}

#[test]
fn nul_bytes() {
    let s = Server::start();
    let mut c = s.connect(Port::Smtp);
    c.expect_code(220);
    c.cmd_expect("EHLO client.example.org", 250);
    for line in [
        &b"NO\0OP\r\n"[..],
        b"MAIL FROM:<some\0one@example.net>\r\n",
        b"\0\0\0\0\r\n",
    ] {
        c.send(line).unwrap();
        let r = c.reply();
        assert!(
            (500..=599).contains(&r.code),
            "{:?} answered {r:?}",
            String::from_utf8_lossy(line)
        );
    }
    // NUL in a message body: accepted or refused, but answered, and the session goes on.
    c.cmd_expect("MAIL FROM:<someone@example.net>", 250);
    c.cmd_expect(&format!("RCPT TO:<{BOB}>"), 250);
    c.cmd_expect("DATA", 354);
    c.send(b"Subject: nul\r\n\r\nbefore\0after\r\n.\r\n")
        .unwrap();
    let r = c.reply();
    assert!(
        r.code == 250 || (500..=599).contains(&r.code),
        "NUL in body answered {r:?}"
    );
    c.cmd_expect("NOOP", 250);
    c.cmd_expect("QUIT", 221);
    assert_still_serving(&s);
}

#[test]
fn client_that_stops_mid_data_leaves_nothing_stored() {
    let s = Server::start();
    let m = marker("mid-data");
    {
        let mut c = s.authenticated_client(Port::Submission, ALICE, ALICE_PASS);
        c.cmd_expect(&format!("MAIL FROM:<{ALICE}>"), 250);
        c.cmd_expect(&format!("RCPT TO:<{BOB}>"), 250);
        c.cmd_expect("DATA", 354);
        c.send(format!("Subject: {m}\r\n\r\nhalf a message {m}\r\n").as_bytes())
            .unwrap();
        c.send(&vec![b'z'; 200_000]).unwrap();
        // Dropped here without the final dot.
    }
    {
        let mut c = s.connect(Port::Smtp);
        c.expect_code(220);
        c.cmd_expect("EHLO client.example.org", 250);
        c.cmd_expect("MAIL FROM:<someone@example.net>", 250);
        c.cmd_expect(&format!("RCPT TO:<{BOB}>"), 250);
        c.cmd_expect("DATA", 354);
        c.send(format!("Subject: {m}\r\n\r\nport 25 half {m}\r\n").as_bytes())
            .unwrap();
    }
    thread::sleep(Duration::from_secs(1));
    assert_still_serving(&s);
    let stored = s.stored_files_containing(&m);
    assert!(stored.is_empty(), "partial message stored: {stored:?}");
    assert!(s.mails("bob").is_empty(), "partial message delivered");
}

#[test]
fn idle_timeout_ends_the_session_with_421() {
    let s = Server::builder().limit("idleTimeout", "1s").start();
    let mut c = s.connect(Port::Smtp);
    c.expect_code(220);
    let started = Instant::now();
    let r = c.reply();
    assert_eq!(
        r.lines,
        ["421 4.4.2 mail.example.com Error: timeout exceeded"],
        "after {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(c.is_closed(), "connection open after the timeout reply");

    // Also in the middle of DATA.
    let mut c = s.connect(Port::Smtp);
    c.expect_code(220);
    c.cmd_expect("EHLO client.example.org", 250);
    c.cmd_expect("MAIL FROM:<someone@example.net>", 250);
    c.cmd_expect(&format!("RCPT TO:<{BOB}>"), 250);
    c.cmd_expect("DATA", 354);
    c.send(b"Subject: stalled\r\n\r\npart").unwrap();
    let r = c.reply();
    assert_eq!(
        r.lines,
        ["421 4.4.2 mail.example.com Error: timeout exceeded"]
    );
    assert!(c.is_closed());
    assert!(s.mails("bob").is_empty());
}

#[test]
fn too_many_connections_from_one_ip() {
    let s = Server::builder().limit("maxConnectionsPerIp", 3).start();
    let mut open: Vec<Client> = (0..3)
        .map(|_| {
            let mut c = s.connect(Port::Smtp);
            c.expect_code(220);
            c
        })
        .collect();
    // The limit spans listeners: count is per client IP.
    let mut extra = s.connect(Port::Submission);
    let r = extra.reply();
    assert_eq!(
        r.lines,
        ["421 4.7.0 mail.example.com Error: too many connections from 127.0.0.1"]
    );
    assert!(extra.is_closed());

    open.pop().unwrap().cmd_expect("QUIT", 221);
    let ok = eventually(Duration::from_secs(3), || {
        let mut c = s.connect(Port::Smtp);
        c.reply().code == 220
    });
    assert!(ok, "a slot freed by QUIT was not reusable");
}

#[test]
fn too_many_connections_in_total() {
    let s = Server::builder()
        .limit("maxConnections", 2)
        .limit("maxConnectionsPerIp", 20)
        .start();
    let _open: Vec<Client> = (0..2)
        .map(|_| {
            let mut c = s.connect(Port::Smtp);
            c.expect_code(220);
            c
        })
        .collect();
    let mut extra = s.connect(Port::Smtp);
    match extra.read_reply() {
        Ok(r) => assert_eq!(r.code, 421, "connection over maxConnections: {r:?}"),
        Err(e) => panic!("connection over maxConnections closed without a 421: {e}"),
    }
    assert!(extra.is_closed());
}

#[test]
fn metrics_endpoint_survives_garbage() {
    let s = Server::start();
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", s.metrics)).unwrap();
    sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let _ = sock.write_all(&noise(4096, 7));
    let _ = BufReader::new(&sock).lines().count();
    let (status, _) = s.http_get("/healthz");
    assert_eq!(status, 200);
}

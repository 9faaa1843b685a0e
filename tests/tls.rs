//! TLS against `openssl s_client`: only TLS 1.2 and 1.3, on STARTTLS (587, 25) and implicit
//! TLS (465); a certificate swapped on disk the kubelet way reaches new connections while
//! a session opened before the swap still completes its mail.
//!
//! docs/behaviour.md, rows `tls-versions`, `starttls-pipelined`, `starttls-twice`, `conn-465-silent`.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// `openssl s_client` against a listener; returns (success, stdout + stderr).
fn s_client(s: &Server, port: Port, extra: &[&str]) -> (bool, String, Vec<u8>) {
    let connect = format!("127.0.0.1:{}", s.port(port));
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &connect, "-servername", HOSTNAME]);
    if port != Port::Submissions {
        cmd.args(["-starttls", "smtp"]);
    }
    cmd.args(extra);
    let out = run(&mut cmd);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text, out.stdout)
}

fn assert_version_refused(s: &Server, port: Port, flag: &str) {
    // SECLEVEL=0 lets Debian's OpenSSL offer TLS 1.0/1.1 at all, so the refusal is the
    // server's: it must answer with an alert, not the client give up on its own.
    let (ok, text, _) = s_client(s, port, &[flag, "-cipher", "DEFAULT@SECLEVEL=0", "-brief"]);
    assert!(!ok, "{flag} on {port:?} was accepted:\n{text}");
    assert!(
        !text.contains("CONNECTION ESTABLISHED"),
        "{flag} on {port:?}:\n{text}"
    );
    assert!(
        !text.contains("no protocols available"),
        "the client refused {flag} itself, test is void:\n{text}"
    );
    assert!(
        text.contains("alert protocol version") || text.contains("alert handshake failure"),
        "{flag} on {port:?}: expected the server's protocol_version alert:\n{text}"
    );
}

fn assert_version_accepted(s: &Server, port: Port, flag: &str, shown: &str) {
    let (ok, text, _) = s_client(s, port, &[flag, "-brief"]);
    assert!(ok, "{flag} on {port:?} failed:\n{text}");
    assert!(
        text.contains("CONNECTION ESTABLISHED")
            && text.contains(&format!("Protocol version: {shown}")),
        "{flag} on {port:?}:\n{text}"
    );
}

/// Issue 9: with an ECDSA pair next to the RSA one, clients that can take ECDSA get it
/// (P-256, the harness's own pair) and the rest RSA-2048, on STARTTLS and on 465.
#[test]
fn ecdsa_to_clients_that_offer_it_rsa_to_the_rest() {
    let rsa = tempfile::tempdir().unwrap();
    let (cert, key) = (rsa.path().join("rsa.crt"), rsa.path().join("rsa.key"));
    let made = run(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args(["-days", "1", "-subj", &format!("/CN={HOSTNAME}")]));
    assert!(made.status.success(), "{made:?}");
    let s = Server::builder()
        .config(
            "tls",
            format!(
                "{{cert: {}, key: {}, ecdsa: {{cert: $DIR/tls/tls.crt, key: $DIR/tls/tls.key}}}}",
                cert.display(),
                key.display()
            ),
        )
        .start();
    let cases: [(&[&str], &str); 5] = [
        (&[], "256 bit"),
        (
            &["-sigalgs", "rsa_pss_rsae_sha256:rsa_pkcs1_sha256"],
            "2048 bit",
        ),
        (
            &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"],
            "256 bit",
        ),
        // ECDSA signatures offered, but only RSA suites.
        (
            &["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"],
            "2048 bit",
        ),
        (&["-tls1_2", "-sigalgs", "RSA+SHA256"], "2048 bit"),
    ];
    for port in [Port::Submission, Port::Submissions] {
        for (args, key_size) in cases {
            let (ok, text, _) = s_client(&s, port, args);
            assert!(ok, "{args:?} on {port:?}:\n{text}");
            assert!(
                text.contains(&format!("Server public key is {key_size}")),
                "{args:?} on {port:?}: expected {key_size}:\n{text}"
            );
        }
    }
}

/// Issue 9: a client that kept its session resumes it, with TLS 1.3 tickets and TLS 1.2
/// session IDs or tickets, on STARTTLS and on 465. The client says QUIT and reads until
/// the server closes, so a TLS 1.3 ticket sent after the handshake is always received.
#[test]
fn sessions_are_resumed() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("session.pem");
    let session = session.to_str().unwrap();
    let quit = |port: Port, args: &[&str]| {
        let connect = format!("127.0.0.1:{}", s.port(port));
        let mut cmd = Command::new("openssl");
        cmd.args(["s_client", "-connect", &connect, "-ign_eof"]);
        if port != Port::Submissions {
            cmd.args(["-starttls", "smtp"]);
        }
        let mut child = cmd
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"QUIT\r\n").unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    for port in [Port::Submission, Port::Submissions] {
        for version in ["-tls1_3", "-tls1_2"] {
            let text = quit(port, &[version, "-sess_out", session]);
            assert!(
                text.contains("221 2.0.0 Bye"),
                "{version} on {port:?}:\n{text}"
            );
            let text = quit(port, &[version, "-sess_in", session]);
            assert!(text.contains("Reused, "), "{version} on {port:?}:\n{text}");
        }
    }
}

#[test]
fn tls_1_0_and_1_1_are_refused() {
    let s = Server::start();
    for port in [Port::Submission, Port::Submissions, Port::Smtp] {
        assert_version_refused(&s, port, "-tls1");
        assert_version_refused(&s, port, "-tls1_1");
        // The same client settings with TLS 1.2 succeed, so the refusal is the version's.
        let (ok, text, _) = s_client(
            &s,
            port,
            &["-tls1_2", "-cipher", "DEFAULT@SECLEVEL=0", "-brief"],
        );
        assert!(
            ok,
            "control handshake with -tls1_2 on {port:?} failed:\n{text}"
        );
    }
}

#[test]
fn tls_1_2_and_1_3_are_accepted() {
    let s = Server::start();
    for port in [Port::Submission, Port::Submissions, Port::Smtp] {
        assert_version_accepted(&s, port, "-tls1_2", "TLSv1.2");
        assert_version_accepted(&s, port, "-tls1_3", "TLSv1.3");
    }
}

/// Fingerprint of the certificate the listener presents right now.
fn served_fingerprint(s: &Server, port: Port) -> String {
    let (ok, text, stdout) = s_client(s, port, &[]);
    assert!(ok, "s_client on {port:?}:\n{text}");
    fingerprint_of_pem(&stdout)
}

#[test]
fn swapped_certificate_reaches_new_connections_and_old_sessions_finish() {
    let s = Server::start();
    let old_cert = s.cert_der();
    let old_fp = fingerprint_of_pem(&std::fs::read(s.cert_path()).unwrap());
    assert_eq!(served_fingerprint(&s, Port::Submission), old_fp);
    assert_eq!(served_fingerprint(&s, Port::Submissions), old_fp);

    // Sessions opened, TLS'd and authenticated before the swap.
    let mut on_587 = s.authenticated_client(Port::Submission, ALICE, ALICE_PASS);
    let mut on_465 = s.authenticated_client(Port::Submissions, BOB, BOB_PASS);

    s.rotate_cert();
    let new_fp = fingerprint_of_pem(&std::fs::read(s.cert_path()).unwrap());
    assert_ne!(old_fp, new_fp, "rotation produced the same certificate");

    for port in [Port::Submission, Port::Submissions, Port::Smtp] {
        let mut seen = String::new();
        let switched = eventually(Duration::from_secs(5), || {
            seen = served_fingerprint(&s, port);
            seen == new_fp
        });
        assert!(
            switched,
            "{port:?} still serves {seen} 5 s after the swap (new {new_fp}, old {old_fp})"
        );
    }

    // The old sessions finish their mail on the old TLS session.
    for (client, from, to, local) in [
        (&mut on_587, ALICE, BOB, "bob"),
        (&mut on_465, BOB, ALICE, "alice"),
    ] {
        let m = marker("across-swap");
        client.cmd_expect(&format!("MAIL FROM:<{from}>"), 250);
        client.cmd_expect(&format!("RCPT TO:<{to}>"), 250);
        client.cmd_expect("DATA", 354);
        client
            .send(format!("Subject: {m}\r\n\r\nsent across a certificate swap\r\n.\r\n").as_bytes())
            .unwrap();
        let r = client.reply();
        assert!(r.last().starts_with("250 2.0.0 Ok: queued as "), "{r:?}");
        client.cmd_expect("QUIT", 221);
        s.wait_for_mail(local, &m);
    }

    // A client that pins only the new certificate gets through; one pinning the old fails.
    let mut fresh = s.authenticated_client(Port::Submission, ALICE, ALICE_PASS);
    fresh.cmd_expect("QUIT", 221);
    let mut pinned_old = Client::connect(s.submissions);
    assert!(
        pinned_old.try_handshake(vec![old_cert]).is_err(),
        "old certificate still served on 465"
    );
}

#[test]
fn plaintext_pipelined_after_starttls_is_discarded() {
    // CVE-2011-0411 class: commands sent in plaintext right behind STARTTLS must not be
    // executed inside the TLS session.
    let s = Server::start();
    let mut c = s.connect(Port::Submission);
    c.expect_code(220);
    c.cmd_expect("EHLO client.example.org", 250);
    c.send(b"STARTTLS\r\nNOOP\r\n").unwrap();
    c.expect_code(220);
    c.handshake(vec![s.cert_der()]);
    c.set_read_timeout(Duration::from_millis(700));
    if let Ok(r) = c.read_reply() {
        panic!("server answered the injected plaintext NOOP inside TLS: {r:?}");
    }
    c.set_read_timeout(IO_TIMEOUT);
    let r = c.cmd("EHLO client.example.org");
    assert_eq!(
        r.lines.first().map(String::as_str),
        Some("250-mail.example.com"),
        "{r:?}"
    );
}

#[test]
fn starttls_inside_tls_is_an_error() {
    let s = Server::start();
    let mut c = s.connect(Port::Submission);
    c.expect_code(220);
    c.cmd_expect("EHLO client.example.org", 250);
    c.starttls(vec![s.cert_der()]);
    c.cmd_expect("EHLO client.example.org", 250);
    let r = c.cmd("STARTTLS");
    assert!(r.code >= 500, "STARTTLS inside TLS answered {r:?}");
    c.cmd_expect("NOOP", 250);
}

#[test]
fn refusal_on_465_is_never_plaintext() {
    let s = Server::builder().limit("maxConnectionsPerIp", 1).start();
    let mut first = Client::connect_tls(s.submissions, vec![s.cert_der()]);
    first.expect_code(220);
    // Over the per-IP limit: a client that would start TLS must not read a plaintext 421.
    let mut second = s.connect(Port::Submissions);
    assert_eq!(second.read_to_close(), "");
    let key =
        r#"posthorn_connections_rejected_total{listener="submissions",reason="limit_per_ip"}"#;
    assert_eq!(s.metrics().get(key), Some(&1.0));
    first.cmd_expect("QUIT", 221);
}

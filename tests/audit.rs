//! Audits with real tools, as recorded in docs/security.md: nmap's `smtp-open-relay`
//! against port 25 and testssl.sh against 465 and STARTTLS on 587; plus nmap's relay
//! tricks aimed at the local domain, and the client-initiated renegotiation testssl found.
//!
//! docs/behaviour.md, rows `relay-denied`, `tls-versions`.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;

use common::*;

/// A sender on a remote domain: port 25 accepts any sender, so every nmap test whose
/// sender parses reaches RCPT, where only the relay check can stop it.
const RELAY_FROM: &str = "alice";
const RELAY_TO: &str = "relaytest";
const RELAY_DOMAIN: &str = "example.net";

#[test]
fn nmap_finds_no_open_relay() {
    // The default error limit (the harness lowers it to 10): each of nmap's 16 refused
    // tests is an error, and the 11th would close the session before the last tests ran.
    let s = Server::builder().limit("maxErrors", 20).start();
    let args = format!(
        "smtp-open-relay.from={RELAY_FROM},smtp-open-relay.to={RELAY_TO},\
         smtp-open-relay.domain={RELAY_DOMAIN}"
    );
    // `+` runs the script whatever nmap guesses the service on this random port to be;
    // `-sT` needs no raw sockets; `--script-trace` shows the conversation.
    let out = run(Command::new("nmap").args([
        "-n",
        "-Pn",
        "-sT",
        "-p",
        &s.smtp.to_string(),
        "--script",
        "+smtp-open-relay",
        "--script-args",
        &args,
        "--script-trace",
        "127.0.0.1",
    ]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "nmap failed: {out:?}");
    assert!(
        text.contains("smtp-open-relay: Server doesn't seem to be an open relay, all tests failed"),
        "nmap verdict:\n{text}"
    );

    // Every test reached RCPT (its sender, `alice@[127.0.0.1]` in the last 13, was
    // accepted), and each recipient was refused. Four forms stop at the path's syntax,
    // where Postfix would answer "Relay access denied": a quoted local part alone (Postfix
    // dequotes it into a remote address), and two `@` outside quotes.
    let (to, domain, ip, name) = (RELAY_TO, RELAY_DOMAIN, "127.0.0.1", HOSTNAME);
    let denied = |rcpt: String| format!("454 4.7.1 <{rcpt}>: Relay access denied");
    let syntax = || "501 5.1.3 Bad recipient address syntax".to_string();
    let expected = [
        denied(format!("{to}@{domain}")),
        denied(format!("{to}@{domain}")),
        denied(format!("{to}@{domain}")),
        denied(format!("{to}@{domain}")),
        denied(format!("{to}%{domain}@[{ip}]")),
        denied(format!("{to}%{domain}@{name}")),
        syntax(),
        syntax(),
        syntax(),
        // `"relaytest@example.net"@[127.0.0.1]`, dequoted as Postfix shows it.
        denied(format!("{to}@{domain}@[{ip}]")),
        syntax(),
        // Source routes are dropped.
        denied(format!("{to}@{domain}")),
        denied(format!("{to}@{domain}")),
        format!(
            "504 5.5.2 <{domain}!{to}>: Recipient address rejected: need fully-qualified address"
        ),
        denied(format!("{domain}!{to}@[{ip}]")),
        denied(format!("{domain}!{to}@{name}")),
    ];
    // The server's lines in the trace are `NSE: TCP <client> < <server> | <text>`; the
    // only refusals in the conversation are the answers to RCPT.
    let refusals: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("NSE: TCP") && l.contains(" < "))
        .filter_map(|l| l.split_once(" | ").map(|(_, reply)| reply))
        .filter(|reply| reply.starts_with(['4', '5']))
        .collect();
    assert_eq!(refusals, expected, "nmap's trace:\n{text}");

    // The relay check's refusals in the server log, by sender.
    let log = s.stderr();
    let from_literal = format!("from={RELAY_FROM}@[{ip}] ");
    let relay_denied = |from: &str| {
        log.lines()
            .filter(|l| l.contains("reason=\"relay_denied\"") && l.contains(from))
            .count()
    };
    assert_eq!(relay_denied(&from_literal), 8, "{log}");
    for from in [
        String::new(),
        format!("{RELAY_FROM}@{RELAY_DOMAIN}"),
        format!("{RELAY_FROM}@{HOSTNAME}"),
    ] {
        assert_eq!(
            relay_denied(&format!("from={from} ")),
            1,
            "from <{from}>:\n{log}"
        );
    }
}

/// Every recipient form nmap's script tries (with `[127.0.0.1]` for its address literal
/// and the banner name for its server name), plus the same tricks aimed at a local
/// domain, sent after a sender the server accepts: none may be accepted. The server's own
/// address as a literal is not a local domain, not even for postmaster.
#[test]
fn relay_tricks_are_refused_at_rcpt() {
    // Every refusal counts as an error; all forms go through one session.
    let s = Server::builder().limit("maxErrors", 100).start();
    let (to, domain, ip, name) = (RELAY_TO, RELAY_DOMAIN, "127.0.0.1", HOSTNAME);
    let forms = [
        format!("{to}@{domain}"),
        format!("{to}%{domain}@[{ip}]"),
        format!("{to}%{domain}@{name}"),
        format!("\"{to}@{domain}\""),
        format!("\"{to}%{domain}\""),
        format!("{to}@{domain}@[{ip}]"),
        format!("\"{to}@{domain}\"@[{ip}]"),
        format!("{to}@{domain}@{name}"),
        format!("@[{ip}]:{to}@{domain}"),
        format!("@{name}:{to}@{domain}"),
        format!("{domain}!{to}"),
        format!("{domain}!{to}@[{ip}]"),
        format!("{domain}!{to}@{name}"),
        // Routing tricks through a local domain.
        format!("{to}%{domain}@example.com"),
        format!("{domain}!{to}@example.com"),
        format!("\"{to}@{domain}\"@example.com"),
        format!("@example.com:{to}@{domain}"),
        format!("{to}@{domain}@example.com"),
        format!("{to}@{domain}."),
        format!("{to}@{}", domain.to_ascii_uppercase()),
    ];
    // Address literals, the server's own among them.
    let literals = [
        format!("{to}@[{ip}]"),
        format!("postmaster@[{ip}]"),
        "postmaster@[IPv6:::1]".to_string(),
    ];
    let mut c = s.connect(Port::Smtp);
    c.expect_code(220);
    c.cmd_expect("EHLO client.example.net", 250);
    let mut answers = BTreeMap::new();
    for form in forms.iter().chain(&literals) {
        c.cmd_expect(&format!("MAIL FROM:<{RELAY_FROM}@{RELAY_DOMAIN}>"), 250);
        answers.insert(form, c.cmd(&format!("RCPT TO:<{form}>")).last().to_string());
        c.cmd_expect("RSET", 250);
    }
    let accepted: Vec<_> = answers
        .iter()
        .filter(|(_, reply)| !reply.starts_with(['4', '5']))
        .collect();
    assert!(accepted.is_empty(), "accepted: {accepted:#?}");
    // The plain remote recipient and the address literals are refused by the relay check
    // itself.
    for form in std::iter::once(&forms[0]).chain(&literals) {
        assert_eq!(
            answers[form],
            format!("454 4.7.1 <{form}>: Relay access denied")
        );
    }
}

/// openssl asks for a renegotiation inside the TLS 1.2 session; the server must refuse
/// at once with a `no_renegotiation` alert (a refusal left unsent kept the client waiting
/// until the idle timeout). The idle timeout is raised so that only the alert can end it.
#[test]
fn client_renegotiation_is_refused_at_once() {
    let s = Server::builder().limit("idleTimeout", "120s").start();
    for port in [Port::Submissions, Port::Submission] {
        let connect = format!("127.0.0.1:{}", s.port(port));
        let mut cmd = Command::new("timeout");
        cmd.args([
            "60", "openssl", "s_client", "-connect", &connect, "-tls1_2", "-crlf",
        ]);
        if port == Port::Submission {
            cmd.args(["-starttls", "smtp"]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn openssl s_client");
        let (tx, lines) = mpsc::channel();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let reader = thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut text = String::new();
        let mut stdin = child.stdin.take().unwrap();
        // A NOOP answered first, so no reply is in flight when the renegotiation starts.
        stdin.write_all(b"NOOP\n").unwrap();
        while let Ok(line) = lines.recv_timeout(IO_TIMEOUT) {
            text.push_str(&line);
            text.push('\n');
            if line == "250 2.0.0 Ok" {
                // `R` asks s_client to renegotiate; stdin stays open so only the
                // server can end the session.
                stdin.write_all(b"R\n").unwrap();
                break;
            }
        }
        let status = child.wait().unwrap();
        drop(stdin);
        reader.join().unwrap();
        text.extend(lines.try_iter().map(|l| l + "\n"));
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        text.push_str(&stderr);
        assert!(
            text.contains("RENEGOTIATING"),
            "{port:?}: no renegotiation:\n{text}"
        );
        assert_ne!(status.code(), Some(124), "{port:?}: no answer:\n{text}");
        assert!(
            text.contains(":no renegotiation:"),
            "{port:?}: expected the no_renegotiation alert:\n{text}"
        );
    }
    assert!(!s.stderr().contains("timeout after"), "{}", s.stderr());
}

/// One testssl.sh finding in its flat JSON output.
#[derive(Debug, serde::Deserialize)]
struct Finding {
    id: String,
    severity: String,
    finding: String,
}

/// HIGH or CRITICAL findings that only describe the harness's test certificate (a
/// self-signed P-256 certificate valid for 30 days); a production certificate from a CA
/// has none of them.
const CERTIFICATE_ONLY: [&str; 4] = [
    // Self-signed: no CA vouches for it.
    "cert_chain_of_trust",
    // Valid for 30 days, so it "expires < 30 days" as soon as it is made ...
    "cert_expirationStatus",
    // ... and its notAfter date is flagged for the same reason.
    "cert_notAfter",
    // No CRL distribution point or OCSP URI: there is no CA to run them.
    "cert_revocation",
];

/// Runs testssl.sh on one listener with the checks that concern the server (protocols,
/// cipher categories, forward secrecy, vulnerabilities, server preference, server
/// defaults and certificate), and returns its findings by id.
fn testssl(s: &Server, port: Port) -> BTreeMap<String, Finding> {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("testssl.json");
    let mut cmd = Command::new("testssl");
    // The test certificate's name, on loopback without DNS.
    cmd.args(["--quiet", "--color", "0", "--warnings", "off", "-n", "none"]);
    cmd.args(["--ip", "127.0.0.1", "-p", "-s", "-f", "-U", "-P", "-S"]);
    if port == Port::Submission {
        cmd.args(["-t", "smtp"]);
    }
    cmd.arg("--jsonfile")
        .arg(&json)
        .arg(format!("{HOSTNAME}:{}", s.port(port)));
    // Its exit status adds up the return codes of its checks (nonzero with findings of
    // any severity here), so the JSON is the verdict.
    let out = run(&mut cmd);
    let findings: Vec<Finding> = std::fs::read(&json)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_else(|| panic!("testssl {port:?} wrote no findings: {out:?}"));
    findings.into_iter().map(|f| (f.id.clone(), f)).collect()
}

fn assert_testssl_clean(port: Port) {
    let s = Server::start();
    let found = testssl(&s, port);
    let get = |id: &str| {
        found
            .get(id)
            .unwrap_or_else(|| panic!("{port:?}: testssl reported no {id}: {found:#?}"))
    };
    // Every group of checks ran to the end.
    for id in [
        "TLS1_3",
        "cipherlist_STRONG",
        "PFS",
        "cipher_order",
        "cert_chain_of_trust",
        "heartbleed",
        "ROBOT",
        "secure_client_renego",
        "RC4",
    ] {
        get(id);
    }
    assert!(!found.contains_key("scanProblem"), "{found:#?}");

    let serious: Vec<_> = found
        .values()
        .filter(|f| matches!(f.severity.as_str(), "HIGH" | "CRITICAL"))
        .filter(|f| !CERTIFICATE_ONLY.contains(&f.id.as_str()))
        .collect();
    assert!(serious.is_empty(), "{port:?}: {serious:#?}");

    for (id, expected) in [
        ("SSLv2", "not offered"),
        ("SSLv3", "not offered"),
        ("TLS1", "not offered"),
        ("TLS1_1", "not offered"),
        ("TLS1_2", "offered"),
        ("TLS1_3", "offered with final"),
        // The server's order wins, and it is the one in src/tls.rs (the harness
        // certificate is ECDSA, so TLS 1.2 shows the ECDSA suites).
        ("cipher_order", "server"),
        (
            "cipherorder_TLSv1_3",
            "TLS_AES_256_GCM_SHA384 TLS_CHACHA20_POLY1305_SHA256 TLS_AES_128_GCM_SHA256",
        ),
        (
            "cipherorder_TLSv1_2",
            "ECDHE-ECDSA-AES256-GCM-SHA384 ECDHE-ECDSA-CHACHA20-POLY1305 \
             ECDHE-ECDSA-AES128-GCM-SHA256",
        ),
        ("secure_client_renego", "not vulnerable"),
    ] {
        assert_eq!(get(id).finding, expected, "{port:?}: {:?}", get(id));
    }
}

#[test]
fn testssl_on_submissions_465() {
    assert_testssl_clean(Port::Submissions);
}

#[test]
fn testssl_on_submission_587_starttls() {
    assert_testssl_clean(Port::Submission);
}

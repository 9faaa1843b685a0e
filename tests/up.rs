//! `posthorn up` as a newcomer runs it: the example manifest, the printed swaks command,
//! and the mail arriving in the printed Maildir. `up` binds the fixed default ports, so
//! both scenarios run in one test, one after the other.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Dnsmasq, doveadm_hash, swaks};

struct Up {
    child: Child,
    lines: Vec<String>,
    /// Its stderr, scanned for panics when it stops.
    log: tempfile::NamedTempFile,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = std::fs::read_to_string(self.log.path()).unwrap_or_default();
        common::assert_no_panic("posthorn up", &log);
    }
}

/// Starts `posthorn up` and reads what it prints, up to the line starting with `last`.
fn up(state: &Path, extra: &[&str], last: &str) -> Up {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_posthorn"))
        .args(["up", "-f", "examples/mailserver.yaml", "--state-dir"])
        .arg(state)
        .args(extra)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log.reopen().unwrap())
        .spawn()
        .expect("starting posthorn up");
    let stdout = child.stdout.take().unwrap();
    let lines = read_until(stdout, |l| l.starts_with(last));
    Up { child, lines, log }
}

fn read_until(stdout: ChildStdout, last: impl Fn(&str) -> bool) -> Vec<String> {
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("reading up's output");
        let done = last(&line);
        lines.push(line);
        if done {
            return lines;
        }
    }
    panic!("posthorn up exited early; it printed {lines:?}");
}

fn line_starting<'a>(lines: &'a [String], prefix: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in {lines:?}"))
}

/// Splits the printed command as a shell would (it only uses single quotes).
fn shell_words(command: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in command.chars() {
        match c {
            '\'' => quoted = !quoted,
            ' ' if !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    words.push(word);
    words
}

fn wait_for_file_in(dir: &Path) -> PathBuf {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(entry) = std::fs::read_dir(dir).ok().and_then(|mut d| d.next()) {
            return entry.unwrap().path();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing arrived in {}", dir.display());
}

#[test]
fn up_runs_the_example_and_the_printed_swaks_command_delivers() {
    // 1. Nothing given: self-signed certificate and a generated test user.
    let state = tempfile::tempdir().unwrap();
    let run = up(state.path(), &[], "mail for");
    assert_eq!(
        line_starting(&run.lines, "listening "),
        "smtp=127.0.0.1:2525 submission=127.0.0.1:5587 submissions=127.0.0.1:5465 metrics=127.0.0.1:9090"
    );
    let credentials = line_starting(&run.lines, "test user: ").to_string();
    assert!(
        credentials.starts_with("test@example.com  password: "),
        "{credentials}"
    );
    let words = shell_words(line_starting(&run.lines, "try: "));
    assert_eq!(words[0], "swaks");
    let maildir = PathBuf::from(
        line_starting(&run.lines, "mail for test@example.com arrives in ").to_string(),
    );
    let out = Command::new(&words[0])
        .args(&words[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{transcript}");
    assert!(
        transcript.contains("250 2.0.0 Ok: queued as "),
        "{transcript}"
    );
    let mail = std::fs::read_to_string(wait_for_file_in(&maildir)).unwrap();
    assert!(mail.contains("Delivered-To: test@example.com"), "{mail}");
    assert!(mail.contains("with ESMTPSA id"), "{mail}");

    // A second `up` on the same state directory stops at once and rewrites nothing.
    let config = std::fs::read_to_string(state.path().join("config.yaml")).unwrap();
    let second = Command::new(env!("CARGO_BIN_EXE_posthorn"))
        .args([
            "up",
            "-f",
            "examples/mailserver.yaml",
            "--bind",
            "127.0.0.2",
        ])
        .arg("--state-dir")
        .arg(state.path())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert_eq!(
        String::from_utf8_lossy(&second.stderr),
        format!(
            "Error: state directory {} is in use by another posthorn up\n",
            state.path().display()
        )
    );
    assert_eq!(
        std::fs::read_to_string(state.path().join("config.yaml")).unwrap(),
        config
    );
    drop(run);

    // A second run keeps the same certificate and credentials.
    let again = up(state.path(), &[], "mail for");
    assert_eq!(line_starting(&again.lines, "test user: "), credentials);
    drop(again);

    // 2. Secrets as the kubelet mounts them, and a DNS server for domain checks.
    let secrets = tempfile::tempdir().unwrap();
    let users = secrets.path().join("mail-users");
    std::fs::create_dir_all(&users).unwrap();
    let hash = doveadm_hash("SHA512-CRYPT", "alice-pass");
    std::fs::write(users.join("passwd"), format!("alice@example.com:{hash}\n")).unwrap();
    let dns = Dnsmasq::start();
    let dns_addr = format!("127.0.0.1:{}", dns.port);
    let state = tempfile::tempdir().unwrap();
    let run = up(
        state.path(),
        &[
            "--secrets-dir",
            secrets.path().to_str().unwrap(),
            "--dns-server",
            &dns_addr,
        ],
        "config:",
    );
    assert!(
        !run.lines.iter().any(|l| l.starts_with("test user")),
        "no test user when the users Secret exists: {:?}",
        run.lines
    );
    let auth = [
        "--auth",
        "PLAIN",
        "--auth-user",
        "alice@example.com",
        "--auth-password",
        "alice-pass",
        "--from",
        "info@example.com",
    ];
    // A remote domain that the local DNS server knows (MX example.net) is accepted...
    let t = swaks(
        5587,
        &[&["-tls", "--to", "someone@example.net"][..], &auth].concat(),
    );
    t.assert_reply_to("RCPT TO", "250 2.1.5 Ok");
    // ...and one it answers NXDOMAIN for is not.
    let t = swaks(
        5587,
        &[
            &[
                "-tls",
                "--to",
                "x@no-such-domain.test",
                "--quit-after",
                "RCPT",
            ][..],
            &auth,
        ]
        .concat(),
    );
    t.assert_reply_to(
        "RCPT TO",
        "450 4.1.2 <x@no-such-domain.test>: Recipient address rejected: Domain not found",
    );
}

/// A busy port stops `up` with a hint, and `--port-offset` moves every port past it.
#[test]
fn a_busy_port_gets_a_hint_and_port_offset_moves_every_port() {
    let holder = std::net::TcpListener::bind("127.0.0.1:27587").expect("port 27587 is free");
    let state = tempfile::tempdir().unwrap();
    let busy = Command::new(env!("CARGO_BIN_EXE_posthorn"))
        .args([
            "up",
            "-f",
            "examples/mailserver.yaml",
            "--port-offset",
            "22000",
        ])
        .arg("--state-dir")
        .arg(state.path())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!busy.status.success());
    let stderr = String::from_utf8_lossy(&busy.stderr);
    assert!(
        stderr.contains("Error: a port is in use") && stderr.contains("--port-offset"),
        "{stderr}"
    );
    assert!(stderr.contains("127.0.0.1:27587"), "{stderr}");
    drop(holder);

    let run = up(state.path(), &["--port-offset", "22000"], "mail for");
    assert_eq!(
        line_starting(&run.lines, "listening "),
        "smtp=127.0.0.1:24525 submission=127.0.0.1:27587 submissions=127.0.0.1:27465 metrics=127.0.0.1:31090"
    );
    let words = shell_words(line_starting(&run.lines, "try: "));
    assert!(
        words.windows(2).any(|w| w == ["--port", "27587"]),
        "{words:?}"
    );

    let too_far = Command::new(env!("CARGO_BIN_EXE_posthorn"))
        .args([
            "up",
            "-f",
            "examples/mailserver.yaml",
            "--port-offset",
            "60000",
        ])
        .arg("--state-dir")
        .arg(tempfile::tempdir().unwrap().path())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&too_far.stderr);
    assert!(
        stderr.contains("Error: --port-offset 60000 takes port 9090 past 65535\n"),
        "{stderr}"
    );
}

//! DKIM signatures made by Posthorn's signer (`posthorn dkim sign`, the code the queue
//! runner signs with) verify with an independent verifier, Python's dkimpy (Debian's
//! python3-dkim), which fetches the public key from a local dnsmasq serving the TXT
//! record `posthorn dkim keygen` printed; altered messages fail. Keys made by openssl
//! are read too. Needs dnsmasq, python3-dkim and openssl (e2e/setup.sh installs
//! them); a missing tool fails the test.

mod common;

use std::io::Write;
use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::peers;

const POSTHORN: &str = env!("CARGO_BIN_EXE_posthorn");
const RECORD_NAME: &str = "posthorn._domainkey.example.com";

const MESSAGE: &str = "From: Alice <alice@example.com>\r\n\
To: Bob <bob@example.net>\r\n\
Cc: carol@example.org\r\n\
Subject: Quarterly numbers\r\n\
Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n\
Message-ID: <20240101100000.1@example.com>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: 8bit\r\n\
\r\n\
Hello Bob,\r\n\
\r\n\
the numbers are attached. Gr\u{fc}\u{df}e\r\n\
.leading dot\r\n";

struct Dnsmasq {
    child: Child,
    port: u16,
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dnsmasq_binary() -> PathBuf {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
    {
        let candidate = Path::new(dir).join("dnsmasq");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("dnsmasq is needed (apt-get install dnsmasq-base)");
}

/// A dnsmasq on a free loopback port answering only `name TXT value`. dnsmasq splits a
/// value over 255 bytes into several character-strings, as a zone file would.
fn serve_txt(name: &str, value: &str) -> Dnsmasq {
    serve_txts(&[(name, value)])
}

/// The same for several records.
fn serve_txts(records: &[(&str, &str)]) -> Dnsmasq {
    let name = records[0].0;
    for _ in 0..5 {
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(dnsmasq_binary())
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--pid-file=",
            ])
            .arg(format!("--port={port}"))
            .args(
                records
                    .iter()
                    .map(|(name, value)| format!("--txt-record={name},{value}")),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting dnsmasq");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                break; // the port was taken meanwhile: try another
            }
            if answers(port, name) {
                return Dnsmasq { child, port };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("dnsmasq did not start");
}

/// Sends a TXT query and says whether any answer came back.
fn answers(port: u16, name: &str) -> bool {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 16, 0, 1]);
    let mut buf = [0u8; 1500];
    socket.send_to(&query, ("127.0.0.1", port)).is_ok()
        && socket
            .recv(&mut buf)
            .is_ok_and(|n| n > 12 && buf[..2] == [0x12, 0x34])
}

fn dkimpy_verify(dns: &Dnsmasq, message: &[u8]) -> String {
    peers::dkimpy_verify(dns.port, RECORD_NAME, message)
}

fn run(command: &mut Command, stdin: &[u8]) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn sign(key: &Path, message: &[u8]) -> Vec<u8> {
    run(
        Command::new(POSTHORN)
            .args(["dkim", "sign", "--key"])
            .arg(key),
        message,
    )
    .stdout
}

/// `posthorn dkim keygen` into a file: the key file is owner-only and the printed zone
/// line is `<name> IN TXT ( "..." "..." )`. Returns the record's name and value.
fn keygen(dir: &Path, algorithm: &str) -> (PathBuf, String, String) {
    let key = dir.join(format!("{algorithm}.pem"));
    let out = run(
        Command::new(POSTHORN)
            .args([
                "dkim",
                "keygen",
                "--domain",
                "example.com",
                "--algorithm",
                algorithm,
                "--out",
            ])
            .arg(&key),
        b"",
    );
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "private key must be owner-only");
    let (name, value) = peers::dkim_zone_record(&String::from_utf8(out.stdout).unwrap());
    (key, name, value)
}

/// Signs, verifies, and checks that changes after signing are caught.
fn check_signatures(key: &Path, dns: &Dnsmasq) {
    let signed = sign(key, MESSAGE.as_bytes());
    let text = String::from_utf8(signed.clone()).unwrap();
    assert!(text.starts_with("DKIM-Signature: v=1; a="), "{text}");
    assert!(text.ends_with(MESSAGE), "the message itself is unchanged");
    assert_eq!(dkimpy_verify(dns, &signed), "pass", "{text}");

    let tampered = [
        text.replace("the numbers are attached", "the numbers are NOT attached"),
        text.replace("Subject: Quarterly numbers", "Subject: Quarterly Numbers"),
        text.replace("To: Bob <bob@example.net>", "To: Eve <eve@example.net>"),
        format!("From: Mallory <mallory@example.com>\r\n{text}"),
    ];
    for message in tampered {
        assert_eq!(dkimpy_verify(dns, message.as_bytes()), "fail", "{message}");
    }
    // Relaxed/relaxed: whitespace changes a relay may make keep the signature valid.
    let rewrapped = text.replace(
        "Subject: Quarterly numbers",
        "Subject:  Quarterly   numbers",
    );
    assert_eq!(dkimpy_verify(dns, rewrapped.as_bytes()), "pass");
}

#[test]
fn rsa_signature_verifies_against_the_published_key() {
    let dir = tempfile::tempdir().unwrap();
    let (key, name, value) = keygen(dir.path(), "rsa");
    assert_eq!(name, format!("{RECORD_NAME}."));
    assert!(value.starts_with("v=DKIM1; k=rsa; p=MII"), "{value}");
    let dns = serve_txt(RECORD_NAME, &value);
    check_signatures(&key, &dns);
}

#[test]
fn ed25519_signature_verifies_against_the_published_key() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _, value) = keygen(dir.path(), "ed25519");
    assert!(value.starts_with("v=DKIM1; k=ed25519; p="), "{value}");
    let dns = serve_txt(RECORD_NAME, &value);
    check_signatures(&key, &dns);
}

/// dkimpy verifying each DKIM-Signature of the message on stdin (by index, top first)
/// against our dnsmasq; prints `<selector>=pass|fail` for each.
const DKIMPY_VERIFY_EACH: &str = r#"
import sys, dkim, dns.resolver
resolver = dns.resolver.Resolver(configure=False)
resolver.nameservers = ['127.0.0.1']
resolver.port = int(sys.argv[1])
def dnsfunc(name, timeout=5):
    name = name.decode() if isinstance(name, bytes) else name
    return b''.join(resolver.resolve(name, 'TXT', lifetime=timeout)[0].strings)
d = dkim.DKIM(sys.stdin.buffer.read())
count = sum(1 for k, _ in d.headers if k.lower() == b'dkim-signature')
for i in range(count):
    try:
        ok = d.verify(idx=i, dnsfunc=dnsfunc)
    except dkim.DKIMException:
        ok = False
    print('%s=%s' % (d.selector.decode(), 'pass' if ok else 'fail'))
"#;

fn dkimpy_verify_each(dns: &Dnsmasq, message: &[u8]) -> Vec<String> {
    let out = run(
        Command::new("/usr/bin/python3").args(["-c", DKIMPY_VERIFY_EACH, &dns.port.to_string()]),
        message,
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

/// RFC 8463: an RSA and an Ed25519 signature on one message, RSA on top, each under
/// its own selector; dkimpy verifies both, and a change after signing breaks both.
#[test]
fn rsa_and_ed25519_signatures_on_one_message_both_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (rsa, _, rsa_value) = keygen(dir.path(), "rsa");
    let (ed, _, ed_value) = keygen(dir.path(), "ed25519");
    let ed_name = "posthorn-ed25519._domainkey.example.com";
    let dns = serve_txts(&[(RECORD_NAME, &rsa_value), (ed_name, &ed_value)]);
    let signed = run(
        Command::new(POSTHORN)
            .args(["dkim", "sign", "--key"])
            .arg(&rsa)
            .arg("--ed25519-key")
            .arg(&ed),
        MESSAGE.as_bytes(),
    )
    .stdout;
    let text = String::from_utf8(signed.clone()).unwrap();
    assert!(
        text.starts_with("DKIM-Signature: v=1; a=rsa-sha256; s=posthorn;"),
        "{text}"
    );
    assert!(text.ends_with(MESSAGE), "{text}");
    assert_eq!(
        dkimpy_verify_each(&dns, &signed),
        ["posthorn=pass", "posthorn-ed25519=pass"],
        "{text}"
    );
    let tampered = text.replace("the numbers are attached", "the numbers are NOT attached");
    assert_eq!(
        dkimpy_verify_each(&dns, tampered.as_bytes()),
        ["posthorn=fail", "posthorn-ed25519=fail"]
    );
}

#[test]
fn a_key_that_is_not_the_published_one_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, published) = keygen(dir.path(), "rsa");
    let other = dir.path().join("other.pem");
    run(
        Command::new(POSTHORN)
            .args(["dkim", "keygen", "--out"])
            .arg(&other),
        b"",
    );
    let dns = serve_txt(RECORD_NAME, &published);
    let signed = sign(&other, MESSAGE.as_bytes());
    assert_eq!(dkimpy_verify(&dns, &signed), "fail");
}

/// Keys made by openssl (PKCS#1 RSA as older tools write it; PKCS#8 v1 Ed25519), with
/// the record built from openssl's own public key output.
#[test]
fn openssl_keys_sign_verifiably() {
    let dir = tempfile::tempdir().unwrap();
    let openssl = |args: &[&str]| run(Command::new("openssl").args(args), b"").stdout;
    let base64 = |der: &[u8]| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(der)
    };

    let rsa = dir.path().join("rsa.pem");
    let rsa_path = rsa.to_str().unwrap();
    openssl(&["genrsa", "-traditional", "-out", rsa_path, "2048"]);
    assert!(
        std::fs::read_to_string(&rsa)
            .unwrap()
            .starts_with("-----BEGIN RSA PRIVATE KEY-----")
    );
    let spki = openssl(&["pkey", "-in", rsa_path, "-pubout", "-outform", "DER"]);
    let dns = serve_txt(RECORD_NAME, &format!("v=DKIM1; k=rsa; p={}", base64(&spki)));
    check_signatures(&rsa, &dns);
    drop(dns);

    let ed = dir.path().join("ed25519.pem");
    let ed_path = ed.to_str().unwrap();
    openssl(&["genpkey", "-algorithm", "ed25519", "-out", ed_path]);
    let spki = openssl(&["pkey", "-in", ed_path, "-pubout", "-outform", "DER"]);
    let raw = &spki[spki.len() - 32..];
    let dns = serve_txt(
        RECORD_NAME,
        &format!("v=DKIM1; k=ed25519; p={}", base64(raw)),
    );
    check_signatures(&ed, &dns);
}

#[test]
fn keygen_prints_the_key_without_out() {
    let out = run(
        Command::new(POSTHORN).args([
            "dkim",
            "keygen",
            "--algorithm",
            "ed25519",
            "--selector",
            "s2",
        ]),
        b"",
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{text}");
    assert!(
        text.contains("\ns2._domainkey IN TXT ( \"v=DKIM1; k=ed25519; p="),
        "{text}"
    );
    let status = Command::new(POSTHORN)
        .args(["dkim", "keygen", "--bits", "1024"])
        .output()
        .unwrap()
        .status;
    assert!(!status.success(), "RSA below 2048 bits is refused");
}

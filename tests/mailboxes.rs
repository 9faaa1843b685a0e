//! The managed Dovecot with real software: Debian's Dovecot (dovecot-imapd,
//! dovecot-lmtpd) runs the config the operator renders for
//! `examples/mailserver-mailboxes.yaml`, with the mail server's own users file and
//! certificate as its two Secrets. swaks submits to `posthorn serve`, which delivers
//! over LMTP to that Dovecot, and Python's imaplib reads the message with the same
//! password.
//!
//! The Dovecot pod is run as the pod run-through in `operator.rs` runs the mail
//! server's: the StatefulSet's volumes are written into a temp root at their mount
//! paths (ConfigMap from the render, Secrets from the harness's files), emptyDirs and
//! the claim are directories there, and the container's args run. Rewritten in
//! `dovecot.conf`, and nothing else: paths under a mount get the root prefixed;
//! `listen = *` becomes 127.0.0.1 and the three pod ports free ports; the pod's user
//! (`vmail`, uid and gid 1000, from the image) becomes `nobody`/`nogroup` (65534),
//! which Dovecot runs as here, rootless as in the pod. The mail server's
//! `delivery.lmtp` names this Dovecot's port instead of the `mail-dovecot:24` Service.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::peers::{Guard, free_port, wait_for};
use common::{ALICE, BOB, BOB_PASS, Port, Server};
use serde_json::Value;

const NOBODY: u32 = 65534;

/// imaplib against the Dovecot: `read` logs in over 993 (TLS, certificate pinned to
/// the mail server's) and prints the first message's Subject and body and the INBOX
/// quota; `plain` tries LOGIN on 143 without STARTTLS (from 127.0.0.2: Dovecot counts a
/// connection from its own address as secure), then with it; `wrong` logs in over 993
/// with a wrong password.
const IMAP_CLIENT: &str = r#"
import email, imaplib, socket, ssl, sys
def text(e):
    arg = e.args[0]
    return arg.decode() if isinstance(arg, bytes) else str(arg)
mode, port, user, password, cafile = sys.argv[1:6]
ctx = ssl.create_default_context(cafile=cafile)
ctx.check_hostname = False  # the certificate names mail.example.com, we dial 127.0.0.1
class FromOtherAddress(imaplib.IMAP4):
    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout,
                                        source_address=('127.0.0.2', 0))
if mode == 'read':
    m = imaplib.IMAP4_SSL('127.0.0.1', int(port), ssl_context=ctx)
    m.login(user, password)
    m.select('INBOX')
    typ, data = m.fetch('1', '(RFC822)')
    msg = email.message_from_bytes(data[0][1])
    print('subject:', msg['Subject'])
    print('body:', msg.get_payload().strip())
    print('quota:', m.getquotaroot('INBOX')[1][1])
elif mode == 'plain':
    m = FromOtherAddress('127.0.0.1', int(port))
    print('capabilities:', ' '.join(m.capabilities))
    try:
        m.login(user, password)
        print('plain login: accepted')
    except imaplib.IMAP4.error as e:
        print('plain login:', text(e))
    m.starttls(ssl_context=ctx)
    print('after starttls:', m.login(user, password)[0])
elif mode == 'wrong':
    m = imaplib.IMAP4_SSL('127.0.0.1', int(port), ssl_context=ctx)
    try:
        m.login(user, password)
        print('wrong password: accepted')
    except imaplib.IMAP4.error as e:
        print('wrong password:', text(e))
"#;

fn imap(mode: &str, port: u16, user: &str, password: &str, cafile: &Path) -> String {
    let out = Command::new("python3")
        .args(["-c", IMAP_CLIENT, mode, &port.to_string(), user, password])
        .arg(cafile)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "imaplib {mode}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The objects `posthorn render` prints, by kind and name.
fn render(manifest: &str) -> BTreeMap<(String, String), Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_posthorn"))
        .args(["render", "-f"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(manifest))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .split("\n---\n")
        .skip(1)
        .map(|doc| {
            let object: Value = serde_saphyr::from_str(doc).unwrap();
            let kind = object["kind"].as_str().unwrap().to_string();
            let name = object["metadata"]["name"].as_str().unwrap().to_string();
            ((kind, name), object)
        })
        .collect()
}

/// Replaces `from` (which must occur) with `to`.
fn rewrite(text: &mut String, from: &str, to: &str) {
    assert!(
        text.contains(from),
        "{from:?} not in the rendered dovecot.conf"
    );
    *text = text.replace(from, to);
}

/// Puts `root` before every path in `text` that starts at a word, `<` or `=` and lies
/// under one of `mounts`, in one pass (so a rebased path is not rebased again).
fn rebase(text: &str, mounts: &[String], root: &Path) -> String {
    let mut out = String::new();
    let mut rest = text;
    let mut previous = ' ';
    while let Some(c) = rest.chars().next() {
        let mount = mounts.iter().find(|m| {
            rest.starts_with(m.as_str())
                && rest[m.len()..].starts_with(['/', '\n', ' '])
                && [' ', '<', '='].contains(&previous)
        });
        match mount {
            Some(m) => {
                out.push_str(&format!("{}{m}", root.display()));
                rest = &rest[m.len()..];
                previous = '/';
            }
            None => {
                out.push(c);
                rest = &rest[c.len_utf8()..];
                previous = c;
            }
        }
    }
    out
}

fn chown(path: &Path) {
    std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
}

/// The rendered Dovecot pod, run here; the pod ports it listens on, by name.
struct DovecotPod {
    ports: BTreeMap<String, u16>,
    log: std::path::PathBuf,
    _process: Guard,
}

/// Runs the rendered Dovecot pod with its LMTP listener on `lmtp` (the port the mail
/// server delivers to) and the others on free ports.
fn start_dovecot(
    root: &Path,
    objects: &BTreeMap<(String, String), Value>,
    server: &Server,
    lmtp: u16,
) -> DovecotPod {
    let set = &objects[&("StatefulSet".to_string(), "mail-dovecot".to_string())];
    let spec = &set["spec"]["template"]["spec"];
    assert_eq!(spec["securityContext"]["runAsUser"], 1000);
    let container = &spec["containers"][0];
    let volumes: BTreeMap<&str, &Value> = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v))
        .collect();
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).unwrap();

    let mut mounts = Vec::new();
    for mount in container["volumeMounts"].as_array().unwrap() {
        let at = mount["mountPath"].as_str().unwrap().to_string();
        let dir = root.join(at.trim_start_matches('/'));
        fs::create_dir_all(&dir).unwrap();
        let name = mount["name"].as_str().unwrap();
        let files: Vec<(String, Vec<u8>)> = match volumes.get(name) {
            // The claim template: an empty volume, as a fresh claim is.
            None => Vec::new(),
            Some(volume) if volume.get("configMap").is_some() => {
                let cm = &objects[&(
                    "ConfigMap".to_string(),
                    volume["configMap"]["name"].as_str().unwrap().to_string(),
                )];
                cm["data"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().as_bytes().to_vec()))
                    .collect()
            }
            Some(volume) if volume.get("secret").is_some() => {
                // The mail server's own users file and certificate are the Secrets.
                let source = match volume["secret"]["secretName"].as_str().unwrap() {
                    "mail-users" => BTreeMap::from([("passwd", server.path("passwd"))]),
                    "mail-tls" => BTreeMap::from([
                        ("tls.crt", server.path("tls/tls.crt")),
                        ("tls.key", server.path("tls/tls.key")),
                    ]),
                    other => panic!("unexpected Secret {other}"),
                };
                volume["secret"]["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|item| {
                        let key = item["key"].as_str().unwrap();
                        (
                            item["path"].as_str().unwrap().to_string(),
                            fs::read(&source[key]).unwrap(),
                        )
                    })
                    .collect()
            }
            Some(volume) => {
                assert!(
                    volume.get("emptyDir").is_some(),
                    "unsupported volume {volume}"
                );
                Vec::new()
            }
        };
        for (path, bytes) in files {
            let file = dir.join(path);
            fs::write(&file, bytes).unwrap();
            // The pod's fsGroup owns Secret files; mode from the volume.
            let mode = volumes[name]["secret"]["defaultMode"]
                .as_u64()
                .unwrap_or(0o644);
            chown(&file);
            fs::set_permissions(&file, fs::Permissions::from_mode(mode as u32)).unwrap();
        }
        if mount["readOnly"] != true {
            chown(&dir);
        }
        mounts.push(at);
    }
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));

    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| rebase(a.as_str().unwrap(), &mounts, root))
        .collect();
    assert_eq!(args[..3], ["/usr/sbin/dovecot", "-F", "-c"]);
    let conf_path = Path::new(&args[3]);
    let mut conf = rebase(&fs::read_to_string(conf_path).unwrap(), &mounts, root);
    rewrite(&mut conf, "listen = *", "listen = 127.0.0.1");
    let mut ports = BTreeMap::new();
    for port in container["ports"].as_array().unwrap() {
        let name = port["name"].as_str().unwrap().to_string();
        let free = if name == "lmtp" { lmtp } else { free_port() };
        let pod_port = port["containerPort"].as_u64().unwrap();
        rewrite(
            &mut conf,
            &format!("port = {pod_port}\n"),
            &format!("port = {free}\n"),
        );
        ports.insert(name, free);
    }
    for (from, to) in [
        ("_user = vmail\n", "_user = nobody\n"),
        ("_group = vmail\n", "_group = nogroup\n"),
        ("= 1000\n", "= 65534\n"),
        ("uid=1000 gid=1000", "uid=65534 gid=65534"),
    ] {
        rewrite(&mut conf, from, to);
    }
    fs::write(conf_path, conf).unwrap();

    let log = root.join("dovecot.log");
    let child = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .expect("dovecot (e2e/setup.sh installs dovecot-imapd and dovecot-lmtpd)");
    let process = Guard(child);
    for port in ports.values() {
        wait_for("Dovecot's listeners", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", *port)).is_ok()
        });
    }
    DovecotPod {
        ports,
        log,
        _process: process,
    }
}

#[test]
fn users_read_over_imap_what_the_mail_server_delivered_to_the_managed_dovecot() {
    let objects = render("examples/mailserver-mailboxes.yaml");
    // The mail server's own config names the Dovecot Service.
    let config_map = &objects[&("ConfigMap".to_string(), "mail-config".to_string())];
    let config = config_map["data"]["config.yaml"].as_str().unwrap();
    assert!(config.contains("lmtp: mail-dovecot:24"), "{config}");

    let lmtp = free_port();
    let server = Server::builder()
        .config("delivery", format!("{{lmtp: '127.0.0.1:{lmtp}'}}"))
        .start();
    let root = tempfile::tempdir().unwrap();
    let dovecot = start_dovecot(root.path(), &objects, &server, lmtp);
    let cafile = server.path("tls/tls.crt");
    let dovecot_log = || fs::read_to_string(&dovecot.log).unwrap_or_default();

    let sent = server.swaks_auth(
        Port::Submission,
        ALICE,
        common::ALICE_PASS,
        &[
            "--from",
            ALICE,
            "--to",
            BOB,
            "--header",
            "Subject: over LMTP to Dovecot",
            "--body",
            "read me over IMAP",
        ],
    );
    assert_eq!(sent.code, 0, "{}", sent.text);
    // Posthorn's LMTP delivery lands in bob's Maildir under the claim.
    let new = root.path().join("srv/mail/example.com/bob/Maildir/new");
    wait_for(
        "the message in bob's Maildir",
        Duration::from_secs(60),
        || fs::read_dir(&new).is_ok_and(|mut d| d.next().is_some()),
    );

    let imaps = dovecot.ports["imaps"];
    let read = imap("read", imaps, BOB, BOB_PASS, &cafile);
    assert!(
        read.contains("subject: over LMTP to Dovecot\nbody: read me over IMAP\n"),
        "{read}\n{}",
        dovecot_log()
    );
    // The example's 1Gi quota, in KiB.
    assert!(read.contains("(STORAGE "), "{read}");
    assert!(read.contains(" 1048576)"), "{read}");

    // 143: no LOGIN before STARTTLS, then the same password works.
    let plain = imap("plain", dovecot.ports["imap"], BOB, BOB_PASS, &cafile);
    assert!(plain.contains("LOGINDISABLED"), "{plain}");
    assert!(
        plain.contains(
            "plain login: [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure (SSL/TLS) connections."
        ),
        "{plain}"
    );
    assert!(plain.contains("after starttls: OK"), "{plain}");

    let wrong = imap("wrong", imaps, BOB, "not-bobs-password", &cafile);
    assert!(
        wrong.contains("wrong password: [AUTHENTICATIONFAILED] Authentication failed."),
        "{wrong}"
    );
    // A bare login gets the first domain, as on the mail server.
    let bare = imap("read", imaps, "bob", BOB_PASS, &cafile);
    assert!(bare.contains("subject: over LMTP to Dovecot"), "{bare}");

    common::assert_no_panic("posthorn serve", &server.stderr());
    assert!(!dovecot_log().contains("Fatal"), "{}", dovecot_log());
}

//! Scale-down drain, server side, with two real `posthorn serve` processes sharing one
//! certificate and one handover token: the pod going away (`leaving`) learns from its
//! downward API annotations file where to drain, stops taking mail, and hands its queue
//! to the pod that stays (`staying`), which holds the messages exactly as they were:
//! envelope, DSN parameters, recipients already delivered, retry state.

mod common;

use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::mx_sink::MxSink;
use common::{ALICE, ALICE_PASS, Port, Server, eventually, marker, write_whole};

const PATIENCE: Duration = Duration::from_secs(60);

fn queue(s: &Server, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_posthorn"))
        .arg("queue")
        .args(args)
        .arg("--config")
        .arg(s.path("config.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn drain_progress(s: &Server) -> String {
    let (status, body) = s.http_get("/drain");
    assert_eq!(status, 200, "{body}");
    body
}

/// All pods of a MailServer mount one TLS Secret: `to` gets the certificate of `from`.
fn share_certificate(from: &Server, to: &Server) {
    for file in ["tls/tls.crt", "tls/tls.key"] {
        std::fs::copy(from.path(file), to.path(file)).unwrap();
    }
}

/// A server that drains to the peers `annotations` names, with the handover token in
/// `token`, delivering as `delivery` says.
fn leaving_server(delivery: &str, token: &Path, annotations: &Path) -> Server {
    Server::builder()
        .config("delivery", delivery)
        .config(
            "handover",
            format!(
                "{{tokenFile: {}, annotationsFile: {}}}",
                token.display(),
                annotations.display()
            ),
        )
        .start()
}

#[test]
fn a_draining_server_hands_its_queue_over_exactly_as_it_was() {
    let shared = tempfile::tempdir().unwrap();
    let token = shared.path().join("token");
    std::fs::write(&token, "handover-secret-1\n").unwrap();
    let annotations = shared.path().join("annotations");
    write_whole(&annotations, "app.kubernetes.io/name=\"posthorn\"\n");
    let sink = MxSink::start(usize::MAX);
    let delivery = format!("{{mxPort: {}, minBackoff: 1h, maxBackoff: 1h}}", sink.port);

    let staying = Server::builder()
        .config("delivery", &delivery)
        .config(
            "handover",
            format!("{{listen: '127.0.0.1:0', tokenFile: {}}}", token.display()),
        )
        .start();
    let leaving = leaving_server(&delivery, &token, &annotations);
    assert!(drain_progress(&leaving).contains("\"state\":\"serving\""));

    // One recipient delivered here, one deferred for an hour by its MX.
    let tag = marker("drain");
    let mut c = leaving.authenticated_client(Port::Submission, ALICE, ALICE_PASS);
    c.cmd_expect(&format!("MAIL FROM:<{ALICE}> RET=HDRS ENVID=drain-42"), 250);
    c.cmd_expect(&format!("RCPT TO:<{ALICE}>"), 250);
    c.cmd_expect(
        "RCPT TO:<bob@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Bob@example.net",
        250,
    );
    c.cmd_expect("DATA", 354);
    c.send(format!("Subject: {tag}\r\n\r\nbody\r\n.\r\n").as_bytes())
        .unwrap();
    let reply = c.reply();
    assert_eq!(reply.code, 250, "{reply:?}");
    c.cmd_expect("QUIT", 221);
    leaving.wait_for_mail("alice", &tag);
    assert!(eventually(PATIENCE, || sink.attempts() == 1));
    let list = queue(&leaving, &["list"]);
    let id = list
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("one queued message expected: {list}"))
        .to_string();
    assert!(eventually(PATIENCE, || queue(&leaving, &["show", &id])
        .contains("\"attempts\": 1")));
    let before = queue(&leaving, &["show", &id]);

    share_certificate(&staying, &leaving);
    let peer = format!("127.0.0.1:{}", staying.handover.expect("handover port"));
    write_whole(
        &annotations,
        &format!("app.kubernetes.io/name=\"posthorn\"\nposthorn.io/drain-to=\"{peer}\"\n"),
    );
    assert!(
        eventually(PATIENCE, || drain_progress(&leaving)
            .contains("\"state\":\"drained\"")),
        "{}\n{}",
        drain_progress(&leaving),
        leaving.stderr()
    );
    assert_eq!(
        drain_progress(&leaving),
        format!("{{\"state\":\"drained\",\"peers\":[\"{peer}\"],\"handedOver\":1,\"queued\":0}}")
    );
    assert_eq!(leaving.http_get("/readyz").0, 503);
    assert!(TcpStream::connect(("127.0.0.1", leaving.submission)).is_err());
    assert_eq!(queue(&leaving, &["list"]), "Mail queue is empty\n");
    assert_eq!(queue(&staying, &["show", &id]), before);

    // The staying pod delivers it when the MX accepts, to bob only.
    sink.accept_from_now();
    queue(&staying, &["flush"]);
    assert!(eventually(PATIENCE, || sink.messages().len() == 1));
    assert!(sink.messages()[0].contains(&tag));
    assert!(eventually(PATIENCE, || queue(&staying, &["list"])
        == "Mail queue is empty\n"));
    // Alice's copy went before the drain. What she gets here is the success report
    // that NOTIFY=SUCCESS asked for, with the envelope's ENVID and ORCPT.
    let mails = staying.mails("alice");
    assert_eq!(mails.len(), 1, "{mails:?}");
    let report = &mails[0].1;
    for line in [
        "Subject: Successful Mail Delivery Report",
        "Original-Envelope-Id: drain-42",
        "Final-Recipient: rfc822; bob@example.net",
        "Original-Recipient: rfc822;Bob@example.net",
        "Action: delivered",
    ] {
        assert!(report.contains(line), "{line}: {report}");
    }
    assert_eq!(sink.messages().len(), 1);
}

#[test]
fn a_handover_to_another_certificate_or_with_the_wrong_token_is_refused() {
    let shared = tempfile::tempdir().unwrap();
    let (right, wrong) = (shared.path().join("right"), shared.path().join("wrong"));
    std::fs::write(&right, "right-token\n").unwrap();
    std::fs::write(&wrong, "wrong-token\n").unwrap();
    let annotations = shared.path().join("annotations");
    let sink = MxSink::start(usize::MAX);
    let delivery = format!("{{mxPort: {}, minBackoff: 1h, maxBackoff: 1h}}", sink.port);
    let staying = Server::builder()
        .config(
            "handover",
            format!("{{listen: '127.0.0.1:0', tokenFile: {}}}", right.display()),
        )
        .start();
    let leaving = leaving_server(&delivery, &wrong, &annotations);
    let mut c = leaving.authenticated_client(Port::Submission, ALICE, ALICE_PASS);
    c.cmd_expect(&format!("MAIL FROM:<{ALICE}>"), 250);
    c.cmd_expect("RCPT TO:<bob@example.net>", 250);
    c.cmd_expect("DATA", 354);
    c.send(b"Subject: stays\r\n\r\nbody\r\n.\r\n").unwrap();
    assert_eq!(c.reply().code, 250);
    assert!(eventually(PATIENCE, || sink.attempts() == 1));

    // First with a certificate of its own: the peer is not one of ours.
    let peer = format!("127.0.0.1:{}", staying.handover.unwrap());
    write_whole(&annotations, &format!("posthorn.io/drain-to=\"{peer}\"\n"));
    assert!(eventually(PATIENCE, || drain_progress(&leaving)
        .contains("the server does not present a pinned certificate")));
    share_certificate(&staying, &leaving);
    assert!(eventually(PATIENCE, || drain_progress(&leaving).contains(
        "handover refused: Some(\\\"error not authorized\\\")"
    )));
    let progress = drain_progress(&leaving);
    assert!(progress.contains("\"state\":\"draining\""), "{progress}");
    assert!(progress.contains("\"queued\":1"), "{progress}");
    assert_eq!(queue(&staying, &["list"]), "Mail queue is empty\n");
}

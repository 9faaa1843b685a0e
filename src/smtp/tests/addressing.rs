//! Aliases, extensions, reserved mailboxes, SRS bounces and the hop count, through whole
//! sessions (the end-to-end versions with delivery are in tests/aliases.rs).

use std::time::{Duration, SystemTime};

use super::*;
use crate::mail::srs::Srs;

const ALIASES: &str = "
info@example.com     alice@example.com, bob@example.com
sales@example.com    alice@example.com
@example.org         bob@example.com
abuse@example.com    bob@example.com
";
const SECRET: &str = "srs-secret";

/// A server with the alias file above and SRS; `example.org` is local too.
async fn with_aliases() -> (Harness, tempfile::TempDir) {
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("aliases"), ALIASES).unwrap();
    std::fs::write(files.path().join("srs"), format!("{SECRET}\n")).unwrap();
    let root = files.path().to_path_buf();
    let h = Harness::with(move |c| {
        c.domains.push("example.org".into());
        c.aliases.file = Some(root.join("aliases"));
        c.srs = Some(crate::config::SrsConfig {
            secret_file: root.join("srs"),
            // Under the catch-all, which must not take forged bounces.
            domain: Some("example.org".into()),
            max_age: Duration::from_secs(21 * 86400),
        });
    })
    .await;
    (h, files)
}

/// The envelope recipients and their ORCPT of the message `rcpts` queue on port 25.
async fn queued_for(h: &mut Harness, rcpts: &[&str]) -> Vec<(String, Option<String>)> {
    let mut c = h.ehlo(ListenerKind::Smtp).await;
    c.expect("MAIL FROM:<sender@example.net>", "250 2.1.0 Ok")
        .await;
    for rcpt in rcpts {
        c.expect(&format!("RCPT TO:<{rcpt}>"), "250 2.1.5 Ok").await;
    }
    c.expect("DATA", "354 End data with <CR><LF>.<CR><LF>")
        .await;
    c.send("Subject: hi\r\n\r\nhi\r\n.\r\n").await;
    assert!(c.reply().await[0].starts_with("250 2.0.0 Ok: queued as"));
    let (_, envelope, _) = h.queued().await;
    envelope
        .recipients
        .into_iter()
        .map(|r| (r.address, r.orcpt))
        .collect()
}

fn to(address: &str, orcpt: Option<&str>) -> (String, Option<String>) {
    (address.into(), orcpt.map(|o| format!("rfc822;{o}")))
}

#[tokio::test]
async fn aliases_catch_all_extensions_and_abuse_resolve_at_queue_time() {
    let (mut h, _files) = with_aliases().await;
    let got = queued_for(
        &mut h,
        &[
            "info@example.com",
            "anyone@example.org",
            "alice+news@example.com",
            "abuse@example.com",
            "postmaster@example.com",
        ],
    )
    .await;
    assert_eq!(
        got,
        [
            to(ALICE, Some("info@example.com")),
            to(BOB, Some("info@example.com")),
            to(BOB, Some("anyone@example.org")),
            to("alice+news@example.com", None),
            to(BOB, Some("abuse@example.com")),
            to("postmaster@example.com", None),
        ]
    );
    // Without a catch-all, an unknown address keeps Postfix's reply.
    let mut c = h.ehlo(ListenerKind::Smtp).await;
    c.expect("MAIL FROM:<sender@example.net>", "250 2.1.0 Ok")
        .await;
    c.expect("RCPT TO:<nobody@example.com>", UNKNOWN_USER).await;
}

#[tokio::test]
async fn abuse_goes_to_the_postmaster_address_without_an_alias() {
    let mut h = Harness::with(|c| c.postmaster = Some("admin@example.net".into())).await;
    let got = queued_for(&mut h, &["Abuse@example.com"]).await;
    assert_eq!(got, [to("admin@example.net", Some("Abuse@example.com"))]);
}

#[tokio::test]
async fn a_login_sends_as_its_aliases_and_extensions_only() {
    let (h, _files) = with_aliases().await;
    let mut c = h.alice().await;
    for sender in [
        "info@example.com",
        "sales@example.com",
        "alice+tag@example.com",
    ] {
        c.expect(&format!("MAIL FROM:<{sender}>"), "250 2.1.0 Ok")
            .await;
        c.expect(&format!("RCPT TO:<{BOB}>"), "250 2.1.5 Ok").await;
        c.expect("RSET", "250 2.0.0 Ok").await;
    }
    // Another user's address stays refused, with or without an extension.
    for sender in ["bob@example.com", "bob+tag@example.com"] {
        c.expect(&format!("MAIL FROM:<{sender}>"), "250 2.1.0 Ok")
            .await;
        c.expect(
            &format!("RCPT TO:<{BOB}>"),
            &format!("553 5.7.1 <{sender}>: Sender address rejected: not owned by user {ALICE}"),
        )
        .await;
        c.expect("RSET", "250 2.0.0 Ok").await;
    }
}

#[tokio::test]
async fn send_as_alias_can_be_turned_off() {
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("aliases"), ALIASES).unwrap();
    let file = files.path().join("aliases");
    let h = Harness::with(move |c| {
        c.aliases.file = Some(file);
        c.aliases.send_as_alias = false;
    })
    .await;
    let mut c = h.alice().await;
    c.expect("MAIL FROM:<info@example.com>", "250 2.1.0 Ok")
        .await;
    c.expect(
        &format!("RCPT TO:<{BOB}>"),
        &format!(
            "553 5.7.1 <info@example.com>: Sender address rejected: not owned by user {ALICE}"
        ),
    )
    .await;
}

#[tokio::test]
async fn a_bounce_to_an_srs_address_goes_back_only_when_genuine() {
    let (mut h, _files) = with_aliases().await;
    let srs = Srs::new(SECRET.as_bytes(), "example.org", Duration::from_secs(86400));
    let address = srs
        .forward("sender@example.net", SystemTime::now())
        .unwrap();
    let got = queued_for(&mut h, &[&address]).await;
    assert_eq!(got, [to("sender@example.net", Some(&address))]);

    let forged = Srs::new(b"guess", "example.org", Duration::from_secs(86400))
        .forward("sender@example.net", SystemTime::now())
        .unwrap();
    let mut c = h.ehlo(ListenerKind::Smtp).await;
    c.expect("MAIL FROM:<>", "250 2.1.0 Ok").await;
    c.expect(
        &format!("RCPT TO:<{forged}>"),
        &format!(
            "550 5.1.1 <{forged}>: Recipient address rejected: User unknown in virtual mailbox table"
        ),
    )
    .await;
}

#[tokio::test]
async fn the_fiftieth_received_header_is_refused_as_a_loop() {
    let mut h = Harness::new().await;
    for (earlier, reply) in [(48, None), (49, Some("554 5.4.0 Error: too many hops"))] {
        let mut c = h.ehlo(ListenerKind::Smtp).await;
        c.expect("MAIL FROM:<sender@example.net>", "250 2.1.0 Ok")
            .await;
        c.expect(&format!("RCPT TO:<{ALICE}>"), "250 2.1.5 Ok")
            .await;
        c.expect("DATA", "354 End data with <CR><LF>.<CR><LF>")
            .await;
        let trace = "Received: from relay.example.net\r\n".repeat(earlier);
        c.send(&format!("{trace}Subject: loop\r\n\r\nhi\r\n.\r\n"))
            .await;
        let got = c.reply().await;
        match reply {
            Some(reply) => {
                assert_eq!(got, [reply]);
                assert!(h.enqueued.ids().is_empty());
            }
            None => {
                let (id, _, _) = h.queued().await;
                assert_eq!(got, [format!("250 2.0.0 Ok: queued as {id}")]);
            }
        }
    }
}

//! SMTP smuggling (SEC Consult, 2023) against the real server on port 25, without
//! authentication: a message whose body holds a non-standard end-of-data sequence followed
//! by the commands of a second mail must be queued as one message, the second mail being
//! nothing but text in its body.
//!
//! docs/behaviour.md, rows `data-end`, `bare-lf`, `stray-cr`, `binarymime`, `bdat`.

mod common;

use common::*;

/// Every arrangement of CR, LF and dot that some server took for the end of data; only
/// `<CRLF>.<CRLF>` may end it.
const SEQUENCES: &[(&str, &[u8])] = &[
    ("lf-dot-lf", b"\n.\n"),
    ("lf-dot-crlf", b"\n.\r\n"),
    ("cr-dot-cr", b"\r.\r"),
    ("cr-dot-crlf", b"\r.\r\n"),
    ("crlf-dot-cr", b"\r\n.\r"),
    ("crlf-dot-lf", b"\r\n.\n"),
    ("lf-dot-cr", b"\n.\r"),
    ("cr-dot-lf", b"\r.\n"),
    ("crlf-nul-dot-crlf", b"\r\n\x00.\r\n"),
    ("crlf-dot-cr-crlf", b"\r\n.\r\r\n"),
    ("crlf-dot-cr-cr-crlf", b"\r\n.\r\r\r\n"),
    ("crlf-dot-space-crlf", b"\r\n. \r\n"),
];

#[test]
fn non_standard_end_of_data_never_splits_a_message() {
    let s = Server::start();
    for (name, sequence) in SEQUENCES {
        let first = marker(&format!("first-{name}"));
        let smuggled = marker(&format!("smuggled-{name}"));
        let mut c = s.connect(Port::Smtp);
        c.expect_code(220);
        c.cmd_expect("EHLO client.example.org", 250);
        c.cmd_expect("MAIL FROM:<someone@example.net>", 250);
        c.cmd_expect(&format!("RCPT TO:<{BOB}>"), 250);
        c.cmd_expect("DATA", 354);
        let mut data = format!("Subject: {first}\r\n\r\nfirst mail").into_bytes();
        data.extend_from_slice(sequence);
        data.extend_from_slice(
            format!(
                "MAIL FROM:<admin@example.com>\r\n\
                 RCPT TO:<{BOB}>\r\n\
                 DATA\r\n\
                 Subject: {smuggled}\r\n\
                 \r\n\
                 smuggled mail\r\n\
                 .\r\n"
            )
            .as_bytes(),
        );
        c.send(&data).unwrap();
        // One reply for the one message; had the sequence ended the data, the smuggled
        // MAIL would be answered next instead of this NOOP.
        let r = c.reply();
        assert!(
            r.last().starts_with("250 2.0.0 Ok: queued as "),
            "{name}: {r:?}"
        );
        assert_eq!(
            c.cmd("NOOP").lines,
            ["250 2.0.0 Ok"],
            "{name}: replies after the message"
        );
        c.cmd_expect("QUIT", 221);

        let text = s.wait_for_mail("bob", &first);
        assert!(
            text.contains(&format!("Subject: {smuggled}")),
            "{name}: the smuggled commands are not in the first mail's body: {text:?}"
        );
        let with_smuggled: Vec<_> = s
            .mails("bob")
            .into_iter()
            .filter(|(_, t)| t.contains(&smuggled))
            .collect();
        assert_eq!(
            with_smuggled.len(),
            1,
            "{name}: a second message was delivered: {with_smuggled:?}"
        );
        assert!(
            !text.contains('\r'),
            "{name}: a bare CR reached the mailbox: {text:?}"
        );
    }
}

/// Commands may end in a bare LF (Postfix's `normalize`); BDAT content with bare LFs and
/// stray CRs is stored, and delivered, with CRLF line ends only.
#[test]
fn bare_lf_commands_and_bdat_content_are_normalised() {
    let s = Server::start();
    let m = marker("bdat-bare");
    let mut c = s.connect(Port::Smtp);
    c.expect_code(220);
    for command in [
        "EHLO client.example.org\n".to_string(),
        "MAIL FROM:<someone@example.net>\n".to_string(),
        format!("RCPT TO:<{BOB}>\n"),
    ] {
        c.send(command.as_bytes()).unwrap();
        let r = c.reply();
        assert_eq!(r.code, 250, "{command:?}: {r:?}");
    }
    let body = format!("Subject: {m}\n\nbare\nlf and stray\rcr\r\n.\nend");
    c.send(format!("BDAT {} LAST\r\n{body}", body.len()).as_bytes())
        .unwrap();
    let r = c.reply();
    assert!(r.last().starts_with("250 2.0.0 Ok"), "{r:?}");
    c.cmd_expect("QUIT", 221);
    let text = s.wait_for_mail("bob", &m);
    assert!(
        text.ends_with(&format!("Subject: {m}\n\nbare\nlf and stray cr\n.\nend\n")),
        "{text:?}"
    );
}

/// BINARYMIME is not offered, so no content may keep bare CRs or LFs: it is refused as
/// Postfix refuses it, while the other BODY values are accepted.
#[test]
fn binarymime_is_refused() {
    let s = Server::start();
    let mut c = s.connect(Port::Smtp);
    c.expect_code(220);
    c.cmd_expect("EHLO client.example.org", 250);
    c.send(b"MAIL FROM:<someone@example.net> BODY=BINARYMIME\r\n")
        .unwrap();
    assert_eq!(
        c.reply().last(),
        "555 5.5.4 Unsupported option: BODY=BINARYMIME"
    );
    c.cmd_expect("MAIL FROM:<someone@example.net> BODY=8BITMIME", 250);
    c.cmd_expect("QUIT", 221);
}

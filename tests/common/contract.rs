//! The behaviour contract of docs/behaviour.md as one table: each row is a request
//! sequence and the exact replies it must get, run against any Posthorn server with the
//! test users (alice and bob at example.com, info@example.com shared by both), dnsmasq
//! answering for the test domains. `tests/behaviour.rs` runs it on the harness's server
//! and `tests/operator.rs` on the pod the operator rendered, so both assert one table.

use std::net::Ipv4Addr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rustls::pki_types::CertificateDer;

use super::{
    ALICE, ALICE_PASS, BOB, BOB_PASS, CLIENT, Client, HOSTNAME, Port, Reply, Server, Transcript,
    marker, swaks, tls_flag,
};

const GREETING: &str = "220 mail.example.com ESMTP";
const MUST_STARTTLS: &str = "530 5.7.0 Must issue a STARTTLS command first";
const AUTH_FAILED: &str = "535 5.7.8 Error: authentication failed: authentication failure";
const AUTH_OK: &str = "235 2.7.0 Authentication successful";
const QUEUED: &str = "250 2.0.0 Ok: queued as ";
/// The wrong password the table tries; it must never appear in a log.
pub const WRONG_PASS: &str = "wrong-Pass-77";

/// The server under test: its ports and what its config says where the table depends on it.
pub struct Target {
    pub smtp: u16,
    pub submission: u16,
    pub submissions: u16,
    /// The certificate it serves (pinned by the raw client).
    pub cert: CertificateDer<'static>,
    /// `limits.maxMessageSize`, advertised as SIZE.
    pub max_message_size: u64,
    /// `auth.failureDelay`: the wait before a first failed login is answered.
    pub failure_delay: Duration,
    /// `spool.maildirRoot`.
    pub maildir_root: PathBuf,
}

impl Target {
    /// A server from `Server::start()`: the limits and delays `Server::builder()` sets.
    pub fn of(s: &Server) -> Target {
        Target {
            smtp: s.smtp,
            submission: s.submission,
            submissions: s.submissions,
            cert: s.cert_der(),
            max_message_size: 1_048_576,
            failure_delay: Duration::from_millis(200),
            maildir_root: s.path("mail"),
        }
    }

    fn port(&self, port: Port) -> u16 {
        match port {
            Port::Smtp => self.smtp,
            Port::Submission => self.submission,
            Port::Submissions => self.submissions,
        }
    }
}

/// One row of the table: a request sequence on one listener and what must come back.
pub struct Row {
    /// The row's id in docs/behaviour.md.
    pub id: &'static str,
    pub port: Port,
    /// The client's source address. Rows with a failing login each use their own, so
    /// that the throttle's growing delay (row `auth-throttle`) does not add up.
    pub from: Ipv4Addr,
    pub talk: Talk,
    /// A message the row sends that must then arrive in a Maildir.
    pub delivered: Option<Delivery>,
}

pub enum Talk {
    /// swaks with these arguments (after `--server`, `--port`, `--timeout`), and what
    /// its transcript must show.
    Swaks(Vec<String>, Vec<Check>),
    /// The raw client: connect (TLS from the first byte on 465), read a 220 greeting,
    /// then the steps in order.
    Raw(Vec<Step>),
}

#[derive(Debug)]
pub enum Check {
    /// The first line the server sent is exactly this.
    First(String),
    /// The last line of the reply to the last command starting with `.0` is exactly `.1`.
    ReplyTo(&'static str, String),
    /// The reply to the last command starting with `.0` ends in a line with code `.1`.
    CodeTo(&'static str, &'static str),
    /// Some line the server sent is exactly this.
    Has(String),
    /// The last EHLO reply offers this keyword (exactly, parameters included).
    Offers(String),
    /// No keyword of the last EHLO reply starts with this.
    NotOffers(&'static str),
    /// The client sent this text (swaks did what the row means).
    Sent(&'static str),
    /// `250 2.0.0 Ok: queued as <id>` came.
    Queued,
}

pub enum Step {
    /// Sends a line (CRLF added) and checks the reply.
    Say(String, Want),
    /// Sends bytes as they are and checks the next reply.
    Send(Vec<u8>, Want),
    /// As `Say`, and the reply took at least 90 % of the target's failure delay.
    Delayed(String, Want),
    /// STARTTLS, its 220 and the handshake.
    StartTls,
}

#[derive(Debug)]
pub enum Want {
    Code(u16),
    /// The whole reply is this one line.
    Line(String),
    /// The last line starts with this.
    Prefix(String),
    /// Any of these codes.
    AnyCode(Vec<u16>),
}

pub struct Delivery {
    /// The local part at example.com whose Maildir gets it.
    pub to: &'static str,
    /// Text unique to this message.
    pub marker: String,
    /// Each must occur in the header block; a leading `\n` means "starts a line".
    pub headers: Vec<String>,
    /// Each must occur in the message with its line ends as LF.
    pub text: Vec<String>,
}

/// Every row of the table. Values the config decides (SIZE) come from `t`.
pub fn rows(t: &Target) -> Vec<Row> {
    let mut rows = Vec::new();

    for port in [Port::Smtp, Port::Submission, Port::Submissions] {
        let mut args = if port == Port::Submissions {
            vec!["-tlsc"]
        } else {
            vec![]
        };
        args.extend(["--quit-after", "CONNECT"]);
        rows.push(swaks_row(
            "greeting",
            port,
            &args,
            vec![Check::First(GREETING.into())],
        ));
    }
    for (id, port) in [
        ("ehlo-587-plain", Port::Submission),
        ("ehlo-25", Port::Smtp),
    ] {
        rows.push(swaks_row(
            id,
            port,
            &["--quit-after", "EHLO"],
            vec![Check::Offers("STARTTLS".into()), Check::NotOffers("AUTH")],
        ));
    }
    let mut extensions: Vec<Check> = [
        "AUTH PLAIN LOGIN",
        "PIPELINING",
        &format!("SIZE {}", t.max_message_size),
        "ENHANCEDSTATUSCODES",
        "8BITMIME",
        "SMTPUTF8",
        "CHUNKING",
        "DSN",
    ]
    .iter()
    .map(|k| Check::Offers(k.to_string()))
    .collect();
    extensions.push(Check::NotOffers("STARTTLS"));
    rows.push(swaks_row(
        "ehlo-587-tls",
        Port::Submission,
        &["-tls", "--quit-after", "HELO"],
        extensions,
    ));
    rows.push(swaks_row(
        "ehlo-465",
        Port::Submissions,
        &["-tlsc", "--quit-after", "EHLO"],
        vec![Check::Offers("AUTH PLAIN LOGIN".into())],
    ));

    rows.push(swaks_row(
        "starttls-first",
        Port::Submission,
        &["--from", ALICE, "--to", BOB, "--quit-after", "MAIL"],
        vec![Check::ReplyTo("MAIL FROM", MUST_STARTTLS.into())],
    ));
    // swaks will not send an AUTH that is not offered, so the raw client does.
    rows.push(raw_row(
        "starttls-first",
        Port::Submission,
        vec![
            say("EHLO client.example.org", Want::Code(250)),
            say(&auth_plain(ALICE, ALICE_PASS), line(MUST_STARTTLS)),
            say("AUTH LOGIN", line(MUST_STARTTLS)),
            say(&format!("RCPT TO:<{BOB}>"), line(MUST_STARTTLS)),
            say("NOOP", Want::Code(250)),
            say("RSET", Want::Code(250)),
            say("QUIT", Want::Code(221)),
        ],
    ));

    // One answer whether the password is wrong or the user unknown, by either mechanism.
    let mut source = 1;
    let mut next_source = || {
        source += 1;
        Ipv4Addr::new(127, 0, 0, source)
    };
    for mech in ["PLAIN", "LOGIN"] {
        for user in [ALICE, "nobody@example.com"] {
            let mut row = swaks_row(
                "auth-failed",
                Port::Submission,
                &[
                    "-tls",
                    "--auth",
                    mech,
                    "--auth-user",
                    user,
                    "--auth-password",
                    WRONG_PASS,
                    "--quit-after",
                    "AUTH",
                ],
                vec![Check::Has(AUTH_FAILED.into())],
            );
            row.from = next_source();
            rows.push(row);
        }
    }
    let mut row = raw_row(
        "auth-failed",
        Port::Submission,
        vec![
            say("EHLO client.example.org", Want::Code(250)),
            Step::StartTls,
            say("EHLO client.example.org", Want::Code(250)),
            Step::Delayed(auth_plain(ALICE, "not-the-password"), line(AUTH_FAILED)),
            // The session goes on: the right password then works.
            say(&auth_plain(ALICE, ALICE_PASS), line(AUTH_OK)),
        ],
    );
    row.from = next_source();
    rows.push(row);

    let m = marker("own-sender");
    rows.push(delivering(
        swaks_row(
            "own-sender",
            Port::Submission,
            &authed(
                ALICE,
                ALICE_PASS,
                &["--from", ALICE, "--to", BOB, "--header", &subject(&m)],
            ),
            vec![Check::Queued],
        ),
        Delivery {
            to: "bob",
            marker: m,
            headers: vec!["\nReceived: ".into(), HOSTNAME.into()],
            text: vec![],
        },
    ));
    let m = marker("auth-login");
    rows.push(delivering(
        swaks_row(
            "auth-ok",
            Port::Submission,
            &[
                "-tls",
                "--auth",
                "LOGIN",
                "--auth-user",
                BOB,
                "--auth-password",
                BOB_PASS,
                "--from",
                BOB,
                "--to",
                ALICE,
                "--header",
                &subject(&m),
            ],
            vec![Check::Has(AUTH_OK.into()), Check::Queued],
        ),
        Delivery::plain("alice", m),
    ));
    let m = marker("implicit-tls");
    rows.push(delivering(
        swaks_row(
            "own-sender",
            Port::Submissions,
            &authed_on(
                Port::Submissions,
                ALICE,
                ALICE_PASS,
                &["--from", ALICE, "--to", BOB, "--header", &subject(&m)],
            ),
            vec![Check::Has(AUTH_OK.into()), Check::Queued],
        ),
        Delivery::plain("bob", m),
    ));
    for (user, pass) in [(ALICE, ALICE_PASS), (BOB, BOB_PASS)] {
        rows.push(swaks_row(
            "shared-sender",
            Port::Submission,
            &authed(user, pass, &["--from", "info@example.com", "--to", BOB]),
            vec![Check::Queued],
        ));
    }
    rows.push(swaks_row(
        "null-sender",
        Port::Submission,
        &authed(ALICE, ALICE_PASS, &["--from", "<>", "--to", BOB]),
        vec![Check::Sent("MAIL FROM:<>"), Check::Queued],
    ));
    // bob's own address, an address no one has, one in no map entry, one shared with
    // others but not alice (the harness's sales@, bob's only).
    for from in [
        BOB,
        "carol@example.com",
        "stranger@example.org",
        "sales@example.com",
    ] {
        rows.push(swaks_row(
            "sender-not-owned",
            Port::Submission,
            &authed(
                ALICE,
                ALICE_PASS,
                &["--from", from, "--to", BOB, "--quit-after", "RCPT"],
            ),
            vec![
                // MAIL is accepted; the check is made at RCPT (smtpd_delay_reject).
                Check::CodeTo("MAIL FROM", "250"),
                Check::ReplyTo(
                    "RCPT TO",
                    format!(
                        "553 5.7.1 <{from}>: Sender address rejected: not owned by user {ALICE}"
                    ),
                ),
            ],
        ));
    }

    for rcpt in ["bob", "bob@localhost"] {
        rows.push(rcpt_row(
            "non-fqdn",
            rcpt,
            format!("504 5.5.2 <{rcpt}>: Recipient address rejected: need fully-qualified address"),
        ));
    }
    for rcpt in ["someone@nonexistent.invalid", "someone@no-such-domain.test"] {
        rows.push(rcpt_row(
            "domain-not-found",
            rcpt,
            format!("450 4.1.2 <{rcpt}>: Recipient address rejected: Domain not found"),
        ));
    }
    // example.net has an MX; aonly.example.org only an A record (MX, then A/AAAA).
    for rcpt in ["friend@example.net", "friend@aonly.example.org"] {
        rows.push(swaks_row(
            "remote-domain",
            Port::Submission,
            &authed(ALICE, ALICE_PASS, &["--from", ALICE, "--to", rcpt]),
            vec![Check::Queued],
        ));
    }
    rows.push(swaks_row(
        "no-auth",
        Port::Submission,
        &["-tls", "--from", ALICE, "--to", BOB, "--quit-after", "RCPT"],
        vec![Check::ReplyTo(
            "RCPT TO",
            format!("554 5.7.1 <{CLIENT}>: Client host rejected: Access denied"),
        )],
    ));

    let inbound = |to: &str| {
        [
            "--from",
            "someone@example.net",
            "--to",
            to,
            "--quit-after",
            "RCPT",
        ]
        .map(String::from)
    };
    rows.push(swaks_row(
        "relay-denied",
        Port::Smtp,
        &inbound("other@example.net"),
        vec![Check::ReplyTo(
            "RCPT TO",
            "454 4.7.1 <other@example.net>: Relay access denied".into(),
        )],
    ));
    rows.push(swaks_row(
        "unknown-user",
        Port::Smtp,
        &inbound("nobody@example.com"),
        vec![Check::ReplyTo(
            "RCPT TO",
            "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown in virtual mailbox table".into(),
        )],
    ));
    // The user exists once the +extension is taken off.
    rows.push(swaks_row(
        "unknown-user",
        Port::Smtp,
        &inbound("bob+lists@example.com"),
        vec![Check::ReplyTo("RCPT TO", "250 2.1.5 Ok".into())],
    ));
    for tls in [false, true] {
        let m = marker(if tls {
            "inbound-starttls"
        } else {
            "inbound-plain"
        });
        let mut args = vec!["--from", "someone@example.net", "--to", BOB];
        let subject = subject(&m);
        args.extend(["--header", &subject]);
        if tls {
            args.push("-tls");
        }
        let mut delivery = Delivery::plain("bob", m);
        delivery.text.push("Received: ".into());
        rows.push(delivering(
            swaks_row("inbound", Port::Smtp, &args, vec![Check::Queued]),
            delivery,
        ));
    }

    let mut steps = login(Port::Submission);
    steps.extend([
        say(
            &format!("MAIL FROM:<{ALICE}> SIZE={}", t.max_message_size + 1),
            line("552 5.3.4 Message size exceeds fixed limit"),
        ),
        // Within the limit it is fine.
        say(&format!("MAIL FROM:<{ALICE}> SIZE=1000"), Want::Code(250)),
    ]);
    rows.push(raw_row("size-param", Port::Submission, steps));

    rows.push(raw_row(
        "bad-commands",
        Port::Smtp,
        vec![
            say("EHLO client.example.org", Want::Code(250)),
            // Postfix answers an unknown verb with 502 (not 500).
            say(
                "FROBNICATE now",
                line("502 5.5.2 Error: command not recognized"),
            ),
            say("MAIL FROM:not-an-address", Want::Code(501)),
            say(
                "MAIL FROM:<someone@example.net> BOGUS=1",
                Want::AnyCode(vec![501, 555]),
            ),
            say("RCPT TO:<bob@example.com>", Want::Code(503)),
            say("HELO", Want::Code(501)),
            say("NOOP", Want::Code(250)),
            say("MAIL FROM:<someone@example.net>", Want::Code(250)),
            say(&format!("RCPT TO:<{BOB}>"), Want::Code(250)),
            say("QUIT", Want::Code(221)),
        ],
    ));

    let ehlo = || say("EHLO client.example.org", Want::Code(250));
    rows.push(raw_row(
        "vrfy",
        Port::Smtp,
        vec![
            ehlo(),
            say(
                &format!("VRFY {BOB}"),
                line("502 5.5.1 VRFY command is disabled"),
            ),
        ],
    ));
    rows.push(raw_row(
        "quit",
        Port::Smtp,
        vec![ehlo(), say("QUIT", line("221 2.0.0 Bye"))],
    ));
    rows.push(raw_row(
        "line-too-long",
        Port::Smtp,
        vec![
            ehlo(),
            say(
                &format!("NOOP {}", "a".repeat(5000)),
                line("500 5.5.2 Error: line too long"),
            ),
            say("NOOP", Want::Code(250)),
        ],
    ));
    rows.push(raw_row(
        "starttls-twice",
        Port::Submissions,
        vec![
            ehlo(),
            say("STARTTLS", line("554 5.5.1 Error: TLS already active")),
            say("NOOP", Want::Code(250)),
        ],
    ));
    rows.push(raw_row(
        "auth-25",
        Port::Smtp,
        vec![
            ehlo(),
            say(
                &auth_plain(ALICE, ALICE_PASS),
                line("503 5.5.1 Error: authentication not enabled"),
            ),
        ],
    ));
    rows.push(raw_row(
        "rcpt-null",
        Port::Smtp,
        vec![
            ehlo(),
            say("MAIL FROM:<someone@example.net>", Want::Code(250)),
            say("RCPT TO:<>", line("501 5.1.3 Bad recipient address syntax")),
        ],
    ));
    rows.push(raw_row(
        "data-no-rcpt",
        Port::Smtp,
        vec![
            ehlo(),
            say("MAIL FROM:<someone@example.net>", Want::Code(250)),
            say("RCPT TO:<nobody@example.com>", Want::Code(550)),
            say("DATA", line("554 5.5.1 Error: no valid recipients")),
        ],
    ));

    let m = marker("dsn");
    let mut steps = login(Port::Submission);
    steps.extend([
        say(
            &format!("MAIL FROM:<{ALICE}> RET=HDRS ENVID=x"),
            Want::Code(250),
        ),
        say(
            &format!("RCPT TO:<{BOB}> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;{BOB}"),
            Want::Code(250),
        ),
        say("DATA", Want::Code(354)),
        Step::Send(
            format!("Subject: {m}\r\n\r\nDSN test\r\n.\r\n").into_bytes(),
            Want::Prefix(QUEUED.into()),
        ),
    ]);
    rows.push(delivering(
        raw_row("dsn", Port::Submission, steps),
        Delivery::plain("bob", m),
    ));

    let m = marker("bdat");
    let first = format!("Subject: {m}\r\nFrom: {ALICE}\r\n\r\nfirst chunk\r\n");
    // A line starting with a dot is not special in BDAT.
    let second = ".second chunk\r\n";
    let mut steps = login(Port::Submission);
    steps.extend([
        say(&format!("MAIL FROM:<{ALICE}>"), Want::Code(250)),
        say(&format!("RCPT TO:<{BOB}>"), Want::Code(250)),
        Step::Send(
            format!("BDAT {}\r\n{first}", first.len()).into_bytes(),
            Want::Code(250),
        ),
        Step::Send(
            format!("BDAT {} LAST\r\n{second}", second.len()).into_bytes(),
            Want::Prefix(QUEUED.into()),
        ),
    ]);
    let mut delivery = Delivery::plain("bob", m);
    // The chunk boundary and the leading dot survive.
    delivery.text.push("first chunk\n.second chunk\n".into());
    rows.push(delivering(
        raw_row("bdat", Port::Submission, steps),
        delivery,
    ));

    rows
}

/// Runs every row against `t` and panics listing every row that failed.
pub fn check(t: &Target, rows: &[Row]) {
    let mut failures = Vec::new();
    for row in rows {
        let outcome = catch_unwind(AssertUnwindSafe(|| run(t, row)))
            .unwrap_or_else(|panic| Err(panic_text(&panic)));
        if let Err(why) = outcome {
            failures.push(format!(
                "docs/behaviour.md row {} on {:?}: {why}",
                row.id, row.port
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n\n")
    );
}

fn run(t: &Target, row: &Row) -> Result<(), String> {
    match &row.talk {
        Talk::Swaks(args, checks) => {
            let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
            let from = row.from.to_string();
            if row.from != Ipv4Addr::LOCALHOST {
                all.extend(["--local-interface", &from]);
            }
            let transcript = swaks(t.port(row.port), &all);
            for check in checks {
                check_transcript(&transcript, check)
                    .map_err(|e| format!("{e}; transcript:\n{}", transcript.text))?;
            }
        }
        Talk::Raw(steps) => {
            let port = t.port(row.port);
            let mut c = match (row.port, row.from) {
                (Port::Submissions, _) => Client::connect_tls(port, vec![t.cert.clone()]),
                (_, Ipv4Addr::LOCALHOST) => Client::connect(port),
                (_, from) => Client::connect_from(port, from),
            };
            c.expect_code(220);
            for step in steps {
                run_step(t, &mut c, step)?;
            }
        }
    }
    match &row.delivered {
        Some(d) => check_delivery(t, d),
        None => Ok(()),
    }
}

fn check_transcript(t: &Transcript, check: &Check) -> Result<(), String> {
    let ok = match check {
        Check::First(line) => t.replies().first() == Some(&line.as_str()),
        Check::ReplyTo(command, line) => t.reply_to(command).last() == Some(&line.as_str()),
        Check::CodeTo(command, code) => t
            .reply_to(command)
            .last()
            .is_some_and(|l| l.starts_with(code)),
        Check::Has(line) => t.has_reply(line),
        Check::Offers(keyword) => t.ehlo_keywords().iter().any(|k| k == keyword),
        Check::NotOffers(prefix) => !t.ehlo_keywords().iter().any(|k| k.starts_with(prefix)),
        Check::Sent(text) => t.text.contains(text),
        Check::Queued => t.queued_id().is_some(),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("expected {check:?}"))
    }
}

fn run_step(t: &Target, c: &mut Client, step: &Step) -> Result<(), String> {
    let (sent, reply, want) = match step {
        Step::Say(line, want) => (line.clone(), c.cmd(line), want),
        Step::Send(bytes, want) => {
            c.send(bytes).map_err(|e| format!("sending: {e}"))?;
            (String::from_utf8_lossy(bytes).into_owned(), c.reply(), want)
        }
        Step::Delayed(line, want) => {
            let started = Instant::now();
            let reply = c.cmd(line);
            let took = started.elapsed();
            if took < t.failure_delay * 9 / 10 {
                return Err(format!(
                    "{line:?} answered {:?} after {took:?}; the failure delay is {:?}",
                    reply.lines, t.failure_delay
                ));
            }
            (line.clone(), reply, want)
        }
        Step::StartTls => {
            c.starttls(vec![t.cert.clone()]);
            return Ok(());
        }
    };
    if want.matches(&reply) {
        Ok(())
    } else {
        Err(format!(
            "{sent:?} answered {:?}, expected {want:?}",
            reply.lines
        ))
    }
}

impl Want {
    fn matches(&self, reply: &Reply) -> bool {
        match self {
            Want::Code(code) => reply.code == *code,
            Want::Line(line) => reply.lines == [line.as_str()],
            Want::Prefix(prefix) => reply.last().starts_with(prefix.as_str()),
            Want::AnyCode(codes) => codes.contains(&reply.code),
        }
    }
}

fn check_delivery(t: &Target, d: &Delivery) -> Result<(), String> {
    let inbox = t
        .maildir_root
        .join(format!("example.com/{}/Maildir/new", d.to));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mail = loop {
        let found = std::fs::read_dir(&inbox).ok().and_then(|entries| {
            entries
                .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
                .map(|bytes| String::from_utf8_lossy(&bytes).replace("\r\n", "\n"))
                .find(|text| text.contains(&d.marker))
        });
        match found {
            Some(mail) => break mail,
            None if Instant::now() > deadline => {
                return Err(format!(
                    "no mail containing {:?} in {} within 10 s",
                    d.marker,
                    inbox.display()
                ));
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let headers = format!("\n{}", mail.split("\n\n").next().unwrap_or(&mail));
    for want in &d.headers {
        if !headers.contains(want.as_str()) {
            return Err(format!("header block lacks {want:?}:\n{mail}"));
        }
    }
    for want in &d.text {
        if !mail.contains(want.as_str()) {
            return Err(format!("delivered mail lacks {want:?}:\n{mail}"));
        }
    }
    Ok(())
}

impl Delivery {
    fn plain(to: &'static str, marker: String) -> Delivery {
        Delivery {
            to,
            marker,
            headers: vec![],
            text: vec![],
        }
    }
}

fn swaks_row(id: &'static str, port: Port, args: &[impl AsRef<str>], checks: Vec<Check>) -> Row {
    Row {
        id,
        port,
        from: Ipv4Addr::LOCALHOST,
        talk: Talk::Swaks(
            args.iter().map(|a| a.as_ref().to_string()).collect(),
            checks,
        ),
        delivered: None,
    }
}

fn raw_row(id: &'static str, port: Port, steps: Vec<Step>) -> Row {
    Row {
        id,
        port,
        from: Ipv4Addr::LOCALHOST,
        talk: Talk::Raw(steps),
        delivered: None,
    }
}

fn delivering(mut row: Row, delivery: Delivery) -> Row {
    row.delivered = Some(delivery);
    row
}

/// Authenticated on 587, RCPT to `rcpt`, and the exact reply to it.
fn rcpt_row(id: &'static str, rcpt: &str, reply: String) -> Row {
    swaks_row(
        id,
        Port::Submission,
        &authed(
            ALICE,
            ALICE_PASS,
            &["--from", ALICE, "--to", rcpt, "--quit-after", "RCPT"],
        ),
        vec![Check::ReplyTo("RCPT TO", reply)],
    )
}

/// swaks arguments for STARTTLS and AUTH PLAIN on 587, then `rest`.
fn authed(user: &str, pass: &str, rest: &[&str]) -> Vec<String> {
    authed_on(Port::Submission, user, pass, rest)
}

fn authed_on(port: Port, user: &str, pass: &str, rest: &[&str]) -> Vec<String> {
    let mut args = vec![tls_flag(port), "--auth", "PLAIN", "--auth-user", user];
    args.extend(["--auth-password", pass]);
    args.extend_from_slice(rest);
    args.into_iter().map(String::from).collect()
}

/// Raw steps from the greeting to a login as alice (STARTTLS first on 587).
fn login(port: Port) -> Vec<Step> {
    let mut steps = vec![say("EHLO client.example.org", Want::Code(250))];
    if port != Port::Submissions {
        steps.push(Step::StartTls);
        steps.push(say("EHLO client.example.org", Want::Code(250)));
    }
    steps.push(say(&auth_plain(ALICE, ALICE_PASS), Want::Code(235)));
    steps
}

fn say(line: &str, want: Want) -> Step {
    Step::Say(line.to_string(), want)
}

fn line(text: &str) -> Want {
    Want::Line(text.to_string())
}

fn auth_plain(user: &str, pass: &str) -> String {
    let blob = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"));
    format!("AUTH PLAIN {blob}")
}

fn subject(marker: &str) -> String {
    format!("Subject: {marker}")
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panicked".into())
}

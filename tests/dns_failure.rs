//! DNS that fails temporarily (SERVFAIL, or no answer at all) from a name server that
//! [`FlakyDns`] plays: RCPT gets Postfix's 450, never a 5xx, and a queued message whose
//! MX lookup fails stays queued, deferred, with no bounce.

mod common;

use std::process::Command;
use std::time::Duration;

use common::dns::{Answer, FlakyDns};
use common::{ALICE, ALICE_PASS, Port, Server, eventually, metric_sum};

fn server_asking(dns: &FlakyDns) -> Server {
    Server::builder()
        .config("dns", format!("{{nameservers: [\"{}\"]}}", dns.addr))
        .start()
}

/// `posthorn queue ARGS` against the test server's config: (success, stdout + stderr).
fn queue(server: &Server, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_posthorn"))
        .arg("queue")
        .args(args)
        .arg("--config")
        .arg(server.path("config.yaml"))
        .output()
        .expect("run posthorn queue");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The queue's outcomes for `to` so far, as logged: "deferred", "bounced"...
fn outcomes(server: &Server, to: &str) -> Vec<String> {
    let to = format!("to=\"{to}\"");
    server
        .stderr()
        .lines()
        .filter(|l| l.contains("posthorn::queue") && l.contains(&to))
        .filter_map(|l| l.split("status=\"").nth(1)?.split('"').next())
        .map(str::to_owned)
        .collect()
}

/// Waits for the `n`th outcome for `to` and returns the outcomes.
fn wait_for_outcomes(server: &Server, to: &str, n: usize, limit: Duration) -> Vec<String> {
    let seen = eventually(limit, || outcomes(server, to).len() >= n);
    assert!(
        seen,
        "fewer than {n} outcomes for {to}:\n{}",
        server.stderr()
    );
    outcomes(server, to)
}

#[test]
fn rcpt_gets_450_when_the_domain_lookup_fails() {
    let dns = FlakyDns::start();
    dns.set("servfail.test", Answer::ServFail);
    dns.set("silent.test", Answer::Silent);
    dns.set("fine.test", Answer::Mx);
    let server = server_asking(&dns);
    let mut c = server.authenticated_client(Port::Submission, ALICE, ALICE_PASS);
    // A silent name server costs the resolver its timeouts and retries (like Postfix's
    // resolver, about 10 s per query): more than the client's usual wait on a busy machine.
    c.set_read_timeout(Duration::from_secs(90));
    c.cmd_expect(&format!("MAIL FROM:<{ALICE}>"), 250);
    for rcpt in ["x@servfail.test", "x@silent.test"] {
        let reply = c.cmd(&format!("RCPT TO:<{rcpt}>"));
        assert_eq!(
            reply.lines,
            [format!(
                "450 4.1.2 <{rcpt}>: Recipient address rejected: Domain not found"
            )],
            "{rcpt}"
        );
    }
    // The control: the same session and server accept a domain that answers.
    c.cmd_expect("RCPT TO:<x@fine.test>", 250);
    for domain in ["servfail.test", "silent.test", "fine.test"] {
        assert!(
            dns.queries(domain) > 0,
            "no query for {domain} reached the server"
        );
    }
    // Both were temporary failures, not a domain found missing.
    let metrics = server.metrics();
    assert_eq!(metric_sum(&metrics, &["rejected", "dns_tempfail"]), 2.0);
    assert_eq!(metric_sum(&metrics, &["rejected", "unknown_domain"]), 0.0);
}

#[test]
fn a_queued_message_whose_mx_lookup_fails_is_deferred_not_bounced() {
    let dns = FlakyDns::start();
    dns.set("flaky.test", Answer::Mx);
    let server = server_asking(&dns);
    let mut c = server.authenticated_client(Port::Submission, ALICE, ALICE_PASS);
    c.cmd_expect(&format!("MAIL FROM:<{ALICE}>"), 250);
    c.cmd_expect("RCPT TO:<x@flaky.test>", 250);
    // The domain existed at RCPT; from now on its name server fails.
    dns.set("flaky.test", Answer::ServFail);
    c.cmd_expect("DATA", 354);
    c.send(b"Subject: flaky\r\n\r\nbody\r\n.\r\n").unwrap();
    let queued = c.expect_code(250);
    assert!(queued.last().contains("queued as"), "{queued:?}");
    c.cmd_expect("QUIT", 221);

    let rcpt = "x@flaky.test";
    assert_eq!(
        wait_for_outcomes(&server, rcpt, 1, Duration::from_secs(60)),
        ["deferred"]
    );
    let log = server.stderr();
    assert!(
        log.contains("4.4.3 MX lookup for flaky.test failed"),
        "{log}"
    );
    let (ok, listed) = queue(&server, &["list"]);
    assert!(ok && listed.contains("x@flaky.test"), "{listed}");

    // Now the name server does not answer at all: deferred again on the flush.
    dns.set("flaky.test", Answer::Silent);
    let (ok, flushed) = queue(&server, &["flush"]);
    assert!(ok, "{flushed}");
    assert_eq!(
        wait_for_outcomes(&server, rcpt, 2, Duration::from_secs(120)),
        ["deferred", "deferred"]
    );
    let (ok, listed) = queue(&server, &["list"]);
    assert!(ok && listed.contains("x@flaky.test"), "{listed}");
    assert!(
        server.mails("alice").is_empty(),
        "the sender got a report: {:?}",
        server.mails("alice")
    );
}

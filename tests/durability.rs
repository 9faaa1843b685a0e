//! Durability, seen from the system calls: an `LD_PRELOAD` shim (tests/faults) records
//! every sync, link, file write and socket send of a real `posthorn serve`, and fails
//! them on demand.
//!
//! - `250 ... queued` is sent only after the queue file and its queue subdirectory are
//!   synced, and a new spool's directories are synced into their parents;
//! - a Maildir delivery syncs the file, links it into `new/` and syncs `new/`;
//! - a deferred message's status file is synced, and then its directory;
//! - a failed write or sync gets Postfix's `451 4.3.0` (`452 4.3.1` when the disk is full),
//!   nothing of that message is kept or delivered, and the next message goes through.

mod common;
mod faults;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Client, Port, Server};
use faults::{Call, Faults};

fn start(faults: &Faults) -> Server {
    faults.load(Server::builder()).start()
}

fn inbound_client(s: &Server) -> Client {
    let mut c = s.connect(Port::Smtp);
    c.expect_code(220);
    c.cmd_expect("EHLO client.example.org", 250);
    c
}

/// One transaction for alice; answers the last line of the reply to the end of data.
fn submit(c: &mut Client, marker: &str) -> String {
    c.cmd_expect("MAIL FROM:<sender@example.org>", 250);
    c.cmd_expect("RCPT TO:<alice@example.com>", 250);
    c.cmd_expect("DATA", 354);
    c.send(format!("Subject: {marker}\r\n\r\n{marker}\r\n.\r\n").as_bytes())
        .unwrap();
    c.reply().last().to_string()
}

fn canonical(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .display()
        .to_string()
}

/// Index of the first call at or after `from` that `matches`; panics with the log.
fn find(calls: &[Call], from: usize, what: &str, matches: impl Fn(&Call) -> bool) -> usize {
    calls
        .iter()
        .skip(from)
        .position(matches)
        .map(|i| i + from)
        .unwrap_or_else(|| panic!("no {what} at or after call {from}; calls:\n{calls:#?}"))
}

/// The calls recorded so far, once one of them is `awaited` (or after 10 s, for `find`
/// to report what is missing).
fn calls_once(faults: &Faults, awaited: impl Fn(&Call) -> bool) -> Vec<Call> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let calls = faults.calls();
        if calls.iter().any(&awaited) || Instant::now() > deadline {
            return calls;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn is_sync(c: &Call, path: &str) -> bool {
    (c.op == "fsync" || c.op == "fdatasync") && c.path == path && c.result == "0"
}

#[test]
fn queued_reply_follows_the_syncs_of_the_file_and_its_directory() {
    let faults = Faults::build();
    let s = start(&faults);
    let mut c = inbound_client(&s);
    let reply = submit(&mut c, "durable-reply");
    let id = reply
        .strip_prefix("250 2.0.0 Ok: queued as ")
        .unwrap_or_else(|| panic!("not queued: {reply}"));

    let spool = canonical(&s.path("spool"));
    let calls = faults.calls();
    // Written in a hashed subdirectory of tmp/, tmp/<h>/.
    let written = find(&calls, 0, "write of the queue file", |c| {
        c.op == "write"
            && c.path.starts_with(&format!("{spool}/tmp/"))
            && c.path.ends_with(&format!("/{id}"))
            && c.result == "0"
    });
    let tmp = calls[written].path.clone();
    let synced = find(&calls, written, "sync of the queue file", |c| {
        is_sync(c, &tmp)
    });
    // Into its hashed subdirectory, queue/<h>/, which is then synced.
    let linked = find(&calls, synced, "link into queue/<h>/", |c| {
        c.op == "link"
            && c.path.starts_with(&format!("{tmp} -> {spool}/queue/"))
            && c.path.ends_with(&format!("/{id}"))
            && c.result == "0"
    });
    let queued = calls[linked].path.rsplit(" -> ").next().unwrap();
    let subdir = Path::new(queued).parent().unwrap().display().to_string();
    assert_eq!(
        Path::new(&subdir).parent().unwrap(),
        Path::new(&spool).join("queue")
    );
    assert_eq!(
        Path::new(&tmp).parent().unwrap(),
        Path::new(&spool)
            .join("tmp")
            .join(Path::new(&subdir).file_name().unwrap()),
        "tmp/<h>/ and queue/<h>/ differ"
    );
    let dir_synced = find(&calls, linked, "sync of queue/<h>/", |c| {
        is_sync(c, &subdir)
    });
    let sent = find(&calls, 0, "the 250 reply", |c| {
        c.op == "send" && c.data == reply
    });
    assert!(
        dir_synced < sent,
        "the reply (call {sent}) went out before the queue directory was synced (call \
         {dir_synced}); calls:\n{calls:#?}"
    );
    s.wait_for_mail("alice", "durable-reply");
}

#[test]
fn a_new_spool_s_directories_are_synced_into_their_parents() {
    let faults = Faults::build();
    let s = start(&faults);
    let spool = canonical(&s.path("spool"));
    let calls = faults.calls();
    // tmp/, queue/ and corrupt/ are entries of the spool; queue/0 to queue/f of queue/.
    for dir in [spool.clone(), format!("{spool}/queue")] {
        find(&calls, 0, &format!("sync of {dir}"), |c| is_sync(c, &dir));
    }
}

#[test]
fn maildir_delivery_syncs_the_file_then_links_and_syncs_new() {
    let faults = Faults::build();
    let s = start(&faults);
    let mut c = inbound_client(&s);
    assert!(submit(&mut c, "durable-maildir").starts_with("250 2.0.0 Ok: queued as "));
    s.wait_for_mail("alice", "durable-maildir");
    let (delivered, _) = s
        .mails("alice")
        .into_iter()
        .find(|(_, text)| text.contains("durable-maildir"))
        .unwrap();
    let delivered = canonical(&delivered);
    let new = canonical(&s.maildir_new("alice"));
    let name = delivered.rsplit('/').next().unwrap();
    let tmp = format!("{}/tmp/{name}", new.trim_end_matches("/new"));

    // The file shows in new/ at the link; the directory sync comes just after.
    let calls = calls_once(&faults, |c| is_sync(c, &new));
    let written = find(&calls, 0, "write into tmp/", |c| {
        c.op == "write" && c.path == tmp && c.result == "0"
    });
    let synced = find(&calls, written, "sync of the tmp/ file", |c| {
        is_sync(c, &tmp)
    });
    let linked = find(&calls, synced, "link into new/", |c| {
        c.op == "link" && c.path == format!("{tmp} -> {delivered}") && c.result == "0"
    });
    find(&calls, linked, "sync of new/ after the link", |c| {
        is_sync(c, &new)
    });
}

#[test]
fn a_deferred_message_s_status_file_is_synced_with_its_directory() {
    let faults = Faults::build();
    let s = start(&faults);
    // The Maildir's syncs fail, so the delivery is deferred and its outcome recorded.
    faults.inject("fdatasync,fsync", "/mail/", "EIO");
    let mut c = inbound_client(&s);
    let reply = submit(&mut c, "deferred-status");
    let id = reply
        .strip_prefix("250 2.0.0 Ok: queued as ")
        .unwrap_or_else(|| panic!("not queued: {reply}"));
    let queue = format!("{}/queue/", canonical(&s.path("spool")));
    let is_status =
        |c: &Call| c.path.starts_with(&queue) && c.path.ends_with(&format!("/{id}.status"));

    let calls = calls_once(&faults, |c| is_status(c) && is_sync(c, &c.path));
    let synced = find(&calls, 0, "sync of the status file", |c| {
        is_status(c) && is_sync(c, &c.path)
    });
    // A new name: durable only once its directory, queue/<h>/, is synced.
    let subdir = Path::new(&calls[synced].path)
        .parent()
        .unwrap()
        .display()
        .to_string();
    find(&calls, synced, "sync of queue/<h>/ after it", |c| {
        is_sync(c, &subdir)
    });
}

#[test]
fn failed_writes_and_syncs_are_refused_and_nothing_is_kept() {
    let faults = Faults::build();
    let s = start(&faults);
    const QUEUE_WRITE_ERROR: &str = "451 4.3.0 Error: queue file write error";
    // (ops, path pattern, errno, reply)
    let cases = [
        ("fdatasync,fsync", "/spool/tmp/", "EIO", QUEUE_WRITE_ERROR),
        ("write", "/spool/tmp/", "EIO", QUEUE_WRITE_ERROR),
        (
            "write",
            "/spool/tmp/",
            "ENOSPC",
            "452 4.3.1 Insufficient system storage",
        ),
        ("link", "/spool/queue/", "EIO", QUEUE_WRITE_ERROR),
        ("fsync", "/spool/queue", "EIO", QUEUE_WRITE_ERROR),
    ];
    let mut c = inbound_client(&s);
    for (n, (ops, pattern, errno, expected)) in cases.iter().enumerate() {
        let refused = format!("refused-{n}-{errno}");
        faults.inject(ops, pattern, errno);
        assert_eq!(
            submit(&mut c, &refused),
            *expected,
            "{ops} {pattern} {errno}"
        );
        faults.lift();
        assert!(
            faults
                .calls()
                .iter()
                .any(|c| ops.split(',').any(|op| c.op == op) && c.result == *errno),
            "the shim injected no {errno} into {ops} on {pattern}"
        );
        assert_eq!(
            s.stored_files_containing(&refused),
            Vec::<std::path::PathBuf>::new(),
            "{ops} {pattern} {errno}: the refused message was kept"
        );
        // The same session, and the server, go on once the disk is healthy again.
        let accepted = format!("accepted-{n}");
        let reply = submit(&mut c, &accepted);
        assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
        s.wait_for_mail("alice", &accepted);
    }
    c.cmd_expect("QUIT", 221);
    let delivered = s.mails("alice");
    assert_eq!(delivered.len(), cases.len(), "{delivered:#?}");
    assert!(
        delivered.iter().all(|(_, text)| !text.contains("refused-")),
        "a refused message was delivered: {delivered:#?}"
    );
}

use std::fs;
use std::path::Path;

use bytes::Bytes;

use super::*;
use crate::spool::{Recipient, Status};

fn runner(spool: &Arc<Spool>, config: &Config) -> QueueRunner {
    QueueRunner::new(spool.clone(), config, Arc::new(Metrics::new())).unwrap()
}

struct Setup {
    dir: tempfile::TempDir,
    spool: Arc<Spool>,
    config: Config,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let config: Config = serde_saphyr::from_str(&format!(
        "hostname: mail.example.com
domains: [example.com, Example.ORG]
tls: {{cert: /tls/tls.crt, key: /tls/tls.key}}
auth: {{passwdFile: /users/passwd}}
spool: {{directory: {d}/spool, maildirRoot: {d}/mail}}
delivery: {{relay: {{host: '127.0.0.1:1'}}, connectTimeout: 2s, delayWarning: 1h}}
",
        d = dir.path().display()
    ))
    .unwrap();
    let spool = Spool::open(&config.spool.directory).await.unwrap();
    Setup { dir, spool, config }
}

async fn commit(spool: &Spool, rcpts: &[&str]) -> Envelope {
    commit_from(spool, "alice@example.net", rcpts).await
}

async fn commit_from(spool: &Spool, from: &str, rcpts: &[&str]) -> Envelope {
    let envelope = Envelope::sample(from, rcpts);
    spool
        .commit(&envelope, Bytes::from_static(MESSAGE))
        .await
        .unwrap();
    envelope
}

const MESSAGE: &[u8] = b"Received: from client.example.net\r\nSubject: hi\r\n\r\nline one\r\n";

fn mailbox_files(root: &Path, domain: &str, user: &str) -> Vec<Vec<u8>> {
    let new = root.join(domain).join(user).join("Maildir/new");
    match fs::read_dir(new) {
        Ok(entries) => entries
            .map(|e| fs::read(e.unwrap().path()).unwrap())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// The files in the hashed subdirectories of queue directory `queue`.
fn queued_files(queue: &Path) -> Vec<String> {
    names(queue)
        .iter()
        .flat_map(|bucket| names(&queue.join(bucket)))
        .collect()
}

fn statuses(envelope: &Envelope) -> Vec<&'static str> {
    envelope
        .recipients
        .iter()
        .map(|r| match r.status {
            RecipientStatus::Pending => "pending",
            RecipientStatus::Deferred { .. } => "deferred",
            RecipientStatus::Delivered { .. } => "delivered",
            RecipientStatus::Failed { .. } => "failed",
        })
        .collect()
}

async fn eventually(mut done: impl AsyncFnMut() -> bool) {
    for _ in 0..500 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not done after 5 s");
}

#[tokio::test]
async fn worker_delivers_each_local_recipient_once_then_removes_the_message() {
    let Setup {
        dir: _dir,
        spool,
        config,
    } = setup().await;
    let handle = QueueRunner::start(spool.clone(), &config, Arc::new(Metrics::new())).unwrap();
    let envelope = commit(&spool, &["Bob+News@EXAMPLE.com", "carol@example.org"]).await;
    handle.enqueue(envelope.id);
    let queue = config.spool.directory.join("queue");
    // The stats follow the unlink once the directory is synced, a moment later.
    eventually(async || queued_files(&queue).is_empty() && spool.stats().messages == 0).await;

    let root = &config.spool.maildir_root;
    let bob = mailbox_files(root, "example.com", "bob");
    assert_eq!(bob.len(), 1);
    assert_eq!(
        bob[0],
        b"Return-Path: <alice@example.net>\nDelivered-To: bob+news@example.com\n\
          Received: from client.example.net\nSubject: hi\n\nline one\n"
    );
    let carol = mailbox_files(root, "example.org", "carol");
    assert_eq!(carol.len(), 1);
    assert!(
        carol[0]
            .starts_with(b"Return-Path: <alice@example.net>\nDelivered-To: carol@example.org\n")
    );
    assert!(
        queued_files(&config.spool.directory.join("queue")).is_empty(),
        "sidecar left"
    );
    assert_eq!(spool.stats().messages, 0);
    assert!(worker_ignores(&spool, &config, envelope.id).await);
}

/// A message handed over again after it was finished is skipped without an error.
async fn worker_ignores(spool: &Arc<Spool>, config: &Config, id: QueueId) -> bool {
    runner(spool, config)
        .deliver(&id, false)
        .await
        .unwrap()
        .is_none()
}

#[tokio::test]
async fn worker_resumes_queued_messages_and_defers_unreachable_relay_recipients() {
    let Setup {
        dir: _dir,
        spool,
        config,
    } = setup().await;
    let envelope = commit(&spool, &["bob@example.com", "dave@remote.example"]).await;
    let _handle = QueueRunner::start(spool.clone(), &config, Arc::new(Metrics::new())).unwrap();
    eventually(async || {
        let loaded = spool.load_envelope(&envelope.id).await.unwrap();
        statuses(&loaded) == ["delivered", "deferred"]
    })
    .await;
    let loaded = spool.load_envelope(&envelope.id).await.unwrap();
    let RecipientStatus::Deferred { outcome, .. } = &loaded.recipients[1].status else {
        unreachable!()
    };
    assert!(
        outcome
            .to_string()
            .starts_with("4.4.1 relay 127.0.0.1:1: connection failed"),
        "{outcome}"
    );
    assert_eq!(
        mailbox_files(&config.spool.maildir_root, "example.com", "bob").len(),
        1
    );
    assert_eq!(spool.list().await.unwrap(), vec![envelope.id]);
    assert_eq!(names(&config.spool.maildir_root), ["example.com"]);
}

#[tokio::test]
async fn crash_between_delivery_and_record_repeats_only_that_recipient() {
    let Setup {
        dir: _dir,
        spool,
        config,
    } = setup().await;
    let worker = runner(&spool, &config);
    let envelope = commit(
        &spool,
        &[
            "bob@example.com",
            "carol@example.com",
            "dave@remote.example",
        ],
    )
    .await;
    let message = Bytes::from_static(MESSAGE);
    // First run: bob delivered and recorded; carol delivered, then the crash.
    let bob = worker
        .transports
        .transfer(&Destination::Maildir, &envelope, &[0], &message)
        .await;
    assert!(matches!(bob[..], [(0, Attempt::Delivered(_))]));
    let bob = RecipientStatus::Delivered {
        outcome: Outcome::local(Status::new(2, 0, 0), "ok"),
    };
    spool.record(&envelope.id, &[(0, bob)]).await.unwrap();
    let carol = worker
        .transports
        .transfer(&Destination::Maildir, &envelope, &[1], &message)
        .await;
    assert!(matches!(carol[..], [(1, Attempt::Delivered(_))]));
    drop((worker, spool));

    let spool = Spool::open(&config.spool.directory).await.unwrap();
    let worker = runner(&spool, &config);
    assert!(worker.deliver(&envelope.id, false).await.unwrap().is_some());
    let root = &config.spool.maildir_root;
    assert_eq!(mailbox_files(root, "example.com", "bob").len(), 1);
    assert_eq!(mailbox_files(root, "example.com", "carol").len(), 2);
    let loaded = spool.load_envelope(&envelope.id).await.unwrap();
    assert_eq!(statuses(&loaded), ["delivered", "delivered", "deferred"]);
    // Running again (forced, as a flush) delivers nothing twice.
    worker.deliver(&envelope.id, true).await.unwrap();
    assert_eq!(mailbox_files(root, "example.com", "carol").len(), 2);
}

#[tokio::test]
async fn unsafe_local_parts_fail_without_writing_outside_the_root() {
    let Setup { dir, spool, config } = setup().await;
    let worker = runner(&spool, &config);
    let envelope = commit(
        &spool,
        &[
            "../evil@example.com",
            ".hidden@example.com",
            "a/b@example.com",
            "ok@example.com",
            "far@remote.example",
        ],
    )
    .await;
    worker.deliver(&envelope.id, false).await.unwrap();
    let loaded = spool.load_envelope(&envelope.id).await.unwrap();
    assert_eq!(
        statuses(&loaded),
        ["failed", "failed", "failed", "delivered", "deferred"]
    );
    for rcpt in &loaded.recipients[..3] {
        assert!(
            matches!(&rcpt.status, RecipientStatus::Failed { outcome } if outcome.status == Status::new(5, 1, 3)),
            "{rcpt:?}"
        );
    }
    assert_eq!(names(dir.path()), ["mail", "spool"]);
    assert_eq!(names(&config.spool.maildir_root), ["example.com"]);
    assert_eq!(
        names(&config.spool.maildir_root.join("example.com")),
        ["ok"]
    );
}

#[tokio::test]
async fn unwritable_mailbox_is_deferred_and_the_message_kept() {
    let Setup {
        dir: _dir,
        spool,
        config,
    } = setup().await;
    // A file where the mailbox directory should be.
    fs::write(&config.spool.maildir_root, b"not a directory").unwrap();
    let worker = runner(&spool, &config);
    let envelope = commit(&spool, &["bob@example.com"]).await;
    let next = worker.deliver(&envelope.id, false).await.unwrap();
    let loaded = spool.load_envelope(&envelope.id).await.unwrap();
    let RecipientStatus::Deferred {
        attempts,
        next_attempt,
        outcome,
        ..
    } = &loaded.recipients[0].status
    else {
        panic!("{:?}", loaded.recipients[0].status);
    };
    assert_eq!(*attempts, 1);
    assert_eq!(next, Some((*next_attempt, envelope.received_at)));
    assert!(*next_attempt >= unix_now() + 300 - 1);
    assert_eq!(outcome.status, Status::new(4, 2, 0), "{outcome}");
    // Not due yet: a second pass leaves it alone.
    worker.deliver(&envelope.id, false).await.unwrap();
    let again = spool.load_envelope(&envelope.id).await.unwrap();
    assert_eq!(again.recipients[0].status, loaded.recipients[0].status);
}

/// The bounces (messages from `<>`) in the queue, with their recipients.
async fn bounces(spool: &Spool) -> Vec<(Envelope, Bytes)> {
    let mut out = Vec::new();
    for id in spool.list().await.unwrap() {
        let queued = spool.load(&id).await.unwrap();
        if queued.envelope.mail_from.is_empty() {
            out.push((queued.envelope, queued.message));
        }
    }
    out
}

#[tokio::test]
async fn permanent_failure_queues_a_report_to_the_sender_but_never_to_the_null_sender() {
    let Setup {
        dir: _dir,
        spool,
        config,
    } = setup().await;
    let worker = runner(&spool, &config);
    let envelope = commit(&spool, &["../evil@example.com", "ok@example.com"]).await;
    assert_eq!(worker.deliver(&envelope.id, false).await.unwrap(), None);
    let reports = bounces(&spool).await;
    assert_eq!(reports.len(), 1);
    let (report, body) = &reports[0];
    assert_eq!(report.recipients[0].address, "alice@example.net");
    let body = String::from_utf8_lossy(body);
    assert!(
        body.contains("Content-Type: multipart/report; report-type=delivery-status"),
        "{body}"
    );
    assert!(
        body.contains(
            "Final-Recipient: rfc822; ../evil@example.com\r\nAction: failed\r\nStatus: 5.1.3"
        ),
        "{body}"
    );
    assert!(
        !body.contains("Final-Recipient: rfc822; ok@example.com"),
        "{body}"
    );

    // The report itself fails (no such mailbox name): no report about a report.
    let from_null = commit_from(&spool, "", &["../evil@example.com"]).await;
    assert_eq!(worker.deliver(&from_null.id, false).await.unwrap(), None);
    assert_eq!(bounces(&spool).await.len(), 1);

    // NOTIFY=NEVER is honoured.
    let mut quiet = commit(&spool, &[]).await;
    spool.remove(&quiet.id).await.unwrap();
    quiet.id = Spool::new_id();
    quiet.recipients = vec![Recipient {
        notify: vec![Notify::Never],
        ..Recipient::new("../evil@example.com")
    }];
    spool
        .commit(&quiet, Bytes::from_static(MESSAGE))
        .await
        .unwrap();
    assert_eq!(worker.deliver(&quiet.id, false).await.unwrap(), None);
    assert_eq!(bounces(&spool).await.len(), 1);
}

#[tokio::test]
async fn retries_back_off_then_expire_into_a_failure_with_a_report() {
    let Setup {
        dir: _dir,
        spool,
        config,
    } = setup().await;
    let worker = runner(&spool, &config);
    let backoffs: Vec<u64> = (1..=7).map(|n| worker.backoff(n).as_secs()).collect();
    assert_eq!(backoffs, [300, 600, 1200, 2400, 4000, 4000, 4000]);

    let now = unix_now();
    let fresh = worker.status_after(
        now - 10,
        &RecipientStatus::Pending,
        Attempt::temporary(Status::new(4, 4, 1), "no".into()),
        now,
    );
    assert_eq!(
        fresh,
        RecipientStatus::Deferred {
            attempts: 1,
            next_attempt: now + 300,
            outcome: Outcome::local(Status::new(4, 4, 1), "no"),
            warned: false,
        }
    );
    let old = now - 5 * 24 * 3600;
    let expired = worker.status_after(
        old,
        &fresh,
        Attempt::temporary(Status::new(4, 4, 1), "no".into()),
        now,
    );
    assert!(
        matches!(&expired, RecipientStatus::Failed { outcome } if outcome.expired && outcome.to_string() == "4.4.1 no (message expired in the queue)"),
        "{expired:?}"
    );

    // A message queued long ago whose relay never answers fails, and the sender hears.
    let mut envelope = commit(&spool, &[]).await;
    spool.remove(&envelope.id).await.unwrap();
    envelope.id = Spool::new_id();
    envelope.received_at = old;
    envelope.recipients = vec![Recipient::new("dave@remote.example")];
    spool
        .commit(&envelope, Bytes::from_static(MESSAGE))
        .await
        .unwrap();
    assert_eq!(worker.deliver(&envelope.id, false).await.unwrap(), None);
    let reports = bounces(&spool).await;
    assert_eq!(reports.len(), 1);
    let body = String::from_utf8_lossy(&reports[0].1);
    // Expiry turns the temporary 4.4.1 into a permanent 5.4.1 in the report.
    assert!(body.contains("Status: 5.4.1"), "{body}");
    assert!(
        body.contains("relay 127.0.0.1:1: connection failed"),
        "{body}"
    );
}

#[tokio::test]
async fn delay_warning_is_sent_once_when_the_warning_time_passes() {
    let Setup {
        dir: _dir,
        spool,
        config,
    } = setup().await;
    let worker = runner(&spool, &config);
    let now = unix_now();
    let message = Bytes::from_static(b"Subject: late\r\n\r\nbody\r\n");
    let mut envelope = Envelope::sample("alice@example.net", &["bob@far.example"]);
    let deferred = || vec![(0, Attempt::temporary(Status::new(4, 4, 1), "later".into()))];
    // Deferred before the 1 h mark: no warning.
    envelope.received_at = now - 60;
    spool.commit(&envelope, message.clone()).await.unwrap();
    worker
        .conclude(&mut envelope, &message, "relay", deferred())
        .await
        .unwrap();
    assert_eq!(spool.list().await.unwrap(), [envelope.id]);
    // Deferred again past it, however soon after the last try (a flush): one warning.
    envelope.received_at = now - 3600;
    for _ in 0..3 {
        // As the next run reads it: the flag comes from the disk.
        let mut loaded = spool.load(&envelope.id).await.unwrap().envelope;
        loaded.received_at = envelope.received_at;
        worker
            .conclude(&mut loaded, &message, "relay", deferred())
            .await
            .unwrap();
        assert_eq!(
            spool.list().await.unwrap().len(),
            2,
            "the message and one warning"
        );
    }
    let ids = spool.list().await.unwrap();
    let warning = ids.iter().find(|id| **id != envelope.id).unwrap();
    let report = spool.load(warning).await.unwrap();
    assert_eq!(report.envelope.recipients[0].address, "alice@example.net");
    let text = String::from_utf8_lossy(&report.message);
    assert!(text.contains("Action: delayed"), "{text}");
}

#[tokio::test]
async fn flush_retries_deferred_messages_and_delete_removes_them() {
    let Setup {
        dir: _dir,
        spool,
        config,
    } = setup().await;
    let handle = QueueRunner::start(spool.clone(), &config, Arc::new(Metrics::new())).unwrap();
    let envelope = commit(&spool, &["dave@remote.example"]).await;
    handle.enqueue(envelope.id);
    let attempts =
        async || match spool.load_envelope(&envelope.id).await.unwrap().recipients[0].status {
            RecipientStatus::Deferred { attempts, .. } => attempts,
            _ => 0,
        };
    eventually(async || attempts().await == 1).await;
    assert!(handle.flush().await.unwrap() >= 1);
    eventually(async || attempts().await == 2).await;
    assert!(handle.delete(envelope.id).await.unwrap());
    assert!(spool.list().await.unwrap().is_empty());
    assert!(!handle.delete(envelope.id).await.unwrap());
    // Nothing is due or in flight: a shutdown would not wait.
    tokio::time::timeout(Duration::from_secs(5), handle.drained(Duration::ZERO))
        .await
        .unwrap();
}

/// Whatever the spool holds (content from before canonical storage, say), the runner
/// hands the next hop CRLF lines only: here LMTP, through the whole delivery path.
#[tokio::test]
async fn next_hop_gets_crlf_lines_only() {
    let hop = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config: Config = serde_saphyr::from_str(&format!(
        "hostname: mail.example.com
domains: [example.com]
tls: {{cert: /tls/tls.crt, key: /tls/tls.key}}
auth: {{passwdFile: /users/passwd}}
spool: {{directory: {d}/spool, maildirRoot: {d}/mail}}
delivery: {{lmtp: '{addr}', connectTimeout: 2s}}
",
        d = dir.path().display(),
        addr = hop.local_addr().unwrap()
    ))
    .unwrap();
    let spool = Spool::open(&config.spool.directory).await.unwrap();
    let envelope = Envelope::sample("alice@example.net", &["bob@example.com"]);
    let stored = b"Subject: x\n\nbare\nlf\rcr\n.\nMAIL FROM:<a@b>\r\n.\r\rend";
    spool
        .commit(&envelope, Bytes::from_static(stored))
        .await
        .unwrap();
    let handle = QueueRunner::start(spool.clone(), &config, Arc::new(Metrics::new())).unwrap();
    handle.enqueue(envelope.id);
    let (conn, _) = hop.accept().await.unwrap();
    let hop = crate::transport::next_hop(conn, true);
    let seen = tokio::time::timeout(Duration::from_secs(30), hop)
        .await
        .expect("the next hop saw no end of data");
    assert_eq!(
        crate::transport::after_data(&seen),
        &b"Subject: x\r\n\r\nbare\r\nlf cr\r\n..\r\nMAIL FROM:<a@b>\r\n..  end\r\n.\r\nQUIT\r\n"[..]
    );
}

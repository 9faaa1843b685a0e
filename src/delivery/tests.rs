use std::fs;
use std::path::Path;

use bytes::Bytes;

use super::*;
use crate::spool::Recipient;

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
",
        d = dir.path().display()
    ))
    .unwrap();
    let spool = Spool::open(&config.spool.directory).await.unwrap();
    Setup { dir, spool, config }
}

async fn commit(spool: &Spool, rcpts: &[&str]) -> Envelope {
    let envelope = Envelope {
        id: Spool::new_id(),
        mail_from: "alice@example.net".into(),
        body: None,
        smtputf8: false,
        ret: None,
        envid: None,
        recipients: rcpts.iter().map(|a| Recipient::new(*a)).collect(),
        login: None,
        client_addr: "192.0.2.1:2525".parse().unwrap(),
        client_helo: "client.example.net".into(),
        listener: "smtp".into(),
        tls: None,
        received_at: unix_now(),
    };
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
    let handle = LocalDelivery::start(spool.clone(), &config);
    let envelope = commit(&spool, &["Bob+News@EXAMPLE.com", "carol@example.org"]).await;
    handle.enqueue(envelope.id);
    let queue = config.spool.directory.join("queue");
    eventually(async || names(&queue).is_empty()).await;

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
        names(&config.spool.directory.join("queue")).is_empty(),
        "sidecar left"
    );
    assert_eq!(spool.stats().messages, 0);
    assert!(worker_ignores(&spool, &config, envelope.id).await);
}

/// A message handed over again after it was finished is skipped without an error.
async fn worker_ignores(spool: &Arc<Spool>, config: &Config, id: QueueId) -> bool {
    let worker = LocalDelivery::new(spool.clone(), config);
    worker.deliver_queued(&id).await.unwrap().is_none()
}

#[tokio::test]
async fn worker_resumes_queued_messages_and_keeps_remote_recipients_queued() {
    let Setup {
        dir: _dir,
        spool,
        config,
    } = setup().await;
    let envelope = commit(&spool, &["bob@example.com", "dave@remote.example"]).await;
    let _handle = LocalDelivery::start(spool.clone(), &config);
    eventually(async || {
        let loaded = spool.load_envelope(&envelope.id).await.unwrap();
        statuses(&loaded) == ["delivered", "pending"]
    })
    .await;
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
    let worker = LocalDelivery::new(spool.clone(), &config);
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
    let mailbox = |user: &str| maildir::Mailbox {
        domain: "example.com".into(),
        user: user.into(),
    };
    // First run: bob delivered and recorded; carol delivered, then the crash.
    let bob = worker
        .deliver_one(&envelope, 0, &mailbox("bob"), &message, 0)
        .await;
    assert!(matches!(bob, RecipientStatus::Delivered { .. }));
    spool.record(&envelope.id, &[(0, bob)]).await.unwrap();
    let carol = worker
        .deliver_one(&envelope, 1, &mailbox("carol"), &message, 0)
        .await;
    assert!(matches!(carol, RecipientStatus::Delivered { .. }));
    drop((worker, spool));

    let spool = Spool::open(&config.spool.directory).await.unwrap();
    let worker = LocalDelivery::new(spool.clone(), &config);
    assert_eq!(worker.deliver_queued(&envelope.id).await.unwrap(), None);
    let root = &config.spool.maildir_root;
    assert_eq!(mailbox_files(root, "example.com", "bob").len(), 1);
    assert_eq!(mailbox_files(root, "example.com", "carol").len(), 2);
    let loaded = spool.load_envelope(&envelope.id).await.unwrap();
    assert_eq!(statuses(&loaded), ["delivered", "delivered", "pending"]);
    // Running again delivers nothing twice.
    worker.deliver_queued(&envelope.id).await.unwrap();
    assert_eq!(mailbox_files(root, "example.com", "carol").len(), 2);
}

#[tokio::test]
async fn unsafe_local_parts_fail_without_writing_outside_the_root() {
    let Setup { dir, spool, config } = setup().await;
    let worker = LocalDelivery::new(spool.clone(), &config);
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
    worker.deliver_queued(&envelope.id).await.unwrap();
    let loaded = spool.load_envelope(&envelope.id).await.unwrap();
    assert_eq!(
        statuses(&loaded),
        ["failed", "failed", "failed", "delivered", "pending"]
    );
    for rcpt in &loaded.recipients[..3] {
        assert!(
            matches!(&rcpt.status, RecipientStatus::Failed { reason } if reason.starts_with("5.1.3")),
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
    let worker = LocalDelivery::new(spool.clone(), &config);
    let envelope = commit(&spool, &["bob@example.com"]).await;
    let next = worker.deliver_queued(&envelope.id).await.unwrap();
    let loaded = spool.load_envelope(&envelope.id).await.unwrap();
    let RecipientStatus::Deferred {
        attempts,
        next_attempt,
        reason,
    } = &loaded.recipients[0].status
    else {
        panic!("{:?}", loaded.recipients[0].status);
    };
    assert_eq!(*attempts, 1);
    assert_eq!(next, Some(*next_attempt));
    assert!(*next_attempt >= unix_now() + MIN_BACKOFF - 1);
    assert!(reason.starts_with("4.2.0"), "{reason}");
    // Not due yet: a second pass leaves it alone.
    worker.deliver_queued(&envelope.id).await.unwrap();
    let again = spool.load_envelope(&envelope.id).await.unwrap();
    assert_eq!(again.recipients[0].status, loaded.recipients[0].status);
}

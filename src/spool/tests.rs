use std::time::Instant;

use super::*;

fn envelope(rcpts: &[&str]) -> Envelope {
    Envelope {
        id: Spool::new_id(),
        mail_from: "alice@example.com".into(),
        body: Some(BodyType::EightBitMime),
        smtputf8: true,
        ret: Some(Ret::Hdrs),
        envid: Some("env-42".into()),
        recipients: rcpts
            .iter()
            .map(|a| Recipient {
                orcpt: Some(format!("rfc822;{a}")),
                notify: vec![Notify::Success, Notify::Failure],
                ..Recipient::new(*a)
            })
            .collect(),
        login: Some("alice@example.com".into()),
        client_addr: "192.0.2.7:40000".parse().unwrap(),
        client_helo: "client.example".into(),
        listener: "submission".into(),
        tls: Some(TlsInfo {
            version: "TLSv1.3".into(),
            cipher: "TLS13_AES_256_GCM_SHA384".into(),
        }),
        received_at: 1_700_000_000,
    }
}

fn message(n: usize) -> Bytes {
    let mut m = format!("Received: from client.example\r\nSubject: test {n}\r\n\r\n").into_bytes();
    m.extend_from_slice(b"binary \xff\x00 body\r\n.\r\n");
    Bytes::from(m)
}

/// Where the queue file of `id` lives in spool `root`.
fn queue_file(root: &Path, id: &QueueId) -> PathBuf {
    layout::hashed_path(&root.join("queue"), id)
}

/// Every file in the hashed subdirectories of `dir` (`queue/` or `tmp/`), sorted.
fn bucket_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = layout::BUCKETS
        .iter()
        .flat_map(|b| fs::read_dir(dir.join(b)).unwrap())
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// Every file in the queue subdirectories of spool `root`, sorted.
fn queue_files(root: &Path) -> Vec<PathBuf> {
    bucket_files(&root.join("queue"))
}

/// Every file under `tmp/` of spool `root`: in its subdirectories and in itself.
fn tmp_files(root: &Path) -> Vec<PathBuf> {
    let tmp = root.join("tmp");
    let mut v = bucket_files(&tmp);
    for entry in fs::read_dir(&tmp).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            v.push(path);
        }
    }
    v
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_spool_in_use_is_refused_untouched_until_its_holder_closes_it() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).await.unwrap();
    // What a commit of the holder has in flight: a second opener must not clean it up.
    let in_flight = layout::hashed_path(&dir.path().join("tmp"), &Spool::new_id());
    fs::write(&in_flight, b"half a message").unwrap();

    let error = Spool::open(dir.path())
        .await
        .err()
        .expect("the spool is in use");
    assert!(error.is::<SpoolInUse>(), "{error:#}");
    assert_eq!(
        format!("{error:#}"),
        format!(
            "spool {} is in use by another posthorn serve",
            dir.path().display()
        )
    );
    assert!(in_flight.exists());

    drop(spool);
    let _spool = Spool::open(dir.path()).await.unwrap();
    assert!(!in_flight.exists());
    assert_eq!(names(dir.path()), ["corrupt", "queue", SPOOL_LOCK, "tmp"]);
}

#[tokio::test]
async fn commit_then_reopen_sees_exact_bytes_and_envelope() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).await.unwrap();
    let env = envelope(&["bob@example.com", "carol@example.org"]);
    let msg = message(1);
    spool.commit(&env, msg.clone()).await.unwrap();
    let size = fs::metadata(queue_file(dir.path(), &env.id)).unwrap().len();
    assert_eq!(
        spool.stats(),
        SpoolStats {
            messages: 1,
            bytes: size
        }
    );
    drop(spool);

    let spool = Spool::open(dir.path()).await.unwrap();
    assert_eq!(spool.list().await.unwrap(), vec![env.id]);
    assert_eq!(
        spool.stats(),
        SpoolStats {
            messages: 1,
            bytes: size
        }
    );
    let loaded = spool.load(&env.id).await.unwrap();
    assert_eq!(loaded.envelope, env);
    assert_eq!(loaded.message, msg);
    assert_eq!(spool.load_envelope(&env.id).await.unwrap(), env);
    assert_eq!(tmp_files(dir.path()), Vec::<PathBuf>::new());
    for sub in ["tmp", "queue", "corrupt"] {
        let mode = fs::metadata(dir.path().join(sub)).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o700
        );
    }
}

#[tokio::test]
async fn open_removes_tmp_debris_and_orphan_sidecars() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).await.unwrap();
    let kept = envelope(&["bob@example.com"]);
    spool.commit(&kept, message(1)).await.unwrap();
    spool
        .record(&kept.id, &[(0, RecipientStatus::Pending)])
        .await
        .unwrap();
    drop(spool);
    // In a subdirectory, and in tmp/ itself as releases before the subdirectories left it.
    let tmp = dir.path().join("tmp");
    for debris in [
        layout::hashed_path(&tmp, &Spool::new_id()),
        tmp.join(Spool::new_id().as_str()),
    ] {
        fs::write(debris, b"POSTHORN-QUEUE 1 12").unwrap();
    }
    let orphan = layout::sidecar_path(&queue_file(dir.path(), &Spool::new_id()));
    fs::write(&orphan, b"\n{}\n").unwrap();

    let spool = Spool::open(dir.path()).await.unwrap();
    assert_eq!(tmp_files(dir.path()), Vec::<PathBuf>::new());
    let kept_file = queue_file(dir.path(), &kept.id);
    let mut expected = vec![kept_file.clone(), layout::sidecar_path(&kept_file)];
    expected.sort();
    assert_eq!(queue_files(dir.path()), expected);
    assert_eq!(spool.list().await.unwrap(), vec![kept.id]);
}

#[tokio::test]
async fn unreadable_queue_files_move_to_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).await.unwrap();
    let good = envelope(&["bob@example.com"]);
    let truncated = envelope(&["bob@example.com"]);
    spool.commit(&good, message(1)).await.unwrap();
    spool.commit(&truncated, message(2)).await.unwrap();
    spool
        .record(&truncated.id, &[(0, RecipientStatus::Pending)])
        .await
        .unwrap();
    drop(spool);
    let queue = dir.path().join("queue");
    let file = OpenOptions::new()
        .write(true)
        .open(queue_file(dir.path(), &truncated.id))
        .unwrap();
    let len = file.metadata().unwrap().len();
    file.set_len(len - 3).unwrap();
    let garbage = Spool::new_id().to_string();
    fs::write(queue.join(&garbage), b"hello").unwrap();
    fs::write(queue.join("notes.txt"), b"not mine").unwrap();
    // A queue file in the wrong subdirectory would never be found by its id.
    let misplaced = Spool::new_id();
    let wrong = layout::BUCKETS[(layout::bucket(&misplaced) + 1) % 16];
    fs::copy(
        queue_file(dir.path(), &good.id),
        queue.join(wrong).join(misplaced.as_str()),
    )
    .unwrap();

    let spool = Spool::open(dir.path()).await.unwrap();
    assert_eq!(spool.list().await.unwrap(), vec![good.id]);
    assert_eq!(spool.stats().messages, 1);
    let mut expected = vec![
        truncated.id.to_string(),
        format!("{}{SIDECAR_SUFFIX}", truncated.id),
        garbage,
        misplaced.to_string(),
        "notes.txt".to_string(),
    ];
    expected.sort();
    assert_eq!(names(&dir.path().join("corrupt")), expected);
    assert_eq!(queue_files(dir.path()), [queue_file(dir.path(), &good.id)]);
    assert_eq!(names(&queue), layout::BUCKETS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_are_all_durable_with_distinct_ids() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).await.unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|n| {
            let spool = spool.clone();
            tokio::spawn(async move {
                let env = envelope(&["bob@example.com"]);
                spool.commit(&env, message(n)).await.map(|()| (env.id, n))
            })
        })
        .collect();
    let mut committed = Vec::new();
    for task in tasks {
        committed.push(task.await.unwrap().unwrap());
    }
    drop(spool);

    let spool = Spool::open(dir.path()).await.unwrap();
    let mut listed = spool.list().await.unwrap();
    listed.dedup();
    assert_eq!(listed.len(), 50);
    assert_eq!(spool.stats().messages, 50);
    for (id, n) in committed {
        assert_eq!(spool.load(&id).await.unwrap().message, message(n));
    }
}

#[tokio::test]
async fn failed_write_returns_err_and_queues_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).await.unwrap();
    fs::remove_dir_all(dir.path().join("tmp")).unwrap();
    let env = envelope(&["bob@example.com"]);
    assert!(spool.commit(&env, message(1)).await.is_err());
    assert!(queue_files(dir.path()).is_empty());
    assert_eq!(
        spool.stats(),
        SpoolStats {
            messages: 0,
            bytes: 0
        }
    );
}

#[test]
fn out_of_space_is_told_apart() {
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    let full = anyhow::Error::from(io::Error::from_raw_os_error(ENOSPC)).context("writing");
    let quota = anyhow::Error::from(io::Error::from_raw_os_error(EDQUOT)).context("writing");
    let denied = anyhow::Error::from(io::Error::from(io::ErrorKind::PermissionDenied));
    assert!(is_out_of_space(&full));
    assert!(is_out_of_space(&quota));
    assert!(!is_out_of_space(&denied));
    assert!(!is_out_of_space(&anyhow::anyhow!("other")));
}

#[tokio::test]
async fn commit_never_replaces_a_queued_message() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).await.unwrap();
    let env = envelope(&["bob@example.com"]);
    spool.commit(&env, message(1)).await.unwrap();
    assert!(spool.commit(&env, message(2)).await.is_err());
    assert_eq!(spool.load(&env.id).await.unwrap().message, message(1));
    assert_eq!(tmp_files(dir.path()), Vec::<PathBuf>::new());
    assert_eq!(spool.stats().messages, 1);
}

#[tokio::test]
async fn recipient_status_survives_reopen_and_torn_records() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).await.unwrap();
    let env = envelope(&["a@example.com", "b@example.com", "c@example.com"]);
    spool.commit(&env, message(1)).await.unwrap();
    let delivered = RecipientStatus::Delivered {
        outcome: Outcome::local(Status::new(2, 0, 0), "maildir"),
    };
    let failed = RecipientStatus::Failed {
        outcome: Outcome::local(Status::new(5, 1, 1), "no such user"),
    };
    let deferred = RecipientStatus::Deferred {
        attempts: 1,
        next_attempt: 1_700_000_300,
        outcome: Outcome::local(Status::new(4, 4, 1), "connection refused"),
        warned: true,
    };
    spool
        .record(&env.id, &[(0, delivered.clone())])
        .await
        .unwrap();
    spool.record(&env.id, &[(2, failed.clone())]).await.unwrap();
    // A crash in the middle of an append leaves half a record.
    let sidecar = layout::sidecar_path(&queue_file(dir.path(), &env.id));
    let mut f = OpenOptions::new().append(true).open(&sidecar).unwrap();
    f.write_all(b"\n{\"rcpt\":1,\"status\":{\"sta").unwrap();
    drop(spool);

    let spool = Spool::open(dir.path()).await.unwrap();
    let loaded = spool.load_envelope(&env.id).await.unwrap();
    let statuses: Vec<_> = loaded.recipients.iter().map(|r| r.status.clone()).collect();
    assert_eq!(
        statuses,
        [delivered.clone(), RecipientStatus::Pending, failed.clone()]
    );
    assert!(!loaded.is_done());

    spool
        .record(&env.id, &[(1, deferred.clone())])
        .await
        .unwrap();
    let loaded = spool.load(&env.id).await.unwrap().envelope;
    let statuses: Vec<_> = loaded.recipients.iter().map(|r| r.status.clone()).collect();
    assert_eq!(statuses, [delivered, deferred, failed]);
}

#[tokio::test]
async fn remove_deletes_message_and_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).await.unwrap();
    let env = envelope(&["bob@example.com"]);
    let other = envelope(&["bob@example.com"]);
    spool.commit(&env, message(1)).await.unwrap();
    spool.commit(&other, message(2)).await.unwrap();
    let before = spool.stats();
    spool
        .record(
            &env.id,
            &[(
                0,
                RecipientStatus::Delivered {
                    outcome: Outcome::local(Status::new(2, 0, 0), "x"),
                },
            )],
        )
        .await
        .unwrap();
    spool.remove(&env.id).await.unwrap();
    assert_eq!(queue_files(dir.path()), [queue_file(dir.path(), &other.id)]);
    let after = spool.stats();
    assert_eq!(after.messages, 1);
    assert!(after.bytes < before.bytes && after.bytes > 0);
    assert!(spool.load(&env.id).await.is_err());
}

/// Group commit figures: `cargo test --release spool::tests::group_commit_speed -- --ignored --nocapture`.
/// Runs on the worktree's disk (not a tmpfs), where fsync costs what it does in production.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; prints figures"]
async fn group_commit_speed() {
    let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
    let spool = Spool::open(dir.path()).await.unwrap();
    let msg = Bytes::from(vec![b'x'; 4096]);
    let rounds = 20;
    let start = Instant::now();
    for _ in 0..rounds {
        spool
            .commit(&envelope(&["bob@example.com"]), msg.clone())
            .await
            .unwrap();
    }
    let single = start.elapsed() / rounds;
    for _ in 0..3 {
        let start = Instant::now();
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (spool, msg) = (spool.clone(), msg.clone());
                tokio::spawn(async move {
                    spool
                        .commit(&envelope(&["bob@example.com"]), msg)
                        .await
                        .unwrap()
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let all = start.elapsed();
        println!(
            "single commit {single:?}; 50 concurrent commits {all:?} = {:.1} x single",
            all.as_secs_f64() / single.as_secs_f64()
        );
    }
}

/// Queue and status files written before the format had a version (by the commit
/// before structured outcomes).
const UNVERSIONED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/spool/testdata/unversioned"
);

fn mx_reply(name: &str, addr: [u8; 4], code: u16, enhanced: &str, text: &str) -> Cause {
    Cause::Reply {
        remote: Remote {
            kind: RemoteKind::Host,
            name: name.into(),
            addr: Some(addr.into()),
        },
        reply: Reply {
            code,
            enhanced: Some(enhanced.parse().unwrap()),
            text: text.into(),
        },
        command: Command::RcptTo,
    }
}

#[test]
fn unversioned_files_are_read_as_structured_outcomes() {
    let entries = inspect(Path::new(UNVERSIONED)).unwrap();
    let [entry] = &entries[..] else {
        panic!("{entries:?}");
    };
    let statuses: Vec<_> = entry
        .envelope
        .recipients
        .iter()
        .map(|r| r.status.clone())
        .collect();
    let relay = Cause::Reply {
        remote: Remote {
            kind: RemoteKind::Relay,
            name: "smtp.relay.example:587".into(),
            addr: None,
        },
        reply: Reply {
            code: 554,
            enhanced: None,
            text: "Transaction failed".into(),
        },
        command: Command::EndOfData,
    };
    let outcome = |status: &str, cause| Outcome {
        status: status.parse().unwrap(),
        cause,
        expired: false,
    };
    assert_eq!(
        statuses,
        [
            RecipientStatus::Deferred {
                attempts: 1,
                next_attempt: 1_764_000_400,
                outcome: outcome(
                    "4.3.0",
                    mx_reply(
                        "mx.temp.example",
                        [192, 0, 2, 3],
                        450,
                        "4.3.0",
                        "Try again later"
                    )
                ),
                warned: false,
            },
            RecipientStatus::Failed {
                outcome: outcome(
                    "5.1.1",
                    mx_reply(
                        "mx.reject.example",
                        [192, 0, 2, 4],
                        550,
                        "5.1.1",
                        "<carol@reject.example>: Recipient address rejected: User unknown"
                    )
                ),
            },
            RecipientStatus::Deferred {
                attempts: 1,
                next_attempt: 1_764_000_400,
                outcome: Outcome::local(
                    Status::new(4, 4, 1),
                    "connect to host mx.gone.example[192.0.2.5]:25: Connection refused (os error 111)"
                ),
                warned: false,
            },
            RecipientStatus::Delivered {
                outcome: Outcome::local(
                    Status::new(2, 0, 0),
                    "delivered to maildir /var/mail/example.com/erin"
                ),
            },
            RecipientStatus::Failed {
                outcome: outcome("5.0.0", relay),
            },
        ]
    );

    // Rendered, each outcome reads exactly as the old text did.
    let sidecar = fs::read_to_string(
        Path::new(UNVERSIONED)
            .join("queue")
            .join(format!("{}{SIDECAR_SUFFIX}", entry.envelope.id)),
    )
    .unwrap();
    let texts: Vec<String> = sidecar
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let record: serde_json::Value = serde_json::from_str(l).unwrap();
            let status = &record["status"];
            status
                .get("reason")
                .unwrap_or(&status["detail"])
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let rendered: Vec<String> = statuses
        .iter()
        .map(|s| match s {
            RecipientStatus::Deferred { outcome, .. }
            | RecipientStatus::Failed { outcome }
            | RecipientStatus::Delivered { outcome } => outcome.to_string(),
            RecipientStatus::Pending => String::new(),
        })
        .collect();
    assert_eq!(rendered, texts);
}

#[tokio::test]
async fn an_unversioned_message_takes_new_records_and_new_files_carry_the_version() {
    let dir = tempfile::tempdir().unwrap();
    let queue = dir.path().join("queue");
    fs::create_dir(&queue).unwrap();
    for entry in fs::read_dir(Path::new(UNVERSIONED).join("queue")).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), queue.join(entry.file_name())).unwrap();
    }
    let spool = Spool::open(dir.path()).await.unwrap();
    let [id] = spool.list().await.unwrap()[..] else {
        panic!("the fixture holds one message");
    };
    let delivered = RecipientStatus::Delivered {
        outcome: Outcome::local(Status::new(2, 0, 0), "delivered to maildir /m"),
    };
    spool.record(&id, &[(0, delivered.clone())]).await.unwrap();
    drop(spool);
    let spool = Spool::open(dir.path()).await.unwrap();
    assert_eq!(names(&dir.path().join("corrupt")), Vec::<String>::new());
    let loaded = spool.load(&id).await.unwrap();
    assert_eq!(loaded.envelope.recipients[0].status, delivered);
    assert!(matches!(
        loaded.envelope.recipients[1].status,
        RecipientStatus::Failed { .. }
    ));
    assert_eq!(
        &loaded.message[..],
        b"From: alice@example.com\r\nSubject: fixture\r\n\r\nHello\r\n"
    );
    let sidecar = fs::read_to_string(layout::sidecar_path(&queue_file(dir.path(), &id))).unwrap();
    assert!(sidecar.ends_with("\n{\"v\":3,\"rcpt\":0,\"status\":{\"state\":\"delivered\",\"outcome\":{\"status\":\"2.0.0\",\"cause\":\"local\",\"text\":\"delivered to maildir /m\"}}}\n"), "{sidecar}");

    let env = envelope(&["a@example.com"]);
    spool.commit(&env, message(1)).await.unwrap();
    let written = fs::read(queue_file(dir.path(), &env.id)).unwrap();
    assert!(written.starts_with(b"POSTHORN-QUEUE 3 "), "{written:?}");
}

#[test]
fn legacy_text_is_parsed_once_and_renders_back() {
    for text in [
        "5.1.1 host mx.example.net[2001:db8::1] said: 550 5.1.1 <b@x>: no (in reply to RCPT TO command) (message expired in the queue)",
        "4.0.0 lmtp unix:/run/lmtp said: 451 try later (in reply to end of DATA command)",
        "4.4.2 lost connection with host mx.x[192.0.2.1] while sending RCPT TO: timeout",
        "5.1.3 mailbox name \"..\" is not usable as a directory",
        "5.6.3 host mx.x[192.0.2.1] said: nothing parseable",
    ] {
        assert_eq!(
            legacy::outcome(text, Status::new(5, 0, 0)).to_string(),
            text
        );
    }
    let expired = legacy::outcome(
        "5.1.1 host mx.example.net[2001:db8::1] said: 550 5.1.1 <b@x>: no (in reply to RCPT TO command) (message expired in the queue)",
        Status::new(5, 0, 0),
    );
    assert!(expired.expired);
    assert!(matches!(
        expired.cause,
        Cause::Reply { ref remote, .. } if remote.addr == Some("2001:db8::1".parse().unwrap())
    ));
    assert!(matches!(
        legacy::outcome(
            "5.6.3 host mx.x[192.0.2.1] said: nothing parseable",
            Status::new(5, 0, 0)
        )
        .cause,
        Cause::Local { .. }
    ));
    // No status code: the state's class.
    assert_eq!(
        legacy::outcome("delivered", Status::new(2, 0, 0)).to_string(),
        "2.0.0 delivered"
    );
}

#[test]
fn unversioned_envelope_statuses_are_converted_too() {
    let json = br#"{"id":"1K1E9MFM7GVE6DG","mail_from":"","recipients":[{"address":"a@x","status":{"state":"failed","reason":"5.1.1 host mx.x[192.0.2.1] said: 550 5.1.1 no (in reply to RCPT TO command)"}}],"client_addr":"192.0.2.1:25","client_helo":"h","listener":"smtp","received_at":1}"#;
    let mut file = format!("POSTHORN-QUEUE 1 {} 2\n", json.len()).into_bytes();
    file.extend_from_slice(json);
    file.extend_from_slice(b"\nhi");
    let (envelope, start) = format::read_prefix(&mut &file[..], file.len() as u64).unwrap();
    assert_eq!(start as usize, file.len() - 2);
    let RecipientStatus::Failed { outcome } = &envelope.recipients[0].status else {
        panic!("{envelope:?}");
    };
    assert!(matches!(outcome.cause, Cause::Reply { .. }), "{outcome:?}");
    assert_eq!(
        outcome.to_string(),
        "5.1.1 host mx.x[192.0.2.1] said: 550 5.1.1 no (in reply to RCPT TO command)"
    );
    let unknown = [b"POSTHORN-QUEUE 3".as_slice(), &file[16..]].concat();
    assert!(format::read_prefix(&mut &unknown[..], unknown.len() as u64).is_err());
}

#[test]
fn version_2_deferrals_read_as_not_warned_and_version_3_keeps_the_flag() {
    let warned = RecipientStatus::Deferred {
        attempts: 2,
        next_attempt: 1_700_000_600,
        outcome: Outcome::local(Status::new(4, 4, 1), "connection refused"),
        warned: true,
    };
    let current = format::encode_status(&[(0, warned.clone())]);
    let text = String::from_utf8(current.clone()).unwrap();
    assert!(
        text.contains(r#""v":3"#) && text.contains(r#""warned":true"#),
        "{text}"
    );
    // The same record as version 2 wrote it: no flag.
    let v2 = text
        .replace(r#""v":3"#, r#""v":2"#)
        .replace(r#","warned":true"#, "");
    let mut envelope = Envelope::sample("alice@example.com", &["bob@example.net"]);
    format::apply_status(&mut envelope, v2.as_bytes());
    let RecipientStatus::Deferred { warned: false, .. } = envelope.recipients[0].status else {
        panic!("{:?}", envelope.recipients[0].status);
    };
    format::apply_status(&mut envelope, &current);
    assert_eq!(envelope.recipients[0].status, warned);
}

#[tokio::test]
async fn contains_follows_commit_and_remove() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).await.unwrap();
    let env = envelope(&["bob@example.com"]);
    assert!(!spool.contains(&env.id));
    spool.commit(&env, message(1)).await.unwrap();
    assert!(spool.contains(&env.id));
    spool.remove(&env.id).await.unwrap();
    assert!(!spool.contains(&env.id));
}

/// `inspect` runs beside a server: a message that leaves the queue between the listing
/// and the read is skipped (a dangling link plays it), any other read error is one.
#[tokio::test]
async fn inspect_skips_vanished_messages_only() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).await.unwrap();
    let env = envelope(&["bob@example.com"]);
    spool.commit(&env, message(1)).await.unwrap();
    let vanished = queue_file(dir.path(), &Spool::new_id());
    std::os::unix::fs::symlink(dir.path().join("gone"), &vanished).unwrap();
    let entries = inspect(dir.path()).unwrap();
    let ids: Vec<_> = entries.iter().map(|e| e.envelope.id).collect();
    assert_eq!(ids, [env.id]);

    // A link to itself: ELOOP, not ENOENT.
    fs::remove_file(&vanished).unwrap();
    std::os::unix::fs::symlink(&vanished, &vanished).unwrap();
    let error = format!("{:#}", inspect(dir.path()).unwrap_err());
    assert!(error.starts_with("reading "), "{error}");
}

/// A missing sidecar is "no outcomes yet"; one that cannot be read or removed is an
/// error, never silently no outcomes.
#[tokio::test]
async fn sidecar_errors_other_than_absence_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).await.unwrap();
    let env = envelope(&["bob@example.com"]);
    spool.commit(&env, message(1)).await.unwrap();
    assert_eq!(spool.load(&env.id).await.unwrap().envelope, env);
    let sidecar = layout::sidecar_path(&queue_file(dir.path(), &env.id));
    fs::create_dir(&sidecar).unwrap();
    fs::write(sidecar.join("x"), b"").unwrap();
    assert!(spool.load(&env.id).await.is_err());
    assert!(spool.remove(&env.id).await.is_err());
}

#[test]
fn a_message_is_done_when_every_recipient_is_final() {
    let outcome = |code| Outcome::local(code, "x");
    let deferred = RecipientStatus::Deferred {
        attempts: 1,
        next_attempt: 0,
        outcome: outcome(Status::new(4, 0, 0)),
        warned: false,
    };
    let delivered = RecipientStatus::Delivered {
        outcome: outcome(Status::new(2, 0, 0)),
    };
    let failed = RecipientStatus::Failed {
        outcome: outcome(Status::new(5, 0, 0)),
    };
    for (status, is_final) in [
        (RecipientStatus::Pending, false),
        (deferred.clone(), false),
        (delivered.clone(), true),
        (failed.clone(), true),
    ] {
        assert_eq!(status.is_final(), is_final, "{status:?}");
    }
    let mut env = envelope(&["a@example.com", "b@example.com"]);
    env.recipients[0].status = delivered;
    env.recipients[1].status = deferred;
    assert!(!env.is_done());
    env.recipients[1].status = failed;
    assert!(env.is_done());
}

#[test]
fn enhanced_status_codes_parse_strictly() {
    let status: Status = "5.1.10".parse().unwrap();
    assert_eq!(status, Status::new(5, 1, 10));
    assert_eq!(status.to_string(), "5.1.10");
    assert_eq!("4.999.0".parse::<Status>().unwrap(), Status::new(4, 999, 0));
    for bad in [
        "3.1.1", "5.1", "5.1.1.1", "5.1000.1", "5.1.1000", "5..1", "5.a.1",
    ] {
        assert!(bad.parse::<Status>().is_err(), "{bad}");
    }
}

#[test]
fn legacy_lmtp_text_reads_as_the_lmtp_server_s_reply() {
    let outcome = legacy::outcome(
        "4.0.0 lmtp unix:/run/lmtp said: 451 try later (in reply to end of DATA command)",
        Status::new(5, 0, 0),
    );
    let Cause::Reply {
        remote, command, ..
    } = outcome.cause
    else {
        panic!("{outcome:?}");
    };
    assert_eq!(
        (remote.kind, remote.name.as_str(), command),
        (RemoteKind::Lmtp, "unix:/run/lmtp", Command::EndOfData)
    );
}

/// A spool written before the subdirectories (every file in `queue/` itself) is read by
/// the tools as it is, and moved into the subdirectories by the next server to open it,
/// status sidecar included, without losing a message or an outcome.
#[tokio::test]
async fn a_flat_spool_of_an_older_release_is_read_and_moved_into_subdirectories() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).await.unwrap();
    let (a, b) = (
        envelope(&["bob@example.com"]),
        envelope(&["carol@example.com"]),
    );
    spool.commit(&a, message(1)).await.unwrap();
    spool.commit(&b, message(2)).await.unwrap();
    let delivered = RecipientStatus::Delivered {
        outcome: Outcome::local(Status::new(2, 0, 0), "x"),
    };
    spool
        .record(&a.id, &[(0, delivered.clone())])
        .await
        .unwrap();
    drop(spool);
    // Flatten it, as the older release wrote it.
    let queue = dir.path().join("queue");
    for path in queue_files(dir.path()) {
        fs::rename(&path, queue.join(path.file_name().unwrap())).unwrap();
    }
    for bucket in layout::BUCKETS {
        fs::remove_dir(queue.join(bucket)).unwrap();
    }

    let listed: Vec<QueueId> = inspect(dir.path())
        .unwrap()
        .into_iter()
        .map(|e| e.envelope.id)
        .collect();
    assert_eq!(listed, [a.id, b.id]);
    assert_eq!(
        inspect_message(dir.path(), &b.id).unwrap().message,
        message(2)
    );

    let spool = Spool::open(dir.path()).await.unwrap();
    assert_eq!(names(&queue), layout::BUCKETS);
    let a_file = queue_file(dir.path(), &a.id);
    let mut expected = vec![
        a_file.clone(),
        layout::sidecar_path(&a_file),
        queue_file(dir.path(), &b.id),
    ];
    expected.sort();
    assert_eq!(queue_files(dir.path()), expected);
    assert_eq!(names(&dir.path().join("corrupt")), Vec::<String>::new());
    assert_eq!(spool.list().await.unwrap(), [a.id, b.id]);
    assert_eq!(spool.stats().messages, 2);
    let loaded = spool.load(&a.id).await.unwrap();
    assert_eq!(loaded.envelope.recipients[0].status, delivered);
    assert_eq!(loaded.message, message(1));
    spool.remove(&a.id).await.unwrap();
    assert_eq!(queue_files(dir.path()), [queue_file(dir.path(), &b.id)]);
}

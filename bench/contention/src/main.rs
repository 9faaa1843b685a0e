//! Contention microbenchmark for bench/RESULTS.md ("Contention"): many tasks on a
//! tokio runtime with few worker threads, all hammering one piece of the state that
//! every session shares, as the server's sessions do. Prints operations per second per
//! scenario; a scenario whose rate falls as tasks or threads are added is contended.
//! Lock waits show in `perf stat -e syscalls:sys_enter_futex` (see RESULTS.md).
//!
//! Scenarios:
//! - `stress-check`: `ConnectionLimits::stressed`, which a session asks on every read
//!   and reply to pick its timeout;
//! - `slot`: take and give back a connection slot (per-address map), from 4 addresses;
//! - `metrics`: count an accepted message (two counter families, one label set);
//! - `spool`: commit a ~4 KiB message to a spool on disk (file, directory fsyncs) and
//!   remove it again.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::Parser;
use posthorn::smtp::ConnectionLimits;
use posthorn::spool::{Envelope, Recipient, Spool};
use posthorn::telemetry::Metrics;

#[derive(Parser)]
struct Args {
    /// Scenarios to run, comma-separated.
    #[arg(long, default_value = "stress-check,slot,metrics,spool")]
    scenarios: String,
    /// Task counts to run each scenario with, comma-separated.
    #[arg(long, default_value = "1,100")]
    tasks: String,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Seconds per scenario and task count.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Where the `spool` scenario's spool goes: on the disk to measure, not a tmpfs.
    #[arg(long, default_value = "target")]
    spool_parent: PathBuf,
}

#[derive(Clone)]
enum Shared {
    Limits(Arc<ConnectionLimits>),
    Metrics(Arc<Metrics>),
    Spool(Arc<Spool>),
}

impl Shared {
    /// One operation of task `task`.
    async fn op(&self, task: usize, message: &Bytes) -> anyhow::Result<()> {
        match self {
            Shared::Limits(limits) if task == usize::MAX => {
                std::hint::black_box(limits.stressed());
            }
            Shared::Limits(limits) => {
                let ip = IpAddr::from([127, 0, 0, 1 + (task % 4) as u8]);
                let slot = limits.acquire(ip).map_err(|e| anyhow::anyhow!("{e:?}"))?;
                drop(slot);
            }
            Shared::Metrics(metrics) => metrics.message_accepted("submission", 4096),
            Shared::Spool(spool) => {
                let envelope = envelope();
                spool.commit(&envelope, message.clone()).await?;
                spool.remove(&envelope.id).await?;
            }
        }
        Ok(())
    }
}

fn envelope() -> Envelope {
    Envelope {
        id: Spool::new_id(),
        mail_from: "bench@example.test".into(),
        body: None,
        smtputf8: false,
        ret: None,
        envid: None,
        recipients: vec![Recipient::new("sink@sink.test")],
        login: Some("bench@example.test".into()),
        client_addr: "127.0.0.1:40000".parse().expect("a socket address"),
        client_helo: "loadgen".into(),
        listener: "submission".into(),
        tls: None,
        received_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    }
}

/// Runs `tasks` tasks doing `scenario` for `seconds`; answers operations per second.
async fn measure(shared: Shared, stress: bool, tasks: usize, seconds: f64) -> anyhow::Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let message = Bytes::from(vec![b'x'; 4096]);
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|n| {
            let (shared, stop, message) = (shared.clone(), stop.clone(), message.clone());
            let task = if stress { usize::MAX } else { n };
            tokio::spawn(async move {
                let mut ops = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    shared.op(task, &message).await?;
                    ops += 1;
                    // Sessions give the worker back at every read; so do these.
                    if ops.is_multiple_of(16) {
                        tokio::task::yield_now().await;
                    }
                }
                anyhow::Ok(ops)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for handle in handles {
        total += handle.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let spool_dir = tempfile::tempdir_in(&args.spool_parent)?;
        for scenario in args.scenarios.split(',') {
            let (shared, stress) = match scenario {
                "stress-check" | "slot" => (
                    Shared::Limits(Arc::new(ConnectionLimits::new(100_000, 100_000, 100_000))),
                    scenario == "stress-check",
                ),
                "metrics" => (Shared::Metrics(Arc::new(Metrics::new())), false),
                "spool" => (Shared::Spool(Spool::open(spool_dir.path()).await?), false),
                other => anyhow::bail!("unknown scenario {other}"),
            };
            for tasks in args.tasks.split(',') {
                let tasks: usize = tasks.parse()?;
                let rate = measure(shared.clone(), stress, tasks, args.seconds).await?;
                println!(
                    "{scenario:<13} threads {} tasks {tasks:>4} {rate:>14.0} ops/s",
                    args.threads
                );
            }
        }
        anyhow::Ok(())
    })
}

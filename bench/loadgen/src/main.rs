//! SMTP submission load generator for bench/: C concurrent clients, each opening
//! connections that do EHLO, STARTTLS (a full handshake unless `--resume`), AUTH PLAIN,
//! M messages of about `--size` bytes with unique Message-IDs, and QUIT; for
//! `--duration` or until `--total` messages were sent. Prints msgs/s, latency
//! percentiles per message and per connection, and errors by reply, as text or JSON.

mod report;
mod session;
mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use tokio_rustls::TlsConnector;

use crate::report::Totals;
use crate::session::Setup;

#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Submission port to load, `host:port` (STARTTLS required there).
    #[arg(long)]
    addr: String,
    /// The server's certificate (PEM): pinned, the only one accepted.
    #[arg(long)]
    cert: String,
    /// TLS server name sent (SNI).
    #[arg(long, default_value = "localhost")]
    server_name: String,
    #[arg(long)]
    user: String,
    #[arg(long)]
    password: String,
    /// Envelope and header sender; by default the user.
    #[arg(long)]
    from: Option<String>,
    #[arg(long)]
    rcpt: String,
    /// Concurrent clients (C).
    #[arg(long, short = 'c', default_value_t = 10)]
    clients: usize,
    /// Messages per connection (M).
    #[arg(long, short = 'm', default_value_t = 1)]
    messages: u64,
    /// Stop starting connections after this long (e.g. 10s).
    #[arg(long, value_parser = parse_duration, conflicts_with = "total")]
    duration: Option<Duration>,
    /// Stop after this many messages in all (the last connection may send fewer than M).
    #[arg(long)]
    total: Option<u64>,
    /// Approximate message size in bytes, headers included.
    #[arg(long, default_value_t = 4096)]
    size: usize,
    /// Resume TLS sessions across connections instead of a full handshake each time.
    #[arg(long)]
    resume: bool,
    /// Longest wait for one reply, in seconds.
    #[arg(long, default_value_t = 120)]
    reply_timeout: u64,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Idle-session mode: open C sessions (full handshake, EHLO, AUTH), print one JSON
    /// line `{"held": n, "errors": {...}}` once all are up, and keep them idle until
    /// stdin closes. For the server's memory per idle TLS session (bench/idle.py).
    #[arg(long)]
    hold: bool,
    /// Spread connections over this many source addresses 127.0.0.1, 127.0.0.2, ...
    #[arg(long, default_value_t = 1)]
    sources: u8,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let secs = s.strip_suffix('s').unwrap_or(s);
    secs.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{s:?}: expected seconds, e.g. 10s"))
}

/// When clients stop opening connections.
enum Budget {
    Until(Instant),
    /// Messages not yet handed to a connection.
    Messages(AtomicU64),
}

impl Budget {
    /// How many messages the next connection sends, or None when the run is over.
    fn take(&self, per_connection: u64) -> Option<u64> {
        match self {
            Budget::Until(deadline) => (Instant::now() < *deadline).then_some(per_connection),
            Budget::Messages(left) => {
                let mut taken = 0;
                left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    taken = n.min(per_connection);
                    Some(n - taken)
                })
                .ok();
                (taken > 0).then_some(taken)
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.clients > 0 && args.messages > 0,
        "clients and messages must be > 0"
    );
    let config = tls::client_config(&args.cert, args.resume)?;
    let server_name = rustls::pki_types::ServerName::try_from(args.server_name.clone())
        .context("--server-name")?;
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let setup = Arc::new(Setup {
        addr: args.addr.clone(),
        tls: TlsConnector::from(config),
        server_name,
        auth_plain: session::auth_plain(&args.user, &args.password),
        from: args.from.clone().unwrap_or_else(|| args.user.clone()),
        rcpt: args.rcpt.clone(),
        body: session::body(args.size),
        run_id: format!("{nanos:x}.{}", std::process::id()),
        reply_timeout: Duration::from_secs(args.reply_timeout),
    });
    if args.hold {
        return hold(&setup, args.clients, args.sources).await;
    }
    let started = Instant::now();
    let budget = Arc::new(match (args.duration, args.total) {
        (_, Some(total)) => Budget::Messages(AtomicU64::new(total)),
        (Some(duration), None) => Budget::Until(started + duration),
        (None, None) => anyhow::bail!("give --duration or --total"),
    });
    // Message ids stay unique across connections of a client: seq counts on.
    let tasks: Vec<_> = (0..args.clients)
        .map(|client| {
            let (setup, budget) = (setup.clone(), budget.clone());
            let per_connection = args.messages;
            tokio::spawn(async move {
                let mut totals = Totals::default();
                let mut seq = 0;
                while let Some(n) = budget.take(per_connection) {
                    totals.add(session::run(&setup, client, seq, n).await);
                    seq += n;
                }
                totals
            })
        })
        .collect();
    let mut totals = Totals::default();
    for task in tasks {
        totals.merge(task.await?);
    }
    let report = totals.report(args.clients, args.messages, started.elapsed());
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}

/// Opens `clients` sessions (at most 256 handshakes at a time, so the server's listen
/// backlog is not the limit), reports, and holds them until stdin closes.
async fn hold(setup: &Arc<Setup>, clients: usize, sources: u8) -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt;
    let gate = Arc::new(tokio::sync::Semaphore::new(256));
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let (setup, gate) = (setup.clone(), gate.clone());
            let last = (i % usize::from(sources.max(1))) as u8 + 1;
            let source = std::net::IpAddr::from([127, 0, 0, last]);
            tokio::spawn(async move {
                let _permit = gate.acquire().await;
                session::open(&setup, Some(source)).await
            })
        })
        .collect();
    let mut held = Vec::new();
    let mut errors = std::collections::BTreeMap::<String, u64>::new();
    for task in tasks {
        match task.await? {
            Ok(conn) => held.push(conn),
            Err(e) => *errors.entry(e).or_default() += 1,
        }
    }
    println!(
        "{}",
        serde_json::json!({"held": held.len(), "errors": errors})
    );
    let mut rest = Vec::new();
    tokio::io::stdin().read_to_end(&mut rest).await?;
    drop(held);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_budget_is_split_into_connections_of_at_most_m() {
        let budget = Budget::Messages(AtomicU64::new(25));
        let taken: Vec<_> = std::iter::from_fn(|| budget.take(10)).collect();
        assert_eq!(taken, [10, 10, 5]);
    }

    #[test]
    fn durations_parse_with_or_without_unit() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("0").is_err() && parse_duration("x").is_err());
    }
}

//! What a run measured, merged over its clients, as JSON (for bench/matrix.py) or text.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::session::Outcome;

/// Everything the clients observed, merged.
#[derive(Default)]
pub struct Totals {
    message_latencies: Vec<Duration>,
    connection_times: Vec<Duration>,
    attempted: u64,
    connections: u64,
    errors: BTreeMap<String, u64>,
    full_handshakes: u64,
    resumed_handshakes: u64,
}

impl Totals {
    pub fn add(&mut self, outcome: Outcome) {
        self.connections += 1;
        self.attempted += outcome.attempted;
        self.message_latencies.extend(outcome.message_latencies);
        self.connection_times.extend(outcome.connection_time);
        match outcome.resumed {
            Some(true) => self.resumed_handshakes += 1,
            Some(false) => self.full_handshakes += 1,
            None => {}
        }
        if let Some(error) = outcome.error {
            *self.errors.entry(error).or_default() += 1;
        }
    }

    pub fn merge(&mut self, other: Totals) {
        self.message_latencies.extend(other.message_latencies);
        self.connection_times.extend(other.connection_times);
        self.attempted += other.attempted;
        self.connections += other.connections;
        self.full_handshakes += other.full_handshakes;
        self.resumed_handshakes += other.resumed_handshakes;
        for (error, n) in other.errors {
            *self.errors.entry(error).or_default() += n;
        }
    }

    pub fn report(mut self, clients: usize, messages: u64, elapsed: Duration) -> Report {
        let accepted = self.message_latencies.len() as u64;
        Report {
            clients,
            messages_per_connection: messages,
            elapsed_s: elapsed.as_secs_f64(),
            connections: self.connections,
            attempted: self.attempted,
            accepted,
            msgs_per_s: accepted as f64 / elapsed.as_secs_f64(),
            message_ms: Percentiles::of(&mut self.message_latencies),
            connection_ms: Percentiles::of(&mut self.connection_times),
            full_handshakes: self.full_handshakes,
            resumed_handshakes: self.resumed_handshakes,
            error_count: self.errors.values().sum(),
            errors: self.errors,
        }
    }
}

#[derive(Serialize)]
pub struct Report {
    pub clients: usize,
    pub messages_per_connection: u64,
    pub elapsed_s: f64,
    /// Connections opened, including those that failed.
    pub connections: u64,
    /// Messages for which MAIL FROM was sent.
    pub attempted: u64,
    /// Messages answered 250 after their data: what the sink must receive.
    pub accepted: u64,
    pub msgs_per_s: f64,
    pub message_ms: Percentiles,
    /// Connect to QUIT's reply, over the connections that completed.
    pub connection_ms: Percentiles,
    /// TLS handshakes done in full and resumed (rustls' `handshake_kind()`): whether
    /// `--resume` got the server to resume.
    pub full_handshakes: u64,
    pub resumed_handshakes: u64,
    pub error_count: u64,
    /// `stage: reply` (or I/O error) that ended a connection early, with counts.
    pub errors: BTreeMap<String, u64>,
}

#[derive(Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    fn of(samples: &mut [Duration]) -> Percentiles {
        samples.sort_unstable();
        let at = |q: f64| {
            if samples.is_empty() {
                return 0.0;
            }
            // Nearest rank: the smallest sample with at least q of them at or below it.
            let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            samples[rank - 1].as_secs_f64() * 1e3
        };
        Percentiles {
            p50: at(0.50),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "C={} M={}: {} accepted of {} attempted in {:.1} s: {:.0} msgs/s",
            self.clients,
            self.messages_per_connection,
            self.accepted,
            self.attempted,
            self.elapsed_s,
            self.msgs_per_s
        )?;
        writeln!(
            f,
            "per message ms: p50 {:.1} p99 {:.1} max {:.1}; per connection ms: p50 {:.1} p99 {:.1}",
            self.message_ms.p50,
            self.message_ms.p99,
            self.message_ms.max,
            self.connection_ms.p50,
            self.connection_ms.p99
        )?;
        writeln!(
            f,
            "TLS handshakes: {} full, {} resumed",
            self.full_handshakes, self.resumed_handshakes
        )?;
        writeln!(f, "errors: {}", self.error_count)?;
        for (error, n) in &self.errors {
            writeln!(f, "  {n} × {error}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let p = Percentiles::of(&mut samples);
        assert_eq!((p.p50, p.p99, p.max), (50.0, 99.0, 100.0));
        // With ten samples the 99th percentile is the largest, not the ninth.
        let mut samples: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        let p = Percentiles::of(&mut samples);
        assert_eq!((p.p50, p.p99), (5.0, 10.0));
        let p = Percentiles::of(&mut []);
        assert_eq!((p.p50, p.p99, p.max), (0.0, 0.0, 0.0));
    }

    #[test]
    fn errors_are_counted_by_reply() {
        let mut totals = Totals::default();
        for error in [
            "RCPT: 421 4.7.0 busy",
            "RCPT: 421 4.7.0 busy",
            "connect: refused",
        ] {
            totals.add(Outcome {
                error: Some(error.into()),
                attempted: 1,
                ..Outcome::default()
            });
        }
        totals.add(Outcome {
            message_latencies: vec![Duration::from_millis(3)],
            attempted: 1,
            connection_time: Some(Duration::from_millis(9)),
            error: None,
            resumed: Some(true),
        });
        totals.add(Outcome {
            resumed: Some(false),
            ..Outcome::default()
        });
        let report = totals.report(2, 1, Duration::from_secs(1));
        assert_eq!(
            (report.attempted, report.accepted, report.error_count),
            (4, 1, 3)
        );
        assert_eq!(report.errors["RCPT: 421 4.7.0 busy"], 2);
        assert_eq!(report.connection_ms.p50, 9.0);
        assert_eq!((report.full_handshakes, report.resumed_handshakes), (1, 1));
    }
}

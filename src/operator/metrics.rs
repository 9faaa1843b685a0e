//! The operator's own metrics, served by `telemetry::serve_http` like the server's.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::telemetry::Exposition;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

/// `posthorn_operator_*`: reconciles by result, their duration, objects written.
pub struct OperatorMetrics {
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    duration: Histogram,
    applies: Family<KindLabels, Counter>,
    leader: Gauge,
}

impl OperatorMetrics {
    pub fn new() -> OperatorMetrics {
        let mut registry = Registry::with_prefix("posthorn_operator");
        let reconciles = Family::default();
        registry.register(
            "reconciles",
            "MailServer reconciles by result (ok, error)",
            Family::clone(&reconciles),
        );
        // 1 ms to about 16 s.
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "reconcile_duration_seconds",
            "Time a MailServer reconcile takes",
            duration.clone(),
        );
        let applies = Family::default();
        registry.register(
            "applies",
            "Objects written by server-side apply, by kind (unchanged objects are skipped)",
            Family::clone(&applies),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease and runs the controller",
            leader.clone(),
        );
        OperatorMetrics {
            registry,
            reconciles,
            duration,
            applies,
            leader,
        }
    }

    pub fn reconciled(&self, ok: bool, took: Duration) {
        let result = if ok { "ok" } else { "error" };
        self.reconciles
            .get_or_create(&ResultLabels { result })
            .inc();
        self.duration.observe(took.as_secs_f64());
    }

    pub fn applied(&self, kind: &str) {
        self.applies
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc();
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(leader.into());
    }
}

impl Exposition for OperatorMetrics {
    fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_reconciles_durations_and_applies() {
        let m = OperatorMetrics::new();
        m.reconciled(true, Duration::from_millis(3));
        m.reconciled(false, Duration::from_millis(3));
        m.reconciled(true, Duration::from_millis(3));
        m.applied("Deployment");
        m.set_leader(true);
        let text = m.encode();
        for line in [
            r#"posthorn_operator_reconciles_total{result="ok"} 2"#,
            r#"posthorn_operator_reconciles_total{result="error"} 1"#,
            "posthorn_operator_reconcile_duration_seconds_count 3",
            r#"posthorn_operator_applies_total{kind="Deployment"} 1"#,
            "posthorn_operator_leader 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}

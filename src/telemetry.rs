//! Logs, metrics and health endpoints.
//!
//! Logs go to stderr as plain text or JSON, with the fields of every enclosing span (the
//! SMTP session's `listener` and `client`) on each line. Metrics are Prometheus/OpenMetrics
//! counters and gauges in a registry owned by [`Metrics`], served over HTTP together with
//! `/healthz` and `/readyz`.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// Installs the global log subscriber: level from `RUST_LOG` (default `info`), output to
/// stderr. A second call leaves the first subscriber in place.
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env_lossy();
    // Colours only for a person at a terminal, not in collected container logs.
    let ansi = std::io::stderr().is_terminal();
    // Also routes the `log` records of rustls and friends into tracing.
    let _ = subscriber(format, filter, ansi, std::io::stderr).try_init();
}

fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    ansi: bool,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        // The plain formatter prints `span{field=value}:` for each enclosing span.
        LogFormat::Plain => Box::new(builder.finish()),
        // `span` holds the innermost span's fields, `spans` all of them (outer first).
        LogFormat::Json => Box::new(
            builder
                .json()
                .with_current_span(true)
                .with_span_list(true)
                .finish(),
        ),
    }
}

pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    listener: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    listener: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthLabels {
    listener: &'static str,
    mechanism: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    destination: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DestinationLabels {
    destination: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    state: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// 5 ms to about 80 s: a Maildir write to a slow relay's end of data.
fn delivery_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// The server's metrics, all named `posthorn_*`. Label values are `&'static str`, so an
/// update is a map lookup under a read lock and an atomic add, without allocating.
pub struct Metrics {
    registry: Registry,
    connections: Family<ListenerLabels, Counter>,
    connections_active: Family<ListenerLabels, Gauge>,
    connections_rejected: Family<ReasonLabels, Counter>,
    tls_handshakes: Family<ResultLabels, Counter>,
    auth_attempts: Family<AuthLabels, Counter>,
    auth_throttled: Family<ListenerLabels, Counter>,
    auth_throttle_keys: Gauge<u64, AtomicU64>,
    messages_accepted: Family<ListenerLabels, Counter>,
    messages_rejected: Family<ReasonLabels, Counter>,
    message_bytes_accepted: Family<ListenerLabels, Counter>,
    spool_messages: Gauge<u64, AtomicU64>,
    spool_bytes: Gauge<u64, AtomicU64>,
    deliveries: Family<DeliveryLabels, Counter>,
    delivery_duration: HistogramFamily<DestinationLabels>,
    queue_messages: Family<QueueLabels, Gauge<u64, AtomicU64>>,
    queue_oldest_age: Gauge<u64, AtomicU64>,
}

/// The registry being filled by [`Metrics::new`].
struct Registrar(Registry);

impl Registrar {
    /// Registers `metric` under `name` and hands it back: the registry keeps a clone
    /// that shares its values.
    fn add<M: Metric + Clone>(&mut self, name: &str, help: &str, metric: M) -> M {
        self.0.register(name, help, metric.clone());
        metric
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registrar(Registry::with_prefix("posthorn"));
        // Counters get their `_total` suffix from the encoder. Fields are registered in
        // the order written, which is the order `/metrics` lists them in.
        Metrics {
            connections: r.add(
                "connections",
                "SMTP connections accepted",
                Family::default(),
            ),
            connections_active: r.add(
                "connections_active",
                "SMTP connections open now",
                Family::default(),
            ),
            connections_rejected: r.add(
                "connections_rejected",
                "SMTP connections refused by a connection limit (limit_total, limit_per_ip, limit_per_network)",
                Family::default(),
            ),
            tls_handshakes: r.add(
                "tls_handshakes",
                "TLS handshakes by result (ok, failed)",
                Family::default(),
            ),
            auth_attempts: r.add(
                "auth_attempts",
                "SASL authentication attempts by mechanism and result (success, failure)",
                Family::default(),
            ),
            auth_throttled: r.add(
                "auth_throttled",
                "SASL attempts refused with 454 unchecked: too many recent failed logins",
                Family::default(),
            ),
            auth_throttle_keys: r.add(
                "auth_throttle_tracked_keys",
                "Client addresses and logins the failed-login throttle remembers",
                Gauge::default(),
            ),
            messages_accepted: r.add(
                "messages_accepted",
                "Messages accepted into the spool",
                Family::default(),
            ),
            messages_rejected: r.add(
                "messages_rejected",
                "Messages or recipients rejected, by reason",
                Family::default(),
            ),
            message_bytes_accepted: r.add(
                "message_bytes_accepted",
                "Bytes of messages accepted into the spool",
                Family::default(),
            ),
            spool_messages: r.add(
                "spool_messages",
                "Messages waiting in the spool",
                Gauge::default(),
            ),
            spool_bytes: r.add(
                "spool_bytes",
                "Bytes of messages waiting in the spool",
                Gauge::default(),
            ),
            deliveries: r.add(
                "deliveries",
                "Recipient delivery attempts by destination class (local, lmtp, relay, mx) and \
             outcome (delivered, deferred, failed)",
                Family::default(),
            ),
            delivery_duration: r.add(
                "delivery_duration_seconds",
                "Time of one delivery transaction, by destination class",
                Family::new_with_constructor(delivery_histogram),
            ),
            queue_messages: r.add(
                "queue_messages",
                "Queued messages by state: active (being delivered), waiting (for a retry)",
                Family::default(),
            ),
            queue_oldest_age: r.add(
                "queue_oldest_message_age_seconds",
                "Age of the oldest message in the queue (0 when it is empty)",
                Gauge::default(),
            ),
            registry: r.0,
        }
    }

    pub fn connection_opened(&self, listener: &'static str) {
        let labels = ListenerLabels { listener };
        self.connections.get_or_create(&labels).inc();
        self.connections_active.get_or_create(&labels).inc();
    }

    pub fn connection_closed(&self, listener: &'static str) {
        self.connections_active
            .get_or_create(&ListenerLabels { listener })
            .dec();
    }

    /// `reason`: "limit_total", "limit_per_ip", "limit_per_network" or "proxy_protocol".
    pub fn connection_rejected(&self, listener: &'static str, reason: &'static str) {
        self.connections_rejected
            .get_or_create(&ReasonLabels { listener, reason })
            .inc();
    }

    pub fn tls_handshake(&self, listener: &'static str, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.tls_handshakes
            .get_or_create(&ResultLabels { listener, result })
            .inc();
    }

    pub fn auth_attempt(&self, listener: &'static str, mechanism: &'static str, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.auth_attempts
            .get_or_create(&AuthLabels {
                listener,
                mechanism,
                result,
            })
            .inc();
    }

    /// An attempt the throttle refused.
    pub fn auth_throttled(&self, listener: &'static str) {
        self.auth_throttled
            .get_or_create(&ListenerLabels { listener })
            .inc();
    }

    pub fn set_auth_throttle_keys(&self, keys: usize) {
        self.auth_throttle_keys
            .set(u64::try_from(keys).unwrap_or(u64::MAX));
    }

    pub fn message_accepted(&self, listener: &'static str, bytes: u64) {
        let labels = ListenerLabels { listener };
        self.messages_accepted.get_or_create(&labels).inc();
        self.message_bytes_accepted
            .get_or_create(&labels)
            .inc_by(bytes);
    }

    pub fn message_rejected(&self, listener: &'static str, reason: &'static str) {
        self.messages_rejected
            .get_or_create(&ReasonLabels { listener, reason })
            .inc();
    }

    pub fn set_spool(&self, messages: u64, bytes: u64) {
        self.spool_messages.set(messages);
        self.spool_bytes.set(bytes);
    }

    /// One recipient's attempt: `destination` local, lmtp, relay or mx; `outcome`
    /// delivered, deferred or failed.
    pub fn delivery_outcome(&self, destination: &'static str, outcome: &'static str) {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                destination,
                outcome,
            })
            .inc();
    }

    pub fn delivery_duration(&self, destination: &'static str, seconds: f64) {
        self.delivery_duration
            .get_or_create(&DestinationLabels { destination })
            .observe(seconds);
    }

    pub fn set_queue(&self, active: u64, waiting: u64, oldest_age_seconds: u64) {
        for (state, n) in [("active", active), ("waiting", waiting)] {
            self.queue_messages
                .get_or_create(&QueueLabels { state })
                .set(n);
        }
        self.queue_oldest_age.set(oldest_age_seconds);
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// A registry that `/metrics` serves: the mail server's [`Metrics`] or the operator's.
pub trait Exposition: Send + Sync + 'static {
    /// The OpenMetrics text exposition.
    fn encode(&self) -> String;
}

impl Exposition for Metrics {
    fn encode(&self) -> String {
        Metrics::encode(self)
    }
}

#[derive(Clone)]
struct HttpState {
    metrics: Arc<dyn Exposition>,
    ready: Arc<AtomicBool>,
}

/// Serves `/metrics`, `/healthz` and `/readyz` on a bound socket until the task is
/// dropped. `/readyz` answers 200 while `ready` is true, 503 otherwise.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    metrics: Arc<dyn Exposition>,
    ready: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    serve_http_with(listener, metrics, ready, Router::new()).await
}

/// [`serve_http`] with the routes of `more` as well.
pub async fn serve_http_with(
    listener: tokio::net::TcpListener,
    metrics: Arc<dyn Exposition>,
    ready: Arc<AtomicBool>,
    more: Router,
) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready_handler))
        .with_state(HttpState { metrics, ready })
        .merge(more);
    axum::serve(listener, app).await.context("HTTP server")
}

async fn metrics_handler(State(state): State<HttpState>) -> Response {
    (
        [(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)],
        state.metrics.encode(),
    )
        .into_response()
}

async fn ready_handler(State(state): State<HttpState>) -> Response {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn encodes_counters_and_gauges_with_labels() {
        let m = Metrics::new();
        m.connection_opened("submission");
        m.connection_opened("submission");
        m.connection_opened("smtp");
        m.connection_closed("submission");
        m.connection_rejected("smtp", "limit_per_ip");
        m.tls_handshake("submissions", true);
        m.tls_handshake("submissions", false);
        m.tls_handshake("submissions", false);
        m.auth_attempt("submission", "PLAIN", true);
        m.auth_attempt("submission", "LOGIN", false);
        m.auth_throttled("dovecot-auth");
        m.set_auth_throttle_keys(7);
        m.message_accepted("submission", 4096);
        m.message_accepted("submission", 100);
        m.message_rejected("smtp", "relay_denied");
        m.set_spool(3, 12345);
        m.delivery_outcome("relay", "deferred");
        m.delivery_outcome("relay", "deferred");
        m.delivery_duration("mx", 0.02);
        m.set_queue(1, 4, 600);

        let text = m.encode();
        for line in [
            "# TYPE posthorn_connections counter",
            r#"posthorn_connections_total{listener="submission"} 2"#,
            r#"posthorn_connections_total{listener="smtp"} 1"#,
            "# TYPE posthorn_connections_active gauge",
            r#"posthorn_connections_active{listener="submission"} 1"#,
            r#"posthorn_connections_rejected_total{listener="smtp",reason="limit_per_ip"} 1"#,
            r#"posthorn_tls_handshakes_total{listener="submissions",result="ok"} 1"#,
            r#"posthorn_tls_handshakes_total{listener="submissions",result="failed"} 2"#,
            r#"posthorn_auth_attempts_total{listener="submission",mechanism="PLAIN",result="success"} 1"#,
            r#"posthorn_auth_attempts_total{listener="submission",mechanism="LOGIN",result="failure"} 1"#,
            r#"posthorn_auth_throttled_total{listener="dovecot-auth"} 1"#,
            "posthorn_auth_throttle_tracked_keys 7",
            r#"posthorn_messages_accepted_total{listener="submission"} 2"#,
            r#"posthorn_message_bytes_accepted_total{listener="submission"} 4196"#,
            r#"posthorn_messages_rejected_total{listener="smtp",reason="relay_denied"} 1"#,
            "posthorn_spool_messages 3",
            "posthorn_spool_bytes 12345",
            r#"posthorn_deliveries_total{destination="relay",outcome="deferred"} 2"#,
            r#"posthorn_delivery_duration_seconds_count{destination="mx"} 1"#,
            r#"posthorn_delivery_duration_seconds_bucket{le="0.02",destination="mx"} 1"#,
            r#"posthorn_queue_messages{state="waiting"} 4"#,
            "posthorn_queue_oldest_message_age_seconds 600",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"));
    }

    /// Sends one HTTP/1.1 request and returns the status code, headers and body.
    async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, head.to_ascii_lowercase(), body.to_owned())
    }

    #[tokio::test]
    async fn http_serves_metrics_and_health() {
        let metrics = Arc::new(Metrics::new());
        let ready = Arc::new(AtomicBool::new(false));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve_http(listener, metrics.clone(), ready.clone()));

        metrics.message_accepted("smtp", 10);
        let (status, head, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(
            head.contains(&format!("content-type: {OPENMETRICS_CONTENT_TYPE}")),
            "{head}"
        );
        assert!(body.contains(r#"posthorn_messages_accepted_total{listener="smtp"} 1"#));

        assert_eq!(get(addr, "/healthz").await.0, 200);
        assert_eq!(get(addr, "/readyz").await.0, 503);
        ready.store(true, Ordering::Relaxed);
        assert_eq!(get(addr, "/readyz").await.0, 200);
        assert_eq!(get(addr, "/nope").await.0, 404);
        server.abort();
    }

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn log_in_session(format: LogFormat) -> String {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = subscriber(format, EnvFilter::new("info"), false, move || {
            writer.clone()
        });
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "session",
                listener = "submission",
                client = "192.0.2.1:4242"
            );
            let _entered = span.enter();
            tracing::info!(size = 10, "message accepted");
            tracing::debug!("filtered out");
        });
        String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn log_lines_carry_span_fields() {
        let plain = log_in_session(LogFormat::Plain);
        assert_eq!(plain.lines().count(), 1, "{plain}");
        assert!(
            plain.contains(r#"session{listener="submission" client="192.0.2.1:4242"}"#),
            "{plain}"
        );
        assert!(plain.contains("message accepted size=10"), "{plain}");

        let json = log_in_session(LogFormat::Json);
        assert_eq!(json.lines().count(), 1, "{json}");
        let line: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
        assert_eq!(line["span"]["listener"], "submission");
        assert_eq!(line["spans"][0]["client"], "192.0.2.1:4242");
        assert_eq!(line["fields"]["message"], "message accepted");
        assert_eq!(line["level"], "INFO");
    }
}

//! Leader exclusivity against a real API server (`e2e/kube`): while operator A holds the
//! Lease, operator B does not lead for 20 s (its leader metric stays 0 and the holder
//! does not change); once A is killed, B takes over; when the Lease is taken from B, B
//! steps down to standby and still stops at once on SIGTERM.

mod common;

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::http_get;
use common::kube::{Kube, die_with_test};
use common::metrics::Families;

const LEASE: &str = "posthorn-operator";

struct Operator {
    identity: &'static str,
    child: Child,
    metrics: u16,
    log: PathBuf,
}

impl Operator {
    fn start(kube: &Kube, identity: &'static str) -> Operator {
        let metrics = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = kube.path(&format!("operator-{identity}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_posthorn"));
        let child = die_with_test(&mut cmd)
            .args([
                "operator",
                "--identity",
                identity,
                "--image",
                "posthorn:e2e",
            ])
            .arg("--metrics")
            .arg(format!("127.0.0.1:{metrics}"))
            .env("KUBECONFIG", kube.kubeconfig())
            .env("RUST_LOG", "posthorn=debug,info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("starting posthorn operator");
        let operator = Operator {
            identity,
            child,
            metrics,
            log,
        };
        wait(Duration::from_secs(15), "the operator's /metrics", || {
            std::net::TcpStream::connect(("127.0.0.1", metrics)).is_ok()
        });
        operator
    }

    /// `posthorn_operator_leader`: 1 while this replica leads.
    fn leader(&self) -> f64 {
        let (status, body) = http_get(self.metrics, "/metrics");
        assert_eq!(status, 200, "{body}");
        let families = Families::parse(&body);
        let samples = families.family("posthorn_operator_leader");
        assert_eq!(samples.len(), 1, "{samples:?}");
        samples[0].value
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("--- operator {} log ---\n{}", self.identity, self.log());
        }
    }
}

fn wait(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(200));
    }
}

fn holder(kube: &Kube) -> Option<String> {
    let lease = kube.get("lease", LEASE)?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_owned)
}

#[test]
fn one_leader_at_a_time_and_a_takeover_after_the_holder_dies() {
    let kube = Kube::start();
    let mut a = Operator::start(&kube, "a");
    wait(Duration::from_secs(30), "A to lead", || a.leader() == 1.0);
    assert_eq!(holder(&kube).as_deref(), Some("a"));

    // B runs beside A for 20 s, longer than a Lease lasts unrenewed (15 s).
    let mut b = Operator::start(&kube, "b");
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        assert_eq!(b.leader(), 0.0, "B leads while A holds the Lease");
        assert_eq!(a.leader(), 1.0, "A stopped leading");
        assert_eq!(holder(&kube).as_deref(), Some("a"));
        thread::sleep(Duration::from_millis(500));
    }

    // kill -9: A cannot hand over; B takes the Lease once it expires.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let killed = Instant::now();
    wait(Duration::from_secs(60), "B to take over", || {
        b.leader() == 1.0
    });
    assert_eq!(holder(&kube).as_deref(), Some("b"));
    eprintln!("B took over {:?} after A was killed", killed.elapsed());

    // Another holder (no process) renews the Lease: B steps down to standby.
    kube.kubectl(&[
        "patch",
        "lease",
        LEASE,
        "--type=merge",
        "-p",
        r#"{"spec":{"holderIdentity":"c","renewTime":"2030-01-01T00:00:00.000000Z"}}"#,
    ]);
    wait(Duration::from_secs(30), "B to step down", || {
        b.leader() == 0.0
    });
    assert_eq!(holder(&kube).as_deref(), Some("c"));
    common::terminate(&b.child);
    let exit = common::wait_exit(&mut b.child, Duration::from_secs(10))
        .expect("B, a standby after leading, ignored SIGTERM");
    assert!(exit.success(), "{exit}");
}

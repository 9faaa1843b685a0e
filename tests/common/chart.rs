//! Helpers for the chart tests (tests/chart.rs, tests/install.rs): helm and the
//! validators fetched by `e2e/chart/`, rendered documents, the test bed's objects, and
//! the operator run with the chart's ServiceAccount token.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::kube::Kube;

pub const NAMESPACE: &str = "posthorn-system";
pub const SERVICE_ACCOUNT: &str = "system:serviceaccount:posthorn-system:posthorn";

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `cmd`; panics with its output unless it succeeds. Returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The path a tool script prints on its last line.
pub fn tool(script: &str, args: &[&str]) -> PathBuf {
    let out = run(Command::new("bash")
        .arg(repo().join(script))
        .args(args)
        .current_dir(repo()));
    PathBuf::from(out.lines().last().expect("the script prints a path").trim())
}

pub fn helm(major: &str) -> PathBuf {
    tool("e2e/chart/helm.sh", &[major])
}

/// `helm template` of the chart into `NAMESPACE` with `--set` values.
pub fn template(helm: &Path, sets: &[&str]) -> String {
    let mut cmd = Command::new(helm);
    cmd.args([
        "template",
        "posthorn",
        "charts/posthorn",
        "--namespace",
        NAMESPACE,
    ])
    .current_dir(repo());
    for set in sets {
        cmd.args(["--set", set]);
    }
    run(&mut cmd)
}

pub fn documents(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .expect("helm renders YAML")
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

pub fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} rendered"))
}

pub fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// An object in `namespace` (`kind/name`) as JSON, or None when it does not exist.
pub fn get(bed: &Kube, namespace: &str, what: &str) -> Option<Value> {
    let out = bed.kubectl(&[
        "-n",
        namespace,
        "get",
        what,
        "-o",
        "json",
        "--ignore-not-found",
    ]);
    (!out.trim().is_empty()).then(|| serde_json::from_str(&out).unwrap())
}

/// `kubectl auth can-i` as the operator's ServiceAccount.
pub fn operator_can(bed: &Kube, args: &[&str]) -> bool {
    let mut full = vec!["auth", "can-i", "--as", SERVICE_ACCOUNT];
    full.extend_from_slice(args);
    let out = bed.kubectl_output(&full, "");
    match String::from_utf8_lossy(&out.stdout).trim() {
        "yes" => true,
        "no" => false,
        other => panic!(
            "can-i {args:?}: {other} {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Operator processes, killed on drop.
pub struct Operators(pub Vec<(String, Child)>);

impl Drop for Operators {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Server-side apply, as the operator itself applies.
pub fn apply_server_side(bed: &Kube, yaml: &str) {
    bed.kubectl_stdin(&["apply", "--server-side", "-f", "-"], yaml);
}

pub fn wait_for<T>(what: &str, logs: &dyn Fn() -> String, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = f() {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}\n{}", logs());
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

pub fn condition(server: &Value, type_: &str) -> Option<(String, String)> {
    server["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
}

/// The chart is installed with helm into the 1.20 API server; the operator runs with its ServiceAccount's token only, reconciles a
/// MailServer that needs every kind it manages, prunes and repairs, hands the Lease over,
/// and never meets a `forbidden`.
/// A kubeconfig for the chart's ServiceAccount (`posthorn` in NAMESPACE): the admin's,
/// with the account's token from the Secret the 1.20 token controller gives it.
pub fn service_account_kubeconfig(bed: &Kube) -> PathBuf {
    // The token controller gives the ServiceAccount a token Secret (1.20).
    let token = wait_for("the ServiceAccount token", &String::new, || {
        let account = get(bed, NAMESPACE, "serviceaccount/posthorn")?;
        let secret = account["secrets"][0]["name"].as_str()?.to_string();
        let secret = get(bed, NAMESPACE, &format!("secret/{secret}"))?;
        let token = secret["data"]["token"].as_str()?;
        use base64::Engine as _;
        Some(
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(token)
                    .unwrap(),
            )
            .unwrap(),
        )
    });
    let admin = fs::read_to_string(bed.path("kubeconfig")).unwrap();
    let admin_token = admin
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .unwrap();
    let kubeconfig = bed.path("operator.kubeconfig");
    fs::write(&kubeconfig, admin.replace(admin_token, &token)).unwrap();
    kubeconfig
}

/// `posthorn operator` as `identity`, with `kubeconfig`, logging to the bed's
/// `<identity>.log`.
pub fn spawn_operator(bed: &Kube, kubeconfig: &Path, identity: &str, args: &[&str]) -> Child {
    let log = fs::File::create(bed.path(&format!("{identity}.log"))).unwrap();
    Command::new(env!("CARGO_BIN_EXE_posthorn"))
        .args([
            "operator",
            "--identity",
            identity,
            "--lease-namespace",
            NAMESPACE,
        ])
        .arg(format!("--metrics=127.0.0.1:{}", super::peers::free_port()))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "info")
        .env_remove("POD_NAME")
        .env_remove("POD_NAMESPACE")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

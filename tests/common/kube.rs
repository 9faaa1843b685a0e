//! The `e2e/kube` test bed for one test: a Kubernetes 1.20 control plane (etcd,
//! kube-apiserver, kube-controller-manager) on loopback, with the project's CRDs applied;
//! stopped on drop. Its watchdog also stops it when the test process dies, so a crashed
//! test leaves nothing running. Failing to start panics: the test fails, never skips.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

pub struct Kube {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    kubectl: PathBuf,
    api_port: String,
    token: String,
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs one of the test-bed scripts; panics with its output when it fails.
fn script(name: &str, args: &[&OsStr], env: &[(&str, &OsStr)]) -> String {
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("e2e/kube").join(name)).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running e2e/kube/{name}: {e}"));
    assert!(
        out.status.success(),
        "e2e/kube/{name} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

impl Kube {
    /// Starts the control plane and applies the CRDs (MailServer, and the minimal
    /// cert-manager Certificate and ExternalDNS DNSEndpoint ones).
    pub fn start() -> Kube {
        Kube::start_with_controllers("")
    }

    /// As start(), with kube-controller-manager running `controllers` (a --controllers
    /// list) instead of the default few; empty keeps the default.
    pub fn start_with_controllers(controllers: &str) -> Kube {
        // Cached after `e2e/test.sh` built it; prints the binaries' directory last.
        let built = script("build.sh", &[], &[]);
        let bin = PathBuf::from(
            built
                .lines()
                .last()
                .expect("build.sh printed nothing")
                .trim(),
        );
        let dir = tempfile::Builder::new()
            .prefix("posthorn-kube.")
            .tempdir()
            .unwrap();
        let path = dir.path().to_path_buf();
        let pid = std::process::id().to_string();
        script(
            "start.sh",
            &[path.as_os_str()],
            &[
                ("POSTHORN_KUBE_BIN", bin.as_os_str()),
                ("POSTHORN_KUBE_OWNER_PID", OsStr::new(&pid)),
                ("POSTHORN_KUBE_CONTROLLERS", OsStr::new(controllers)),
            ],
        );
        let env: BTreeMap<String, String> = std::fs::read_to_string(path.join("env"))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let kube = Kube {
            dir: Some(dir),
            kubectl: bin.join("kubectl"),
            api_port: env["APISERVER_PORT"].clone(),
            token: env["ADMIN_TOKEN"].clone(),
            path,
        };
        script(
            "apply-crds.sh",
            &[kube.path.as_os_str()],
            &[("KUBECTL", kube.kubectl.as_os_str())],
        );
        kube
    }

    /// A file in the test-bed directory (`kubeconfig`, `audit.log`, `*.log`, ...).
    pub fn path(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.path("kubeconfig")
    }

    /// kubectl with `stdin`, as it ran.
    pub fn kubectl_output(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(&self.kubectl)
            .env("KUBECONFIG", self.kubeconfig())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting kubectl");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// kubectl that must succeed; returns its stdout.
    pub fn kubectl(&self, args: &[&str]) -> String {
        self.kubectl_stdin(args, "")
    }

    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> String {
        let out = self.kubectl_output(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `kubectl apply -f -`.
    pub fn apply(&self, yaml: &str) {
        self.kubectl_stdin(&["apply", "-f", "-"], yaml);
    }

    /// An object as JSON, or None when it does not exist.
    pub fn get(&self, kind: &str, name: &str) -> Option<Value> {
        let out = self.kubectl(&["get", kind, name, "-o", "json", "--ignore-not-found"]);
        (!out.trim().is_empty()).then(|| serde_json::from_str(&out).unwrap())
    }

    /// The items of `kubectl get KINDS -l SELECTOR`.
    pub fn list(&self, kinds: &str, selector: &str) -> Vec<Value> {
        let out = self.kubectl(&["get", kinds, "-l", selector, "-o", "json"]);
        let list: Value = serde_json::from_str(&out).unwrap();
        list["items"].as_array().cloned().unwrap_or_default()
    }

    /// A raw API request as the admin (for what kubectl 1.20 cannot do, such as writing
    /// a status subresource). Returns the HTTP status and the body.
    pub fn api(&self, method: &str, path: &str, content_type: &str, body: &str) -> (u16, String) {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "10",
                "-X",
                method,
                "-w",
                "\n%{http_code}",
            ])
            .arg("--cacert")
            .arg(self.path("pki/ca.crt"))
            .arg("-H")
            .arg(format!("Authorization: Bearer {}", self.token))
            .arg("-H")
            .arg(format!("Content-Type: {content_type}"))
            .args(["--data-binary", body])
            .arg(format!("https://127.0.0.1:{}{path}", self.api_port))
            .output()
            .expect("running curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// Stops kube-apiserver, waits `down_seconds`, starts it again on the same port.
    pub fn restart_apiserver(&self, down_seconds: u32) {
        let down = down_seconds.to_string();
        script(
            "restart-apiserver.sh",
            &[self.path.as_os_str(), OsStr::new(&down)],
            &[],
        );
    }

    /// Number of lines in the audit log (one per API write) so far.
    pub fn audit_len(&self) -> usize {
        self.audit().len()
    }

    /// Every audit event (one per API write), oldest first.
    pub fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.path("audit.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// Makes a child process die with the thread that starts it (Linux `PR_SET_PDEATHSIG`),
/// so a killed test leaves no operator or server behind.
pub fn die_with_test(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe, as code between fork and exec must be.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        })
    }
}

impl Drop for Kube {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo().join("e2e/kube/stop.sh"))
            .arg(&self.path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // A failed test keeps the logs (API server, controller manager, audit, the
        // test's own files) for a look.
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            eprintln!("test-bed directory kept: {}", dir.keep().display());
        }
    }
}

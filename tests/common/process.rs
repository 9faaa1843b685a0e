//! Starting `posthorn serve` for [`super::Server`], again after a restart.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use super::{STARTUP_TIMEOUT, first_stdout_line, parse_listening_line};

/// `posthorn serve --config ROOT/config.yaml` with `env` added, its stderr appended to `stderr`; returns
/// once it printed its listening line, with the smtp, submission, submissions and
/// metrics ports, and the handover port if any.
pub(super) fn spawn_serve(
    root: &Path,
    env: &[(String, String)],
    stderr: &Arc<Mutex<String>>,
) -> (Child, JoinHandle<()>, [u16; 4], Option<u16>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_posthorn"))
        .arg("serve")
        .arg("--config")
        .arg(root.join("config.yaml"))
        .env("RUST_LOG", "posthorn=debug,info")
        .env("RUST_BACKTRACE", "1")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn posthorn serve");

    let stderr_thread = {
        let sink = stderr.clone();
        let mut pipe = BufReader::new(child.stderr.take().unwrap());
        thread::spawn(move || {
            let mut line = Vec::new();
            while matches!(pipe.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&line));
                line.clear();
            }
        })
    };
    let line = match first_stdout_line(&mut child, STARTUP_TIMEOUT) {
        Some(line) => line,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            let _ = stderr_thread.join();
            panic!(
                "posthorn serve printed no listening line; stderr:\n{}",
                stderr.lock().unwrap()
            );
        }
    };
    let ports = parse_listening_line(&line);
    let port = |name: &str| {
        *ports
            .get(name)
            .unwrap_or_else(|| panic!("listening line {line:?} lacks {name}="))
    };
    let handover = ports.get("handover").copied();
    let ports = ["smtp", "submission", "submissions", "metrics"].map(port);
    (child, stderr_thread, ports, handover)
}

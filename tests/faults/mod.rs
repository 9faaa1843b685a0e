//! Driver of `shim.c`: builds the `LD_PRELOAD` shim with the system `cc` into a temp
//! directory, hands the server the environment that loads it, switches faults on and
//! off, and reads back the calls it recorded.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::Builder;

pub struct Faults {
    dir: tempfile::TempDir,
}

/// One recorded call: `op` (fsync, fdatasync, write, send, link, rename), the path of its
/// fd (`from -> to` for link and rename), its result (`0` or an errno name) and, for a
/// send, the first line of the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub op: String,
    pub path: String,
    pub result: String,
    pub data: String,
}

impl Faults {
    pub fn build() -> Faults {
        let dir = tempfile::tempdir().expect("temp dir");
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/faults/shim.c");
        let out = Command::new("cc")
            .args(["-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-o"])
            .arg(dir.path().join("shim.so"))
            .arg(&source)
            .arg("-ldl")
            .output()
            .expect("run cc");
        assert!(
            out.status.success(),
            "cc {}: {}",
            source.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Faults { dir }
    }

    /// `builder` with the shim loaded into the server.
    pub fn load(&self, builder: Builder) -> Builder {
        builder
            .env("LD_PRELOAD", self.dir.path().join("shim.so").display())
            .env("POSTHORN_FAULT_LOG", self.log_path().display())
            .env("POSTHORN_FAULT_CONTROL", self.control_path().display())
    }

    /// From now on `ops` (comma-separated) on paths containing `pattern` fail with `errno`
    /// (`EIO` or `ENOSPC`).
    pub fn inject(&self, ops: &str, pattern: &str, errno: &str) {
        self.write_control(&format!("{ops} {pattern} {errno}\n"));
    }

    pub fn lift(&self) {
        self.write_control("");
    }

    /// Every call recorded so far, in call order.
    pub fn calls(&self) -> Vec<Call> {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        log.lines()
            .map(|line| {
                let mut f = line.splitn(4, '\t').map(str::to_string);
                let mut next = || f.next().unwrap_or_default();
                Call {
                    op: next(),
                    path: next(),
                    result: next(),
                    data: next(),
                }
            })
            .collect()
    }

    /// Replaced whole (rename), so the shim never reads half a line.
    fn write_control(&self, text: &str) {
        let tmp = self.dir.path().join("control.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.control_path()).unwrap();
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("calls.log")
    }

    fn control_path(&self) -> PathBuf {
        self.dir.path().join("control")
    }
}

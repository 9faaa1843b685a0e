//! One container as a local process: in its own mount namespace with each volume
//! bind-mounted at its mountPath (read-only ones remounted so), as the pod's user, with
//! the bind() shim that puts its wildcard listeners on the pod's own address, and
//! stdout and stderr appended to its log file.

use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result};
use tokio::process::{Child, Command};

pub struct Mount {
    /// The volume's directory (or, with subPath, file or directory) on the host.
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

pub struct Launch {
    pub program: PathBuf,
    pub argv0: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    pub working_dir: Option<PathBuf>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub groups: Vec<u32>,
    pub log: PathBuf,
}

/// Creates the mountpoints: on the host for top-level mounts, inside the parent
/// volume for nested ones (as a container runtime creates them in the rootfs), a file
/// where the source is a file.
fn prepare_mountpoints(mounts: &[Mount]) -> Result<()> {
    for (i, mount) in mounts.iter().enumerate() {
        let parent = mounts[..i]
            .iter()
            .rev()
            .find(|m| mount.target.starts_with(&m.target) && mount.target != m.target);
        let at = match parent {
            Some(p) => p.source.join(mount.target.strip_prefix(&p.target)?),
            None => mount.target.clone(),
        };
        if mount.source.is_dir() {
            fs::create_dir_all(&at).with_context(|| format!("mountpoint {}", at.display()))?;
        } else if !at.exists() {
            if let Some(dir) = at.parent() {
                fs::create_dir_all(dir)?;
            }
            fs::write(&at, b"").with_context(|| format!("mountpoint {}", at.display()))?;
        }
    }
    Ok(())
}

fn c_path(path: &Path) -> Result<CString> {
    Ok(CString::new(path.as_os_str().as_bytes())?)
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub fn spawn(launch: &Launch) -> Result<Child> {
    let mut mounts: Vec<&Mount> = launch.mounts.iter().collect();
    // Parents before children, so a nested mount lands inside its parent volume.
    mounts.sort_by_key(|m| m.target.components().count());
    let ordered: Vec<Mount> = mounts
        .iter()
        .map(|m| Mount {
            source: m.source.clone(),
            target: m.target.clone(),
            read_only: m.read_only,
        })
        .collect();
    prepare_mountpoints(&ordered)?;
    let binds: Vec<(CString, CString, bool)> = ordered
        .iter()
        .map(|m| Ok((c_path(&m.source)?, c_path(&m.target)?, m.read_only)))
        .collect::<Result<_>>()?;
    let root = CString::new("/")?;
    let (uid, gid, groups) = (launch.uid, launch.gid, launch.groups.clone());

    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&launch.log)
        .with_context(|| format!("opening {}", launch.log.display()))?;
    let mut cmd = Command::new(&launch.program);
    cmd.arg0(&launch.argv0)
        .args(&launch.args)
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
    if let Some(dir) = &launch.working_dir {
        cmd.current_dir(dir);
    }
    // SAFETY: between fork and exec only async-signal-safe calls (unshare, mount,
    // setgroups, setgid, setuid, prctl) on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            check(libc::unshare(libc::CLONE_NEWNS))?;
            let none = std::ptr::null();
            check(libc::mount(
                none,
                root.as_ptr(),
                none,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            for (source, target, read_only) in &binds {
                let flags = libc::MS_BIND | libc::MS_REC;
                check(libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    none,
                    flags,
                    std::ptr::null(),
                ))?;
                if *read_only {
                    let flags = flags | libc::MS_REMOUNT | libc::MS_RDONLY;
                    check(libc::mount(
                        source.as_ptr(),
                        target.as_ptr(),
                        none,
                        flags,
                        std::ptr::null(),
                    ))?;
                }
            }
            if let Some(gid) = gid {
                check(libc::setgroups(groups.len(), groups.as_ptr()))?;
                check(libc::setgid(gid))?;
            }
            if let Some(uid) = uid {
                check(libc::setuid(uid))?;
            }
            // After the credentials change, which clears it: the container dies with
            // the kubelet, so a killed test leaves no server behind.
            check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL))?;
            Ok(())
        });
    }
    cmd.spawn()
        .with_context(|| format!("starting {}", launch.program.display()))
}

/// Sends `signal` to `pid` (a container's process).
pub fn signal(pid: u32, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill has no memory effects; an exited pid gives ESRCH, which is fine.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountpoints_on_the_host_or_inside_the_parent_volume() {
        let tmp = tempfile::tempdir().unwrap();
        let (host, vols) = (tmp.path().join("host"), tmp.path().join("vols"));
        fs::create_dir_all(vols.join("state")).unwrap();
        fs::create_dir_all(vols.join("spool")).unwrap();
        fs::write(vols.join("resolv.conf"), "nameserver 10.0.0.10\n").unwrap();
        let mount = |source: &str, target: &str| Mount {
            source: vols.join(source),
            target: host.join(target),
            read_only: false,
        };
        // Parents first, as spawn() orders them.
        let mounts = [
            mount("state", "var/lib/posthorn"),
            mount("spool", "var/lib/posthorn/spool"),
            mount("resolv.conf", "etc/resolv.conf"),
        ];
        prepare_mountpoints(&mounts).unwrap();
        assert!(host.join("var/lib/posthorn").is_dir());
        // The nested mountpoint is made in the parent volume, where it will be seen.
        assert!(vols.join("state/spool").is_dir());
        assert!(!host.join("var/lib/posthorn/spool").exists());
        // A file volume gets a file to be mounted on.
        assert!(host.join("etc/resolv.conf").is_file());
    }
}

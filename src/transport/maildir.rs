//! Delivery into Maildir mailboxes (`<root>/<domain>/<user>/Maildir/`), the way
//! Postfix's local(8) does it: write into `tmp/` under a unique name, fsync, link into
//! `new/`, fsync `new/`. A reader never sees a partial message and a crash leaves at
//! most a file in `tmp/`.

use std::fs::{self, DirBuilder, File};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::mail::{self, Address, Delimiter};
use crate::spool::{Outcome, Status, write_new_synced};

/// Where mail for one recipient address goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// Not one of our domains: the relay/MX side delivers it.
    Remote,
    Local(Mailbox),
    /// Ours, but no mailbox can be named after it.
    Refused(Outcome),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// Lowercased local domain.
    pub domain: String,
    /// Lowercased local part without the `+extension`.
    pub user: String,
}

impl Mailbox {
    pub fn maildir(&self, root: &Path) -> PathBuf {
        root.join(&self.domain).join(&self.user).join("Maildir")
    }
}

/// Routes `address` against the local domains. A bare local part (RFC 5321 allows
/// `RCPT TO:<Postmaster>`) belongs to the first local domain; the extension after
/// `delimiter` is not part of the mailbox name.
pub fn route(address: &str, local_domains: &[String], delimiter: Delimiter) -> Route {
    let address = match Address::parse(address) {
        Some(parsed) => match local_domains.iter().find(|d| parsed.has_domain(d)) {
            Some(domain) => Address::new(parsed.local(), domain),
            None => return Route::Remote,
        },
        None => match mail::primary_domain(local_domains) {
            Some(domain) => Address::new(address, domain),
            None => return Route::Remote,
        },
    };
    let user = address.base(delimiter).to_lowercase();
    let domain = address.domain().to_ascii_lowercase();
    if !is_safe_name(&user) || !is_safe_name(&domain) {
        return Route::Refused(Outcome::local(
            Status::new(5, 1, 3),
            format!("mailbox name {user:?} is not usable as a directory"),
        ));
    }
    Route::Local(Mailbox { domain, user })
}

/// A name that stays one directory below its parent: no separators, no `..`, no hidden
/// names, no control characters.
fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && !name.contains("..")
        && !name.contains('/')
        && !name.chars().any(char::is_control)
}

/// The message as stored in the mailbox: `Return-Path:` (the envelope sender) and
/// `Delivered-To:` prepended, as local(8) does. Maildir files use LF line ends, except
/// for BINARYMIME bodies, whose bytes must stay as they are.
pub fn mailbox_copy(sender: &str, recipient: &str, message: &[u8], binary: bool) -> Vec<u8> {
    let eol: &[u8] = if binary { b"\r\n" } else { b"\n" };
    let mut out = Vec::with_capacity(message.len() + sender.len() + recipient.len() + 40);
    out.extend_from_slice(format!("Return-Path: <{sender}>").as_bytes());
    out.extend_from_slice(eol);
    out.extend_from_slice(format!("Delivered-To: {}", recipient.to_lowercase()).as_bytes());
    out.extend_from_slice(eol);
    if binary {
        out.extend_from_slice(message);
        return out;
    }
    let mut rest = message;
    while let Some(at) = rest.windows(2).position(|w| w == b"\r\n") {
        out.extend_from_slice(&rest[..at]);
        out.push(b'\n');
        rest = &rest[at + 2..];
    }
    out.extend_from_slice(rest);
    out
}

/// Delivers `content` into the Maildir at `maildir` (created on first delivery with mode
/// 0700); returns the path of the new file. Blocking: call it from `spawn_blocking`.
pub fn deliver(maildir: &Path, hostname: &str, content: &[u8]) -> io::Result<PathBuf> {
    for sub in ["tmp", "new", "cur"] {
        create_dirs(&maildir.join(sub))?;
    }
    let name = unique_name(hostname);
    let tmp = maildir.join("tmp").join(&name);
    let new = maildir.join("new").join(&name);
    write_new_synced(&tmp, &[content])?;
    let linked = fs::hard_link(&tmp, &new);
    let _ = fs::remove_file(&tmp);
    linked?;
    File::open(maildir.join("new"))?.sync_all()?;
    Ok(new)
}

/// Creates `path` and its missing parents with mode 0700, fsyncing each parent that
/// gained an entry, so a delivery into a new mailbox survives a crash too.
fn create_dirs(path: &Path) -> io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        create_dirs(parent)?;
    }
    match DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => match path.parent() {
            Some(parent) => File::open(parent)?.sync_all(),
            None => Ok(()),
        },
        // Another delivery to the same new mailbox got there first.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// `<seconds>.M<microseconds>P<pid>Q<counter>.<hostname>`, Dovecot's form of the
/// Maildir unique name; `/` and `:` in the host name are escaped as the spec asks.
fn unique_name(hostname: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let host = hostname.replace('/', "\\057").replace(':', "\\072");
    format!(
        "{}.M{}P{}Q{}.{host}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed) + 1
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLUS: Delimiter = Some('+');

    fn domains() -> Vec<String> {
        vec!["example.com".into(), "Example.ORG".into()]
    }

    fn local(domain: &str, user: &str) -> Route {
        Route::Local(Mailbox {
            domain: domain.into(),
            user: user.into(),
        })
    }

    #[test]
    fn routes_lowercased_without_extension() {
        assert_eq!(
            route("Alice+News@EXAMPLE.com", &domains(), PLUS),
            local("example.com", "alice")
        );
        assert_eq!(
            route("bob@example.org", &domains(), PLUS),
            local("example.org", "bob")
        );
        assert_eq!(
            route("+tag@example.com", &domains(), PLUS),
            local("example.com", "+tag")
        );
        assert_eq!(
            route("Postmaster", &domains(), PLUS),
            local("example.com", "postmaster")
        );
        assert_eq!(route("bob@example.net", &domains(), PLUS), Route::Remote);
        assert_eq!(
            route("bob@sub.example.com", &domains(), PLUS),
            Route::Remote
        );
        assert_eq!(
            route("bob-x+y@example.com", &domains(), Some('-')),
            local("example.com", "bob")
        );
        assert_eq!(
            route("bob+y@example.com", &domains(), None),
            local("example.com", "bob+y")
        );
    }

    #[test]
    fn refuses_names_that_leave_the_mailbox_root() {
        for address in [
            "../etc@example.com",
            "..@example.com",
            "a/b@example.com",
            ".hidden@example.com",
            "a\0b@example.com",
            "a\nb@example.com",
            "@example.com",
            "..+x@example.com",
        ] {
            assert!(
                matches!(route(address, &domains(), PLUS), Route::Refused(r) if r.status == Status::new(5, 1, 3)),
                "{address:?} not refused"
            );
        }
    }

    #[test]
    fn mailbox_copy_prepends_headers_and_uses_lf() {
        let copy = mailbox_copy(
            "",
            "Bob+x@Example.com",
            b"Subject: hi\r\n\r\nbody\r\nbare\rcr\r\n",
            false,
        );
        assert_eq!(
            copy,
            b"Return-Path: <>\nDelivered-To: bob+x@example.com\nSubject: hi\n\nbody\nbare\rcr\n"
        );
        let copy = mailbox_copy("a@b.c", "bob@example.com", b"X: y\r\n\r\n\x00\r\n", true);
        assert_eq!(
            copy,
            b"Return-Path: <a@b.c>\r\nDelivered-To: bob@example.com\r\nX: y\r\n\r\n\x00\r\n"
        );
    }

    #[test]
    fn delivers_into_new_with_private_directories() {
        let root = tempfile::tempdir().unwrap();
        let maildir = root.path().join("example.com/bob/Maildir");
        let a = deliver(&maildir, "mail.example.com", b"one").unwrap();
        let b = deliver(&maildir, "mail.example.com", b"two").unwrap();
        assert_ne!(a, b);
        assert_eq!(fs::read(&a).unwrap(), b"one");
        assert_eq!(a.parent().unwrap(), maildir.join("new"));
        assert!(
            a.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .ends_with(".mail.example.com")
        );
        assert_eq!(fs::read_dir(maildir.join("tmp")).unwrap().count(), 0);
        assert_eq!(fs::read_dir(maildir.join("new")).unwrap().count(), 2);
        for dir in [
            "example.com",
            "example.com/bob",
            "example.com/bob/Maildir/cur",
        ] {
            let mode = fs::metadata(root.path().join(dir)).unwrap().permissions();
            assert_eq!(
                std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
                0o700,
                "{dir}"
            );
        }
    }
}

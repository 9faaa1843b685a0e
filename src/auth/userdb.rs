//! The user database: a Dovecot passwd-file,
//! `user@domain:{SCHEME}hash[:uid:gid:gecos:home:shell:extra_fields]` per line.
//!
//! A bad line is skipped with a warning naming the file and line number (never the
//! hash), so one typo does not lock every user out. A line whose user name is readable
//! but whose password is unusable (unknown scheme, malformed hash, `{PLAIN}` while
//! plaintext is off, empty) still makes the user exist: mail for that mailbox keeps
//! being accepted, only logging in is impossible until the entry is fixed.

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::BuildHasher;
use std::path::Path;

use anyhow::Context;

use super::cache::CredentialCache;
use super::scheme::StoredHash;

pub struct UserDb {
    /// Lowercased full address → password, `None` when the entry cannot log in.
    users: HashMap<String, Option<StoredHash>>,
    /// How many users have a password: unknown logins are verified against one of them.
    with_password: usize,
    /// Lives and dies with this version of the file: a reload starts with an empty cache.
    pub cache: CredentialCache,
}

/// How user names are compared: full addresses, lowercased; a bare name is qualified
/// with the local domain (as logins are, see `Authenticator::qualify`).
pub fn canonical_login(login: &str, local_domain: &str) -> String {
    if login.contains('@') || local_domain.is_empty() {
        login.to_lowercase()
    } else {
        format!("{}@{}", login.to_lowercase(), local_domain.to_lowercase())
    }
}

impl UserDb {
    pub fn load(
        path: &Path,
        allow_plaintext: bool,
        local_domain: &str,
        cache_size: usize,
    ) -> anyhow::Result<UserDb> {
        let text =
            std::fs::read(path).with_context(|| format!("reading user file {}", path.display()))?;
        let db = UserDb::parse(
            &text,
            &path.display().to_string(),
            allow_plaintext,
            local_domain,
            cache_size,
        );
        let can_log_in = db.users.values().filter(|h| h.is_some()).count();
        tracing::info!(file = %path.display(), users = db.users.len(), can_log_in, "user file loaded");
        Ok(db)
    }

    /// `source` names the file in warnings.
    pub fn parse(
        text: &[u8],
        source: &str,
        allow_plaintext: bool,
        local_domain: &str,
        cache_size: usize,
    ) -> UserDb {
        let mut users = HashMap::new();
        for (index, raw) in text.split(|&b| b == b'\n').enumerate() {
            let line_no = index + 1;
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            let Ok(line) = std::str::from_utf8(raw) else {
                tracing::warn!(
                    file = source,
                    line = line_no,
                    "skipping line: not valid UTF-8"
                );
                continue;
            };
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let mut fields = line.splitn(3, ':');
            let (Some(user), Some(password)) = (fields.next(), fields.next()) else {
                tracing::warn!(
                    file = source,
                    line = line_no,
                    "skipping line: expected user:password"
                );
                continue;
            };
            if user.is_empty() || user.chars().any(|c| c.is_whitespace() || c.is_control()) {
                tracing::warn!(
                    file = source,
                    line = line_no,
                    "skipping line: invalid user name"
                );
                continue;
            }
            let user = canonical_login(user, local_domain);
            let hash = if password.is_empty() {
                tracing::warn!(
                    file = source,
                    line = line_no,
                    user,
                    "empty password: the user cannot log in"
                );
                None
            } else {
                match StoredHash::parse(password, allow_plaintext) {
                    Ok(hash) => Some(hash),
                    Err(err) => {
                        tracing::warn!(file = source, line = line_no, user, error = %err, "unusable password: the user cannot log in");
                        None
                    }
                }
            };
            match users.entry(user) {
                // Dovecot keeps the first entry too.
                Entry::Occupied(entry) => {
                    tracing::warn!(
                        file = source,
                        line = line_no,
                        user = entry.key(),
                        "duplicate user ignored, the first entry wins"
                    );
                }
                Entry::Vacant(entry) => {
                    entry.insert(hash);
                }
            }
        }
        if users.is_empty() {
            tracing::warn!(
                file = source,
                "the user file has no users: nobody can log in"
            );
        }
        UserDb {
            with_password: users.values().flatten().count(),
            users,
            cache: CredentialCache::new(cache_size),
        }
    }

    /// True if `address` has an entry, whether or not it can log in.
    pub fn user_exists(&self, address: &str) -> bool {
        self.users.contains_key(lowercase(address).as_ref())
    }

    /// The password of a canonical (lowercased, qualified) login, if it can log in.
    pub fn password(&self, login: &str) -> Option<&StoredHash> {
        self.users.get(login)?.as_ref()
    }

    /// A hash to spend the same time on when `login` has none: the password of a user
    /// that `login` picks (keyed, so not predictable), so that unknown logins cost what
    /// known ones do even in a file that mixes schemes and costs, and one login always
    /// costs the same.
    pub fn dummy(&self, login: &str) -> Option<&StoredHash> {
        let count = u64::try_from(self.with_password).ok().filter(|&n| n > 0)?;
        let pick = self.users.hasher().hash_one(login) % count;
        self.users
            .values()
            .flatten()
            .nth(usize::try_from(pick).ok()?)
    }
}

fn lowercase(s: &str) -> Cow<'_, str> {
    if s.chars().any(char::is_uppercase) {
        Cow::Owned(s.to_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA512_SECRET: &str = "{SHA512-CRYPT}$6$cXOoeOaCiOmGuA3p$5xE.pXPXHC.8xodVUp719GMZ2kUpn8rGrZpzfgeESFZ79JM1UpLM9gtjoPlScm82WqS8Zch8XPRLjszk6FSNV/";

    fn parse(text: &str, allow_plaintext: bool) -> UserDb {
        UserDb::parse(text.as_bytes(), "test", allow_plaintext, "example.com", 16)
    }

    #[test]
    fn parses_dovecot_lines() {
        let text = format!(
            "# users\n\n\
             Alice@Example.COM:{SHA512_SECRET}:1000:1000::/home/alice::userdb_quota_rule=*:storage=1G\r\n\
             bob@example.org:{SHA512_SECRET}\n\
             carol:{SHA512_SECRET}::\n   # indented comment\n\
             #dave@example.com:{SHA512_SECRET}\n"
        );
        let db = parse(&text, false);
        assert_eq!(db.users.len(), 3);
        assert!(db.user_exists("alice@example.com"));
        assert!(db.user_exists("ALICE@example.com"));
        assert!(db.user_exists("bob@example.org"));
        assert!(
            db.user_exists("carol@example.com"),
            "bare name qualified with the local domain"
        );
        assert!(!db.user_exists("carol@example.org"));
        assert!(
            !db.user_exists("#dave@example.com"),
            "a comment is no entry"
        );
        assert!(db.password("alice@example.com").unwrap().verify(b"secret"));
        assert!(db.dummy("nobody@example.com").is_some());
    }

    /// In a file with two schemes, unknown logins are spread over both, as the users
    /// are, and each login always gets the same one.
    #[test]
    fn unknown_logins_cost_what_some_user_costs() {
        let argon =
            crate::auth::scheme::hash_password(crate::auth::scheme::Scheme::Argon2id, "secret")
                .unwrap();
        let text = format!("sha@example.com:{SHA512_SECRET}\nargon@example.com:{argon}\n");
        let db = parse(&text, false);
        let kind = |login: &str| format!("{:?}", db.dummy(login).unwrap());
        let kinds: std::collections::BTreeSet<String> = (0..64)
            .map(|i| kind(&format!("u{i}@example.com")))
            .collect();
        assert_eq!(
            kinds.into_iter().collect::<Vec<_>>(),
            [
                "StoredHash::Argon2(<redacted>)",
                "StoredHash::ShaCrypt(<redacted>)"
            ]
        );
        assert_eq!(kind("x@example.com"), kind("x@example.com"));
    }

    #[test]
    fn skips_malformed_lines_but_keeps_the_rest() {
        let text = format!(
            "no separator here\n\
             :{SHA512_SECRET}\n\
             bad user:{SHA512_SECRET}\n\
             good@example.com:{SHA512_SECRET}\n"
        );
        let mut bytes = text.into_bytes();
        bytes.extend_from_slice(b"\xff\xfe:{PLAIN}x\n");
        let db = UserDb::parse(&bytes, "test", false, "example.com", 0);
        assert_eq!(db.users.keys().collect::<Vec<_>>(), ["good@example.com"]);
    }

    #[test]
    fn unusable_password_keeps_the_mailbox_but_cannot_log_in() {
        let text = "plain@example.com:{PLAIN}secret\n\
                    md5@example.com:{MD5}abc\n\
                    empty@example.com:\n\
                    broken@example.com:{SHA512-CRYPT}$6$x$y\n";
        let db = parse(text, false);
        for user in ["plain", "md5", "empty", "broken"] {
            let address = format!("{user}@example.com");
            assert!(db.user_exists(&address), "{user}");
            assert!(db.password(&address).is_none(), "{user}");
        }
        assert!(db.dummy("nobody@example.com").is_none());

        let allowed = parse(text, true);
        assert!(
            allowed
                .password("plain@example.com")
                .unwrap()
                .verify(b"secret")
        );
    }

    #[test]
    fn first_duplicate_wins() {
        let text = format!("a@example.com:{{PLAIN}}one\nA@example.com:{SHA512_SECRET}\n");
        let db = parse(&text, true);
        let hash = db.password("a@example.com").unwrap();
        assert!(hash.verify(b"one"));
        assert!(!hash.verify(b"secret"));
    }

    #[test]
    fn load_fails_for_a_missing_file() {
        let err = UserDb::load(Path::new("/nonexistent/passwd"), false, "example.com", 0)
            .err()
            .unwrap();
        assert!(
            format!("{err:#}").contains("/nonexistent/passwd"),
            "{err:#}"
        );
    }
}

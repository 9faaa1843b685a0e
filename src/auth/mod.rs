//! Authentication: the user database (a Dovecot passwd-file, reloaded when it changes),
//! password schemes, and SASL decoding for the SMTP session.
//!
//! A failed login costs the same time and gets the same answer whether or not the user
//! exists: unknown users are verified against a dummy hash, and every failure waits
//! `failure_delay` (growing with repeated failures) in the failing session only.
//! Past the failure limits of `throttle`, attempts are refused before any hashing.

mod cache;
pub mod dovecot;
pub mod sasl;
pub mod scheme;
mod throttle;
pub mod userdb;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::config::AuthConfig;
use crate::reload::{self, Watched};
use throttle::{Limits, Throttle};
use userdb::{UserDb, canonical_login};

/// Longer passwords are refused without hashing: SHA-crypt's cost grows with the
/// password length times the rounds.
const MAX_PASSWORD_LEN: usize = 1024;

/// Why a throttled attempt is refused, in the SMTP reply and on the Dovecot socket.
pub const THROTTLED_REASON: &str = "Too many failed logins, try again later";

pub struct Authenticator {
    users: Arc<Watched<UserDb>>,
    local_domain: String,
    throttle: Throttle,
    verifications: Arc<Semaphore>,
}

/// The answer to a login attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The canonical login.
    Authenticated(String),
    Failed,
    /// Refused without checking the password: too many recent failures.
    Throttled,
}

enum Outcome {
    Verified,
    Cached,
    WrongPassword,
    UnknownUser,
    Refused(&'static str),
}

impl Authenticator {
    /// Loads the passwd file (an error if it is missing or unreadable) and watches it
    /// for changes. Must be called inside a tokio runtime. `local_domain` qualifies
    /// bare logins (Postfix's `smtpd_sasl_local_domain`).
    pub fn new(
        cfg: &AuthConfig,
        local_domain: String,
        reload_interval: Duration,
    ) -> anyhow::Result<Arc<Authenticator>> {
        let local_domain = local_domain.to_lowercase();
        let (allow_plaintext, cache_size) = (cfg.allow_plaintext, cfg.cache_size);
        let domain = local_domain.clone();
        let users = reload::watch_file("users", &cfg.passwd_file, reload_interval, move |path| {
            UserDb::load(path, allow_plaintext, &domain, cache_size)
        })?;
        Ok(Arc::new(Authenticator {
            users,
            local_domain,
            throttle: Throttle::new(Limits::from_config(cfg)),
            verifications: Arc::new(Semaphore::new(cfg.max_concurrent_verifications.max(1))),
        }))
    }

    /// The canonical login: lowercased, and qualified with the local domain if bare.
    pub fn qualify(&self, login: &str) -> String {
        canonical_login(login, &self.local_domain)
    }

    /// For port 25: does this local address have a mailbox?
    pub fn user_exists(&self, address: &str) -> bool {
        self.users.get().user_exists(address)
    }

    /// Checks a SASL login from `client` (None: unknown, e.g. no `rip` on the Dovecot
    /// socket). On any failure (unknown user, wrong password, an `authzid` other than
    /// the `authcid`) it waits the failure delay first; throttled attempts wait the
    /// longest delay and are not checked at all.
    pub async fn authenticate(
        &self,
        client: Option<IpAddr>,
        authzid: &str,
        authcid: &str,
        password: &[u8],
    ) -> Verdict {
        let login = self.qualify(authcid);
        let attempt = match self.throttle.admit(client, &login).await {
            Ok(attempt) => attempt,
            Err(delay) => {
                tracing::warn!(login, "too many failed logins; attempt refused unchecked");
                tokio::time::sleep(delay).await;
                return Verdict::Throttled;
            }
        };
        let outcome = if authcid.is_empty() {
            Outcome::Refused("empty user name")
        } else if !authzid.is_empty() && self.qualify(authzid) != login {
            // Acting for another user is not something we offer.
            Outcome::Refused("authorization identity differs from the login")
        } else if password.len() > MAX_PASSWORD_LEN {
            Outcome::Refused("password too long")
        } else {
            self.check_password(&login, password).await
        };
        let reason = match outcome {
            Outcome::Verified | Outcome::Cached => {
                attempt.succeeded();
                tracing::debug!(
                    login,
                    cached = matches!(outcome, Outcome::Cached),
                    "authenticated"
                );
                return Verdict::Authenticated(login);
            }
            Outcome::WrongPassword => "password mismatch",
            Outcome::UnknownUser => "unknown user or no usable password",
            Outcome::Refused(reason) => reason,
        };
        let delay = attempt.failed();
        tracing::info!(login, reason, "authentication failed");
        tokio::time::sleep(delay).await;
        Verdict::Failed
    }

    /// Addresses and logins the throttle remembers now.
    pub fn throttle_tracked_keys(&self) -> usize {
        self.throttle.tracked_keys()
    }

    async fn check_password(&self, login: &str, password: &[u8]) -> Outcome {
        let db = self.users.get();
        let key = db.cache.key(login, password);
        // The cache belongs to this version of the file, so a hit is still valid.
        if db.cache.contains(&key) {
            return Outcome::Cached;
        }
        // The permit moves into the blocking task: if the session is dropped meanwhile,
        // it is still held until the hash is done, so the bound on memory holds.
        let Ok(permit) = self.verifications.clone().acquire_owned().await else {
            return Outcome::Refused("verification pool closed");
        };
        let task_db = Arc::clone(&db);
        let task_login = login.to_owned();
        let task_password = password.to_vec();
        let verified = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            match task_db.password(&task_login) {
                Some(hash) => Some(hash.verify(&task_password)),
                None => {
                    if let Some(dummy) = task_db.dummy(&task_login) {
                        dummy.verify(&task_password);
                    }
                    None
                }
            }
        })
        .await;
        match verified {
            Ok(Some(true)) => {
                db.cache.insert(key);
                Outcome::Verified
            }
            Ok(Some(false)) => Outcome::WrongPassword,
            Ok(None) => Outcome::UnknownUser,
            Err(err) => {
                tracing::error!(error = %err, "password verification task failed");
                Outcome::Refused("verification failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::scheme::{Scheme, hash_password};
    use super::*;
    use std::path::Path;
    use std::time::Instant;

    const DELAY: Duration = Duration::from_millis(150);

    fn config(path: &Path, cache_size: usize) -> AuthConfig {
        AuthConfig {
            failure_delay: DELAY,
            max_failure_delay: DELAY,
            max_failures_per_address: 4,
            cache_size,
            max_concurrent_verifications: 2,
            ..AuthConfig::new(path.to_path_buf())
        }
    }

    fn line(user: &str, password: &str) -> String {
        format!(
            "{user}:{}\n",
            hash_password(Scheme::Sha512Crypt, password).unwrap()
        )
    }

    async fn authenticator(
        text: &str,
        cache_size: usize,
    ) -> (tempfile::TempDir, Arc<Authenticator>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        std::fs::write(&path, text).unwrap();
        let auth = Authenticator::new(
            &config(&path, cache_size),
            "Example.com".into(),
            Duration::from_millis(20),
        )
        .unwrap();
        (dir, auth)
    }

    /// A login from no particular address, as the Dovecot socket without `rip`.
    async fn login(
        auth: &Authenticator,
        authzid: &str,
        authcid: &str,
        password: &[u8],
    ) -> Option<String> {
        match auth.authenticate(None, authzid, authcid, password).await {
            Verdict::Authenticated(login) => Some(login),
            Verdict::Failed => None,
            Verdict::Throttled => panic!("throttled"),
        }
    }

    #[tokio::test]
    async fn accepts_the_right_password_and_qualifies_bare_logins() {
        let (_dir, auth) = authenticator(&line("alice@example.com", "pw"), 16).await;
        assert_eq!(
            login(&auth, "", "alice", b"pw").await.as_deref(),
            Some("alice@example.com")
        );
        assert_eq!(
            login(&auth, "", "ALICE@example.COM", b"pw")
                .await
                .as_deref(),
            Some("alice@example.com")
        );
        assert_eq!(
            login(&auth, "alice", "alice@example.com", b"pw")
                .await
                .as_deref(),
            Some("alice@example.com")
        );
        assert!(auth.user_exists("Alice@Example.com"));
        assert!(!auth.user_exists("bob@example.com"));
        assert_eq!(auth.qualify("Bob"), "bob@example.com");
    }

    #[tokio::test]
    async fn every_failure_waits_and_looks_the_same() {
        let text = line("alice@example.com", "pw") + "plain@example.com:{PLAIN}pw\n";
        let (_dir, auth) = authenticator(&text, 16).await;
        let failures: [(&str, &str, &[u8]); 5] = [
            ("", "alice@example.com", b"wrong"),
            ("", "nobody@example.com", b"pw"),
            ("bob@example.com", "alice@example.com", b"pw"),
            ("", "plain@example.com", b"pw"),
            ("", "", b"pw"),
        ];
        for (authzid, authcid, password) in failures {
            let start = Instant::now();
            assert_eq!(
                login(&auth, authzid, authcid, password).await,
                None,
                "{authcid}"
            );
            assert!(start.elapsed() >= DELAY, "{authcid} answered early");
        }
    }

    #[tokio::test]
    async fn caches_successes_only() {
        let (_dir, auth) = authenticator(&line("alice@example.com", "pw"), 16).await;
        let db = auth.users.get();
        assert!(login(&auth, "", "alice", b"bad").await.is_none());
        assert!(
            !db.cache
                .contains(&db.cache.key("alice@example.com", b"bad"))
        );
        assert!(login(&auth, "", "alice", b"pw").await.is_some());
        assert!(db.cache.contains(&db.cache.key("alice@example.com", b"pw")));
        assert!(matches!(
            auth.check_password("alice@example.com", b"pw").await,
            Outcome::Cached
        ));

        let (_dir, uncached) = authenticator(&line("alice@example.com", "pw"), 0).await;
        assert!(login(&uncached, "", "alice", b"pw").await.is_some());
        assert!(matches!(
            uncached.check_password("alice@example.com", b"pw").await,
            Outcome::Verified
        ));
    }

    #[tokio::test]
    async fn reload_replaces_users_and_drops_the_cache() {
        let (dir, auth) = authenticator(&line("alice@example.com", "old"), 16).await;
        assert!(login(&auth, "", "alice", b"old").await.is_some());

        let path = dir.path().join("passwd");
        let text = line("alice@example.com", "new") + &line("bob@example.com", "bob");
        std::fs::write(&path, text).unwrap();
        for _ in 0..200 {
            if auth.user_exists("bob@example.com") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(auth.user_exists("bob@example.com"), "file not reloaded");
        assert!(
            login(&auth, "", "alice", b"old").await.is_none(),
            "stale cache entry used"
        );
        assert!(login(&auth, "", "alice", b"new").await.is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn throttles_parallel_bursts_and_refuses_unchecked() {
        let (_dir, auth) = authenticator(&line("alice@example.com", "pw"), 0).await;
        let client: Option<IpAddr> = Some("192.0.2.1".parse().unwrap());
        let burst = (0..12).map(|i| {
            let auth = auth.clone();
            tokio::spawn(async move {
                let user = format!("guess{i}");
                auth.authenticate(client, "", &user, b"wrong").await
            })
        });
        let mut verdicts = Vec::new();
        for task in burst.collect::<Vec<_>>() {
            verdicts.push(task.await.unwrap());
        }
        let failed = verdicts.iter().filter(|v| **v == Verdict::Failed).count();
        assert_eq!(failed, 4, "{verdicts:?}");
        assert_eq!(verdicts.len() - failed, 8, "{verdicts:?}");
        // Past the limit even the right password is refused: it is never checked.
        assert_eq!(
            auth.authenticate(client, "", "alice", b"pw").await,
            Verdict::Throttled
        );
        let other: Option<IpAddr> = Some("192.0.2.2".parse().unwrap());
        assert_eq!(
            auth.authenticate(other, "", "alice", b"pw").await,
            Verdict::Authenticated("alice@example.com".into())
        );
    }

    /// Many sessions from one address (an application's connection pool) log in at once
    /// with a cold cache: past the limit they wait their turn instead of being refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_parallel_burst_of_right_passwords_all_logs_in() {
        let (_dir, auth) = authenticator(&line("alice@example.com", "pw"), 0).await;
        let client: Option<IpAddr> = Some("192.0.2.1".parse().unwrap());
        let burst: Vec<_> = (0..12)
            .map(|_| {
                let auth = auth.clone();
                tokio::spawn(async move { auth.authenticate(client, "", "alice", b"pw").await })
            })
            .collect();
        for task in burst {
            assert_eq!(
                task.await.unwrap(),
                Verdict::Authenticated("alice@example.com".into())
            );
        }
    }

    /// The longest password is checked; one byte more is refused unchecked, even when it
    /// is the right one. Each failure from an address is tracked under the network and
    /// the login.
    #[tokio::test]
    async fn password_length_limit_and_tracked_keys() {
        let long = "p".repeat(MAX_PASSWORD_LEN);
        let longer = format!("{long}p");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        let text =
            format!("alice@example.com:{{PLAIN}}{long}\nbob@example.com:{{PLAIN}}{longer}\n");
        std::fs::write(&path, text).unwrap();
        let cfg = AuthConfig {
            allow_plaintext: true,
            ..config(&path, 0)
        };
        let auth = Authenticator::new(&cfg, "example.com".into(), Duration::from_secs(60)).unwrap();
        assert!(login(&auth, "", "alice", long.as_bytes()).await.is_some());
        assert!(login(&auth, "", "bob", longer.as_bytes()).await.is_none());
        assert_eq!(auth.throttle_tracked_keys(), 1, "the login alone");
        let client = Some("192.0.2.1".parse().unwrap());
        let verdict = auth.authenticate(client, "", "carol", b"x").await;
        assert_eq!(verdict, Verdict::Failed);
        assert_eq!(auth.throttle_tracked_keys(), 3);
    }

    #[tokio::test]
    async fn missing_file_is_an_error() {
        let cfg = config(Path::new("/nonexistent/passwd"), 0);
        let err = Authenticator::new(&cfg, "example.com".into(), Duration::from_secs(1))
            .err()
            .unwrap();
        assert!(format!("{err:#}").contains("/nonexistent/passwd"));
    }
}

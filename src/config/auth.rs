//! The `auth` section: the user file, login throttling and the Dovecot auth socket.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthConfig {
    /// Dovecot passwd-file: `user@domain:{SCHEME}hash[:uid:gid:gecos:home:shell:extra]`.
    pub passwd_file: PathBuf,
    /// Accept `{PLAIN}` entries. Off by default: a plaintext password in a file is a leak
    /// waiting to happen.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// Delay before a failed login is answered (Dovecot's `auth_failure_delay`).
    #[serde(default = "default_failure_delay", with = "humantime_serde")]
    pub failure_delay: Duration,
    /// How many verified credentials are remembered, so a client that logs in on every
    /// message does not pay for Argon2 each time. 0 disables the cache.
    #[serde(default = "default_cache_size")]
    pub cache_size: usize,
    /// Password verifications running at once (each Argon2id one may take 64 MiB).
    #[serde(default = "default_verify_concurrency")]
    pub max_concurrent_verifications: usize,
    /// A unix socket speaking Dovecot's auth protocol, so an existing Postfix can use
    /// these users with `smtpd_sasl_type = dovecot`. Off unless set.
    #[serde(default)]
    pub dovecot_socket: Option<PathBuf>,
    /// Permissions of that socket, in octal. Owner-only by default, as Dovecot's
    /// `unix_listener { mode = 0600 }`.
    #[serde(default = "default_socket_mode")]
    pub dovecot_socket_mode: String,
    /// Owner of that socket (a user name or a numeric uid), as Dovecot's
    /// `unix_listener { user = postfix }`; unset: the server's own user.
    #[serde(default)]
    pub dovecot_socket_owner: Option<String>,
    /// Group of that socket (a group name or a numeric gid); unset: the server's group.
    #[serde(default)]
    pub dovecot_socket_group: Option<String>,
    /// Failed logins per client address (IPv6: per /64) in `throttleWindow` before AUTH
    /// gets a temporary 454 without the password being checked. 0: no limit.
    #[serde(default = "default_failures_per_address")]
    pub max_failures_per_address: usize,
    /// Failed logins per login name, from any address, in `throttleWindow`. Higher than
    /// the per-address limit: it stops guessing spread over many addresses, but also
    /// locks the real user out while it lasts. 0: no limit.
    #[serde(default = "default_failures_per_login")]
    pub max_failures_per_login: usize,
    /// The sliding window failed logins are counted in.
    #[serde(default = "default_throttle_window", with = "humantime_serde")]
    pub throttle_window: Duration,
    /// `failureDelay` doubles with each failure from an address up to this
    /// (Dovecot's auth penalty).
    #[serde(default = "default_max_failure_delay", with = "humantime_serde")]
    pub max_failure_delay: Duration,
    /// Addresses and logins remembered for throttling; the least recently seen is
    /// forgotten first.
    #[serde(default = "default_throttle_tracked_keys")]
    pub throttle_tracked_keys: usize,
}

impl AuthConfig {
    /// Defaults for everything but the user file.
    pub fn new(passwd_file: PathBuf) -> AuthConfig {
        AuthConfig {
            passwd_file,
            allow_plaintext: false,
            failure_delay: default_failure_delay(),
            cache_size: default_cache_size(),
            max_concurrent_verifications: default_verify_concurrency(),
            dovecot_socket: None,
            dovecot_socket_mode: default_socket_mode(),
            dovecot_socket_owner: None,
            dovecot_socket_group: None,
            max_failures_per_address: default_failures_per_address(),
            max_failures_per_login: default_failures_per_login(),
            throttle_window: default_throttle_window(),
            max_failure_delay: default_max_failure_delay(),
            throttle_tracked_keys: default_throttle_tracked_keys(),
        }
    }

    pub fn socket_mode(&self) -> anyhow::Result<u32> {
        u32::from_str_radix(&self.dovecot_socket_mode, 8)
            .ok()
            .filter(|mode| *mode <= 0o777)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "auth.dovecotSocketMode {:?} is not an octal file mode like \"0600\"",
                    self.dovecot_socket_mode
                )
            })
    }
}

fn default_failure_delay() -> Duration {
    Duration::from_secs(2)
}
fn default_cache_size() -> usize {
    4096
}
fn default_verify_concurrency() -> usize {
    4
}
fn default_socket_mode() -> String {
    "0600".into()
}
fn default_failures_per_address() -> usize {
    10
}
fn default_failures_per_login() -> usize {
    30
}
fn default_throttle_window() -> Duration {
    Duration::from_secs(600)
}
fn default_max_failure_delay() -> Duration {
    Duration::from_secs(15)
}
fn default_throttle_tracked_keys() -> usize {
    10_000
}

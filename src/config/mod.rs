//! The server's config file: what `posthorn render` writes into a ConfigMap and what
//! `posthorn serve --config FILE` reads. Every field has a default so a minimal file is
//! a few lines; paths point at files that Kubernetes mounts from Secrets.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::mail::{self, ListenerKind};

mod aliases;
mod auth;
mod wire;

pub use aliases::{AliasesConfig, SrsConfig};
pub use auth::AuthConfig;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// `$myhostname`: banner, Received header, the domain bare logins are qualified with.
    pub hostname: String,
    /// Local domains: mail for them is delivered here; port 25 accepts only these.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Where mail for `postmaster` and `postmaster@<local domain>` goes (RFC 5321 §4.5.1).
    /// Unset: `postmaster@<first domain>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postmaster: Option<String>,
    /// Where mail for `abuse@<local domain>` goes unless an alias names it. Unset: the
    /// postmaster address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abuse: Option<String>,
    /// Postfix `recipient_delimiter`: `bob+tag@` is bob's. Empty: no extensions.
    #[serde(
        default = "aliases::default_delimiter",
        skip_serializing_if = "aliases::is_default_delimiter"
    )]
    pub recipient_delimiter: String,
    #[serde(default, skip_serializing_if = "AliasesConfig::is_default")]
    pub aliases: AliasesConfig,
    /// SRS for forwarded mail; absent: senders are never rewritten.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub srs: Option<SrsConfig>,
    #[serde(default)]
    pub listeners: Listeners,
    /// Address of the HTTP endpoint serving `/metrics`, `/healthz` and `/readyz`.
    #[serde(default = "default_metrics")]
    pub metrics: Option<SocketAddr>,
    pub tls: TlsConfig,
    pub auth: AuthConfig,
    /// Postfix `smtpd_sender_login_maps` file: `address  login1, login2` per line.
    /// A login always owns its own address, so this file is optional.
    #[serde(default)]
    pub sender_login_map: Option<PathBuf>,
    #[serde(default)]
    pub dns: DnsConfig,
    pub spool: SpoolConfig,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default, skip_serializing_if = "ProxyProtocol::is_off")]
    pub proxy_protocol: ProxyProtocol,
    #[serde(default)]
    pub delivery: DeliveryConfig,
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    #[serde(default, skip_serializing_if = "HandoverConfig::is_off")]
    pub handover: HandoverConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// DKIM signing of outgoing mail; absent: mail leaves unsigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dkim: Option<DkimConfig>,
    /// How often mounted files (certificate, users, sender map) are checked for changes.
    #[serde(default = "default_reload_interval", with = "humantime_serde")]
    pub reload_interval: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Listeners {
    /// Port 25 semantics: inbound for the local domains, STARTTLS offered, no AUTH.
    pub smtp: Option<SocketAddr>,
    /// Port 587 semantics: STARTTLS required before anything else, then AUTH.
    pub submission: Option<SocketAddr>,
    /// Port 465 semantics: implicit TLS, then AUTH.
    pub submissions: Option<SocketAddr>,
}

impl Default for Listeners {
    /// Every listener, on its pod port on all addresses.
    fn default() -> Self {
        Listeners::pod_ports(|_| true)
    }
}

impl Listeners {
    /// Each kind's address as `at` gives it.
    pub fn from_fn(at: impl Fn(ListenerKind) -> Option<SocketAddr>) -> Listeners {
        Listeners {
            smtp: at(ListenerKind::Smtp),
            submission: at(ListenerKind::Submission),
            submissions: at(ListenerKind::Submissions),
        }
    }

    /// The `enabled` kinds on their pod ports, on all addresses.
    pub fn pod_ports(enabled: impl Fn(ListenerKind) -> bool) -> Listeners {
        Listeners::from_fn(|kind| enabled(kind).then(|| any_address(kind.pod_port())))
    }

    pub fn get(&self, kind: ListenerKind) -> Option<SocketAddr> {
        match kind {
            ListenerKind::Smtp => self.smtp,
            ListenerKind::Submission => self.submission,
            ListenerKind::Submissions => self.submissions,
        }
    }
}

fn any_address(port: u16) -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], port))
}

fn default_metrics() -> Option<SocketAddr> {
    Some(any_address(mail::METRICS_POD_PORT))
}

fn default_reload_interval() -> Duration {
    Duration::from_secs(2)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain (`tls.crt` of a `kubernetes.io/tls` Secret).
    pub cert: PathBuf,
    /// PEM private key (`tls.key`).
    pub key: PathBuf,
    /// A second pair with an ECDSA key, served to clients that can verify ECDSA (its
    /// signature costs a fraction of an RSA one); the others get `cert`/`key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecdsa: Option<CertPair>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DnsConfig {
    /// Name servers (`ip:port`) for recipient domain checks. Empty: the system resolver.
    #[serde(default)]
    pub nameservers: Vec<SocketAddr>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpoolConfig {
    /// Durable queue directory.
    pub directory: PathBuf,
    /// Where local-domain mail is delivered: `<maildir_root>/<domain>/<user>/Maildir`.
    pub maildir_root: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Limits {
    /// Largest message accepted (`message_size_limit`), advertised in EHLO SIZE.
    pub max_message_size: usize,
    /// Recipients per message (`smtpd_recipient_limit`).
    pub max_recipients: usize,
    /// Connections open at once over all listeners.
    pub max_connections: usize,
    /// Connections open at once from one client IP (`smtpd_client_connection_count_limit`).
    pub max_connections_per_ip: usize,
    /// Connections open at once from one IPv4 /24 or IPv6 /64. Unset: a quarter of
    /// `max_connections`, but not less than `max_connections_per_ip`.
    pub max_connections_per_network: Option<usize>,
    /// Protocol errors before the session is ended (`smtpd_hard_error_limit`).
    pub max_errors: usize,
    /// Time for a whole command line, counted from the server's last reply; also the
    /// longest stall in DATA or BDAT (RFC 5321 §4.5.3.2 allows 5 minutes).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// `idle_timeout` while 80 % or more of `max_connections` are open (Postfix's
    /// `smtpd_timeout` under stress).
    #[serde(with = "humantime_serde")]
    pub stress_idle_timeout: Duration,
    /// Slowest DATA or BDAT content accepted, in bytes per second, averaged over the
    /// message (`smtpd_min_data_rate`). 0: any rate, only stalls are limited.
    pub min_data_rate: u64,
}

impl Limits {
    pub fn max_connections_per_network(&self) -> usize {
        self.max_connections_per_network
            .unwrap_or_else(|| (self.max_connections / 4).max(self.max_connections_per_ip))
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 1000,
            max_connections: 1000,
            max_connections_per_ip: 50,
            max_errors: 20,
            max_connections_per_network: None,
            idle_timeout: Duration::from_secs(300),
            stress_idle_timeout: Duration::from_secs(10),
            min_data_rate: 500,
        }
    }
}

/// PROXY protocol (v1 and v2) on the SMTP listeners.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyProtocol {
    /// Load balancers whose connections must start with a PROXY header naming the real
    /// client. Empty: no header is read from anyone.
    #[serde(default)]
    pub trusted_cidrs: Vec<ipnet::IpNet>,
}

impl ProxyProtocol {
    fn is_off(&self) -> bool {
        self.trusted_cidrs.is_empty()
    }
}

/// How queued mail leaves: where it goes, how hard and how long it is tried.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Smarthost for all mail outside the local domains (Postfix `relayhost`). Unset:
    /// direct delivery to the recipient domain's MX hosts.
    pub relay: Option<RelayConfig>,
    /// LMTP server for the local domains (`host:port` or `unix:/path`), e.g. Dovecot's
    /// `lmtp` service. Unset: the built-in Maildir under `spool.maildirRoot`.
    pub lmtp: Option<String>,
    /// Deliveries running at once over all destinations (Postfix `default_process_limit`).
    pub max_concurrent: usize,
    /// Deliveries running at once to one destination: a relay host, an MX domain, the
    /// LMTP server (`default_destination_concurrency_limit`).
    pub max_per_destination: usize,
    /// Wait before the first retry of a deferred recipient; doubled on each further
    /// attempt (`minimal_backoff_time`).
    #[serde(with = "humantime_serde")]
    pub min_backoff: Duration,
    /// Longest wait between two attempts (`maximal_backoff_time`).
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// A recipient still deferred this long after the message arrived fails
    /// (`maximal_queue_lifetime`).
    #[serde(with = "humantime_serde")]
    pub max_queue_lifetime: Duration,
    /// A recipient still deferred this long after arrival gets a delay notice sent to
    /// the sender, once (`delay_warning_time`); unset: none.
    #[serde(with = "humantime_serde")]
    pub delay_warning: Option<Duration>,
    /// TCP connect and greeting timeout (`smtp_connect_timeout`).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Wait for each reply of the next hop, including the one after the message data.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// Port of MX hosts. 25 on the Internet; other values are for tests and development
    /// only (a sink on a loopback high port).
    pub mx_port: u16,
    /// Moved to `shutdown.grace`; read only to say so.
    #[serde(with = "humantime_serde", skip_serializing)]
    pub shutdown_grace: Option<Duration>,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            relay: None,
            lmtp: None,
            max_concurrent: 100,
            max_per_destination: 20,
            min_backoff: Duration::from_secs(300),
            max_backoff: Duration::from_secs(4000),
            max_queue_lifetime: Duration::from_secs(5 * 24 * 3600),
            delay_warning: Some(Duration::from_secs(4 * 3600)),
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(300),
            mx_port: 25,
            shutdown_grace: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RelayConfig {
    /// `host:port` of the smarthost, e.g. `smtp.provider.example:587`.
    pub host: String,
    /// `starttls` or `implicit`; default by port: 465 is implicit TLS, others STARTTLS.
    #[serde(default)]
    pub tls: Option<RelayTls>,
    /// PEM CA certificates trusted besides the system roots (a private relay's CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Directory holding the files `username` and `password` (a mounted
    /// `kubernetes.io/basic-auth` Secret); read at each connection, so a rotated Secret
    /// takes effect without a restart. Unset: no AUTH.
    #[serde(default)]
    pub credentials_dir: Option<PathBuf>,
}

impl RelayConfig {
    /// The host (IPv6 without brackets) and port of `host`.
    pub fn host_port(&self) -> anyhow::Result<(&str, u16)> {
        let (host, port) = self
            .host
            .rsplit_once(':')
            .with_context(|| format!("{:?} has no port: expected host:port", self.host))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port = port
            .parse()
            .with_context(|| format!("{:?}: bad port", self.host))?;
        if host.is_empty() || host.contains(':') && host.parse::<std::net::Ipv6Addr>().is_err() {
            bail!("{:?}: expected host:port or [ipv6]:port", self.host);
        }
        Ok((host, port))
    }

    /// Implicit TLS when configured so, or by default on port 465.
    pub fn implicit_tls(&self) -> bool {
        match self.tls {
            Some(tls) => tls == RelayTls::Implicit,
            None => self.host_port().is_ok_and(|(_, port)| port == 465),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RelayTls {
    Starttls,
    Implicit,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DkimConfig {
    /// The key is published at `<selector>._domainkey.<domain>`.
    #[serde(default = "default_dkim_selector")]
    pub selector: String,
    /// PEM private key: RSA (PKCS#1 or PKCS#8) or Ed25519 (PKCS#8); reloaded on change.
    pub key_file: PathBuf,
    /// Domains whose mail is signed (`d=`, matched against the From header's domain).
    /// Empty: every local domain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    /// A second key, Ed25519 (RFC 8463): each message then carries both signatures, RSA
    /// first. Absent: one signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ed25519: Option<Ed25519DkimConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ed25519DkimConfig {
    /// Unset: `<dkim.selector>-ed25519`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// PEM (PKCS#8) Ed25519 private key; reloaded on change.
    pub key_file: PathBuf,
}

impl DkimConfig {
    /// The Ed25519 key's selector, when there is one.
    pub fn ed25519_selector(&self) -> Option<String> {
        let ed25519 = self.ed25519.as_ref()?;
        Some(
            ed25519
                .selector
                .clone()
                .unwrap_or_else(|| crate::mail::dkim::ed25519_selector(&self.selector)),
        )
    }
}

fn default_dkim_selector() -> String {
    "posthorn".into()
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Plain,
    Json,
}

/// What SIGTERM does, in order: `/readyz` fails at once; the listeners go on accepting
/// for `acceptDelay` (while the endpoints drop the pod), then close; sessions in progress
/// may finish for `sessionTimeout`; deliveries go on until `grace` after the signal.
/// What is left stays in the spool for the next start.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ShutdownConfig {
    #[serde(with = "humantime_serde")]
    pub accept_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// The whole stop, from the signal; below the pod's `terminationGracePeriodSeconds`,
    /// so that the process exits before the SIGKILL.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            accept_delay: Duration::from_secs(5),
            session_timeout: Duration::from_secs(10),
            grace: Duration::from_secs(20),
        }
    }
}

/// Scale-down drain (README: Drain): this pod takes queues handed over on `listen`,
/// and hands its own over when `annotationsFile` names peers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HandoverConfig {
    /// Where the handover listener binds (TLS with `tls`); unset: no handovers taken.
    pub listen: Option<SocketAddr>,
    /// The token shared by the pods of one MailServer.
    pub token_file: Option<PathBuf>,
    /// The downward API file of the pod's annotations; unset: never drains.
    pub annotations_file: Option<PathBuf>,
}

impl HandoverConfig {
    fn is_off(&self) -> bool {
        self.listen.is_none() && self.annotations_file.is_none()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub format: LogFormat,
}

impl Config {
    /// The config a file naming only these gets: every other key at its default.
    pub fn with_defaults(
        hostname: String,
        tls: TlsConfig,
        auth: AuthConfig,
        spool: SpoolConfig,
    ) -> Config {
        Config {
            hostname,
            domains: Vec::new(),
            postmaster: None,
            abuse: None,
            recipient_delimiter: aliases::default_delimiter(),
            aliases: AliasesConfig::default(),
            srs: None,
            listeners: Listeners::default(),
            metrics: default_metrics(),
            tls,
            auth,
            sender_login_map: None,
            dns: DnsConfig::default(),
            spool,
            limits: Limits::default(),
            proxy_protocol: ProxyProtocol::default(),
            delivery: DeliveryConfig::default(),
            shutdown: ShutdownConfig::default(),
            handover: HandoverConfig::default(),
            log: LogConfig::default(),
            dkim: None,
            reload_interval: default_reload_interval(),
        }
    }

    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        // One line naming the file, then the key: `serve` exits with it as its only output.
        Config::parse(&text).map_err(|err| anyhow::anyhow!("{}: {err:#}", path.display()))
    }

    /// The text of a config file, parsed and validated.
    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let config: Config = serde_saphyr::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    pub fn to_yaml(&self) -> anyhow::Result<String> {
        Ok(serde_saphyr::to_string(self)?)
    }

    /// The address mail for `postmaster` is delivered to: the configured one, else
    /// `postmaster@<first domain>`; none without either.
    pub fn postmaster(&self) -> Option<String> {
        self.postmaster.clone().or_else(|| {
            mail::primary_domain(&self.domains).map(|domain| format!("postmaster@{domain}"))
        })
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.check_wire_strings()?;
        let l = &self.listeners;
        if ListenerKind::ALL.iter().all(|&kind| l.get(kind).is_none()) {
            bail!("no listener configured: set at least one of smtp, submission, submissions");
        }
        if l.smtp.is_some() && self.postmaster().is_none() {
            bail!(
                "postmaster: the smtp listener must accept mail for postmaster (RFC 5321 \
                 §4.5.1); set postmaster, or domains so that it is postmaster@<first domain>"
            );
        }
        self.validate_addressing()?;
        self.auth.socket_mode()?;
        if self.auth.throttle_tracked_keys == 0 || self.auth.throttle_window.is_zero() {
            bail!("auth.throttleTrackedKeys and auth.throttleWindow must be positive");
        }
        if self.limits.max_message_size == 0 || self.limits.max_recipients == 0 {
            bail!("limits.maxMessageSize and limits.maxRecipients must be positive");
        }
        if self.limits.max_connections_per_network == Some(0) {
            bail!("limits.maxConnectionsPerNetwork must be positive");
        }
        let d = &self.delivery;
        if d.max_concurrent == 0 || d.max_per_destination == 0 {
            bail!("delivery.maxConcurrent and delivery.maxPerDestination must be positive");
        }
        if d.min_backoff.is_zero() || d.max_backoff < d.min_backoff {
            bail!("delivery.minBackoff must be positive and not above delivery.maxBackoff");
        }
        if let Some(relay) = &d.relay {
            relay.host_port().context("delivery.relay.host")?;
        }
        if d.shutdown_grace.is_some() {
            bail!("delivery.shutdownGrace is now shutdown.grace (README: Shutdown)");
        }
        let s = &self.shutdown;
        if s.accept_delay > s.grace {
            bail!("shutdown.acceptDelay must not exceed shutdown.grace");
        }
        if !self.handover.is_off() && self.handover.token_file.is_none() {
            bail!("handover.tokenFile is required with handover.listen or annotationsFile");
        }
        Ok(())
    }
}

/// The smallest valid config file, for the tests of this module and its submodules.
#[cfg(test)]
const MINIMAL: &str = "
hostname: mail.example.com
domains: [example.com]
tls: {cert: /tls/tls.crt, key: /tls/tls.key}
auth: {passwdFile: /users/passwd}
spool: {directory: /var/spool/posthorn, maildirRoot: /var/mail}
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_file_gets_defaults() {
        let c: Config = serde_saphyr::from_str(MINIMAL).unwrap();
        c.validate().unwrap();
        assert_eq!(
            c.listeners.submission.unwrap().port(),
            ListenerKind::Submission.pod_port()
        );
        assert_eq!(c.auth.failure_delay, Duration::from_secs(2));
        assert_eq!(c.auth.max_failure_delay, Duration::from_secs(15));
        assert_eq!(
            (
                c.auth.max_failures_per_address,
                c.auth.max_failures_per_login
            ),
            (10, 30)
        );
        assert_eq!(c.auth.throttle_window, Duration::from_secs(600));
        assert_eq!(c.auth.throttle_tracked_keys, 10_000);
        assert_eq!(c.auth.dovecot_socket_owner, None);
        assert!(!c.auth.allow_plaintext);
        assert_eq!(c.limits.max_message_size, 25 * 1024 * 1024);
        assert_eq!(c.dkim, None);
    }

    #[test]
    fn with_defaults_is_the_minimal_file() {
        let parsed: Config = serde_saphyr::from_str(MINIMAL).unwrap();
        let built = Config {
            domains: vec!["example.com".into()],
            ..Config::with_defaults(
                "mail.example.com".into(),
                parsed.tls.clone(),
                AuthConfig::new("/users/passwd".into()),
                parsed.spool.clone(),
            )
        };
        assert_eq!(built, parsed);
    }

    #[test]
    fn dkim_section() {
        let text = format!("{MINIMAL}dkim: {{keyFile: /dkim/private.key}}\n");
        let c: Config = serde_saphyr::from_str(&text).unwrap();
        let dkim = c.dkim.clone().unwrap();
        assert_eq!(dkim.selector, "posthorn");
        assert_eq!(dkim.key_file, Path::new("/dkim/private.key"));
        assert!(dkim.domains.is_empty());
        let again: Config = serde_saphyr::from_str(&c.to_yaml().unwrap()).unwrap();
        assert_eq!(c, again);

        let text = format!("{MINIMAL}dkim: {{selector: s1, keyFile: /k, domains: [a.example]}}\n");
        let dkim = serde_saphyr::from_str::<Config>(&text)
            .unwrap()
            .dkim
            .unwrap();
        assert_eq!(
            (dkim.selector.as_str(), dkim.domains.clone()),
            ("s1", vec!["a.example".to_string()])
        );
        assert_eq!(dkim.ed25519_selector(), None);

        let text =
            format!("{MINIMAL}dkim: {{selector: s1, keyFile: /k, ed25519: {{keyFile: /ed}}}}\n");
        let dkim = serde_saphyr::from_str::<Config>(&text)
            .unwrap()
            .dkim
            .unwrap();
        assert_eq!(dkim.ed25519_selector().as_deref(), Some("s1-ed25519"));
        assert_eq!(dkim.ed25519.unwrap().key_file, Path::new("/ed"));
    }

    #[test]
    fn round_trips_through_yaml() {
        let c: Config = serde_saphyr::from_str(MINIMAL).unwrap();
        let again: Config = serde_saphyr::from_str(&c.to_yaml().unwrap()).unwrap();
        assert_eq!(c, again);
    }

    #[test]
    fn unknown_field_is_an_error() {
        let text = format!("{MINIMAL}bogus: 1\n");
        let err = serde_saphyr::from_str::<Config>(&text).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn delivery_defaults_and_relay_settings() {
        let c: Config = serde_saphyr::from_str(MINIMAL).unwrap();
        assert_eq!(c.delivery, DeliveryConfig::default());
        assert_eq!(c.delivery.min_backoff, Duration::from_secs(300));
        assert_eq!(c.delivery.mx_port, 25);
        let text = format!(
            "{MINIMAL}delivery: {{relay: {{host: 'smtp.example.net:465', credentialsDir: /relay}}, \
             lmtp: 'unix:/run/dovecot/lmtp', minBackoff: 10s, delayWarning: null}}\n"
        );
        let c: Config = serde_saphyr::from_str(&text).unwrap();
        c.validate().unwrap();
        let relay = c.delivery.relay.as_ref().unwrap();
        assert_eq!(relay.host_port().unwrap(), ("smtp.example.net", 465));
        assert!(relay.implicit_tls());
        assert_eq!(c.delivery.min_backoff, Duration::from_secs(10));
        assert_eq!(c.delivery.delay_warning, None);
        let v6 = RelayConfig {
            host: "[2001:db8::1]:587".into(),
            tls: None,
            ca_file: None,
            credentials_dir: None,
        };
        assert_eq!(v6.host_port().unwrap(), ("2001:db8::1", 587));
        assert!(!v6.implicit_tls());
        for bad in ["smtp.example.net", ":25", "a:b:25", "host:x"] {
            let relay = RelayConfig {
                host: bad.into(),
                ..v6.clone()
            };
            assert!(relay.host_port().is_err(), "{bad}");
        }
    }

    #[test]
    fn proxy_protocol_networks() {
        let c: Config = serde_saphyr::from_str(MINIMAL).unwrap();
        assert!(c.proxy_protocol.trusted_cidrs.is_empty());
        let text =
            format!("{MINIMAL}proxyProtocol: {{trustedCidrs: [10.0.0.0/8, '2001:db8::/32']}}\n");
        let c: Config = serde_saphyr::from_str(&text).unwrap();
        let nets: Vec<String> = c
            .proxy_protocol
            .trusted_cidrs
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(nets, ["10.0.0.0/8", "2001:db8::/32"]);
        let again: Config = serde_saphyr::from_str(&c.to_yaml().unwrap()).unwrap();
        assert_eq!(c, again);
        for bad in ["10.0.0.0", "10.0.0.0/33", "example.com/8"] {
            let text = format!("{MINIMAL}proxyProtocol: {{trustedCidrs: ['{bad}']}}\n");
            assert!(serde_saphyr::from_str::<Config>(&text).is_err(), "{bad}");
        }
    }

    #[test]
    fn slow_client_limits() {
        let c: Config = serde_saphyr::from_str(MINIMAL).unwrap();
        assert_eq!(c.limits.stress_idle_timeout, Duration::from_secs(10));
        assert_eq!(c.limits.min_data_rate, 500);
        assert_eq!(c.limits.max_connections_per_network(), 250);
        let text = format!("{MINIMAL}limits: {{maxConnections: 40, maxConnectionsPerIp: 20}}\n");
        let c: Config = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(
            c.limits.max_connections_per_network(),
            20,
            "not below per IP"
        );
        let text = format!(
            "{MINIMAL}limits: {{maxConnectionsPerNetwork: 7, stressIdleTimeout: 3s, minDataRate: 0}}\n"
        );
        let c: Config = serde_saphyr::from_str(&text).unwrap();
        c.validate().unwrap();
        assert_eq!(c.limits.max_connections_per_network(), 7);
        assert_eq!(c.limits.stress_idle_timeout, Duration::from_secs(3));
        let mut c = c;
        c.limits.max_connections_per_network = Some(0);
        assert!(c.validate().is_err());
    }

    #[test]
    fn parse_validates() {
        assert_eq!(Config::parse(MINIMAL).unwrap().hostname, "mail.example.com");
        let text = MINIMAL.replace("mail.example.com", "mail");
        let err = Config::parse(&text).unwrap_err();
        assert!(err.to_string().contains("fully qualified"), "{err}");
    }

    #[test]
    fn needs_a_listener() {
        let mut c: Config = serde_saphyr::from_str(MINIMAL).unwrap();
        c.listeners = Listeners::from_fn(|kind| {
            (kind == ListenerKind::Submissions).then(|| any_address(465))
        });
        c.validate().unwrap();
        c.listeners = Listeners::from_fn(|_| None);
        let err = c.validate().unwrap_err().to_string();
        assert!(err.starts_with("no listener configured"), "{err}");
    }

    #[test]
    fn shutdown_defaults_and_the_moved_grace() {
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(
            c.shutdown,
            ShutdownConfig {
                accept_delay: Duration::from_secs(5),
                session_timeout: Duration::from_secs(10),
                grace: Duration::from_secs(20),
            }
        );
        let old = format!("{MINIMAL}delivery: {{shutdownGrace: 20s}}\n");
        assert_eq!(
            Config::parse(&old).unwrap_err().to_string(),
            "delivery.shutdownGrace is now shutdown.grace (README: Shutdown)"
        );
        let late = format!("{MINIMAL}shutdown: {{acceptDelay: 30s}}\n");
        assert_eq!(
            Config::parse(&late).unwrap_err().to_string(),
            "shutdown.acceptDelay must not exceed shutdown.grace"
        );
        let set =
            format!("{MINIMAL}shutdown: {{acceptDelay: 0s, sessionTimeout: 1s, grace: 2s}}\n");
        assert_eq!(
            Config::parse(&set).unwrap().shutdown.grace,
            Duration::from_secs(2)
        );
    }

    #[test]
    fn rejects_unqualified_hostname() {
        let mut c: Config = serde_saphyr::from_str(MINIMAL).unwrap();
        c.hostname = "mail".into();
        assert!(c.validate().is_err());
    }
}

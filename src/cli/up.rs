//! `posthorn up`: the whole data plane on this machine from a `MailServer` manifest.
//!
//! What a cluster would provide comes from `--secrets-dir` when it is there (Secrets laid
//! out as the kubelet mounts them), and is generated into the state directory when it is
//! not: a self-signed certificate, and a test user with a random password.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use rand::distr::{Alphanumeric, SampleString};

use crate::api::{self, MailServer, TlsSource};
use crate::auth::scheme::{self, Scheme};
use crate::config::{Listeners, LogFormat};
use crate::mail::dkim::KeyAlgorithm;
use crate::mail::{self, Address, ListenerKind};
use crate::plan::{self, DKIM_KEY, FileLayout};
use crate::spool::lock::DirLock;
use crate::{serve, telemetry, tls};

#[derive(clap::Args)]
pub struct Args {
    /// The MailServer manifest.
    #[arg(long = "file", short = 'f')]
    file: PathBuf,
    /// Spool, mailboxes, generated certificate and users live here.
    #[arg(long, default_value = "./.posthorn")]
    state_dir: PathBuf,
    /// Secrets as Kubernetes mounts them: `DIR/<secret-name>/<key>`.
    #[arg(long)]
    secrets_dir: Option<PathBuf>,
    /// Address the listeners bind to.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Added to every port (2525, 5587, 5465, 9090), to run beside whatever holds them:
    /// `--port-offset 10000` listens on 12525, 15587, 15465 and 19090.
    #[arg(long, default_value_t = 0)]
    port_offset: u16,
    /// Name server for recipient domain checks (default: the system's).
    #[arg(long)]
    dns_server: Option<SocketAddr>,
    #[arg(long, value_enum, default_value_t)]
    log_format: LogFormat,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    telemetry::init_logging(args.log_format);
    super::runtime()?.block_on(up(&args))
}

async fn up(args: &Args) -> anyhow::Result<()> {
    let manifest = api::load_manifest(&args.file)?;
    let state = &args.state_dir;
    std::fs::create_dir_all(state)
        .with_context(|| format!("creating the state directory {}", state.display()))?;
    std::fs::set_permissions(state, std::fs::Permissions::from_mode(0o700))?;
    // Before any file here is rewritten: a running `up` reloads some of them live.
    let _lock = DirLock::try_acquire(&state.join("up.lock"))
        .with_context(|| format!("locking the state directory {}", state.display()))?
        .with_context(|| {
            format!(
                "state directory {} is in use by another posthorn up",
                state.display()
            )
        })?;

    let (cert, key) = tls_files(&manifest, args)?;
    let (passwd, test_user) = users_file(&manifest, args)?;
    let senders = state.join("sender-login-map");
    write_private(&senders, &plan::sender_map(&manifest.spec))?;
    let aliases = state.join("aliases");
    write_private(&aliases, &manifest.spec.aliases.file())?;

    let layout = FileLayout {
        cert,
        key,
        passwd,
        sender_login_map: senders,
        aliases,
        srs_secret: args
            .secrets_dir
            .as_ref()
            .zip(manifest.spec.aliases.srs_secret.as_ref())
            .map(|(dir, secret)| dir.join(secret).join(plan::SRS_SECRET_KEY)),
        spool: state.join("spool"),
        maildir_root: state.join("mail"),
        relay_credentials: args
            .secrets_dir
            .as_ref()
            .zip(
                manifest
                    .spec
                    .relay
                    .as_ref()
                    .and_then(|r| r.credentials_secret.as_ref()),
            )
            .map(|(dir, secret)| dir.join(secret)),
        dkim_key: dkim_key_file(&manifest, args, DkimKey::Rsa)?,
        dkim_ed25519_key: match manifest.spec.dkim.ed25519() {
            Some(_) => dkim_key_file(&manifest, args, DkimKey::Ed25519)?,
            None => args.state_dir.join("dkim-ed25519.key"),
        },
        // One server, nowhere to drain to.
        handover: None,
    };
    let mut config = plan::server_config(&manifest.spec, &layout)?;
    // The manifest's ports are the Service's; locally we bind the pod's unprivileged ports.
    let highest = ListenerKind::ALL
        .map(ListenerKind::pod_port)
        .into_iter()
        .chain([mail::METRICS_POD_PORT])
        .max()
        .unwrap_or(u16::MAX);
    anyhow::ensure!(
        highest.checked_add(args.port_offset).is_some(),
        "--port-offset {} takes port {highest} past 65535",
        args.port_offset
    );
    let local = |port: u16| SocketAddr::new(args.bind, port + args.port_offset);
    let pod = config.listeners.clone();
    config.listeners = Listeners::from_fn(|kind| pod.get(kind).map(|addr| local(addr.port())));
    config.metrics = Some(local(mail::METRICS_POD_PORT));
    config.dns.nameservers = args.dns_server.into_iter().collect();
    let config_path = state.join("config.yaml");
    std::fs::write(&config_path, config.to_yaml()?)?;

    let hostname = config.hostname.clone();
    let mut bound = serve::start(config).await.map_err(|e| {
        let in_use = e.chain().any(|cause| {
            cause
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse)
        });
        if in_use {
            e.context("a port is in use (another posthorn up, or a mail server?): stop it, or move every port with --port-offset, e.g. --port-offset 10000")
        } else {
            e
        }
    })?;
    println!("{}", bound.summary());
    println!("config: {}", config_path.display());
    if let Some((user, password)) = &test_user {
        println!("test user: {user}  password: {password}");
        if let Some(addr) = bound
            .get(ListenerKind::Submission)
            .or(bound.get(ListenerKind::Submissions))
        {
            let tls = if Some(addr) == bound.get(ListenerKind::Submission) {
                "--tls"
            } else {
                "--tls-on-connect"
            };
            println!(
                "try: swaks --server {} --port {} {tls} --auth PLAIN --auth-user {user} --auth-password '{password}' --from {user} --to {user} --ehlo {hostname}",
                addr.ip(),
                addr.port()
            );
            if !on_path("swaks") {
                println!(
                    "swaks is not installed: apt-get install swaks (bash e2e/setup.sh installs it with the other test peers)"
                );
            }
            let (local, domain) =
                Address::parse(user).map_or((user.as_str(), ""), |a| (a.local(), a.domain()));
            println!(
                "mail for {user} arrives in {}",
                layout
                    .maildir_root
                    .join(domain)
                    .join(local)
                    .join("Maildir/new")
                    .display()
            );
        }
    }
    bound.signalled().await;
    bound.shutdown().await;
    Ok(())
}

/// Whether an executable `name` is in one of `$PATH`'s directories.
fn on_path(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(name))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// The user's TLS Secret if the secrets directory has it, else a self-signed pair kept
/// in the state directory across runs.
fn tls_files(manifest: &MailServer, args: &Args) -> anyhow::Result<(PathBuf, PathBuf)> {
    if let (Some(dir), TlsSource::Secret(name)) = (&args.secrets_dir, manifest.spec.tls_source()) {
        let (cert, key) = (
            dir.join(name).join(tls::CERT_FILE),
            dir.join(name).join(tls::KEY_FILE),
        );
        if cert.exists() && key.exists() {
            return Ok((cert, key));
        }
        tracing::warn!(
            secret = name,
            "TLS Secret not found in the secrets directory, using a self-signed certificate"
        );
    }
    tls::write_self_signed(&manifest.spec.hostname, &args.state_dir.join("tls"))
}

/// The users Secret if present; else a generated test user whose password is kept
/// beside it, so repeated runs print the same credentials.
fn users_file(
    manifest: &MailServer,
    args: &Args,
) -> anyhow::Result<(PathBuf, Option<(String, String)>)> {
    let users = &manifest.spec.users;
    if let Some(dir) = &args.secrets_dir {
        let path = dir.join(&users.secret_name).join(&users.key);
        if path.exists() {
            return Ok((path, None));
        }
        tracing::warn!(secret = %users.secret_name, key = %users.key, "users Secret not found in the secrets directory, creating a test user");
    }
    let domain = manifest
        .spec
        .primary_domain()
        .context("spec.domains is empty")?;
    let user = format!("test@{domain}");
    let passwd = args.state_dir.join("passwd");
    let password_file = args.state_dir.join("test-password");
    let password = match std::fs::read_to_string(&password_file) {
        Ok(p) if passwd.exists() => p.trim().to_string(),
        _ => {
            let password = Alphanumeric.sample_string(&mut rand::rng(), 20);
            // SHA512-CRYPT: verifies in ~1.5 ms, so the local loop stays quick.
            let hash = scheme::hash_password(Scheme::Sha512Crypt, &password)?;
            write_private(&passwd, &format!("{user}:{hash}\n"))?;
            write_private(&password_file, &password)?;
            password
        }
    };
    Ok((passwd, Some((user, password))))
}

/// Which of the two DKIM keys of `spec.dkim`.
#[derive(Clone, Copy)]
enum DkimKey {
    Rsa,
    Ed25519,
}

/// The DKIM Secret's key if the secrets directory has it; else a key generated once
/// into the state directory, its DNS record logged for the zone.
fn dkim_key_file(manifest: &MailServer, args: &Args, which: DkimKey) -> anyhow::Result<PathBuf> {
    let dkim = &manifest.spec.dkim;
    let (secret, selector, algorithm, file) = match which {
        DkimKey::Rsa => (
            dkim.secret_name.as_deref(),
            dkim.selector.clone(),
            KeyAlgorithm::Rsa,
            "dkim.key",
        ),
        DkimKey::Ed25519 => (
            dkim.ed25519_user_secret(),
            dkim.ed25519_selector().unwrap_or_default(),
            KeyAlgorithm::Ed25519,
            "dkim-ed25519.key",
        ),
    };
    if let (Some(dir), Some(secret)) = (&args.secrets_dir, secret) {
        let path = dir.join(secret).join(DKIM_KEY);
        if path.exists() {
            return Ok(path);
        }
        tracing::warn!(%secret, "DKIM Secret not found in the secrets directory, using a generated key");
    }
    let path = args.state_dir.join(file);
    if !path.exists() {
        let key = crate::mail::dkim::generate_key(algorithm, 2048)?;
        crate::mail::dkim::write_private_key(&path, &key.private_pem)?;
        let domain = manifest
            .spec
            .primary_domain()
            .context("spec.domains is empty")?;
        tracing::info!(
            record = %crate::mail::dkim::zone_line(&format!("{}.", plan::dkim_record_name(&selector, domain)), &key.dns_record),
            "generated a DKIM key; publish this record"
        );
    }
    Ok(path)
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

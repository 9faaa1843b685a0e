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
use crate::config::{Config, FileLayout, Listeners};
use crate::delivery::dkim::KeyAlgorithm;
use crate::mail::{self, Address, ListenerKind};
use crate::serve;
use crate::spool::lock::DirLock;

pub struct Options {
    pub manifest: PathBuf,
    pub state_dir: PathBuf,
    pub secrets_dir: Option<PathBuf>,
    pub bind: IpAddr,
    pub dns_server: Option<SocketAddr>,
}

pub async fn run(options: Options) -> anyhow::Result<()> {
    let manifest = api::load_manifest(&options.manifest)?;
    let state = &options.state_dir;
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

    let (cert, key) = tls_files(&manifest, &options)?;
    let (passwd, test_user) = users_file(&manifest, &options)?;
    let senders = state.join("sender-login-map");
    write_private(&senders, &sender_map(&manifest))?;

    let layout = FileLayout {
        cert,
        key,
        passwd,
        sender_login_map: senders,
        spool: state.join("spool"),
        maildir_root: state.join("mail"),
        relay_credentials: options
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
        dkim_key: dkim_key_file(&manifest, &options)?,
    };
    let mut config = Config::for_mailserver(&manifest.spec, &layout)?;
    // The manifest's ports are the Service's; locally we bind the pod's unprivileged ports.
    let pod = config.listeners.clone();
    config.listeners = Listeners::from_fn(|kind| {
        pod.get(kind)
            .map(|addr| SocketAddr::new(options.bind, addr.port()))
    });
    config.metrics = Some(SocketAddr::new(options.bind, mail::METRICS_POD_PORT));
    config.dns.nameservers = options.dns_server.into_iter().collect();
    let config_path = state.join("config.yaml");
    std::fs::write(&config_path, config.to_yaml()?)?;

    let hostname = config.hostname.clone();
    let mut bound = serve::start(config).await?;
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

/// The user's TLS Secret if the secrets directory has it, else a self-signed pair kept
/// in the state directory across runs.
fn tls_files(manifest: &MailServer, options: &Options) -> anyhow::Result<(PathBuf, PathBuf)> {
    if let (Some(dir), TlsSource::Secret(name)) = (&options.secrets_dir, manifest.spec.tls_source())
    {
        let (cert, key) = (
            dir.join(name).join("tls.crt"),
            dir.join(name).join("tls.key"),
        );
        if cert.exists() && key.exists() {
            return Ok((cert, key));
        }
        tracing::warn!(
            secret = name,
            "TLS Secret not found in the secrets directory, using a self-signed certificate"
        );
    }
    crate::tls::write_self_signed(&manifest.spec.hostname, &options.state_dir.join("tls"))
}

/// The users Secret if present; else a generated test user whose password is kept
/// beside it, so repeated runs print the same credentials.
fn users_file(
    manifest: &MailServer,
    options: &Options,
) -> anyhow::Result<(PathBuf, Option<(String, String)>)> {
    let users = &manifest.spec.users;
    if let Some(dir) = &options.secrets_dir {
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
    let passwd = options.state_dir.join("passwd");
    let password_file = options.state_dir.join("test-password");
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

/// The DKIM Secret's key if the secrets directory has it; else a key generated once
/// into the state directory, its DNS record logged for the zone.
fn dkim_key_file(manifest: &MailServer, options: &Options) -> anyhow::Result<PathBuf> {
    let dkim = &manifest.spec.dkim;
    if let (Some(dir), Some(secret)) = (&options.secrets_dir, &dkim.secret_name) {
        let path = dir.join(secret).join(crate::operator::render::DKIM_KEY);
        if path.exists() {
            return Ok(path);
        }
        tracing::warn!(%secret, "DKIM Secret not found in the secrets directory, using a generated key");
    }
    let path = options.state_dir.join("dkim.key");
    if !path.exists() {
        let key = crate::delivery::dkim::generate_key(KeyAlgorithm::Rsa, 2048)?;
        crate::delivery::dkim::write_private_key(&path, &key.private_pem)?;
        let domain = manifest
            .spec
            .primary_domain()
            .context("spec.domains is empty")?;
        tracing::info!(
            record = %crate::delivery::dkim::zone_line(&format!("{}._domainkey.{domain}.", dkim.selector), &key.dns_record),
            "generated a DKIM key; publish this record"
        );
    }
    Ok(path)
}

fn sender_map(manifest: &MailServer) -> String {
    manifest
        .spec
        .sender_logins
        .iter()
        .map(|entry| format!("{} {}\n", entry.address, entry.logins.join(", ")))
        .collect()
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

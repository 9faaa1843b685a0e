//! The `posthorn` command: argument parsing and dispatch to the library.

use posthorn::{api, auth, config, crlf, delivery, operator, serve, spool, telemetry, up};

use std::io::{BufRead, IsTerminal};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "posthorn",
    version,
    about = "Mail submission stacks on Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the mail server from a config file (what the operator's pods run).
    Serve {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the whole data plane locally from a MailServer manifest.
    Up {
        /// The MailServer manifest.
        #[arg(long = "file", short = 'f')]
        file: PathBuf,
        /// Spool, mailboxes, generated certificate and users live here.
        #[arg(long, default_value = "./.posthorn")]
        state_dir: PathBuf,
        /// Secrets as Kubernetes mounts them: DIR/<secret-name>/<key>.
        #[arg(long)]
        secrets_dir: Option<PathBuf>,
        /// Address the listeners bind to.
        #[arg(long, default_value = "127.0.0.1")]
        bind: IpAddr,
        /// Name server for recipient domain checks (default: the system's).
        #[arg(long)]
        dns_server: Option<SocketAddr>,
        #[arg(long, value_enum, default_value_t)]
        log_format: config::LogFormat,
    },
    /// Hash a password for a Dovecot passwd-file (read from stdin or a prompt).
    Passwd {
        /// ARGON2ID, SHA512-CRYPT, SHA256-CRYPT, BLF-CRYPT or ARGON2I.
        #[arg(long, default_value = "ARGON2ID")]
        scheme: auth::scheme::Scheme,
    },
    /// Print the MailServer CustomResourceDefinition.
    Crd,
    /// Print the Kubernetes objects the operator would apply for a MailServer.
    Render {
        /// The MailServer manifest.
        #[arg(long = "file", short = 'f')]
        file: PathBuf,
        /// Secrets as Kubernetes mounts them: DIR/<secret-name>/<key> (for the DKIM record).
        #[arg(long)]
        secrets_dir: Option<PathBuf>,
        /// Image for the mail server pods, unless the MailServer names one.
        #[arg(long, env = "POSTHORN_IMAGE", default_value = operator::DEFAULT_IMAGE)]
        image: String,
        /// Render as for a cluster without cert-manager (self-signed fallback).
        #[arg(long)]
        without_cert_manager: bool,
        /// Render as for a cluster without ExternalDNS (no DNSEndpoint).
        #[arg(long)]
        without_external_dns: bool,
        /// PodDisruptionBudget as policy/v1beta1 (Kubernetes before 1.21).
        #[arg(long)]
        pdb_v1beta1: bool,
    },
    /// Run the operator: reconcile MailServers in the cluster (KUBECONFIG or in-cluster).
    Operator {
        /// Image for the mail server pods, unless a MailServer names one.
        #[arg(long, env = "POSTHORN_IMAGE", default_value = operator::DEFAULT_IMAGE)]
        image: String,
        /// Address for /metrics, /healthz and /readyz.
        #[arg(long, default_value = "0.0.0.0:8080")]
        metrics: SocketAddr,
        /// Namespace of the leader election Lease (the operator's own).
        #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
        lease_namespace: String,
        #[arg(long, default_value = "posthorn-operator")]
        lease_name: String,
        /// This replica's identity in the Lease.
        #[arg(long, env = "POD_NAME")]
        identity: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        log_format: config::LogFormat,
    },
    /// Inspect and manage the delivery queue of a server (mailq, postqueue, postsuper).
    Queue {
        #[command(subcommand)]
        action: QueueAction,
        /// The spool directory (default: the one in --config).
        #[arg(long, global = true)]
        spool: Option<PathBuf>,
        /// The server's config file, to find its spool.
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
    },
    /// DKIM signing keys.
    Dkim {
        #[command(subcommand)]
        command: DkimCommand,
    },
}

#[derive(Subcommand)]
enum QueueAction {
    /// Queued messages and the recipients still to deliver, with reasons (mailq).
    List,
    /// One message: envelope, recipient statuses, content (postcat -q).
    Show { id: spool::QueueId },
    /// Try every queued message now, deferred ones included (postqueue -f).
    Flush,
    /// Remove messages without notifying anyone (postsuper -d).
    Delete {
        #[arg(required = true)]
        ids: Vec<spool::QueueId>,
    },
}

#[derive(Subcommand)]
enum DkimCommand {
    /// Generate a signing key: print it (or write it to --out, mode 0600) and the DNS
    /// TXT record that publishes it, as a zone file line.
    Keygen {
        #[arg(long, default_value = "posthorn")]
        selector: String,
        /// Domain the record name is made for; without it the name is relative.
        #[arg(long)]
        domain: Option<String>,
        #[arg(long, value_enum, default_value = "rsa")]
        algorithm: delivery::dkim::KeyAlgorithm,
        /// RSA key size (2048 to 4096).
        #[arg(long, default_value_t = 2048)]
        bits: usize,
        /// Write the private key to this new file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Sign the message on stdin as the server would and print it, to check a key and
    /// its DNS record with any verifier (as `opendkim-testmsg` does).
    Sign {
        /// PEM private key (RSA or Ed25519).
        #[arg(long)]
        key: PathBuf,
        #[arg(long, default_value = "posthorn")]
        selector: String,
        /// Signing domain (`d=`); default: the From header's domain.
        #[arg(long)]
        domain: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => {
            let config = config::Config::load(&config)?;
            telemetry::init_logging(config.log.format);
            runtime()?.block_on(async {
                let mut bound = serve::start(config).await?;
                println!("{}", bound.summary());
                bound.signalled().await;
                bound.shutdown().await;
                Ok(())
            })
        }
        Command::Up {
            file,
            state_dir,
            secrets_dir,
            bind,
            dns_server,
            log_format,
        } => {
            telemetry::init_logging(log_format);
            let options = up::Options {
                manifest: file,
                state_dir,
                secrets_dir,
                bind,
                dns_server,
            };
            runtime()?.block_on(up::run(options))
        }
        Command::Passwd { scheme } => {
            let password = read_password()?;
            println!("{}", auth::scheme::hash_password(scheme, &password)?);
            Ok(())
        }
        Command::Crd => {
            print!("{}", api::crd_yaml()?);
            Ok(())
        }
        Command::Render {
            file,
            secrets_dir,
            image,
            without_cert_manager,
            without_external_dns,
            pdb_v1beta1,
        } => {
            print!(
                "{}",
                operator::render_command(&operator::RenderCommand {
                    manifest: file,
                    secrets_dir,
                    image,
                    without_cert_manager,
                    without_external_dns,
                    pdb_v1beta1,
                })?
            );
            Ok(())
        }
        Command::Operator {
            image,
            metrics,
            lease_namespace,
            lease_name,
            identity,
            log_format,
        } => {
            telemetry::init_logging(log_format);
            let identity = identity.unwrap_or_else(|| {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
                format!("{}-{}", host.trim(), std::process::id())
            });
            runtime()?.block_on(operator::run(operator::OperatorCommand {
                image,
                metrics,
                lease_namespace,
                lease_name,
                identity,
            }))
        }
        Command::Queue {
            action,
            spool,
            config,
        } => {
            let spool = match (spool, config) {
                (Some(dir), _) => dir,
                (None, Some(file)) => config::Config::load(&file)?.spool.directory,
                (None, None) => anyhow::bail!("say which queue: --spool DIR or --config FILE"),
            };
            queue_command(&spool, action)
        }
        Command::Dkim {
            command:
                DkimCommand::Keygen {
                    selector,
                    domain,
                    algorithm,
                    bits,
                    out,
                },
        } => {
            let key = delivery::dkim::generate_key(algorithm, bits)?;
            match out {
                Some(path) => {
                    delivery::dkim::write_private_key(&path, &key.private_pem)?;
                    eprintln!("private key written to {}", path.display());
                }
                None => print!("{}", key.private_pem),
            }
            let name = match domain {
                Some(domain) => format!("{selector}._domainkey.{}.", domain.trim_end_matches('.')),
                None => format!("{selector}._domainkey"),
            };
            println!("{}", delivery::dkim::zone_line(&name, &key.dns_record));
            Ok(())
        }
        Command::Dkim {
            command:
                DkimCommand::Sign {
                    key,
                    selector,
                    domain,
                },
        } => {
            let mut message = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut message)
                .context("reading the message from stdin")?;
            // A file edited by hand has bare LFs; what is signed is what goes on the wire.
            let message = crlf::canonical(&message).unwrap_or(message);
            let domain = domain
                .or_else(|| delivery::dkim::from_domain(&message))
                .context("no --domain and no From header address")?;
            let config = config::DkimConfig {
                selector,
                key_file: key,
                domains: vec![domain.clone()],
            };
            let signer = delivery::dkim::Signer::load(&config, &[])?;
            let header = signer
                .sign(&message, &domain)?
                .context("the signer refused the domain")?;
            let mut out = std::io::stdout().lock();
            std::io::Write::write_all(&mut out, &header)?;
            std::io::Write::write_all(&mut out, &message)?;
            Ok(())
        }
    }
}

fn queue_command(spool: &std::path::Path, action: QueueAction) -> anyhow::Result<()> {
    use delivery::control;
    use std::io::Write;
    match action {
        QueueAction::List => print!("{}", control::list(spool)?),
        QueueAction::Show { id } => std::io::stdout().write_all(&control::show(spool, &id)?)?,
        QueueAction::Flush => println!("{}", control::request(spool, "flush")?),
        QueueAction::Delete { ids } => {
            for id in ids {
                println!("{}", control::request(spool, &format!("delete {id}"))?);
            }
        }
    }
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// On a terminal: asked twice without echo, as `doveadm pw` does. Otherwise one line
/// from stdin, so scripts can pipe it in.
fn read_password() -> anyhow::Result<String> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Enter new password: ")?;
        let again = rpassword::prompt_password("Retype new password: ")?;
        anyhow::ensure!(first == again, "passwords don't match");
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    anyhow::ensure!(!password.is_empty(), "empty password");
    Ok(password)
}

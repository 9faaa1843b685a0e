//! Posthorn: a Kubernetes operator for mail submission stacks, and the mail server it runs.

mod api;
mod auth;
mod config;
mod delivery;
mod operator;
mod policy;
mod reload;
mod serve;
mod smtp;
mod spool;
mod telemetry;
mod tls;
mod up;

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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => {
            let config = config::Config::load(&config)?;
            telemetry::init_logging(config.log.format);
            runtime()?.block_on(async {
                let bound = serve::start(config).await?;
                println!("{}", bound.summary());
                serve::shutdown_signal().await?;
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

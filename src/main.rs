//! The `posthorn` command: the list of subcommands and the dispatch to `posthorn::cli`,
//! where each one parses its arguments and does its work.

use clap::{Parser, Subcommand};
use posthorn::cli;

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
    Serve(cli::serve::Args),
    /// Run the whole data plane locally from a MailServer manifest.
    Up(cli::up::Args),
    /// Hash a password for a Dovecot passwd-file (read from stdin or a prompt).
    Passwd(cli::passwd::Args),
    /// Print the MailServer CustomResourceDefinition.
    Crd,
    /// Print the Kubernetes objects the operator would apply for a MailServer.
    Render(cli::render::Args),
    /// Run the operator: reconcile MailServers in the cluster (KUBECONFIG or in-cluster).
    Operator(cli::operator::Args),
    /// Inspect and manage the delivery queue of a server (mailq, postqueue, postsuper).
    Queue(cli::queue::Args),
    /// DKIM signing keys.
    Dkim(cli::dkim::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(args) => cli::serve::run(args),
        Command::Up(args) => cli::up::run(args),
        Command::Passwd(args) => cli::passwd::run(args),
        Command::Crd => cli::crd::run(),
        Command::Render(args) => cli::render::run(args),
        Command::Operator(args) => cli::operator::run(args),
        Command::Queue(args) => cli::queue::run(args),
        Command::Dkim(args) => cli::dkim::run(args),
    }
}

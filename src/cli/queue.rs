//! `posthorn queue`: the delivery queue of a server, as mailq, postqueue and postsuper.

use std::io::Write;
use std::path::PathBuf;

use crate::config::Config;
use crate::queue::control;
use crate::spool::QueueId;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
    /// The spool directory (default: the one in --config).
    #[arg(long, global = true)]
    spool: Option<PathBuf>,
    /// The server's config file, to find its spool.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Queued messages and the recipients still to deliver, with reasons (mailq).
    List,
    /// One message: envelope, recipient statuses, content (postcat -q).
    Show { id: QueueId },
    /// Try every queued message now, deferred ones included (postqueue -f).
    Flush,
    /// Remove messages without notifying anyone (postsuper -d).
    Delete {
        #[arg(required = true)]
        ids: Vec<QueueId>,
    },
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let spool = match (args.spool, args.config) {
        (Some(dir), _) => dir,
        (None, Some(file)) => Config::load(&file)?.spool.directory,
        (None, None) => anyhow::bail!("say which queue: --spool DIR or --config FILE"),
    };
    match args.action {
        Action::List => print!("{}", control::list(&spool)?),
        Action::Show { id } => std::io::stdout().write_all(&control::show(&spool, &id)?)?,
        Action::Flush => println!("{}", control::request(&spool, "flush")?),
        Action::Delete { ids } => {
            for id in ids {
                println!("{}", control::request(&spool, &format!("delete {id}"))?);
            }
        }
    }
    Ok(())
}

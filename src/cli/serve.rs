//! `posthorn serve`: the mail server from a config file, as the operator's pods run it.

use std::path::PathBuf;

use crate::config::Config;
use crate::{serve, telemetry};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, short)]
    config: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    telemetry::init_logging(config.log.format);
    super::runtime()?.block_on(async {
        let mut bound = serve::start(config).await?;
        println!("{}", bound.summary());
        bound.signalled().await;
        bound.shutdown().await;
        Ok(())
    })
}

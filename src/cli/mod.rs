//! The `posthorn` subcommands, one file each: its arguments (`Args`) and a `run` that
//! calls into the library. `src/main.rs` holds the command list and the dispatch.

pub mod crd;
pub mod dkim;
pub mod operator;
pub mod passwd;
pub mod queue;
pub mod render;
pub mod serve;
pub mod up;

/// The runtime of the subcommands that serve (`serve`, `up`, `operator`).
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

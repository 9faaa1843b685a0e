//! `posthorn passwd`: a password hash for a Dovecot passwd-file.

use std::io::{BufRead, IsTerminal};

use anyhow::Context;

use crate::auth::scheme::{self, Scheme};

#[derive(clap::Args)]
pub struct Args {
    /// ARGON2ID, SHA512-CRYPT, SHA256-CRYPT, BLF-CRYPT or ARGON2I.
    #[arg(long, default_value = "ARGON2ID")]
    scheme: Scheme,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let password = read_password()?;
    println!("{}", scheme::hash_password(args.scheme, &password)?);
    Ok(())
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

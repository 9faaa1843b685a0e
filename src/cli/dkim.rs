//! `posthorn dkim`: generate a signing key, or sign a message as the server would.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::Context;

use crate::config::{DkimConfig, Ed25519DkimConfig};
use crate::crlf;
use crate::mail::dkim::{self, KeyAlgorithm};
use crate::plan;
use crate::transport::dkim::{Signer, from_domain};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Generate a signing key: print it (or write it to --out, mode 0600) and the DNS
    /// TXT record that publishes it, as a zone file line.
    Keygen {
        #[arg(long, default_value = "posthorn")]
        selector: String,
        /// Domain the record name is made for; without it the name is relative.
        #[arg(long)]
        domain: Option<String>,
        #[arg(long, value_enum, default_value = "rsa")]
        algorithm: KeyAlgorithm,
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
        /// A second key, Ed25519: the message gets both signatures, --key's first.
        #[arg(long)]
        ed25519_key: Option<PathBuf>,
        /// Selector of the Ed25519 key; default: `<selector>-ed25519`.
        #[arg(long, requires = "ed25519_key")]
        ed25519_selector: Option<String>,
    },
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Keygen {
            selector,
            domain,
            algorithm,
            bits,
            out,
        } => keygen(&selector, domain.as_deref(), algorithm, bits, out),
        Command::Sign {
            key,
            selector,
            domain,
            ed25519_key,
            ed25519_selector,
        } => {
            let ed25519 = ed25519_key.map(|key_file| Ed25519DkimConfig {
                selector: ed25519_selector,
                key_file,
            });
            sign(key, selector, domain, ed25519)
        }
    }
}

fn keygen(
    selector: &str,
    domain: Option<&str>,
    algorithm: KeyAlgorithm,
    bits: usize,
    out: Option<PathBuf>,
) -> anyhow::Result<()> {
    let key = dkim::generate_key(algorithm, bits)?;
    match out {
        Some(path) => {
            dkim::write_private_key(&path, &key.private_pem)?;
            eprintln!("private key written to {}", path.display());
        }
        None => print!("{}", key.private_pem),
    }
    let name = match domain {
        Some(domain) => format!(
            "{}.",
            plan::dkim_record_name(selector, domain.trim_end_matches('.'))
        ),
        None => format!("{selector}._domainkey"),
    };
    println!("{}", dkim::zone_line(&name, &key.dns_record));
    Ok(())
}

fn sign(
    key: PathBuf,
    selector: String,
    domain: Option<String>,
    ed25519: Option<Ed25519DkimConfig>,
) -> anyhow::Result<()> {
    let mut message = Vec::new();
    std::io::stdin()
        .read_to_end(&mut message)
        .context("reading the message from stdin")?;
    // A file edited by hand has bare LFs; what is signed is what goes on the wire.
    let message = crlf::canonical(&message).unwrap_or(message);
    let domain = domain
        .or_else(|| from_domain(&message))
        .context("no --domain and no From header address")?;
    let config = DkimConfig {
        selector,
        key_file: key,
        domains: vec![domain.clone()],
        ed25519,
    };
    let signer = Signer::load(&config, &[])?;
    let header = signer
        .sign(&message, &domain)?
        .context("the signer refused the domain")?;
    let mut out = std::io::stdout().lock();
    out.write_all(&header)?;
    out.write_all(&message)?;
    Ok(())
}

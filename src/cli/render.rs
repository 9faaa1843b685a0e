//! `posthorn render`: the objects the operator would apply for a MailServer, as a YAML
//! stream.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::operator::DEFAULT_IMAGE;
use crate::operator::render::{self, PdbApi, RenderOptions, SecretData};

#[derive(clap::Args)]
pub struct Args {
    /// The MailServer manifest.
    #[arg(long = "file", short = 'f')]
    file: PathBuf,
    /// Secrets as Kubernetes mounts them: `DIR/<secret-name>/<key>` (for the DKIM record).
    #[arg(long)]
    secrets_dir: Option<PathBuf>,
    /// Image for the mail server pods, unless the MailServer names one.
    #[arg(long, env = "POSTHORN_IMAGE", default_value = DEFAULT_IMAGE)]
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
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let server = crate::api::load_manifest(&args.file)?;
    let secrets = match &args.secrets_dir {
        Some(dir) => read_secrets_dir(dir)?,
        None => SecretData::new(),
    };
    let options = RenderOptions {
        image: args.image,
        certificate_crd: !args.without_cert_manager,
        dns_endpoint_crd: !args.without_external_dns,
        pdb_api: if args.pdb_v1beta1 {
            PdbApi::V1beta1
        } else {
            PdbApi::V1
        },
        // A cluster without policy/v1 (before 1.21) has no claim retention policy either.
        claim_retention_policy: !args.pdb_v1beta1,
    };
    let rendered = render::render(&server, &secrets, &options)?;
    print!("{}", render::to_yaml(&rendered)?);
    Ok(())
}

/// Secrets laid out as the kubelet mounts them: `DIR/<secret-name>/<key>`.
fn read_secrets_dir(dir: &Path) -> anyhow::Result<SecretData> {
    let mut secrets = SecretData::new();
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("reading secrets dir {}", dir.display()))?;
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let mut data = std::collections::BTreeMap::new();
        for file in std::fs::read_dir(entry.path())? {
            let file = file?;
            // Skip the kubelet's `..data` bookkeeping; its files are seen via symlinks.
            let name = file.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !file.path().is_file() {
                continue;
            }
            data.insert(name, std::fs::read(file.path())?);
        }
        secrets.insert(entry.file_name().to_string_lossy().into_owned(), data);
    }
    Ok(secrets)
}

//! The operator: `render` (pure: a MailServer to the objects it needs), `keys` (key
//! material generated once), and the controller that applies them and reports status.

mod keys;
pub mod render;

use std::path::{Path, PathBuf};

use anyhow::Context;

use render::{PdbApi, RenderOptions, SecretData};

/// The image the operator runs from, used for the mail server pods unless a
/// MailServer names another.
pub const DEFAULT_IMAGE: &str = concat!("ghcr.io/posthorn/posthorn:", env!("CARGO_PKG_VERSION"));

/// What `posthorn render` is asked for.
pub struct RenderCommand {
    pub manifest: PathBuf,
    pub secrets_dir: Option<PathBuf>,
    pub image: String,
    pub without_cert_manager: bool,
    pub without_external_dns: bool,
    pub pdb_v1beta1: bool,
}

/// `posthorn render`: the objects the operator would apply, as a YAML stream.
pub fn render_command(command: &RenderCommand) -> anyhow::Result<String> {
    let server = crate::api::load_manifest(&command.manifest)?;
    let secrets = match &command.secrets_dir {
        Some(dir) => read_secrets_dir(dir)?,
        None => SecretData::new(),
    };
    let options = RenderOptions {
        image: command.image.clone(),
        certificate_crd: !command.without_cert_manager,
        dns_endpoint_crd: !command.without_external_dns,
        pdb_api: if command.pdb_v1beta1 {
            PdbApi::V1beta1
        } else {
            PdbApi::V1
        },
    };
    let rendered = render::render(&server, &secrets, &options)?;
    render::to_yaml(&rendered)
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

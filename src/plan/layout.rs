//! Where a server's files are: on a pod, the mounts the operator renders; locally,
//! wherever `posthorn up` puts them.

use std::path::PathBuf;

use crate::config::CertPair;
use crate::tls::{CERT_FILE, KEY_FILE};

/// The ConfigMap is mounted at [`CONFIG_DIR`]; each Secret gets a directory of its own
/// under [`SECRETS_DIR`] (not nested inside the ConfigMap's read-only mount).
pub const CONFIG_DIR: &str = "/etc/posthorn";
pub const CONFIG_FILE: &str = "/etc/posthorn/config.yaml";
pub const SECRETS_DIR: &str = "/run/posthorn";
/// The pod's writable state: spool and maildirs (emptyDir or the queue claim).
pub const STATE_DIR: &str = "/var/lib/posthorn";

/// Key of the server config in the ConfigMap.
pub const CONFIG_KEY: &str = "config.yaml";
/// Key of the sender login map in the ConfigMap.
pub const SENDER_MAP_KEY: &str = "sender-logins";
/// Key of the alias file in the ConfigMap, and of the SRS key in its Secret.
pub const ALIASES_KEY: &str = "aliases";
pub const SRS_SECRET_KEY: &str = "secret";
/// Keys of the DKIM Secret: the private key (PKCS#8 PEM) and, in generated Secrets, the
/// TXT record value that publishes its public half.
pub const DKIM_KEY: &str = "dkim.key";
pub const DKIM_TXT_KEY: &str = "dkim.txt";
/// Where the ECDSA certificate's Secret is mounted, under [`SECRETS_DIR`] (the main one:
/// `tls`).
pub const TLS_ECDSA_DIR: &str = "tls-ecdsa";
/// Where the Ed25519 DKIM Secret is mounted, under [`SECRETS_DIR`] (the RSA one: `dkim`).
pub const DKIM_ED25519_DIR: &str = "dkim-ed25519";
/// Key of the handover token in its generated Secret.
pub const HANDOVER_TOKEN_KEY: &str = "token";
/// The handover token's Secret and the downward API volume of the pod's annotations.
pub const HANDOVER_DIR: &str = "/run/posthorn/handover";
pub const POD_INFO_DIR: &str = "/run/posthorn/pod";
/// File of the pod's annotations in [`POD_INFO_DIR`].
pub const ANNOTATIONS_FILE: &str = "annotations";

/// Where the files a server needs are, on a pod (the operator's mounts) or locally (`up`).
pub struct FileLayout {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub passwd: PathBuf,
    pub sender_login_map: PathBuf,
    /// The alias file `spec.aliases.entries` is written to.
    pub aliases: PathBuf,
    /// The mounted SRS key, when `spec.aliases.srsSecret` names one.
    pub srs_secret: Option<PathBuf>,
    pub spool: PathBuf,
    pub maildir_root: PathBuf,
    /// The mounted relay credentials Secret (`username`, `password`), when there is one.
    pub relay_credentials: Option<PathBuf>,
    /// The DKIM private key (PEM).
    pub dkim_key: PathBuf,
    /// The Ed25519 DKIM private key (PEM), used when `spec.dkim.ed25519` asks for it.
    pub dkim_ed25519_key: PathBuf,
    /// Scale-down drain, on pods only: the shared token and the annotations file.
    pub handover: Option<HandoverFiles>,
}

/// The files a pod's handover needs.
pub struct HandoverFiles {
    pub token: PathBuf,
    pub annotations: PathBuf,
}

impl FileLayout {
    /// The pod's files, where the rendered Deployment mounts them.
    pub fn pod() -> FileLayout {
        FileLayout {
            cert: format!("{SECRETS_DIR}/tls/{CERT_FILE}").into(),
            key: format!("{SECRETS_DIR}/tls/{KEY_FILE}").into(),
            passwd: format!("{SECRETS_DIR}/users/passwd").into(),
            sender_login_map: format!("{CONFIG_DIR}/{SENDER_MAP_KEY}").into(),
            aliases: format!("{CONFIG_DIR}/{ALIASES_KEY}").into(),
            srs_secret: Some(format!("{SECRETS_DIR}/srs/{SRS_SECRET_KEY}").into()),
            spool: format!("{STATE_DIR}/spool").into(),
            maildir_root: format!("{STATE_DIR}/mail").into(),
            relay_credentials: Some(format!("{SECRETS_DIR}/relay").into()),
            dkim_key: format!("{SECRETS_DIR}/dkim/{DKIM_KEY}").into(),
            dkim_ed25519_key: format!("{SECRETS_DIR}/{DKIM_ED25519_DIR}/{DKIM_KEY}").into(),
            handover: Some(HandoverFiles {
                token: format!("{HANDOVER_DIR}/{HANDOVER_TOKEN_KEY}").into(),
                annotations: format!("{POD_INFO_DIR}/{ANNOTATIONS_FILE}").into(),
            }),
        }
    }

    /// Where a pod finds the ECDSA certificate, when the render mounts one.
    pub fn pod_ecdsa() -> CertPair {
        CertPair {
            cert: format!("{SECRETS_DIR}/{TLS_ECDSA_DIR}/{CERT_FILE}").into(),
            key: format!("{SECRETS_DIR}/{TLS_ECDSA_DIR}/{KEY_FILE}").into(),
        }
    }
}

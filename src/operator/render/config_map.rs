//! The ConfigMap: the server config the pods read, and the sender login map.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use sha2::{Digest, Sha256};

use super::meta::{Base, Names};
use super::{CONFIG_DIR, CONFIG_KEY, DKIM_KEY, SECRETS_DIR, SENDER_MAP_KEY, STATE_DIR};
use crate::api::MailServer;
use crate::config::{Config, FileLayout, LogFormat};

/// The pod's file layout, as `Config::for_mailserver` wants it.
fn pod_layout() -> FileLayout {
    FileLayout {
        cert: format!("{SECRETS_DIR}/tls/tls.crt").into(),
        key: format!("{SECRETS_DIR}/tls/tls.key").into(),
        passwd: format!("{SECRETS_DIR}/users/passwd").into(),
        sender_login_map: format!("{CONFIG_DIR}/{SENDER_MAP_KEY}").into(),
        spool: format!("{STATE_DIR}/spool").into(),
        maildir_root: format!("{STATE_DIR}/mail").into(),
        relay_credentials: Some(format!("{SECRETS_DIR}/relay").into()),
        dkim_key: format!("{SECRETS_DIR}/dkim/{DKIM_KEY}").into(),
    }
}

/// The ConfigMap and the sha256 of the server config in it (the pod template's
/// checksum annotation). Fails when the spec cannot be turned into a server config.
pub(super) fn config_map(
    server: &MailServer,
    names: &Names,
    base: &Base,
) -> anyhow::Result<(ConfigMap, String)> {
    let mut config = Config::for_mailserver(&server.spec, &pod_layout())?;
    config.log.format = LogFormat::Json;
    // The server stops within the spec's grace; the pod's grace period adds a margin.
    config.delivery.shutdown_grace =
        Duration::from_secs(server.spec.shutdown.grace_period_seconds.unsigned_abs());
    let config_yaml = config.to_yaml()?;
    let checksum = sha256_hex(config_yaml.as_bytes());
    let config_map = ConfigMap {
        metadata: base.meta(names.config_map(), "mail-server"),
        data: Some(BTreeMap::from([
            (CONFIG_KEY.to_string(), config_yaml),
            (SENDER_MAP_KEY.to_string(), sender_map(server)),
        ])),
        ..ConfigMap::default()
    };
    Ok((config_map, checksum))
}

/// Postfix `smtpd_sender_login_maps` lines: `address login1, login2`.
fn sender_map(server: &MailServer) -> String {
    server
        .spec
        .sender_logins
        .iter()
        .map(|entry| format!("{} {}\n", entry.address, entry.logins.join(", ")))
        .collect()
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

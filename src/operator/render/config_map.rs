//! The ConfigMap: the server config the pods read, the sender login map and the alias
//! file.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use sha2::{Digest, Sha256};

use super::meta::{Base, Names};
use crate::api::MailServer;
use crate::config::LogFormat;
use crate::plan::{self, ALIASES_KEY, CONFIG_KEY, FileLayout, SENDER_MAP_KEY};

/// The ConfigMap and the sha256 of the server config in it (the pod template's
/// checksum annotation). `ecdsa`: the pods mount a second, ECDSA, certificate. Fails
/// when the spec cannot be turned into a server config.
pub(super) fn config_map(
    server: &MailServer,
    names: &Names,
    base: &Base,
    ecdsa: bool,
) -> anyhow::Result<(ConfigMap, String)> {
    let mut config = plan::server_config(&server.spec, &FileLayout::pod())?;
    config.log.format = LogFormat::Json;
    if ecdsa {
        config.tls.ecdsa = Some(FileLayout::pod_ecdsa());
    }
    if server.spec.mailboxes.dovecot().is_some() {
        config.delivery.lmtp = Some(super::mailboxes::lmtp_target(names));
    }
    let config_yaml = config.to_yaml()?;
    let checksum = sha256_hex(config_yaml.as_bytes());
    let mut data = BTreeMap::from([
        (CONFIG_KEY.to_string(), config_yaml),
        (SENDER_MAP_KEY.to_string(), plan::sender_map(&server.spec)),
    ]);
    // Only with entries: the config names the file only then.
    let aliases = &server.spec.aliases;
    if !aliases.entries.is_empty() {
        data.insert(ALIASES_KEY.to_string(), aliases.file());
    }
    let config_map = ConfigMap {
        metadata: base.meta(names.config_map(), "mail-server"),
        data: Some(data),
        ..ConfigMap::default()
    };
    Ok((config_map, checksum))
}

pub(super) fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

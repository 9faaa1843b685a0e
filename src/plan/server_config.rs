//! The server config a `MailServer` asks for: what the operator writes into the
//! ConfigMap and what `posthorn up` runs directly.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;

use super::FileLayout;
use crate::api::MailServerSpec;
use crate::config::{
    AliasesConfig, AuthConfig, Config, DeliveryConfig, DkimConfig, Ed25519DkimConfig,
    HandoverConfig, Limits, Listeners, ProxyProtocol, RelayConfig, ShutdownConfig, SpoolConfig,
    SrsConfig, TlsConfig,
};
use crate::mail;

/// The config for `spec`, with files where `layout` says, validated.
pub fn server_config(spec: &MailServerSpec, layout: &FileLayout) -> anyhow::Result<Config> {
    let max_message_size = spec
        .submission
        .max_message_bytes()
        .map_err(|e| anyhow::anyhow!("spec.submission.maxMessageSize: {e}"))?;
    let config = Config {
        domains: spec.domains.clone(),
        postmaster: spec.postmaster.clone(),
        abuse: spec.aliases.abuse.clone(),
        recipient_delimiter: spec.aliases.recipient_delimiter.clone(),
        aliases: AliasesConfig {
            file: (!spec.aliases.entries.is_empty()).then(|| layout.aliases.clone()),
            send_as_alias: spec.aliases.send_as_alias,
        },
        // The operator always mounts a key (the spec's Secret or a generated one).
        srs: layout.srs_secret.clone().map(SrsConfig::new),
        // The pod's ports, whatever the Service's.
        listeners: Listeners::pod_ports(|kind| spec.service_port(kind).is_some()),
        sender_login_map: Some(layout.sender_login_map.clone()),
        limits: Limits {
            max_message_size: usize::try_from(max_message_size)?,
            ..Limits::default()
        },
        proxy_protocol: ProxyProtocol {
            trusted_cidrs: spec
                .proxy_protocol
                .trusted_cidrs
                .iter()
                .map(|cidr| cidr.parse())
                .collect::<Result<_, _>>()
                .context("spec.proxyProtocol.trustedCIDRs")?,
        },
        delivery: DeliveryConfig {
            relay: spec.relay.as_ref().map(|relay| RelayConfig {
                host: relay.host.clone(),
                tls: None,
                ca_file: None,
                credentials_dir: relay
                    .credentials_secret
                    .as_ref()
                    .and(layout.relay_credentials.clone()),
            }),
            lmtp: spec.delivery.local.lmtp.clone(),
            ..DeliveryConfig::default()
        },
        // The server stops within the spec's grace; the pod's grace period adds a margin.
        shutdown: ShutdownConfig {
            grace: Duration::from_secs(spec.shutdown.grace_period_seconds.unsigned_abs()),
            ..ShutdownConfig::default()
        },
        dkim: spec.dkim.enabled.then(|| DkimConfig {
            selector: spec.dkim.selector.clone(),
            key_file: layout.dkim_key.clone(),
            domains: Vec::new(),
            ed25519: spec
                .dkim
                .ed25519_selector()
                .map(|selector| Ed25519DkimConfig {
                    selector: Some(selector),
                    key_file: layout.dkim_ed25519_key.clone(),
                }),
        }),
        // Pods take queues from peers that go away and hand theirs over when told to.
        handover: layout
            .handover
            .as_ref()
            .map(|files| HandoverConfig {
                listen: Some(SocketAddr::from(([0, 0, 0, 0], mail::HANDOVER_POD_PORT))),
                token_file: Some(files.token.clone()),
                annotations_file: Some(files.annotations.clone()),
            })
            .unwrap_or_default(),
        ..Config::with_defaults(
            spec.hostname.clone(),
            TlsConfig {
                cert: layout.cert.clone(),
                key: layout.key.clone(),
                ecdsa: None,
            },
            AuthConfig::new(layout.passwd.clone()),
            SpoolConfig {
                directory: layout.spool.clone(),
                maildir_root: layout.maildir_root.clone(),
            },
        )
    };
    config.validate()?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::ListenerKind;

    #[test]
    fn postmaster_comes_from_the_mailserver_spec() {
        let spec: MailServerSpec = serde_saphyr::from_str(
            "hostname: mail.example.com\ndomains: [example.com]\nusers: {secretName: users}\n\
             postmaster: hostmaster@example.org\n",
        )
        .unwrap();
        let config = server_config(&spec, &FileLayout::pod()).unwrap();
        assert_eq!(config.postmaster(), Some("hostmaster@example.org".into()));
        // Every enabled listener on its pod port, whatever the Service port.
        for kind in ListenerKind::ALL {
            let addr = config.listeners.get(kind).unwrap();
            assert_eq!(
                addr,
                SocketAddr::from(([0, 0, 0, 0], kind.pod_port())),
                "{}",
                kind.name()
            );
        }
        assert_eq!(config.metrics, Some(SocketAddr::from(([0, 0, 0, 0], 9090))));
        let yaml = config.to_yaml().unwrap();
        assert!(
            yaml.contains("postmaster: hostmaster@example.org"),
            "{yaml}"
        );
        // A pod takes and hands over queues; `up` (no handover files) does neither.
        let handover = &config.handover;
        assert_eq!(
            handover.listen,
            Some(SocketAddr::from(([0, 0, 0, 0], 5999)))
        );
        assert_eq!(
            handover.token_file.as_deref(),
            Some(std::path::Path::new("/run/posthorn/handover/token"))
        );
        assert_eq!(
            handover.annotations_file.as_deref(),
            Some(std::path::Path::new("/run/posthorn/pod/annotations"))
        );
        let local = FileLayout {
            handover: None,
            ..FileLayout::pod()
        };
        let yaml = server_config(&spec, &local).unwrap().to_yaml().unwrap();
        assert!(!yaml.contains("handover"), "{yaml}");
    }

    #[test]
    fn aliases_come_from_the_mailserver_spec() {
        let base =
            "hostname: mail.example.com\ndomains: [example.com]\nusers: {secretName: users}\n";
        let spec: MailServerSpec = serde_saphyr::from_str(base).unwrap();
        let config = server_config(&spec, &FileLayout::pod()).unwrap();
        assert_eq!(config.aliases, AliasesConfig::default());
        assert_eq!(config.delimiter(), Some('+'));
        // In a pod SRS is always on: the spec's key or the generated one is mounted.
        assert_eq!(
            config.srs.as_ref().map(|srs| srs.secret_file.as_path()),
            Some(std::path::Path::new("/run/posthorn/srs/secret"))
        );
        let spec: MailServerSpec = serde_saphyr::from_str(&format!(
            "{base}aliases: {{entries: [{{address: info@example.com, to: [alice@example.com]}}], \
             recipientDelimiter: '-', sendAsAlias: false, abuse: abuse@example.net, srsSecret: srs}}\n"
        ))
        .unwrap();
        let config = server_config(&spec, &FileLayout::pod()).unwrap();
        assert_eq!(
            config.aliases.file.as_deref(),
            Some(std::path::Path::new("/etc/posthorn/aliases"))
        );
        assert!(!config.aliases.send_as_alias);
        assert_eq!(config.delimiter(), Some('-'));
        assert_eq!(config.abuse().as_deref(), Some("abuse@example.net"));
        let srs = config.srs.as_ref().unwrap();
        assert_eq!(
            srs.secret_file,
            std::path::Path::new("/run/posthorn/srs/secret")
        );
        assert_eq!(config.srs_domain().as_deref(), Some("example.com"));
    }
}

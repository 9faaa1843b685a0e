//! `spec.mailboxes`: mailboxes users read over IMAP, served by a Dovecot the operator
//! runs next to the mail server. Types, defaults and their validation.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::spec::{OBJECT_NAME_PATTERN, ServiceType};
use super::units::parse_size;
use super::validate::{Problems, check_positive_size};

/// The official image, pinned to the Dovecot 2.3 release line whose config syntax the
/// operator renders (2.4 changed it).
pub const DEFAULT_DOVECOT_IMAGE: &str = "dovecot/dovecot:2.3.21.1";
/// Each Dovecot claim's request when the spec names none.
pub const DEFAULT_MAILBOX_STORAGE: &str = "1Gi";

/// Mailboxes for the users, read over IMAP.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MailboxesSpec {
    /// A Dovecot run by the operator: IMAP for the users of spec.users, with the same
    /// TLS certificate, and LMTP, which the mail server delivers the local domains to.
    #[serde(default)]
    pub dovecot: DovecotSpec,
}

/// The managed Dovecot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DovecotSpec {
    /// Run Dovecot and deliver the local domains to it (spec.delivery.local.lmtp must
    /// then be unset).
    #[serde(default)]
    pub enabled: bool,

    /// Dovecot image. The rendered config is for Dovecot 2.3 and runs the image's
    /// `/usr/sbin/dovecot` as uid 1000 (the official image's `vmail`).
    #[serde(default = "default_image")]
    #[schemars(length(min = 1))]
    pub image: String,

    /// Dovecot pods: 1, or 0 to stop it. Every mailbox lives on the one pod's volume;
    /// more than one would need users pinned to backends (a director), not offered.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1))]
    pub replicas: i32,

    /// The volume holding the Maildirs, a claim per pod (`mail-<name>-dovecot-0`).
    #[serde(default)]
    pub storage: MailboxStorage,

    /// Largest total size of one user's mailbox (bytes or with a suffix such as Mi or
    /// Gi). Mail for a full mailbox is refused (552 5.2.2) and bounced to its sender.
    /// Unset: no quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quantity>,

    /// The IMAP Service.
    #[serde(default)]
    pub service: ImapServiceSpec,

    /// CPU and memory requests and limits for the Dovecot container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

fn default_image() -> String {
    DEFAULT_DOVECOT_IMAGE.into()
}

fn default_replicas() -> i32 {
    1
}

impl Default for DovecotSpec {
    fn default() -> Self {
        DovecotSpec {
            enabled: false,
            image: default_image(),
            replicas: default_replicas(),
            storage: MailboxStorage::default(),
            quota: None,
            service: ImapServiceSpec::default(),
            resources: None,
        }
    }
}

/// The Maildirs' volume.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MailboxStorage {
    /// Each claim's request (default 1Gi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Quantity>,

    /// StorageClass of the claims. Default: the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(OBJECT_NAME_PATTERN))]
    pub storage_class_name: Option<String>,
}

/// The Service `<name>-imap` in front of Dovecot. It is not the mail server's Service:
/// a Service selects one set of pods.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImapServiceSpec {
    /// Service type.
    #[serde(default)]
    pub r#type: ServiceType,

    /// IMAP with STARTTLS required before any login.
    #[serde(default = "default_imap_port")]
    #[schemars(range(min = 1))]
    pub imap_port: u16,

    /// IMAP over implicit TLS.
    #[serde(default = "default_imaps_port")]
    #[schemars(range(min = 1))]
    pub imaps_port: u16,

    /// Annotations for the Service, e.g. to share the mail server's load balancer
    /// address or to publish a name through ExternalDNS.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

fn default_imap_port() -> u16 {
    143
}

fn default_imaps_port() -> u16 {
    993
}

impl Default for ImapServiceSpec {
    fn default() -> Self {
        ImapServiceSpec {
            r#type: ServiceType::default(),
            imap_port: default_imap_port(),
            imaps_port: default_imaps_port(),
            annotations: BTreeMap::new(),
        }
    }
}

impl DovecotSpec {
    /// `quota` in bytes, when set.
    pub fn quota_bytes(&self) -> Option<Result<u64, String>> {
        self.quota.as_ref().map(|quota| parse_size(&quota.0))
    }
}

impl MailboxesSpec {
    /// The Dovecot settings when it is enabled.
    pub fn dovecot(&self) -> Option<&DovecotSpec> {
        self.dovecot.enabled.then_some(&self.dovecot)
    }

    /// Checks `spec.mailboxes`. `lmtp` is spec.delivery.local.lmtp, which the managed
    /// Dovecot replaces.
    pub(super) fn validate(&self, lmtp: Option<&str>, p: &mut Problems) {
        let Some(dovecot) = self.dovecot() else {
            return;
        };
        let path = "spec.mailboxes.dovecot";
        if lmtp.is_some() {
            p.push(
                "spec.delivery.local.lmtp",
                format_args!(
                    "must be unset when {path} is enabled (the mail server delivers to the managed Dovecot)"
                ),
            );
        }
        if dovecot.image.is_empty() || dovecot.image.contains(char::is_whitespace) {
            p.push(
                format_args!("{path}.image"),
                format_args!("{:?} is not an image reference", dovecot.image),
            );
        }
        if !(0..=1).contains(&dovecot.replicas) {
            p.push(
                format_args!("{path}.replicas"),
                format_args!(
                    "{} is out of range; use 1 (or 0 to stop Dovecot): every mailbox lives on the one pod's volume",
                    dovecot.replicas
                ),
            );
        }
        if let Some(size) = &dovecot.storage.size {
            p.check(
                format_args!("{path}.storage.size"),
                check_positive_size(&size.0),
            );
        }
        if let Some(quota) = &dovecot.quota {
            p.check(format_args!("{path}.quota"), check_positive_size(&quota.0));
        }
        let service = &dovecot.service;
        for (field, port) in [
            ("imapPort", service.imap_port),
            ("imapsPort", service.imaps_port),
        ] {
            if port == 0 {
                p.push(
                    format_args!("{path}.service.{field}"),
                    "0 is not a port; use 1-65535",
                );
            }
        }
        if service.imap_port == service.imaps_port {
            p.push(
                format_args!("{path}.service.imapsPort"),
                format_args!(
                    "port {} is already used by {path}.service.imapPort",
                    service.imaps_port
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems_of(spec: &MailboxesSpec, lmtp: Option<&str>) -> Vec<String> {
        let mut p = Problems::default();
        spec.validate(lmtp, &mut p);
        p.0
    }

    fn enabled() -> MailboxesSpec {
        serde_saphyr::from_str("dovecot: {enabled: true}").unwrap()
    }

    #[test]
    fn defaults_are_one_pinned_official_dovecot_on_the_standard_ports() {
        let spec = enabled();
        let dovecot = spec.dovecot().unwrap();
        assert_eq!(dovecot.image, "dovecot/dovecot:2.3.21.1");
        assert_eq!(dovecot.replicas, 1);
        assert_eq!(
            (dovecot.service.imap_port, dovecot.service.imaps_port),
            (143, 993)
        );
        assert!(dovecot.quota.is_none());
        assert!(MailboxesSpec::default().dovecot().is_none());
        assert_eq!(problems_of(&spec, None), Vec::<String>::new());
    }

    #[test]
    fn every_rule_fails_with_its_path() {
        type Breaker = fn(&mut DovecotSpec);
        let cases: Vec<(Breaker, &str)> = vec![
            (
                |d| d.replicas = 2,
                "spec.mailboxes.dovecot.replicas: 2 is out",
            ),
            (
                |d| d.replicas = -1,
                "spec.mailboxes.dovecot.replicas: -1 is out",
            ),
            (|d| d.image = "a b".into(), "spec.mailboxes.dovecot.image"),
            (
                |d| d.quota = Some(Quantity("0".into())),
                "spec.mailboxes.dovecot.quota: must be greater than zero",
            ),
            (
                |d| d.storage.size = Some(Quantity("lots".into())),
                "spec.mailboxes.dovecot.storage.size: ",
            ),
            (
                |d| d.service.imap_port = 0,
                "spec.mailboxes.dovecot.service.imapPort: 0 is not a port",
            ),
            (
                |d| d.service.imaps_port = 143,
                "spec.mailboxes.dovecot.service.imapsPort: port 143 is already used",
            ),
        ];
        for (breaker, expected) in cases {
            let mut spec = enabled();
            breaker(&mut spec.dovecot);
            let problems = problems_of(&spec, None);
            assert_eq!(problems.len(), 1, "{expected}: {problems:?}");
            assert!(problems[0].starts_with(expected), "{problems:?}");
            // Disabled, nothing of it is checked.
            spec.dovecot.enabled = false;
            assert!(problems_of(&spec, None).is_empty());
        }
        let problems = problems_of(&enabled(), Some("dovecot.mail.svc:24"));
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].starts_with("spec.delivery.local.lmtp: must be unset"),
            "{problems:?}"
        );
    }
}

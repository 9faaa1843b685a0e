//! The objects a `MailServer` needs, as a pure function of the MailServer, the data of
//! the Secrets it references, and what the cluster offers. `posthorn render` prints them
//! and the controller applies them, so both always agree.
//!
//! Nothing here is random or time-dependent: rendering the same inputs twice gives the
//! same objects byte for byte (GitOps tools diff them, and the controller skips applies
//! that would change nothing). Key material (the self-signed certificate, the DKIM key)
//! is generated once by the controller into Secrets that render only refers to, listed
//! in [`Rendered::generated_secrets`].

//!
//! One file per object: `config_map`, `certificate`, `workload` (the pod template and
//! the StatefulSet), `storage` (its claim template), `service` (and the peers' headless
//! one), `disruption` (the PodDisruptionBudget), `dns`, `mailboxes` (the managed
//! Dovecot) and `network_policy`; `meta` holds the names and labels they share, and
//! `placement` the user's pod scheduling and metadata both workloads get.

mod certificate;
mod config_map;
mod disruption;
mod dns;
mod mailboxes;
mod meta;
mod network_policy;
mod placement;
mod service;
mod storage;
#[cfg(test)]
pub(super) mod testing;
mod workload;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Resource;
use kube::api::{ApiResource, DynamicObject};

pub use certificate::{SelfSignedReason, TlsPlan, certificate_resource};
pub use disruption::{PdbApi, pdb_resource};
pub use dns::dns_endpoint_resource;
pub use mailboxes::{Mailboxes, TLS_CHECKSUM_ANNOTATION, lmtp_target, mailbox_objects};
pub use meta::Names;
pub use network_policy::network_policy_resource;

use crate::api::{DnsRecord, MailServer};

/// Where the image keeps the binary.
pub const POD_BINARY: &str = "/usr/local/bin/posthorn";

/// Pod template annotation holding the sha256 of the server config: a config change
/// rolls the pods. Certificates, users and the sender map are hot-reloaded and are
/// deliberately not part of it.
pub const CONFIG_CHECKSUM_ANNOTATION: &str = "checksum/config";
pub const EXTERNAL_DNS_HOSTNAME_ANNOTATION: &str = "external-dns.alpha.kubernetes.io/hostname";

/// What the cluster offers and what the operator runs as: the inputs to rendering that
/// are not in the MailServer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderOptions {
    /// Image for the mail server pods unless the spec names one: the operator's own.
    pub image: String,
    /// The cert-manager `Certificate` CRD is installed.
    pub certificate_crd: bool,
    /// The ExternalDNS `DNSEndpoint` CRD is installed.
    pub dns_endpoint_crd: bool,
    /// API version for PodDisruptionBudgets: `policy/v1` from Kubernetes 1.21,
    /// `policy/v1beta1` before (the same fields for what is rendered here).
    pub pdb_api: PdbApi,
    /// The StatefulSet's `persistentVolumeClaimRetentionPolicy` is known (Kubernetes
    /// 1.23 on; server-side apply rejects a field the server does not declare).
    pub claim_retention_policy: bool,
}

/// Data of the Secrets a MailServer references, as far as known: Secret name → key →
/// value. Only the DKIM Secret is read (for the public key in DNS); the rest is mounted.
pub type SecretData = BTreeMap<String, BTreeMap<String, Vec<u8>>>;

/// A Secret with key material that the controller generates once, when it does not
/// exist yet, and never replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GeneratedSecret {
    /// `kubernetes.io/tls` Secret with a self-signed certificate for `hostname`.
    SelfSignedTls { name: String, hostname: String },
    /// Secret holding a DKIM private key ([`crate::plan::DKIM_KEY`]) and its TXT record ([`crate::plan::DKIM_TXT_KEY`]).
    DkimKey { name: String },
    /// The same for the Ed25519 key of `spec.dkim.ed25519`.
    Ed25519DkimKey { name: String },
    /// Secret holding the pods' shared handover token
    /// ([`crate::plan::HANDOVER_TOKEN_KEY`]).
    HandoverToken { name: String },
    /// Secret holding the key of SRS addresses ([`crate::plan::SRS_SECRET_KEY`]).
    SrsKey { name: String },
}

impl GeneratedSecret {
    pub fn name(&self) -> &str {
        match self {
            GeneratedSecret::SelfSignedTls { name, .. }
            | GeneratedSecret::DkimKey { name }
            | GeneratedSecret::Ed25519DkimKey { name }
            | GeneratedSecret::HandoverToken { name }
            | GeneratedSecret::SrsKey { name } => name,
        }
    }
}

/// Everything one MailServer needs.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub config_map: ConfigMap,
    pub stateful_set: StatefulSet,
    /// The StatefulSet's headless Service.
    pub peers: Service,
    pub service: Service,
    /// When more than one replica runs.
    pub pdb: Option<PodDisruptionBudget>,
    pub pdb_api: PdbApi,
    /// cert-manager Certificate, when the spec names an issuer and the CRD exists.
    pub certificate: Option<DynamicObject>,
    /// The second Certificate, with an ECDSA key, next to `certificate`.
    pub ecdsa_certificate: Option<DynamicObject>,
    /// ExternalDNS DNSEndpoint, when the spec asks for it and the CRD exists.
    pub dns_endpoint: Option<DynamicObject>,
    pub tls: TlsPlan,
    /// Name of the Secret the pods read the certificate from.
    pub tls_secret: String,
    /// Name of the Secret the pods read the ECDSA certificate from, when there is one.
    pub tls_ecdsa_secret: Option<String>,
    /// Name of the Secret the pods read the DKIM key from; none when signing is off.
    pub dkim_secret: Option<String>,
    /// Name of the Secret the pods read the Ed25519 DKIM key from, when it is asked for.
    pub dkim_ed25519_secret: Option<String>,
    /// Secrets the controller must create once if missing (render never fills in keys).
    pub generated_secrets: Vec<GeneratedSecret>,
    /// The DNS records the setup needs (published through the DNSEndpoint when there is
    /// one). The DKIM record is missing while the DKIM key is unknown.
    pub dns_records: Vec<DnsRecord>,
    /// The managed Dovecot, when `spec.mailboxes.dovecot` enables it.
    pub mailboxes: Option<Mailboxes>,
    /// When `spec.networkPolicy` enables it.
    pub network_policy: Option<NetworkPolicy>,
}

/// One rendered object with the API resource it belongs to, ready for server-side apply.
#[derive(Debug, Clone)]
pub struct Object {
    pub resource: ApiResource,
    pub object: DynamicObject,
}

impl Object {
    fn typed<K>(object: &K) -> Object
    where
        K: Resource<DynamicType = ()> + serde::Serialize,
    {
        let value = serde_json::to_value(object).expect("Kubernetes objects serialise to JSON");
        Object {
            resource: ApiResource::erase::<K>(&()),
            object: serde_json::from_value(value).expect("a serialised object is a DynamicObject"),
        }
    }

    pub fn kind(&self) -> &str {
        &self.resource.kind
    }

    pub fn name(&self) -> &str {
        self.object.metadata.name.as_deref().unwrap_or_default()
    }
}

impl Rendered {
    /// Every object to apply, in an order that lets each find what it refers to.
    pub fn objects(&self) -> Vec<Object> {
        let mut objects = vec![Object::typed(&self.config_map)];
        for certificate in self.certificate.iter().chain(&self.ecdsa_certificate) {
            objects.push(Object {
                resource: certificate_resource(),
                object: certificate.clone(),
            });
        }
        objects.push(Object::typed(&self.peers));
        objects.push(Object::typed(&self.stateful_set));
        objects.push(Object::typed(&self.service));
        if let Some(pdb) = &self.pdb {
            let mut object = Object::typed(pdb);
            object.resource = pdb_resource(self.pdb_api);
            if let Some(types) = &mut object.object.types {
                types.api_version = self.pdb_api.api_version().into();
            }
            objects.push(object);
        }
        if let Some(endpoint) = &self.dns_endpoint {
            objects.push(Object {
                resource: dns_endpoint_resource(),
                object: endpoint.clone(),
            });
        }
        if let Some(mailboxes) = &self.mailboxes {
            objects.push(Object::typed(&mailboxes.config_map));
            objects.push(Object::typed(&mailboxes.lmtp));
            objects.push(Object::typed(&mailboxes.stateful_set));
            objects.push(Object::typed(&mailboxes.imap));
        }
        if let Some(policy) = &self.network_policy {
            objects.push(Object::typed(policy));
        }
        objects
    }
}

/// Renders every object `server` needs. Fails only when the spec cannot be turned into
/// a server config (the controller reports that in the Degraded condition).
pub fn render(
    server: &MailServer,
    secrets: &SecretData,
    options: &RenderOptions,
) -> anyhow::Result<Rendered> {
    let names = Names::new(server);
    let base = meta::Base::new(server);

    let tls = certificate::tls(server, &names, &base, options);
    let (config_map, checksum) =
        config_map::config_map(server, &names, &base, tls.ecdsa_secret.is_some())?;
    let mut generated_secrets: Vec<_> = tls.generated.into_iter().collect();
    let dkim = &server.spec.dkim;
    let dkim_secret = match dkim.user_secret() {
        _ if !dkim.enabled => None,
        Some(name) => Some(name.to_string()),
        None => {
            let name = names.dkim_secret();
            generated_secrets.push(GeneratedSecret::DkimKey { name: name.clone() });
            Some(name)
        }
    };
    let dkim_ed25519_secret = dkim.ed25519().map(|ed25519| match &ed25519.secret_name {
        Some(name) => name.clone(),
        None => {
            let name = names.dkim_ed25519_secret();
            generated_secrets.push(GeneratedSecret::Ed25519DkimKey { name: name.clone() });
            name
        }
    });

    let handover_secret = names.handover_secret();
    generated_secrets.push(GeneratedSecret::HandoverToken {
        name: handover_secret.clone(),
    });

    let srs_secret = match &server.spec.aliases.srs_secret {
        Some(name) => name.clone(),
        None => {
            let name = names.srs_secret();
            generated_secrets.push(GeneratedSecret::SrsKey { name: name.clone() });
            name
        }
    };

    let inputs = workload::PodInputs {
        checksum: &checksum,
        tls_secret: &tls.secret,
        tls_ecdsa_secret: tls.ecdsa_secret.as_deref(),
        dkim_secret: dkim_secret.as_deref(),
        dkim_ed25519_secret: dkim_ed25519_secret.as_deref(),
        handover_secret: &handover_secret,
        srs_secret: &srs_secret,
    };
    let stateful_set = workload::stateful_set(server, &names, &base, options, &inputs);

    let dkim_txt = |secret: &Option<String>| {
        secret
            .as_ref()
            .and_then(|name| dns::dkim_record(secrets.get(name)))
    };
    let dkim_records = dns::DkimRecords {
        rsa: dkim_txt(&dkim_secret),
        ed25519: dkim_txt(&dkim_ed25519_secret),
    };
    let dns_records = dns::dns_records(server, &dkim_records);
    let dns_endpoint = (server.spec.dns.external_dns && options.dns_endpoint_crd)
        .then(|| dns::dns_endpoint(&names, &base, &dns_records));

    let mailboxes = mailboxes::mailboxes(server, &names, &base, options, &tls.secret, secrets)?;

    Ok(Rendered {
        config_map,
        stateful_set,
        peers: service::peers(server, &names, &base),
        service: service::service(server, &names, &base),
        pdb: disruption::pdb(server, &names, &base),
        pdb_api: options.pdb_api,
        certificate: tls.certificate,
        ecdsa_certificate: tls.ecdsa_certificate,
        dns_endpoint,
        tls: tls.plan,
        tls_secret: tls.secret,
        tls_ecdsa_secret: tls.ecdsa_secret,
        dkim_secret,
        dkim_ed25519_secret,
        generated_secrets,
        dns_records,
        mailboxes,
        network_policy: network_policy::network_policy(server, &names, &base),
    })
}

/// The objects as a multi-document YAML stream, as `posthorn render` prints them.
pub fn to_yaml(rendered: &Rendered) -> anyhow::Result<String> {
    let mut out = String::new();
    for secret in &rendered.generated_secrets {
        let what = match secret {
            GeneratedSecret::SelfSignedTls { .. } => "a self-signed certificate",
            GeneratedSecret::DkimKey { .. } => "a DKIM key",
            GeneratedSecret::Ed25519DkimKey { .. } => "an Ed25519 DKIM key",
            GeneratedSecret::HandoverToken { .. } => "a handover token",
            GeneratedSecret::SrsKey { .. } => "an SRS key",
        };
        out.push_str(&format!(
            "# Secret {} ({what}) is generated once by the operator, not rendered.\n",
            secret.name()
        ));
    }
    for object in rendered.objects() {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&object.object)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::testing::{edge_case_secrets, load, options, path, render_example};
    use super::*;

    /// Compares with `src/operator/testdata/<name>.golden.yaml`; `UPDATE_GOLDEN=1`
    /// (exactly: `=0` or `=yes` compare as usual) rewrites the file instead.
    fn golden(name: &str, rendered: &Rendered) {
        let actual = to_yaml(rendered).unwrap();
        let file = path(&format!("src/operator/testdata/{name}.golden.yaml"));
        if std::env::var("UPDATE_GOLDEN").as_deref() == Ok("1") {
            std::fs::write(&file, &actual).unwrap();
            return;
        }
        let expected = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 creates it)", file.display()));
        if actual != expected {
            let line = actual
                .lines()
                .zip(expected.lines())
                .position(|(a, e)| a != e)
                .unwrap_or(actual.lines().count().min(expected.lines().count()));
            panic!(
                "{} differs from the rendering at line {} (UPDATE_GOLDEN=1 rewrites it):\n\
                 actual:\n{actual}",
                file.display(),
                line + 1
            );
        }
    }

    #[test]
    fn golden_typical() {
        let rendered = render_example("examples/mailserver.yaml");
        golden("typical", &rendered);
    }

    #[test]
    fn golden_relay_with_issuer() {
        let rendered = render_example("examples/mailserver-relay.yaml");
        golden("relay", &rendered);
    }

    #[test]
    fn golden_mailboxes() {
        let rendered = render_example("examples/mailserver-mailboxes.yaml");
        golden("mailboxes", &rendered);
    }

    #[test]
    fn golden_platform_knobs() {
        let rendered = render_example("examples/mailserver-platform.yaml");
        golden("platform", &rendered);
    }

    #[test]
    fn golden_edge_cases() {
        let rendered = render(
            &load("src/operator/testdata/edge-cases.yaml"),
            &edge_case_secrets(),
            &options(),
        )
        .unwrap();
        golden("edge-cases", &rendered);
    }

    #[test]
    fn golden_issuer_without_cert_manager() {
        let options = RenderOptions {
            certificate_crd: false,
            dns_endpoint_crd: false,
            pdb_api: PdbApi::V1beta1,
            claim_retention_policy: false,
            ..options()
        };
        let rendered = render(
            &load("src/operator/testdata/issuer-without-cert-manager.yaml"),
            &SecretData::new(),
            &options,
        )
        .unwrap();
        golden("issuer-without-cert-manager", &rendered);
    }

    #[test]
    fn rendering_is_deterministic() {
        let server = load("src/operator/testdata/edge-cases.yaml");
        let first = to_yaml(&render(&server, &edge_case_secrets(), &options()).unwrap()).unwrap();
        let second = to_yaml(&render(&server, &edge_case_secrets(), &options()).unwrap()).unwrap();
        assert_eq!(first, second);
    }

    fn checksum(rendered: &Rendered) -> String {
        rendered
            .stateful_set
            .spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()[CONFIG_CHECKSUM_ANNOTATION]
            .clone()
    }

    #[test]
    fn config_changes_roll_pods_but_hot_reloaded_inputs_do_not() {
        let server = load("examples/mailserver.yaml");
        let base = render(&server, &SecretData::new(), &options()).unwrap();

        let mut bigger = server.clone();
        bigger.spec.submission.max_message_size.0 = "50Mi".into();
        assert_ne!(
            checksum(&render(&bigger, &SecretData::new(), &options()).unwrap()),
            checksum(&base)
        );

        // Sender map and certificate source: read from mounted files, reloaded in place.
        let mut other = server.clone();
        other.spec.sender_logins[0]
            .logins
            .push("carol@example.com".into());
        let rendered = render(&other, &SecretData::new(), &options()).unwrap();
        assert_eq!(checksum(&rendered), checksum(&base));
        assert!(
            rendered.config_map.data.as_ref().unwrap()[crate::plan::SENDER_MAP_KEY]
                .contains("carol@")
        );
        let with_dkim = render(&server, &edge_case_secrets(), &options()).unwrap();
        assert_eq!(
            serde_json::to_value(&with_dkim.stateful_set).unwrap(),
            serde_json::to_value(&base.stateful_set).unwrap()
        );
    }

    #[test]
    fn dkim_disabled_means_no_key_no_mount_no_record_no_signing() {
        let mut server = load("src/operator/testdata/edge-cases.yaml");
        server.spec.dkim.enabled = false;
        let rendered = render(&server, &edge_case_secrets(), &options()).unwrap();
        assert_eq!(rendered.dkim_secret, None);
        assert!(
            !rendered
                .generated_secrets
                .iter()
                .any(|s| matches!(s, GeneratedSecret::DkimKey { .. }))
        );
        let pod = serde_json::to_string(&rendered.stateful_set).unwrap();
        assert!(!pod.contains("dkim"), "{pod}");
        assert!(
            rendered
                .dns_records
                .iter()
                .all(|r| !r.name.contains("_domainkey"))
        );
        let config = &rendered.config_map.data.as_ref().unwrap()[crate::plan::CONFIG_KEY];
        assert!(!config.contains("dkim"), "{config}");

        // Without a Secret of its own, the operator generates no key either.
        server.spec.dkim.secret_name = None;
        let rendered = render(&server, &SecretData::new(), &options()).unwrap();
        assert!(
            !rendered
                .generated_secrets
                .iter()
                .any(|s| matches!(s, GeneratedSecret::DkimKey { .. }))
        );
    }

    #[test]
    fn owner_references_only_for_objects_from_the_api_server() {
        let rendered = render(
            &load("src/operator/testdata/edge-cases.yaml"),
            &edge_case_secrets(),
            &options(),
        )
        .unwrap();
        for object in rendered.objects() {
            let owners = object.object.metadata.owner_references.as_ref().unwrap();
            assert_eq!(owners.len(), 1, "{}", object.kind());
            assert_eq!(owners[0].kind, "MailServer");
            assert_eq!(owners[0].controller, Some(true));
            assert_eq!(owners[0].uid, "4a3c1e0e-8d7b-4c55-9c1e-2f0b6f3a9d10");
            assert_eq!(object.object.metadata.namespace.as_deref(), Some("mail"));
        }
        let kinds: Vec<_> = rendered
            .objects()
            .iter()
            .map(|o| o.kind().to_string())
            .collect();
        assert_eq!(
            kinds,
            [
                "ConfigMap",
                "Service",
                "StatefulSet",
                "Service",
                "PodDisruptionBudget"
            ]
        );
        let plain = render_example("examples/mailserver.yaml");
        assert!(
            plain
                .objects()
                .iter()
                .all(|o| o.object.metadata.owner_references.is_none())
        );
    }
}

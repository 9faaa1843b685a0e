//! Where the TLS certificate comes from: the user's Secret, a cert-manager
//! `Certificate`, or a generated self-signed one.

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

use super::meta::{Base, Names};
use super::{GeneratedSecret, RenderOptions};
use crate::api::{IssuerKind, MailServer, TlsSource};

/// Where the TLS certificate comes from, after looking at what the cluster offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsPlan {
    /// The user's own Secret.
    UserSecret,
    /// A cert-manager Certificate writes the Secret.
    CertManager,
    /// A generated self-signed certificate; `because` says why there is no better one.
    SelfSigned { because: SelfSignedReason },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelfSignedReason {
    /// The spec names no certificate source.
    NoSource,
    /// The spec names an issuer but cert-manager's CRD is not installed.
    CertManagerMissing,
}

pub fn certificate_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate"),
        "certificates",
    )
}

/// The TLS plan and what it needs rendered or generated.
pub(super) struct Tls {
    pub plan: TlsPlan,
    /// Name of the Secret the pods read the certificate from.
    pub secret: String,
    pub certificate: Option<DynamicObject>,
    pub generated: Option<GeneratedSecret>,
}

pub(super) fn tls(server: &MailServer, names: &Names, base: &Base, options: &RenderOptions) -> Tls {
    let spec = &server.spec;
    match spec.tls_source() {
        TlsSource::Secret(name) => Tls {
            plan: TlsPlan::UserSecret,
            secret: name.to_string(),
            certificate: None,
            generated: None,
        },
        TlsSource::Issuer(issuer) if options.certificate_crd => {
            let secret = names.issued_tls_secret();
            let kind = match issuer.kind {
                IssuerKind::Issuer => "Issuer",
                IssuerKind::ClusterIssuer => "ClusterIssuer",
            };
            let certificate = base.dynamic(
                &certificate_resource(),
                names.workload(),
                "tls",
                json!({
                    "spec": {
                        "secretName": secret,
                        "commonName": spec.hostname,
                        "dnsNames": [spec.hostname],
                        "issuerRef": {"name": issuer.name, "kind": kind, "group": issuer.group},
                        "usages": ["digital signature", "key encipherment", "server auth"],
                    }
                }),
            );
            Tls {
                plan: TlsPlan::CertManager,
                secret,
                certificate: Some(certificate),
                generated: None,
            }
        }
        source => {
            let because = match source {
                TlsSource::Issuer(_) => SelfSignedReason::CertManagerMissing,
                _ => SelfSignedReason::NoSource,
            };
            let secret = names.self_signed_tls_secret();
            Tls {
                plan: TlsPlan::SelfSigned { because },
                generated: Some(GeneratedSecret::SelfSignedTls {
                    name: secret.clone(),
                    hostname: spec.hostname.clone(),
                }),
                secret,
                certificate: None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{load, options};
    use super::super::{GeneratedSecret, SecretData, render};
    use super::*;

    #[test]
    fn tls_source_decides_secret_and_certificate() {
        let relay = load("examples/mailserver-relay.yaml");
        let rendered = render(&relay, &SecretData::new(), &options()).unwrap();
        assert_eq!(rendered.tls, TlsPlan::CertManager);
        assert_eq!(rendered.tls_secret, "mail-tls");
        let certificate = rendered.certificate.as_ref().unwrap();
        assert_eq!(certificate.data["spec"]["secretName"], "mail-tls");
        assert_eq!(certificate.data["spec"]["dnsNames"][0], "mail.example.com");
        assert_eq!(
            certificate.data["spec"]["issuerRef"]["kind"],
            "ClusterIssuer"
        );
        assert!(
            !rendered
                .generated_secrets
                .iter()
                .any(|s| matches!(s, GeneratedSecret::SelfSignedTls { .. }))
        );

        let no_cert_manager = RenderOptions {
            certificate_crd: false,
            ..options()
        };
        let rendered = render(&relay, &SecretData::new(), &no_cert_manager).unwrap();
        assert_eq!(
            rendered.tls,
            TlsPlan::SelfSigned {
                because: SelfSignedReason::CertManagerMissing
            }
        );
        assert!(rendered.certificate.is_none());
        assert!(
            rendered
                .generated_secrets
                .contains(&GeneratedSecret::SelfSignedTls {
                    name: "mail-tls-self-signed".into(),
                    hostname: "mail.example.com".into()
                })
        );

        let own = render(
            &load("src/operator/testdata/edge-cases.yaml"),
            &SecretData::new(),
            &options(),
        )
        .unwrap();
        assert_eq!(own.tls, TlsPlan::UserSecret);
        assert_eq!(own.tls_secret, "submit-cert");
        // Only the handover token, which no spec field replaces.
        assert_eq!(
            own.generated_secrets,
            [GeneratedSecret::HandoverToken {
                name: "submit-handover".into()
            }]
        );
    }
}

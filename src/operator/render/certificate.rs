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
    /// The Secret of the second, ECDSA, certificate: the user's, or the one the second
    /// Certificate (ECDSA P-256) writes.
    pub ecdsa_secret: Option<String>,
    pub ecdsa_certificate: Option<DynamicObject>,
    pub generated: Option<GeneratedSecret>,
}

pub(super) fn tls(server: &MailServer, names: &Names, base: &Base, options: &RenderOptions) -> Tls {
    let spec = &server.spec;
    match spec.tls_source() {
        TlsSource::Secret(name) => Tls {
            plan: TlsPlan::UserSecret,
            secret: name.to_string(),
            certificate: None,
            ecdsa_secret: spec.tls.as_ref().and_then(|t| t.ecdsa_secret_name.clone()),
            ecdsa_certificate: None,
            generated: None,
        },
        TlsSource::Issuer(issuer) if options.certificate_crd => {
            let kind = match issuer.kind {
                IssuerKind::Issuer => "Issuer",
                IssuerKind::ClusterIssuer => "ClusterIssuer",
            };
            // The same certificate twice, with an RSA key (cert-manager's default, for
            // every client) and an ECDSA P-256 key (a far cheaper handshake for the
            // clients that take it). Only RSA key exchange needs key encipherment.
            let certificate = |name: String, secret: &str, private_key, usages| {
                base.dynamic(
                    &certificate_resource(),
                    name,
                    "tls",
                    json!({
                        "spec": {
                            "secretName": secret,
                            "commonName": spec.hostname,
                            "dnsNames": [spec.hostname],
                            "issuerRef": {"name": issuer.name, "kind": kind, "group": issuer.group},
                            "privateKey": private_key,
                            "usages": usages,
                        }
                    }),
                )
            };
            let secret = names.issued_tls_secret();
            let ecdsa_secret = names.issued_ecdsa_tls_secret();
            Tls {
                plan: TlsPlan::CertManager,
                certificate: Some(certificate(
                    names.workload(),
                    &secret,
                    json!({"algorithm": "RSA", "size": 2048}),
                    json!(["digital signature", "key encipherment", "server auth"]),
                )),
                ecdsa_certificate: Some(certificate(
                    names.ecdsa_certificate(),
                    &ecdsa_secret,
                    json!({"algorithm": "ECDSA", "size": 256}),
                    json!(["digital signature", "server auth"]),
                )),
                secret,
                ecdsa_secret: Some(ecdsa_secret),
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
                ecdsa_secret: None,
                ecdsa_certificate: None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{load, options, render_example};
    use super::super::{GeneratedSecret, SecretData, render};
    use super::*;

    fn config_of(rendered: &super::super::Rendered) -> crate::config::Config {
        let data = rendered.config_map.data.as_ref().unwrap();
        serde_saphyr::from_str(&data[crate::plan::CONFIG_KEY]).unwrap()
    }

    fn mounts_secret(rendered: &super::super::Rendered, secret: &str) -> bool {
        let pod = rendered.stateful_set.spec.template.spec.as_ref();
        pod.unwrap()
            .volumes
            .iter()
            .flatten()
            .any(|v| v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some(secret))
    }

    #[test]
    fn tls_source_decides_secret_and_certificate() {
        let relay = load("examples/mailserver-relay.yaml");
        let rendered = render(&relay, &SecretData::new(), &options()).unwrap();
        assert_eq!(rendered.tls, TlsPlan::CertManager);
        assert_eq!(rendered.tls_secret, "mail-tls");
        let certificate = rendered.certificate.as_ref().unwrap();
        assert_eq!(certificate.data["spec"]["secretName"], "mail-tls");
        assert_eq!(certificate.data["spec"]["privateKey"]["algorithm"], "RSA");
        // A second Certificate with an ECDSA P-256 key, mounted and named in the config.
        let ecdsa = rendered.ecdsa_certificate.as_ref().unwrap();
        assert_eq!(ecdsa.metadata.name.as_deref(), Some("mail-ecdsa"));
        assert_eq!(ecdsa.data["spec"]["secretName"], "mail-tls-ecdsa");
        assert_eq!(
            ecdsa.data["spec"]["privateKey"],
            serde_json::json!({"algorithm": "ECDSA", "size": 256})
        );
        assert_eq!(
            ecdsa.data["spec"]["usages"],
            serde_json::json!(["digital signature", "server auth"])
        );
        assert_eq!(
            ecdsa.data["spec"]["issuerRef"],
            certificate.data["spec"]["issuerRef"]
        );
        assert_eq!(rendered.tls_ecdsa_secret.as_deref(), Some("mail-tls-ecdsa"));
        let kinds: Vec<_> = rendered
            .objects()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        assert!(
            kinds.starts_with(&["mail-config".into(), "mail".into(), "mail-ecdsa".into()]),
            "{kinds:?}"
        );
        let config = config_of(&rendered);
        assert_eq!(config.tls.ecdsa, Some(crate::plan::FileLayout::pod_ecdsa()));
        assert!(mounts_secret(&rendered, "mail-tls-ecdsa"));
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
        assert!(rendered.ecdsa_certificate.is_none());
        assert_eq!(config_of(&rendered).tls.ecdsa, None);
        assert!(!mounts_secret(&rendered, "mail-tls-ecdsa"));
        assert!(
            rendered
                .generated_secrets
                .contains(&GeneratedSecret::SelfSignedTls {
                    name: "mail-tls-self-signed".into(),
                    hostname: "mail.example.com".into()
                })
        );

        let own = render_example("src/operator/testdata/edge-cases.yaml");
        assert_eq!(own.tls, TlsPlan::UserSecret);
        assert_eq!(own.tls_secret, "submit-cert");
        assert_eq!(own.tls_ecdsa_secret.as_deref(), Some("submit-cert-ecdsa"));
        assert!(own.ecdsa_certificate.is_none());
        assert!(mounts_secret(&own, "submit-cert-ecdsa"));
        assert_eq!(
            config_of(&own).tls.ecdsa,
            Some(crate::plan::FileLayout::pod_ecdsa())
        );
        // Only the handover token, which no spec field replaces.
        assert_eq!(
            own.generated_secrets,
            [GeneratedSecret::HandoverToken {
                name: "submit-handover".into()
            }]
        );
    }
}

//! The DNS records a MailServer needs (MX, SPF, DMARC, DKIM) and the ExternalDNS
//! `DNSEndpoint` that publishes them.

use std::collections::BTreeMap;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

use super::meta::{Base, Names};
use crate::api::{DnsRecord, MailServer};
use crate::mail::name::split_host_port;
use crate::plan::{self, DKIM_KEY, DKIM_TXT_KEY};

const MX_PREFERENCE: u16 = 10;
const DNS_TTL: i64 = 3600;

pub fn dns_endpoint_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("externaldns.k8s.io", "v1alpha1", "DNSEndpoint"),
        "dnsendpoints",
    )
}

/// The DNSEndpoint publishing `records`.
pub(super) fn dns_endpoint(names: &Names, base: &Base, records: &[DnsRecord]) -> DynamicObject {
    let endpoints: Vec<_> = records
        .iter()
        .map(|r| {
            json!({
                "dnsName": r.name,
                "recordType": r.record_type,
                "recordTTL": DNS_TTL,
                "targets": [r.value],
            })
        })
        .collect();
    base.dynamic(
        &dns_endpoint_resource(),
        names.workload(),
        "dns",
        json!({"spec": {"endpoints": endpoints}}),
    )
}

/// The DKIM TXT record from the DKIM Secret: its `dkim.txt` when the operator generated
/// it, else derived from the private key in `dkim.key`.
pub(super) fn dkim_record(secret: Option<&BTreeMap<String, Vec<u8>>>) -> Option<String> {
    let secret = secret?;
    if let Some(txt) = secret.get(DKIM_TXT_KEY) {
        return String::from_utf8(txt.clone())
            .ok()
            .map(|t| t.trim().to_string());
    }
    crate::mail::dkim::dns_record_from_pem(secret.get(DKIM_KEY)?).ok()
}

/// The DKIM TXT values known from the keys' Secrets.
pub(super) struct DkimRecords {
    pub rsa: Option<String>,
    /// The Ed25519 key's, published under `spec.dkim.ed25519`'s selector.
    pub ed25519: Option<String>,
}

/// MX, SPF and DMARC for every domain, and DKIM when its public keys are known. Without
/// inbound mail there is no MX: nothing listens on port 25 for the domains.
pub(super) fn dns_records(server: &MailServer, dkim: &DkimRecords) -> Vec<DnsRecord> {
    let spec = &server.spec;
    let record = |name: String, record_type: &str, value: String| DnsRecord {
        name,
        record_type: record_type.into(),
        value: txt_target(record_type, value),
    };
    let spf = spec.dns.spf.clone().unwrap_or_else(|| default_spf(server));
    let mut records = Vec::new();
    for domain in &spec.domains {
        if spec.inbound.enabled {
            records.push(record(
                domain.clone(),
                "MX",
                format!("{MX_PREFERENCE} {}", spec.hostname),
            ));
        }
        if !spf.is_empty() {
            records.push(record(domain.clone(), "TXT", spf.clone()));
        }
        if !spec.dns.dmarc.is_empty() {
            records.push(record(
                format!("_dmarc.{domain}"),
                "TXT",
                spec.dns.dmarc.clone(),
            ));
        }
        let dkim_keys = [
            (Some(spec.dkim.selector.clone()), &dkim.rsa),
            (spec.dkim.ed25519_selector(), &dkim.ed25519),
        ];
        for (selector, txt) in dkim_keys {
            if let (Some(selector), Some(txt)) = (selector, txt) {
                records.push(record(
                    plan::dkim_record_name(&selector, domain),
                    "TXT",
                    txt.clone(),
                ));
            }
        }
    }
    records
}

/// A TXT value over 255 bytes as several quoted strings, the form providers take (Route
/// 53 refuses one long string with `CharacterStringTooLong`); shorter values unchanged.
fn txt_target(record_type: &str, value: String) -> String {
    if record_type == "TXT" && value.len() > 255 {
        crate::mail::dkim::txt_strings(&value)
    } else {
        value
    }
}

/// `v=spf1 mx -all` when this server is the MX (`a:<hostname>` when it is not), plus the
/// relay host's domain (or address) when mail leaves through a relay.
fn default_spf(server: &MailServer) -> String {
    let spec = &server.spec;
    let mut terms = vec!["v=spf1".to_string()];
    if spec.inbound.enabled {
        terms.push("mx".into());
    } else {
        terms.push(format!("a:{}", spec.hostname));
    }
    if let Some(relay) = &spec.relay
        && let Ok((host, _)) = split_host_port(&relay.host)
    {
        terms.push(match host.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(ip)) => format!("ip4:{ip}"),
            Ok(std::net::IpAddr::V6(ip)) => format!("ip6:{ip}"),
            // smtp.provider.example → provider.example, where providers publish SPF.
            Err(_) => match host.split_once('.') {
                Some((_, parent)) if parent.contains('.') => format!("include:{parent}"),
                _ => format!("include:{host}"),
            },
        });
    }
    terms.push("-all".into());
    terms.join(" ")
}

#[cfg(test)]
mod tests {
    use super::super::testing::{edge_case_secrets, load, options};
    use super::super::{Rendered, SecretData, render};
    use super::*;

    fn records(rendered: &Rendered) -> Vec<(String, String, String)> {
        rendered
            .dns_records
            .iter()
            .map(|r| (r.name.clone(), r.record_type.clone(), r.value.clone()))
            .collect()
    }

    #[test]
    fn dns_records_follow_the_setup() {
        let mut server = load("examples/mailserver.yaml");
        server.spec.dns.spf = None;
        server.spec.relay = load("examples/mailserver-relay.yaml").spec.relay;
        let rendered = render(&server, &SecretData::new(), &options()).unwrap();
        let r = records(&rendered);
        assert!(r.contains(&(
            "example.com".into(),
            "MX".into(),
            "10 mail.example.com".into()
        )));
        assert!(r.contains(&(
            "example.com".into(),
            "TXT".into(),
            "v=spf1 mx include:provider.example -all".into()
        )));
        assert!(r.contains(&(
            "_dmarc.example.com".into(),
            "TXT".into(),
            "v=DMARC1; p=quarantine".into()
        )));
        // No DKIM record while the generated key does not exist yet ...
        assert!(!r.iter().any(|(name, ..)| name.contains("_domainkey")));
        // ... and one as soon as its Secret is known.
        let secrets = SecretData::from([(
            "mail-dkim".to_string(),
            BTreeMap::from([(
                DKIM_TXT_KEY.to_string(),
                b"v=DKIM1; k=rsa; p=AAAA\n".to_vec(),
            )]),
        )]);
        let rendered = render(&server, &secrets, &options()).unwrap();
        assert!(records(&rendered).contains(&(
            "posthorn._domainkey.example.com".into(),
            "TXT".into(),
            "v=DKIM1; k=rsa; p=AAAA".into()
        )));
        let endpoints = &rendered.dns_endpoint.as_ref().unwrap().data["spec"]["endpoints"];
        assert_eq!(endpoints.as_array().unwrap().len(), 4);

        // Without port 25 this server is no MX, and SPF names it by address.
        let edge = render(
            &load("src/operator/testdata/edge-cases.yaml"),
            &edge_case_secrets(),
            &options(),
        )
        .unwrap();
        let r = records(&edge);
        assert!(!r.iter().any(|(_, t, _)| t == "MX"), "{r:?}");
        assert!(r.contains(&(
            "example.net".into(),
            "TXT".into(),
            "v=spf1 a:submit.example.org -all".into()
        )));
        assert!(
            !r.iter().any(|(n, ..)| n.starts_with("_dmarc")),
            "empty dmarc: none"
        );
        // An RSA-2048 key's record is over 255 bytes: published as quoted strings of at
        // most 255 bytes that join back to the record.
        let dkim = &r
            .iter()
            .find(|(n, ..)| n == "s2024._domainkey.example.org")
            .unwrap()
            .2;
        let strings: Vec<&str> = dkim
            .strip_prefix('"')
            .and_then(|d| d.strip_suffix('"'))
            .unwrap()
            .split("\" \"")
            .collect();
        assert!(strings.len() > 1, "{dkim}");
        assert!(strings.iter().all(|s| s.len() <= 255), "{dkim}");
        let joined = strings.concat();
        assert!(joined.starts_with("v=DKIM1; k=rsa; p=MIIBIjAN"), "{dkim}");
        assert!(joined.len() > 255, "{dkim}");
        // The Ed25519 key's record, under its own selector, derived from the user's key.
        let ed = &r
            .iter()
            .find(|(n, ..)| n == "s2024e._domainkey.example.org")
            .unwrap()
            .2;
        assert!(ed.starts_with("v=DKIM1; k=ed25519; p="), "{ed}");
        assert!(edge.dns_endpoint.is_none(), "externalDNS is off");
    }

    #[test]
    fn ed25519_key_is_generated_mounted_configured_and_published() {
        use crate::api::Ed25519DkimSpec;
        use crate::operator::render::GeneratedSecret;
        let mut server = load("examples/mailserver.yaml");
        server.spec.dkim.ed25519 = Some(Ed25519DkimSpec::default());
        let rendered = render(&server, &SecretData::new(), &options()).unwrap();
        assert!(
            rendered
                .generated_secrets
                .contains(&GeneratedSecret::Ed25519DkimKey {
                    name: "mail-dkim-ed25519".into()
                })
        );
        assert_eq!(
            rendered.dkim_ed25519_secret.as_deref(),
            Some("mail-dkim-ed25519")
        );
        let pod = serde_json::to_value(&rendered.stateful_set).unwrap();
        let pod = &pod["spec"]["template"]["spec"];
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["secret"]["secretName"] == "mail-dkim-ed25519")
            .unwrap();
        assert!(
            pod["containers"][0]["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["name"] == volume["name"]
                    && m["mountPath"] == "/run/posthorn/dkim-ed25519")
        );
        let config: crate::config::Config = serde_saphyr::from_str(
            &rendered.config_map.data.as_ref().unwrap()[crate::plan::CONFIG_KEY],
        )
        .unwrap();
        let ed25519 = config.dkim.unwrap().ed25519.unwrap();
        assert_eq!(ed25519.selector.as_deref(), Some("posthorn-ed25519"));
        assert_eq!(
            ed25519.key_file,
            std::path::Path::new("/run/posthorn/dkim-ed25519/dkim.key")
        );
        // Published once its Secret is known, next to the RSA record.
        let secrets = SecretData::from([
            (
                "mail-dkim".to_string(),
                BTreeMap::from([(DKIM_TXT_KEY.to_string(), b"v=DKIM1; k=rsa; p=AAAA".to_vec())]),
            ),
            (
                "mail-dkim-ed25519".to_string(),
                BTreeMap::from([(
                    DKIM_TXT_KEY.to_string(),
                    b"v=DKIM1; k=ed25519; p=BBBB".to_vec(),
                )]),
            ),
        ]);
        let rendered = render(&server, &secrets, &options()).unwrap();
        let r = records(&rendered);
        for (name, value) in [
            ("posthorn._domainkey.example.com", "v=DKIM1; k=rsa; p=AAAA"),
            (
                "posthorn-ed25519._domainkey.example.com",
                "v=DKIM1; k=ed25519; p=BBBB",
            ),
        ] {
            assert!(
                r.contains(&(name.into(), "TXT".into(), value.into())),
                "{r:?}"
            );
        }
        let endpoints = &rendered.dns_endpoint.as_ref().unwrap().data["spec"]["endpoints"];
        assert!(
            endpoints
                .to_string()
                .contains("posthorn-ed25519._domainkey")
        );

        // Signing off: no Ed25519 key either.
        server.spec.dkim.enabled = false;
        let rendered = render(&server, &SecretData::new(), &options()).unwrap();
        assert_eq!(rendered.dkim_ed25519_secret, None);
        assert!(
            !rendered
                .generated_secrets
                .iter()
                .any(|s| matches!(s, GeneratedSecret::Ed25519DkimKey { .. }))
        );
    }
}

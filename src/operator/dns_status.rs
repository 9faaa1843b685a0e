//! The DNSPublished condition. Writing the DNSEndpoint is the operator's part; publishing
//! its records is ExternalDNS's, asynchronously, so the condition is True only once
//! ExternalDNS has taken up the DNSEndpoint's latest generation (it then sets
//! `status.observedGeneration`), and Unknown until then. Ready does not wait for it:
//! the server accepts mail before DNS points at it, and a DNS provider's delay is not
//! the mail server's failure.

use kube::api::DynamicObject;

use super::render::{Names, Rendered};
use super::status::{Cond, CondStatus};
use crate::api::MailServer;

const TYPE: &str = "DNSPublished";

/// The DNSEndpoint as it is after the apply: its generation, and the generation
/// ExternalDNS reports having read (none before it has).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsEndpointSeen {
    pub generation: i64,
    pub observed_generation: Option<i64>,
}

impl DnsEndpointSeen {
    pub fn of(live: &DynamicObject) -> DnsEndpointSeen {
        DnsEndpointSeen {
            generation: live.metadata.generation.unwrap_or(0),
            observed_generation: live.data["status"]["observedGeneration"].as_i64(),
        }
    }
}

/// DNSPublished for `server`; `seen` is None when no DNSEndpoint of ours was applied
/// (one of that name belongs to something else).
pub fn condition(server: &MailServer, rendered: &Rendered, seen: Option<DnsEndpointSeen>) -> Cond {
    let name = Names::new(server).workload();
    let records = rendered.dns_records.len();
    if !server.spec.dns.external_dns {
        return Cond::new(
            TYPE,
            false,
            "Disabled",
            "spec.dns.externalDNS is false: publish status.dnsRecords by hand",
        );
    }
    if rendered.dns_endpoint.is_none() {
        return Cond::new(
            TYPE,
            false,
            "DNSEndpointCRDMissing",
            "the ExternalDNS DNSEndpoint CRD (externaldns.k8s.io/v1alpha1) is not installed: publish status.dnsRecords by hand or install ExternalDNS with its CRD source",
        );
    }
    match seen {
        None => Cond::new(
            TYPE,
            false,
            "Conflict",
            format!("DNSEndpoint {name} belongs to something else; see Degraded"),
        ),
        Some(DnsEndpointSeen {
            generation,
            observed_generation: Some(observed),
        }) if observed == generation => Cond::new(
            TYPE,
            true,
            "Published",
            format!("ExternalDNS has taken up the {records} records in DNSEndpoint {name}"),
        ),
        Some(_) => Cond::new(
            TYPE,
            CondStatus::Unknown,
            "WaitingForExternalDNS",
            format!(
                "{records} records in DNSEndpoint {name}, waiting for ExternalDNS to take them up \
                 (it sets the DNSEndpoint's status.observedGeneration); ExternalDNS needs \
                 --source=crd --crd-source-apiversion=externaldns.k8s.io/v1alpha1 \
                 --crd-source-kind=DNSEndpoint and MX and TXT in --managed-record-types"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::render::testing::{load, options};
    use super::super::render::{self, RenderOptions, SecretData};
    use super::*;

    fn state(
        server: &MailServer,
        options: &RenderOptions,
        seen: Option<DnsEndpointSeen>,
    ) -> (CondStatus, String) {
        let rendered = render::render(server, &SecretData::new(), options).unwrap();
        let c = condition(server, &rendered, seen);
        assert_eq!(c.type_, TYPE);
        (c.status, c.reason)
    }

    fn seen(generation: i64, observed: Option<i64>) -> Option<DnsEndpointSeen> {
        Some(DnsEndpointSeen {
            generation,
            observed_generation: observed,
        })
    }

    #[test]
    fn true_only_once_external_dns_took_up_the_latest_generation() {
        let typical = load("examples/mailserver.yaml");
        let rendered = render::render(&typical, &SecretData::new(), &options()).unwrap();
        let published = condition(&typical, &rendered, seen(2, Some(2)));
        assert_eq!(
            (published.status, published.message.as_str()),
            (
                CondStatus::True,
                "ExternalDNS has taken up the 3 records in DNSEndpoint mail"
            )
        );
        let waiting = (CondStatus::Unknown, "WaitingForExternalDNS".to_string());
        assert_eq!(state(&typical, &options(), seen(1, None)), waiting);
        assert_eq!(state(&typical, &options(), seen(2, Some(1))), waiting);
        let message = condition(&typical, &rendered, seen(1, None)).message;
        assert!(
            message.contains("--source=crd") && message.contains("--managed-record-types"),
            "{message}"
        );
        assert_eq!(
            state(&typical, &options(), None),
            (CondStatus::False, "Conflict".into())
        );
    }

    #[test]
    fn false_without_external_dns_or_its_crd() {
        let typical = load("examples/mailserver.yaml");
        let no_crd = RenderOptions {
            dns_endpoint_crd: false,
            ..options()
        };
        assert_eq!(
            state(&typical, &no_crd, None),
            (CondStatus::False, "DNSEndpointCRDMissing".into())
        );
        let mut off = typical.clone();
        off.spec.dns.external_dns = false;
        assert_eq!(
            state(&off, &options(), seen(1, Some(1))),
            (CondStatus::False, "Disabled".into())
        );
    }

    #[test]
    fn seen_reads_generation_and_status() {
        let live: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "externaldns.k8s.io/v1alpha1", "kind": "DNSEndpoint",
            "metadata": {"name": "mail", "generation": 3},
            "spec": {"endpoints": []},
            "status": {"observedGeneration": 2}
        }))
        .unwrap();
        assert_eq!(DnsEndpointSeen::of(&live), seen(3, Some(2)).unwrap());
        let fresh: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "externaldns.k8s.io/v1alpha1", "kind": "DNSEndpoint",
            "metadata": {"name": "mail", "generation": 1},
            "spec": {"endpoints": []}
        }))
        .unwrap();
        assert_eq!(DnsEndpointSeen::of(&fresh), seen(1, None).unwrap());
    }
}

//! The optional NetworkPolicy of `spec.networkPolicy`: the mail server pods may take
//! and make only the connections the setup needs. Ports are the pods' own (2525 behind
//! the Service's 25, and so on): a policy sees traffic after the Service's translation.

use std::collections::BTreeSet;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ApiResource;

use super::mailboxes::{self, LMTP_POD_PORT};
use super::meta::{Base, Names};
use crate::api::MailServer;
use crate::mail::name::split_host_port;
use crate::mail::{self, ListenerKind};

/// The API resource, for pruning a policy the spec no longer wants.
pub fn network_policy_resource() -> ApiResource {
    ApiResource::erase::<NetworkPolicy>(&())
}

/// The policy `<name>`, when the spec enables it.
pub(super) fn network_policy(
    server: &MailServer,
    names: &Names,
    base: &Base,
) -> Option<NetworkPolicy> {
    let spec = &server.spec;
    let wanted = &spec.network_policy;
    if !wanted.enabled {
        return None;
    }
    let own_pods = NetworkPolicyPeer {
        pod_selector: Some(selecting(base.selector())),
        ..NetworkPolicyPeer::default()
    };
    let handover = || vec![tcp(mail::HANDOVER_POD_PORT)];

    let mut ingress = Vec::new();
    let listeners: Vec<_> = spec
        .listeners()
        .into_iter()
        .map(|(kind, _)| tcp(kind.pod_port()))
        .collect();
    if !listeners.is_empty() {
        // Mail comes from anywhere; no `from` means every source.
        ingress.push(NetworkPolicyIngressRule {
            ports: Some(listeners),
            from: None,
        });
    }
    ingress.push(NetworkPolicyIngressRule {
        ports: Some(handover()),
        from: Some(vec![own_pods.clone()]),
    });
    let metrics_from: Vec<_> = wanted
        .operator_from
        .iter()
        .chain(&wanted.metrics_from)
        .cloned()
        .collect();
    if !metrics_from.is_empty() {
        ingress.push(NetworkPolicyIngressRule {
            ports: Some(vec![tcp(mail::METRICS_POD_PORT)]),
            from: Some(metrics_from),
        });
    }

    let mut egress = vec![NetworkPolicyEgressRule {
        ports: Some(vec![port(53, "UDP"), tcp(53)]),
        to: None,
    }];
    // MX delivery (25) and relay hosts on their standard ports, plus a relay's or an
    // external LMTP server's own port.
    let mut outbound = BTreeSet::from([
        ListenerKind::Smtp.service_port(),
        ListenerKind::Submission.service_port(),
        ListenerKind::Submissions.service_port(),
    ]);
    let relay = spec.relay.as_ref().map(|r| r.host.as_str());
    for target in relay.into_iter().chain(spec.delivery.local.lmtp.as_deref()) {
        if let Ok((_, port)) = split_host_port(target) {
            outbound.insert(port);
        }
    }
    egress.push(NetworkPolicyEgressRule {
        ports: Some(outbound.into_iter().map(tcp).collect()),
        to: None,
    });
    if spec.mailboxes.dovecot().is_some() {
        egress.push(NetworkPolicyEgressRule {
            ports: Some(vec![tcp(LMTP_POD_PORT)]),
            to: Some(vec![NetworkPolicyPeer {
                pod_selector: Some(selecting(mailboxes::selector(base))),
                ..NetworkPolicyPeer::default()
            }]),
        });
    }
    egress.push(NetworkPolicyEgressRule {
        ports: Some(handover()),
        to: Some(vec![own_pods]),
    });

    Some(NetworkPolicy {
        metadata: base.meta(names.workload(), "mail-server"),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(selecting(base.selector())),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(ingress),
            egress: Some(egress),
        }),
    })
}

fn selecting(labels: std::collections::BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels),
        ..LabelSelector::default()
    }
}

fn tcp(number: u16) -> NetworkPolicyPort {
    port(number, "TCP")
}

fn port(number: u16, protocol: &str) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(number.into())),
        protocol: Some(protocol.into()),
        ..NetworkPolicyPort::default()
    }
}

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

#[cfg(test)]
mod tests {
    use super::super::testing::{load, options};
    use super::super::{SecretData, render};
    use super::*;

    fn ports(rules: &[Option<Vec<NetworkPolicyPort>>]) -> Vec<Vec<(i32, &str)>> {
        rules
            .iter()
            .map(|ports| {
                ports
                    .iter()
                    .flatten()
                    .map(|p| {
                        let Some(IntOrString::Int(n)) = p.port else {
                            panic!("{p:?}")
                        };
                        (n, p.protocol.as_deref().unwrap())
                    })
                    .collect()
            })
            .collect()
    }

    fn policy(server: &MailServer) -> Option<NetworkPolicySpec> {
        let rendered = render(server, &SecretData::new(), &options()).unwrap();
        rendered.network_policy.map(|p| p.spec.unwrap())
    }

    /// Off by default; on, the ports follow the setup: only enabled listeners in, the
    /// relay's own port and LMTP to the managed Dovecot out only when there are such.
    #[test]
    fn ports_follow_the_setup() {
        let mut server = load("examples/mailserver.yaml");
        assert!(policy(&server).is_none());
        server.spec.network_policy.enabled = true;
        server.spec.inbound.enabled = false;
        let spec = policy(&server).unwrap();
        let ingress = spec.ingress.unwrap();
        let ingress_ports: Vec<_> = ingress.iter().map(|r| r.ports.clone()).collect();
        assert_eq!(
            ports(&ingress_ports),
            [
                vec![(5587, "TCP"), (5465, "TCP")],
                vec![(5999, "TCP")],
                vec![(9090, "TCP")]
            ]
        );
        // Mail from anywhere, handover from the MailServer's own pods, 9090 from the
        // operator by default.
        assert_eq!(ingress[0].from, None);
        let own = ingress[1].from.as_ref().unwrap()[0].pod_selector.clone();
        assert_eq!(own, spec.pod_selector);
        assert_eq!(ingress[2].from.as_ref().unwrap().len(), 1);
        let egress = spec.egress.unwrap();
        let egress_ports: Vec<_> = egress.iter().map(|r| r.ports.clone()).collect();
        assert_eq!(
            ports(&egress_ports),
            [
                vec![(53, "UDP"), (53, "TCP")],
                vec![(25, "TCP"), (465, "TCP"), (587, "TCP")],
                vec![(5999, "TCP")]
            ]
        );

        let with_all = policy(&load("examples/mailserver-platform.yaml")).unwrap();
        let egress = with_all.egress.unwrap();
        let egress_ports: Vec<_> = egress.iter().map(|r| r.ports.clone()).collect();
        let egress_ports = ports(&egress_ports);
        assert!(egress_ports[1].contains(&(2525, "TCP")), "{egress_ports:?}");
        assert_eq!(egress_ports[2], [(LMTP_POD_PORT.into(), "TCP")]);
        let dovecot = egress[2].to.as_ref().unwrap()[0]
            .pod_selector
            .as_ref()
            .unwrap();
        assert_eq!(
            dovecot.match_labels.as_ref().unwrap()["app.kubernetes.io/name"],
            "dovecot"
        );
        // metricsFrom adds to the operator's default.
        assert_eq!(with_all.ingress.unwrap()[2].from.as_ref().unwrap().len(), 2);
    }
}

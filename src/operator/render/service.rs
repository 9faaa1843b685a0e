//! The Services: the one exposing the mail listeners, and the headless one naming each
//! pod for its peers.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::EXTERNAL_DNS_HOSTNAME_ANNOTATION;
use super::meta::{Base, Names};
use crate::api::{ExternalTrafficPolicy, MailServer, ServiceType};
use crate::mail;

pub(super) fn service(server: &MailServer, names: &Names, base: &Base) -> Service {
    let spec = &server.spec;
    let ports = spec
        .listeners()
        .into_iter()
        .map(|(kind, service_port)| port(kind.name(), service_port))
        .collect();

    let mut annotations = spec.service.annotations.clone();
    if spec.dns.external_dns {
        annotations.insert(
            EXTERNAL_DNS_HOSTNAME_ANNOTATION.into(),
            spec.hostname.clone(),
        );
    }
    let mut metadata = base.meta(names.workload(), "mail-server");
    metadata.annotations = (!annotations.is_empty()).then_some(annotations);

    let service = &spec.service;
    let load_balancer = service.r#type == ServiceType::LoadBalancer;
    // Local by default for a load balancer: the server sees the client's address (per-IP
    // limits, Received: headers). ClusterIP takes no policy at all.
    let external_traffic_policy = match (service.r#type, service.external_traffic_policy) {
        (ServiceType::ClusterIp, _) => None,
        (_, Some(policy)) => Some(policy),
        (ServiceType::LoadBalancer, None) => Some(ExternalTrafficPolicy::Local),
        (ServiceType::NodePort, None) => None,
    };
    let lb = |field: &Option<String>| field.clone().filter(|_| load_balancer);

    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(type_name(service.r#type).into()),
            selector: Some(base.selector()),
            ports: Some(ports),
            external_traffic_policy: external_traffic_policy.map(|policy| {
                match policy {
                    ExternalTrafficPolicy::Local => "Local",
                    ExternalTrafficPolicy::Cluster => "Cluster",
                }
                .into()
            }),
            load_balancer_ip: lb(&service.load_balancer_ip),
            load_balancer_class: lb(&service.load_balancer_class),
            load_balancer_source_ranges: service
                .load_balancer_source_ranges
                .clone()
                .filter(|_| load_balancer),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The StatefulSet's headless Service: `<pod>.<name>-peers` resolves to each pod, ready
/// or not (a pod handing its queue over is no longer ready but still a peer), on the
/// listeners' pod ports and the handover port.
pub(super) fn peers(server: &MailServer, names: &Names, base: &Base) -> Service {
    let mut ports: Vec<_> = server
        .spec
        .listeners()
        .into_iter()
        .map(|(kind, _)| port(kind.name(), kind.pod_port()))
        .collect();
    ports.push(port(mail::HANDOVER_NAME, mail::HANDOVER_POD_PORT));
    Service {
        metadata: base.meta(names.peers(), "mail-server"),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(base.selector()),
            ports: Some(ports),
            publish_not_ready_addresses: Some(true),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The Service type as the API spells it.
pub(super) fn type_name(service_type: ServiceType) -> &'static str {
    match service_type {
        ServiceType::LoadBalancer => "LoadBalancer",
        ServiceType::NodePort => "NodePort",
        ServiceType::ClusterIp => "ClusterIP",
    }
}

/// A TCP port of a Service, aimed at the container port of the same name.
pub(super) fn port(name: &str, port: u16) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port: port.into(),
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{load, options};
    use super::super::{SecretData, render};
    use crate::api::{ExternalTrafficPolicy, ServiceType};

    fn spec(server: &crate::api::MailServer) -> k8s_openapi::api::core::v1::ServiceSpec {
        let rendered = render(server, &SecretData::new(), &options()).unwrap();
        rendered.service.spec.unwrap()
    }

    /// Local by default on a load balancer (the client's address reaches the server),
    /// Cluster when asked for; NodePort keeps Kubernetes' default, ClusterIP gets no
    /// policy and no load balancer fields.
    #[test]
    fn traffic_policy_and_load_balancer_fields_follow_the_type() {
        let mut server = load("examples/mailserver-platform.yaml");
        server.spec.service.external_traffic_policy = None;
        let lb = spec(&server);
        assert_eq!(lb.external_traffic_policy.as_deref(), Some("Local"));
        assert_eq!(lb.load_balancer_ip.as_deref(), Some("192.0.2.25"));
        assert_eq!(
            lb.load_balancer_class.as_deref(),
            Some("example.com/mail-lb")
        );
        assert_eq!(
            lb.load_balancer_source_ranges.unwrap(),
            ["0.0.0.0/0", "2001:db8::/32"]
        );

        server.spec.service.external_traffic_policy = Some(ExternalTrafficPolicy::Cluster);
        assert_eq!(
            spec(&server).external_traffic_policy.as_deref(),
            Some("Cluster")
        );

        server.spec.service.r#type = ServiceType::NodePort;
        let node_port = spec(&server);
        assert_eq!(
            node_port.external_traffic_policy.as_deref(),
            Some("Cluster")
        );
        assert_eq!(node_port.load_balancer_ip, None);
        assert_eq!(node_port.load_balancer_class, None);
        assert_eq!(node_port.load_balancer_source_ranges, None);
        server.spec.service.external_traffic_policy = None;
        assert_eq!(spec(&server).external_traffic_policy, None);

        server.spec.service.r#type = ServiceType::ClusterIp;
        server.spec.service.external_traffic_policy = Some(ExternalTrafficPolicy::Local);
        let cluster_ip = spec(&server);
        assert_eq!(cluster_ip.external_traffic_policy, None);
        assert_eq!(cluster_ip.load_balancer_source_ranges, None);
    }
}

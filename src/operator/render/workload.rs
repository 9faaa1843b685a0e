//! The mail server pods: their template (volumes, container, security) and the
//! Deployment running them.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    HTTPGetAction, KeyToPath, PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, SeccompProfile, SecretVolumeSource, SecurityContext, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta::{Base, Names};
use super::{CONFIG_CHECKSUM_ANNOTATION, POD_BINARY, RenderOptions};
use crate::api::{MailServer, QueueStorage};
use crate::mail;
use crate::plan::{CONFIG_DIR, CONFIG_FILE, DKIM_KEY, SECRETS_DIR, STATE_DIR};

/// The pod's unprivileged user and group (the distroless "nonroot" ids).
const POD_UID: i64 = 65532;
/// Owner and group may read mounted Secrets; the pod's fsGroup makes the group ours.
const SECRET_MODE: i32 = 0o440;

/// What the pods mount besides the spec: the config's checksum and the Secrets chosen
/// by the render.
pub(super) struct PodInputs<'a> {
    pub checksum: &'a str,
    pub tls_secret: &'a str,
    pub dkim_secret: &'a str,
}

pub(super) fn deployment(
    server: &MailServer,
    names: &Names,
    base: &Base,
    options: &RenderOptions,
    inputs: &PodInputs,
) -> Deployment {
    let spec = &server.spec;
    Deployment {
        metadata: base.meta(names.workload(), "mail-server"),
        spec: DeploymentSpec {
            replicas: Some(spec.replicas),
            selector: LabelSelector {
                match_labels: Some(base.selector()),
                ..LabelSelector::default()
            },
            // One claim cannot be attached to an old and a new pod on different nodes.
            strategy: (spec.queue.storage == QueueStorage::PersistentVolumeClaim).then(|| {
                DeploymentStrategy {
                    type_: Some("Recreate".into()),
                    ..DeploymentStrategy::default()
                }
            }),
            template: pod_template(server, names, base, options, inputs),
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    }
}

fn pod_template(
    server: &MailServer,
    names: &Names,
    base: &Base,
    options: &RenderOptions,
    inputs: &PodInputs,
) -> PodTemplateSpec {
    let (volumes, mounts) = volumes(server, names, inputs);
    let metadata = ObjectMeta {
        labels: Some(base.labels("mail-server")),
        annotations: Some(BTreeMap::from([(
            CONFIG_CHECKSUM_ANNOTATION.to_string(),
            inputs.checksum.to_string(),
        )])),
        ..ObjectMeta::default()
    };
    PodTemplateSpec {
        metadata: Some(metadata),
        spec: Some(PodSpec {
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(POD_UID),
                run_as_group: Some(POD_UID),
                fs_group: Some(POD_UID),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..SeccompProfile::default()
                }),
                ..PodSecurityContext::default()
            }),
            containers: vec![container(server, options, mounts)],
            volumes: Some(volumes),
            ..PodSpec::default()
        }),
    }
}

/// The pod's volumes and where the container mounts them: the config, one directory
/// per Secret, and the writable state.
fn volumes(
    server: &MailServer,
    names: &Names,
    inputs: &PodInputs,
) -> (Vec<Volume>, Vec<VolumeMount>) {
    let spec = &server.spec;
    let secret_volume = |name: &str, secret: &str, items: Option<Vec<KeyToPath>>| Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            items,
            default_mode: Some(SECRET_MODE),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    };
    let key_to = |key: &str, path: &str| KeyToPath {
        key: key.into(),
        path: path.into(),
        ..KeyToPath::default()
    };
    let mount = |name: &str, path: String| VolumeMount {
        name: name.into(),
        mount_path: path,
        read_only: Some(true),
        ..VolumeMount::default()
    };

    let mut volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: names.config_map(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        secret_volume(
            "tls",
            inputs.tls_secret,
            Some(vec![
                key_to("tls.crt", "tls.crt"),
                key_to("tls.key", "tls.key"),
            ]),
        ),
        secret_volume(
            "users",
            &spec.users.secret_name,
            Some(vec![key_to(&spec.users.key, "passwd")]),
        ),
        secret_volume(
            "dkim",
            inputs.dkim_secret,
            Some(vec![key_to(DKIM_KEY, DKIM_KEY)]),
        ),
    ];
    let mut mounts = vec![
        mount("config", CONFIG_DIR.into()),
        mount("tls", format!("{SECRETS_DIR}/tls")),
        mount("users", format!("{SECRETS_DIR}/users")),
        mount("dkim", format!("{SECRETS_DIR}/dkim")),
    ];
    if let Some(credentials) = spec
        .relay
        .as_ref()
        .and_then(|r| r.credentials_secret.as_deref())
    {
        volumes.push(secret_volume(
            "relay",
            credentials,
            Some(vec![
                key_to("username", "username"),
                key_to("password", "password"),
            ]),
        ));
        mounts.push(mount("relay", format!("{SECRETS_DIR}/relay")));
    }
    volumes.push(match spec.queue.storage {
        QueueStorage::EmptyDir => Volume {
            name: "state".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: spec.queue.size.clone(),
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        },
        QueueStorage::PersistentVolumeClaim => Volume {
            name: "state".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: names.queue_claim(),
                read_only: None,
            }),
            ..Volume::default()
        },
    });
    mounts.push(VolumeMount {
        name: "state".into(),
        mount_path: STATE_DIR.into(),
        ..VolumeMount::default()
    });
    (volumes, mounts)
}

/// The mail server container: `posthorn serve`, locked down, probed on the metrics port.
fn container(server: &MailServer, options: &RenderOptions, mounts: Vec<VolumeMount>) -> Container {
    let spec = &server.spec;
    let port = |name: &str, port: u16| ContainerPort {
        name: Some(name.into()),
        container_port: port.into(),
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    };
    let mut ports: Vec<_> = spec
        .listeners()
        .into_iter()
        .map(|(kind, _)| port(kind.name(), kind.pod_port()))
        .collect();
    ports.push(port(mail::METRICS_NAME, mail::METRICS_POD_PORT));

    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(mail::METRICS_NAME.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    };

    Container {
        name: "posthorn".into(),
        image: Some(spec.image.clone().unwrap_or_else(|| options.image.clone())),
        command: Some(vec![POD_BINARY.into()]),
        args: Some(vec!["serve".into(), "--config".into(), CONFIG_FILE.into()]),
        ports: Some(ports),
        volume_mounts: Some(mounts),
        readiness_probe: Some(probe("/readyz", 5, 3)),
        liveness_probe: Some(probe("/healthz", 10, 6)),
        resources: spec.resources.clone(),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{load, options};
    use super::super::{SecretData, render};
    use super::*;
    use crate::config::Config;
    use crate::plan::CONFIG_KEY;

    #[test]
    fn pod_is_locked_down_and_reads_the_rendered_config() {
        let rendered = render(
            &load("examples/mailserver.yaml"),
            &SecretData::new(),
            &options(),
        )
        .unwrap();
        let pod = rendered.deployment.spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        let pod_security = pod.security_context.as_ref().unwrap();
        assert_eq!(pod_security.run_as_non_root, Some(true));
        assert_eq!(
            pod_security.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        let container = &pod.containers[0];
        let security = container.security_context.as_ref().unwrap();
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(
            security.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_string()][..])
        );
        assert_eq!(container.args.as_ref().unwrap()[2], CONFIG_FILE);

        // The config file the pod reads names only paths that its volumes provide.
        let config: Config =
            serde_saphyr::from_str(&rendered.config_map.data.as_ref().unwrap()[CONFIG_KEY])
                .unwrap();
        let mounts: Vec<&str> = container
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.mount_path.as_str())
            .collect();
        for file in [
            &config.tls.cert,
            &config.tls.key,
            &config.auth.passwd_file,
            config.sender_login_map.as_ref().unwrap(),
            &config.spool.directory,
        ] {
            assert!(
                mounts.iter().any(|m| file.starts_with(m)),
                "{} is on no volume ({mounts:?})",
                file.display()
            );
        }
        // Service ports land on the container's named ports.
        let service = rendered.service.spec.as_ref().unwrap();
        let container_ports: Vec<_> = container
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| p.name.clone().unwrap())
            .collect();
        for port in service.ports.as_ref().unwrap() {
            let IntOrString::String(target) = port.target_port.as_ref().unwrap() else {
                panic!("numeric target port");
            };
            assert!(container_ports.contains(target), "{target}");
        }
    }
}

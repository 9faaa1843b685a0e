//! The mail server pods: their template (volumes, container, security) and the
//! StatefulSet running them, each pod with a claim of its own for its queue.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy,
    StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, DownwardAPIVolumeFile,
    DownwardAPIVolumeSource, EmptyDirVolumeSource, HTTPGetAction, KeyToPath, ObjectFieldSelector,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta::{Base, Names};
use super::placement;
use super::storage::{STATE_VOLUME, claim_template};
use super::{CONFIG_CHECKSUM_ANNOTATION, POD_BINARY, RenderOptions};
use crate::api::{DEFAULT_CPU_REQUEST, DEFAULT_MEMORY_REQUEST, MailServer, QueueStorage};
use crate::mail;
use crate::plan::{
    ANNOTATIONS_FILE, CONFIG_DIR, CONFIG_FILE, DKIM_ED25519_DIR, DKIM_KEY, HANDOVER_DIR,
    HANDOVER_TOKEN_KEY, POD_INFO_DIR, SECRETS_DIR, SRS_SECRET_KEY, STATE_DIR, TLS_ECDSA_DIR,
};

/// The pod's unprivileged user and group (the distroless "nonroot" ids).
const POD_UID: i64 = 65532;
/// Owner and group may read mounted Secrets; the pod's fsGroup makes the group ours.
const SECRET_MODE: i32 = 0o440;
/// Seconds the kubelet waits beyond the server's own shutdown grace before SIGKILL.
const GRACE_MARGIN_SECONDS: i64 = 10;
/// How long a starting server may take to become ready (loading a large spool) before
/// the liveness probe applies: 60 × 5 s.
const STARTUP_FAILURES: i32 = 60;

/// What the pods mount besides the spec: the config's checksum and the Secrets chosen
/// by the render.
pub(super) struct PodInputs<'a> {
    pub checksum: &'a str,
    pub tls_secret: &'a str,
    pub tls_ecdsa_secret: Option<&'a str>,
    pub dkim_secret: Option<&'a str>,
    pub dkim_ed25519_secret: Option<&'a str>,
    pub handover_secret: &'a str,
    /// The SRS key's Secret: the spec's or a generated one.
    pub srs_secret: &'a str,
}

pub(super) fn stateful_set(
    server: &MailServer,
    names: &Names,
    base: &Base,
    options: &RenderOptions,
    inputs: &PodInputs,
) -> StatefulSet {
    let spec = &server.spec;
    let persistent = spec.queue.storage == QueueStorage::PersistentVolumeClaim;
    // Keep the claims, and the mail on them, when the MailServer is deleted or scaled
    // down: a claim is cheap next to lost mail, and scaling back up finds its queue.
    // Clusters before 1.23 do not know the field and keep claims anyway.
    let retention = (persistent && options.claim_retention_policy).then(|| {
        StatefulSetPersistentVolumeClaimRetentionPolicy {
            when_deleted: Some("Retain".into()),
            when_scaled: Some("Retain".into()),
        }
    });
    StatefulSet {
        metadata: base.meta(names.workload(), "mail-server"),
        spec: StatefulSetSpec {
            replicas: Some(spec.replicas),
            selector: LabelSelector {
                match_labels: Some(base.selector()),
                ..LabelSelector::default()
            },
            service_name: Some(names.peers()),
            // Pods do not depend on each other (each has its own spool): start and stop
            // them together. Rolling updates still go one pod at a time.
            pod_management_policy: Some("Parallel".into()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateStatefulSetStrategy {
                    partition: Some(0),
                    ..RollingUpdateStatefulSetStrategy::default()
                }),
            }),
            persistent_volume_claim_retention_policy: retention,
            volume_claim_templates: persistent.then(|| vec![claim_template(server, base)]),
            template: pod_template(server, names, base, options, inputs),
            ..StatefulSetSpec::default()
        },
        ..StatefulSet::default()
    }
}

fn pod_template(
    server: &MailServer,
    names: &Names,
    base: &Base,
    options: &RenderOptions,
    inputs: &PodInputs,
) -> PodTemplateSpec {
    let spec = &server.spec;
    let (volumes, mounts) = volumes(server, names, inputs);
    let metadata = ObjectMeta {
        labels: Some(base.labels("mail-server")),
        annotations: Some(BTreeMap::from([(
            CONFIG_CHECKSUM_ANNOTATION.to_string(),
            inputs.checksum.to_string(),
        )])),
        ..ObjectMeta::default()
    };
    let mut template = PodTemplateSpec {
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
            termination_grace_period_seconds: Some(
                spec.shutdown.grace_period_seconds + GRACE_MARGIN_SECONDS,
            ),
            ..PodSpec::default()
        }),
    };
    placement::apply(&mut template, &spec.pod, &base.selector());
    template
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
    ];
    let mut mounts = vec![
        mount("config", CONFIG_DIR.into()),
        mount("tls", format!("{SECRETS_DIR}/tls")),
        mount("users", format!("{SECRETS_DIR}/users")),
    ];
    if let Some(ecdsa) = inputs.tls_ecdsa_secret {
        volumes.push(secret_volume(
            TLS_ECDSA_DIR,
            ecdsa,
            Some(vec![
                key_to("tls.crt", "tls.crt"),
                key_to("tls.key", "tls.key"),
            ]),
        ));
        mounts.push(mount(
            TLS_ECDSA_DIR,
            format!("{SECRETS_DIR}/{TLS_ECDSA_DIR}"),
        ));
    }
    if let Some(dkim) = inputs.dkim_secret {
        volumes.push(secret_volume(
            "dkim",
            dkim,
            Some(vec![key_to(DKIM_KEY, DKIM_KEY)]),
        ));
        mounts.push(mount("dkim", format!("{SECRETS_DIR}/dkim")));
    }
    if let Some(dkim) = inputs.dkim_ed25519_secret {
        volumes.push(secret_volume(
            DKIM_ED25519_DIR,
            dkim,
            Some(vec![key_to(DKIM_KEY, DKIM_KEY)]),
        ));
        mounts.push(mount(
            DKIM_ED25519_DIR,
            format!("{SECRETS_DIR}/{DKIM_ED25519_DIR}"),
        ));
    }
    volumes.extend([
        secret_volume(
            "handover",
            inputs.handover_secret,
            Some(vec![key_to(HANDOVER_TOKEN_KEY, HANDOVER_TOKEN_KEY)]),
        ),
        // The drain signal: the kubelet refreshes the file when the annotations change.
        Volume {
            name: "pod-info".into(),
            downward_api: Some(DownwardAPIVolumeSource {
                items: Some(vec![DownwardAPIVolumeFile {
                    path: ANNOTATIONS_FILE.into(),
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "metadata.annotations".into(),
                        ..ObjectFieldSelector::default()
                    }),
                    ..DownwardAPIVolumeFile::default()
                }]),
                ..DownwardAPIVolumeSource::default()
            }),
            ..Volume::default()
        },
    ]);
    mounts.extend([
        mount("handover", HANDOVER_DIR.into()),
        mount("pod-info", POD_INFO_DIR.into()),
    ]);
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
    let key = Some(vec![key_to(SRS_SECRET_KEY, SRS_SECRET_KEY)]);
    volumes.push(secret_volume("srs", inputs.srs_secret, key));
    mounts.push(mount("srs", format!("{SECRETS_DIR}/srs")));
    // With persistent storage the StatefulSet's claim template provides the volume.
    if spec.queue.storage == QueueStorage::EmptyDir {
        volumes.push(Volume {
            name: STATE_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: spec.queue.size.clone(),
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    mounts.push(VolumeMount {
        name: STATE_VOLUME.into(),
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
    // Not on the client Service: only the headless peers Service lists it.
    ports.push(port(mail::HANDOVER_NAME, mail::HANDOVER_POD_PORT));

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
        startup_probe: Some(probe("/readyz", 5, STARTUP_FAILURES)),
        readiness_probe: Some(probe("/readyz", 5, 3)),
        liveness_probe: Some(probe("/healthz", 10, 6)),
        resources: Some(resources(spec.resources.as_ref())),
        security_context: Some(restricted_container()),
        ..Container::default()
    }
}

/// The user's resources, with a default request for cpu and for memory where the user
/// gives neither a request nor a limit for it (a default request above the user's
/// limit would be invalid).
fn resources(user: Option<&ResourceRequirements>) -> ResourceRequirements {
    let mut resources = user.cloned().unwrap_or_default();
    for (name, default) in [
        ("cpu", DEFAULT_CPU_REQUEST),
        ("memory", DEFAULT_MEMORY_REQUEST),
    ] {
        let given = |map: &Option<BTreeMap<String, Quantity>>| {
            map.as_ref().is_some_and(|m| m.contains_key(name))
        };
        if !given(&resources.requests) && !given(&resources.limits) {
            resources
                .requests
                .get_or_insert_default()
                .insert(name.into(), Quantity(default.into()));
        }
    }
    resources
}

/// The restricted Pod Security Standard for a container: no privilege escalation, no
/// capabilities, not root, a read-only root filesystem.
pub(super) fn restricted_container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{load, options, render_example};
    use super::super::{SecretData, render};
    use super::*;
    use crate::config::Config;
    use crate::plan::CONFIG_KEY;

    #[test]
    fn pod_is_locked_down_and_reads_the_rendered_config() {
        let rendered = render_example("examples/mailserver.yaml");
        let pod = rendered.stateful_set.spec.template.spec.as_ref().unwrap();
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
            config.handover.token_file.as_ref().unwrap(),
            config.handover.annotations_file.as_ref().unwrap(),
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
        // The handover port is for peers only, not for clients.
        assert!(container_ports.contains(&mail::HANDOVER_NAME.to_string()));
        let client_ports = service.ports.as_ref().unwrap();
        assert!(!client_ports.iter().any(|p| p.port == 5999));
        let peer_ports = rendered
            .peers
            .spec
            .as_ref()
            .unwrap()
            .ports
            .as_ref()
            .unwrap();
        assert!(peer_ports.iter().any(|p| p.port == 5999));
    }

    #[test]
    fn every_pod_gets_a_claim_of_its_own_that_outlives_it() {
        let rendered = render_example("examples/mailserver.yaml");
        let set = &rendered.stateful_set.spec;
        assert_eq!(set.service_name.as_deref(), Some("mail-peers"));
        assert_eq!(rendered.peers.metadata.name.as_deref(), Some("mail-peers"));
        let peers = rendered.peers.spec.as_ref().unwrap();
        assert_eq!(peers.cluster_ip.as_deref(), Some("None"));
        assert_eq!(peers.publish_not_ready_addresses, Some(true));
        let claims = set.volume_claim_templates.as_ref().unwrap();
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0].metadata.name.as_deref(), Some(STATE_VOLUME));
        assert!(claims[0].metadata.owner_references.is_none());
        let requests = claims[0].spec.as_ref().unwrap().resources.as_ref().unwrap();
        assert_eq!(requests.requests.as_ref().unwrap()["storage"].0, "1Gi");
        let retention = set
            .persistent_volume_claim_retention_policy
            .as_ref()
            .unwrap();
        assert_eq!(retention.when_deleted.as_deref(), Some("Retain"));
        assert_eq!(retention.when_scaled.as_deref(), Some("Retain"));
        let pod = set.template.spec.as_ref().unwrap();
        // The claim template is the state volume: no pod volume of that name.
        assert!(
            !pod.volumes
                .as_ref()
                .unwrap()
                .iter()
                .any(|v| v.name == STATE_VOLUME)
        );
        assert_eq!(pod.termination_grace_period_seconds, Some(30));
        let startup = pod.containers[0].startup_probe.as_ref().unwrap();
        assert_eq!(
            startup.http_get.as_ref().unwrap().path.as_deref(),
            Some("/readyz")
        );

        let old_cluster = RenderOptions {
            claim_retention_policy: false,
            ..options()
        };
        let mut ephemeral = load("examples/mailserver.yaml");
        let rendered = render(&ephemeral, &SecretData::new(), &old_cluster).unwrap();
        let set = &rendered.stateful_set.spec;
        assert!(set.persistent_volume_claim_retention_policy.is_none());
        assert!(set.volume_claim_templates.is_some());

        ephemeral.spec.queue.storage = QueueStorage::EmptyDir;
        let rendered = render(&ephemeral, &SecretData::new(), &options()).unwrap();
        let set = &rendered.stateful_set.spec;
        assert!(set.volume_claim_templates.is_none());
        assert!(set.persistent_volume_claim_retention_policy.is_none());
        let volumes = set
            .template
            .spec
            .as_ref()
            .unwrap()
            .volumes
            .as_ref()
            .unwrap();
        let state = volumes.iter().find(|v| v.name == STATE_VOLUME).unwrap();
        assert!(state.empty_dir.is_some());
    }

    /// Default requests fill in cpu and memory only where the user names neither a
    /// request nor a limit for it; the user's values stay.
    #[test]
    fn default_requests_only_where_the_user_gives_nothing() {
        let quantities = |r: &ResourceRequirements, which: &str| -> Vec<(String, String)> {
            let map = if which == "requests" {
                &r.requests
            } else {
                &r.limits
            };
            map.iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.0.clone()))
                .collect()
        };
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());

        let none = resources(None);
        assert_eq!(
            quantities(&none, "requests"),
            [pair("cpu", "100m"), pair("memory", "64Mi")]
        );
        assert_eq!(none.limits, None);

        let user: ResourceRequirements = serde_json::from_value(serde_json::json!({
            "requests": {"memory": "96Mi"},
            "limits": {"cpu": "2"}
        }))
        .unwrap();
        let merged = resources(Some(&user));
        assert_eq!(quantities(&merged, "requests"), [pair("memory", "96Mi")]);
        assert_eq!(quantities(&merged, "limits"), [pair("cpu", "2")]);

        let only_memory_limit: ResourceRequirements =
            serde_json::from_value(serde_json::json!({"limits": {"memory": "32Mi"}})).unwrap();
        let merged = resources(Some(&only_memory_limit));
        assert_eq!(quantities(&merged, "requests"), [pair("cpu", "100m")]);
    }
}

//! The managed Dovecot of `spec.mailboxes.dovecot`: its config (a ConfigMap), a
//! StatefulSet with a Maildir claim per pod, the internal Service the mail server
//! delivers to over LMTP, and the IMAP Service for mail clients.
//!
//! Dovecot runs rootless: every process is the pod's user (uid 1000, the official
//! image's `vmail`), so its listeners are on unprivileged pod ports and the Services
//! map the standard ports onto them. There is one replica: every mailbox is on that
//! pod's claim (README: Reading mail).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, KeyToPath,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSecurityContext, PodSpec, PodTemplateSpec,
    Probe, SeccompProfile, SecretVolumeSource, Service, ServiceSpec, TCPSocketAction, Volume,
    VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use kube::api::ApiResource;

use super::config_map::sha256_hex;
use super::meta::{Base, Names};
use super::placement;
use super::service::{port, type_name};
use super::workload::restricted_container;
use super::{CONFIG_CHECKSUM_ANNOTATION, RenderOptions, SecretData};
use crate::api::{DEFAULT_MAILBOX_STORAGE, DovecotSpec, MailServer};

/// The `app.kubernetes.io/component` label of Dovecot's objects.
const COMPONENT: &str = "mailboxes";
/// The pod's user and group: the official image's `vmail`.
const DOVECOT_UID: i64 = 1000;
const DOVECOT_USER: &str = "vmail";
/// Owner and group may read mounted Secrets; the pod's fsGroup makes the group ours.
const SECRET_MODE: i32 = 0o440;
/// Pod ports (unprivileged: Dovecot cannot bind below 1024 without root).
const IMAP_POD_PORT: u16 = 10143;
const IMAPS_POD_PORT: u16 = 10993;
pub(super) const LMTP_POD_PORT: u16 = 10024;
/// The internal Service's LMTP port, which the mail server's config names.
const LMTP_SERVICE_PORT: u16 = 24;

/// Mounts: the ConfigMap, the two Secrets, Dovecot's runtime and state directories,
/// /tmp (the root filesystem is read-only) and the Maildir claim.
const CONFIG_DIR: &str = "/etc/dovecot";
const CONFIG_KEY: &str = "dovecot.conf";
const TLS_DIR: &str = "/run/secrets/posthorn/tls";
const USERS_DIR: &str = "/run/secrets/posthorn/users";
const RUN_DIR: &str = "/run/dovecot";
const STATE_DIR: &str = "/var/lib/dovecot";
const TMP_DIR: &str = "/tmp";
const MAIL_DIR: &str = "/srv/mail";
/// The claim template (claims `mail-<name>-dovecot-0`).
const MAIL_VOLUME: &str = "mail";

/// Pod template annotation with the sha256 of the certificate: Dovecot reads it only at
/// start, so a renewed certificate rolls the pod.
pub const TLS_CHECKSUM_ANNOTATION: &str = "checksum/tls";

/// The objects of the managed Dovecot.
#[derive(Debug, Clone)]
pub struct Mailboxes {
    pub config_map: ConfigMap,
    pub stateful_set: StatefulSet,
    /// ClusterIP Service `<name>-dovecot`: LMTP for the mail server (and the
    /// StatefulSet's service name).
    pub lmtp: Service,
    /// Service `<name>-imap`: IMAP and IMAPS for mail clients.
    pub imap: Service,
}

/// Where the mail server delivers the local domains when Dovecot is managed: the
/// internal Service, by its name in the pods' namespace.
pub fn lmtp_target(names: &Names) -> String {
    format!("{}:{LMTP_SERVICE_PORT}", names.dovecot())
}

/// Objects a MailServer owns while Dovecot is enabled, to delete once it is not. The
/// Maildir claims are kept, as the queue's are.
pub fn mailbox_objects(names: &Names) -> Vec<(ApiResource, String)> {
    vec![
        (ApiResource::erase::<StatefulSet>(&()), names.dovecot()),
        (ApiResource::erase::<Service>(&()), names.dovecot()),
        (ApiResource::erase::<Service>(&()), names.imap()),
        (ApiResource::erase::<ConfigMap>(&()), names.dovecot_config()),
    ]
}

/// The Dovecot objects, when the spec enables it. `tls_secret` is the Secret the mail
/// server's pods read the certificate from; its data, if known, goes into a checksum.
pub(super) fn mailboxes(
    server: &MailServer,
    names: &Names,
    base: &Base,
    options: &RenderOptions,
    tls_secret: &str,
    secrets: &SecretData,
) -> anyhow::Result<Option<Mailboxes>> {
    let Some(dovecot) = server.spec.mailboxes.dovecot() else {
        return Ok(None);
    };
    let conf = dovecot_conf(server, dovecot)?;
    let mut annotations = BTreeMap::from([(
        CONFIG_CHECKSUM_ANNOTATION.to_string(),
        sha256_hex(conf.as_bytes()),
    )]);
    if let Some(cert) = secrets.get(tls_secret).and_then(|s| s.get("tls.crt")) {
        annotations.insert(TLS_CHECKSUM_ANNOTATION.into(), sha256_hex(cert));
    }
    let config_map = ConfigMap {
        metadata: base.meta(names.dovecot_config(), COMPONENT),
        data: Some(BTreeMap::from([(CONFIG_KEY.to_string(), conf)])),
        ..ConfigMap::default()
    };
    let labels = labels(base);
    let retention =
        options
            .claim_retention_policy
            .then(|| StatefulSetPersistentVolumeClaimRetentionPolicy {
                when_deleted: Some("Retain".into()),
                when_scaled: Some("Retain".into()),
            });
    let mut template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels.clone()),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(pod(server, names, dovecot, tls_secret)),
    };
    placement::apply(&mut template, &server.spec.pod, &selector(base));
    let stateful_set = StatefulSet {
        metadata: meta(base, names.dovecot()),
        spec: StatefulSetSpec {
            replicas: Some(dovecot.replicas),
            selector: LabelSelector {
                match_labels: Some(selector(base)),
                ..LabelSelector::default()
            },
            service_name: Some(names.dovecot()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                ..StatefulSetUpdateStrategy::default()
            }),
            persistent_volume_claim_retention_policy: retention,
            volume_claim_templates: Some(vec![claim_template(dovecot, &labels)]),
            template,
            ..StatefulSetSpec::default()
        },
        ..StatefulSet::default()
    };
    let lmtp = Service {
        metadata: meta(base, names.dovecot()),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector(base)),
            ports: Some(vec![port("lmtp", LMTP_SERVICE_PORT)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    let service = &dovecot.service;
    let mut imap_meta = meta(base, names.imap());
    imap_meta.annotations = (!service.annotations.is_empty()).then(|| service.annotations.clone());
    let imap = Service {
        metadata: imap_meta,
        spec: Some(ServiceSpec {
            type_: Some(type_name(service.r#type).into()),
            selector: Some(selector(base)),
            ports: Some(vec![
                port("imap", service.imap_port),
                port("imaps", service.imaps_port),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    Ok(Some(Mailboxes {
        config_map,
        stateful_set,
        lmtp,
        imap,
    }))
}

/// Dovecot's pods are not the mail server's: another app name keeps them out of the
/// mail server's Service, StatefulSet and PodDisruptionBudget selectors.
pub(super) fn selector(base: &Base) -> BTreeMap<String, String> {
    let mut selector = base.selector();
    selector.insert("app.kubernetes.io/name".into(), "dovecot".into());
    selector
}

fn labels(base: &Base) -> BTreeMap<String, String> {
    let mut labels = base.labels(COMPONENT);
    labels.extend(selector(base));
    labels
}

fn meta(base: &Base, name: String) -> ObjectMeta {
    ObjectMeta {
        labels: Some(labels(base)),
        ..base.meta(name, COMPONENT)
    }
}

fn claim_template(
    dovecot: &DovecotSpec,
    labels: &BTreeMap<String, String>,
) -> PersistentVolumeClaim {
    let storage = &dovecot.storage;
    let size = storage
        .size
        .clone()
        .unwrap_or_else(|| Quantity(DEFAULT_MAILBOX_STORAGE.into()));
    PersistentVolumeClaim {
        // No owner: the mailboxes outlive the MailServer.
        metadata: ObjectMeta {
            name: Some(MAIL_VOLUME.into()),
            labels: Some(labels.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_string(), size)])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

fn pod(server: &MailServer, names: &Names, dovecot: &DovecotSpec, tls_secret: &str) -> PodSpec {
    let users = &server.spec.users;
    let secret = |name: &str, secret: &str, items: Vec<(&str, &str)>| Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            items: Some(
                items
                    .into_iter()
                    .map(|(key, path)| KeyToPath {
                        key: key.into(),
                        path: path.into(),
                        ..KeyToPath::default()
                    })
                    .collect(),
            ),
            default_mode: Some(SECRET_MODE),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    };
    let empty = |name: &str| Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    };
    let volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: names.dovecot_config(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        secret(
            "tls",
            tls_secret,
            vec![("tls.crt", "tls.crt"), ("tls.key", "tls.key")],
        ),
        secret("users", &users.secret_name, vec![(&users.key, "passwd")]),
        empty("run"),
        empty("state"),
        empty("tmp"),
    ];
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    };
    let mounts = vec![
        mount("config", CONFIG_DIR, true),
        mount("tls", TLS_DIR, true),
        mount("users", USERS_DIR, true),
        mount("run", RUN_DIR, false),
        mount("state", STATE_DIR, false),
        mount("tmp", TMP_DIR, false),
        mount(MAIL_VOLUME, MAIL_DIR, false),
    ];
    let container_port = |name: &str, port: u16| ContainerPort {
        name: Some(name.into()),
        container_port: port.into(),
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    };
    let tcp_probe = |port: &str, period: i32, failures: i32| Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::String(port.into()),
            ..TCPSocketAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    };
    let container = Container {
        name: "dovecot".into(),
        image: Some(dovecot.image.clone()),
        // The image's entrypoint (tini) stays PID 1 and runs this.
        args: Some(
            [
                "/usr/sbin/dovecot",
                "-F",
                "-c",
                &format!("{CONFIG_DIR}/{CONFIG_KEY}"),
            ]
            .map(String::from)
            .to_vec(),
        ),
        ports: Some(vec![
            container_port("imap", IMAP_POD_PORT),
            container_port("imaps", IMAPS_POD_PORT),
            container_port("lmtp", LMTP_POD_PORT),
        ]),
        volume_mounts: Some(mounts),
        readiness_probe: Some(tcp_probe("lmtp", 5, 3)),
        liveness_probe: Some(tcp_probe("imaps", 10, 6)),
        resources: dovecot.resources.clone(),
        security_context: Some(restricted_container()),
        ..Container::default()
    };
    PodSpec {
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(DOVECOT_UID),
            run_as_group: Some(DOVECOT_UID),
            fs_group: Some(DOVECOT_UID),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        containers: vec![container],
        volumes: Some(volumes),
        ..PodSpec::default()
    }
}

/// `dovecot.conf` (Dovecot 2.3): IMAP on 143 (STARTTLS before any login) and 993, LMTP
/// without TLS on the pod network, the mail server's users and certificate, Maildirs at
/// `<claim>/<domain>/<user>/Maildir` as the mail server lays them out, and a quota.
fn dovecot_conf(server: &MailServer, dovecot: &DovecotSpec) -> anyhow::Result<String> {
    let spec = &server.spec;
    let name = server.meta().name.as_deref().unwrap_or_default();
    let realm = spec.primary_domain().unwrap_or_default();
    let uid = DOVECOT_UID;
    let user = DOVECOT_USER;
    let home = format!("{MAIL_DIR}/%Ld/%Ln");
    let mut conf = format!(
        "# Dovecot 2.3 config rendered by the Posthorn operator for MailServer {name}.\n\
         protocols = imap lmtp\n\
         listen = *\n\
         base_dir = {RUN_DIR}\n\
         state_dir = {STATE_DIR}\n\
         mail_temp_dir = {TMP_DIR}\n\
         log_path = /dev/stderr\n\
         \n\
         # Rootless: every process runs as the pod's user, which owns every mailbox.\n\
         default_internal_user = {user}\n\
         default_internal_group = {user}\n\
         default_login_user = {user}\n\
         mail_uid = {uid}\n\
         mail_gid = {uid}\n\
         first_valid_uid = {uid}\n\
         last_valid_uid = {uid}\n\
         mail_home = {home}\n\
         mail_location = maildir:~/Maildir\n\
         \n\
         # Logins as on the mail server: a bare name gets the first domain.\n\
         auth_default_realm = {realm}\n\
         auth_username_format = %Lu\n\
         # No login without TLS, on 143 too (STARTTLS first).\n\
         disable_plaintext_auth = yes\n\
         ssl = required\n\
         ssl_min_protocol = TLSv1.2\n\
         ssl_cert = <{TLS_DIR}/tls.crt\n\
         ssl_key = <{TLS_DIR}/tls.key\n\
         \n\
         # The mail server's users Secret. Its lines carry no uid or home, so the\n\
         # userdb is static, and knows only users the passwd-file has.\n\
         passdb {{\n  driver = passwd-file\n  args = {USERS_DIR}/passwd\n}}\n\
         userdb {{\n  driver = static\n  args = uid={uid} gid={uid} home={home} allow_all_users=no\n}}\n\
         \n\
         service imap-login {{\n  chroot =\n\
         \x20 inet_listener imap {{\n    port = {IMAP_POD_PORT}\n  }}\n\
         \x20 inet_listener imaps {{\n    port = {IMAPS_POD_PORT}\n    ssl = yes\n  }}\n}}\n\
         service lmtp {{\n  inet_listener lmtp {{\n    port = {LMTP_POD_PORT}\n  }}\n}}\n\
         service anvil {{\n  chroot =\n}}\n\
         service auth-worker {{\n  user = $default_internal_user\n}}\n"
    );
    if let Some(bytes) = dovecot.quota_bytes() {
        let bytes = bytes.map_err(|e| anyhow::anyhow!("spec.mailboxes.dovecot.quota: {e}"))?;
        conf.push_str(&format!(
            "\n# Quota: checked at LMTP RCPT, shown to IMAP clients.\n\
             mail_plugins = $mail_plugins quota\n\
             lmtp_rcpt_check_quota = yes\n\
             protocol imap {{\n  mail_plugins = $mail_plugins imap_quota\n}}\n\
             plugin {{\n  quota = maildir:User quota\n  quota_rule = *:storage={bytes}B\n}}\n"
        ));
    }
    Ok(conf)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{load, options, render_example};
    use super::super::{SecretData, render};
    use super::*;
    use crate::plan::CONFIG_KEY as SERVER_CONFIG_KEY;

    fn rendered() -> super::super::Rendered {
        render_example("examples/mailserver-mailboxes.yaml")
    }

    #[test]
    fn the_mail_server_delivers_to_the_managed_dovecot() {
        let rendered = rendered();
        let config = &rendered.config_map.data.as_ref().unwrap()[SERVER_CONFIG_KEY];
        assert!(config.contains("lmtp: mail-dovecot:24"), "{config}");
        let mailboxes = rendered.mailboxes.as_ref().unwrap();
        let lmtp = mailboxes.lmtp.spec.as_ref().unwrap();
        assert_eq!(
            mailboxes.lmtp.metadata.name.as_deref(),
            Some("mail-dovecot")
        );
        let port = &lmtp.ports.as_ref().unwrap()[0];
        assert_eq!(port.port, 24);
        assert_eq!(port.target_port, Some(IntOrString::String("lmtp".into())));
        let pod = mailboxes.stateful_set.spec.template.spec.as_ref().unwrap();
        let lmtp_port = pod.containers[0]
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .find(|p| p.name.as_deref() == Some("lmtp"))
            .unwrap();
        assert!(
            mailboxes.config_map.data.as_ref().unwrap()[CONFIG_KEY]
                .contains(&format!("port = {}", lmtp_port.container_port))
        );

        // Without mailboxes, nothing of it, and the built-in Maildir.
        let plain = render_example("examples/mailserver.yaml");
        assert!(plain.mailboxes.is_none());
        let config = &plain.config_map.data.as_ref().unwrap()[SERVER_CONFIG_KEY];
        assert!(config.contains("lmtp: null"), "{config}");
    }

    #[test]
    fn dovecot_pods_are_not_the_mail_servers() {
        let rendered = rendered();
        let mailboxes = rendered.mailboxes.as_ref().unwrap();
        let mail_selector = rendered
            .service
            .spec
            .as_ref()
            .unwrap()
            .selector
            .clone()
            .unwrap();
        let dovecot_labels = mailboxes
            .stateful_set
            .spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .clone()
            .unwrap();
        assert!(
            !mail_selector
                .iter()
                .all(|(k, v)| dovecot_labels.get(k) == Some(v)),
            "the mail server's Service would select Dovecot's pods"
        );
        for service in [&mailboxes.lmtp, &mailboxes.imap] {
            let selector = service.spec.as_ref().unwrap().selector.as_ref().unwrap();
            assert!(
                selector
                    .iter()
                    .all(|(k, v)| dovecot_labels.get(k) == Some(v))
            );
        }
    }

    #[test]
    fn config_and_certificate_changes_roll_dovecot() {
        let server = load("examples/mailserver-mailboxes.yaml");
        let annotations = |server: &MailServer, secrets: &SecretData| {
            let rendered = render(server, secrets, &options()).unwrap();
            let set = rendered.mailboxes.unwrap().stateful_set;
            set.spec.template.metadata.unwrap().annotations.unwrap()
        };
        let base = annotations(&server, &SecretData::new());
        assert!(!base.contains_key(TLS_CHECKSUM_ANNOTATION));
        let mut bigger = server.clone();
        bigger.spec.mailboxes.dovecot.quota = Some(Quantity("2Gi".into()));
        assert_ne!(
            annotations(&bigger, &SecretData::new())[CONFIG_CHECKSUM_ANNOTATION],
            base[CONFIG_CHECKSUM_ANNOTATION]
        );
        let cert = |pem: &str| {
            SecretData::from([(
                "mail-tls".to_string(),
                BTreeMap::from([("tls.crt".to_string(), pem.as_bytes().to_vec())]),
            )])
        };
        let first = annotations(&server, &cert("one"));
        let renewed = annotations(&server, &cert("two"));
        assert_ne!(
            first[TLS_CHECKSUM_ANNOTATION],
            renewed[TLS_CHECKSUM_ANNOTATION]
        );
        assert_eq!(
            first[CONFIG_CHECKSUM_ANNOTATION],
            renewed[CONFIG_CHECKSUM_ANNOTATION]
        );
    }
}

//! The objects a `MailServer` needs, as a pure function of the MailServer, the data of
//! the Secrets it references, and what the cluster offers. `posthorn render` prints them
//! and the controller applies them, so both always agree.
//!
//! Nothing here is random or time-dependent: rendering the same inputs twice gives the
//! same objects byte for byte (GitOps tools diff them, and the controller skips applies
//! that would change nothing). Key material (the self-signed certificate, the DKIM key)
//! is generated once by the controller into Secrets that render only refers to, listed
//! in [`Rendered::generated_secrets`].

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    HTTPGetAction, KeyToPath, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    SeccompProfile, SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, Volume,
    VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::api::{
    DnsRecord, IssuerKind, MailServer, QueueStorage, ServiceType, TlsSource, split_host_port,
};
use crate::config::{Config, FileLayout, LogFormat};
use crate::mail;

/// Where the pod finds its files. The ConfigMap is mounted at [`CONFIG_DIR`]; each Secret
/// gets a directory of its own under [`SECRETS_DIR`] (not nested inside the ConfigMap's
/// read-only mount).
pub const CONFIG_DIR: &str = "/etc/posthorn";
pub const CONFIG_FILE: &str = "/etc/posthorn/config.yaml";
pub const SECRETS_DIR: &str = "/run/posthorn";
/// The pod's writable state: spool and maildirs (emptyDir or the queue claim).
pub const STATE_DIR: &str = "/var/lib/posthorn";
/// Where the image keeps the binary.
pub const POD_BINARY: &str = "/usr/local/bin/posthorn";

/// Key of the server config in the ConfigMap.
pub const CONFIG_KEY: &str = "config.yaml";
/// Key of the sender login map in the ConfigMap.
pub const SENDER_MAP_KEY: &str = "sender-logins";
/// Keys of the DKIM Secret: the private key (PKCS#8 PEM) and, in generated Secrets, the
/// TXT record value that publishes its public half.
pub const DKIM_KEY: &str = "dkim.key";
pub const DKIM_TXT_KEY: &str = "dkim.txt";
/// Pod template annotation holding the sha256 of the server config: a config change
/// rolls the pods. Certificates, users and the sender map are hot-reloaded and are
/// deliberately not part of it.
pub const CONFIG_CHECKSUM_ANNOTATION: &str = "checksum/config";
pub const EXTERNAL_DNS_HOSTNAME_ANNOTATION: &str = "external-dns.alpha.kubernetes.io/hostname";

const APP_NAME: &str = "posthorn";
const MANAGED_BY: &str = "posthorn-operator";
/// The pod's unprivileged user and group (the distroless "nonroot" ids).
const POD_UID: i64 = 65532;
/// Owner and group may read mounted Secrets; the pod's fsGroup makes the group ours.
const SECRET_MODE: i32 = 0o440;
const MX_PREFERENCE: u16 = 10;
const DNS_TTL: i64 = 3600;

/// What the cluster offers and what the operator runs as: the inputs to rendering that
/// are not in the MailServer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderOptions {
    /// Image for the mail server pods unless the spec names one: the operator's own.
    pub image: String,
    /// The cert-manager `Certificate` CRD is installed.
    pub certificate_crd: bool,
    /// The ExternalDNS `DNSEndpoint` CRD is installed.
    pub dns_endpoint_crd: bool,
    /// API version for PodDisruptionBudgets: `policy/v1` from Kubernetes 1.21,
    /// `policy/v1beta1` before (the same fields for what is rendered here).
    pub pdb_api: PdbApi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PdbApi {
    V1,
    V1beta1,
}

impl PdbApi {
    pub fn api_version(self) -> &'static str {
        match self {
            PdbApi::V1 => "policy/v1",
            PdbApi::V1beta1 => "policy/v1beta1",
        }
    }
}

/// Data of the Secrets a MailServer references, as far as known: Secret name → key →
/// value. Only the DKIM Secret is read (for the public key in DNS); the rest is mounted.
pub type SecretData = BTreeMap<String, BTreeMap<String, Vec<u8>>>;

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

/// A Secret with key material that the controller generates once, when it does not
/// exist yet, and never replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GeneratedSecret {
    /// `kubernetes.io/tls` Secret with a self-signed certificate for `hostname`.
    SelfSignedTls { name: String, hostname: String },
    /// Secret holding a DKIM private key ([`DKIM_KEY`]) and its TXT record ([`DKIM_TXT_KEY`]).
    DkimKey { name: String },
}

impl GeneratedSecret {
    pub fn name(&self) -> &str {
        match self {
            GeneratedSecret::SelfSignedTls { name, .. } | GeneratedSecret::DkimKey { name } => name,
        }
    }
}

/// Everything one MailServer needs.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub config_map: ConfigMap,
    pub deployment: Deployment,
    pub service: Service,
    /// The queue's claim, when the spec asks for persistent storage.
    pub queue_claim: Option<PersistentVolumeClaim>,
    /// When more than one replica runs.
    pub pdb: Option<PodDisruptionBudget>,
    pub pdb_api: PdbApi,
    /// cert-manager Certificate, when the spec names an issuer and the CRD exists.
    pub certificate: Option<DynamicObject>,
    /// ExternalDNS DNSEndpoint, when the spec asks for it and the CRD exists.
    pub dns_endpoint: Option<DynamicObject>,
    pub tls: TlsPlan,
    /// Name of the Secret the pods read the certificate from.
    pub tls_secret: String,
    /// Name of the Secret the pods read the DKIM key from.
    pub dkim_secret: String,
    /// Secrets the controller must create once if missing (render never fills in keys).
    pub generated_secrets: Vec<GeneratedSecret>,
    /// The DNS records the setup needs (published through the DNSEndpoint when there is
    /// one). The DKIM record is missing while the DKIM key is unknown.
    pub dns_records: Vec<DnsRecord>,
}

/// One rendered object with the API resource it belongs to, ready for server-side apply.
#[derive(Debug, Clone)]
pub struct Object {
    pub resource: ApiResource,
    pub object: DynamicObject,
}

impl Object {
    fn typed<K>(object: &K) -> Object
    where
        K: Resource<DynamicType = ()> + serde::Serialize,
    {
        let value = serde_json::to_value(object).expect("Kubernetes objects serialise to JSON");
        Object {
            resource: ApiResource::erase::<K>(&()),
            object: serde_json::from_value(value).expect("a serialised object is a DynamicObject"),
        }
    }

    pub fn kind(&self) -> &str {
        &self.resource.kind
    }

    pub fn name(&self) -> &str {
        self.object.metadata.name.as_deref().unwrap_or_default()
    }
}

pub fn certificate_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate"),
        "certificates",
    )
}

pub fn dns_endpoint_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("externaldns.k8s.io", "v1alpha1", "DNSEndpoint"),
        "dnsendpoints",
    )
}

pub fn pdb_resource(api: PdbApi) -> ApiResource {
    let version = match api {
        PdbApi::V1 => "v1",
        PdbApi::V1beta1 => "v1beta1",
    };
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("policy", version, "PodDisruptionBudget"),
        "poddisruptionbudgets",
    )
}

impl Rendered {
    /// Every object to apply, in an order that lets each find what it refers to.
    pub fn objects(&self) -> Vec<Object> {
        let mut objects = vec![Object::typed(&self.config_map)];
        if let Some(claim) = &self.queue_claim {
            objects.push(Object::typed(claim));
        }
        if let Some(certificate) = &self.certificate {
            objects.push(Object {
                resource: certificate_resource(),
                object: certificate.clone(),
            });
        }
        objects.push(Object::typed(&self.deployment));
        objects.push(Object::typed(&self.service));
        if let Some(pdb) = &self.pdb {
            let mut object = Object::typed(pdb);
            object.resource = pdb_resource(self.pdb_api);
            if let Some(types) = &mut object.object.types {
                types.api_version = self.pdb_api.api_version().into();
            }
            objects.push(object);
        }
        if let Some(endpoint) = &self.dns_endpoint {
            objects.push(Object {
                resource: dns_endpoint_resource(),
                object: endpoint.clone(),
            });
        }
        objects
    }
}

/// Names of the objects of one MailServer.
pub struct Names {
    pub instance: String,
}

impl Names {
    pub fn new(server: &MailServer) -> Names {
        Names {
            instance: server.metadata.name.clone().unwrap_or_default(),
        }
    }
    pub fn config_map(&self) -> String {
        format!("{}-config", self.instance)
    }
    /// Deployment, Service, PodDisruptionBudget, Certificate and DNSEndpoint.
    pub fn workload(&self) -> String {
        self.instance.clone()
    }
    /// The Secret cert-manager writes.
    pub fn issued_tls_secret(&self) -> String {
        format!("{}-tls", self.instance)
    }
    pub fn self_signed_tls_secret(&self) -> String {
        format!("{}-tls-self-signed", self.instance)
    }
    pub fn dkim_secret(&self) -> String {
        format!("{}-dkim", self.instance)
    }
    pub fn queue_claim(&self) -> String {
        format!("{}-queue", self.instance)
    }
}

/// The pod's file layout, as `Config::for_mailserver` wants it.
pub fn pod_layout() -> FileLayout {
    FileLayout {
        cert: format!("{SECRETS_DIR}/tls/tls.crt").into(),
        key: format!("{SECRETS_DIR}/tls/tls.key").into(),
        passwd: format!("{SECRETS_DIR}/users/passwd").into(),
        sender_login_map: format!("{CONFIG_DIR}/{SENDER_MAP_KEY}").into(),
        spool: format!("{STATE_DIR}/spool").into(),
        maildir_root: format!("{STATE_DIR}/mail").into(),
        relay_credentials: Some(format!("{SECRETS_DIR}/relay").into()),
        dkim_key: format!("{SECRETS_DIR}/dkim/{DKIM_KEY}").into(),
    }
}

/// Renders every object `server` needs. Fails only when the spec cannot be turned into
/// a server config (the controller reports that in the Degraded condition).
pub fn render(
    server: &MailServer,
    secrets: &SecretData,
    options: &RenderOptions,
) -> anyhow::Result<Rendered> {
    let spec = &server.spec;
    let names = Names::new(server);
    let base = Base::new(server);

    let mut config = Config::for_mailserver(spec, &pod_layout())?;
    config.log.format = LogFormat::Json;
    let config_yaml = config.to_yaml()?;
    let checksum = sha256_hex(config_yaml.as_bytes());
    let config_map = ConfigMap {
        metadata: base.meta(names.config_map(), "mail-server"),
        data: Some(BTreeMap::from([
            (CONFIG_KEY.to_string(), config_yaml),
            (SENDER_MAP_KEY.to_string(), sender_map(server)),
        ])),
        ..ConfigMap::default()
    };

    let mut generated_secrets = Vec::new();
    let (tls, tls_secret) = match spec.tls_source() {
        TlsSource::Secret(name) => (TlsPlan::UserSecret, name.to_string()),
        TlsSource::Issuer(_) if options.certificate_crd => {
            (TlsPlan::CertManager, names.issued_tls_secret())
        }
        source => {
            let because = match source {
                TlsSource::Issuer(_) => SelfSignedReason::CertManagerMissing,
                _ => SelfSignedReason::NoSource,
            };
            let name = names.self_signed_tls_secret();
            generated_secrets.push(GeneratedSecret::SelfSignedTls {
                name: name.clone(),
                hostname: spec.hostname.clone(),
            });
            (TlsPlan::SelfSigned { because }, name)
        }
    };
    let certificate = match (spec.tls_source(), &tls) {
        (TlsSource::Issuer(issuer), TlsPlan::CertManager) => {
            let kind = match issuer.kind {
                IssuerKind::Issuer => "Issuer",
                IssuerKind::ClusterIssuer => "ClusterIssuer",
            };
            Some(base.dynamic(
                &certificate_resource(),
                names.workload(),
                "tls",
                json!({
                    "spec": {
                        "secretName": tls_secret,
                        "commonName": spec.hostname,
                        "dnsNames": [spec.hostname],
                        "issuerRef": {"name": issuer.name, "kind": kind, "group": issuer.group},
                        "usages": ["digital signature", "key encipherment", "server auth"],
                    }
                }),
            ))
        }
        _ => None,
    };

    let dkim_secret = match &spec.dkim.secret_name {
        Some(name) => name.clone(),
        None => {
            let name = names.dkim_secret();
            generated_secrets.push(GeneratedSecret::DkimKey { name: name.clone() });
            name
        }
    };

    let queue_claim = (spec.queue.storage == QueueStorage::PersistentVolumeClaim).then(|| {
        PersistentVolumeClaim {
            metadata: base.meta(names.queue_claim(), "mail-server"),
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                storage_class_name: spec.queue.storage_class_name.clone(),
                resources: Some(VolumeResourceRequirements {
                    requests: spec
                        .queue
                        .size
                        .clone()
                        .map(|size| BTreeMap::from([("storage".to_string(), size)])),
                    ..VolumeResourceRequirements::default()
                }),
                ..PersistentVolumeClaimSpec::default()
            }),
            ..PersistentVolumeClaim::default()
        }
    });

    let deployment = deployment(
        server,
        &names,
        &base,
        options,
        &checksum,
        &tls_secret,
        &dkim_secret,
    );
    let service = service(server, &names, &base);
    let pdb = (spec.replicas > 1).then(|| PodDisruptionBudget {
        metadata: base.meta(names.workload(), "mail-server"),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(base.selector()),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    });

    let dkim_txt = dkim_record(secrets.get(&dkim_secret));
    let dns_records = dns_records(server, dkim_txt.as_deref());
    let dns_endpoint = (spec.dns.external_dns && options.dns_endpoint_crd).then(|| {
        let endpoints: Vec<_> = dns_records
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
    });

    Ok(Rendered {
        config_map,
        deployment,
        service,
        queue_claim,
        pdb,
        pdb_api: options.pdb_api,
        certificate,
        dns_endpoint,
        tls,
        tls_secret,
        dkim_secret,
        generated_secrets,
        dns_records,
    })
}

/// Metadata shared by every object of one MailServer.
struct Base {
    instance: String,
    namespace: Option<String>,
    owner: Option<OwnerReference>,
}

impl Base {
    fn new(server: &MailServer) -> Base {
        Base {
            instance: server.metadata.name.clone().unwrap_or_default(),
            namespace: server.metadata.namespace.clone(),
            // Only an object read from the API server has a uid to point at.
            owner: server.controller_owner_ref(&()),
        }
    }

    fn selector(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".to_string(), APP_NAME.to_string()),
            (
                "app.kubernetes.io/instance".to_string(),
                self.instance.clone(),
            ),
        ])
    }

    fn labels(&self, component: &str) -> BTreeMap<String, String> {
        let mut labels = self.selector();
        labels.insert("app.kubernetes.io/managed-by".into(), MANAGED_BY.into());
        labels.insert("app.kubernetes.io/component".into(), component.into());
        labels
    }

    fn meta(&self, name: String, component: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: self.namespace.clone(),
            labels: Some(self.labels(component)),
            owner_references: self.owner.clone().map(|owner| vec![owner]),
            ..ObjectMeta::default()
        }
    }

    fn dynamic(
        &self,
        resource: &ApiResource,
        name: String,
        component: &str,
        data: serde_json::Value,
    ) -> DynamicObject {
        let mut object = DynamicObject::new(&name, resource).data(data);
        object.metadata = self.meta(name, component);
        object
    }
}

fn deployment(
    server: &MailServer,
    names: &Names,
    base: &Base,
    options: &RenderOptions,
    checksum: &str,
    tls_secret: &str,
    dkim_secret: &str,
) -> Deployment {
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
            tls_secret,
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
        secret_volume("dkim", dkim_secret, Some(vec![key_to(DKIM_KEY, DKIM_KEY)])),
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

    let container = Container {
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
    };

    let mut pod_meta = ObjectMeta {
        labels: Some(base.labels("mail-server")),
        annotations: Some(BTreeMap::from([(
            CONFIG_CHECKSUM_ANNOTATION.to_string(),
            checksum.to_string(),
        )])),
        ..ObjectMeta::default()
    };
    pod_meta.namespace = None;

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
            template: PodTemplateSpec {
                metadata: Some(pod_meta),
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
                    containers: vec![container],
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    }
}

fn service(server: &MailServer, names: &Names, base: &Base) -> Service {
    let spec = &server.spec;
    let port = |name: &str, port: u16| ServicePort {
        name: Some(name.into()),
        port: port.into(),
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    };
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

    let service_type = match spec.service.r#type {
        ServiceType::LoadBalancer => "LoadBalancer",
        ServiceType::NodePort => "NodePort",
        ServiceType::ClusterIp => "ClusterIP",
    };
    let external_traffic_policy = spec
        .service
        .external_traffic_policy
        .filter(|_| spec.service.r#type != ServiceType::ClusterIp)
        .map(|policy| {
            serde_json::to_value(policy)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default()
        });

    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(service_type.into()),
            selector: Some(base.selector()),
            ports: Some(ports),
            external_traffic_policy,
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Postfix `smtpd_sender_login_maps` lines: `address login1, login2`.
fn sender_map(server: &MailServer) -> String {
    server
        .spec
        .sender_logins
        .iter()
        .map(|entry| format!("{} {}\n", entry.address, entry.logins.join(", ")))
        .collect()
}

/// The DKIM TXT record from the DKIM Secret: its `dkim.txt` when the operator generated
/// it, else derived from an RSA private key in `dkim.key`.
fn dkim_record(secret: Option<&BTreeMap<String, Vec<u8>>>) -> Option<String> {
    let secret = secret?;
    if let Some(txt) = secret.get(DKIM_TXT_KEY) {
        return String::from_utf8(txt.clone())
            .ok()
            .map(|t| t.trim().to_string());
    }
    crate::mail::dkim::dns_record_from_pem(secret.get(DKIM_KEY)?).ok()
}

/// MX, SPF and DMARC for every domain, and DKIM when its public key is known. Without
/// inbound mail there is no MX: nothing listens on port 25 for the domains.
fn dns_records(server: &MailServer, dkim_txt: Option<&str>) -> Vec<DnsRecord> {
    let spec = &server.spec;
    let record = |name: String, record_type: &str, value: String| DnsRecord {
        name,
        record_type: record_type.into(),
        value,
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
        if let Some(txt) = dkim_txt {
            records.push(record(
                format!("{}._domainkey.{domain}", spec.dkim.selector),
                "TXT",
                txt.to_string(),
            ));
        }
    }
    records
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

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The objects as a multi-document YAML stream, as `posthorn render` prints them.
pub fn to_yaml(rendered: &Rendered) -> anyhow::Result<String> {
    let mut out = String::new();
    for secret in &rendered.generated_secrets {
        let what = match secret {
            GeneratedSecret::SelfSignedTls { .. } => "a self-signed certificate",
            GeneratedSecret::DkimKey { .. } => "a DKIM key",
        };
        out.push_str(&format!(
            "# Secret {} ({what}) is generated once by the operator, not rendered.\n",
            secret.name()
        ));
    }
    for object in rendered.objects() {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&object.object)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn path(relative: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
    }

    fn load(relative: &str) -> MailServer {
        crate::api::load_manifest(&path(relative)).unwrap()
    }

    fn options() -> RenderOptions {
        RenderOptions {
            image: "posthorn:test".into(),
            certificate_crd: true,
            dns_endpoint_crd: true,
            pdb_api: PdbApi::V1,
        }
    }

    fn edge_case_secrets() -> SecretData {
        let key = std::fs::read(path("src/operator/testdata/dkim-test.key")).unwrap();
        SecretData::from([(
            "submit-dkim".to_string(),
            BTreeMap::from([(DKIM_KEY.to_string(), key)]),
        )])
    }

    /// Compares with `src/operator/testdata/<name>.golden.yaml`; `UPDATE_GOLDEN=1`
    /// rewrites the file instead.
    fn golden(name: &str, rendered: &Rendered) {
        let actual = to_yaml(rendered).unwrap();
        let file = path(&format!("src/operator/testdata/{name}.golden.yaml"));
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&file, &actual).unwrap();
            return;
        }
        let expected = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 creates it)", file.display()));
        if actual != expected {
            let line = actual
                .lines()
                .zip(expected.lines())
                .position(|(a, e)| a != e)
                .unwrap_or(actual.lines().count().min(expected.lines().count()));
            panic!(
                "{} differs from the rendering at line {} (UPDATE_GOLDEN=1 rewrites it):\n\
                 actual:\n{actual}",
                file.display(),
                line + 1
            );
        }
    }

    #[test]
    fn golden_typical() {
        let rendered = render(
            &load("examples/mailserver.yaml"),
            &SecretData::new(),
            &options(),
        )
        .unwrap();
        golden("typical", &rendered);
    }

    #[test]
    fn golden_relay_with_issuer() {
        let rendered = render(
            &load("examples/mailserver-relay.yaml"),
            &SecretData::new(),
            &options(),
        )
        .unwrap();
        golden("relay", &rendered);
    }

    #[test]
    fn golden_edge_cases() {
        let rendered = render(
            &load("src/operator/testdata/edge-cases.yaml"),
            &edge_case_secrets(),
            &options(),
        )
        .unwrap();
        golden("edge-cases", &rendered);
    }

    #[test]
    fn golden_issuer_without_cert_manager() {
        let options = RenderOptions {
            certificate_crd: false,
            dns_endpoint_crd: false,
            pdb_api: PdbApi::V1beta1,
            ..options()
        };
        let rendered = render(
            &load("src/operator/testdata/issuer-without-cert-manager.yaml"),
            &SecretData::new(),
            &options,
        )
        .unwrap();
        golden("issuer-without-cert-manager", &rendered);
    }

    #[test]
    fn rendering_is_deterministic() {
        let server = load("src/operator/testdata/edge-cases.yaml");
        let first = to_yaml(&render(&server, &edge_case_secrets(), &options()).unwrap()).unwrap();
        let second = to_yaml(&render(&server, &edge_case_secrets(), &options()).unwrap()).unwrap();
        assert_eq!(first, second);
    }

    fn checksum(rendered: &Rendered) -> String {
        rendered
            .deployment
            .spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()[CONFIG_CHECKSUM_ANNOTATION]
            .clone()
    }

    #[test]
    fn config_changes_roll_pods_but_hot_reloaded_inputs_do_not() {
        let server = load("examples/mailserver.yaml");
        let base = render(&server, &SecretData::new(), &options()).unwrap();

        let mut bigger = server.clone();
        bigger.spec.submission.max_message_size.0 = "50Mi".into();
        assert_ne!(
            checksum(&render(&bigger, &SecretData::new(), &options()).unwrap()),
            checksum(&base)
        );

        // Sender map and certificate source: read from mounted files, reloaded in place.
        let mut other = server.clone();
        other.spec.sender_logins[0]
            .logins
            .push("carol@example.com".into());
        let rendered = render(&other, &SecretData::new(), &options()).unwrap();
        assert_eq!(checksum(&rendered), checksum(&base));
        assert!(rendered.config_map.data.as_ref().unwrap()[SENDER_MAP_KEY].contains("carol@"));
        let with_dkim = render(&server, &edge_case_secrets(), &options()).unwrap();
        assert_eq!(
            serde_json::to_value(&with_dkim.deployment).unwrap(),
            serde_json::to_value(&base.deployment).unwrap()
        );
    }

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
        assert!(
            own.generated_secrets.is_empty(),
            "{:?}",
            own.generated_secrets
        );
    }

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
        let dkim = &r
            .iter()
            .find(|(n, ..)| n == "s2024._domainkey.example.org")
            .unwrap()
            .2;
        assert!(dkim.starts_with("v=DKIM1; k=rsa; p=MIIBIjAN"), "{dkim}");
        assert!(edge.dns_endpoint.is_none(), "externalDNS is off");
    }

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

    #[test]
    fn owner_references_only_for_objects_from_the_api_server() {
        let rendered = render(
            &load("src/operator/testdata/edge-cases.yaml"),
            &edge_case_secrets(),
            &options(),
        )
        .unwrap();
        for object in rendered.objects() {
            let owners = object.object.metadata.owner_references.as_ref().unwrap();
            assert_eq!(owners.len(), 1, "{}", object.kind());
            assert_eq!(owners[0].kind, "MailServer");
            assert_eq!(owners[0].controller, Some(true));
            assert_eq!(owners[0].uid, "4a3c1e0e-8d7b-4c55-9c1e-2f0b6f3a9d10");
            assert_eq!(object.object.metadata.namespace.as_deref(), Some("mail"));
        }
        let kinds: Vec<_> = rendered
            .objects()
            .iter()
            .map(|o| o.kind().to_string())
            .collect();
        assert_eq!(
            kinds,
            [
                "ConfigMap",
                "PersistentVolumeClaim",
                "Deployment",
                "Service",
                "PodDisruptionBudget"
            ]
        );
        let plain = render(
            &load("examples/mailserver.yaml"),
            &SecretData::new(),
            &options(),
        )
        .unwrap();
        assert!(
            plain
                .objects()
                .iter()
                .all(|o| o.object.metadata.owner_references.is_none())
        );
    }
}

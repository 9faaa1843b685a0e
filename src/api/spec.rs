//! The `MailServer` custom resource: one object describing a whole mail submission
//! stack. Field doc comments become the CRD's descriptions (`kubectl explain`), serde
//! defaults become its schema defaults, so what the API server fills in and what
//! `posthorn up` fills in are the same values.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::mailboxes::MailboxesSpec;
use super::platform::{NetworkPolicySpec, PodOptions};
use super::status::MailServerStatus;
use crate::mail::{self, ListenerKind};

/// Fully qualified domain name: two or more LDH labels, the last one not numeric (an IP
/// address is not a domain). RE2 syntax, because the API server evaluates it in Go.
pub(crate) const FQDN_PATTERN: &str =
    r"^([a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?$";
/// DNS name of one or more labels (a DKIM selector, a relay host inside the cluster).
pub(crate) const DNS_NAME_PATTERN: &str = r"^[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?)*$";
/// Kubernetes object name (RFC 1123 subdomain), for references to Secrets and the like.
pub(crate) const OBJECT_NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$";
/// Key inside a Secret.
pub(crate) const SECRET_KEY_PATTERN: &str = r"^[-._a-zA-Z0-9]+$";
/// `host:port` with a DNS name, IPv4 address or bracketed IPv6 address.
pub(crate) const HOST_PORT_PATTERN: &str = r"^([-.a-zA-Z0-9]+|\[[0-9a-fA-F:.]+\]):[0-9]{1,5}$";

/// Desired state of a MailServer: submission (587, 465) with TLS and SASL
/// authentication, inbound mail for the local domains on port 25, delivery, DKIM signing
/// and the DNS records that go with them.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "posthorn.dev",
    version = "v1alpha1",
    kind = "MailServer",
    namespaced,
    status = "MailServerStatus",
    shortname = "ms",
    derive = "PartialEq",
    doc = "A mail server: SMTP submission with TLS and SASL authentication, inbound mail for local domains, delivery, DKIM and DNS records, run by the Posthorn operator.",
    printcolumn(
        name = "Hostname",
        type_ = "string",
        json_path = ".spec.hostname",
        description = "Name the server greets with and the MX target"
    ),
    printcolumn(
        name = "Ready Replicas",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "Mail server pods ready to take connections"
    ),
    // JSON form: clippy takes a second `type_ = "string"` for a duplicated attribute.
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status", "description": "Whether the mail server is serving"}"#,
    printcolumn = r#"{"name": "Reason", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].reason", "description": "Why it is or is not Ready"}"#,
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct MailServerSpec {
    /// The server's own fully qualified name (Postfix `$myhostname`): SMTP greeting and
    /// HELO name, TLS certificate name and MX target, e.g. mail.example.com.
    #[schemars(length(min = 1, max = 253), pattern(FQDN_PATTERN))]
    pub hostname: String,

    /// Local domains: mail for them is accepted on port 25 and delivered here, and they
    /// get MX, SPF, DKIM and DMARC records. At least one.
    #[schemars(
        length(min = 1),
        inner(length(max = 253), pattern(FQDN_PATTERN)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub domains: Vec<String>,

    /// Where mail to `postmaster` and `postmaster@<each domain>` goes, in any letter
    /// case; it is accepted on port 25 even when no such user exists (RFC 5321 §4.5.1).
    /// Defaults to `postmaster@<first domain>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 254))]
    pub postmaster: Option<String>,

    /// Mail server pods to run.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0))]
    pub replicas: i32,

    /// Where the TLS certificate comes from. Without it the operator generates a
    /// self-signed certificate and says so in the TLSReady condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,

    /// The user database: who may log in to submit mail.
    pub users: UsersSpec,

    /// Who may use which envelope sender beyond their own address (Postfix
    /// `smtpd_sender_login_maps`). A login always owns its own address.
    #[serde(default)]
    pub sender_logins: Vec<SenderLogin>,

    /// Aliases, the recipient delimiter, `abuse@` and SRS for forwarded mail.
    #[serde(default)]
    pub aliases: super::AliasesSpec,

    /// Mail submission by authenticated users (ports 587 and 465).
    #[serde(default)]
    pub submission: SubmissionSpec,

    /// Inbound mail for the local domains on port 25.
    #[serde(default)]
    pub inbound: InboundSpec,

    /// Send outgoing mail through a relay host (smarthost) instead of directly to the
    /// recipients' MX servers: the answer to providers that block port 25 (OP25B).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<RelaySpec>,

    /// Where mail for the local domains goes.
    #[serde(default)]
    pub delivery: DeliverySpec,

    /// Mailboxes users read over IMAP, served by a Dovecot the operator runs.
    #[serde(default)]
    pub mailboxes: MailboxesSpec,

    /// DKIM signing of outgoing mail.
    #[serde(default)]
    pub dkim: DkimSpec,

    /// DNS records for the domains, published through ExternalDNS.
    #[serde(default)]
    pub dns: DnsSpec,

    /// The Service exposing ports 25, 587 and 465.
    #[serde(default)]
    pub service: ServiceSpec,

    /// PROXY protocol from load balancers, so the server sees the real client address.
    #[serde(default)]
    pub proxy_protocol: ProxyProtocolSpec,

    /// Storage for the mail queue.
    #[serde(default)]
    pub queue: QueueSpec,

    /// How a pod stops.
    #[serde(default)]
    pub shutdown: ShutdownSpec,

    /// Container image for the mail server pods. Defaults to the operator's own image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,

    /// CPU and memory requests and limits for the mail server container. For cpu and
    /// memory each, when neither a request nor a limit is given, the request defaults to
    /// 100m and 64Mi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Scheduling and metadata of the pods (the mail server's and the managed
    /// Dovecot's): node selector, tolerations, affinity, topology spread, priority
    /// class, annotations, labels and image pull Secrets.
    #[serde(default)]
    pub pod: PodOptions,

    /// A NetworkPolicy limiting the mail server pods' traffic to what they need.
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,
}

fn default_replicas() -> i32 {
    1
}

/// Where the TLS certificate comes from: an existing Secret or a cert-manager issuer,
/// not both. With neither the operator generates a self-signed certificate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!(has(self.secretName) && has(self.issuerRef))",
    "message": "secretName and issuerRef are mutually exclusive: name an existing Secret or an issuer, not both"
}, {
    "rule": "!has(self.ecdsaSecretName) || has(self.secretName)",
    "message": "ecdsaSecretName goes with secretName (with issuerRef the operator issues the ECDSA certificate)"
}]))]
pub struct TlsSpec {
    /// Existing `kubernetes.io/tls` Secret in this namespace holding the certificate
    /// (`tls.crt`) and key (`tls.key`). Renewals are picked up without a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(OBJECT_NAME_PATTERN))]
    pub secret_name: Option<String>,

    /// cert-manager issuer: the operator creates a Certificate for the hostname, and
    /// a second one with an ECDSA P-256 key served to clients that take ECDSA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<IssuerRef>,

    /// With `secretName`: a second `kubernetes.io/tls` Secret whose key is ECDSA, served
    /// to clients that take ECDSA (the other Secret to the rest). Renewals are picked up
    /// without a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(OBJECT_NAME_PATTERN))]
    pub ecdsa_secret_name: Option<String>,
}

/// Reference to a cert-manager Issuer or ClusterIssuer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    /// Issuer (in this namespace) or ClusterIssuer.
    #[serde(default)]
    pub kind: IssuerKind,

    /// Name of the issuer.
    #[schemars(length(min = 1, max = 253), pattern(OBJECT_NAME_PATTERN))]
    pub name: String,

    /// API group of the issuer.
    #[serde(default = "default_issuer_group")]
    #[schemars(length(min = 1))]
    pub group: String,
}

fn default_issuer_group() -> String {
    "cert-manager.io".into()
}

/// Kind of a cert-manager issuer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum IssuerKind {
    Issuer,
    #[default]
    ClusterIssuer,
}

/// Where the TLS certificate comes from, once the spec's options are resolved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TlsSource<'a> {
    /// An existing `kubernetes.io/tls` Secret.
    Secret(&'a str),
    /// A cert-manager Certificate issued by this issuer.
    Issuer(&'a IssuerRef),
    /// Neither given: a generated self-signed certificate.
    SelfSigned,
}

impl MailServerSpec {
    /// The certificate source the spec asks for. When both are given (which `validate`
    /// rejects) the Secret wins.
    pub fn tls_source(&self) -> TlsSource<'_> {
        let tls = self.tls.as_ref();
        match (
            tls.and_then(|t| t.secret_name.as_deref()),
            tls.and_then(|t| t.issuer_ref.as_ref()),
        ) {
            (Some(secret), _) => TlsSource::Secret(secret),
            (None, Some(issuer)) => TlsSource::Issuer(issuer),
            (None, None) => TlsSource::SelfSigned,
        }
    }

    /// The Service port of `kind`'s listener, when the spec enables it.
    pub fn service_port(&self, kind: ListenerKind) -> Option<u16> {
        match kind {
            ListenerKind::Smtp => self.inbound.enabled.then_some(kind.service_port()),
            ListenerKind::Submission => Some(self.submission.port),
            ListenerKind::Submissions => self.submission.implicit_tls_port(),
        }
    }

    /// The enabled listeners with their Service ports, in `ListenerKind::ALL` order.
    pub fn listeners(&self) -> Vec<(ListenerKind, u16)> {
        ListenerKind::ALL
            .into_iter()
            .filter_map(|kind| Some((kind, self.service_port(kind)?)))
            .collect()
    }

    /// The first local domain; see [`mail::primary_domain`].
    pub fn primary_domain(&self) -> Option<&str> {
        mail::primary_domain(&self.domains)
    }
}

/// The user database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsersSpec {
    /// Secret in this namespace holding the users. Changes are picked up without a restart.
    #[schemars(length(min = 1, max = 253), pattern(OBJECT_NAME_PATTERN))]
    pub secret_name: String,

    /// Key in the Secret whose value is a Dovecot passwd-file: one
    /// `user@domain:{SCHEME}hash` line per user (`posthorn passwd` makes the hash).
    #[serde(default = "default_users_key")]
    #[schemars(length(min = 1, max = 253), pattern(SECRET_KEY_PATTERN))]
    pub key: String,
}

fn default_users_key() -> String {
    "passwd".into()
}

/// Logins allowed to use one envelope sender address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SenderLogin {
    /// Envelope sender address, e.g. info@example.com.
    #[schemars(length(min = 3))]
    pub address: String,

    /// Logins (full addresses, as users log in) that may send as this address.
    #[schemars(length(min = 1), inner(length(min = 3)))]
    pub logins: Vec<String>,
}

/// Mail submission by authenticated users.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubmissionSpec {
    /// Service port for submission with STARTTLS (RFC 6409). Nothing but STARTTLS is
    /// accepted before TLS, and nothing is relayed without authentication.
    #[serde(default = "default_submission_port")]
    #[schemars(range(min = 1))]
    pub port: u16,

    /// Submission over implicit TLS (RFC 8314), conventionally port 465.
    #[serde(default)]
    pub implicit_tls: ImplicitTlsSpec,

    /// Largest message accepted on any port (Postfix `message_size_limit`), advertised
    /// in EHLO SIZE: bytes, or with a suffix k, M, G (powers of 1000) or Ki, Mi, Gi
    /// (powers of 1024), e.g. 25Mi.
    #[serde(default = "default_max_message_size")]
    pub max_message_size: Quantity,
}

fn default_submission_port() -> u16 {
    ListenerKind::Submission.service_port()
}

fn default_max_message_size() -> Quantity {
    Quantity("25Mi".into())
}

impl Default for SubmissionSpec {
    fn default() -> Self {
        SubmissionSpec {
            port: default_submission_port(),
            implicit_tls: ImplicitTlsSpec::default(),
            max_message_size: default_max_message_size(),
        }
    }
}

impl SubmissionSpec {
    /// The implicit-TLS port, when that listener is enabled.
    pub fn implicit_tls_port(&self) -> Option<u16> {
        self.implicit_tls.enabled.then_some(self.implicit_tls.port)
    }

    /// `maxMessageSize` in bytes.
    pub fn max_message_bytes(&self) -> Result<u64, String> {
        super::units::parse_size(&self.max_message_size.0)
    }
}

/// Submission over implicit TLS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImplicitTlsSpec {
    /// Whether to listen for submission over implicit TLS.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Service port for submission over implicit TLS.
    #[serde(default = "default_implicit_tls_port")]
    #[schemars(range(min = 1))]
    pub port: u16,
}

fn default_implicit_tls_port() -> u16 {
    ListenerKind::Submissions.service_port()
}

impl Default for ImplicitTlsSpec {
    fn default() -> Self {
        ImplicitTlsSpec {
            enabled: true,
            port: default_implicit_tls_port(),
        }
    }
}

fn default_true() -> bool {
    true
}

/// Inbound mail on port 25.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InboundSpec {
    /// Accept mail for the local domains from other servers on port 25 (no relaying
    /// for anyone else).
    #[serde(default = "default_true")]
    pub enabled: bool,
}

impl Default for InboundSpec {
    fn default() -> Self {
        InboundSpec { enabled: true }
    }
}

/// Relay host (smarthost) for outgoing mail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RelaySpec {
    /// Relay host as host:port, e.g. smtp.provider.example:587. Port 465 means implicit
    /// TLS, any other port STARTTLS.
    #[schemars(length(min = 3), pattern(HOST_PORT_PATTERN))]
    pub host: String,

    /// Secret in this namespace with the relay login: keys `username` and `password`
    /// (the `kubernetes.io/basic-auth` layout). Without it mail is relayed
    /// unauthenticated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(OBJECT_NAME_PATTERN))]
    pub credentials_secret: Option<String>,
}

/// Where mail for the local domains goes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliverySpec {
    /// Delivery of mail for the local domains.
    #[serde(default)]
    pub local: LocalDelivery,
}

/// Delivery of mail for the local domains.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalDelivery {
    /// LMTP server as host:port (e.g. Dovecot, dovecot.mail.svc:24). Without it mail is
    /// written to Maildirs on the pod's own volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3), pattern(HOST_PORT_PATTERN))]
    pub lmtp: Option<String>,
}

/// DKIM signing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DkimSpec {
    /// Sign outgoing mail. When false the operator neither generates nor mounts a key
    /// and publishes no DKIM record (for a relay that signs on the server's behalf).
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Selector: the key is published at `<selector>._domainkey.<domain>`.
    #[serde(default = "default_dkim_selector")]
    #[schemars(length(min = 1, max = 253), pattern(DNS_NAME_PATTERN))]
    pub selector: String,

    /// Secret in this namespace holding the private signing key. Without it the
    /// operator generates a key into a Secret of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(OBJECT_NAME_PATTERN))]
    pub secret_name: Option<String>,

    /// A second signature with an Ed25519 key (RFC 8463) below the RSA one, under its
    /// own selector; `ed25519: {}` turns it on with the defaults. Absent: RSA only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ed25519: Option<Ed25519DkimSpec>,
}

/// The Ed25519 key of `spec.dkim.ed25519`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Ed25519DkimSpec {
    /// Selector of the Ed25519 key; it must differ from `spec.dkim.selector`. Default:
    /// `<spec.dkim.selector>-ed25519`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(DNS_NAME_PATTERN))]
    pub selector: Option<String>,

    /// Secret in this namespace holding the Ed25519 private key (`dkim.key`, PKCS#8
    /// PEM). Without it the operator generates one into a Secret of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(OBJECT_NAME_PATTERN))]
    pub secret_name: Option<String>,
}

fn default_dkim_selector() -> String {
    "posthorn".into()
}

impl DkimSpec {
    /// The user's Secret holding the key, when signing is on and one is named.
    pub fn user_secret(&self) -> Option<&str> {
        self.secret_name.as_deref().filter(|_| self.enabled)
    }

    /// The Ed25519 key, when signing is on and it is asked for.
    pub fn ed25519(&self) -> Option<&Ed25519DkimSpec> {
        self.ed25519.as_ref().filter(|_| self.enabled)
    }

    /// The Ed25519 key's selector, when there is one.
    pub fn ed25519_selector(&self) -> Option<String> {
        let ed25519 = self.ed25519()?;
        Some(
            ed25519
                .selector
                .clone()
                .unwrap_or_else(|| mail::dkim::ed25519_selector(&self.selector)),
        )
    }

    /// The user's Secret holding the Ed25519 key, when that key is on and one is named.
    pub fn ed25519_user_secret(&self) -> Option<&str> {
        self.ed25519()?.secret_name.as_deref()
    }
}

impl Default for DkimSpec {
    fn default() -> Self {
        DkimSpec {
            enabled: true,
            selector: default_dkim_selector(),
            secret_name: None,
            ed25519: None,
        }
    }
}

/// DNS records for the domains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DnsSpec {
    /// Publish the Service's hostname and the MX, SPF, DKIM and DMARC records through
    /// ExternalDNS (a DNSEndpoint object). When false the records are only listed in
    /// status, for publishing by hand.
    #[serde(rename = "externalDNS", default = "default_true")]
    pub external_dns: bool,

    /// SPF record for each domain. Without it one is derived from the setup
    /// ("v=spf1 mx -all", plus the relay host when there is one). An empty string
    /// publishes no SPF record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spf: Option<String>,

    /// DMARC record published at `_dmarc.<domain>`. An empty string publishes none.
    #[serde(default = "default_dmarc")]
    pub dmarc: String,
}

fn default_dmarc() -> String {
    "v=DMARC1; p=quarantine".into()
}

impl Default for DnsSpec {
    fn default() -> Self {
        DnsSpec {
            external_dns: true,
            spf: None,
            dmarc: default_dmarc(),
        }
    }
}

/// The Service in front of the mail server pods.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.type != 'ClusterIP' || !has(self.externalTrafficPolicy)",
        "message": "externalTrafficPolicy applies only to LoadBalancer and NodePort Services"
    },
    {
        "rule": "self.type == 'LoadBalancer' || !(has(self.loadBalancerIP) || has(self.loadBalancerClass) || has(self.loadBalancerSourceRanges))",
        "message": "loadBalancerIP, loadBalancerClass and loadBalancerSourceRanges apply only to LoadBalancer Services"
    }
]))]
pub struct ServiceSpec {
    /// Service type.
    #[serde(default)]
    pub r#type: ServiceType,

    /// Local (the default for LoadBalancer) keeps the client's address visible to the
    /// server (per-IP limits, Received: headers) but only routes to nodes running a pod;
    /// Cluster (the default for NodePort) spreads traffic but hides the client address
    /// unless PROXY protocol is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = without_null_enum_value)]
    pub external_traffic_policy: Option<ExternalTrafficPolicy>,

    /// Address for the load balancer, where the cloud lets you choose it.
    #[serde(
        rename = "loadBalancerIP",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub load_balancer_ip: Option<String>,

    /// The load balancer implementation that serves the Service (Kubernetes 1.24 on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub load_balancer_class: Option<String>,

    /// Client networks (CIDR) the load balancer lets through; unset: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer_source_ranges: Option<Vec<String>>,

    /// Annotations for the Service, e.g. for the cloud's load balancer.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// schemars lists `null` among an optional enum's values; in a CRD `nullable` says that,
/// and the enum must hold only real values.
fn without_null_enum_value(schema: &mut schemars::Schema) {
    if let Some(serde_json::Value::Array(values)) = schema.get_mut("enum") {
        values.retain(|v| !v.is_null());
    }
}

/// Kubernetes Service type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ServiceType {
    #[default]
    LoadBalancer,
    NodePort,
    #[serde(rename = "ClusterIP")]
    ClusterIp,
}

/// Kubernetes Service external traffic policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ExternalTrafficPolicy {
    Local,
    Cluster,
}

/// PROXY protocol (v1 and v2) from load balancers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxyProtocolSpec {
    /// Networks (CIDR, e.g. 10.0.0.0/8) whose connections must start with a PROXY
    /// protocol header giving the real client address; without one they are closed.
    /// Headers from other addresses are not honoured. Empty: PROXY protocol is off.
    #[serde(rename = "trustedCIDRs", default)]
    pub trusted_cidrs: Vec<String>,
}

/// Storage for the mail queue.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.storage == 'PersistentVolumeClaim' || !has(self.storageClassName)",
        "message": "storageClassName applies only when storage is PersistentVolumeClaim"
    }
]))]
pub struct QueueSpec {
    /// PersistentVolumeClaim (the default) gives every pod a claim of its own that keeps
    /// queued mail (and local Maildirs) across restarts, rollouts and rescheduling.
    /// EmptyDir keeps it for the pod's lifetime only: mail still queued when a pod goes
    /// away is lost, and the status says so.
    #[serde(default)]
    pub storage: QueueStorage,

    /// Volume size (bytes or with a suffix such as Mi or Gi): each claim's request
    /// (default 1Gi), or the emptyDir size limit (default none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Quantity>,

    /// StorageClass of the claims. Default: the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(OBJECT_NAME_PATTERN))]
    pub storage_class_name: Option<String>,
}

/// The claim size when the spec names none.
pub const DEFAULT_QUEUE_SIZE: &str = "1Gi";

/// Kind of volume for the mail queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum QueueStorage {
    EmptyDir,
    #[default]
    PersistentVolumeClaim,
}

/// How a pod stops.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShutdownSpec {
    /// Seconds from SIGTERM in which the server stops accepting, lets sessions finish
    /// and delivers what it can; what is left stays on the claim. The pod's
    /// terminationGracePeriodSeconds is this plus a margin, so the server exits before
    /// the kubelet kills it.
    #[serde(default = "default_grace_seconds")]
    #[schemars(range(min = 1, max = 3600))]
    pub grace_period_seconds: i64,
}

impl Default for ShutdownSpec {
    fn default() -> Self {
        ShutdownSpec {
            grace_period_seconds: default_grace_seconds(),
        }
    }
}

fn default_grace_seconds() -> i64 {
    20
}

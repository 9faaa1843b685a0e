//! What the operator reports back on a `MailServer`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Observed state of a MailServer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MailServerStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, TLSReady, DNSPublished and the other conditions, one per type.
    #[serde(default)]
    #[schemars(extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["type"]
    ))]
    pub conditions: Vec<Condition>,

    /// Mail server pods ready to take connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,

    /// Where clients reach the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Endpoints>,

    /// DNS records the setup needs, as published through ExternalDNS (or to be published
    /// by hand when that is off).
    #[serde(default)]
    pub dns_records: Vec<DnsRecord>,
}

/// Addresses (host:port) clients connect to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    /// Submission with STARTTLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submission: Option<String>,

    /// Submission over implicit TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submissions: Option<String>,

    /// Inbound SMTP (port 25).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<String>,
}

/// One DNS record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DnsRecord {
    /// Owner name, e.g. posthorn._domainkey.example.com.
    pub name: String,

    /// Record type: A, MX, TXT, ...
    pub record_type: String,

    /// Record data, e.g. "10 mail.example.com" or "v=spf1 mx -all".
    pub value: String,
}

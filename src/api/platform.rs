//! Platform knobs of a MailServer: where and how its pods are scheduled (`spec.pod`),
//! the mail container's default resource requests, and the optional NetworkPolicy
//! (`spec.networkPolicy`). Types (Kubernetes' own where there is one, so the CRD schema
//! is the real one), defaults and their validation.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::validate::{Problems, check_object_name};

/// Pod labels the operator sets itself: its selectors and its bookkeeping. A user's pod
/// label may not use these keys (a changed selector label would orphan the pods).
pub const OPERATOR_LABELS: [&str; 4] = [
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/component",
];

/// The mail container's requests when the spec gives neither a request nor a limit for
/// that resource: about what an idle server uses (12-18 MB PSS, bench/RESULTS.md), with
/// room for a few sessions.
pub const DEFAULT_CPU_REQUEST: &str = "100m";
pub const DEFAULT_MEMORY_REQUEST: &str = "64Mi";

/// Scheduling and metadata of the mail server pods, and of the managed Dovecot's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodOptions {
    /// Node labels a node must have to run the pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Taints the pods tolerate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// Node affinity and pod (anti-)affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// How the pods spread over zones or nodes. A constraint without a labelSelector
    /// gets the pods' own selector (the pods of this MailServer, or of its Dovecot).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,

    /// PriorityClass of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub priority_class_name: Option<String>,

    /// Annotations on the pods. The operator's own (`checksum/...`) win.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,

    /// Labels on the pods, besides the operator's `app.kubernetes.io/name`, `instance`,
    /// `managed-by` and `component`, which may not be set here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,

    /// Secrets in this namespace with registry logins for pulling the images.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
}

impl PodOptions {
    pub(super) fn validate(&self, p: &mut Problems) {
        for key in self.labels.keys() {
            if OPERATOR_LABELS.contains(&key.as_str()) {
                p.push(
                    format_args!("spec.pod.labels[{key}]"),
                    "is set by the operator (its selectors and bookkeeping); use another key",
                );
            } else {
                p.check(
                    format_args!("spec.pod.labels[{key}]"),
                    check_qualified_name(key),
                );
            }
        }
        for (key, value) in &self.labels {
            p.check(
                format_args!("spec.pod.labels[{key}]"),
                check_label_value(value),
            );
        }
        for key in self.annotations.keys() {
            p.check(
                format_args!("spec.pod.annotations[{key}]"),
                check_qualified_name(key),
            );
        }
        for (i, secret) in self.image_pull_secrets.iter().enumerate() {
            p.check(
                format_args!("spec.pod.imagePullSecrets[{i}].name"),
                check_object_name(&secret.name),
            );
        }
        if let Some(class) = &self.priority_class_name {
            p.check("spec.pod.priorityClassName", check_object_name(class));
        }
    }
}

/// A label or annotation key (a "qualified name"): an optional DNS prefix and `/`, then a name of at most 63
/// letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit.
pub(super) fn check_qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && (prefix.is_empty() || check_object_name(prefix).is_err())
    {
        return Err(format!(
            "{key:?}: the prefix before '/' must be a DNS subdomain (lowercase letters, digits, '-' and '.')"
        ));
    }
    if name.is_empty() || check_label_value(name).is_err() {
        return Err(format!(
            "{key:?} is not a valid key: at most 63 letters, digits, '-', '_' and '.', \
             starting and ending with a letter or digit, after an optional DNS prefix and '/'"
        ));
    }
    Ok(())
}

/// A label value: empty, or at most 63 letters, digits, `-`, `_` and `.`, starting and
/// ending with a letter or digit.
fn check_label_value(value: &str) -> Result<(), String> {
    let valid = value.is_empty()
        || (value.len() <= 63
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric()));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a valid label value: at most 63 letters, digits, '-', '_' and \
             '.', starting and ending with a letter or digit"
        ))
    }
}

/// A NetworkPolicy for the mail server pods.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Render a NetworkPolicy `<name>` for the mail server pods. Ingress: the enabled
    /// mail listeners from anywhere, the handover port from the MailServer's own pods,
    /// the metrics port (9090) from operatorFrom and metricsFrom. Egress: DNS, SMTP
    /// (25, 465, 587) and the relay's port, LMTP to the managed Dovecot or
    /// spec.delivery.local.lmtp, the handover port to the MailServer's own pods.
    #[serde(default)]
    pub enabled: bool,

    /// Where the Posthorn operator runs: it reads the pods' drain progress on port 9090.
    /// Default: pods labelled `app.kubernetes.io/name: posthorn`,
    /// `app.kubernetes.io/component: operator` (the chart's) in any namespace.
    #[serde(default = "default_operator_from")]
    pub operator_from: Vec<NetworkPolicyPeer>,

    /// Who else may reach port 9090, e.g. Prometheus:
    /// `[{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics_from: Vec<NetworkPolicyPeer>,
}

fn default_operator_from() -> Vec<NetworkPolicyPeer> {
    vec![NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector::default()),
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([
                ("app.kubernetes.io/name".to_string(), "posthorn".to_string()),
                (
                    "app.kubernetes.io/component".to_string(),
                    "operator".to_string(),
                ),
            ])),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    }]
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        NetworkPolicySpec {
            enabled: false,
            operator_from: default_operator_from(),
            metrics_from: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_keys_and_values() {
        for good in ["team", "example.com/team", "a.b-c_d", "x/Y9"] {
            assert_eq!(check_qualified_name(good), Ok(()), "{good}");
        }
        for bad in ["", "/team", "Example.com/team", "team-", "a/b/c", "a b"] {
            assert!(check_qualified_name(bad).is_err(), "{bad}");
        }
        assert_eq!(check_label_value(""), Ok(()));
        assert!(check_label_value(&"a".repeat(64)).is_err());
        assert!(check_label_value("-a").is_err());
    }
}

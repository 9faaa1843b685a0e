//! Names and metadata shared by every object of one MailServer.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use kube::api::{ApiResource, DynamicObject};

use crate::api::MailServer;

const APP_NAME: &str = "posthorn";
const MANAGED_BY: &str = "posthorn-operator";

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
    /// StatefulSet, Service, PodDisruptionBudget, Certificate and DNSEndpoint (and the
    /// Deployment of operators before the StatefulSet).
    pub fn workload(&self) -> String {
        self.instance.clone()
    }
    /// The headless Service giving each pod a stable DNS name for its peers.
    pub fn peers(&self) -> String {
        format!("{}-peers", self.instance)
    }
    /// The Secret cert-manager writes.
    pub fn issued_tls_secret(&self) -> String {
        format!("{}-tls", self.instance)
    }
    /// The second Certificate, with an ECDSA key, and the Secret cert-manager writes it to.
    pub fn ecdsa_certificate(&self) -> String {
        format!("{}-ecdsa", self.instance)
    }
    pub fn issued_ecdsa_tls_secret(&self) -> String {
        format!("{}-tls-ecdsa", self.instance)
    }
    pub fn self_signed_tls_secret(&self) -> String {
        format!("{}-tls-self-signed", self.instance)
    }
    pub fn dkim_secret(&self) -> String {
        format!("{}-dkim", self.instance)
    }
    pub fn dkim_ed25519_secret(&self) -> String {
        format!("{}-dkim-ed25519", self.instance)
    }
    /// The generated SRS key, when the spec names no Secret of its own.
    pub fn srs_secret(&self) -> String {
        format!("{}-srs", self.instance)
    }
    /// The generated Secret with the token the pods' handovers share.
    pub fn handover_secret(&self) -> String {
        format!("{}-handover", self.instance)
    }
    /// The managed Dovecot's StatefulSet and its internal (LMTP) Service.
    pub fn dovecot(&self) -> String {
        format!("{}-dovecot", self.instance)
    }
    pub fn dovecot_config(&self) -> String {
        format!("{}-dovecot-config", self.instance)
    }
    /// The Service clients read their mail through.
    pub fn imap(&self) -> String {
        format!("{}-imap", self.instance)
    }
}

/// Metadata shared by every object of one MailServer.
pub(super) struct Base {
    instance: String,
    namespace: Option<String>,
    owner: Option<OwnerReference>,
}

impl Base {
    pub(super) fn new(server: &MailServer) -> Base {
        Base {
            instance: server.metadata.name.clone().unwrap_or_default(),
            namespace: server.metadata.namespace.clone(),
            // Only an object read from the API server has a uid to point at.
            owner: server.controller_owner_ref(&()),
        }
    }

    pub(super) fn selector(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".to_string(), APP_NAME.to_string()),
            (
                "app.kubernetes.io/instance".to_string(),
                self.instance.clone(),
            ),
        ])
    }

    pub(super) fn labels(&self, component: &str) -> BTreeMap<String, String> {
        let mut labels = self.selector();
        labels.insert("app.kubernetes.io/managed-by".into(), MANAGED_BY.into());
        labels.insert("app.kubernetes.io/component".into(), component.into());
        labels
    }

    pub(super) fn meta(&self, name: String, component: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: self.namespace.clone(),
            labels: Some(self.labels(component)),
            owner_references: self.owner.clone().map(|owner| vec![owner]),
            ..ObjectMeta::default()
        }
    }

    pub(super) fn dynamic(
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

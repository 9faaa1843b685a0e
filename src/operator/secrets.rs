//! The Secrets a MailServer reads (users, TLS, DKIM, relay credentials) and the ones the
//! operator generates for it once (a self-signed certificate, the DKIM and SRS keys, the
//! handover token).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use super::keys;
use super::render::{GeneratedSecret, Names, SecretData};
use super::status::referenced_secrets;
use crate::api::MailServer;
use crate::mail::dkim::KeyAlgorithm;

const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
const MANAGED_BY: &str = "posthorn-operator";

/// The MailServers a change of the Secret with `meta` concerns: those it was generated
/// for (by its labels; the DKIM and SRS keys have no owner) or is owned by, and those
/// whose spec refers to it by name. Any other Secret concerns none.
pub fn concerned<'a>(
    meta: &ObjectMeta,
    servers: impl IntoIterator<Item = &'a MailServer>,
) -> Vec<ObjectRef<MailServer>> {
    let labels = meta.labels.as_ref();
    let label = |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str);
    let generated_for = (label(MANAGED_BY_LABEL) == Some(MANAGED_BY))
        .then(|| label(INSTANCE_LABEL))
        .flatten();
    let name = meta.name.as_deref().unwrap_or_default();
    let owned_by = |server: &str| {
        meta.owner_references
            .iter()
            .flatten()
            .any(|o| o.kind == "MailServer" && o.name == server)
    };
    servers
        .into_iter()
        .filter(|server| server.metadata.namespace == meta.namespace)
        .filter(|server| {
            let server_name = server.name_any();
            generated_for == Some(server_name.as_str())
                || owned_by(&server_name)
                || referenced_secrets(server).iter().any(|r| r == name)
        })
        .map(ObjectRef::from_obj)
        .collect()
}

/// The data of the named Secrets that exist, and the names of those that do not.
pub async fn read(
    api: &Api<Secret>,
    names: impl IntoIterator<Item = String>,
) -> kube::Result<(SecretData, Vec<String>)> {
    let mut secrets = SecretData::new();
    let mut missing = Vec::new();
    for name in names {
        if secrets.contains_key(&name) || missing.contains(&name) {
            continue;
        }
        match api.get_opt(&name).await? {
            Some(secret) => {
                secrets.insert(name, data(&secret));
            }
            None => missing.push(name),
        }
    }
    Ok((secrets, missing))
}

pub fn data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, ByteString(v))| (k.clone(), v.clone()))
        .collect()
}

/// Creates a generated Secret once; an existing one is never touched (its key is what
/// DNS and clients already know). Returns what it generated, for an event.
///
/// The DKIM keys and the SRS key have no owner: they outlive their MailServer, so that deleting
/// and re-creating one (a migration, a GitOps re-sync) keeps the key DNS publishes and
/// the bounces to forwarded mail valid. The others are owned and go with it; new ones
/// cost nothing.
pub async fn ensure_generated(
    server: &MailServer,
    api: &Api<Secret>,
    generated: &GeneratedSecret,
) -> anyhow::Result<Option<String>> {
    if api.get_opt(generated.name()).await?.is_some() {
        return Ok(None);
    }
    let (data, type_, what, owned) = match generated.clone() {
        GeneratedSecret::SelfSignedTls { hostname, .. } => (
            keys::self_signed_tls(&hostname)?,
            "kubernetes.io/tls",
            "self-signed certificate",
            true,
        ),
        GeneratedSecret::DkimKey { .. } => (
            tokio::task::spawn_blocking(|| keys::dkim_key(KeyAlgorithm::Rsa)).await??,
            "Opaque",
            "DKIM key",
            false,
        ),
        GeneratedSecret::Ed25519DkimKey { .. } => (
            keys::dkim_key(KeyAlgorithm::Ed25519)?,
            "Opaque",
            "Ed25519 DKIM key",
            false,
        ),
        GeneratedSecret::HandoverToken { .. } => {
            (keys::handover_token(), "Opaque", "handover token", true)
        }
        GeneratedSecret::SrsKey { .. } => (keys::srs_key(), "Opaque", "SRS key", false),
    };
    let names = Names::new(server);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(generated.name().into()),
            namespace: server.namespace(),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/name".to_string(), "posthorn".to_string()),
                (INSTANCE_LABEL.to_string(), names.instance.clone()),
                (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
            ])),
            owner_references: server
                .controller_owner_ref(&())
                .filter(|_| owned)
                .map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        string_data: Some(data),
        type_: Some(type_.into()),
        ..Secret::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(Some(format!(
            "generated a {what} into Secret {}",
            generated.name()
        ))),
        // Another replica (or a previous attempt) was first; keep its key.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    use super::super::render::testing::load;
    use super::*;

    fn server(name: &str, namespace: &str) -> MailServer {
        let mut server = load("examples/mailserver-relay.yaml");
        server.metadata.name = Some(name.into());
        server.metadata.namespace = Some(namespace.into());
        server
    }

    fn meta(name: &str, namespace: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..ObjectMeta::default()
        }
    }

    fn names(refs: Vec<ObjectRef<MailServer>>) -> Vec<String> {
        refs.into_iter().map(|r| r.name).collect()
    }

    #[test]
    fn a_secret_concerns_the_servers_that_generated_own_or_name_it() {
        let servers = [
            server("mail", "default"),
            server("other", "default"),
            server("mail", "elsewhere"),
        ];
        let concerned = |meta: &ObjectMeta| names(concerned(meta, &servers));
        // Named by both specs in "default" (examples/mailserver-relay.yaml), by name only.
        assert_eq!(
            concerned(&meta("relay-credentials", "default")),
            ["mail", "other"]
        );
        assert_eq!(concerned(&meta("mail-tls", "elsewhere")), ["mail"]);
        assert!(concerned(&meta("unrelated", "default")).is_empty());
        assert!(concerned(&meta("mail-dkim", "default")).is_empty());

        // A generated key (no owner): by its labels, only with the operator's label.
        let mut dkim = meta("mail-dkim", "default");
        dkim.labels = Some(BTreeMap::from([
            (INSTANCE_LABEL.to_string(), "other".to_string()),
            (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
        ]));
        assert_eq!(concerned(&dkim), ["other"]);
        dkim.labels
            .as_mut()
            .unwrap()
            .insert(MANAGED_BY_LABEL.into(), "helm".into());
        assert!(concerned(&dkim).is_empty());

        // An owned one: by its owner reference.
        let mut handover = meta("x-handover", "default");
        handover.owner_references = Some(vec![OwnerReference {
            kind: "MailServer".into(),
            name: "other".into(),
            ..OwnerReference::default()
        }]);
        assert_eq!(concerned(&handover), ["other"]);
    }
}

//! The Secrets a MailServer reads (users, TLS, DKIM, relay credentials) and the ones the
//! operator generates for it once (a self-signed certificate, the DKIM and SRS keys, the
//! handover token).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::{Resource, ResourceExt};

use super::keys;
use super::render::{GeneratedSecret, Names, SecretData};
use crate::api::MailServer;
use crate::mail::dkim::KeyAlgorithm;

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
                (
                    "app.kubernetes.io/instance".to_string(),
                    names.instance.clone(),
                ),
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    "posthorn-operator".to_string(),
                ),
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

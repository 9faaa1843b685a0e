//! Server-side apply under one field manager, skipping objects that would not change.
//!
//! Every applied object carries [`APPLIED_HASH_ANNOTATION`], a hash of what was applied.
//! An object is applied only when the live object does not already contain everything
//! rendered (annotation included): a spec change alters the hash, a hand edit or a
//! deletion makes the live object differ, and anything else costs no API write.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::render::Object;

pub const FIELD_MANAGER: &str = "posthorn";
pub const APPLIED_HASH_ANNOTATION: &str = "posthorn.dev/applied-hash";
/// On an existing object of the same name, `"true"` lets the operator take it over.
pub const ADOPT_ANNOTATION: &str = "posthorn.dev/adopt";

/// What [`apply`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    Unchanged,
    Written,
    /// An object of that name exists and belongs to something else: left alone.
    NotOurs,
}

/// Whether `live` may be written as `desired`: it is controlled by the same owner (the
/// MailServer's uid), or its owner opted in with [`ADOPT_ANNOTATION`]. Anything else,
/// such as another mail server's `mail` Service during a migration, is not ours.
pub fn may_write(desired: &DynamicObject, live: &DynamicObject) -> bool {
    let adopt = live
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ADOPT_ANNOTATION))
        .is_some_and(|v| v == "true");
    let owner = controller_uid(&desired.metadata);
    owner.is_none() || controller_uid(&live.metadata) == owner || adopt
}

/// The uid of the object's controlling owner, if it has one.
pub fn controller_uid(meta: &ObjectMeta) -> Option<&str> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.as_str())
}

/// `object` with the hash annotation of its own content.
pub fn with_applied_hash(mut object: DynamicObject) -> DynamicObject {
    let json = serde_json::to_vec(&object).expect("objects serialise to JSON");
    let hash: String = Sha256::digest(&json)[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    object
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(APPLIED_HASH_ANNOTATION.into(), hash);
    object
}

/// Whether applying `desired` would change `live`: false when every field of `desired`
/// is in `live` with the same value (the API server adds defaults and status, which
/// do not count).
pub fn needs_apply(desired: &DynamicObject, live: Option<&DynamicObject>) -> bool {
    let Some(live) = live else { return true };
    let desired = serde_json::to_value(desired).expect("objects serialise to JSON");
    let live = serde_json::to_value(live).expect("objects serialise to JSON");
    !contains(&live, &desired)
}

/// `want` ⊆ `have`: objects by key, arrays element by element with equal length.
fn contains(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(have), Value::Object(want)) => want
            .iter()
            .all(|(k, w)| have.get(k).is_some_and(|h| contains(h, w))),
        (Value::Array(have), Value::Array(want)) => {
            have.len() == want.len() && have.iter().zip(want).all(|(h, w)| contains(h, w))
        }
        (have, want) => have == want,
    }
}

/// Applies `object` unless the live one already matches or is not ours. Returns what
/// it did and the live object afterwards (absent only when it is not ours).
pub async fn apply(
    client: &Client,
    namespace: &str,
    object: &Object,
) -> kube::Result<(Applied, Option<DynamicObject>)> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &object.resource);
    let desired = with_applied_hash(object.object.clone());
    let name = object.name();
    let live = api.get_opt(name).await?;
    if live.as_ref().is_some_and(|live| !may_write(&desired, live)) {
        return Ok((Applied::NotOurs, None));
    }
    if !needs_apply(&desired, live.as_ref()) {
        return Ok((Applied::Unchanged, live));
    }
    let written = api
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&desired),
        )
        .await?;
    Ok((Applied::Written, Some(written)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(value: Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    fn desired() -> DynamicObject {
        with_applied_hash(object(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "mail", "labels": {"app": "posthorn"}},
            "spec": {"ports": [{"name": "smtp", "port": 25}], "type": "LoadBalancer"}
        })))
    }

    #[test]
    fn live_object_with_server_defaults_needs_no_apply() {
        let mut live = serde_json::to_value(desired()).unwrap();
        live["metadata"]["resourceVersion"] = json!("42");
        live["metadata"]["uid"] = json!("u");
        live["spec"]["clusterIP"] = json!("10.0.0.1");
        live["spec"]["ports"][0]["protocol"] = json!("TCP");
        live["spec"]["ports"][0]["nodePort"] = json!(30025);
        live["status"] = json!({"loadBalancer": {}});
        assert!(!needs_apply(&desired(), Some(&object(live))));
    }

    #[test]
    fn missing_edited_or_outdated_objects_are_applied() {
        assert!(needs_apply(&desired(), None));

        let mut edited = serde_json::to_value(desired()).unwrap();
        edited["spec"]["type"] = json!("ClusterIP");
        assert!(needs_apply(&desired(), Some(&object(edited))));

        let mut extra_port = serde_json::to_value(desired()).unwrap();
        extra_port["spec"]["ports"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "x", "port": 1}));
        assert!(needs_apply(&desired(), Some(&object(extra_port))));

        // A field dropped from the rendering changes the hash, so it is applied (and
        // server-side apply removes the field) although the rest is contained.
        let mut smaller = desired();
        smaller.metadata.labels = None;
        let smaller = with_applied_hash({
            let mut o = smaller;
            o.metadata.annotations = None;
            o
        });
        assert!(needs_apply(&smaller, Some(&desired())));
    }

    #[test]
    fn only_our_own_or_adoptable_objects_are_written() {
        let owned = |uid: &str| {
            let mut o = desired();
            o.metadata.owner_references = Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                    api_version: "posthorn.dev/v1alpha1".into(),
                    kind: "MailServer".into(),
                    name: "mail".into(),
                    uid: uid.into(),
                    controller: Some(true),
                    ..Default::default()
                },
            ]);
            o
        };
        assert!(may_write(&owned("a"), &owned("a")));
        // Another MailServer's, a hand-made one, or ours from a MailServer since deleted.
        assert!(!may_write(&owned("a"), &owned("b")));
        assert!(!may_write(&owned("a"), &desired()));
        let mut adoptable = desired();
        adoptable.metadata.annotations = Some([(ADOPT_ANNOTATION.into(), "true".into())].into());
        assert!(may_write(&owned("a"), &adoptable));
        adoptable.metadata.annotations = Some([(ADOPT_ANNOTATION.into(), "yes".into())].into());
        assert!(!may_write(&owned("a"), &adoptable));
        // A render without an owner (no uid yet) claims nothing.
        assert!(may_write(&desired(), &owned("b")));
    }

    #[test]
    fn hash_depends_on_content_only() {
        let a = desired();
        let b = desired();
        assert_eq!(a.metadata.annotations, b.metadata.annotations);
        let mut changed = serde_json::to_value(desired()).unwrap();
        changed["metadata"]["annotations"] = json!(null);
        changed["spec"]["type"] = json!("NodePort");
        let changed = with_applied_hash(object(changed));
        assert_ne!(a.metadata.annotations, changed.metadata.annotations);
    }
}

//! Server-side apply under one field manager, skipping objects that would not change.
//!
//! Every applied object carries [`APPLIED_HASH_ANNOTATION`], a hash of what was applied.
//! An object is applied only when the live object does not already contain everything
//! rendered (annotation included): a spec change alters the hash, a hand edit or a
//! deletion makes the live object differ, and anything else costs no API write.

use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::render::Object;

pub const FIELD_MANAGER: &str = "posthorn";
pub const APPLIED_HASH_ANNOTATION: &str = "posthorn.dev/applied-hash";

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

/// Applies `object` unless the live one already matches. Returns whether it wrote.
pub async fn apply(client: &Client, namespace: &str, object: &Object) -> kube::Result<bool> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &object.resource);
    let desired = with_applied_hash(object.object.clone());
    let name = object.name();
    let live = api.get_opt(name).await?;
    if !needs_apply(&desired, live.as_ref()) {
        return Ok(false);
    }
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&desired),
    )
    .await?;
    Ok(true)
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

//! A container's environment as the kubelet builds it: `envFrom`, then `env` in order
//! (literal values with `$(VAR)` references to the variables before them, downward API
//! fields, ConfigMap and Secret keys), and `$(VAR)` expansion of command and args.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Container, ObjectFieldSelector, Pod};
use kube::ResourceExt;

use crate::objects::Objects;

/// Expands `$(NAME)` from `vars` as Kubernetes does: `$$` is an escaped `$`, and a
/// reference to a name not in `vars` stays as written.
pub fn expand(input: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some((name, tail)) = after.strip_prefix('(').and_then(|t| t.split_once(')')) {
            match vars.get(name) {
                Some(value) => out.push_str(value),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = tail;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Where the pod runs: the addresses the downward API reports.
pub struct Placement<'a> {
    pub pod_ip: &'a str,
    pub host_ip: &'a str,
    pub node_name: &'a str,
}

/// The value of a downward API `fieldRef` (env and volume forms). `metadata.labels` and
/// `metadata.annotations` as a whole are the volume form: sorted `key="value"` lines.
pub fn field(pod: &Pod, selector: &ObjectFieldSelector, at: &Placement) -> Result<String> {
    let path = selector.field_path.as_str();
    let map_key = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|p| p.strip_prefix("['"))
            .and_then(|p| p.strip_suffix("']"))
    };
    let value = match path {
        "metadata.name" => pod.name_any(),
        "metadata.namespace" => pod.namespace().unwrap_or_default(),
        "metadata.uid" => pod.uid().unwrap_or_default(),
        "metadata.labels" => map_lines(pod.labels()),
        "metadata.annotations" => map_lines(pod.annotations()),
        "spec.nodeName" => at.node_name.to_string(),
        "spec.serviceAccountName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" | "status.podIPs" => at.pod_ip.to_string(),
        "status.hostIP" | "status.hostIPs" => at.host_ip.to_string(),
        _ => {
            if let Some(key) = map_key("metadata.labels") {
                pod.labels().get(key).cloned().unwrap_or_default()
            } else if let Some(key) = map_key("metadata.annotations") {
                pod.annotations().get(key).cloned().unwrap_or_default()
            } else {
                bail!("unsupported fieldRef {path}")
            }
        }
    };
    Ok(value)
}

/// `key="value"` lines, sorted by key, values quoted as Go's `%q` does for text.
fn map_lines(map: &BTreeMap<String, String>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}={}", quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn quote(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The container's variables in definition order (a later name replaces an earlier
/// one), on top of `base` (the image's own environment).
pub fn container_env(
    pod: &Pod,
    container: &Container,
    objects: &Objects,
    at: &Placement,
    base: &[(String, String)],
) -> Result<Vec<(String, String)>> {
    let ns = pod.namespace().unwrap_or_default();
    let mut vars: Vec<(String, String)> = base.to_vec();
    let set = |vars: &mut Vec<(String, String)>, name: String, value: String| {
        vars.retain(|(n, _)| *n != name);
        vars.push((name, value));
    };
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (data, optional, what) = if let Some(r) = &from.config_map_ref {
            (objects.config_map(&ns, &r.name), r.optional, "ConfigMap")
        } else if let Some(r) = &from.secret_ref {
            (objects.secret(&ns, &r.name), r.optional, "Secret")
        } else {
            continue;
        };
        match data {
            Some(data) => {
                for (k, v) in data {
                    set(&mut vars, format!("{prefix}{k}"), utf8(v, k)?);
                }
            }
            None if optional == Some(true) => {}
            None => bail!("envFrom: {what} not found"),
        }
    }
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(value), _) => {
                let defined: BTreeMap<String, String> = vars.iter().cloned().collect();
                expand(value, &defined)
            }
            (None, Some(from)) => {
                if let Some(f) = &from.field_ref {
                    field(pod, f, at)?
                } else if let Some(r) = &from.secret_key_ref {
                    match objects.secret(&ns, &r.name).and_then(|d| d.get(&r.key)) {
                        Some(v) => utf8(v, &r.key)?,
                        None if r.optional == Some(true) => continue,
                        None => bail!(
                            "env {}: key {} of Secret {} not found",
                            var.name,
                            r.key,
                            r.name
                        ),
                    }
                } else if let Some(r) = &from.config_map_key_ref {
                    match objects.config_map(&ns, &r.name).and_then(|d| d.get(&r.key)) {
                        Some(v) => utf8(v, &r.key)?,
                        None if r.optional == Some(true) => continue,
                        None => bail!(
                            "env {}: key {} of ConfigMap {} not found",
                            var.name,
                            r.key,
                            r.name
                        ),
                    }
                } else {
                    bail!("env {}: unsupported valueFrom", var.name)
                }
            }
            (None, None) => String::new(),
        };
        set(&mut vars, var.name.clone(), value);
    }
    Ok(vars)
}

fn utf8(bytes: &[u8], key: &str) -> Result<String> {
    String::from_utf8(bytes.to_vec()).with_context(|| format!("key {key} is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector};
    use serde_json::json;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn expansion_follows_kubernetes() {
        let v = vars(&[("A", "one"), ("B", "two")]);
        assert_eq!(expand("$(A)-$(B)", &v), "one-two");
        assert_eq!(expand("$$(A)", &v), "$(A)");
        assert_eq!(expand("$(MISSING) $A $", &v), "$(MISSING) $A $");
        assert_eq!(expand("x$(A", &v), "x$(A");
        assert_eq!(expand("$$$(B)", &v), "$two");
    }

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "mail-0", "namespace": "mail", "uid": "u-1",
                "labels": {"b": "2", "a": "x\"y"}, "annotations": {"drain": "true"}},
            "spec": {"containers": []}
        }))
        .unwrap()
    }

    const AT: Placement = Placement {
        pod_ip: "127.0.0.2",
        host_ip: "127.0.0.1",
        node_name: "node",
    };

    fn selector(path: &str) -> ObjectFieldSelector {
        ObjectFieldSelector {
            field_path: path.into(),
            ..Default::default()
        }
    }

    #[test]
    fn downward_fields() {
        let pod = pod();
        let f = |p: &str| field(&pod, &selector(p), &AT).unwrap();
        assert_eq!(f("metadata.name"), "mail-0");
        assert_eq!(f("metadata.namespace"), "mail");
        assert_eq!(f("status.podIP"), "127.0.0.2");
        assert_eq!(f("metadata.annotations['drain']"), "true");
        assert_eq!(f("metadata.labels['missing']"), "");
        assert_eq!(f("metadata.labels"), "a=\"x\\\"y\"\nb=\"2\"");
        assert!(field(&pod, &selector("spec.bogus"), &AT).is_err());
    }

    #[test]
    fn env_in_order_with_references() {
        let pod = pod();
        let objects = Objects::with(
            &[],
            &[(
                "mail",
                "creds",
                [("password".to_string(), b"s3cret".to_vec())].into(),
            )],
        );
        let env = |name: &str, value: &str| EnvVar {
            name: name.into(),
            value: Some(value.into()),
            ..Default::default()
        };
        let container = Container {
            name: "c".into(),
            env: Some(vec![
                env("HOME", "/overridden"),
                EnvVar {
                    name: "POD".into(),
                    value_from: Some(EnvVarSource {
                        field_ref: Some(selector("metadata.name")),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                EnvVar {
                    name: "PASS".into(),
                    value_from: Some(EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: "creds".into(),
                            key: "password".into(),
                            optional: None,
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                env("URL", "smtp://$(POD):$(PASS)@$(LATER)"),
                env("LATER", "x"),
            ]),
            ..Default::default()
        };
        let base = [("HOME".to_string(), "/root".to_string())];
        let got = container_env(&pod, &container, &objects, &AT, &base).unwrap();
        let got: Vec<(&str, &str)> = got.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            got,
            [
                ("HOME", "/overridden"),
                ("POD", "mail-0"),
                ("PASS", "s3cret"),
                ("URL", "smtp://mail-0:s3cret@$(LATER)"),
                ("LATER", "x"),
            ]
        );
    }
}

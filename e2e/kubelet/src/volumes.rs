//! Volumes as the kubelet lays them out. ConfigMap, Secret, downward API and projected
//! volumes are "atomic" directories: the files live in a timestamped `..<time>` directory,
//! `..data` is a symlink to it, and each top-level name is a symlink through `..data`; an
//! update writes a new directory and swaps `..data` with one rename, so a reader sees
//! either the old or the new set, never a mix. emptyDir is a plain directory that dies with
//! the pod; a persistentVolumeClaim is a directory per claim that outlives it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, KeyToPath, Pod, Volume};
use kube::ResourceExt;

use crate::env::{Placement, field};
use crate::objects::{Data, Objects};

/// The Kubernetes default mode of files in ConfigMap, Secret and downward API volumes.
const DEFAULT_MODE: u32 = 0o644;
const DATA_LINK: &str = "..data";

/// One file of an atomic volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub bytes: Vec<u8>,
    pub mode: u32,
}

/// An atomic volume's files by relative path.
pub type Payload = BTreeMap<String, File>;

/// The files of `volume` now, or None when it is not an atomic kind.
pub fn payload(
    pod: &Pod,
    volume: &Volume,
    objects: &Objects,
    at: &Placement,
) -> Option<Result<Payload>> {
    let ns = pod.namespace().unwrap_or_default();
    if let Some(source) = &volume.config_map {
        let data = objects.config_map(&ns, &source.name);
        return Some(keys(
            data,
            source.items.as_deref(),
            source.default_mode,
            source.optional,
            &format!("ConfigMap {}", source.name),
        ));
    }
    if let Some(source) = &volume.secret {
        let name = source.secret_name.clone().unwrap_or_default();
        return Some(keys(
            objects.secret(&ns, &name),
            source.items.as_deref(),
            source.default_mode,
            source.optional,
            &format!("Secret {name}"),
        ));
    }
    if let Some(source) = &volume.downward_api {
        return Some(downward(
            pod,
            source.items.as_deref().unwrap_or_default(),
            source.default_mode,
            at,
        ));
    }
    let source = volume.projected.as_ref()?;
    Some((|| {
        let mut all = Payload::new();
        for projection in source.sources.iter().flatten() {
            let part = if let Some(cm) = &projection.config_map {
                keys(
                    objects.config_map(&ns, &cm.name),
                    cm.items.as_deref(),
                    source.default_mode,
                    cm.optional,
                    &format!("ConfigMap {}", cm.name),
                )?
            } else if let Some(s) = &projection.secret {
                keys(
                    objects.secret(&ns, &s.name),
                    s.items.as_deref(),
                    source.default_mode,
                    s.optional,
                    &format!("Secret {}", s.name),
                )?
            } else if let Some(d) = &projection.downward_api {
                downward(
                    pod,
                    d.items.as_deref().unwrap_or_default(),
                    source.default_mode,
                    at,
                )?
            } else {
                bail!("unsupported projected source in volume {}", volume.name)
            };
            all.extend(part);
        }
        Ok(all)
    })())
}

/// The listed `items` of a ConfigMap's or Secret's keys (each with its own mode or the
/// default), or every key.
fn keys(
    data: Option<&Data>,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
    optional: Option<bool>,
    what: &str,
) -> Result<Payload> {
    let default_mode = default_mode.map_or(DEFAULT_MODE, |m| m as u32);
    let Some(data) = data else {
        if optional == Some(true) {
            return Ok(Payload::new());
        }
        bail!("{what} not found");
    };
    let Some(items) = items else {
        return Ok(data
            .iter()
            .map(|(k, v)| {
                let file = File {
                    bytes: v.clone(),
                    mode: default_mode,
                };
                (k.clone(), file)
            })
            .collect());
    };
    let mut payload = Payload::new();
    for item in items {
        let bytes = match data.get(&item.key) {
            Some(bytes) => bytes.clone(),
            None if optional == Some(true) => continue,
            None => bail!("key {} not in {what}", item.key),
        };
        let mode = item.mode.map_or(default_mode, |m| m as u32);
        payload.insert(safe_path(&item.path)?, File { bytes, mode });
    }
    Ok(payload)
}

fn downward(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: Option<i32>,
    at: &Placement,
) -> Result<Payload> {
    let default_mode = default_mode.map_or(DEFAULT_MODE, |m| m as u32);
    let mut payload = Payload::new();
    for item in items {
        let Some(selector) = &item.field_ref else {
            bail!(
                "downward API item {}: only fieldRef is supported",
                item.path
            );
        };
        let file = File {
            bytes: field(pod, selector, at)?.into_bytes(),
            mode: item.mode.map_or(default_mode, |m| m as u32),
        };
        payload.insert(safe_path(&item.path)?, file);
    }
    Ok(payload)
}

/// A relative path without `..` (the API server checks this too).
fn safe_path(path: &str) -> Result<String> {
    let ok = !path.is_empty()
        && !path.starts_with("..")
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
    if !ok {
        bail!("invalid volume item path {path:?}");
    }
    Ok(path.to_string())
}

/// Writes `payload` as the new contents of the atomic volume `dir` (created if need be):
/// files into a fresh `..<time>` directory, group `gid` when given, then `..data`
/// swapped to it by rename, the top-level symlinks fitted, and the old directory removed.
pub fn write_atomic(dir: &Path, payload: &Payload, gid: Option<u32>) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let old = fs::read_link(dir.join(DATA_LINK)).ok();
    let version = new_version_dir(dir)?;
    for (path, file) in payload {
        let target = dir.join(&version).join(path);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&target, &file.bytes).with_context(|| format!("writing {}", target.display()))?;
        fs::set_permissions(&target, fs::Permissions::from_mode(file.mode))?;
        chown_group(&target, gid)?;
    }
    let staged = dir.join("..data_tmp");
    let _ = fs::remove_file(&staged);
    symlink(&version, &staged)?;
    fs::rename(&staged, dir.join(DATA_LINK))?;

    let top: BTreeSet<String> = payload
        .keys()
        .filter_map(|p| p.split('/').next().map(str::to_string))
        .collect();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !top.contains(&name) {
            fs::remove_file(dir.join(&name))?;
        }
    }
    for name in &top {
        let link = dir.join(name);
        if fs::symlink_metadata(&link).is_err() {
            symlink(Path::new(DATA_LINK).join(name), &link)?;
        }
    }
    if let Some(old) = old {
        fs::remove_dir_all(dir.join(old))?;
    }
    chown_group(dir, gid)?;
    Ok(())
}

/// `..YYYY_MM_DD_HH_MM_SS.<n>`, as the kubelet names versions, unique in `dir`.
fn new_version_dir(dir: &Path) -> Result<PathBuf> {
    let stamp = jiff::Timestamp::now()
        .strftime("%Y_%m_%d_%H_%M_%S")
        .to_string();
    for n in 0u32.. {
        let name = PathBuf::from(format!("..{stamp}.{n}"));
        match fs::create_dir(dir.join(&name)) {
            Ok(()) => {
                fs::set_permissions(dir.join(&name), fs::Permissions::from_mode(0o755))?;
                return Ok(name);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e.into()),
        }
    }
    unreachable!("u32 exhausted creating version directories")
}

/// Gives `path` the group `gid` (the pod's fsGroup), as the kubelet does for volumes.
pub fn chown_group(path: &Path, gid: Option<u32>) -> Result<()> {
    if let Some(gid) = gid {
        std::os::unix::fs::lchown(path, None, Some(gid))
            .with_context(|| format!("chown {}", path.display()))?;
    }
    Ok(())
}

/// A writable directory volume (emptyDir, or a claim): world-writable without an
/// fsGroup, else group-owned and setgid so that what the pod creates stays in the group.
pub fn writable_dir(dir: &Path, gid: Option<u32>) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    chown_group(dir, gid)?;
    let mode = if gid.is_some() { 0o2775 } else { 0o777 };
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMapVolumeSource;
    use serde_json::json;

    fn data(pairs: &[(&str, &str)]) -> Data {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "annotations": {"drain": "now"}},
            "spec": {"containers": []}
        }))
        .unwrap()
    }

    const AT: Placement = Placement {
        pod_ip: "127.0.0.2",
        host_ip: "127.0.0.1",
        node_name: "node",
    };

    #[test]
    fn secret_items_with_modes() {
        let objects = Objects::with(
            &[],
            &[(
                "ns",
                "tls",
                data(&[("tls.crt", "C"), ("tls.key", "K"), ("x", "X")]),
            )],
        );
        let volume: Volume = serde_json::from_value(json!({
            "name": "tls",
            "secret": {"secretName": "tls", "defaultMode": 0o440, "items": [
                {"key": "tls.crt", "path": "certs/tls.crt"},
                {"key": "tls.key", "path": "tls.key", "mode": 0o400}]}
        }))
        .unwrap();
        let got = payload(&pod(), &volume, &objects, &AT).unwrap().unwrap();
        let got: Vec<(&str, &[u8], u32)> = got
            .iter()
            .map(|(p, f)| (p.as_str(), f.bytes.as_slice(), f.mode))
            .collect();
        assert_eq!(
            got,
            [
                ("certs/tls.crt", &b"C"[..], 0o440),
                ("tls.key", &b"K"[..], 0o400)
            ]
        );
    }

    #[test]
    fn missing_object_fails_unless_optional() {
        let objects = Objects::default();
        let mut volume = Volume {
            name: "c".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: "gone".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(payload(&pod(), &volume, &objects, &AT).unwrap().is_err());
        volume.config_map.as_mut().unwrap().optional = Some(true);
        assert!(
            payload(&pod(), &volume, &objects, &AT)
                .unwrap()
                .unwrap()
                .is_empty()
        );
        let items: Vec<KeyToPath> =
            serde_json::from_value(json!([{"key": "k", "path": "../x"}])).unwrap();
        let bad = keys(Some(&data(&[("k", "v")])), Some(&items), None, None, "x");
        assert!(bad.is_err());
    }

    #[test]
    fn projected_config_map_and_downward_api() {
        let objects = Objects::with(&[("ns", "cfg", data(&[("a", "1"), ("b", "2")]))], &[]);
        let volume: Volume = serde_json::from_value(json!({
            "name": "proj",
            "projected": {"defaultMode": 0o600, "sources": [
                {"configMap": {"name": "cfg", "items": [{"key": "a", "path": "a.txt"}]}},
                {"downwardAPI": {"items": [
                    {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
                    {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}}
            ]}
        }))
        .unwrap();
        let got = payload(&pod(), &volume, &objects, &AT).unwrap().unwrap();
        let got: Vec<(&str, String, u32)> = got
            .iter()
            .map(|(p, f)| {
                (
                    p.as_str(),
                    String::from_utf8(f.bytes.clone()).unwrap(),
                    f.mode,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("a.txt", "1".to_string(), 0o600),
                ("annotations", "drain=\"now\"".to_string(), 0o600),
                ("name", "p".to_string(), 0o600),
            ]
        );
    }

    fn file(text: &str) -> File {
        File {
            bytes: text.as_bytes().to_vec(),
            mode: 0o644,
        }
    }

    #[test]
    fn atomic_swap_layout() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("vol");
        let first: Payload = [
            ("config.yaml".to_string(), file("v1")),
            ("sub/inner".to_string(), file("in")),
            ("old".to_string(), file("o")),
        ]
        .into();
        write_atomic(&dir, &first, None).unwrap();
        let v1 = fs::read_link(dir.join("..data")).unwrap();
        assert!(v1.to_str().unwrap().starts_with(".."), "{v1:?}");
        assert_eq!(
            fs::read_link(dir.join("config.yaml")).unwrap(),
            Path::new("..data/config.yaml")
        );
        assert_eq!(fs::read_to_string(dir.join("config.yaml")).unwrap(), "v1");
        assert_eq!(fs::read_to_string(dir.join("sub/inner")).unwrap(), "in");

        let second: Payload = [
            ("config.yaml".to_string(), file("v2")),
            ("sub/inner".to_string(), file("in2")),
        ]
        .into();
        write_atomic(&dir, &second, None).unwrap();
        let v2 = fs::read_link(dir.join("..data")).unwrap();
        assert_ne!(v1, v2);
        assert!(!dir.join(&v1).exists(), "the old version is removed");
        assert_eq!(fs::read_to_string(dir.join("config.yaml")).unwrap(), "v2");
        assert_eq!(fs::read_to_string(dir.join("sub/inner")).unwrap(), "in2");
        assert!(
            fs::symlink_metadata(dir.join("old")).is_err(),
            "a removed key's link goes"
        );
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                v2.to_string_lossy().into_owned(),
                "..data".to_string(),
                "config.yaml".into(),
                "sub".into()
            ]
        );
    }
}

//! The ConfigMaps and Secrets of the cluster as last listed: what volumes and env read.
//! One snapshot per sync, shared by every pod, so a pod never asks the API server itself.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::ResourceExt;

/// Keys of one ConfigMap or Secret, decoded.
pub type Data = BTreeMap<String, Vec<u8>>;

#[derive(Default)]
pub struct Objects {
    config_maps: BTreeMap<(String, String), Data>,
    secrets: BTreeMap<(String, String), Data>,
}

/// What one pod's worker sees at a sync: its object and the cluster's data objects.
#[derive(Clone)]
pub struct View {
    pub pod: Pod,
    pub objects: std::sync::Arc<Objects>,
}

impl Objects {
    pub fn new(config_maps: Vec<ConfigMap>, secrets: Vec<Secret>) -> Objects {
        let key = |ns: Option<String>, name: String| (ns.unwrap_or_default(), name);
        let config_maps = config_maps
            .into_iter()
            .map(|cm| {
                let mut data: Data = cm
                    .data
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect();
                for (k, v) in cm.binary_data.clone().unwrap_or_default() {
                    data.insert(k, v.0);
                }
                (key(cm.namespace(), cm.name_any()), data)
            })
            .collect();
        let secrets = secrets
            .into_iter()
            .map(|s| {
                let data: Data = s
                    .data
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect();
                (key(s.namespace(), s.name_any()), data)
            })
            .collect();
        Objects {
            config_maps,
            secrets,
        }
    }

    pub fn config_map(&self, namespace: &str, name: &str) -> Option<&Data> {
        self.config_maps
            .get(&(namespace.to_string(), name.to_string()))
    }

    pub fn secret(&self, namespace: &str, name: &str) -> Option<&Data> {
        self.secrets.get(&(namespace.to_string(), name.to_string()))
    }

    /// Test helper: a snapshot with the given objects.
    #[cfg(test)]
    pub fn with(config_maps: &[(&str, &str, Data)], secrets: &[(&str, &str, Data)]) -> Objects {
        let map = |items: &[(&str, &str, Data)]| {
            items
                .iter()
                .map(|(ns, name, data)| ((ns.to_string(), name.to_string()), data.clone()))
                .collect()
        };
        Objects {
            config_maps: map(config_maps),
            secrets: map(secrets),
        }
    }
}

//! The queue's PersistentVolumeClaim, when the spec asks for persistent storage.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements,
};

use super::meta::{Base, Names};
use crate::api::{MailServer, QueueStorage};

pub(super) fn queue_claim(
    server: &MailServer,
    names: &Names,
    base: &Base,
) -> Option<PersistentVolumeClaim> {
    let queue = &server.spec.queue;
    (queue.storage == QueueStorage::PersistentVolumeClaim).then(|| PersistentVolumeClaim {
        metadata: base.meta(names.queue_claim(), "mail-server"),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: queue.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: queue
                    .size
                    .clone()
                    .map(|size| BTreeMap::from([("storage".to_string(), size)])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    })
}

//! The claim template of the pods' state volume: spool and local Maildirs, one claim
//! per pod (`state-<name>-<ordinal>`), created by the StatefulSet and never deleted by
//! the operator.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::meta::Base;
use crate::api::{DEFAULT_QUEUE_SIZE, MailServer};

/// The volume (and claim template) holding the spool and the local Maildirs.
pub(super) const STATE_VOLUME: &str = "state";

pub(super) fn claim_template(server: &MailServer, base: &Base) -> PersistentVolumeClaim {
    let queue = &server.spec.queue;
    let size = queue
        .size
        .clone()
        .unwrap_or_else(|| Quantity(DEFAULT_QUEUE_SIZE.into()));
    PersistentVolumeClaim {
        // No owner: the claims outlive the MailServer (its queued mail is on them).
        metadata: ObjectMeta {
            name: Some(STATE_VOLUME.into()),
            labels: Some(base.labels("mail-server")),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: queue.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_string(), size)])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

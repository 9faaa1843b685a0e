//! The PodDisruptionBudget that keeps all but one pod up during voluntary evictions.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{ApiResource, GroupVersionKind};

use super::meta::{Base, Names};
use crate::api::MailServer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PdbApi {
    V1,
    V1beta1,
}

impl PdbApi {
    pub fn api_version(self) -> &'static str {
        match self {
            PdbApi::V1 => "policy/v1",
            PdbApi::V1beta1 => "policy/v1beta1",
        }
    }
}

pub fn pdb_resource(api: PdbApi) -> ApiResource {
    let version = match api {
        PdbApi::V1 => "v1",
        PdbApi::V1beta1 => "v1beta1",
    };
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("policy", version, "PodDisruptionBudget"),
        "poddisruptionbudgets",
    )
}

/// A budget only when more than one replica runs: with one, it would block every drain.
pub(super) fn pdb(server: &MailServer, names: &Names, base: &Base) -> Option<PodDisruptionBudget> {
    (server.spec.replicas > 1).then(|| PodDisruptionBudget {
        metadata: base.meta(names.workload(), "mail-server"),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(base.selector()),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}

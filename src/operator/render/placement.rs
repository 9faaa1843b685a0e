//! `spec.pod` applied to a pod template, the mail server's and the managed Dovecot's
//! alike: scheduling (node selector, tolerations, affinity, topology spread, priority
//! class), image pull Secrets, and the user's labels and annotations under the
//! operator's own.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::api::PodOptions;

/// Adds `options` to `template`, whose labels and annotations are the operator's and
/// win over the user's. `selector` selects the template's pods: a topology spread
/// constraint without a label selector spreads those.
pub(super) fn apply(
    template: &mut PodTemplateSpec,
    options: &PodOptions,
    selector: &BTreeMap<String, String>,
) {
    let metadata = template.metadata.get_or_insert_default();
    let under = |user: &BTreeMap<String, String>, ours: Option<BTreeMap<String, String>>| {
        let mut merged = user.clone();
        merged.extend(ours.unwrap_or_default());
        (!merged.is_empty()).then_some(merged)
    };
    metadata.labels = under(&options.labels, metadata.labels.take());
    metadata.annotations = under(&options.annotations, metadata.annotations.take());

    let pod = template.spec.get_or_insert_default();
    pod.node_selector = (!options.node_selector.is_empty()).then(|| options.node_selector.clone());
    pod.tolerations = non_empty(&options.tolerations);
    pod.affinity = options.affinity.clone();
    pod.priority_class_name = options.priority_class_name.clone();
    pod.image_pull_secrets = non_empty(&options.image_pull_secrets);
    pod.topology_spread_constraints =
        (!options.topology_spread_constraints.is_empty()).then(|| {
            options
                .topology_spread_constraints
                .iter()
                .cloned()
                .map(|mut constraint| {
                    constraint
                        .label_selector
                        .get_or_insert_with(|| LabelSelector {
                            match_labels: Some(selector.clone()),
                            ..LabelSelector::default()
                        });
                    constraint
                })
                .collect()
        });
}

fn non_empty<T: Clone>(items: &[T]) -> Option<Vec<T>> {
    (!items.is_empty()).then(|| items.to_vec())
}

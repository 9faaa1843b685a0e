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

#[cfg(test)]
mod tests {
    use super::super::testing::{load, options};
    use super::super::{SecretData, render};

    /// The user's labels never replace the operator's, which the selectors use; a
    /// spread constraint without a selector spreads the workload's own pods; a
    /// constraint with one keeps it.
    #[test]
    fn user_pod_options_stay_under_the_operators() {
        let mut server = load("examples/mailserver-platform.yaml");
        let pod = &mut server.spec.pod;
        // validate() refuses these; render must still keep the selectors intact.
        pod.labels
            .insert("app.kubernetes.io/name".into(), "hijack".into());
        pod.annotations
            .insert("checksum/config".into(), "stale".into());
        let mut own = pod.topology_spread_constraints[0].clone();
        own.label_selector = Some(Default::default());
        pod.topology_spread_constraints.push(own);
        let rendered = render(&server, &SecretData::new(), &options()).unwrap();
        let dovecot = rendered.mailboxes.unwrap().stateful_set;
        for (set, name) in [(&rendered.stateful_set, "posthorn"), (&dovecot, "dovecot")] {
            let template = &set.spec.template;
            let metadata = template.metadata.as_ref().unwrap();
            let labels = metadata.labels.as_ref().unwrap();
            assert_eq!(labels["app.kubernetes.io/name"], name);
            assert_eq!(labels["example.com/team"], "mail");
            // What validate() refuses is exactly what the operator sets.
            let ours: std::collections::BTreeSet<&str> = labels
                .keys()
                .map(String::as_str)
                .filter(|k| *k != "example.com/team")
                .collect();
            assert_eq!(ours, crate::api::OPERATOR_LABELS.into());
            let annotations = metadata.annotations.as_ref().unwrap();
            assert_ne!(annotations["checksum/config"], "stale");
            assert_eq!(annotations["example.com/owner"], "mail-team");
            let spread = template
                .spec
                .as_ref()
                .unwrap()
                .topology_spread_constraints
                .as_ref()
                .unwrap();
            let selected = spread[0].label_selector.as_ref().unwrap();
            assert_eq!(
                selected.match_labels.as_ref().unwrap()["app.kubernetes.io/name"],
                name
            );
            assert_eq!(spread[1].label_selector, Some(Default::default()));
        }
    }
}

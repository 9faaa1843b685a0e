//! Scale-down drain, the operator's side, as pure decisions (`operator/pods.rs` does the
//! reading and writing). When `spec.replicas` drops below the StatefulSet's replicas, the
//! pods that will go (the highest ordinals) are annotated `posthorn.io/drain-to` with the
//! handover addresses of ready pods that stay; the StatefulSet keeps its replicas until
//! every leaving pod's `/drain` says `drained`, and only then is lowered.
//!
//! Everything is derived from the cluster on each reconcile, so an operator restart
//! mid-drain carries on: the StatefulSet's replicas say a drain is under way, the pods'
//! annotations and `/drain` say how far it is, and the Draining condition's
//! lastTransitionTime says since when.
//!
//! A drain that takes longer than [`DRAIN_TIMEOUT`] is reported (reason `DrainTimeout`)
//! but not cut short: a leaving pod that cannot hand over keeps delivering and keeps its
//! queue, whereas lowering the replicas would leave that mail on a claim no server reads.

use std::time::Duration;

use jiff::Timestamp;

use super::status::Cond;
use crate::api::MailServerStatus;
use crate::handover::drain::{DrainState, Progress};
use crate::mail::HANDOVER_POD_PORT;

/// How long a drain may take before the Draining condition says `DrainTimeout`.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// One pod of the StatefulSet, as the drain needs it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodView {
    pub name: String,
    pub ordinal: i32,
    pub ip: Option<String>,
    pub ready: bool,
    /// Being deleted: it no longer counts, whatever it says.
    pub terminating: bool,
    /// Its `posthorn.io/drain-to` annotation.
    pub drain_to: Option<String>,
    /// Its `/drain` answer, when it gave one.
    pub progress: Option<Progress>,
}

impl PodView {
    fn state(&self) -> Option<DrainState> {
        self.progress.as_ref().map(|p| p.state)
    }
}

/// Whether the pod's `/drain` matters: it is leaving (`ordinal >= wanted`), or it stays
/// but is not ready or carries the annotation (it may have begun draining). A ready
/// pod that stays is not asked: a draining server fails its readiness probe.
pub fn worth_asking(pod: &PodView, wanted: i32) -> bool {
    !pod.terminating && (pod.ordinal >= wanted || !pod.ready || pod.drain_to.is_some())
}

/// Whether the drain under way (the Draining condition True in `status`) began more than
/// [`DRAIN_TIMEOUT`] before `now`.
pub fn overdue(status: Option<&MailServerStatus>, now: Timestamp) -> bool {
    status
        .into_iter()
        .flat_map(|s| &s.conditions)
        .find(|c| c.type_ == "Draining" && c.status == "True")
        .and_then(|c| now.duration_since(c.last_transition_time.0).try_into().ok())
        .is_some_and(|elapsed: Duration| elapsed > DRAIN_TIMEOUT)
}

/// What the reconcile does about the pods and the StatefulSet's replicas.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The StatefulSet's replicas to apply.
    pub replicas: i32,
    /// Pods to annotate: (name, `drain-to` value).
    pub annotate: Vec<(String, String)>,
    /// Pods that stay but carry the annotation: it is removed.
    pub unannotate: Vec<String>,
    /// Pods that stay but have begun draining (a scale back up came too late): a server
    /// does not return from a drain, so they are deleted and come back serving, on the
    /// same claim.
    pub restart: Vec<String>,
    /// The Draining condition; `status` is true while a drain holds the replicas.
    pub condition: Cond,
}

/// The Draining condition when no pod goes away.
pub fn not_draining() -> Cond {
    Cond::new("Draining", false, "NoScaleDown", "no pod is going away")
}

/// The drain step for `wanted` replicas (the spec) against the StatefulSet's `current`
/// replicas (None: no StatefulSet yet), `pods` its pods, `overdue` whether the drain has
/// run longer than [`DRAIN_TIMEOUT`].
pub fn decide(wanted: i32, current: Option<i32>, pods: &[PodView], overdue: bool) -> Decision {
    let (restart, unannotate) = stop_draining(wanted, pods);
    let mut decision = Decision {
        replicas: wanted,
        annotate: Vec::new(),
        unannotate,
        restart,
        condition: not_draining(),
    };
    let Some(current) = current.filter(|&current| current > wanted) else {
        return decision;
    };
    if wanted == 0 {
        decision.condition = Cond::new(
            "Draining",
            false,
            "ScaledToZero",
            "spec.replicas is 0: no pod stays to take a queue; each pod delivers what it can \
             on SIGTERM and keeps the rest on its claim",
        );
        return decision;
    }
    decision.replicas = current;
    let live = |p: &&PodView| !p.terminating;
    let peers: Vec<String> = pods
        .iter()
        .filter(live)
        .filter(|p| p.ordinal < wanted && p.ready && p.drain_to.is_none())
        .filter(|p| matches!(p.state(), None | Some(DrainState::Serving)))
        .filter_map(|p| p.ip.as_ref())
        .map(|ip| format!("{ip}:{HANDOVER_POD_PORT}"))
        .collect();
    let leaving: Vec<&PodView> = (wanted..current)
        .filter_map(|ordinal| pods.iter().filter(live).find(|p| p.ordinal == ordinal))
        .collect();
    if !peers.is_empty() {
        let to = peers.join(",");
        decision.annotate = leaving
            .iter()
            .filter(|p| p.drain_to.is_none())
            .map(|p| (p.name.clone(), to.clone()))
            .collect();
    }
    let drained = leaving
        .iter()
        .filter(|p| p.state() == Some(DrainState::Drained))
        .count();
    let total = usize::try_from(current - wanted).unwrap_or(0);
    if drained == total {
        decision.replicas = wanted;
        return decision;
    }
    let queued: u64 = leaving
        .iter()
        .filter_map(|p| p.progress.as_ref())
        .map(|p| p.queued)
        .sum();
    let mut message = format!("{drained}/{total} pods drained, {queued} messages left");
    if peers.is_empty() {
        message.push_str("; waiting for a ready pod that stays to take the queues");
    }
    if let Some(error) = leaving
        .iter()
        .find_map(|p| p.progress.as_ref()?.error.as_deref())
    {
        message.push_str(&format!("; last handover error: {error}"));
    }
    decision.condition = if overdue {
        let minutes = DRAIN_TIMEOUT.as_secs() / 60;
        Cond::new(
            "Draining",
            true,
            "DrainTimeout",
            format!(
                "{message}; not done after {minutes} minutes: the leaving pods keep their \
                 queues and keep trying (to give up, scale the StatefulSet by hand; its \
                 claims are kept)"
            ),
        )
    } else {
        Cond::new("Draining", true, "ScaleDownDrain", message)
    };
    decision
}

/// Pods that stay but were told to drain: (to restart, to unannotate).
fn stop_draining(wanted: i32, pods: &[PodView]) -> (Vec<String>, Vec<String>) {
    let staying = || {
        pods.iter()
            .filter(move |p| p.ordinal < wanted && !p.terminating)
    };
    let restart = staying()
        .filter(|p| matches!(p.state(), Some(DrainState::Draining | DrainState::Drained)))
        .map(|p| p.name.clone())
        .collect();
    let unannotate = staying()
        .filter(|p| p.drain_to.is_some())
        .map(|p| p.name.clone())
        .collect();
    (restart, unannotate)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ordinal: i32, state: DrainState, queued: u64) -> PodView {
        PodView {
            name: format!("mail-{ordinal}"),
            ordinal,
            ip: Some(format!("10.0.0.{}", ordinal + 1)),
            ready: state == DrainState::Serving,
            terminating: false,
            drain_to: (state != DrainState::Serving).then(|| "10.0.0.1:5999".into()),
            progress: Some(Progress {
                state,
                queued,
                ..Progress::default()
            }),
        }
    }

    fn serving(ordinal: i32) -> PodView {
        pod(ordinal, DrainState::Serving, 0)
    }

    #[test]
    fn no_scale_down_changes_nothing() {
        let pods = [serving(0), serving(1)];
        for current in [None, Some(2), Some(1)] {
            let d = decide(2, current, &pods, false);
            assert_eq!(d.replicas, 2);
            assert!(d.annotate.is_empty() && d.unannotate.is_empty() && d.restart.is_empty());
            assert_eq!(
                (d.condition.is_true(), d.condition.reason.as_str()),
                (false, "NoScaleDown")
            );
        }
    }

    #[test]
    fn leaving_pods_are_told_where_to_drain_and_the_replicas_held() {
        let pods = [serving(0), serving(1), serving(2)];
        let d = decide(1, Some(3), &pods, false);
        assert_eq!(d.replicas, 3, "held while the pods drain");
        let to = "10.0.0.1:5999".to_string();
        assert_eq!(
            d.annotate,
            [("mail-1".into(), to.clone()), ("mail-2".into(), to)]
        );
        assert_eq!(
            d.condition,
            Cond::new(
                "Draining",
                true,
                "ScaleDownDrain",
                "0/2 pods drained, 0 messages left"
            )
        );

        // Every pod that stays and is ready is a peer.
        let d = decide(2, Some(3), &pods, false);
        assert_eq!(
            d.annotate,
            [("mail-2".into(), "10.0.0.1:5999,10.0.0.2:5999".into())]
        );
    }

    #[test]
    fn progress_is_reported_and_an_annotated_pod_is_not_patched_again() {
        let mut draining = pod(2, DrainState::Draining, 7);
        draining.progress.as_mut().unwrap().error = Some("10.0.0.1:5999: refused".into());
        let pods = [serving(0), pod(1, DrainState::Drained, 0), draining];
        let d = decide(1, Some(3), &pods, false);
        assert_eq!(d.replicas, 3);
        assert!(d.annotate.is_empty(), "{d:?}");
        assert_eq!(
            d.condition.message,
            "1/2 pods drained, 7 messages left; last handover error: 10.0.0.1:5999: refused"
        );
    }

    #[test]
    fn the_replicas_drop_once_every_leaving_pod_is_drained() {
        let pods = [
            serving(0),
            pod(1, DrainState::Drained, 0),
            pod(2, DrainState::Drained, 0),
        ];
        let d = decide(1, Some(3), &pods, false);
        assert_eq!(d.replicas, 1);
        assert!(!d.condition.is_true());
    }

    #[test]
    fn a_leaving_pod_that_is_missing_or_silent_holds_the_drain() {
        let silent = PodView {
            progress: None,
            ..pod(2, DrainState::Draining, 0)
        };
        for pods in [
            vec![serving(0), pod(1, DrainState::Drained, 0)],
            vec![serving(0), pod(1, DrainState::Drained, 0), silent],
        ] {
            let d = decide(1, Some(3), &pods, false);
            assert_eq!(d.replicas, 3, "{pods:?}");
            assert_eq!(d.condition.message, "1/2 pods drained, 0 messages left");
        }
    }

    #[test]
    fn without_a_ready_pod_that_stays_nobody_is_annotated() {
        let starting = PodView {
            ready: false,
            ..serving(0)
        };
        let d = decide(1, Some(2), &[starting, serving(1)], false);
        assert!(d.annotate.is_empty());
        assert_eq!(d.replicas, 2);
        assert_eq!(
            d.condition.message,
            "0/1 pods drained, 0 messages left; waiting for a ready pod that stays to take the queues"
        );
    }

    #[test]
    fn an_overdue_drain_is_a_timeout_and_still_holds() {
        let pods = [serving(0), pod(1, DrainState::Draining, 3)];
        let d = decide(1, Some(2), &pods, true);
        assert_eq!(
            d.replicas, 2,
            "the leaving pod keeps its queue and its server"
        );
        assert_eq!(
            (d.condition.is_true(), d.condition.reason.as_str()),
            (true, "DrainTimeout")
        );
        assert!(
            d.condition
                .message
                .starts_with("0/1 pods drained, 3 messages left; not done after 15 minutes"),
            "{}",
            d.condition.message
        );
    }

    #[test]
    fn a_drain_is_overdue_after_the_timeout() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
        let since = Timestamp::from_second(1_000_000).unwrap();
        let status = |type_: &str, value: &str| MailServerStatus {
            conditions: vec![Condition {
                type_: type_.into(),
                status: value.into(),
                reason: "ScaleDownDrain".into(),
                message: String::new(),
                observed_generation: None,
                last_transition_time: Time(since),
            }],
            ..MailServerStatus::default()
        };
        let after = |d: Duration| since + d;
        let draining = status("Draining", "True");
        assert!(!overdue(Some(&draining), after(DRAIN_TIMEOUT)));
        assert!(overdue(
            Some(&draining),
            after(DRAIN_TIMEOUT + Duration::from_secs(1))
        ));
        let late = after(DRAIN_TIMEOUT * 2);
        assert!(!overdue(Some(&status("Draining", "False")), late));
        assert!(!overdue(Some(&status("Ready", "True")), late));
        assert!(!overdue(None, late));
    }

    #[test]
    fn only_pods_that_may_drain_are_asked() {
        let ready = serving(0);
        assert!(!worth_asking(&ready, 1));
        assert!(worth_asking(&ready, 0), "leaving");
        let annotated = PodView {
            drain_to: Some("x:1".into()),
            ..serving(0)
        };
        assert!(worth_asking(&annotated, 1));
        let unready = PodView {
            ready: false,
            ..serving(0)
        };
        assert!(worth_asking(&unready, 1));
        let going = PodView {
            terminating: true,
            ..unready
        };
        assert!(!worth_asking(&going, 1));
    }

    #[test]
    fn scaling_to_zero_does_not_drain() {
        let d = decide(0, Some(2), &[serving(0), serving(1)], false);
        assert_eq!(d.replicas, 0);
        assert!(d.annotate.is_empty());
        assert_eq!(
            (d.condition.is_true(), d.condition.reason.as_str()),
            (false, "ScaledToZero")
        );
    }

    #[test]
    fn a_scale_back_up_mid_drain_stops_it() {
        // 3 → 1 began: mail-1 drained, mail-2 annotated but not yet draining. Back to 3.
        let mut annotated = serving(2);
        annotated.drain_to = Some("10.0.0.1:5999".into());
        let pods = [serving(0), pod(1, DrainState::Drained, 0), annotated];
        let d = decide(3, Some(3), &pods, false);
        assert_eq!(d.replicas, 3);
        assert_eq!(d.unannotate, ["mail-1", "mail-2"]);
        assert_eq!(
            d.restart,
            ["mail-1"],
            "only a pod that began draining restarts"
        );
        assert!(!d.condition.is_true());

        // A pod already on its way out is left alone.
        let mut going = pod(1, DrainState::Drained, 0);
        going.terminating = true;
        let d = decide(3, Some(3), &[serving(0), going], false);
        assert!(d.restart.is_empty() && d.unannotate.is_empty());
    }
}

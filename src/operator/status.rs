//! The MailServer's status: conditions a human can act on, computed from what the
//! reconcile saw, merged with the old ones so that an unchanged condition keeps its
//! lastTransitionTime (and an unchanged status is not written at all).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::{DnsRecord, Endpoints, MailServerStatus};

/// One condition before timestamps: type, status, reason, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cond {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl Cond {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &str,
        message: impl Into<String>,
    ) -> Cond {
        Cond {
            type_,
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// The status to write: `conditions` stamped with `generation`, keeping the old
/// lastTransitionTime of every condition whose status did not change.
pub fn build(
    old: Option<&MailServerStatus>,
    generation: Option<i64>,
    conditions: Vec<Cond>,
    ready_replicas: Option<i32>,
    dns_records: Vec<DnsRecord>,
    endpoints: Option<Endpoints>,
    now: Time,
) -> MailServerStatus {
    let old_conditions = old.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let conditions = conditions
        .into_iter()
        .map(|c| {
            let status = if c.status { "True" } else { "False" };
            let since = old_conditions
                .iter()
                .find(|o| o.type_ == c.type_ && o.status == status)
                .map(|o| o.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: c.type_.into(),
                status: status.into(),
                reason: c.reason,
                message: c.message,
                observed_generation: generation,
                last_transition_time: since,
            }
        })
        .collect();
    MailServerStatus {
        observed_generation: generation,
        conditions,
        ready_replicas,
        endpoints,
        dns_records,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Time {
        Time(jiff::Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn unchanged_conditions_keep_their_transition_time() {
        let conds = || {
            vec![
                Cond::new("Ready", false, "Progressing", "0 of 1 pods ready"),
                Cond::new("TLSReady", false, "SelfSigned", "self-signed"),
            ]
        };
        let first = build(None, Some(1), conds(), None, vec![], None, at(100));
        assert!(
            first
                .conditions
                .iter()
                .all(|c| c.last_transition_time == at(100))
        );

        let same = build(Some(&first), Some(1), conds(), None, vec![], None, at(200));
        assert_eq!(
            same, first,
            "nothing changed: identical status, nothing to write"
        );

        let mut changed = conds();
        changed[0] = Cond::new("Ready", true, "Available", "1 of 1 pods ready");
        let next = build(
            Some(&first),
            Some(2),
            changed,
            Some(1),
            vec![],
            None,
            at(300),
        );
        assert_eq!(next.conditions[0].last_transition_time, at(300));
        assert_eq!(next.conditions[1].last_transition_time, at(100));
        assert_eq!(next.conditions[1].observed_generation, Some(2));
        assert_eq!(next.observed_generation, Some(2));
    }
}

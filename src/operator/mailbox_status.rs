//! The `Mailboxes` condition: whether the managed Dovecot serves IMAP and takes
//! deliveries. Pure, like the other conditions in `status`; the mail server's Ready does
//! not depend on it (mail for a Dovecot that is down waits in the queue).

use super::status::{Cond, Phase, Rollout};
use crate::api::MailServerSpec;

const TYPE: &str = "Mailboxes";

/// The condition from the spec and the Dovecot StatefulSet as its controller reports it.
pub fn condition(spec: &MailServerSpec, rollout: &Rollout) -> Cond {
    let Some(dovecot) = spec.mailboxes.dovecot() else {
        return Cond::new(
            TYPE,
            false,
            "Disabled",
            "spec.mailboxes.dovecot is not enabled: nobody reads the local mail over IMAP",
        );
    };
    let wanted = dovecot.replicas;
    let Rollout { updated, ready, .. } = *rollout;
    match rollout.phase(wanted) {
        Phase::Unobserved => Cond::new(
            TYPE,
            false,
            "RollingOut",
            "waiting for the StatefulSet controller to act on the latest Dovecot spec",
        ),
        // Whatever pods are still stopping: none will serve.
        _ if wanted == 0 => Cond::new(
            TYPE,
            false,
            "ScaledToZero",
            "spec.mailboxes.dovecot.replicas is 0: no IMAP, and local mail waits in the queue",
        ),
        Phase::Updating => Cond::new(
            TYPE,
            false,
            "RollingOut",
            format!("Dovecot: {updated} of {wanted} pods updated, {ready} ready"),
        ),
        Phase::NotReady => Cond::new(
            TYPE,
            false,
            "NotReady",
            "the Dovecot pod is not ready: no IMAP, and local mail waits in the queue",
        ),
        Phase::Settled => Cond::new(TYPE, true, "Available", "Dovecot serves IMAP and LMTP"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(mailboxes: &str) -> MailServerSpec {
        serde_saphyr::from_str(&format!(
            "hostname: mail.example.com\ndomains: [example.com]\nusers: {{secretName: u}}\n{mailboxes}"
        ))
        .unwrap()
    }

    fn rollout(generation: i64, observed: i64, replicas: i32, updated: i32, ready: i32) -> Rollout {
        Rollout {
            generation,
            observed_generation: observed,
            replicas,
            updated,
            ready,
        }
    }

    fn state(spec: &MailServerSpec, rollout: Rollout) -> (bool, String) {
        let c = condition(spec, &rollout);
        assert_eq!(c.type_, "Mailboxes");
        (c.is_true(), c.reason)
    }

    #[test]
    fn true_only_when_the_dovecot_pod_is_ready_on_the_latest_spec() {
        let on = spec("mailboxes: {dovecot: {enabled: true}}");
        let cases = [
            (rollout(0, 0, 0, 0, 0), (false, "RollingOut")),
            (rollout(3, 2, 1, 1, 1), (false, "RollingOut")),
            (rollout(3, 3, 1, 0, 1), (false, "RollingOut")),
            (rollout(3, 3, 2, 1, 1), (false, "RollingOut")),
            (rollout(3, 3, 1, 1, 0), (false, "NotReady")),
            (rollout(3, 3, 1, 1, 1), (true, "Available")),
        ];
        for (rollout, (status, reason)) in cases {
            assert_eq!(
                state(&on, rollout),
                (status, reason.to_string()),
                "{rollout:?}"
            );
        }
        let stopped = spec("mailboxes: {dovecot: {enabled: true, replicas: 0}}");
        assert_eq!(
            state(&stopped, rollout(3, 3, 0, 0, 0)),
            (false, "ScaledToZero".into())
        );
    }

    #[test]
    fn disabled_whatever_runs() {
        for mailboxes in ["", "mailboxes: {dovecot: {enabled: false}}"] {
            assert_eq!(
                state(&spec(mailboxes), rollout(3, 3, 1, 1, 1)),
                (false, "Disabled".into())
            );
        }
    }
}

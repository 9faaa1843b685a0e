//! The MailServer's status: conditions a human can act on, computed from what the
//! reconcile saw, merged with the old ones so that an unchanged condition keeps its
//! lastTransitionTime (and an unchanged status is not written at all). Everything here
//! is pure; the controller does the reading and writing.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::dns_status::DnsEndpointSeen;
use super::render::{Names, Rendered, SecretData, SelfSignedReason, TlsPlan};
use crate::api::{
    DnsRecord, Endpoints, MailServer, MailServerSpec, MailServerStatus, QueueStorage, TlsSource,
};
use crate::mail::ListenerKind;
use crate::plan::DKIM_KEY;

/// A condition's status. Unknown: the operator cannot tell yet (a condition another
/// controller decides, such as DNSPublished, which ExternalDNS settles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CondStatus {
    True,
    False,
    Unknown,
}

impl CondStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CondStatus::True => "True",
            CondStatus::False => "False",
            CondStatus::Unknown => "Unknown",
        }
    }
}

impl From<bool> for CondStatus {
    fn from(value: bool) -> CondStatus {
        if value {
            CondStatus::True
        } else {
            CondStatus::False
        }
    }
}

/// One condition before timestamps: type, status, reason, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cond {
    pub type_: &'static str,
    pub status: CondStatus,
    pub reason: String,
    pub message: String,
}

impl Cond {
    pub fn new(
        type_: &'static str,
        status: impl Into<CondStatus>,
        reason: &str,
        message: impl Into<String>,
    ) -> Cond {
        Cond {
            type_,
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
        }
    }

    pub fn is_true(&self) -> bool {
        self.status == CondStatus::True
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
            let status = c.status.as_str();
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

/// Whether `status` has the condition `type_` with `reason`.
pub fn has_reason(status: Option<&MailServerStatus>, type_: &str, reason: &str) -> bool {
    status
        .into_iter()
        .flat_map(|s| &s.conditions)
        .any(|c| c.type_ == type_ && c.reason == reason)
}

/// Names of the Secrets a MailServer reads but does not own.
pub fn referenced_secrets(server: &MailServer) -> Vec<String> {
    let spec = &server.spec;
    let mut names = vec![spec.users.secret_name.clone()];
    match spec.tls_source() {
        TlsSource::Secret(name) => {
            names.push(name.into());
            names.extend(spec.tls.as_ref().and_then(|t| t.ecdsa_secret_name.clone()));
        }
        TlsSource::Issuer(_) => {
            let names_of = Names::new(server);
            names.extend([
                names_of.issued_tls_secret(),
                names_of.issued_ecdsa_tls_secret(),
            ]);
        }
        TlsSource::SelfSigned => {}
    }
    names.extend(spec.dkim.user_secret().map(String::from));
    names.extend(spec.dkim.ed25519_user_secret().map(String::from));
    names.extend(
        spec.relay
            .as_ref()
            .and_then(|r| r.credentials_secret.clone()),
    );
    names
}

/// Where clients reach the server, as the status reports it.
pub fn endpoints(server: &MailServer) -> Endpoints {
    let spec = &server.spec;
    let at = |port: u16| format!("{}:{port}", spec.hostname);
    let endpoint = |kind| spec.service_port(kind).map(at);
    Endpoints {
        submission: endpoint(ListenerKind::Submission),
        submissions: endpoint(ListenerKind::Submissions),
        smtp: endpoint(ListenerKind::Smtp),
    }
}

/// The conditions when `validate` rejects the spec: nothing is rendered or applied.
/// Stalled (kstatus) tells Flux and Argo CD at once that only a spec change helps.
pub fn invalid_spec(problems: &[String]) -> Vec<Cond> {
    let message = format!("the spec is invalid: {}", problems.join("; "));
    vec![
        Cond::new(
            "Ready",
            false,
            "InvalidSpec",
            "the spec is invalid; see Degraded",
        ),
        Cond::new("Degraded", true, "InvalidSpec", message.clone()),
        Cond::new("Stalled", true, "InvalidSpec", message),
    ]
}

/// The conditions when the spec passes `validate` but yields no server config.
pub fn render_failed(error: &anyhow::Error) -> Vec<Cond> {
    let message = format!("cannot build the server config: {error:#}");
    vec![
        Cond::new("Ready", false, "InvalidSpec", "see Degraded"),
        Cond::new("Degraded", true, "RenderFailed", message.clone()),
        Cond::new("Stalled", true, "RenderFailed", message),
    ]
}

/// The StatefulSet as its controller reports it (all zero while it does not exist).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rollout {
    pub generation: i64,
    /// The generation its controller has acted on.
    pub observed_generation: i64,
    /// Pods that exist, of any revision.
    pub replicas: i32,
    /// Pods of the latest revision.
    pub updated: i32,
    pub ready: i32,
}

impl Rollout {
    pub fn of(stateful_set: Option<&StatefulSet>) -> Rollout {
        let Some(set) = stateful_set else {
            return Rollout::default();
        };
        let status = set.status.clone().unwrap_or_default();
        Rollout {
            generation: set.metadata.generation.unwrap_or(0),
            observed_generation: status.observed_generation.unwrap_or(0),
            replicas: status.replicas,
            updated: status.updated_replicas.unwrap_or(0),
            ready: status.ready_replicas.unwrap_or(0),
        }
    }

    /// Where a rollout to `wanted` pods stands, in kstatus terms.
    pub fn phase(&self, wanted: i32) -> Phase {
        if self.generation == 0 || self.observed_generation < self.generation {
            Phase::Unobserved
        } else if self.updated < wanted || self.replicas > wanted {
            Phase::Updating
        } else if self.ready < wanted {
            Phase::NotReady
        } else {
            Phase::Settled
        }
    }
}

/// [`Rollout::phase`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The StatefulSet's controller has not acted on its latest spec yet.
    Unobserved,
    /// Pods of an older revision, or more pods than wanted, are left.
    Updating,
    /// Every wanted pod is of the latest revision, not all are ready.
    NotReady,
    /// Every wanted pod is of the latest revision and ready, and no other is left.
    Settled,
}

/// What the reconcile read from the cluster.
pub struct Observed<'a> {
    /// Data of the referenced Secrets that exist.
    pub secrets: &'a SecretData,
    /// Referenced Secrets that do not exist.
    pub missing: &'a [String],
    pub rollout: Rollout,
    /// The Draining condition ([`super::drain`]).
    pub draining: Cond,
    /// The managed Dovecot's StatefulSet (all zero without one).
    pub mailboxes: Rollout,
    /// Objects of our names that belong to something else ("Service mail").
    pub not_ours: &'a [String],
    /// The DNSEndpoint applied for the MailServer, as it is now (None: none applied).
    pub dns_endpoint: Option<DnsEndpointSeen>,
}

/// The conditions of a rendered and applied MailServer: Ready, TLSReady, DNSPublished,
/// Degraded, Draining, Mailboxes and Stalled (False: what is wrong, if anything, can
/// resolve without a spec change), in that order.
pub fn conditions(server: &MailServer, rendered: &Rendered, observed: &Observed) -> Vec<Cond> {
    let mut problems = input_problems(&server.spec, observed);
    let tls = tls_condition(rendered, observed.secrets);
    if tls.reason == "SecretMissing"
        && let Some(missing) = missing_tls_secret(rendered, observed.secrets)
    {
        problems.push(format!(
            "TLS Secret {missing:?} not found or without tls.crt and tls.key"
        ));
    }
    let ephemeral = server.spec.queue.storage == QueueStorage::EmptyDir;
    let degraded = degraded_condition(&problems, observed.not_ours, ephemeral);
    problems.extend(observed.not_ours.iter().map(|o| format!("{o} is not ours")));
    let ready = if observed.draining.is_true() && problems.is_empty() {
        Cond::new(
            "Ready",
            false,
            "Draining",
            "pods going away hand their queues over; see Draining",
        )
    } else {
        ready_condition(&problems, &observed.rollout, server.spec.replicas)
    };
    vec![
        ready,
        tls,
        super::dns_status::condition(server, rendered, observed.dns_endpoint),
        degraded,
        observed.draining.clone(),
        super::mailbox_status::condition(&server.spec, &observed.mailboxes),
        Cond::new("Stalled", false, "AsExpected", "the spec is valid"),
    ]
}

/// What is wrong with the Secrets the spec names (the TLS Secret aside).
fn input_problems(spec: &MailServerSpec, observed: &Observed) -> Vec<String> {
    let mut problems = Vec::new();
    let users = &spec.users;
    if observed.missing.contains(&users.secret_name) {
        problems.push(format!(
            "users Secret {:?} not found: create it with a key {:?} holding Dovecot passwd-file lines",
            users.secret_name, users.key
        ));
    } else if !observed
        .secrets
        .get(&users.secret_name)
        .is_some_and(|s| s.contains_key(&users.key))
    {
        problems.push(format!(
            "users Secret {:?} has no key {:?}",
            users.secret_name, users.key
        ));
    }
    if let Some(credentials) = spec
        .relay
        .as_ref()
        .and_then(|r| r.credentials_secret.as_ref())
        && observed.missing.contains(credentials)
    {
        problems.push(format!(
            "relay credentials Secret {credentials:?} not found"
        ));
    }
    for dkim in [spec.dkim.user_secret(), spec.dkim.ed25519_user_secret()] {
        if let Some(dkim) = dkim
            && !observed
                .secrets
                .get(dkim)
                .is_some_and(|s| s.contains_key(DKIM_KEY))
        {
            problems.push(format!(
                "DKIM Secret {dkim:?} not found or without key {DKIM_KEY:?}"
            ));
        }
    }
    problems
}

/// The first of the certificate Secrets (the main one, the ECDSA one) that does not
/// exist or lacks `tls.crt` or `tls.key`.
fn missing_tls_secret<'a>(rendered: &'a Rendered, secrets: &SecretData) -> Option<&'a str> {
    std::iter::once(&rendered.tls_secret)
        .chain(&rendered.tls_ecdsa_secret)
        .find(|name| {
            !secrets
                .get(*name)
                .is_some_and(|s| s.contains_key("tls.crt") && s.contains_key("tls.key"))
        })
        .map(String::as_str)
}

fn tls_condition(rendered: &Rendered, secrets: &SecretData) -> Cond {
    let missing = missing_tls_secret(rendered, secrets);
    let present = missing.is_none();
    let (secret, s) = match (missing, &rendered.tls_ecdsa_secret) {
        (Some(missing), _) => (missing.to_string(), ""),
        (None, Some(ecdsa)) => (format!("{} and {ecdsa}", rendered.tls_secret), "s"),
        (None, None) => (rendered.tls_secret.clone(), ""),
    };
    match &rendered.tls {
        TlsPlan::UserSecret if present => Cond::new(
            "TLSReady",
            true,
            "SecretProvided",
            format!("certificate{s} from Secret{s} {secret}"),
        ),
        TlsPlan::UserSecret => Cond::new(
            "TLSReady",
            false,
            "SecretMissing",
            format!("TLS Secret {secret} not found or incomplete"),
        ),
        TlsPlan::CertManager if present => Cond::new(
            "TLSReady",
            true,
            "Issued",
            format!("certificate{s} issued by cert-manager into Secret{s} {secret}"),
        ),
        TlsPlan::CertManager => Cond::new(
            "TLSReady",
            false,
            "Issuing",
            format!("waiting for cert-manager to issue the certificate into Secret {secret}"),
        ),
        TlsPlan::SelfSigned {
            because: SelfSignedReason::NoSource,
        } => Cond::new(
            "TLSReady",
            false,
            "SelfSigned",
            "serving a generated self-signed certificate: clients will not trust it; set spec.tls.secretName or spec.tls.issuerRef",
        ),
        TlsPlan::SelfSigned {
            because: SelfSignedReason::CertManagerMissing,
        } => Cond::new(
            "TLSReady",
            false,
            "CertManagerMissing",
            "spec.tls.issuerRef is set but cert-manager's Certificate CRD is not installed: serving a self-signed certificate meanwhile",
        ),
    }
}

/// Objects of our names that belong to something else first (nothing is written to
/// them), then missing inputs; else an explicitly ephemeral queue, which works but loses
/// queued mail with its pod.
fn degraded_condition(problems: &[String], not_ours: &[String], ephemeral_queue: bool) -> Cond {
    if !not_ours.is_empty() {
        Cond::new(
            "Degraded",
            true,
            "Conflict",
            format!(
                "{} already exists and is not owned by this MailServer, so it is left alone: \
                 remove or rename it, or annotate it {}=true to let the operator take it over",
                not_ours.join(", "),
                super::apply::ADOPT_ANNOTATION
            ),
        )
    } else if !problems.is_empty() {
        Cond::new("Degraded", true, "MissingInput", problems.join("; "))
    } else if ephemeral_queue {
        Cond::new(
            "Degraded",
            true,
            "EphemeralQueue",
            "spec.queue.storage is EmptyDir: mail still queued when a pod goes away is lost; \
             use PersistentVolumeClaim (the default) to keep it",
        )
    } else {
        Cond::new(
            "Degraded",
            false,
            "AsExpected",
            "every referenced Secret is present",
        )
    }
}

/// Ready in kstatus terms: True only when the StatefulSet's controller has acted on its
/// latest spec and every wanted pod is of the latest revision and ready, with no old pod
/// left. `replicas: 0` is Ready (ScaledToZero) once no pod is left: the state asked for
/// is reached, though nothing accepts mail.
fn ready_condition(problems: &[String], rollout: &Rollout, wanted: i32) -> Cond {
    let Rollout {
        replicas,
        updated,
        ready,
        ..
    } = *rollout;
    if !problems.is_empty() {
        return Cond::new("Ready", false, "Degraded", "see Degraded");
    }
    match rollout.phase(wanted) {
        Phase::Unobserved => Cond::new(
            "Ready",
            false,
            "RollingOut",
            "waiting for the StatefulSet controller to act on the latest spec",
        ),
        Phase::Settled if wanted == 0 => Cond::new(
            "Ready",
            true,
            "ScaledToZero",
            "spec.replicas is 0: no pods run and no mail is accepted",
        ),
        Phase::Updating => Cond::new(
            "Ready",
            false,
            "RollingOut",
            format!("{updated} of {wanted} pods updated, {ready} ready, {replicas} running"),
        ),
        Phase::NotReady => Cond::new(
            "Ready",
            false,
            "Progressing",
            format!("{ready} of {wanted} pods ready"),
        ),
        Phase::Settled => Cond::new(
            "Ready",
            true,
            "Available",
            format!("{ready} of {wanted} pods ready"),
        ),
    }
}

/// The Deployment of an operator before the StatefulSet, owned by this MailServer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OldDeployment {
    /// spec.replicas.
    pub wanted: i32,
    /// Pods its controller still counts (status.replicas), once it has seen its spec.
    pub pods: i32,
    pub observed: bool,
}

impl OldDeployment {
    pub fn of(deployment: &Deployment) -> OldDeployment {
        let status = deployment.status.clone().unwrap_or_default();
        OldDeployment {
            wanted: deployment.spec.replicas.unwrap_or(1),
            pods: status.replicas.unwrap_or(0),
            observed: status.observed_generation >= deployment.metadata.generation,
        }
    }
}

/// The next step of moving from an old Deployment to the StatefulSet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Migration {
    /// Leave it serving: the StatefulSet is not Ready, or its pods are still stopping.
    Keep,
    /// Scale it to 0: its pods get SIGTERM and deliver what they can.
    ScaleToZero,
    /// Delete it: no pod of it is left.
    Delete,
}

pub fn migration(old: &OldDeployment, stateful_set_ready: bool) -> Migration {
    if !stateful_set_ready {
        Migration::Keep
    } else if old.wanted > 0 {
        Migration::ScaleToZero
    } else if old.observed && old.pods == 0 {
        Migration::Delete
    } else {
        Migration::Keep
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::render::testing::{edge_case_secrets, load, options};
    use super::super::render::{self, RenderOptions};
    use super::*;

    /// The four conditions for `server` rendered with `options` and these Secrets.
    fn conds_with(
        server: &MailServer,
        options: &RenderOptions,
        secrets: &SecretData,
        missing: &[&str],
        ready: i32,
    ) -> Vec<Cond> {
        let rendered = render::render(server, secrets, options).unwrap();
        let missing: Vec<String> = missing.iter().map(|m| m.to_string()).collect();
        let wanted = server.spec.replicas;
        let observed = Observed {
            secrets,
            missing: &missing,
            rollout: settled(wanted, ready),
            draining: idle(),
            mailboxes: Rollout::default(),
            not_ours: &[],
            dns_endpoint: None,
        };
        conditions(server, &rendered, &observed)
    }

    /// The Draining condition when no pod goes away.
    fn idle() -> Cond {
        Cond::new("Draining", false, "NoScaleDown", "no pod is going away")
    }

    /// A StatefulSet whose controller is done with `wanted` pods, `ready` of them ready.
    fn settled(wanted: i32, ready: i32) -> Rollout {
        Rollout {
            generation: 2,
            observed_generation: 2,
            replicas: wanted,
            updated: wanted,
            ready,
        }
    }

    fn find<'a>(conds: &'a [Cond], type_: &str) -> &'a Cond {
        conds.iter().find(|c| c.type_ == type_).unwrap()
    }

    /// (status, reason) of one condition.
    fn state(conds: &[Cond], type_: &str) -> (bool, String) {
        let c = find(conds, type_);
        (c.is_true(), c.reason.clone())
    }

    fn secret(keys: &[&str]) -> BTreeMap<String, Vec<u8>> {
        keys.iter()
            .map(|k| (k.to_string(), b"x".to_vec()))
            .collect()
    }

    /// The typical example with its users Secret and generated TLS and DKIM Secrets.
    fn typical_secrets() -> SecretData {
        SecretData::from([
            ("mail-users".to_string(), secret(&["passwd"])),
            (
                "mail-tls-self-signed".to_string(),
                secret(&["tls.crt", "tls.key"]),
            ),
            ("mail-dkim".to_string(), secret(&[DKIM_KEY])),
        ])
    }

    #[test]
    fn ready_counts_pods_and_waits_for_inputs() {
        let server = load("examples/mailserver.yaml");
        let secrets = typical_secrets();
        let conds = conds_with(&server, &options(), &secrets, &[], 1);
        assert_eq!(state(&conds, "Ready"), (true, "Available".into()));
        assert_eq!(find(&conds, "Ready").message, "1 of 1 pods ready");
        let conds = conds_with(&server, &options(), &secrets, &[], 0);
        assert_eq!(state(&conds, "Ready"), (false, "Progressing".into()));
        assert_eq!(find(&conds, "Ready").message, "0 of 1 pods ready");

        let mut no_users = secrets.clone();
        no_users.remove("mail-users");
        let conds = conds_with(&server, &options(), &no_users, &["mail-users"], 1);
        assert_eq!(state(&conds, "Ready"), (false, "Degraded".into()));
    }

    #[test]
    fn an_object_that_is_not_ours_is_a_conflict_and_not_ready() {
        let server = load("examples/mailserver.yaml");
        let secrets = typical_secrets();
        let rendered = render::render(&server, &secrets, &options()).unwrap();
        let not_ours = ["Service mail".to_string()];
        let observed = Observed {
            secrets: &secrets,
            missing: &[],
            rollout: settled(1, 1),
            draining: idle(),
            mailboxes: Rollout::default(),
            not_ours: &not_ours,
            dns_endpoint: None,
        };
        let conds = conditions(&server, &rendered, &observed);
        assert_eq!(state(&conds, "Degraded"), (true, "Conflict".into()));
        assert!(
            find(&conds, "Degraded")
                .message
                .starts_with("Service mail already exists and is not owned by this MailServer"),
            "{:?}",
            find(&conds, "Degraded")
        );
        assert_eq!(state(&conds, "Ready"), (false, "Degraded".into()));
        assert_eq!(state(&conds, "Stalled"), (false, "AsExpected".into()));
    }

    #[test]
    fn ready_is_false_while_pods_drain() {
        let server = load("examples/mailserver.yaml");
        let secrets = typical_secrets();
        let rendered = render::render(&server, &secrets, &options()).unwrap();
        let draining = Cond::new("Draining", true, "ScaleDownDrain", "0/2 pods drained");
        let observed = Observed {
            secrets: &secrets,
            missing: &[],
            // The StatefulSet is held at 3 pods, all ready, for a spec of 1.
            rollout: settled(3, 3),
            draining: draining.clone(),
            mailboxes: Rollout::default(),
            not_ours: &[],
            dns_endpoint: None,
        };
        let conds = conditions(&server, &rendered, &observed);
        assert_eq!(state(&conds, "Ready"), (false, "Draining".into()));
        assert_eq!(find(&conds, "Draining"), &draining);
        let done = Observed {
            rollout: settled(1, 1),
            draining: idle(),
            ..observed
        };
        let conds = conditions(&server, &rendered, &done);
        assert_eq!(state(&conds, "Ready"), (true, "Available".into()));
        assert_eq!(state(&conds, "Draining"), (false, "NoScaleDown".into()));
    }

    #[test]
    fn ready_only_when_the_rollout_is_done() {
        let ready = |rollout: Rollout, wanted: i32| {
            let c = ready_condition(&[], &rollout, wanted);
            (c.is_true(), c.reason)
        };
        let done = settled(3, 3);
        assert_eq!(ready(done, 3), (true, "Available".into()));
        let rolling = (false, "RollingOut".to_string());
        assert_eq!(ready(Rollout::default(), 3), rolling, "no StatefulSet yet");
        let unseen = Rollout {
            generation: 3,
            ..done
        };
        assert_eq!(ready(unseen, 3), rolling, "spec not yet observed");
        let updating = Rollout { updated: 2, ..done };
        assert_eq!(ready(updating, 3), rolling, "an old pod left");
        let shrinking = Rollout {
            replicas: 3,
            ..settled(1, 1)
        };
        assert_eq!(ready(shrinking, 1), rolling, "pods above the wanted count");
        let starting = Rollout { ready: 2, ..done };
        assert_eq!(ready(starting, 3), (false, "Progressing".into()));
        assert_eq!(ready(settled(0, 0), 0), (true, "ScaledToZero".into()));
        let stopping = Rollout {
            replicas: 1,
            ..settled(0, 0)
        };
        assert_eq!(ready(stopping, 0), rolling);
        let problems = ["users Secret missing".to_string()];
        let c = ready_condition(&problems, &done, 3);
        assert_eq!((c.is_true(), c.reason.as_str()), (false, "Degraded"));
    }

    #[test]
    fn an_ephemeral_queue_is_degraded_but_ready() {
        let mut server = load("examples/mailserver.yaml");
        server.spec.queue.storage = QueueStorage::EmptyDir;
        let conds = conds_with(&server, &options(), &typical_secrets(), &[], 1);
        assert_eq!(state(&conds, "Degraded"), (true, "EphemeralQueue".into()));
        assert_eq!(state(&conds, "Ready"), (true, "Available".into()));
        // A missing input is the more urgent news.
        let conds = conds_with(&server, &options(), &SecretData::new(), &["mail-users"], 1);
        assert_eq!(state(&conds, "Degraded"), (true, "MissingInput".into()));
    }

    #[test]
    fn the_old_deployment_goes_after_the_stateful_set_is_ready() {
        let serving = OldDeployment {
            wanted: 2,
            pods: 2,
            observed: true,
        };
        assert_eq!(migration(&serving, false), Migration::Keep);
        assert_eq!(migration(&serving, true), Migration::ScaleToZero);
        let draining = OldDeployment {
            wanted: 0,
            ..serving
        };
        assert_eq!(migration(&draining, true), Migration::Keep);
        let unseen = OldDeployment {
            wanted: 0,
            pods: 0,
            observed: false,
        };
        assert_eq!(migration(&unseen, true), Migration::Keep);
        let gone = OldDeployment {
            observed: true,
            ..unseen
        };
        assert_eq!(migration(&gone, true), Migration::Delete);
        assert_eq!(migration(&gone, false), Migration::Keep);
    }

    #[test]
    fn degraded_names_each_missing_input() {
        let server = load("examples/mailserver.yaml");
        let conds = conds_with(&server, &options(), &typical_secrets(), &[], 1);
        assert_eq!(state(&conds, "Degraded"), (false, "AsExpected".into()));

        let mut secrets = typical_secrets();
        secrets.remove("mail-users");
        let conds = conds_with(&server, &options(), &secrets, &["mail-users"], 1);
        assert_eq!(state(&conds, "Degraded"), (true, "MissingInput".into()));
        assert!(
            find(&conds, "Degraded")
                .message
                .starts_with("users Secret \"mail-users\" not found"),
            "{conds:?}"
        );

        let mut secrets = typical_secrets();
        secrets.insert("mail-users".into(), secret(&["other"]));
        let conds = conds_with(&server, &options(), &secrets, &[], 1);
        assert_eq!(
            find(&conds, "Degraded").message,
            "users Secret \"mail-users\" has no key \"passwd\""
        );

        let relay = load("examples/mailserver-relay.yaml");
        let mut secrets = typical_secrets();
        secrets.insert("mail-tls".into(), secret(&["tls.crt", "tls.key"]));
        let conds = conds_with(&relay, &options(), &secrets, &["relay-credentials"], 1);
        assert_eq!(
            find(&conds, "Degraded").message,
            "relay credentials Secret \"relay-credentials\" not found"
        );

        // The user's own DKIM Secret without its key, and the user's TLS Secret missing.
        let edge = load("src/operator/testdata/edge-cases.yaml");
        let mut secrets = edge_case_secrets();
        secrets.insert("submit-users".into(), secret(&["users.passwd"]));
        secrets.insert("submit-dkim".into(), secret(&["other"]));
        let conds = conds_with(&edge, &options(), &secrets, &["submit-cert"], 3);
        assert_eq!(
            find(&conds, "Degraded").message,
            "DKIM Secret \"submit-dkim\" not found or without key \"dkim.key\"; \
             TLS Secret \"submit-cert\" not found or without tls.crt and tls.key"
        );
    }

    #[test]
    fn tls_ready_follows_the_certificate_source() {
        let edge = load("src/operator/testdata/edge-cases.yaml");
        let mut secrets = edge_case_secrets();
        secrets.insert("submit-users".into(), secret(&["users.passwd"]));
        let conds = conds_with(&edge, &options(), &secrets, &["submit-cert"], 3);
        assert_eq!(state(&conds, "TLSReady"), (false, "SecretMissing".into()));
        secrets.insert("submit-cert".into(), secret(&["tls.crt", "tls.key"]));
        // The ECDSA certificate's Secret is needed too: the pods mount it.
        let conds = conds_with(&edge, &options(), &secrets, &["submit-cert-ecdsa"], 3);
        assert_eq!(state(&conds, "TLSReady"), (false, "SecretMissing".into()));
        assert_eq!(
            find(&conds, "Degraded").message,
            "TLS Secret \"submit-cert-ecdsa\" not found or without tls.crt and tls.key"
        );
        secrets.insert("submit-cert-ecdsa".into(), secret(&["tls.crt", "tls.key"]));
        let conds = conds_with(&edge, &options(), &secrets, &[], 3);
        assert_eq!(state(&conds, "TLSReady"), (true, "SecretProvided".into()));
        assert_eq!(
            find(&conds, "TLSReady").message,
            "certificates from Secrets submit-cert and submit-cert-ecdsa"
        );
        assert_eq!(state(&conds, "Ready"), (true, "Available".into()));

        let relay = load("examples/mailserver-relay.yaml");
        let mut secrets = typical_secrets();
        secrets.insert(
            "relay-credentials".into(),
            secret(&["username", "password"]),
        );
        let conds = conds_with(&relay, &options(), &secrets, &["mail-tls"], 1);
        assert_eq!(state(&conds, "TLSReady"), (false, "Issuing".into()));
        assert!(!find(&conds, "Degraded").is_true(), "issuing takes a while");
        secrets.insert("mail-tls".into(), secret(&["tls.crt", "tls.key"]));
        let conds = conds_with(&relay, &options(), &secrets, &["mail-tls-ecdsa"], 1);
        assert_eq!(state(&conds, "TLSReady"), (false, "Issuing".into()));
        secrets.insert("mail-tls-ecdsa".into(), secret(&["tls.crt", "tls.key"]));
        let conds = conds_with(&relay, &options(), &secrets, &[], 1);
        assert_eq!(state(&conds, "TLSReady"), (true, "Issued".into()));
        let no_cert_manager = RenderOptions {
            certificate_crd: false,
            ..options()
        };
        let conds = conds_with(&relay, &no_cert_manager, &secrets, &[], 1);
        assert_eq!(
            state(&conds, "TLSReady"),
            (false, "CertManagerMissing".into())
        );

        let typical = load("examples/mailserver.yaml");
        let conds = conds_with(&typical, &options(), &typical_secrets(), &[], 1);
        assert_eq!(state(&conds, "TLSReady"), (false, "SelfSigned".into()));
    }

    #[test]
    fn unrenderable_specs_are_degraded_and_not_ready() {
        let conds = invalid_spec(&["a".into(), "b".into()]);
        assert_eq!(state(&conds, "Ready"), (false, "InvalidSpec".into()));
        assert_eq!(state(&conds, "Degraded"), (true, "InvalidSpec".into()));
        assert_eq!(state(&conds, "Stalled"), (true, "InvalidSpec".into()));
        assert_eq!(
            find(&conds, "Degraded").message,
            "the spec is invalid: a; b"
        );
        let conds = render_failed(&anyhow::anyhow!("no listener"));
        assert_eq!(state(&conds, "Degraded"), (true, "RenderFailed".into()));
        assert_eq!(state(&conds, "Stalled"), (true, "RenderFailed".into()));
        assert_eq!(
            find(&conds, "Degraded").message,
            "cannot build the server config: no listener"
        );
    }

    #[test]
    fn referenced_secrets_and_endpoints_follow_the_spec() {
        let relay = load("examples/mailserver-relay.yaml");
        assert_eq!(
            referenced_secrets(&relay),
            [
                "mail-users",
                "mail-tls",
                "mail-tls-ecdsa",
                "relay-credentials"
            ]
        );
        let edge = load("src/operator/testdata/edge-cases.yaml");
        assert_eq!(
            referenced_secrets(&edge),
            [
                "submit-users",
                "submit-cert",
                "submit-cert-ecdsa",
                "submit-dkim",
                "submit-dkim-ed25519"
            ]
        );
        let typical = endpoints(&load("examples/mailserver.yaml"));
        assert_eq!(typical.submission.as_deref(), Some("mail.example.com:587"));
        assert_eq!(typical.submissions.as_deref(), Some("mail.example.com:465"));
        assert_eq!(typical.smtp.as_deref(), Some("mail.example.com:25"));
    }

    fn at(seconds: i64) -> Time {
        Time(jiff::Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn has_reason_looks_at_one_condition() {
        let conds = vec![
            Cond::new("Ready", false, "Draining", "see Draining"),
            Cond::new("Draining", true, "DrainTimeout", "0/1 pods drained"),
        ];
        let status = build(None, Some(1), conds, None, vec![], None, at(100));
        assert!(has_reason(Some(&status), "Draining", "DrainTimeout"));
        assert!(!has_reason(Some(&status), "Ready", "DrainTimeout"));
        assert!(!has_reason(Some(&status), "Draining", "ScaleDownDrain"));
        assert!(!has_reason(None, "Draining", "DrainTimeout"));
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

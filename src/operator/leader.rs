//! Leader election on a `coordination.k8s.io/v1` Lease, so that two operator replicas
//! can run and only one reconciles. Optimistic concurrency does the locking: every
//! change is a replace carrying the resourceVersion that was read, so of two replicas
//! racing for an expired Lease exactly one succeeds.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};

/// A Lease not renewed for this long is free to take.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// The holder renews this often.
pub const RENEW_INTERVAL: Duration = Duration::from_secs(5);

pub struct LeaderElection {
    api: Api<Lease>,
    name: String,
    identity: String,
}

impl LeaderElection {
    pub fn new(api: Api<Lease>, name: &str, identity: &str) -> LeaderElection {
        LeaderElection {
            api,
            name: name.into(),
            identity: identity.into(),
        }
    }

    /// Takes the Lease if it is free or expired, renews it if ours. Returns whether we
    /// hold it now.
    pub async fn try_acquire_or_renew(&self) -> kube::Result<bool> {
        let now = jiff::Timestamp::now();
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(now, now, 0)),
            };
            return conflict_is_false(self.api.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let duration = spec
            .lease_duration_seconds
            .map_or(LEASE_DURATION, |s| Duration::from_secs(s.max(0) as u64));
        let expired = spec.renew_time.as_ref().is_none_or(|MicroTime(renewed)| {
            now.duration_since(*renewed).as_secs_f64() > duration.as_secs_f64()
        });
        if !ours && !expired {
            return Ok(false);
        }
        let (acquired, transitions) = if ours {
            (
                spec.acquire_time.map_or(now, |MicroTime(t)| t),
                spec.lease_transitions.unwrap_or(0),
            )
        } else {
            (now, spec.lease_transitions.unwrap_or(0) + 1)
        };
        let renewed = Lease {
            // Carries the resourceVersion read above: a concurrent change makes this a 409.
            metadata: lease.metadata,
            spec: Some(self.spec(acquired, now, transitions)),
        };
        conflict_is_false(
            self.api
                .replace(&self.name, &PostParams::default(), &renewed)
                .await,
        )
    }

    fn spec(
        &self,
        acquired: jiff::Timestamp,
        renewed: jiff::Timestamp,
        transitions: i32,
    ) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }
}

fn conflict_is_false(result: kube::Result<Lease>) -> kube::Result<bool> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

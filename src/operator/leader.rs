//! Leader election on a `coordination.k8s.io/v1` Lease, so that two operator replicas
//! can run and only one reconciles. Optimistic concurrency does the locking: every
//! change is a replace carrying the resourceVersion that was read, so of two replicas
//! racing for an expired Lease exactly one succeeds.
//!
//! Expiry is judged on this process's monotonic clock, as client-go does: another
//! holder's Lease expires when its resourceVersion has not changed for a lease duration
//! since we first saw it, so skew between the pods' wall clocks (the `renewTime` a holder
//! writes) cannot make two replicas lead. The holder steps down when it has not renewed
//! within [`RENEW_DEADLINE`], before any other replica can count the Lease as expired.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::time::Instant;

/// A Lease not renewed for this long is free to take.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// The holder renews this often.
pub const RENEW_INTERVAL: Duration = Duration::from_secs(5);
/// The holder gives up leading when it could not renew for this long: shorter than
/// [`LEASE_DURATION`], so it has stopped before another replica may take over.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);

pub struct LeaderElection {
    api: Api<Lease>,
    name: String,
    identity: String,
    /// The Lease's resourceVersion as last read, and when (monotonic) it was first seen.
    observed: Option<(Option<String>, Instant)>,
    /// When we last renewed the Lease as its holder.
    renewed: Option<Instant>,
}

impl LeaderElection {
    pub fn new(api: Api<Lease>, name: &str, identity: &str) -> LeaderElection {
        LeaderElection {
            api,
            name: name.into(),
            identity: identity.into(),
            observed: None,
            renewed: None,
        }
    }

    /// Takes the Lease if it is free or expired, renews it if ours. Returns whether we
    /// hold it now.
    pub async fn try_acquire_or_renew(&mut self) -> kube::Result<bool> {
        let now = jiff::Timestamp::now();
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(now, now, 0)),
            };
            let held = conflict_is_false(self.api.create(&PostParams::default(), &lease).await);
            return self.note_renewal(held);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let duration = spec
            .lease_duration_seconds
            .map_or(LEASE_DURATION, |s| Duration::from_secs(s.max(0) as u64));
        let version = lease.metadata.resource_version.clone();
        let first_seen = match &self.observed {
            Some((seen, at)) if *seen == version => *at,
            _ => self.observed.insert((version, Instant::now())).1,
        };
        let expired = spec.holder_identity.is_none() || first_seen.elapsed() > duration;
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
        let held = conflict_is_false(
            self.api
                .replace(&self.name, &PostParams::default(), &renewed)
                .await,
        );
        self.note_renewal(held)
    }

    /// For the leader, every [`RENEW_INTERVAL`]: renews the Lease, and fails when another
    /// replica holds it or when renewing has failed for [`RENEW_DEADLINE`], including
    /// an API server that does not answer. The caller then stops leading.
    pub async fn keep_leading(&mut self) -> anyhow::Result<()> {
        let since = self.renewed.unwrap_or_else(Instant::now);
        let left = RENEW_DEADLINE.saturating_sub(since.elapsed());
        let error = match tokio::time::timeout(left, self.try_acquire_or_renew()).await {
            Ok(Ok(true)) => return Ok(()),
            Ok(Ok(false)) => anyhow::bail!("lost the leader Lease to another replica"),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "the API server did not answer".to_string(),
        };
        if since.elapsed() >= RENEW_DEADLINE {
            anyhow::bail!(
                "could not renew the leader Lease for {}s ({error}); stepping down",
                RENEW_DEADLINE.as_secs()
            );
        }
        // The API server is away: nobody can take the Lease meanwhile, and the next
        // renewal, before the deadline, tells whether another replica did.
        tracing::warn!(error, "renewing the leader Lease");
        Ok(())
    }

    fn note_renewal(&mut self, held: kube::Result<bool>) -> kube::Result<bool> {
        if let Ok(true) = held {
            self.renewed = Some(Instant::now());
        }
        held
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

#[cfg(test)]
mod tests {
    //! Against a mock API server holding one Lease with a resourceVersion, as the real
    //! one does: a create of an existing Lease or a replace with a stale version is 409.

    use std::sync::{Arc, Mutex};

    use http::{Method, Request, Response, StatusCode};
    use kube::client::Body;
    use serde_json::{Value, json};

    use super::*;

    #[derive(Default)]
    struct ApiServer {
        lease: Option<Lease>,
        version: u64,
        writes: usize,
        /// Another replica that writes this Lease right after each of our reads.
        rival: Option<Lease>,
        /// Every request fails with a 500, as an API server whose etcd is away.
        failing: bool,
    }

    fn status(code: u16, reason: &str) -> (StatusCode, Value) {
        let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                          "reason": reason, "code": code, "message": reason});
        (StatusCode::from_u16(code).unwrap(), body)
    }

    fn handle(server: &mut ApiServer, method: &Method, body: &[u8]) -> (StatusCode, Value) {
        let stored = |server: &mut ApiServer, mut lease: Lease| {
            server.version += 1;
            lease.metadata.resource_version = Some(server.version.to_string());
            server.lease = Some(lease.clone());
            (StatusCode::OK, serde_json::to_value(lease).unwrap())
        };
        if server.failing {
            return status(500, "InternalError");
        }
        if *method == Method::GET {
            let reply = match &server.lease {
                Some(lease) => (StatusCode::OK, serde_json::to_value(lease).unwrap()),
                None => status(404, "NotFound"),
            };
            if let Some(rival) = server.rival.clone() {
                stored(server, rival);
            }
            return reply;
        }
        server.writes += 1;
        let lease: Lease = serde_json::from_slice(body).unwrap();
        let current = server.lease.as_ref().map(|l| &l.metadata.resource_version);
        match (method.as_str(), current) {
            ("POST", None) => stored(server, lease),
            ("PUT", Some(version)) if *version == lease.metadata.resource_version => {
                stored(server, lease)
            }
            _ => status(409, "Conflict"),
        }
    }

    fn election(server: &Arc<Mutex<ApiServer>>, identity: &str) -> LeaderElection {
        let (service, mut handle_requests) =
            tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let server = server.clone();
        tokio::spawn(async move {
            while let Some((request, respond)) = handle_requests.next_request().await {
                let method = request.method().clone();
                let body = request.into_body().collect_bytes().await.unwrap();
                let (code, value) = handle(&mut server.lock().unwrap(), &method, &body);
                respond.send_response(
                    Response::builder()
                        .status(code)
                        .body(Body::from(serde_json::to_vec(&value).unwrap()))
                        .unwrap(),
                );
            }
        });
        let client = kube::Client::new(service, "default");
        LeaderElection::new(Api::namespaced(client, "default"), "posthorn", identity)
    }

    /// A Lease held by `holder`, last renewed `age` ago, after 3 transitions.
    fn lease(holder: &str, age: Duration) -> Lease {
        let renewed = jiff::Timestamp::now()
            .checked_sub(jiff::SignedDuration::try_from(age).unwrap())
            .unwrap();
        Lease {
            metadata: ObjectMeta {
                name: Some("posthorn".into()),
                namespace: Some("default".into()),
                resource_version: Some("1".into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
                acquire_time: Some(MicroTime(renewed)),
                renew_time: Some(MicroTime(renewed)),
                lease_transitions: Some(3),
                ..LeaseSpec::default()
            }),
        }
    }

    fn held(holder: &str, age: Duration) -> Arc<Mutex<ApiServer>> {
        Arc::new(Mutex::new(ApiServer {
            lease: Some(lease(holder, age)),
            version: 1,
            ..ApiServer::default()
        }))
    }

    fn holder(server: &Arc<Mutex<ApiServer>>) -> (Option<String>, Option<i32>) {
        let server = server.lock().unwrap();
        let spec = server.lease.as_ref().unwrap().spec.clone().unwrap();
        (spec.holder_identity, spec.lease_transitions)
    }

    #[tokio::test]
    async fn creates_a_missing_lease_then_renews_it() {
        let server = Arc::new(Mutex::new(ApiServer::default()));
        let mut a = election(&server, "a");
        assert!(a.try_acquire_or_renew().await.unwrap());
        assert!(a.try_acquire_or_renew().await.unwrap());
        assert_eq!(holder(&server), (Some("a".into()), Some(0)));
        assert_eq!(server.lock().unwrap().writes, 2);
    }

    /// Expiry counts on our own clock from when we first saw the Lease's version: a
    /// `renewTime` written by a holder whose clock is an hour behind does not count.
    #[tokio::test(start_paused = true)]
    async fn a_lease_held_by_another_is_left_alone_until_it_expires() {
        let old = held("b", Duration::from_secs(3600));
        let mut a = election(&old, "a");
        assert!(!a.try_acquire_or_renew().await.unwrap());
        tokio::time::advance(LEASE_DURATION - Duration::from_secs(1)).await;
        assert!(!a.try_acquire_or_renew().await.unwrap());
        assert_eq!(holder(&old), (Some("b".into()), Some(3)));
        assert_eq!(old.lock().unwrap().writes, 0, "a fresh Lease was written");

        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(a.try_acquire_or_renew().await.unwrap());
        assert_eq!(holder(&old), (Some("a".into()), Some(4)));
    }

    /// A holder that keeps renewing keeps the Lease, however old its `renewTime` looks.
    #[tokio::test(start_paused = true)]
    async fn a_renewed_lease_never_expires() {
        let renewing = held("b", Duration::from_secs(3600));
        renewing.lock().unwrap().rival = Some(lease("b", Duration::from_secs(3600)));
        let mut a = election(&renewing, "a");
        for _ in 0..10 {
            assert!(!a.try_acquire_or_renew().await.unwrap());
            tokio::time::advance(RENEW_INTERVAL).await;
        }
        assert_eq!(holder(&renewing), (Some("b".into()), Some(3)));
        assert_eq!(renewing.lock().unwrap().writes, 0);
    }

    /// A leader that cannot renew keeps leading through a short outage, and steps down
    /// at the renew deadline, before the Lease can expire for anyone else.
    #[tokio::test(start_paused = true)]
    async fn the_leader_steps_down_at_the_renew_deadline() {
        let server = Arc::new(Mutex::new(ApiServer::default()));
        let mut a = election(&server, "a");
        assert!(a.try_acquire_or_renew().await.unwrap());
        a.keep_leading().await.unwrap();
        server.lock().unwrap().failing = true;
        tokio::time::advance(RENEW_INTERVAL).await;
        a.keep_leading().await.unwrap();
        tokio::time::advance(RENEW_DEADLINE - RENEW_INTERVAL).await;
        let err = a.keep_leading().await.unwrap_err().to_string();
        assert!(err.contains("stepping down"), "{err}");
        assert!(RENEW_DEADLINE < LEASE_DURATION);
    }

    /// Another replica taking the Lease ends our leadership at the next renewal.
    #[tokio::test]
    async fn the_leader_stops_when_another_holds_the_lease() {
        let server = Arc::new(Mutex::new(ApiServer::default()));
        let mut a = election(&server, "a");
        assert!(a.try_acquire_or_renew().await.unwrap());
        server.lock().unwrap().rival = Some(lease("b", Duration::ZERO));
        let err = a.keep_leading().await.unwrap_err().to_string();
        assert!(err.contains("lost the leader Lease"), "{err}");
    }

    /// Two replicas race for an expired Lease, or for creating it: the one whose write
    /// comes second gets a 409, which is "not leading", not an error.
    #[tokio::test(start_paused = true)]
    async fn a_conflict_means_not_leading() {
        let expired = held("b", LEASE_DURATION + Duration::from_secs(1));
        let mut a = election(&expired, "a");
        assert!(!a.try_acquire_or_renew().await.unwrap());
        tokio::time::advance(LEASE_DURATION + Duration::from_secs(1)).await;
        expired.lock().unwrap().rival = Some(lease("b", Duration::ZERO));
        assert!(!a.try_acquire_or_renew().await.unwrap());
        assert_eq!(holder(&expired), (Some("b".into()), Some(3)));
        assert_eq!(expired.lock().unwrap().writes, 1);

        let missing = Arc::new(Mutex::new(ApiServer {
            rival: Some(lease("b", Duration::ZERO)),
            ..ApiServer::default()
        }));
        let mut a = election(&missing, "a");
        assert!(!a.try_acquire_or_renew().await.unwrap());
        assert_eq!(holder(&missing), (Some("b".into()), Some(3)));
        assert_eq!(missing.lock().unwrap().writes, 1);
    }
}

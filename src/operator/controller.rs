//! The reconcile loop: validate, make sure generated key material exists, render, apply
//! what changed, prune what is no longer wanted, and report status — writing nothing
//! when nothing changed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::utils::Backoff;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::apply::{self, FIELD_MANAGER};
use super::dns_status::DnsEndpointSeen;
use super::drain::{self, Decision};
use super::metrics::OperatorMetrics;
use super::render::{self, Names, PdbApi, RenderOptions, Rendered, SecretData};
use super::status::{self, Cond, Migration, OldDeployment, Rollout};
use super::{pods, secrets};
use crate::api::{Endpoints, MailServer};

/// How often a MailServer is looked at without any change: repairs objects whose kinds
/// are not watched (Certificate, PodDisruptionBudget, a DNSEndpoint whose CRD came
/// after the controller started) and deletions missed
/// while a watch was re-listing (after an API server restart a relist shows no delete
/// event). Costs only reads.
const RESYNC: Duration = Duration::from_secs(60);
/// Reconciles running at once (per controller). Unbounded, 500 new MailServers were 500
/// reconciles racing for the API server, and the leader Lease's renewal, which shares
/// the client, waited behind them until the operator stepped down.
const CONCURRENCY: u16 = 8;
/// How often a drain under way is looked at (the pods' `/drain` polled).
const DRAIN_POLL: Duration = Duration::from_secs(5);
/// How long optional-CRD discovery is trusted before asking the API server again.
const DISCOVERY_TTL: Duration = Duration::from_secs(60);
/// Bounds of the pause after a watch error (see [`WatchBackoff`]).
const WATCH_BACKOFF_MIN: Duration = Duration::from_millis(250);
const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0:#}")]
    Other(#[from] anyhow::Error),
}

/// What the cluster offers, from API discovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    pub certificate_crd: bool,
    pub dns_endpoint_crd: bool,
    pub pdb_api: PdbApi,
    /// The StatefulSet field `persistentVolumeClaimRetentionPolicy` exists (1.23 on).
    pub claim_retention_policy: bool,
}

pub struct Context {
    pub client: Client,
    /// The operator's own image, for pods of MailServers that name none.
    pub image: String,
    pub recorder: Recorder,
    pub metrics: Arc<OperatorMetrics>,
    discovered: Mutex<Option<(Instant, Capabilities)>>,
}

impl Context {
    pub fn new(client: Client, image: String, metrics: Arc<OperatorMetrics>) -> Context {
        let reporter = Reporter {
            controller: "posthorn-operator".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            image,
            metrics,
            discovered: Mutex::new(None),
        }
    }

    /// A context whose capabilities are fixed instead of discovered (tests).
    #[cfg(test)]
    pub fn with_capabilities(client: Client, capabilities: Capabilities) -> Context {
        let context = Context::new(
            client,
            "posthorn:test".into(),
            Arc::new(OperatorMetrics::new()),
        );
        *context.discovered.try_lock().unwrap() = Some((Instant::now(), capabilities));
        context
    }

    async fn capabilities(&self) -> Result<Capabilities, Error> {
        let mut discovered = self.discovered.lock().await;
        if let Some((at, capabilities)) = *discovered
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(capabilities);
        }
        let capabilities = Capabilities {
            certificate_crd: has_resource(&self.client, "cert-manager.io/v1", "certificates")
                .await?,
            dns_endpoint_crd: has_resource(
                &self.client,
                "externaldns.k8s.io/v1alpha1",
                "dnsendpoints",
            )
            .await?,
            pdb_api: if has_resource(&self.client, "policy/v1", "poddisruptionbudgets").await? {
                PdbApi::V1
            } else {
                PdbApi::V1beta1
            },
            claim_retention_policy: minor_version(&self.client).await? >= 23,
        };
        *discovered = Some((Instant::now(), capabilities));
        Ok(capabilities)
    }
}

/// The API server's minor version ("20", or "20+" from some distributions).
async fn minor_version(client: &Client) -> Result<u32, Error> {
    let info = client.apiserver_version().await?;
    let digits: String = info
        .minor
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Ok(digits.parse().unwrap_or(0))
}

/// Whether the API server serves `plural` in `group_version` (404: no such group).
async fn has_resource(client: &Client, group_version: &str, plural: &str) -> Result<bool, Error> {
    match client.list_api_group_resources(group_version).await {
        Ok(list) => Ok(list.resources.iter().any(|r| r.name == plural)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Runs the controller until the watch streams end or `stop` is cancelled (then the
/// reconciles under way finish first): over every namespace when `namespaces` is empty,
/// else one controller per namespace, each watching only its own (a namespace-scoped
/// install grants no more than that).
pub async fn run(context: Arc<Context>, namespaces: Vec<String>, stop: CancellationToken) {
    if namespaces.is_empty() {
        return watch(context, None, stop).await;
    }
    futures::future::join_all(
        namespaces
            .into_iter()
            .map(|namespace| watch(context.clone(), Some(namespace), stop.clone())),
    )
    .await;
}

/// An `Api` over every namespace, or over one.
fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

async fn watch(context: Arc<Context>, namespace: Option<String>, stop: CancellationToken) {
    let client = context.client.clone();
    let ns = namespace.as_deref();
    let config = watcher::Config::default;
    let servers: Api<MailServer> = scoped(&client, ns);
    let mut controller = Controller::new(servers, config())
        .with_config(kube::runtime::controller::Config::default().concurrency(CONCURRENCY))
        .trigger_backoff(WatchBackoff::default());
    let store = controller.store();
    // ExternalDNS reporting that it took up a DNSEndpoint (DNSPublished) is a status
    // change, seen in the metadata's resourceVersion. Watched when the CRD is there as
    // the controller starts; otherwise (or if installed later) the resync looks within
    // a minute.
    if let Ok(capabilities) = context.capabilities().await
        && capabilities.dns_endpoint_crd
    {
        let resource = render::dns_endpoint_resource();
        let api: Api<PartialObjectMeta<DynamicObject>> = match ns {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        controller = controller.owns_with(api, resource, config());
    }
    controller
        .owns(scoped::<StatefulSet>(&client, ns), config())
        // The Deployment of an older operator, until it is migrated away.
        .owns(scoped::<Deployment>(&client, ns), config())
        .owns(scoped::<Service>(&client, ns), config())
        .owns(scoped::<ConfigMap>(&client, ns), config())
        // Secrets by their metadata only (an `Api` of PartialObjectMeta lists and watches
        // metadata-only): no Secret's data reaches the operator except through the
        // reconcile's reads of those a MailServer uses, and a change to any other Secret
        // maps to no MailServer, so it reconciles nothing.
        .watches(
            scoped::<PartialObjectMeta<Secret>>(&client, ns),
            config(),
            move |secret| secrets::concerned(&secret.metadata, store.state().iter().map(|s| &**s)),
        )
        .graceful_shutdown_on(stop.cancelled_owned())
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(%object, "reconciled"),
                Err(e) => tracing::warn!(error = %e, "reconcile failed"),
            }
        })
        .await;
}

/// The pause after an error on any of the controller's watches: doubling from
/// [`WATCH_BACKOFF_MIN`] to [`WATCH_BACKOFF_MAX`], reset by the next event.
///
/// kube-rs pauses all of a controller's watches together on any one's error, and resets
/// the pause only when a watch yields an event for a MailServer. After an API server
/// restart every watch gets `410 too old resource version` (its new watch cache starts
/// at a later version) and must relist; with kube-rs' default (client-go's 0.8 s doubling
/// to 30 s) those five errors compounded into about 40 s without watches, so a deletion
/// meanwhile waited for the minute resync. With this cap they relist within about 5 s
/// (one pause per watch), and an outage still costs at most one request a second.
#[derive(Debug)]
struct WatchBackoff {
    next: Duration,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        WatchBackoff {
            next: WATCH_BACKOFF_MIN,
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let pause = self.next;
        self.next = (pause * 2).min(WATCH_BACKOFF_MAX);
        Some(pause)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = WATCH_BACKOFF_MIN;
    }
}

fn error_policy(server: Arc<MailServer>, error: &Error, _context: Arc<Context>) -> Action {
    tracing::warn!(mailserver = %server.name_any(), %error, "reconcile failed, retrying");
    // The controller's scheduler deduplicates; a short fixed retry is enough since
    // transient API errors are the only errors left here (spec problems are conditions).
    Action::requeue(Duration::from_secs(15))
}

pub async fn reconcile(server: Arc<MailServer>, context: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&server, &context).await;
    context
        .metrics
        .reconciled(result.is_ok(), started.elapsed());
    result
}

async fn reconcile_inner(server: &MailServer, context: &Context) -> Result<Action, Error> {
    let namespace = server.namespace().unwrap_or_else(|| "default".into());
    if let Err(problems) = server.spec.validate() {
        report_degraded(server, context, status::invalid_spec(&problems)).await?;
        // Nothing to retry: the next spec edit triggers a reconcile.
        return Ok(Action::await_change());
    }

    let capabilities = context.capabilities().await?;
    let options = RenderOptions {
        image: context.image.clone(),
        certificate_crd: capabilities.certificate_crd,
        dns_endpoint_crd: capabilities.dns_endpoint_crd,
        pdb_api: capabilities.pdb_api,
        claim_retention_policy: capabilities.claim_retention_policy,
    };

    // Generated key material first, so the DKIM record can be rendered with it.
    let Some(first) = render_or_degrade(server, context, &SecretData::new(), &options).await?
    else {
        return Ok(Action::await_change());
    };
    let secrets_api: Api<Secret> = Api::namespaced(context.client.clone(), &namespace);
    for generated in &first.generated_secrets {
        if let Some(message) = secrets::ensure_generated(server, &secrets_api, generated).await? {
            tracing::info!(mailserver = %server.name_any(), "{message}");
            publish(context, server, EventType::Normal, "Generated", &message).await;
        }
    }
    let wanted = status::referenced_secrets(server)
        .into_iter()
        .chain(first.dkim_secret.clone())
        .chain(first.dkim_ed25519_secret.clone())
        .chain([first.tls_secret.clone()])
        .chain(first.tls_ecdsa_secret.clone());
    let (secrets, missing) = secrets::read(&secrets_api, wanted).await?;
    let Some(mut rendered) = render_or_degrade(server, context, &secrets, &options).await? else {
        return Ok(Action::await_change());
    };
    let (drain, mut changed) = drain_step(server, context, &namespace, &mut rendered).await?;

    let applied = apply_and_prune(server, context, &namespace, &rendered, &capabilities).await?;
    changed.extend(applied.changed);
    let stateful_set = Api::<StatefulSet>::namespaced(context.client.clone(), &namespace)
        .get_opt(&Names::new(server).workload())
        .await?;
    let rollout = Rollout::of(stateful_set.as_ref());
    let dovecot = match &rendered.mailboxes {
        Some(_) => {
            Api::<StatefulSet>::namespaced(context.client.clone(), &namespace)
                .get_opt(&Names::new(server).dovecot())
                .await?
        }
        None => None,
    };
    let observed = status::Observed {
        secrets: &secrets,
        missing: &missing,
        rollout,
        draining: drain.condition.clone(),
        mailboxes: Rollout::of(dovecot.as_ref()),
        not_ours: &applied.not_ours,
        dns_endpoint: applied.dns_endpoint,
    };
    let conditions = status::conditions(server, &rendered, &observed);
    let ready = conditions.iter().any(|c| c.type_ == "Ready" && c.is_true());
    changed.extend(migrate(server, context, &namespace, ready).await?);
    if !changed.is_empty() {
        tracing::info!(mailserver = %server.name_any(), changed = ?changed, "applied");
        publish(
            context,
            server,
            EventType::Normal,
            "Applied",
            &changed.join(", "),
        )
        .await;
    }

    // Warnings: a Degraded condition, a drain past its timeout (once: its message
    // changes with every poll).
    let timed_out = drain.condition.reason == "DrainTimeout"
        && !status::has_reason(server.status.as_ref(), "Draining", "DrainTimeout");
    let warnings: Vec<(String, String)> = conditions
        .iter()
        .filter(|c| (c.type_ == "Degraded" && c.is_true()) || (timed_out && c.type_ == "Draining"))
        .map(|c| (c.reason.clone(), c.message.clone()))
        .collect();
    if write_status(
        server,
        context,
        conditions,
        Some(rollout.ready),
        rendered.dns_records.clone(),
        Some(status::endpoints(server)),
    )
    .await?
    {
        for (reason, message) in warnings {
            publish(context, server, EventType::Warning, &reason, &message).await;
        }
    }
    Ok(Action::requeue(if drain.condition.is_true() {
        DRAIN_POLL
    } else {
        RESYNC
    }))
}

/// One step of a scale-down drain ([`drain`]): tells the pods, and sets the replicas
/// the StatefulSet is applied with. Returns the decision and what it did to pods.
async fn drain_step(
    server: &MailServer,
    context: &Context,
    namespace: &str,
    rendered: &mut Rendered,
) -> Result<(Decision, Vec<String>), Error> {
    let name = Names::new(server).workload();
    let current = Api::<StatefulSet>::namespaced(context.client.clone(), namespace)
        .get_opt(&name)
        .await?
        .and_then(|live| live.spec.replicas);
    let spec = &mut rendered.stateful_set.spec;
    let selector = spec.selector.match_labels.clone().unwrap_or_default();
    let overdue = drain::overdue(server.status.as_ref(), jiff::Timestamp::now());
    let wanted = server.spec.replicas;
    let (decision, done) = pods::drain_step(
        &context.client,
        namespace,
        &name,
        &selector,
        (wanted, current),
        overdue,
    )
    .await?;
    spec.replicas = Some(decision.replicas);
    Ok((decision, done))
}

/// Moves an older operator's Deployment out of the way once the StatefulSet is Ready:
/// scales it to 0 (its pods deliver what they can on SIGTERM), then deletes it when
/// no pod of it is left. Returns what it did.
async fn migrate(
    server: &MailServer,
    context: &Context,
    namespace: &str,
    stateful_set_ready: bool,
) -> Result<Option<String>, Error> {
    let api = Api::<Deployment>::namespaced(context.client.clone(), namespace);
    let name = Names::new(server).workload();
    let Some(deployment) = api.get_opt(&name).await? else {
        return Ok(None);
    };
    if !owned_by(&deployment.metadata, server) {
        return Ok(None);
    }
    match status::migration(&OldDeployment::of(&deployment), stateful_set_ready) {
        Migration::Keep => Ok(None),
        Migration::ScaleToZero => {
            let patch = serde_json::json!({"spec": {"replicas": 0}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            Ok(Some(format!("scaled the old Deployment {name} to 0")))
        }
        Migration::Delete => {
            api.delete(&name, &DeleteParams::background()).await?;
            Ok(Some(format!("deleted the old Deployment {name}")))
        }
    }
}

/// What [`apply_and_prune`] did and saw.
struct Applied {
    /// What it wrote or deleted ("Service mail"), for an event.
    changed: Vec<String>,
    /// Objects it left alone because they belong to something else.
    not_ours: Vec<String>,
    /// The DNSEndpoint it applied, as it is now.
    dns_endpoint: Option<DnsEndpointSeen>,
}

/// Applies what changed and deletes owned objects no longer wanted.
async fn apply_and_prune(
    server: &MailServer,
    context: &Context,
    namespace: &str,
    rendered: &Rendered,
    capabilities: &Capabilities,
) -> Result<Applied, Error> {
    let client = &context.client;
    let mut changed = Vec::new();
    let mut not_ours = Vec::new();
    let mut dns_endpoint = None;
    for object in rendered.objects() {
        let what = format!("{} {}", object.kind(), object.name());
        let (applied, live) = apply::apply(client, namespace, &object).await?;
        match applied {
            apply::Applied::Written => {
                context.metrics.applied(object.kind());
                changed.push(what);
            }
            apply::Applied::NotOurs => not_ours.push(what),
            apply::Applied::Unchanged => {}
        }
        if object.resource == render::dns_endpoint_resource() {
            dns_endpoint = live.as_ref().map(DnsEndpointSeen::of);
        }
    }
    for (resource, name) in unwanted(server, rendered, capabilities) {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
        if let Some(live) = api.get_opt(&name).await?
            && owned_by(&live.metadata, server)
        {
            api.delete(&name, &DeleteParams::background()).await?;
            changed.push(format!("deleted {} {name}", resource.kind));
        }
    }
    Ok(Applied {
        changed,
        not_ours,
        dns_endpoint,
    })
}

/// Renders, or reports why it cannot in the Degraded condition (and returns None).
async fn render_or_degrade(
    server: &MailServer,
    context: &Context,
    secrets: &SecretData,
    options: &RenderOptions,
) -> Result<Option<Rendered>, Error> {
    match render::render(server, secrets, options) {
        Ok(rendered) => Ok(Some(rendered)),
        Err(e) => {
            report_degraded(server, context, status::render_failed(&e)).await?;
            Ok(None)
        }
    }
}

/// Writes `conditions` of a MailServer that cannot be rendered, and a Warning Event
/// with the Degraded condition's reason and message when that status is new.
async fn report_degraded(
    server: &MailServer,
    context: &Context,
    conditions: Vec<Cond>,
) -> Result<(), Error> {
    let degraded = conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .map(|c| (c.reason.clone(), c.message.clone()));
    if write_status(server, context, conditions, None, vec![], None).await?
        && let Some((reason, message)) = degraded
    {
        publish(context, server, EventType::Warning, &reason, &message).await;
    }
    Ok(())
}

fn owned_by(meta: &ObjectMeta, server: &MailServer) -> bool {
    server
        .uid()
        .is_some_and(|uid| apply::controller_uid(meta) == Some(uid.as_str()))
}

/// Optional objects that this MailServer owned once but no longer needs (replicas down
/// to 1, issuer dropped, ExternalDNS turned off, mailboxes or NetworkPolicy disabled). The queue's and
/// the mailboxes' claims are never pruned: they hold mail.
fn unwanted(
    server: &MailServer,
    rendered: &Rendered,
    capabilities: &Capabilities,
) -> Vec<(kube::api::ApiResource, String)> {
    let names = Names::new(server);
    let name = names.workload();
    let mut unwanted = Vec::new();
    if rendered.mailboxes.is_none() {
        unwanted.extend(render::mailbox_objects(&names));
    }
    if rendered.pdb.is_none() {
        let pdb = render::pdb_resource(capabilities.pdb_api);
        unwanted.push((pdb, name.clone()));
    }
    if rendered.certificate.is_none() && capabilities.certificate_crd {
        unwanted.push((render::certificate_resource(), name.clone()));
    }
    if rendered.network_policy.is_none() {
        unwanted.push((render::network_policy_resource(), name.clone()));
    }
    if rendered.dns_endpoint.is_none() && capabilities.dns_endpoint_crd {
        unwanted.push((render::dns_endpoint_resource(), name));
    }
    unwanted
}

/// Writes the status when it differs from what is there. Returns whether it wrote.
async fn write_status(
    server: &MailServer,
    context: &Context,
    conditions: Vec<Cond>,
    ready_replicas: Option<i32>,
    dns_records: Vec<crate::api::DnsRecord>,
    endpoints: Option<Endpoints>,
) -> Result<bool, Error> {
    let now = Time(jiff::Timestamp::now());
    let new = status::build(
        server.status.as_ref(),
        server.metadata.generation,
        conditions,
        ready_replicas,
        dns_records,
        endpoints,
        now,
    );
    if server.status.as_ref() == Some(&new) {
        return Ok(false);
    }
    let api: Api<MailServer> = Api::namespaced(
        context.client.clone(),
        &server.namespace().unwrap_or_else(|| "default".into()),
    );
    let patch = serde_json::json!({
        "apiVersion": "posthorn.dev/v1alpha1",
        "kind": "MailServer",
        "status": new,
    });
    api.patch_status(
        &server.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(true)
}

async fn publish(
    context: &Context,
    server: &MailServer,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1024).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = context
        .recorder
        .publish(&event, &server.object_ref(&()))
        .await
    {
        tracing::warn!(error = %e, "could not publish an Event");
    }
}

#[cfg(test)]
mod tests {
    //! The reconcile against a mock API server (kube's tower-test pattern): a responder
    //! answers GETs from a map of live objects and records every other request, which
    //! is a write.

    use std::collections::{BTreeMap, HashMap};
    use std::sync::Mutex as StdMutex;

    use k8s_openapi::ByteString;

    use http::{Method, Request, Response, StatusCode};
    use kube::client::Body;
    use serde_json::{Value, json};

    use super::*;
    use crate::operator::apply::with_applied_hash;

    type Writes = Arc<StdMutex<Vec<(Method, String, Value)>>>;

    /// A client whose API server holds `live` (path → object) and logs writes, which
    /// are answered with the written body (a status write: with `owner` carrying it).
    fn mock_client(live: HashMap<String, Value>, owner: &MailServer) -> (Client, Writes) {
        let owner = serde_json::to_value(owner).unwrap();
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let writes: Writes = Arc::default();
        let log = writes.clone();
        tokio::spawn(async move {
            while let Some((request, respond)) = handle.next_request().await {
                let method = request.method().clone();
                let path = request.uri().path().to_string();
                let body = request.into_body().collect_bytes().await.unwrap();
                let response = if method == Method::GET {
                    match live.get(&path) {
                        Some(object) => (StatusCode::OK, object.clone()),
                        // A list of the MailServer's pods: none run here.
                        None if path.ends_with("/pods") => (
                            StatusCode::OK,
                            json!({"kind": "PodList", "apiVersion": "v1", "metadata": {},
                                   "items": []}),
                        ),
                        None => (
                            StatusCode::NOT_FOUND,
                            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                   "reason": "NotFound", "code": 404, "message": "not found"}),
                        ),
                    }
                } else {
                    let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    log.lock()
                        .unwrap()
                        .push((method, path.clone(), value.clone()));
                    if path.ends_with("/status") {
                        let mut owner = owner.clone();
                        owner["status"] = value["status"].clone();
                        (StatusCode::OK, owner)
                    } else {
                        (StatusCode::OK, value)
                    }
                };
                respond.send_response(
                    Response::builder()
                        .status(response.0)
                        .body(Body::from(serde_json::to_vec(&response.1).unwrap()))
                        .unwrap(),
                );
            }
        });
        (Client::new(service, "default"), writes)
    }

    const CAPABILITIES: Capabilities = Capabilities {
        certificate_crd: true,
        dns_endpoint_crd: true,
        pdb_api: PdbApi::V1beta1,
        claim_retention_policy: false,
    };

    fn server() -> MailServer {
        let mut server = crate::api::load_manifest(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mailserver.yaml"),
        )
        .unwrap();
        server.metadata.namespace = Some("default".into());
        server.metadata.uid = Some("uid-1".into());
        server.metadata.generation = Some(4);
        server
    }

    fn secret(name: &str, data: &[(&str, &str)]) -> Value {
        let data: BTreeMap<_, _> = data
            .iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
            .collect();
        serde_json::to_value(Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..ObjectMeta::default()
            },
            data: Some(data),
            ..Secret::default()
        })
        .unwrap()
    }

    fn path(object: &render::Object) -> String {
        let resource = &object.resource;
        let prefix = if resource.group.is_empty() {
            "/api/v1".to_string()
        } else {
            format!("/apis/{}", resource.api_version)
        };
        format!(
            "{prefix}/namespaces/default/{}/{}",
            resource.plural,
            object.name()
        )
    }

    fn context(client: Client) -> Arc<Context> {
        Arc::new(Context::with_capabilities(client, CAPABILITIES))
    }

    #[test]
    fn watch_backoff_doubles_to_its_cap_and_resets() {
        let mut backoff = WatchBackoff::default();
        let pauses: Vec<_> = backoff.by_ref().take(6).map(|d| d.as_millis()).collect();
        assert_eq!(pauses, [250, 500, 1000, 1000, 1000, 1000]);
        backoff.reset();
        assert_eq!(backoff.next(), Some(WATCH_BACKOFF_MIN));
    }

    #[tokio::test]
    async fn invalid_spec_is_a_condition_written_once() {
        let mut server = server();
        server.spec.submission.port = 25;
        let (client, writes) = mock_client(HashMap::new(), &server);
        let action = reconcile(Arc::new(server.clone()), context(client))
            .await
            .unwrap();
        assert_eq!(action, Action::await_change());

        let written = writes.lock().unwrap().clone();
        let (method, path, body) = &written[0];
        assert_eq!(method, Method::PATCH);
        assert_eq!(
            path,
            "/apis/posthorn.dev/v1alpha1/namespaces/default/mailservers/mail/status"
        );
        let degraded = body["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Degraded")
            .unwrap();
        assert_eq!(degraded["status"], "True");
        assert!(
            degraded["message"]
                .as_str()
                .unwrap()
                .contains("port 25 is already used"),
            "{degraded}"
        );
        assert_eq!(body["status"]["observedGeneration"], 4);
        assert!(written[1].1.ends_with("/events"), "{written:?}");
        assert_eq!(written.len(), 2, "{written:?}");

        // The same invalid spec again, its status already written: no write at all.
        server.status = Some(serde_json::from_value(body["status"].clone()).unwrap());
        let (client, writes) = mock_client(HashMap::new(), &server);
        reconcile(Arc::new(server), context(client)).await.unwrap();
        assert!(writes.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_ephemeral_queue_is_a_warning_event() {
        let mut server = server();
        server.spec.queue.storage = crate::api::QueueStorage::EmptyDir;
        let users = secret(
            "mail-users",
            &[("passwd", "alice@example.com:{SHA512-CRYPT}x")],
        );
        let live = HashMap::from([(
            "/api/v1/namespaces/default/secrets/mail-users".to_string(),
            users,
        )]);
        let (client, writes) = mock_client(live, &server);
        reconcile(Arc::new(server), context(client)).await.unwrap();
        let written = writes.lock().unwrap().clone();
        let warnings: Vec<_> = written
            .iter()
            .filter(|(_, path, body)| path.ends_with("/events") && body["type"] == "Warning")
            .map(|(_, _, body)| body["reason"].clone())
            .collect();
        assert_eq!(warnings, [json!("EphemeralQueue")], "{written:?}");
    }

    /// The generated DKIM and SRS keys outlive their MailServer (re-creating one keeps the
    /// key DNS publishes); the other generated Secrets go with it.
    #[tokio::test]
    async fn only_the_generated_keys_outlive_their_mailserver() {
        let server = server();
        let (client, writes) = mock_client(HashMap::new(), &server);
        reconcile(Arc::new(server), context(client)).await.unwrap();
        let created: BTreeMap<String, bool> = writes
            .lock()
            .unwrap()
            .iter()
            .filter(|(method, path, _)| method == Method::POST && path.ends_with("/secrets"))
            .map(|(_, _, body)| {
                let owned = body["metadata"]["ownerReferences"][0]["uid"] == "uid-1";
                (
                    body["metadata"]["name"].as_str().unwrap().to_string(),
                    owned,
                )
            })
            .collect();
        assert_eq!(
            created,
            BTreeMap::from([
                ("mail-dkim".to_string(), false),
                ("mail-handover".to_string(), true),
                ("mail-srs".to_string(), false),
                ("mail-tls-self-signed".to_string(), true),
            ])
        );
    }

    /// Everything in place and the status up to date: a reconcile only reads.
    #[tokio::test]
    async fn nothing_changed_means_no_writes() {
        let server = server();
        let dkim = secret(
            "mail-dkim",
            &[
                (crate::plan::DKIM_KEY, "key"),
                (crate::plan::DKIM_TXT_KEY, "v=DKIM1; k=rsa; p=AAAA"),
            ],
        );
        let tls = secret(
            "mail-tls-self-signed",
            &[("tls.crt", "c"), ("tls.key", "k")],
        );
        let users = secret(
            "mail-users",
            &[("passwd", "alice@example.com:{SHA512-CRYPT}x")],
        );
        let handover = secret("mail-handover", &[(crate::plan::HANDOVER_TOKEN_KEY, "t")]);
        let srs = secret("mail-srs", &[(crate::plan::SRS_SECRET_KEY, "s")]);
        let secrets: SecretData = [&dkim, &tls, &users, &handover, &srs]
            .iter()
            .map(|s| {
                let s: Secret = serde_json::from_value((*s).clone()).unwrap();
                (s.metadata.name.clone().unwrap(), secrets::data(&s))
            })
            .collect();
        let options = RenderOptions {
            image: "posthorn:test".into(),
            certificate_crd: true,
            dns_endpoint_crd: true,
            pdb_api: PdbApi::V1beta1,
            claim_retention_policy: false,
        };
        let rendered = render::render(&server, &secrets, &options).unwrap();

        let mut live = HashMap::new();
        for (name, value) in [
            ("mail-dkim", &dkim),
            ("mail-tls-self-signed", &tls),
            ("mail-users", &users),
            ("mail-handover", &handover),
            ("mail-srs", &srs),
        ] {
            live.insert(
                format!("/api/v1/namespaces/default/secrets/{name}"),
                value.clone(),
            );
        }
        for object in rendered.objects() {
            // As the API server returns it: with what was applied plus its own additions.
            let mut value = serde_json::to_value(with_applied_hash(object.object.clone())).unwrap();
            value["metadata"]["resourceVersion"] = json!("7");
            value["metadata"]["generation"] = json!(1);
            value["status"] = json!({});
            live.insert(path(&object), value);
        }
        // ExternalDNS has taken the DNSEndpoint up.
        let endpoint_path =
            "/apis/externaldns.k8s.io/v1alpha1/namespaces/default/dnsendpoints/mail";
        live.get_mut(endpoint_path).unwrap()["status"] = json!({"observedGeneration": 1});
        let endpoint: DynamicObject = serde_json::from_value(live[endpoint_path].clone()).unwrap();

        let observed = status::Observed {
            secrets: &secrets,
            missing: &[],
            rollout: Rollout::default(),
            draining: drain::not_draining(),
            mailboxes: Rollout::default(),
            not_ours: &[],
            dns_endpoint: Some(DnsEndpointSeen::of(&endpoint)),
        };
        let ready = status::conditions(&server, &rendered, &observed);
        assert!(
            ready
                .iter()
                .any(|c| c.type_ == "DNSPublished" && c.is_true())
        );
        let mut current = server.clone();
        current.status = Some(status::build(
            None,
            Some(4),
            ready,
            Some(0),
            rendered.dns_records.clone(),
            Some(status::endpoints(&server)),
            Time(jiff::Timestamp::from_second(1_000_000).unwrap()),
        ));

        let (client, writes) = mock_client(live.clone(), &current);
        reconcile(Arc::new(current.clone()), context(client))
            .await
            .unwrap();
        assert!(
            writes.lock().unwrap().is_empty(),
            "{:?}",
            writes.lock().unwrap()
        );

        // A hand-edited Service is put back, and only the Service.
        let service_path = "/api/v1/namespaces/default/services/mail";
        live.get_mut(service_path).unwrap()["spec"]["type"] = json!("ClusterIP");
        let (client, writes) = mock_client(live, &current);
        reconcile(Arc::new(current), context(client)).await.unwrap();
        let written = writes.lock().unwrap().clone();
        assert_eq!(written.len(), 2, "{written:?}");
        assert_eq!(
            (&written[0].0, written[0].1.as_str()),
            (&Method::PATCH, service_path)
        );
        assert_eq!(written[0].2["spec"]["type"], "LoadBalancer");
        assert!(written[1].1.ends_with("/events"), "the repair is reported");
    }
}

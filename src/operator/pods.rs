//! The MailServer's pods, for the scale-down drain ([`super::drain`] decides): read with
//! their `/drain` progress, annotated, restarted.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};

use super::drain::{self, Decision, PodView};
use crate::handover::drain::{DRAIN_TO, Progress};
use crate::mail::METRICS_POD_PORT;

/// How long one pod may take to answer `GET /drain`.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest `/drain` answer read (it is a few hundred bytes).
const MAX_PROGRESS: usize = 64 * 1024;

/// The StatefulSet `stateful_set` (pods selected by `selector`): runs one drain step for
/// `wanted` replicas against its `current` ones and returns the decision and what was
/// done to pods.
pub async fn drain_step(
    client: &Client,
    namespace: &str,
    stateful_set: &str,
    selector: &BTreeMap<String, String>,
    (wanted, current): (i32, Option<i32>),
    overdue: bool,
) -> kube::Result<(Decision, Vec<String>)> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut pods = read(&api, stateful_set, selector).await?;
    let asked: Vec<_> = pods
        .iter()
        .map(|pod| async move {
            match &pod.ip {
                Some(ip) if drain::worth_asking(pod, wanted) => {
                    let ip: IpAddr = ip.parse().ok()?;
                    progress(SocketAddr::new(ip, METRICS_POD_PORT)).await
                }
                _ => None,
            }
        })
        .collect();
    let answers = futures::future::join_all(asked).await;
    for (pod, progress) in pods.iter_mut().zip(answers) {
        pod.progress = progress;
    }
    let decision = drain::decide(wanted, current, &pods, overdue);

    let mut done = Vec::new();
    for (name, to) in &decision.annotate {
        annotate(&api, name, Some(to)).await?;
        done.push(format!("pod {name} drains to {to}"));
    }
    for name in &decision.unannotate {
        annotate(&api, name, None).await?;
        done.push(format!("pod {name} no longer drains"));
    }
    for name in &decision.restart {
        api.delete(name, &DeleteParams::default()).await?;
        done.push(format!("restarted pod {name}, which had begun draining"));
    }
    Ok((decision, done))
}

/// The pods of `stateful_set`: those named `<stateful_set>-<ordinal>`.
async fn read(
    api: &Api<Pod>,
    stateful_set: &str,
    selector: &BTreeMap<String, String>,
) -> kube::Result<Vec<PodView>> {
    let selector: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let list = api
        .list(&ListParams::default().labels(&selector.join(",")))
        .await?;
    let prefix = format!("{stateful_set}-");
    Ok(list
        .items
        .iter()
        .filter_map(|pod| {
            let name = pod.name_any();
            let ordinal = name.strip_prefix(&prefix)?.parse().ok()?;
            let status = pod.status.as_ref();
            Some(PodView {
                ordinal,
                ip: status.and_then(|s| s.pod_ip.clone()),
                ready: status
                    .and_then(|s| s.conditions.as_ref())
                    .into_iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True"),
                terminating: pod.metadata.deletion_timestamp.is_some(),
                drain_to: pod.annotations().get(DRAIN_TO).cloned(),
                progress: None,
                name,
            })
        })
        .collect())
}

/// Sets (or with None removes) a pod's drain annotation.
async fn annotate(api: &Api<Pod>, name: &str, to: Option<&str>) -> kube::Result<()> {
    let patch = serde_json::json!({"metadata": {"annotations": {DRAIN_TO: to}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// `GET /drain` of a pod's metrics listener at `at`; None when it does not answer in
/// time or answers something else.
async fn progress(at: SocketAddr) -> Option<Progress> {
    let uri = format!("http://{at}/drain");
    let client = HttpClient::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let ask = async {
        let response = client.get(uri.parse().ok()?).await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        let body = Limited::new(response.into_body(), MAX_PROGRESS)
            .collect()
            .await
            .ok()?
            .to_bytes();
        serde_json::from_slice(&body).ok()
    };
    let answer = tokio::time::timeout(PROGRESS_TIMEOUT, ask).await.ok()?;
    if answer.is_none() {
        tracing::debug!(%at, "no drain progress from the pod");
    }
    answer
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::handover::drain::DrainState;

    /// A listener answering one request with `response`.
    async fn answering(response: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = [0; 1024];
            let _ = stream.read(&mut request).await.unwrap();
            stream.write_all(response.as_bytes()).await.unwrap();
        });
        at
    }

    #[tokio::test]
    async fn drain_progress_is_read_from_the_pod() {
        let body = r#"{"state":"draining","peers":["10.0.0.1:5999"],"handedOver":3,"queued":4}"#;
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let at = answering(Box::leak(response.into_boxed_str())).await;
        let answer = progress(at).await.unwrap();
        assert_eq!(answer.state, DrainState::Draining);
        assert_eq!((answer.handed_over, answer.queued), (3, 4));

        let at = answering("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").await;
        assert_eq!(progress(at).await, None);
        let at = answering("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nno").await;
        assert_eq!(progress(at).await, None);
    }
}

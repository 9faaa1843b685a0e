//! The drain signal and its progress. The operator chooses the pods that stay and
//! writes their handover addresses into the annotation `posthorn.io/drain-to` of the
//! pod that goes away (`host:port,host:port`); the kubelet keeps the downward API file
//! of the pod's annotations (`handover.annotationsFile`) up to date. Once the annotation
//! is there the server drains: `/readyz` fails, the listeners close, what is due is
//! delivered, and the rest is handed over to the first peer that takes it. Progress is
//! served as JSON at `/drain` on the metrics port for the operator to poll.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{StatusCode, header};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::Handover;
use crate::spool::Spool;

/// The annotation that starts a drain.
pub const DRAIN_TO: &str = "posthorn.io/drain-to";

/// `GET /drain`'s answer; the operator reads it back.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Progress {
    pub state: DrainState,
    /// Where the queue goes, from the annotation.
    pub peers: Vec<String>,
    /// Messages handed over so far.
    pub handed_over: usize,
    /// Messages still in this pod's spool.
    pub queued: u64,
    /// The last handover failure, while the drain retries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum DrainState {
    /// No drain asked for.
    #[default]
    Serving,
    Draining,
    /// The spool is empty: the pod can go.
    Drained,
}

/// What a drain stops on the serving side.
pub struct Serving {
    pub ready: Arc<AtomicBool>,
    pub accepting: CancellationToken,
}

#[derive(Clone, Default)]
pub struct Status(Arc<Mutex<Progress>>);

impl Status {
    fn update(&self, change: impl FnOnce(&mut Progress)) {
        change(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// `GET /drain` (JSON [`Progress`]), for the metrics listener.
    pub fn routes(&self, handover: &Handover) -> Router {
        Router::new()
            .route("/drain", get(progress))
            .with_state((self.clone(), handover.spool.clone()))
    }
}

async fn progress(State((status, spool)): State<(Status, Arc<Spool>)>) -> Response {
    let mut progress = status
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    progress.queued = spool.stats().messages;
    match serde_json::to_string(&progress) {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

/// Watches `annotations` every `interval` until it names peers, then drains to them.
pub async fn watch(
    annotations: PathBuf,
    interval: Duration,
    handover: Handover,
    cert_file: PathBuf,
    serving: Serving,
    status: Status,
) {
    let peers = loop {
        tokio::time::sleep(interval).await;
        if let Some(peers) = std::fs::read_to_string(&annotations)
            .ok()
            .and_then(|text| drain_to(&text))
        {
            break peers;
        }
    };
    tracing::info!(
        ?peers,
        "drain: closing the listeners and handing the queue over"
    );
    status.update(|p| {
        p.state = DrainState::Draining;
        p.peers = peers.clone();
    });
    serving.ready.store(false, Ordering::Release);
    serving.accepting.cancel();
    // What can go now goes; what is deferred is handed over with its retry state.
    handover.queue.drained(Duration::ZERO).await;
    loop {
        for peer in &peers {
            match handover.send_all(peer, &cert_file).await {
                Ok(sent) => status.update(|p| {
                    p.handed_over += sent;
                    p.error = None;
                }),
                Err(error) => {
                    let error = format!("{peer}: {error:#}");
                    tracing::warn!(%error, "drain: handover failed");
                    status.update(|p| p.error = Some(error));
                    continue;
                }
            }
            if handover.spool.stats().messages == 0 {
                tracing::info!("drain: done, the spool is empty");
                status.update(|p| p.state = DrainState::Drained);
                return;
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// The peers of the drain annotation in a downward API annotations file (`key="value"`
/// lines, values quoted as Go's `%q`).
fn drain_to(text: &str) -> Option<Vec<String>> {
    let value = text.lines().find_map(|line| {
        line.strip_prefix(DRAIN_TO)?
            .strip_prefix('=')?
            .strip_prefix('"')?
            .strip_suffix('"')
    })?;
    let peers: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect();
    (!peers.is_empty()).then_some(peers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_annotation_from_the_downward_api_file() {
        let file = "kubernetes.io/config.seen=\"2026-11-30\"\n\
                    posthorn.io/drain-to=\"10.0.0.7:5999, 10.0.0.8:5999\"\n";
        assert_eq!(
            drain_to(file),
            Some(vec!["10.0.0.7:5999".into(), "10.0.0.8:5999".into()])
        );
        assert_eq!(drain_to("posthorn.io/drain-to=\"\"\n"), None);
        assert_eq!(drain_to("posthorn.io/drain-top=\"a:1\"\n"), None);
        assert_eq!(drain_to(""), None);
    }
}

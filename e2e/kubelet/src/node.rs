//! The kubelet's Node: registered Ready, its status heartbeat renewed every 10 s (the
//! node lifecycle controller marks a node NotReady, and evicts its pods, after 40 s
//! without one).

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::HOST_IP;
use crate::pod::now;

const HEARTBEAT: Duration = Duration::from_secs(10);

fn status() -> serde_json::Value {
    let at = now();
    let condition = |kind: &str, status: &str, reason: &str| {
        json!({"type": kind, "status": status, "reason": reason, "message": reason,
               "lastHeartbeatTime": at, "lastTransitionTime": at})
    };
    json!({"status": {
        "conditions": [
            condition("Ready", "True", "KubeletReady"),
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID"),
        ],
        "addresses": [{"type": "InternalIP", "address": HOST_IP}],
        "capacity": {"cpu": "2", "memory": "8Gi", "pods": "250"},
        "allocatable": {"cpu": "2", "memory": "8Gi", "pods": "250"},
    }})
}

/// Creates the Node (or adopts an existing one) and reports it Ready.
pub async fn register(client: &Client, name: &str) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    if api.get_opt(name).await?.is_none() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
        }))?;
        api.create(&PostParams::default(), &node)
            .await
            .context("creating the Node")?;
    }
    heartbeat(&api, name).await
}

async fn heartbeat(api: &Api<Node>, name: &str) -> Result<()> {
    // Conditions merge by type on a strategic merge patch, as the kubelet's do.
    api.patch_status(name, &PatchParams::default(), &Patch::Strategic(status()))
        .await
        .context("patching the Node status")?;
    Ok(())
}

/// Renews the heartbeat forever; a failure is logged and retried on the next beat.
pub async fn keep_alive(client: Client, name: String) {
    let api: Api<Node> = Api::all(client);
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        if let Err(e) = heartbeat(&api, &name).await {
            eprintln!("kubelet: node heartbeat: {e:#}");
        }
    }
}

//! `posthorn operator`: reconcile MailServers in the cluster.

use std::net::SocketAddr;

use crate::config::LogFormat;
use crate::operator::{self, OperatorCommand};
use crate::telemetry;

#[derive(clap::Args)]
pub struct Args {
    /// Image for the mail server pods, unless a MailServer names one.
    #[arg(long, env = "POSTHORN_IMAGE", default_value = operator::DEFAULT_IMAGE)]
    image: String,
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics: SocketAddr,
    /// Namespace of the leader election Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    #[arg(long, default_value = "posthorn-operator")]
    lease_name: String,
    /// This replica's identity in the Lease.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    #[arg(long, value_enum, default_value_t)]
    log_format: LogFormat,
    /// Run only the MailServers of these namespaces (repeat the flag or separate by
    /// commas); RBAC is then needed in those namespaces only. Default: every namespace.
    #[arg(long, value_delimiter = ',')]
    watch_namespace: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    telemetry::init_logging(args.log_format);
    // Outside a pod: the host name and process id tell replicas apart.
    let identity = args.identity.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    // One controller per namespace: a namespace named twice would be reconciled twice.
    let mut watch_namespaces = args.watch_namespace;
    watch_namespaces.sort();
    watch_namespaces.dedup();
    super::runtime()?.block_on(operator::run(OperatorCommand {
        image: args.image,
        metrics: args.metrics,
        lease_namespace: args.lease_namespace,
        lease_name: args.lease_name,
        identity,
        watch_namespaces,
    }))
}

//! The DNS resolver, one for the recipient domain checks (`policy/recipient.rs`) and MX
//! delivery (`transport/mx.rs`), so both ask the same name servers.

use std::net::SocketAddr;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;

/// A resolver asking `nameservers` (over UDP, then TCP) when given, else the ones in the
/// system's resolv.conf.
pub fn resolver(nameservers: &[SocketAddr]) -> anyhow::Result<TokioResolver> {
    let builder = if nameservers.is_empty() {
        TokioResolver::builder_tokio()?
    } else {
        let servers = nameservers
            .iter()
            .map(|addr| {
                let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                    .into_iter()
                    .map(|mut c| {
                        c.port = addr.port();
                        c
                    })
                    .collect();
                NameServerConfig::new(addr.ip(), true, connections)
            })
            .collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
    };
    Ok(builder.build()?)
}

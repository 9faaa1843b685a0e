//! Where mail for a domain goes without a relay host (RFC 5321 §5.1): its MX hosts in
//! preference order, or the domain's own address when it has no MX record.

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::RData;

use super::client::Attempt;
use crate::spool::Status;

/// The hosts to try, best first, each with its addresses.
#[derive(Debug, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    pub addrs: Vec<SocketAddr>,
}

pub struct MxResolver {
    resolver: TokioResolver,
    port: u16,
}

impl MxResolver {
    pub fn new(resolver: TokioResolver, port: u16) -> MxResolver {
        MxResolver { resolver, port }
    }

    /// The MX hosts of `domain` with their addresses, or why there are none: a
    /// temporary DNS failure defers, a domain that does not exist or takes no mail
    /// (null MX, RFC 7505) fails.
    pub async fn hosts(&self, domain: &str) -> Result<Vec<Host>, Attempt> {
        if let Some(literal) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
            let ip = literal.strip_prefix("IPv6:").unwrap_or(literal);
            return match ip.parse::<IpAddr>() {
                Ok(ip) => Ok(vec![Host {
                    name: literal.to_string(),
                    addrs: vec![SocketAddr::new(ip, self.port)],
                }]),
                Err(_) => Err(Attempt::permanent(
                    Status::new(5, 1, 2),
                    format!("bad address literal [{literal}]"),
                )),
            };
        }
        let name = format!("{}.", domain.trim_end_matches('.'));
        let exchanges = match self.resolver.mx_lookup(name.as_str()).await {
            Ok(lookup) => {
                let mut mx: Vec<(u16, String)> = lookup
                    .answers()
                    .iter()
                    .filter_map(|record| match &record.data {
                        RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                        _ => None,
                    })
                    .collect();
                mx.sort();
                mx
            }
            Err(error) if error.is_nx_domain() => {
                return Err(Attempt::permanent(
                    Status::new(5, 4, 4),
                    format!("Host or domain name not found: {domain} does not exist"),
                ));
            }
            Err(error) if error.is_no_records_found() => Vec::new(),
            Err(error) => {
                return Err(Attempt::temporary(
                    Status::new(4, 4, 3),
                    format!("MX lookup for {domain} failed: {error}"),
                ));
            }
        };
        if exchanges.len() == 1 && exchanges[0].1 == "." {
            return Err(Attempt::permanent(
                Status::new(5, 1, 10),
                format!("{domain} does not accept mail (null MX)"),
            ));
        }
        // No MX: the domain itself is the host, at preference 0 (§5.1).
        let names: Vec<String> = if exchanges.is_empty() {
            vec![name.clone()]
        } else {
            exchanges.into_iter().map(|(_, host)| host).collect()
        };
        let mut hosts = Vec::new();
        let mut last_error = None;
        for host in names {
            match self.resolver.lookup_ip(host.as_str()).await {
                Ok(ips) => {
                    let addrs: Vec<SocketAddr> = ips
                        .iter()
                        .map(|ip| SocketAddr::new(ip, self.port))
                        .collect();
                    if !addrs.is_empty() {
                        hosts.push(Host {
                            name: host.trim_end_matches('.').to_string(),
                            addrs,
                        });
                    }
                }
                Err(error) => last_error = Some((host, error)),
            }
        }
        if !hosts.is_empty() {
            return Ok(hosts);
        }
        match last_error {
            Some((host, error)) if !error.is_nx_domain() && !error.is_no_records_found() => {
                Err(Attempt::temporary(
                    Status::new(4, 4, 3),
                    format!(
                        "address lookup for {} failed: {error}",
                        host.trim_end_matches('.')
                    ),
                ))
            }
            _ => Err(Attempt::permanent(
                Status::new(5, 4, 4),
                format!("Host or domain name not found: no address for the mail hosts of {domain}"),
            )),
        }
    }
}

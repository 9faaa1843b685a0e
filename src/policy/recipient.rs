//! Recipient address checks: `reject_non_fqdn_recipient` and
//! `reject_unknown_recipient_domain` (MX, then A/AAAA, as Postfix does).

use std::net::SocketAddr;

use hickory_resolver::TokioResolver;

use crate::mail::{Address, dns};

/// The domain part of an address, if it has one.
pub fn domain_of(address: &str) -> Option<&str> {
    Address::parse(address).map(|a| a.domain())
}

/// Postfix's notion of a fully-qualified address: `local@domain` where the domain is an
/// address literal or a dotted hostname made of valid labels.
pub fn is_fqdn_address(address: &str) -> bool {
    let Some(address) = Address::parse(address) else {
        return false;
    };
    let (local, domain) = (address.local(), address.domain());
    if local.is_empty() {
        return false;
    }
    if domain.starts_with('[') && domain.ends_with(']') {
        return true;
    }
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainStatus {
    Exists,
    /// NXDOMAIN or no MX/A/AAAA record.
    NotFound,
    /// The name servers did not answer usefully; the client should try again later.
    TempFail,
}

pub struct DomainChecker {
    resolver: TokioResolver,
}

impl DomainChecker {
    /// Uses `nameservers` when given (tests point this at a local dnsmasq), else the
    /// system's resolv.conf.
    pub fn new(nameservers: &[SocketAddr]) -> anyhow::Result<DomainChecker> {
        Ok(DomainChecker {
            resolver: dns::resolver(nameservers)?,
        })
    }

    pub async fn check(&self, domain: &str) -> DomainStatus {
        if domain.starts_with('[') {
            return DomainStatus::Exists;
        }
        // A trailing dot makes the name absolute, so no search domain is appended.
        let name = format!("{}.", domain.trim_end_matches('.'));
        match self.resolver.mx_lookup(name.as_str()).await {
            Ok(mx) if mx.answers().iter().next().is_some() => return DomainStatus::Exists,
            Ok(_) => {}
            Err(err) if err.is_nx_domain() => return DomainStatus::NotFound,
            Err(err) if err.is_no_records_found() => {}
            Err(err) => {
                tracing::warn!(domain, error = %err, "MX lookup failed");
                return DomainStatus::TempFail;
            }
        }
        match self.resolver.lookup_ip(name.as_str()).await {
            Ok(ips) if ips.iter().next().is_some() => DomainStatus::Exists,
            Ok(_) => DomainStatus::NotFound,
            Err(err) if err.is_no_records_found() => DomainStatus::NotFound,
            Err(err) => {
                tracing::warn!(domain, error = %err, "address lookup failed");
                DomainStatus::TempFail
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fqdn_addresses() {
        assert!(is_fqdn_address("bob@example.com"));
        assert!(is_fqdn_address("bob@example.com."));
        assert!(is_fqdn_address("bob@[192.0.2.1]"));
        assert!(is_fqdn_address("bob@bücher.example"));
        assert!(!is_fqdn_address("bob"));
        assert!(!is_fqdn_address("bob@localhost"));
        assert!(!is_fqdn_address("@example.com"));
        assert!(!is_fqdn_address("bob@exa..mple.com"));
        assert!(!is_fqdn_address("bob@-example.com"));
        assert!(!is_fqdn_address("bob@example-.com"));
        assert!(!is_fqdn_address("bob@ex!ample.com"));
        assert!(!is_fqdn_address("bob@[192.0.2.1"));
        assert!(is_fqdn_address("bob@my-host.example.com"));
        assert!(is_fqdn_address("bob@my_host.example.com"));
        let label = "a".repeat(63);
        assert!(is_fqdn_address(&format!("bob@{label}.example")));
        assert!(!is_fqdn_address(&format!("bob@{label}a.example")));
    }

    #[test]
    fn domain_part() {
        assert_eq!(domain_of("a@b@example.com"), Some("example.com"));
        assert_eq!(domain_of("bob"), None);
    }
}

//! Every rule a `MailServer` spec must satisfy, checked in Rust. The CRD's schema and
//! CEL rules express some of these at `kubectl apply` time, but older API servers do not
//! enforce CEL and `posthorn up` has no API server at all; here every rule is checked,
//! and every violation is reported with its field path, not just the first.

use std::collections::BTreeSet;
use std::fmt::Display;
use std::net::IpAddr;

use super::platform::check_qualified_name;
use super::spec::{MailServerSpec, QueueStorage, ServiceType};
use super::units::parse_size;
use crate::mail::ListenerKind;
use crate::mail::name::{check_address, check_dns_name, check_fqdn, split_host_port};

/// Where a listener's Service port comes from, for messages about it.
fn port_field(kind: ListenerKind) -> &'static str {
    match kind {
        // Not configurable: the standard port.
        ListenerKind::Smtp => "inbound SMTP (spec.inbound)",
        ListenerKind::Submission => "spec.submission.port",
        ListenerKind::Submissions => "spec.submission.implicitTls.port",
    }
}

/// A Kubernetes object name (RFC 1123 subdomain), as for a Secret.
pub(super) fn check_object_name(s: &str) -> Result<(), String> {
    let valid = !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric());
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a valid object name: lowercase letters, digits, '-' and '.', \
             starting and ending with a letter or digit, at most 253 characters"
        ))
    }
}

/// The name of a `MailServer` itself: it names the Service and other objects, so it
/// must be an RFC 1035 label, as Service names must.
pub(crate) fn check_resource_name(s: &str) -> Result<(), String> {
    let valid = !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric());
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a valid MailServer name: lowercase letters, digits and '-', \
             starting with a letter and ending with a letter or digit, at most 63 characters \
             (it names the Service)"
        ))
    }
}

/// A key inside a Secret.
fn check_secret_key(s: &str) -> Result<(), String> {
    let valid = !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a valid Secret key: letters, digits, '-', '.' and '_'"
        ))
    }
}

/// A network in CIDR notation: `10.0.0.0/8`, `2001:db8::/32`.
fn check_cidr(s: &str) -> Result<(), String> {
    let bad =
        || format!("{s:?} is not a network in CIDR notation, e.g. 10.0.0.0/8 or 2001:db8::/32");
    let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(format!(
            "{s:?}: prefix length {prefix} is larger than {max}"
        ));
    }
    Ok(())
}

/// A size that must parse and be positive.
pub(super) fn check_positive_size(s: &str) -> Result<(), String> {
    match parse_size(s)? {
        0 => Err("must be greater than zero".into()),
        _ => Ok(()),
    }
}

/// Collects violations, each prefixed with the field path in the manifest.
#[derive(Default)]
pub(super) struct Problems(pub(super) Vec<String>);

impl Problems {
    pub(super) fn check(&mut self, path: impl Display, result: Result<(), String>) {
        if let Err(e) = result {
            self.0.push(format!("{path}: {e}"));
        }
    }

    pub(super) fn push(&mut self, path: impl Display, message: impl Display) {
        self.0.push(format!("{path}: {message}"));
    }
}

impl MailServerSpec {
    /// Checks every rule of the API; on failure returns one human-readable message per
    /// violation, each starting with the field path (`spec.domains[1]: ...`).
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut p = Problems::default();
        self.validate_identity(&mut p);
        self.validate_tls(&mut p);
        self.validate_logins(&mut p);
        self.validate_listeners(&mut p);
        self.validate_delivery(&mut p);
        self.validate_dns(&mut p);
        self.validate_network(&mut p);
        self.validate_pods(&mut p);
        self.pod.validate(&mut p);
        self.mailboxes
            .validate(self.delivery.local.lmtp.as_deref(), &mut p);
        self.aliases.validate(&mut p);
        if p.0.is_empty() { Ok(()) } else { Err(p.0) }
    }

    /// The server's names: hostname, local domains, postmaster; and the replica count.
    fn validate_identity(&self, p: &mut Problems) {
        p.check("spec.hostname", check_fqdn(&self.hostname));
        if self.domains.is_empty() {
            p.push(
                "spec.domains",
                "at least one local domain is required, e.g. [example.com]",
            );
        }
        let mut seen = BTreeSet::new();
        for (i, domain) in self.domains.iter().enumerate() {
            p.check(format_args!("spec.domains[{i}]"), check_fqdn(domain));
            if !seen.insert(domain.to_ascii_lowercase()) {
                p.push(
                    format_args!("spec.domains[{i}]"),
                    format_args!("{domain:?} is listed more than once"),
                );
            }
        }
        if let Some(postmaster) = &self.postmaster {
            p.check("spec.postmaster", check_address(postmaster));
        }
        if self.replicas < 0 {
            p.push(
                "spec.replicas",
                format_args!("{} is negative; use 0 or more", self.replicas),
            );
        }
    }

    /// Where the certificate comes from: a Secret or an issuer, not both.
    fn validate_tls(&self, p: &mut Problems) {
        if let Some(tls) = &self.tls {
            if tls.secret_name.is_some() && tls.issuer_ref.is_some() {
                p.push(
                    "spec.tls",
                    "secretName and issuerRef are mutually exclusive: name an existing \
                     Secret or a cert-manager issuer, not both",
                );
            }
            if let Some(secret) = &tls.secret_name {
                p.check("spec.tls.secretName", check_object_name(secret));
            }
            if let Some(issuer) = &tls.issuer_ref {
                p.check("spec.tls.issuerRef.name", check_object_name(&issuer.name));
                p.check("spec.tls.issuerRef.group", check_dns_name(&issuer.group));
            }
            if let Some(secret) = &tls.ecdsa_secret_name {
                p.check("spec.tls.ecdsaSecretName", check_object_name(secret));
                if tls.secret_name.is_none() {
                    p.push(
                        "spec.tls.ecdsaSecretName",
                        "goes with secretName (with issuerRef the operator issues the \
                         ECDSA certificate itself)",
                    );
                }
            }
        }
    }

    /// The users Secret and the sender login map.
    fn validate_logins(&self, p: &mut Problems) {
        p.check(
            "spec.users.secretName",
            check_object_name(&self.users.secret_name),
        );
        p.check("spec.users.key", check_secret_key(&self.users.key));
        let mut addresses = BTreeSet::new();
        for (i, entry) in self.sender_logins.iter().enumerate() {
            let path = format!("spec.senderLogins[{i}]");
            p.check(
                format_args!("{path}.address"),
                check_address(&entry.address),
            );
            if !addresses.insert(entry.address.to_ascii_lowercase()) {
                p.push(
                    format_args!("{path}.address"),
                    format_args!(
                        "{:?} has another entry already; list all its logins in one entry",
                        entry.address
                    ),
                );
            }
            if entry.logins.is_empty() {
                p.push(
                    format_args!("{path}.logins"),
                    "at least one login is required",
                );
            }
            for (j, login) in entry.logins.iter().enumerate() {
                p.check(format_args!("{path}.logins[{j}]"), check_address(login));
            }
        }
    }

    /// The listeners' ports (distinct, as one Service exposes them all) and message size.
    fn validate_listeners(&self, p: &mut Problems) {
        let submission = &self.submission;
        if submission.port == 0 {
            p.push("spec.submission.port", "0 is not a port; use 1-65535");
        }
        if submission.implicit_tls.enabled && submission.implicit_tls.port == 0 {
            p.push(
                "spec.submission.implicitTls.port",
                "0 is not a port; use 1-65535",
            );
        }
        // The Service exposes every enabled listener, so their ports must differ.
        let ports: Vec<(&str, u16)> = self
            .listeners()
            .into_iter()
            .map(|(kind, port)| (port_field(kind), port))
            .collect();
        for (i, (path, port)) in ports.iter().enumerate() {
            if let Some((other, _)) = ports[..i].iter().find(|(_, q)| q == port) {
                p.push(path, format_args!("port {port} is already used by {other}"));
            }
        }
        p.check(
            "spec.submission.maxMessageSize",
            check_positive_size(&submission.max_message_size.0),
        );
    }

    /// Where mail goes: relay host, LMTP, and the DKIM key that signs it.
    fn validate_delivery(&self, p: &mut Problems) {
        if let Some(relay) = &self.relay {
            p.check("spec.relay.host", split_host_port(&relay.host).map(drop));
            if let Some(secret) = &relay.credentials_secret {
                p.check("spec.relay.credentialsSecret", check_object_name(secret));
            }
        }
        if let Some(lmtp) = &self.delivery.local.lmtp {
            p.check("spec.delivery.local.lmtp", split_host_port(lmtp).map(drop));
        }
        p.check("spec.dkim.selector", check_dns_name(&self.dkim.selector));
        if let Some(secret) = &self.dkim.secret_name {
            p.check("spec.dkim.secretName", check_object_name(secret));
        }
        if let Some(ed25519) = &self.dkim.ed25519 {
            if let Some(selector) = &ed25519.selector {
                p.check("spec.dkim.ed25519.selector", check_dns_name(selector));
                if *selector == self.dkim.selector {
                    p.push(
                        "spec.dkim.ed25519.selector",
                        "is spec.dkim.selector too: each key needs its own",
                    );
                }
            }
            if let Some(secret) = &ed25519.secret_name {
                p.check("spec.dkim.ed25519.secretName", check_object_name(secret));
            }
        }
    }

    /// The published SPF and DMARC records.
    fn validate_dns(&self, p: &mut Problems) {
        if let Some(spf) = &self.dns.spf
            && !spf.is_empty()
            && !spf.starts_with("v=spf1")
        {
            p.push(
                "spec.dns.spf",
                format_args!(
                    "{spf:?} is not an SPF record: it must start with \"v=spf1\" \
                     (or be empty to publish none)"
                ),
            );
        }
        if !self.dns.dmarc.is_empty() && !self.dns.dmarc.starts_with("v=DMARC1") {
            p.push(
                "spec.dns.dmarc",
                format_args!(
                    "{:?} is not a DMARC record: it must start with \"v=DMARC1\" \
                     (or be empty to publish none)",
                    self.dns.dmarc
                ),
            );
        }
    }

    /// The Service and the PROXY protocol's trusted networks.
    fn validate_network(&self, p: &mut Problems) {
        if self.service.r#type == ServiceType::ClusterIp
            && self.service.external_traffic_policy.is_some()
        {
            p.push(
                "spec.service.externalTrafficPolicy",
                "applies only to LoadBalancer and NodePort Services, not ClusterIP",
            );
        }
        let service = &self.service;
        if service.r#type == ServiceType::LoadBalancer {
            if let Some(ip) = &service.load_balancer_ip
                && ip.parse::<IpAddr>().is_err()
            {
                p.push(
                    "spec.service.loadBalancerIP",
                    format_args!("{ip:?} is not an IP address"),
                );
            }
            if let Some(class) = &service.load_balancer_class {
                p.check(
                    "spec.service.loadBalancerClass",
                    check_qualified_name(class),
                );
            }
            for (i, cidr) in service
                .load_balancer_source_ranges
                .iter()
                .flatten()
                .enumerate()
            {
                p.check(
                    format_args!("spec.service.loadBalancerSourceRanges[{i}]"),
                    check_cidr(cidr),
                );
            }
        } else {
            for (field, set) in [
                ("loadBalancerIP", service.load_balancer_ip.is_some()),
                ("loadBalancerClass", service.load_balancer_class.is_some()),
                (
                    "loadBalancerSourceRanges",
                    service.load_balancer_source_ranges.is_some(),
                ),
            ] {
                if set {
                    p.push(
                        format_args!("spec.service.{field}"),
                        "applies only to LoadBalancer Services",
                    );
                }
            }
        }
        for (i, cidr) in self.proxy_protocol.trusted_cidrs.iter().enumerate() {
            p.check(
                format_args!("spec.proxyProtocol.trustedCIDRs[{i}]"),
                check_cidr(cidr),
            );
        }
    }

    /// What the pods run and store: the queue's volume and the image.
    fn validate_pods(&self, p: &mut Problems) {
        let queue = &self.queue;
        if let Some(size) = &queue.size {
            p.check("spec.queue.size", check_positive_size(&size.0));
        }
        let grace = self.shutdown.grace_period_seconds;
        if !(1..=3600).contains(&grace) {
            p.push(
                "spec.shutdown.gracePeriodSeconds",
                format_args!("{grace} is out of range; use 1 to 3600"),
            );
        }
        if let Some(class) = &queue.storage_class_name {
            if queue.storage == QueueStorage::PersistentVolumeClaim {
                p.check("spec.queue.storageClassName", check_object_name(class));
            } else {
                p.push(
                    "spec.queue.storageClassName",
                    "applies only when storage is PersistentVolumeClaim",
                );
            }
        }
        if let Some(image) = &self.image
            && (image.is_empty() || image.contains(char::is_whitespace))
        {
            p.push(
                "spec.image",
                format_args!("{image:?} is not an image reference"),
            );
        }
    }
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;

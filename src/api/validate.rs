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
mod tests {
    use super::*;
    use crate::api::spec::{
        DNS_NAME_PATTERN, Ed25519DkimSpec, ExternalTrafficPolicy, FQDN_PATTERN, IssuerRef,
        OBJECT_NAME_PATTERN, SECRET_KEY_PATTERN, SenderLogin, TlsSpec,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn valid() -> MailServerSpec {
        serde_saphyr::from_str(
            "hostname: mail.example.com\ndomains: [example.com, example.org]\n\
             users: {secretName: mail-users}\n\
             senderLogins: [{address: info@example.com, logins: [alice@example.com]}]\n",
        )
        .unwrap()
    }

    #[test]
    fn valid_spec_passes() {
        assert_eq!(valid().validate(), Ok(()));
    }

    /// Each rule: a spec breaking only that rule, the path of the complaint and a phrase
    /// a human needs to fix it.
    #[test]
    fn every_rule_fails_with_its_message() {
        type Breaker = fn(&mut MailServerSpec);
        let cases: Vec<(Breaker, &str, &str)> = vec![
            (
                |s| s.hostname = "mail".into(),
                "spec.hostname",
                "not fully qualified",
            ),
            (|s| s.hostname = "".into(), "spec.hostname", "is empty"),
            (
                |s| s.hostname = "mail.example.com.".into(),
                "spec.hostname",
                "end with a dot",
            ),
            (
                |s| s.hostname = "mail..example.com".into(),
                "spec.hostname",
                "empty label",
            ),
            (
                |s| s.hostname = "-mail.example.com".into(),
                "spec.hostname",
                "starting or ending with '-'",
            ),
            (
                |s| s.hostname = "mail.exämple.com".into(),
                "spec.hostname",
                "xn-- form",
            ),
            (
                |s| s.hostname = "192.0.2.1".into(),
                "spec.hostname",
                "IP address",
            ),
            (
                |s| s.hostname = format!("{}.example.com", "a".repeat(64)),
                "spec.hostname",
                "longer than 63",
            ),
            (
                |s| s.hostname = format!("{}com", "abcdefghi.".repeat(26)),
                "spec.hostname",
                "longer than 253",
            ),
            (
                |s| s.domains.clear(),
                "spec.domains",
                "at least one local domain",
            ),
            (
                |s| s.domains[1] = "example_org".into(),
                "spec.domains[1]",
                "contains '_'",
            ),
            (
                |s| s.domains[1] = "EXAMPLE.com".into(),
                "spec.domains[1]",
                "listed more than once",
            ),
            (|s| s.replicas = -1, "spec.replicas", "negative"),
            (
                |s| {
                    s.tls = Some(TlsSpec {
                        secret_name: Some("mail-tls".into()),
                        issuer_ref: Some(IssuerRef {
                            kind: Default::default(),
                            name: "letsencrypt".into(),
                            group: "cert-manager.io".into(),
                        }),
                        ecdsa_secret_name: None,
                    })
                },
                "spec.tls",
                "mutually exclusive",
            ),
            (
                |s| {
                    s.tls = Some(TlsSpec {
                        secret_name: Some("Mail_TLS".into()),
                        issuer_ref: None,
                        ecdsa_secret_name: None,
                    })
                },
                "spec.tls.secretName",
                "not a valid object name",
            ),
            (
                |s| {
                    s.tls = Some(TlsSpec {
                        secret_name: None,
                        issuer_ref: Some(IssuerRef {
                            kind: Default::default(),
                            name: "".into(),
                            group: "cert-manager.io".into(),
                        }),
                        ecdsa_secret_name: None,
                    })
                },
                "spec.tls.issuerRef.name",
                "not a valid object name",
            ),
            (
                |s| {
                    s.tls = Some(TlsSpec {
                        secret_name: None,
                        issuer_ref: None,
                        ecdsa_secret_name: Some("mail-tls-ecdsa".into()),
                    })
                },
                "spec.tls.ecdsaSecretName",
                "goes with secretName",
            ),
            (
                |s| {
                    s.tls = Some(TlsSpec {
                        secret_name: Some("mail-tls".into()),
                        issuer_ref: None,
                        ecdsa_secret_name: Some("EC".into()),
                    })
                },
                "spec.tls.ecdsaSecretName",
                "not a valid object name",
            ),
            (
                |s| s.users.secret_name = "".into(),
                "spec.users.secretName",
                "not a valid object name",
            ),
            (
                |s| s.users.key = "pass wd".into(),
                "spec.users.key",
                "not a valid Secret key",
            ),
            (
                |s| s.postmaster = Some("admin@example.com\r\n250 injected".into()),
                "spec.postmaster",
                "contains '\\r'",
            ),
            (
                |s| s.postmaster = Some("postmaster".into()),
                "spec.postmaster",
                "not a mail address",
            ),
            (
                |s| s.sender_logins[0].address = "info".into(),
                "spec.senderLogins[0].address",
                "not a mail address",
            ),
            (
                |s| s.sender_logins[0].address = "@example.com".into(),
                "spec.senderLogins[0].address",
                "empty local part",
            ),
            (
                |s| s.sender_logins[0].address = "in fo@example.com".into(),
                "spec.senderLogins[0].address",
                "contains ' '",
            ),
            (
                |s| s.sender_logins[0].address = "a,b@example.com".into(),
                "spec.senderLogins[0].address",
                "contains ','",
            ),
            (
                |s| s.sender_logins[0].address = "info@example".into(),
                "spec.senderLogins[0].address",
                "bad domain",
            ),
            (
                |s| s.sender_logins[0].address = format!("{}@example.com", "a".repeat(65)),
                "spec.senderLogins[0].address",
                "longer than 64",
            ),
            (
                |s| s.sender_logins[0].logins.clear(),
                "spec.senderLogins[0].logins",
                "at least one login",
            ),
            (
                |s| s.sender_logins[0].logins.push("bob".into()),
                "spec.senderLogins[0].logins[1]",
                "not a mail address",
            ),
            (
                |s| {
                    s.sender_logins.push(SenderLogin {
                        address: "Info@example.com".into(),
                        logins: vec!["bob@example.com".into()],
                    })
                },
                "spec.senderLogins[1].address",
                "in one entry",
            ),
            (
                |s| s.submission.port = 0,
                "spec.submission.port",
                "0 is not a port",
            ),
            (
                |s| s.submission.implicit_tls.port = 0,
                "spec.submission.implicitTls.port",
                "0 is not a port",
            ),
            (
                |s| s.submission.port = 25,
                "spec.submission.port",
                "already used by inbound SMTP",
            ),
            (
                |s| s.submission.implicit_tls.port = 587,
                "spec.submission.implicitTls.port",
                "already used by spec.submission.port",
            ),
            (
                |s| s.submission.max_message_size = Quantity("25MB".into()),
                "spec.submission.maxMessageSize",
                "unknown suffix",
            ),
            (
                |s| s.submission.max_message_size = Quantity("0".into()),
                "spec.submission.maxMessageSize",
                "greater than zero",
            ),
            (
                |s| {
                    s.relay = Some(crate::api::spec::RelaySpec {
                        host: "smtp.provider.example".into(),
                        credentials_secret: None,
                    })
                },
                "spec.relay.host",
                "has no port",
            ),
            (
                |s| {
                    s.relay = Some(crate::api::spec::RelaySpec {
                        host: "smtp.provider.example:99999".into(),
                        credentials_secret: None,
                    })
                },
                "spec.relay.host",
                "out of range 1-65535",
            ),
            (
                |s| {
                    s.relay = Some(crate::api::spec::RelaySpec {
                        host: "smtp.provider.example:587".into(),
                        credentials_secret: Some("Relay".into()),
                    })
                },
                "spec.relay.credentialsSecret",
                "not a valid object name",
            ),
            (
                |s| s.delivery.local.lmtp = Some("dovecot".into()),
                "spec.delivery.local.lmtp",
                "has no port",
            ),
            (
                |s| s.dkim.selector = "a b".into(),
                "spec.dkim.selector",
                "contains ' '",
            ),
            (
                |s| s.dkim.secret_name = Some("DKIM".into()),
                "spec.dkim.secretName",
                "not a valid object name",
            ),
            (
                |s| {
                    s.dkim.ed25519 = Some(Ed25519DkimSpec {
                        selector: Some("posthorn".into()),
                        secret_name: None,
                    })
                },
                "spec.dkim.ed25519.selector",
                "is spec.dkim.selector too",
            ),
            (
                |s| {
                    s.dkim.ed25519 = Some(Ed25519DkimSpec {
                        selector: Some("ed 1".into()),
                        secret_name: None,
                    })
                },
                "spec.dkim.ed25519.selector",
                "contains ' '",
            ),
            (
                |s| {
                    s.dkim.ed25519 = Some(Ed25519DkimSpec {
                        selector: None,
                        secret_name: Some("ED".into()),
                    })
                },
                "spec.dkim.ed25519.secretName",
                "not a valid object name",
            ),
            (
                |s| s.dns.spf = Some("mx -all".into()),
                "spec.dns.spf",
                "must start with \"v=spf1\"",
            ),
            (
                |s| s.dns.dmarc = "p=none".into(),
                "spec.dns.dmarc",
                "must start with \"v=DMARC1\"",
            ),
            (
                |s| {
                    s.service.r#type = ServiceType::ClusterIp;
                    s.service.external_traffic_policy = Some(ExternalTrafficPolicy::Local);
                },
                "spec.service.externalTrafficPolicy",
                "not ClusterIP",
            ),
            (
                |s| s.service.load_balancer_ip = Some("mail.example.com".into()),
                "spec.service.loadBalancerIP",
                "not an IP address",
            ),
            (
                |s| s.service.load_balancer_class = Some("Example.com/lb".into()),
                "spec.service.loadBalancerClass",
                "DNS subdomain",
            ),
            (
                |s| s.service.load_balancer_source_ranges = Some(vec!["192.0.2.0/33".into()]),
                "spec.service.loadBalancerSourceRanges[0]",
                "larger than 32",
            ),
            (
                |s| {
                    s.service.r#type = ServiceType::NodePort;
                    s.service.load_balancer_source_ranges = Some(vec![]);
                },
                "spec.service.loadBalancerSourceRanges",
                "only to LoadBalancer",
            ),
            (
                |s| {
                    s.service.r#type = ServiceType::ClusterIp;
                    s.service.load_balancer_ip = Some("192.0.2.1".into());
                },
                "spec.service.loadBalancerIP",
                "only to LoadBalancer",
            ),
            (
                |s| {
                    s.pod
                        .labels
                        .insert("app.kubernetes.io/instance".into(), "other".into());
                },
                "spec.pod.labels[app.kubernetes.io/instance]",
                "set by the operator",
            ),
            (
                |s| {
                    s.pod.labels.insert("team".into(), "mail team".into());
                },
                "spec.pod.labels[team]",
                "not a valid label value",
            ),
            (
                |s| {
                    s.pod.annotations.insert("example.com/".into(), "x".into());
                },
                "spec.pod.annotations[example.com/]",
                "not a valid key",
            ),
            (
                |s| {
                    s.pod.image_pull_secrets = vec![Default::default()];
                },
                "spec.pod.imagePullSecrets[0].name",
                "not a valid object name",
            ),
            (
                |s| s.pod.priority_class_name = Some("High".into()),
                "spec.pod.priorityClassName",
                "not a valid object name",
            ),
            (
                |s| s.proxy_protocol.trusted_cidrs = vec!["10.0.0.0".into()],
                "spec.proxyProtocol.trustedCIDRs[0]",
                "CIDR notation",
            ),
            (
                |s| s.proxy_protocol.trusted_cidrs = vec!["10.0.0.0/33".into()],
                "spec.proxyProtocol.trustedCIDRs[0]",
                "larger than 32",
            ),
            (
                |s| s.proxy_protocol.trusted_cidrs = vec!["2001:db8::/129".into()],
                "spec.proxyProtocol.trustedCIDRs[0]",
                "larger than 128",
            ),
            (
                |s| s.shutdown.grace_period_seconds = 0,
                "spec.shutdown.gracePeriodSeconds",
                "out of range",
            ),
            (
                |s| s.queue.size = Some(Quantity("lots".into())),
                "spec.queue.size",
                "not a size",
            ),
            (
                |s| {
                    s.queue.storage = QueueStorage::EmptyDir;
                    s.queue.storage_class_name = Some("fast".into());
                },
                "spec.queue.storageClassName",
                "only when storage is PersistentVolumeClaim",
            ),
            (
                |s| s.image = Some("".into()),
                "spec.image",
                "not an image reference",
            ),
            (
                |s| s.image = Some("posthorn: latest".into()),
                "spec.image",
                "not an image reference",
            ),
        ];
        for (i, (breaker, path, phrase)) in cases.into_iter().enumerate() {
            let mut spec = valid();
            breaker(&mut spec);
            let problems = spec
                .validate()
                .expect_err(&format!("case {i} ({path}) passed"));
            assert_eq!(problems.len(), 1, "case {i}: {problems:?}");
            assert!(
                problems[0].starts_with(&format!("{path}: ")) && problems[0].contains(phrase),
                "case {i}: expected {path}: ...{phrase}..., got {:?}",
                problems[0]
            );
        }
    }

    #[test]
    fn accepts_what_the_rules_allow() {
        let mut spec = valid();
        spec.inbound.enabled = false;
        spec.submission.port = 25; // port 25 is free when inbound is off
        spec.submission.implicit_tls.enabled = false;
        spec.submission.implicit_tls.port = 25; // and the port of a disabled listener is moot
        spec.dns.spf = Some(String::new());
        spec.dns.dmarc = String::new();
        spec.proxy_protocol.trusted_cidrs = vec!["10.0.0.0/8".into(), "2001:db8::/32".into()];
        spec.queue.size = Some(Quantity("1Gi".into()));
        spec.queue.storage_class_name = Some("fast-ssd".into());
        spec.shutdown.grace_period_seconds = 3600;
        spec.relay = Some(crate::api::spec::RelaySpec {
            host: "[2001:db8::25]:465".into(),
            credentials_secret: Some("relay-credentials".into()),
        });
        spec.delivery.local.lmtp = Some("dovecot.mail.svc:24".into());
        spec.dkim.selector = "2024.posthorn".into();
        spec.image = Some("registry.example/posthorn:1.0".into());
        spec.replicas = 0;
        spec.service.load_balancer_ip = Some("2001:db8::25".into());
        spec.service.load_balancer_class = Some("internal-vip".into());
        spec.service.load_balancer_source_ranges = Some(vec!["192.0.2.0/24".into()]);
        spec.pod
            .labels
            .insert("example.com/team".into(), "mail".into());
        spec.pod.labels.insert("tier".into(), String::new());
        spec.pod
            .annotations
            .insert("team".into(), "any value: at all".into());
        assert_eq!(spec.validate(), Ok(()));
    }

    #[test]
    fn reports_every_problem_at_once() {
        let mut spec = valid();
        spec.hostname = "mail".into();
        spec.replicas = -2;
        spec.dns.dmarc = "nope".into();
        let problems = spec.validate().unwrap_err();
        let paths: Vec<&str> = problems
            .iter()
            .map(|p| p.split(':').next().unwrap())
            .collect();
        assert_eq!(paths, ["spec.hostname", "spec.replicas", "spec.dns.dmarc"]);
    }

    /// The schema patterns the API server checks and the Rust checks agree.
    #[test]
    fn schema_patterns_agree_with_rust_checks() {
        let names = [
            "example.com",
            "mail.example.com",
            "a.b",
            "xn--bcher-kva.example",
            "EXAMPLE.COM",
            "a-b.c-d.example",
            "mail",
            "localhost",
            "posthorn",
            "2024.posthorn",
            "192.0.2.1",
            "example.123",
            "-a.example",
            "a-.example",
            "a..example",
            ".example",
            "example.",
            "exa_mple.com",
            "exämple.com",
            "a b.com",
            "mail-tls",
            "mail.tls",
            "Mail",
            "a",
            "passwd",
            "tls.crt",
            "my_key",
            "",
        ];
        let agree = |pattern: &str, check: fn(&str) -> Result<(), String>| {
            let re = regex::Regex::new(pattern).unwrap();
            for name in names {
                assert_eq!(
                    re.is_match(name),
                    check(name).is_ok(),
                    "{pattern} on {name:?}"
                );
            }
        };
        agree(FQDN_PATTERN, check_fqdn);
        agree(DNS_NAME_PATTERN, check_dns_name);
        agree(OBJECT_NAME_PATTERN, check_object_name);
        agree(SECRET_KEY_PATTERN, check_secret_key);
        let long_label = format!("{}.example", "a".repeat(64));
        assert!(
            !regex::Regex::new(FQDN_PATTERN)
                .unwrap()
                .is_match(&long_label)
        );
        assert!(check_fqdn(&long_label).is_err());
    }

    #[test]
    fn checks_resource_names() {
        assert!(check_resource_name("mail").is_ok());
        assert!(check_resource_name("mail-2").is_ok());
        for bad in [
            "",
            "Mail",
            "2mail",
            "mail.example",
            "mail-",
            &"a".repeat(64),
        ] {
            assert!(check_resource_name(bad).is_err(), "{bad:?}");
        }
    }
}

//! Tests of `validate`: every rule with its message.

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

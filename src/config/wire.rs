//! Config strings that reach the wire: the hostname in the banner, replies, `Received:`
//! and reports, the domains and the postmaster address in envelopes and paths, the DKIM
//! selector in signatures, the next hops in reports. A CR LF in any of them would let the
//! config file inject reply lines or headers, so `serve` refuses to start with one,
//! naming the key, by the same rules the CRD applies to the fields they come from.

use anyhow::bail;

use super::Config;
use crate::mail::name::{check_address, check_dns_name, check_fqdn, split_host_port};

impl Config {
    pub(super) fn check_wire_strings(&self) -> anyhow::Result<()> {
        let mut checks: Vec<(String, Result<(), String>)> =
            vec![("hostname".into(), check_fqdn(&self.hostname))];
        for (i, domain) in self.domains.iter().enumerate() {
            checks.push((format!("domains[{i}]"), check_fqdn(domain)));
        }
        if let Some(postmaster) = &self.postmaster {
            checks.push(("postmaster".into(), check_address(postmaster)));
        }
        if let Some(abuse) = &self.abuse {
            checks.push(("abuse".into(), check_address(abuse)));
        }
        if let Some(domain) = self.srs.as_ref().and_then(|s| s.domain.as_ref()) {
            checks.push(("srs.domain".into(), check_fqdn(domain)));
        }
        if let Some(dkim) = &self.dkim {
            checks.push(("dkim.selector".into(), check_dns_name(&dkim.selector)));
            if let Some(selector) = dkim.ed25519_selector() {
                let check = check_dns_name(&selector).and_then(|()| {
                    if selector == dkim.selector {
                        Err(format!(
                            "{selector:?} is dkim.selector too: each key needs its own"
                        ))
                    } else {
                        Ok(())
                    }
                });
                checks.push(("dkim.ed25519.selector".into(), check));
            }
            for (i, domain) in dkim.domains.iter().enumerate() {
                checks.push((format!("dkim.domains[{i}]"), check_fqdn(domain)));
            }
        }
        if let Some(relay) = &self.delivery.relay {
            let host = split_host_port(&relay.host).map(drop);
            checks.push(("delivery.relay.host".into(), host));
        }
        if let Some(lmtp) = &self.delivery.lmtp {
            let target = match lmtp.strip_prefix("unix:") {
                Some(path) => check_path(path),
                None => split_host_port(lmtp).map(drop),
            };
            checks.push(("delivery.lmtp".into(), target));
        }
        for (key, result) in checks {
            if let Err(e) = result {
                bail!("{key}: {e}");
            }
        }
        Ok(())
    }
}

/// A socket path: named in delivery reports, so one line of printable text.
fn check_path(path: &str) -> Result<(), String> {
    match path.chars().find(|c| c.is_control()) {
        _ if path.is_empty() => Err("\"unix:\" needs a socket path".into()),
        Some(c) => Err(format!("{path:?} contains the control character {c:?}")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MINIMAL;

    fn config() -> Config {
        let c: Config = serde_saphyr::from_str(MINIMAL).unwrap();
        c.validate().unwrap();
        c
    }

    /// The one-line error `validate` gives after `change`.
    fn error(change: impl FnOnce(&mut Config)) -> String {
        let mut c = config();
        change(&mut c);
        let err = format!("{:#}", c.validate().unwrap_err());
        assert!(!err.contains(['\r', '\n']), "{err:?}");
        err
    }

    fn dkim(selector: &str, domains: &[&str]) -> Option<crate::config::DkimConfig> {
        Some(crate::config::DkimConfig {
            selector: selector.into(),
            key_file: "/k".into(),
            domains: domains.iter().map(|d| d.to_string()).collect(),
            ed25519: None,
        })
    }

    #[test]
    fn hostname_with_crlf_or_bad_syntax_is_refused() {
        let err = error(|c| c.hostname = "mail.example.com\r\n250 injected".into());
        assert!(
            err.starts_with(r#"hostname: "mail.example.com\r\n250 injected" contains '\r'"#),
            "{err}"
        );
        for bad in [
            "mail",
            "mail..example.com",
            "-mail.example.com",
            "mail.example.com.",
            "",
            "mail_1.example.com",
            "192.0.2.1",
            "mail.example.com\0",
        ] {
            let err = error(|c| c.hostname = bad.into());
            assert!(err.starts_with("hostname: "), "{bad:?}: {err}");
        }
    }

    #[test]
    fn domains_are_dns_names() {
        let err = error(|c| c.domains.push("example.org\n".into()));
        assert!(
            err.starts_with(r#"domains[1]: "example.org\n" contains '\n'"#),
            "{err}"
        );
        let err = error(|c| c.domains[0] = "../etc".into());
        assert!(err.starts_with("domains[0]: "), "{err}");
    }

    #[test]
    fn postmaster_is_an_address() {
        let mut c = config();
        c.postmaster = Some("admin@example.net".into());
        c.validate().unwrap();
        for bad in [
            "admin@example.net\r\nRCPT TO:<x@y.z>",
            "admin",
            "ad min@example.net",
            "<admin@example.net>",
            "admin@localhost",
        ] {
            let err = error(|c| c.postmaster = Some(bad.into()));
            assert!(err.starts_with("postmaster: "), "{bad:?}: {err}");
        }
    }

    #[test]
    fn dkim_selector_and_domains_are_dns_names() {
        let mut c = config();
        c.dkim = dkim("s1.2026", &["example.com"]);
        c.validate().unwrap();
        let err = error(|c| c.dkim = dkim("s1\r\nX-Injected: 1", &[]));
        assert!(
            err.starts_with(r#"dkim.selector: "s1\r\nX-Injected: 1" contains '\r'"#),
            "{err}"
        );
        let err = error(|c| c.dkim = dkim("s1", &["example.com", "a b.example"]));
        assert!(err.starts_with("dkim.domains[1]: "), "{err}");

        let ed25519 = |selector: Option<&str>| {
            let mut d = dkim("s1", &[]);
            if let Some(d) = &mut d {
                d.ed25519 = Some(crate::config::Ed25519DkimConfig {
                    selector: selector.map(String::from),
                    key_file: "/ed".into(),
                });
            }
            d
        };
        c.dkim = ed25519(None);
        c.validate().unwrap();
        let err = error(|c| c.dkim = ed25519(Some("s1")));
        assert!(
            err.starts_with(r#"dkim.ed25519.selector: "s1" is dkim.selector too"#),
            "{err}"
        );
        let err = error(|c| c.dkim = ed25519(Some("s\n")));
        assert!(err.starts_with("dkim.ed25519.selector: "), "{err}");
    }

    #[test]
    fn next_hops_are_host_port_or_a_socket_path() {
        let mut c = config();
        c.delivery.lmtp = Some("unix:/run/dovecot/lmtp".into());
        c.delivery.relay = Some(crate::config::RelayConfig {
            host: "[2001:db8::1]:587".into(),
            tls: None,
            ca_file: None,
            credentials_dir: None,
        });
        c.validate().unwrap();
        let err = error(|c| {
            c.delivery.relay = Some(crate::config::RelayConfig {
                host: "smtp\r\n.example.net:587".into(),
                tls: None,
                ca_file: None,
                credentials_dir: None,
            })
        });
        assert!(err.starts_with("delivery.relay.host: "), "{err}");
        for bad in [
            "unix:/run/lmtp\r\n",
            "unix:",
            "lmtp\n.example.net:24",
            "lmtp.example.net",
        ] {
            let err = error(|c| c.delivery.lmtp = Some(bad.into()));
            assert!(err.starts_with("delivery.lmtp: "), "{bad:?}: {err}");
        }
    }

    #[test]
    fn smtp_listener_needs_somewhere_for_postmaster() {
        let err = error(|c| c.domains.clear());
        assert!(err.starts_with("postmaster: "), "{err}");
        let mut c = config();
        c.domains.clear();
        c.postmaster = Some("admin@example.net".into());
        c.validate().unwrap();
        assert_eq!(c.postmaster().as_deref(), Some("admin@example.net"));
        // Without port 25 there is nothing to require.
        c.postmaster = None;
        c.listeners.smtp = None;
        c.validate().unwrap();
        assert_eq!(
            config().postmaster().as_deref(),
            Some("postmaster@example.com")
        );
    }
}

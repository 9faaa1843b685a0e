//! Access policy, evaluated at RCPT time like Postfix with `smtpd_delay_reject = yes`:
//! client restrictions, then the sender login check, then recipient restrictions.

mod postmaster;
pub mod recipient;
pub mod sender;

use std::sync::Arc;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::mail::{Address, ListenerKind};
use crate::reload::{self, Watched};
use recipient::{DomainChecker, DomainStatus};
use sender::SenderLoginMap;

/// A refused RCPT: the full SMTP reply line, and a short reason for metrics and logs.
#[derive(Debug, PartialEq, Eq)]
pub struct Reject {
    pub reply: String,
    pub reason: &'static str,
}

fn reject(reason: &'static str, reply: String) -> Result<(), Reject> {
    Err(Reject { reply, reason })
}

/// What the session knows when a recipient is given.
pub struct RcptContext<'a> {
    pub kind: ListenerKind,
    /// `name[ip]` as Postfix prints clients (we never do reverse lookups: `unknown`).
    pub client: &'a str,
    pub login: Option<&'a str>,
    pub sender: &'a str,
}

pub struct Policy {
    senders: Option<Arc<Watched<SenderLoginMap>>>,
    domains: DomainChecker,
    local_domains: Vec<String>,
    /// Where mail for postmaster goes; see `postmaster_for`.
    postmaster: Option<String>,
}

impl Policy {
    pub fn new(config: &Config) -> anyhow::Result<Policy> {
        let senders = config
            .sender_login_map
            .as_deref()
            .map(|path| {
                reload::watch_file("sender login map", path, config.reload_interval, |p| {
                    SenderLoginMap::parse(&std::fs::read_to_string(p)?)
                })
            })
            .transpose()?;
        Ok(Policy {
            senders,
            domains: DomainChecker::new(&config.dns.nameservers)?,
            local_domains: config
                .domains
                .iter()
                .map(|d| d.to_ascii_lowercase())
                .collect(),
            postmaster: config.postmaster(),
        })
    }

    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.local_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain))
    }

    fn may_send(&self, login: &str, sender: &str) -> bool {
        match &self.senders {
            Some(map) => map.get().may_send(login, sender),
            None => SenderLoginMap::default().may_send(login, sender),
        }
    }

    pub async fn check_rcpt(
        &self,
        ctx: &RcptContext<'_>,
        rcpt: &str,
        auth: &Authenticator,
    ) -> Result<(), Reject> {
        if self.postmaster_for(rcpt).is_some() {
            return match ctx.kind {
                ListenerKind::Smtp => Ok(()),
                ListenerKind::Submission | ListenerKind::Submissions => self.check_submitter(ctx),
            };
        }
        match ctx.kind {
            ListenerKind::Submission | ListenerKind::Submissions => {
                self.check_submitter(ctx)?;
                // reject_non_fqdn_recipient, reject_unknown_recipient_domain,
                // permit_sasl_authenticated
                self.check_fqdn(rcpt)?;
                self.check_domain_or_user(rcpt, auth).await
            }
            ListenerKind::Smtp => {
                self.check_fqdn(rcpt)?;
                let domain = recipient::domain_of(rcpt).unwrap_or_default();
                if !self.is_local_domain(domain) {
                    return reject(
                        "relay_denied",
                        format!("454 4.7.1 <{rcpt}>: Relay access denied"),
                    );
                }
                self.check_domain_or_user(rcpt, auth).await
            }
        }
    }

    /// Submission's client and sender rules: an authenticated client, sending as an
    /// address its login owns.
    fn check_submitter(&self, ctx: &RcptContext<'_>) -> Result<(), Reject> {
        // smtpd_client_restrictions = permit_sasl_authenticated, reject
        let Some(login) = ctx.login else {
            return reject(
                "client_rejected",
                format!(
                    "554 5.7.1 <{}>: Client host rejected: Access denied",
                    ctx.client
                ),
            );
        };
        // smtpd_sender_restrictions = reject_sender_login_mismatch
        if !self.may_send(login, ctx.sender) {
            return reject(
                "sender_mismatch",
                format!(
                    "553 5.7.1 <{}>: Sender address rejected: not owned by user {login}",
                    ctx.sender
                ),
            );
        }
        Ok(())
    }

    fn check_fqdn(&self, rcpt: &str) -> Result<(), Reject> {
        if recipient::is_fqdn_address(rcpt) {
            return Ok(());
        }
        reject(
            "non_fqdn",
            format!("504 5.5.2 <{rcpt}>: Recipient address rejected: need fully-qualified address"),
        )
    }

    /// Local domains: the user must exist (`smtpd_reject_unlisted_recipient`). Other
    /// domains must resolve (`reject_unknown_recipient_domain`).
    async fn check_domain_or_user(&self, rcpt: &str, auth: &Authenticator) -> Result<(), Reject> {
        let domain = recipient::domain_of(rcpt).unwrap_or_default();
        if self.is_local_domain(domain) {
            if auth.user_exists(&strip_extension(rcpt)) {
                return Ok(());
            }
            return reject(
                "unknown_user",
                format!(
                    "550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in virtual mailbox table"
                ),
            );
        }
        match self.domains.check(domain).await {
            DomainStatus::Exists => Ok(()),
            DomainStatus::NotFound => reject(
                "unknown_domain",
                format!("450 4.1.2 <{rcpt}>: Recipient address rejected: Domain not found"),
            ),
            // Postfix words a temporary failure (DNS_RETRY) as NXDOMAIN, always with a
            // 450: the metric reason tells them apart.
            DomainStatus::TempFail => reject(
                "dns_tempfail",
                format!("450 4.1.2 <{rcpt}>: Recipient address rejected: Domain not found"),
            ),
        }
    }
}

/// `user+tag@domain` → `user@domain` (Postfix `recipient_delimiter = +`).
pub fn strip_extension(address: &str) -> String {
    Address::parse(address).map_or_else(|| address.to_string(), |a| a.without_extension())
}

#[cfg(test)]
mod rcpt_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_is_stripped() {
        assert_eq!(strip_extension("bob+lists@example.com"), "bob@example.com");
        assert_eq!(strip_extension("bob@example.com"), "bob@example.com");
        assert_eq!(strip_extension("bob"), "bob");
        // As delivery routes it: a leading delimiter is part of the name.
        assert_eq!(strip_extension("+x@example.com"), "+x@example.com");
    }
}

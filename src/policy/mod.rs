//! Access policy, evaluated at RCPT time like Postfix with `smtpd_delay_reject = yes`:
//! client restrictions, then the sender login check, then recipient restrictions.

pub mod aliases;
mod postmaster;
pub mod recipient;
mod resolve;
pub mod sender;
mod table;

use std::sync::Arc;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::mail::srs::Srs;
use crate::mail::{Delimiter, ListenerKind};
use crate::reload::{self, Watched};
use aliases::AliasTable;
use recipient::{DomainChecker, DomainStatus};
pub use resolve::strip_extension;
use sender::SenderLoginMap;

/// A refused RCPT: the full SMTP reply line, and a short reason for metrics and logs.
#[derive(Debug, PartialEq, Eq)]
pub struct Reject {
    pub reply: String,
    pub reason: &'static str,
}

fn reject<T>(reason: &'static str, reply: String) -> Result<T, Reject> {
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
    aliases: Option<Arc<Watched<AliasTable>>>,
    /// Logins may send as the aliases that name them.
    send_as_alias: bool,
    srs: Option<Arc<Watched<Srs>>>,
    delimiter: Delimiter,
    domains: DomainChecker,
    local_domains: Vec<String>,
    /// Where mail for postmaster and abuse goes; see `reserved_target`.
    postmaster: Option<String>,
    abuse: Option<String>,
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
        let aliases = config
            .aliases
            .file
            .as_deref()
            .map(|path| {
                reload::watch_file("aliases", path, config.reload_interval, |p| {
                    let text = std::fs::read_to_string(p)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
                    AliasTable::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
                })
            })
            .transpose()?;
        Ok(Policy {
            senders,
            aliases,
            send_as_alias: config.aliases.send_as_alias,
            srs: config.watch_srs()?,
            delimiter: config.delimiter(),
            domains: DomainChecker::new(&config.dns.nameservers)?,
            local_domains: config
                .domains
                .iter()
                .map(|d| d.to_ascii_lowercase())
                .collect(),
            postmaster: config.postmaster(),
            abuse: config.abuse(),
        })
    }

    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.local_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain))
    }

    /// `reject_sender_login_mismatch`: the sender login map, the login's own address
    /// with any extension, and (with `sendAsAlias`) the aliases naming the login.
    fn may_send(&self, login: &str, sender: &str, auth: &Authenticator) -> bool {
        let listed = match &self.senders {
            Some(map) => map.get().may_send(login, sender),
            None => SenderLoginMap::default().may_send(login, sender),
        };
        listed
            || self.strip_extension(sender).eq_ignore_ascii_case(login)
            || self.send_as_alias && self.alias_names(sender, login, auth)
    }

    pub async fn check_rcpt(
        &self,
        ctx: &RcptContext<'_>,
        rcpt: &str,
        auth: &Authenticator,
    ) -> Result<(), Reject> {
        if self.reserved_target(rcpt).is_some() {
            return match ctx.kind {
                ListenerKind::Smtp => Ok(()),
                ListenerKind::Submission | ListenerKind::Submissions => {
                    self.check_submitter(ctx, auth)
                }
            };
        }
        match ctx.kind {
            ListenerKind::Submission | ListenerKind::Submissions => {
                self.check_submitter(ctx, auth)?;
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
    fn check_submitter(&self, ctx: &RcptContext<'_>, auth: &Authenticator) -> Result<(), Reject> {
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
        if !self.may_send(login, ctx.sender, auth) {
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

    /// Local domains: the user or an alias must exist (`smtpd_reject_unlisted_recipient`).
    /// Other domains must resolve (`reject_unknown_recipient_domain`).
    async fn check_domain_or_user(&self, rcpt: &str, auth: &Authenticator) -> Result<(), Reject> {
        let domain = recipient::domain_of(rcpt).unwrap_or_default();
        if self.is_local_domain(domain) {
            if auth.user_exists(&self.strip_extension(rcpt)) || self.resolve(rcpt, auth)?.is_some()
            {
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

#[cfg(test)]
mod domain_check_tests;
#[cfg(test)]
mod rcpt_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_is_stripped() {
        let strip = |address: &str| strip_extension(address, Some('+'));
        assert_eq!(strip("bob+lists@example.com"), "bob@example.com");
        assert_eq!(strip("bob@example.com"), "bob@example.com");
        assert_eq!(strip("bob"), "bob");
        // As delivery routes it: a leading delimiter is part of the name.
        assert_eq!(strip("+x@example.com"), "+x@example.com");
        assert_eq!(
            strip_extension("bob+x@example.com", None),
            "bob+x@example.com"
        );
    }
}

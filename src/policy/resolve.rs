//! Where mail for a recipient goes: a bounce to an SRS address goes back to the original
//! sender (a forged one nowhere); an alias entry of its own wins, then the reserved mailboxes, then users, then
//! a catch-all (README: Aliases).

use super::aliases::{AliasTable, Lookup};
use super::{Policy, Reject, reject};
use crate::auth::Authenticator;
use crate::mail::{Address, Delimiter};

impl Policy {
    pub(super) fn strip_extension(&self, address: &str) -> String {
        strip_extension(address, self.delimiter)
    }

    fn lookup<'a>(&self, is_user: &'a dyn Fn(&str) -> bool) -> Lookup<'a> {
        Lookup {
            delimiter: self.delimiter,
            is_user,
        }
    }

    /// The addresses mail for `rcpt` is delivered to instead of `rcpt`; `None` when it is
    /// delivered as addressed (a user, or another domain).
    pub fn resolve(&self, rcpt: &str, auth: &Authenticator) -> Result<Option<Vec<String>>, Reject> {
        if let Some(srs) = &self.srs {
            let srs = srs.get();
            if srs.is_rewritten(rcpt) {
                // A forged or expired one is nobody's, whatever the catch-all says.
                let sender = srs.reverse(rcpt, std::time::SystemTime::now());
                return Ok(sender.map(|sender| vec![sender]));
            }
        }
        let table = match &self.aliases {
            Some(watched) => watched.get(),
            None => Default::default(),
        };
        let is_user = |address: &str| auth.user_exists(address);
        let how = self.lookup(&is_user);
        let expanded = match self.reserved_target(rcpt) {
            Some(target) if !table.has_entry(rcpt, self.delimiter) => table
                .expand(target, &how)
                .map(|targets| Some(targets.unwrap_or_else(|| vec![target.to_string()]))),
            _ => table.expand(rcpt, &how),
        };
        expanded.or_else(|err| {
            tracing::warn!(rcpt, error = %err, "alias expansion failed");
            reject(
                "alias_error",
                format!("451 4.3.0 <{rcpt}>: Temporary lookup failure"),
            )
        })
    }

    /// Whether an alias for `sender` names `login` as a target (one level, as Postfix's
    /// `smtpd_sender_login_maps` on the alias file): then the login may send as it.
    pub(super) fn alias_names(&self, sender: &str, login: &str, auth: &Authenticator) -> bool {
        let Some(aliases) = &self.aliases else {
            return false;
        };
        let table: std::sync::Arc<AliasTable> = aliases.get();
        let is_user = |address: &str| auth.user_exists(address);
        table
            .lookup(sender, &self.lookup(&is_user))
            .is_some_and(|targets| {
                targets
                    .iter()
                    .any(|t| self.strip_extension(t).eq_ignore_ascii_case(login))
            })
    }
}

/// `user+tag@domain` → `user@domain` (Postfix `recipient_delimiter`).
pub fn strip_extension(address: &str, delimiter: Delimiter) -> String {
    Address::parse(address).map_or_else(|| address.to_string(), |a| a.without_extension(delimiter))
}

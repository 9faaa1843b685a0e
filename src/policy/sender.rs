//! The sender login map (Postfix `smtpd_sender_login_maps` + `reject_sender_login_mismatch`).
//!
//! File format, as Postfix's `hash:` source files (`table.rs`): one
//! `address  login[, login...]` entry per line.
//! A key `@domain` matches every address of that domain without an entry of its own.
//! A login always owns its own address, so the file only lists the exceptions.

use std::collections::HashMap;

use super::table;
use crate::mail::Address;

#[derive(Debug, Default)]
pub struct SenderLoginMap {
    owners: HashMap<String, Vec<String>>,
}

impl SenderLoginMap {
    pub fn parse(text: &str) -> anyhow::Result<SenderLoginMap> {
        let mut owners: HashMap<String, Vec<String>> = HashMap::new();
        for entry in table::parse(text)? {
            let logins = entry.values.iter().map(|l| l.to_ascii_lowercase());
            owners.entry(entry.key).or_default().extend(logins);
        }
        Ok(SenderLoginMap { owners })
    }

    /// `reject_sender_login_mismatch` for an authenticated client: may `login` use `sender`
    /// as its envelope sender? The null sender is always allowed.
    pub fn may_send(&self, login: &str, sender: &str) -> bool {
        if sender.is_empty() || sender.eq_ignore_ascii_case(login) {
            return true;
        }
        let sender = sender.to_ascii_lowercase();
        let listed = self.owners.get(&sender).or_else(|| {
            let domain = Address::parse(&sender)?.domain();
            self.owners.get(&format!("@{domain}"))
        });
        listed.is_some_and(|logins| logins.iter().any(|l| l.eq_ignore_ascii_case(login)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: &str = "
# shared mailbox
info@example.com   alice@example.com, bob@example.com
sales@example.com  alice@example.com
    carol@example.com
@lists.example.com list-admin@example.com
";

    #[test]
    fn owners_and_self() {
        let m = SenderLoginMap::parse(MAP).unwrap();
        assert!(m.may_send("alice@example.com", "alice@example.com"));
        assert!(m.may_send("alice@example.com", "ALICE@Example.com"));
        assert!(m.may_send("bob@example.com", "info@example.com"));
        assert!(m.may_send("carol@example.com", "sales@example.com"));
        assert!(!m.may_send("bob@example.com", "sales@example.com"));
        assert!(!m.may_send("bob@example.com", "alice@example.com"));
        assert!(!m.may_send("bob@example.com", "nobody@elsewhere.net"));
        assert!(m.may_send("bob@example.com", ""));
    }

    #[test]
    fn domain_wildcard() {
        let m = SenderLoginMap::parse(MAP).unwrap();
        assert!(m.may_send("list-admin@example.com", "announce@lists.example.com"));
        assert!(!m.may_send("alice@example.com", "announce@lists.example.com"));
    }

    /// Postfix folds the case of `hash:` keys and compares logins with `strcasecmp_utf8`.
    #[test]
    fn keys_senders_and_logins_in_mixed_case() {
        let m = SenderLoginMap::parse(
            "Info@Example.COM  Bob@Example.com\n@Lists.EXAMPLE.com  List-Admin@example.com\n",
        )
        .unwrap();
        assert!(m.may_send("bob@example.com", "info@example.com"));
        assert!(m.may_send("BOB@example.COM", "INFO@example.Com"));
        assert!(m.may_send("list-admin@EXAMPLE.com", "Announce@lists.Example.COM"));
        assert!(!m.may_send("alice@example.com", "Info@Example.COM"));
    }

    /// A line starting with a tab continues the entry, as with a space; a tab also
    /// separates the key from its logins.
    #[test]
    fn tab_continuation_lines() {
        let m = SenderLoginMap::parse(
            "info@example.com\talice@example.com,\n\tbob@example.com\n\t\tcarol@example.com\nsales@example.com\tdave@example.com\n",
        )
        .unwrap();
        for login in ["alice", "bob", "carol"] {
            assert!(m.may_send(&format!("{login}@example.com"), "info@example.com"));
        }
        assert!(!m.may_send("dave@example.com", "info@example.com"));
        assert!(m.may_send("dave@example.com", "sales@example.com"));
        assert!(!m.may_send("carol@example.com", "sales@example.com"));
    }

    /// Postfix looks up the full address before `@domain` and stops at the first hit:
    /// the exact entry replaces the domain's owners, it does not add to them.
    #[test]
    fn exact_entry_beside_domain_entry() {
        let m = SenderLoginMap::parse(
            "@lists.example.com  list-admin@example.com\nboss@lists.example.com  boss@example.com\n",
        )
        .unwrap();
        assert!(m.may_send("boss@example.com", "boss@lists.example.com"));
        assert!(!m.may_send("list-admin@example.com", "boss@lists.example.com"));
        assert!(m.may_send("list-admin@example.com", "other@lists.example.com"));
        assert!(!m.may_send("boss@example.com", "other@lists.example.com"));
    }

    #[test]
    fn bad_lines_name_the_line() {
        let err = SenderLoginMap::parse("a@b.c x@y.z\ninfo@example.com\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        let err = SenderLoginMap::parse("   x@y.z\n").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        let err = SenderLoginMap::parse("nodomain alice@example.com\n").unwrap_err();
        assert!(err.to_string().contains("nodomain"), "{err}");
    }
}

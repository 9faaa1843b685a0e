//! The reserved mailbox `postmaster` (RFC 5321 §4.5.1): `RCPT TO:<postmaster>` and
//! `postmaster@<local domain>`, in any letter case, are accepted on port 25 whether or not
//! such a user exists, and delivered to the configured `postmaster` address (by default
//! `postmaster@<first domain>`). Aliases in general are not this module's business.

use super::Policy;
use crate::mail::Address;

impl Policy {
    /// The address mail for `rcpt` is delivered to, when `rcpt` is postmaster's.
    pub fn postmaster_for(&self, rcpt: &str) -> Option<&str> {
        let target = self.postmaster.as_deref()?;
        is_postmaster(rcpt, |domain| self.is_local_domain(domain)).then_some(target)
    }
}

fn is_postmaster(rcpt: &str, is_local_domain: impl Fn(&str) -> bool) -> bool {
    match Address::parse(rcpt) {
        None => rcpt.eq_ignore_ascii_case("postmaster"),
        Some(address) => {
            address.local().eq_ignore_ascii_case("postmaster") && is_local_domain(address.domain())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postmaster_alone_or_at_a_local_domain_in_any_case() {
        let local = |d: &str| d.eq_ignore_ascii_case("example.com");
        for yes in [
            "postmaster",
            "PostMaster",
            "POSTMASTER",
            "postmaster@example.com",
            "Postmaster@EXAMPLE.com",
        ] {
            assert!(is_postmaster(yes, local), "{yes}");
        }
        for no in [
            "postmaster@example.net",
            "postmaster+x@example.com",
            "postmasters@example.com",
            "post master",
            "bob@example.com",
            "",
        ] {
            assert!(!is_postmaster(no, local), "{no}");
        }
    }
}

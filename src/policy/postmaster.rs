//! The reserved mailboxes. `postmaster` (RFC 5321 §4.5.1): `RCPT TO:<postmaster>` and
//! `postmaster@<local domain>`, in any letter case, are accepted on port 25 whether or not
//! such a user exists, and delivered to the configured `postmaster` address (by default
//! `postmaster@<first domain>`). `abuse@<local domain>` (RFC 2142) goes to `abuse`, by
//! default the postmaster address. An alias entry for either wins.

use super::Policy;
use crate::mail::Address;

impl Policy {
    /// The address mail for `rcpt` is delivered to, when `rcpt` is a reserved mailbox.
    pub fn reserved_target(&self, rcpt: &str) -> Option<&str> {
        let local = |domain: &str| self.is_local_domain(domain);
        if is_reserved(rcpt, "postmaster", local) {
            self.postmaster.as_deref()
        } else if is_reserved(rcpt, "abuse", local) && Address::parse(rcpt).is_some() {
            self.abuse.as_deref()
        } else {
            None
        }
    }
}

fn is_reserved(rcpt: &str, name: &str, is_local_domain: impl Fn(&str) -> bool) -> bool {
    match Address::parse(rcpt) {
        None => rcpt.eq_ignore_ascii_case(name),
        Some(address) => {
            address.local().eq_ignore_ascii_case(name) && is_local_domain(address.domain())
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
            assert!(is_reserved(yes, "postmaster", local), "{yes}");
        }
        for no in [
            "postmaster@example.net",
            "postmaster+x@example.com",
            "postmasters@example.com",
            "post master",
            "bob@example.com",
            "",
        ] {
            assert!(!is_reserved(no, "postmaster", local), "{no}");
        }
        assert!(is_reserved("Abuse@example.com", "abuse", local));
        assert!(!is_reserved("abuse@example.net", "abuse", local));
    }
}

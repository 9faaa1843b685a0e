//! Duplicate recipients in one transaction, dropped the way Postfix's cleanup(8) drops
//! them (`cleanup_out_recipient.c`, `duplicate_filter_limit`). Its key is the DSN
//! original recipient (the ORCPT parameter, or `rfc822;` and the address as typed when
//! the client gave none, as smtpd makes one up), the NOTIFY set and the address, and the
//! whole key is case-folded (`BH_FLAG_FOLD`; Unicode full case folding with
//! `smtputf8_enable = yes`). So `<Bob@example.com>` twice is one copy, while a different
//! NOTIFY or ORCPT, or `bob+x@`, is another recipient. The RCPT still gets its `250` and
//! counts towards `maxRecipients`, as with Postfix, where smtpd counts RCPT commands and
//! only cleanup sees duplicates. Postfix remembers 1000 keys; here the list is bounded by
//! `maxRecipients` anyway, so every key is kept.

use std::collections::HashSet;

use smtp_proto::RcptTo;
use unicase::UniCase;

const NOTIFY_FLAGS: u64 = smtp_proto::RCPT_NOTIFY_SUCCESS
    | smtp_proto::RCPT_NOTIFY_FAILURE
    | smtp_proto::RCPT_NOTIFY_DELAY
    | smtp_proto::RCPT_NOTIFY_NEVER;

#[derive(Default)]
pub struct DuplicateFilter {
    seen: HashSet<String>,
}

impl DuplicateFilter {
    /// True the first time a recipient is given in the transaction; `to.address` is the
    /// address as the client typed it.
    pub fn is_new(&mut self, to: &RcptTo<String>) -> bool {
        self.seen.insert(key(to))
    }
}

fn key(to: &RcptTo<String>) -> String {
    let orcpt = to.orcpt.as_deref().unwrap_or(&to.address);
    let notify = to.flags & NOTIFY_FLAGS;
    UniCase::new(format!("rfc822;{orcpt}\n{notify}\n{}", to.address)).to_folded_case()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rcpt(address: &str, flags: u64, orcpt: Option<&str>) -> RcptTo<String> {
        RcptTo {
            address: address.into(),
            orcpt: orcpt.map(String::from),
            rrvs: 0,
            flags,
        }
    }

    fn new_ones(list: &[RcptTo<String>]) -> Vec<bool> {
        let mut filter = DuplicateFilter::default();
        list.iter().map(|to| filter.is_new(to)).collect()
    }

    #[test]
    fn same_address_in_any_case_is_one_recipient() {
        let list = [
            rcpt("bob@example.com", 0, None),
            rcpt("bob@example.com", 0, None),
            rcpt("BOB@Example.COM", 0, None),
            rcpt("alice@example.com", 0, None),
            // Unicode full case folding, as ICU's: ß folds to ss, Σ and ς to σ.
            rcpt("straße@example.com", 0, None),
            rcpt("STRASSE@example.com", 0, None),
            rcpt("Σοφία@example.com", 0, None),
            rcpt("σοφίας@example.com", 0, None),
            rcpt("σοφίασ@example.com", 0, None),
        ];
        assert_eq!(
            new_ones(&list),
            [true, false, false, true, true, false, true, true, false]
        );
    }

    #[test]
    fn notify_and_orcpt_are_part_of_the_key() {
        let success = smtp_proto::RCPT_NOTIFY_SUCCESS;
        let failure = smtp_proto::RCPT_NOTIFY_FAILURE;
        let list = [
            rcpt("bob@example.com", 0, None),
            rcpt("bob@example.com", success, None),
            rcpt("bob@example.com", success | failure, None),
            rcpt("bob@example.com", failure | success, None),
            // The made-up ORCPT of a plain RCPT equals this one.
            rcpt("bob@example.com", 0, Some("Bob@example.com")),
            rcpt("bob@example.com", 0, Some("other@example.net")),
            rcpt("bob+x@example.com", 0, None),
            rcpt("bob@example.com.", 0, None),
        ];
        assert_eq!(
            new_ones(&list),
            [true, true, true, false, false, true, true, true]
        );
    }
}

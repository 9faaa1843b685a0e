//! The MAIL and RCPT parameters as the queue file keeps them: BODY, RET, and each
//! recipient with its DSN parameters, rewritten to the addresses the policy resolves it
//! to (aliases, postmaster, SRS bounces).

use smtp_proto::RcptTo;

use crate::spool::{BodyType, Notify, Recipient, Ret};

pub fn body_type(flags: u64) -> Option<BodyType> {
    if flags & smtp_proto::MAIL_BODY_8BITMIME != 0 {
        Some(BodyType::EightBitMime)
    } else if flags & smtp_proto::MAIL_BODY_7BIT != 0 {
        Some(BodyType::SevenBit)
    } else {
        None
    }
}

pub fn ret_type(flags: u64) -> Option<Ret> {
    if flags & smtp_proto::MAIL_RET_FULL != 0 {
        Some(Ret::Full)
    } else if flags & smtp_proto::MAIL_RET_HDRS != 0 {
        Some(Ret::Hdrs)
    } else {
        None
    }
}

/// The envelope recipients of the RCPTs `rcpts`: each as given, or the addresses
/// `resolve` answers for it (which come without duplicates).
pub fn recipients(
    rcpts: &[RcptTo<String>],
    resolve: impl Fn(&str) -> Option<Vec<String>>,
) -> Vec<Recipient> {
    rcpts
        .iter()
        .flat_map(|to| match resolve(&to.address) {
            Some(targets) => targets.iter().map(|t| recipient(to, Some(t))).collect(),
            None => vec![recipient(to, None)],
        })
        .collect()
}

/// RCPT TO with its DSN parameters (RFC 3461), as the envelope keeps them, delivered to
/// `target` when given; when that rewrites the address, the address as given is kept in
/// ORCPT (RFC 3461 §4.2).
fn recipient(to: &RcptTo<String>, target: Option<&str>) -> Recipient {
    let rewritten = target.filter(|target| *target != to.address);
    let mut rcpt = Recipient::new(rewritten.unwrap_or(&to.address));
    // smtp-proto keeps the ORCPT address without its type, which it requires be rfc822.
    rcpt.orcpt = to
        .orcpt
        .as_deref()
        .or(rewritten.map(|_| to.address.as_str()))
        .map(|address| format!("rfc822;{address}"));
    rcpt.notify = [
        (smtp_proto::RCPT_NOTIFY_SUCCESS, Notify::Success),
        (smtp_proto::RCPT_NOTIFY_FAILURE, Notify::Failure),
        (smtp_proto::RCPT_NOTIFY_DELAY, Notify::Delay),
        (smtp_proto::RCPT_NOTIFY_NEVER, Notify::Never),
    ]
    .into_iter()
    .filter(|(flag, _)| to.flags & flag != 0)
    .map(|(_, notify)| notify)
    .collect();
    rcpt
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to(address: &str, orcpt: Option<&str>) -> RcptTo<String> {
        RcptTo {
            address: address.into(),
            orcpt: orcpt.map(String::from),
            rrvs: 0,
            flags: smtp_proto::RCPT_NOTIFY_FAILURE,
        }
    }

    #[test]
    fn envelope_recipient_keeps_orcpt_with_its_type() {
        let rcpt = recipient(&to("bob@example.com", Some("Bob@Example.COM")), None);
        assert_eq!(rcpt.address, "bob@example.com");
        assert_eq!(rcpt.orcpt.as_deref(), Some("rfc822;Bob@Example.COM"));
        assert_eq!(rcpt.notify, [Notify::Failure]);
        assert_eq!(recipient(&to("bob@example.com", None), None).orcpt, None);
    }

    #[test]
    fn postmaster_goes_to_its_address_with_the_original_in_orcpt() {
        let admin = Some("admin@example.net");
        let rcpt = recipient(&to("PostMaster", None), admin);
        assert_eq!(rcpt.address, "admin@example.net");
        assert_eq!(rcpt.orcpt.as_deref(), Some("rfc822;PostMaster"));
        let rcpt = recipient(&to("postmaster@example.com", Some("pm@example.org")), admin);
        assert_eq!(rcpt.address, "admin@example.net");
        assert_eq!(rcpt.orcpt.as_deref(), Some("rfc822;pm@example.org"));
        // Nothing rewritten, nothing to remember.
        let same = Some("postmaster@example.com");
        let rcpt = recipient(&to("postmaster@example.com", None), same);
        assert_eq!(rcpt.address, "postmaster@example.com");
        assert_eq!(rcpt.orcpt, None);
    }

    #[test]
    fn an_alias_becomes_its_targets_each_remembering_it() {
        let rcpts = [to("info@example.com", None), to("carol@example.com", None)];
        let resolved = recipients(&rcpts, |address| {
            (address == "info@example.com")
                .then(|| vec!["alice@example.com".into(), "bob@example.net".into()])
        });
        let got: Vec<(&str, Option<&str>)> = resolved
            .iter()
            .map(|r| (r.address.as_str(), r.orcpt.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("alice@example.com", Some("rfc822;info@example.com")),
                ("bob@example.net", Some("rfc822;info@example.com")),
                ("carol@example.com", None),
            ]
        );
        assert!(resolved.iter().all(|r| r.notify == [Notify::Failure]));
    }
}

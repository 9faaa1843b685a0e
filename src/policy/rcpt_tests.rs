//! `Policy::check_rcpt` on both kinds of listener, for local domains: the replies a
//! session sends, word for word. Other domains need DNS: tests/behaviour.rs and
//! tests/dns_failure.rs check those against real name servers.

use std::time::Duration;

use super::*;
use crate::auth::scheme::{Scheme, hash_password};

struct Fixture {
    policy: Policy,
    auth: Arc<Authenticator>,
    _dir: tempfile::TempDir,
}

/// Local domains example.com and Example.ORG with users bob and alice; alice may also
/// send as info@example.com.
fn fixture(postmaster: Option<&str>) -> Fixture {
    fixture_with_aliases(postmaster, None)
}

/// As [`fixture`], with an alias file of `aliases` when given.
fn fixture_with_aliases(postmaster: Option<&str>, aliases: Option<&str>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let aliases = aliases.map_or(String::new(), |text| {
        let file = dir.path().join("aliases");
        std::fs::write(&file, text).unwrap();
        format!("aliases: {{file: {}}}\n", file.display())
    });
    let passwd = dir.path().join("passwd");
    let hash = hash_password(Scheme::Sha256Crypt, "pw").unwrap();
    std::fs::write(
        &passwd,
        format!("bob@example.com:{hash}\nalice@example.com:{hash}\n"),
    )
    .unwrap();
    let senders = dir.path().join("senders");
    std::fs::write(&senders, "info@example.com  alice@example.com\n").unwrap();
    let postmaster = postmaster.map_or(String::new(), |p| format!("postmaster: {p}\n"));
    let config = Config::parse(&format!(
        "hostname: mail.example.com\n\
         domains: [example.com, Example.ORG]\n\
         {postmaster}\
         {aliases}\
         senderLoginMap: {}\n\
         tls: {{cert: /tls/tls.crt, key: /tls/tls.key}}\n\
         auth: {{passwdFile: {}}}\n\
         spool: {{directory: /var/spool/posthorn, maildirRoot: /var/mail}}\n",
        senders.display(),
        passwd.display()
    ))
    .unwrap();
    let auth =
        Authenticator::new(&config.auth, "example.com".into(), Duration::from_secs(60)).unwrap();
    Fixture {
        policy: Policy::new(&config).unwrap(),
        auth,
        _dir: dir,
    }
}

impl Fixture {
    /// The reply to `rcpt`, `None` when it is accepted.
    async fn rcpt(
        &self,
        kind: ListenerKind,
        login: Option<&str>,
        sender: &str,
        rcpt: &str,
    ) -> Option<String> {
        let ctx = RcptContext {
            kind,
            client: "unknown[192.0.2.1]",
            login,
            sender,
        };
        let checked = self.policy.check_rcpt(&ctx, rcpt, &self.auth).await;
        checked.err().map(|reject| reject.reply)
    }
}

#[tokio::test]
async fn port_25_takes_local_users_and_postmaster_only() {
    let f = fixture(None);
    let rcpt = |rcpt| f.rcpt(ListenerKind::Smtp, None, "x@elsewhere.net", rcpt);
    for accepted in [
        "bob@example.com",
        "BOB@Example.COM",
        "bob+lists@example.com",
        "postmaster",
        "PostMaster@example.org",
    ] {
        assert_eq!(rcpt(accepted).await, None, "{accepted}");
    }
    let refused = [
        (
            "nobody@example.com",
            "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown in virtual mailbox table",
        ),
        (
            "bob@elsewhere.net",
            "454 4.7.1 <bob@elsewhere.net>: Relay access denied",
        ),
        (
            "bob",
            "504 5.5.2 <bob>: Recipient address rejected: need fully-qualified address",
        ),
    ];
    for (address, reply) in refused {
        assert_eq!(rcpt(address).await.as_deref(), Some(reply), "{address}");
    }
}

#[tokio::test]
async fn submission_needs_a_login_that_owns_the_sender() {
    let f = fixture(None);
    let submit = |login, sender, rcpt| f.rcpt(ListenerKind::Submission, login, sender, rcpt);
    for (login, sender) in [
        ("alice@example.com", "alice@example.com"),
        ("alice@example.com", "info@example.com"),
        // Her own address with an extension, which the map does not list.
        ("alice@example.com", "alice+news@example.com"),
        ("alice@example.com", ""),
    ] {
        assert_eq!(
            submit(Some(login), sender, "bob@example.com").await,
            None,
            "{sender}"
        );
    }
    assert_eq!(
        submit(
            Some("bob@example.com"),
            "info@example.com",
            "alice@example.com"
        )
        .await
        .as_deref(),
        Some(
            "553 5.7.1 <info@example.com>: Sender address rejected: not owned by user bob@example.com"
        )
    );
    let client_rejected =
        Some("554 5.7.1 <unknown[192.0.2.1]>: Client host rejected: Access denied");
    for rcpt in ["bob@example.com", "postmaster@example.com"] {
        assert_eq!(
            submit(None, "bob@example.com", rcpt).await.as_deref(),
            client_rejected,
            "{rcpt}"
        );
    }
    let bob = Some("bob@example.com");
    assert_eq!(
        submit(bob, "bob@example.com", "nobody@example.org")
            .await
            .as_deref(),
        Some(
            "550 5.1.1 <nobody@example.org>: Recipient address rejected: User unknown in virtual mailbox table"
        )
    );
    assert_eq!(
        submit(bob, "bob@example.com", "alice").await.as_deref(),
        Some("504 5.5.2 <alice>: Recipient address rejected: need fully-qualified address")
    );
    assert_eq!(
        submit(bob, "bob@example.com", "postmaster").await,
        None,
        "postmaster needs no user"
    );
}

#[tokio::test]
async fn postmaster_goes_to_the_configured_address_or_the_first_domain() {
    let f = fixture(None);
    assert_eq!(
        f.policy.reserved_target("Postmaster@EXAMPLE.org"),
        Some("postmaster@example.com")
    );
    assert_eq!(f.policy.reserved_target("postmaster@elsewhere.net"), None);
    let f = fixture(Some("hostmaster@example.org"));
    assert_eq!(
        f.policy.reserved_target("postmaster"),
        Some("hostmaster@example.org")
    );
}

#[tokio::test]
async fn resolve_takes_an_alias_entry_before_the_reserved_target() {
    let f = fixture_with_aliases(
        Some("admin@example.net"),
        Some(
            "info@example.com alice@example.com, bob@example.com\nabuse@example.com bob@example.com\n",
        ),
    );
    let resolve = |rcpt| f.policy.resolve(rcpt, &f.auth).map_err(|r| r.reply);
    for (rcpt, to) in [
        (
            "info@example.com",
            Some(vec!["alice@example.com", "bob@example.com"]),
        ),
        ("bob@example.com", None),
        ("nobody@elsewhere.net", None),
        // abuse@ has an entry of its own; postmaster@ goes to the configured address.
        ("abuse@example.com", Some(vec!["bob@example.com"])),
        ("postmaster@example.com", Some(vec!["admin@example.net"])),
    ] {
        let to = to.map(|to| to.into_iter().map(String::from).collect::<Vec<_>>());
        assert_eq!(resolve(rcpt), Ok(to), "{rcpt}");
    }
}

#[tokio::test]
async fn a_login_may_send_as_the_aliases_naming_it() {
    let f = fixture_with_aliases(None, Some("sales@example.com alice@example.com\n"));
    let submit = |login, sender| f.rcpt(ListenerKind::Submission, login, sender, "bob@example.com");
    assert_eq!(
        submit(Some("alice@example.com"), "sales@example.com").await,
        None
    );
    assert_eq!(
        submit(Some("bob@example.com"), "sales@example.com")
            .await
            .as_deref(),
        Some(
            "553 5.7.1 <sales@example.com>: Sender address rejected: not owned by user bob@example.com"
        )
    );
}

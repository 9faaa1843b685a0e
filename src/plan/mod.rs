//! The one translation of a `MailServer` into what its pod runs: the server config
//! ([`server_config`]), where the pod's files are ([`FileLayout`]), the files made from
//! the spec, and the names of its DNS records. The operator's render and `posthorn up`
//! both go through here, so a cluster and a laptop run the same server. Pure functions:
//! no I/O, no randomness.

mod layout;
mod server_config;

pub use layout::{
    ALIASES_KEY, ANNOTATIONS_FILE, CONFIG_DIR, CONFIG_FILE, CONFIG_KEY, DKIM_ED25519_DIR, DKIM_KEY,
    DKIM_TXT_KEY, FileLayout, HANDOVER_DIR, HANDOVER_TOKEN_KEY, HandoverFiles, POD_INFO_DIR,
    SECRETS_DIR, SENDER_MAP_KEY, SRS_SECRET_KEY, STATE_DIR, TLS_ECDSA_DIR,
};
pub use server_config::server_config;

use crate::api::MailServerSpec;

/// Postfix `smtpd_sender_login_maps` lines: `address login1, login2`.
pub fn sender_map(spec: &MailServerSpec) -> String {
    spec.sender_logins
        .iter()
        .map(|entry| format!("{} {}\n", entry.address, entry.logins.join(", ")))
        .collect()
}

/// Where a DKIM public key is published: `<selector>._domainkey.<domain>`, without the
/// zone file's trailing dot.
pub fn dkim_record_name(selector: &str, domain: &str) -> String {
    format!("{selector}._domainkey.{domain}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_map_lines() {
        let spec: MailServerSpec = serde_saphyr::from_str(
            "hostname: mail.example.com\ndomains: [example.com]\nusers: {secretName: users}\n\
             senderLogins:\n- {address: team@example.com, logins: [alice@example.com, bob@example.com]}\n\
             - {address: carol@example.com, logins: [carol@example.com]}\n",
        )
        .unwrap();
        assert_eq!(
            sender_map(&spec),
            "team@example.com alice@example.com, bob@example.com\n\
             carol@example.com carol@example.com\n"
        );
    }

    #[test]
    fn dkim_record_names() {
        assert_eq!(
            dkim_record_name("s2024", "example.org"),
            "s2024._domainkey.example.org"
        );
    }
}

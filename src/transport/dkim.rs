//! DKIM signing (RFC 6376; Ed25519 per RFC 8463) of mail from our domains, with a key
//! from `mail/dkim.rs`.
//!
//! Signatures are relaxed/relaxed, over the usual headers that the message has, with
//! `From` signed once more than it occurs so that a second `From` cannot be added.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use mail_auth::common::crypto::{Algorithm, Sha256, SigningKey};
use mail_auth::common::headers::{HeaderWriter, Writable};
use mail_auth::dkim::{Canonicalization, DkimSigner};

use crate::config::DkimConfig;
use crate::mail::Address;
use crate::mail::dkim::KeyPair;
use crate::reload::{self, Watched};

/// Headers signed when present (RFC 6376 §5.4.1's list, less the ones relays rewrite).
const SIGNED_HEADERS: &[&str] = &[
    "From",
    "Sender",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "To",
    "Cc",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Content-ID",
    "Content-Description",
    "In-Reply-To",
    "References",
    "Resent-Date",
    "Resent-From",
    "Resent-Sender",
    "Resent-To",
    "Resent-Cc",
    "Resent-Message-ID",
    "List-Id",
    "List-Help",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "List-Subscribe",
    "List-Post",
    "List-Owner",
    "List-Archive",
];

/// Signs outgoing mail for a set of domains with one key, or with an RSA and an Ed25519
/// key (RFC 8463), each under its own selector.
pub struct Signer {
    /// Lower-case signing domains (`d=`).
    domains: Vec<String>,
    /// Selector and key, in the order the signatures go on top of the message.
    keys: Vec<(String, KeyPair)>,
}

impl Signer {
    /// Reads the keys named by `config`. `local_domains` are signed when the config lists
    /// no domains of its own.
    pub fn load(config: &DkimConfig, local_domains: &[String]) -> anyhow::Result<Signer> {
        let domains = if config.domains.is_empty() {
            local_domains
        } else {
            &config.domains
        };
        if domains.is_empty() {
            bail!("dkim: no domains to sign for (set dkim.domains or the local domains)");
        }
        let mut keys = vec![(config.selector.clone(), read_key(&config.key_file)?)];
        if let (Some(ed25519), Some(selector)) = (&config.ed25519, config.ed25519_selector()) {
            let key = read_key(&ed25519.key_file)?;
            if key.key().algorithm() != Algorithm::Ed25519Sha256 {
                bail!(
                    "dkim.ed25519.keyFile {} is not an Ed25519 key",
                    ed25519.key_file.display()
                );
            }
            keys.push((selector, key));
        }
        Ok(Signer {
            domains: domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
            keys,
        })
    }

    /// Loads the signer and reloads it whenever a key file changes (a rotated Secret);
    /// a broken new key keeps the previous ones. Must run inside the tokio runtime.
    pub fn watch(
        config: &DkimConfig,
        local_domains: &[String],
        interval: Duration,
    ) -> anyhow::Result<Arc<Watched<Signer>>> {
        let (config, local_domains) = (config.clone(), local_domains.to_vec());
        let paths = std::iter::once(config.key_file.clone())
            .chain(config.ed25519.as_ref().map(|e| e.key_file.clone()))
            .collect();
        reload::watch("DKIM key", paths, interval, move || {
            Signer::load(&config, &local_domains)
        })
    }

    /// The `DKIM-Signature:` header fields (CRLF-terminated, one per key) to prepend to
    /// `message`, or None when `sender_domain` (the domain of the From header, for DMARC
    /// alignment) is not one we sign for. CPU-bound (an RSA signature is about a
    /// millisecond): call it off the async threads.
    pub fn sign(&self, message: &[u8], sender_domain: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let domain = sender_domain.trim_end_matches('.').to_ascii_lowercase();
        if !self.domains.contains(&domain) {
            return Ok(None);
        }
        let headers = headers_to_sign(message);
        let mut out = Vec::new();
        for (selector, key) in &self.keys {
            let signature = DkimSigner::from_key(key)
                .domain(&domain)
                .selector(selector)
                .headers(headers.iter().copied())
                .header_canonicalization(Canonicalization::Relaxed)
                .body_canonicalization(Canonicalization::Relaxed)
                .sign(message)
                .context("DKIM signing")?;
            out.extend_from_slice(signature.to_header().as_bytes());
        }
        Ok(Some(out))
    }
}

fn read_key(path: &std::path::Path) -> anyhow::Result<KeyPair> {
    let pem =
        std::fs::read(path).with_context(|| format!("reading DKIM key {}", path.display()))?;
    KeyPair::from_pem(&pem).with_context(|| format!("loading DKIM key {}", path.display()))
}

/// The domain of the message's (first) From header address, lower-cased: what DMARC
/// aligns the DKIM `d=` with.
pub fn from_domain(message: &[u8]) -> Option<String> {
    let parsed = mail_parser::MessageParser::new().parse_headers(message)?;
    let address = parsed.from()?.first()?.address()?;
    let domain = Address::parse(address)?.domain();
    Some(domain.trim_end_matches('.').to_ascii_lowercase())
}

/// The signed header names: each listed header the message has (once per occurrence, as
/// the signer takes them), and `From` once more, so that an added `From` breaks it.
fn headers_to_sign(message: &[u8]) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Vec::new();
    for name in header_names(message) {
        if let Some(known) = SIGNED_HEADERS
            .iter()
            .find(|h| h.as_bytes().eq_ignore_ascii_case(name))
            && !names.contains(known)
        {
            names.push(known);
        }
    }
    if !names.contains(&"From") {
        names.push("From");
    }
    names.push("From");
    names
}

/// The field names of the header section, in order.
fn header_names(message: &[u8]) -> impl Iterator<Item = &[u8]> {
    message
        .split(|&b| b == b'\n')
        .take_while(|line| !line.is_empty() && *line != b"\r")
        .filter(|line| !line.starts_with(b" ") && !line.starts_with(b"\t"))
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            Some(line[..colon].trim_ascii())
        })
}

/// mail-auth's builder takes its key by value; a reference lets one loaded key sign for
/// every domain.
impl SigningKey for &KeyPair {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        self.key().sign(input)
    }

    fn algorithm(&self) -> Algorithm {
        self.key().algorithm()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::dkim::{KeyAlgorithm, generate_key, write_private_key};
    use std::path::PathBuf;

    const MESSAGE: &[u8] = b"From: Alice <alice@Example.com>\r\n\
To: bob@example.net\r\n\
Subject: hello\r\n\
Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n\
Message-ID: <1@example.com>\r\n\
X-Mailer: test\r\n\
\r\n\
Hello Bob.\r\n";

    fn config(key_file: PathBuf, domains: &[&str]) -> DkimConfig {
        DkimConfig {
            selector: "posthorn".into(),
            key_file,
            domains: domains.iter().map(|d| d.to_string()).collect(),
            ed25519: None,
        }
    }

    fn signer(algorithm: KeyAlgorithm) -> (tempfile::TempDir, Signer) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        write_private_key(&path, &generate_key(algorithm, 2048).unwrap().private_pem).unwrap();
        let signer = Signer::load(&config(path, &[]), &["example.com".into()]).unwrap();
        (dir, signer)
    }

    /// Serves TXT records to mail-auth's verifier, as if from DNS.
    struct Records(Vec<(Box<str>, mail_auth::Txt)>);

    impl mail_auth::ResolverCache<Box<str>, mail_auth::Txt> for Records {
        fn get<Q>(&self, name: &Q) -> Option<mail_auth::Txt>
        where
            Box<str>: std::borrow::Borrow<Q>,
            Q: std::hash::Hash + Eq + ?Sized,
        {
            self.0
                .iter()
                .find(|(n, _)| std::borrow::Borrow::<Q>::borrow(n) == name)
                .map(|(_, txt)| txt.clone())
        }
        fn remove<Q>(&self, _: &Q) -> Option<mail_auth::Txt>
        where
            Box<str>: std::borrow::Borrow<Q>,
            Q: std::hash::Hash + Eq + ?Sized,
        {
            None
        }
        fn insert(&self, _: Box<str>, _: mail_auth::Txt, _: std::time::Instant) {}
    }

    /// mail-auth's verifier (a second implementation of the canonicalization) against
    /// the records `dns_record` publishes for each of the signer's keys; one result per
    /// signature, in header order.
    async fn verify(signer: &Signer, signed: &[u8]) -> Vec<mail_auth::DkimResult> {
        use mail_auth::common::parse::TxtRecordParser;
        let record = Records(
            signer
                .keys
                .iter()
                .map(|(selector, key)| {
                    let parsed =
                        mail_auth::common::verify::DomainKey::parse(key.dns_record().as_bytes())
                            .unwrap();
                    (
                        format!("{selector}._domainkey.example.com.").into(),
                        mail_auth::Txt::DomainKey(Arc::new(parsed)),
                    )
                })
                .collect(),
        );
        let authenticator = mail_auth::MessageAuthenticator::new_cloudflare().unwrap();
        let message = mail_auth::AuthenticatedMessage::parse(signed).unwrap();
        let params = mail_auth::Parameters::new(&message).with_txt_cache(&record);
        authenticator
            .verify_dkim(params)
            .await
            .iter()
            .map(|output| output.result().clone())
            .collect()
    }

    fn signed(signer: &Signer, message: &[u8]) -> Vec<u8> {
        let mut signed = signer.sign(message, "example.com").unwrap().unwrap();
        signed.extend_from_slice(message);
        signed
    }

    #[tokio::test]
    async fn signatures_verify_and_tampering_fails() {
        for algorithm in [KeyAlgorithm::Rsa, KeyAlgorithm::Ed25519] {
            let (_dir, signer) = signer(algorithm);
            let good = signed(&signer, MESSAGE);
            assert_eq!(verify(&signer, &good).await, [mail_auth::DkimResult::Pass]);

            // Relaxed canonicalization: re-folded headers and trailing blank lines pass.
            let refolded = String::from_utf8(good.clone())
                .unwrap()
                .replace("Subject: hello", "Subject:   hello ")
                + "\r\n\r\n";
            assert_eq!(
                verify(&signer, refolded.as_bytes()).await,
                [mail_auth::DkimResult::Pass]
            );

            let body = String::from_utf8(good.clone())
                .unwrap()
                .replace("Bob.", "Eve.");
            let subject = String::from_utf8(good.clone())
                .unwrap()
                .replace("hello", "HELLO");
            let second_from = [b"From: eve@evil.example\r\n".as_slice(), &good].concat();
            for tampered in [body.as_bytes(), subject.as_bytes(), &second_from] {
                let results = verify(&signer, tampered).await;
                // mail-auth calls a body hash mismatch neutral (RFC 6376 §6.3 lets
                // a verifier treat it as no signature); either way it is no pass.
                let body_changed = mail_auth::DkimResult::Neutral(mail_auth::Error::Dkim(
                    mail_auth::dkim::DkimError::FailedBodyHashMatch,
                ));
                assert!(
                    matches!(results[..], [mail_auth::DkimResult::Fail(_)])
                        || results == [body_changed],
                    "{algorithm:?}: {results:?}"
                );
            }
        }
    }

    #[tokio::test]
    async fn watch_reloads_a_rotated_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        let first = generate_key(KeyAlgorithm::Ed25519, 0).unwrap();
        std::fs::write(&path, &first.private_pem).unwrap();
        let watched = Signer::watch(
            &config(path.clone(), &[]),
            &["example.com".into()],
            Duration::from_millis(20),
        )
        .unwrap();
        assert_eq!(watched.get().keys[0].1.dns_record(), first.dns_record);
        let second = generate_key(KeyAlgorithm::Ed25519, 0).unwrap();
        std::fs::write(&path, &second.private_pem).unwrap();
        for _ in 0..200 {
            if watched.get().keys[0].1.dns_record() == second.dns_record {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the rotated key was not loaded");
    }

    /// An RSA and an Ed25519 key in `dir`, configured as `dkim` with `dkim.ed25519`.
    fn both_keys(dir: &std::path::Path) -> DkimConfig {
        let (rsa, ed) = (dir.join("rsa.pem"), dir.join("ed.pem"));
        write_private_key(
            &rsa,
            &generate_key(KeyAlgorithm::Rsa, 2048).unwrap().private_pem,
        )
        .unwrap();
        write_private_key(
            &ed,
            &generate_key(KeyAlgorithm::Ed25519, 0).unwrap().private_pem,
        )
        .unwrap();
        DkimConfig {
            ed25519: Some(crate::config::Ed25519DkimConfig {
                selector: None,
                key_file: ed,
            }),
            ..config(rsa, &[])
        }
    }

    #[tokio::test]
    async fn rsa_and_ed25519_signatures_both_verify() {
        let dir = tempfile::tempdir().unwrap();
        let signer = Signer::load(&both_keys(dir.path()), &["example.com".into()]).unwrap();
        let good = signed(&signer, MESSAGE);
        let text = String::from_utf8(good.clone()).unwrap();
        let rsa = text
            .find("a=rsa-sha256; s=posthorn; d=example.com;")
            .unwrap();
        let ed = text
            .find("a=ed25519-sha256; s=posthorn-ed25519; d=example.com;")
            .unwrap();
        assert!(rsa < ed, "RSA first: {text}");
        assert_eq!(text.matches("DKIM-Signature:").count(), 2, "{text}");
        let pass = mail_auth::DkimResult::Pass;
        assert_eq!(verify(&signer, &good).await, [pass.clone(), pass]);

        let tampered = text.replace("hello", "HELLO");
        let results = verify(&signer, tampered.as_bytes()).await;
        assert_eq!(results.len(), 2);
        assert!(
            results
                .iter()
                .all(|r| matches!(r, mail_auth::DkimResult::Fail(_))),
            "{results:?}"
        );
    }

    #[tokio::test]
    async fn the_second_key_must_be_ed25519_and_is_watched() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = both_keys(dir.path());
        let ed = config.ed25519.as_ref().unwrap().key_file.clone();
        let watched =
            Signer::watch(&config, &["example.com".into()], Duration::from_millis(20)).unwrap();
        let rotated = generate_key(KeyAlgorithm::Ed25519, 0).unwrap();
        std::fs::remove_file(&ed).unwrap();
        std::fs::write(&ed, &rotated.private_pem).unwrap();
        let mut reloaded = false;
        for _ in 0..200 {
            if watched.get().keys[1].1.dns_record() == rotated.dns_record {
                reloaded = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(reloaded, "the rotated Ed25519 key was not loaded");

        config.ed25519.as_mut().unwrap().key_file = config.key_file.clone();
        let err = Signer::load(&config, &["example.com".into()])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("is not an Ed25519 key"), "{err}");
    }

    #[test]
    fn signs_only_our_domains_case_insensitively() {
        let (_dir, signer) = signer(KeyAlgorithm::Ed25519);
        assert!(signer.sign(MESSAGE, "other.org").unwrap().is_none());
        let header = signer.sign(MESSAGE, "EXAMPLE.com").unwrap().unwrap();
        let header = String::from_utf8(header).unwrap();
        assert!(header.starts_with("DKIM-Signature: v=1; a=ed25519-sha256; s=posthorn; d=example.com; c=relaxed/relaxed;"), "{header}");
        assert!(header.ends_with(";\r\n"), "{header}");
    }

    #[test]
    fn signs_present_headers_and_oversigns_from() {
        let names = headers_to_sign(MESSAGE);
        assert_eq!(
            names,
            ["From", "To", "Subject", "Date", "Message-ID", "From"]
        );
    }

    #[test]
    fn config_domains_replace_local_domains() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        write_private_key(
            &path,
            &generate_key(KeyAlgorithm::Ed25519, 0).unwrap().private_pem,
        )
        .unwrap();
        let signer =
            Signer::load(&config(path, &["Brand.example"]), &["example.com".into()]).unwrap();
        assert!(signer.sign(MESSAGE, "example.com").unwrap().is_none());
        assert!(signer.sign(MESSAGE, "brand.example").unwrap().is_some());
    }

    #[test]
    fn from_domain_reads_the_header() {
        assert_eq!(from_domain(MESSAGE).as_deref(), Some("example.com"));
        assert_eq!(from_domain(b"To: x@y.z\r\n\r\nbody"), None);
    }
}

//! Key material the controller generates once into Secrets: the fallback self-signed
//! certificate, the DKIM signing key and the pods' handover token. Randomness lives
//! here, away from `render`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::mail::dkim;
use crate::plan::{DKIM_KEY, DKIM_TXT_KEY, HANDOVER_TOKEN_KEY, SRS_SECRET_KEY};
use crate::tls;

/// RSA, not Ed25519: receivers that ignore Ed25519 signatures (RFC 8463) are common.
const DKIM_RSA_BITS: usize = 2048;
/// Long enough not to need the operator again soon; the TLSReady condition keeps
/// telling the user to bring a real certificate.
const SELF_SIGNED_VALIDITY: Duration = Duration::from_secs(5 * 365 * 24 * 3600);

/// `tls.crt` and `tls.key` of a self-signed certificate for `hostname`.
pub fn self_signed_tls(hostname: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let (cert, key) = tls::self_signed_pem(hostname, SELF_SIGNED_VALIDITY)?;
    Ok(BTreeMap::from([
        (tls::CERT_FILE.to_string(), cert),
        (tls::KEY_FILE.to_string(), key),
    ]))
}

/// A new DKIM key: `dkim.key` (PKCS#8 PEM) and `dkim.txt` (the TXT record value).
/// CPU-heavy (an RSA key takes up to a second): call it off the async threads.
pub fn dkim_key(algorithm: dkim::KeyAlgorithm) -> anyhow::Result<BTreeMap<String, String>> {
    let key = dkim::generate_key(algorithm, DKIM_RSA_BITS)?;
    Ok(BTreeMap::from([
        (DKIM_KEY.to_string(), key.private_pem),
        (DKIM_TXT_KEY.to_string(), key.dns_record),
    ]))
}

/// A new handover token: 32 random bytes, hex. Never logged.
pub fn handover_token() -> BTreeMap<String, String> {
    random_hex(HANDOVER_TOKEN_KEY)
}

/// The key that signs SRS addresses (HMAC-SHA1).
pub fn srs_key() -> BTreeMap<String, String> {
    random_hex(SRS_SECRET_KEY)
}

/// 32 random bytes in hex under `key`.
fn random_hex(key: &str) -> BTreeMap<String, String> {
    let bytes: [u8; 32] = rand::random();
    let value = bytes.iter().map(|b| format!("{b:02x}")).collect();
    BTreeMap::from([(key.to_string(), value)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dkim_key_and_its_record_belong_together() {
        use dkim::KeyAlgorithm::{Ed25519, Rsa};
        for (algorithm, prefix) in [
            (Rsa, "v=DKIM1; k=rsa; p=MIIBIjAN"),
            (Ed25519, "v=DKIM1; k=ed25519; p="),
        ] {
            let generated = dkim_key(algorithm).unwrap();
            let pem = &generated[DKIM_KEY];
            assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
            let txt = &generated[DKIM_TXT_KEY];
            assert!(txt.starts_with(prefix), "{txt}");
            assert_eq!(&dkim::dns_record_from_pem(pem.as_bytes()).unwrap(), txt);
            let again = dkim_key(algorithm).unwrap();
            assert_ne!(again[DKIM_TXT_KEY], *txt, "keys are random");
        }
    }

    #[test]
    fn handover_tokens_are_long_and_random() {
        let token = &handover_token()[HANDOVER_TOKEN_KEY];
        assert_eq!(token.len(), 64);
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{token}");
        assert_ne!(&handover_token()[HANDOVER_TOKEN_KEY], token);
    }

    #[test]
    fn self_signed_certificate_loads_for_the_hostname() {
        let files = self_signed_tls("mail.example.com").unwrap();
        let dir = tempfile::tempdir().unwrap();
        for (name, pem) in &files {
            std::fs::write(dir.path().join(name), pem).unwrap();
        }
        let key = tls::load_certified_key(
            &dir.path().join(tls::CERT_FILE),
            &dir.path().join(tls::KEY_FILE),
        )
        .unwrap();
        assert_eq!(key.cert.len(), 1);
    }
}

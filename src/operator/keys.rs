//! Key material the controller generates once into Secrets: the fallback self-signed
//! certificate and the DKIM signing key. Randomness lives here, away from `render`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::{RsaPrivateKey, RsaPublicKey};

use super::render::{DKIM_KEY, DKIM_TXT_KEY};

/// RSA, not Ed25519: receivers that ignore Ed25519 signatures (RFC 8463) are common.
const DKIM_RSA_BITS: usize = 2048;
/// Long enough not to need the operator again soon; the TLSReady condition keeps
/// telling the user to bring a real certificate.
const SELF_SIGNED_VALIDITY: Duration = Duration::from_secs(5 * 365 * 24 * 3600);

/// `tls.crt` and `tls.key` of a self-signed certificate for `hostname`.
pub fn self_signed_tls(hostname: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let (cert, key) = crate::tls::self_signed_pem(hostname, SELF_SIGNED_VALIDITY)?;
    Ok(BTreeMap::from([
        ("tls.crt".to_string(), cert),
        ("tls.key".to_string(), key),
    ]))
}

/// A new DKIM key: `dkim.key` (PKCS#8 PEM) and `dkim.txt` (the TXT record value).
/// CPU-heavy (an RSA key takes up to a second): call it off the async threads.
pub fn dkim_key() -> anyhow::Result<BTreeMap<String, String>> {
    let key = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, DKIM_RSA_BITS)?;
    let pem = key.to_pkcs8_pem(LineEnding::LF)?.to_string();
    let txt = dkim_txt(&key)?;
    Ok(BTreeMap::from([
        (DKIM_KEY.to_string(), pem),
        (DKIM_TXT_KEY.to_string(), txt),
    ]))
}

/// The DKIM TXT record for an RSA private key in PKCS#8 or PKCS#1 PEM.
pub fn dkim_txt_from_pem(pem: &str) -> anyhow::Result<String> {
    let key = RsaPrivateKey::from_pkcs8_pem(pem)
        .or_else(|_| RsaPrivateKey::from_pkcs1_pem(pem))
        .context("not an RSA private key in PEM (PKCS#8 or PKCS#1)")?;
    dkim_txt(&key)
}

fn dkim_txt(key: &RsaPrivateKey) -> anyhow::Result<String> {
    let public = RsaPublicKey::from(key).to_public_key_der()?;
    let encoded = base64::engine::general_purpose::STANDARD.encode(public.as_bytes());
    Ok(format!("v=DKIM1; k=rsa; p={encoded}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dkim_record_matches_the_key_in_any_pem_form() {
        let generated = dkim_key().unwrap();
        let pem = &generated[DKIM_KEY];
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
        let txt = &generated[DKIM_TXT_KEY];
        assert!(txt.starts_with("v=DKIM1; k=rsa; p=MIIBIjAN"), "{txt}");
        assert_eq!(&dkim_txt_from_pem(pem).unwrap(), txt);

        let key = RsaPrivateKey::from_pkcs8_pem(pem).unwrap();
        let pkcs1 = rsa::pkcs1::EncodeRsaPrivateKey::to_pkcs1_pem(&key, LineEnding::LF).unwrap();
        assert_eq!(&dkim_txt_from_pem(&pkcs1).unwrap(), txt);

        assert!(dkim_txt_from_pem("not a key").is_err());
        assert_ne!(dkim_key().unwrap()[DKIM_TXT_KEY], *txt, "keys are random");
    }

    #[test]
    fn self_signed_certificate_loads_for_the_hostname() {
        let files = self_signed_tls("mail.example.com").unwrap();
        let dir = tempfile::tempdir().unwrap();
        for (name, pem) in &files {
            std::fs::write(dir.path().join(name), pem).unwrap();
        }
        let key = crate::tls::load_certified_key(
            &dir.path().join("tls.crt"),
            &dir.path().join("tls.key"),
        )
        .unwrap();
        assert_eq!(key.cert.len(), 1);
    }
}

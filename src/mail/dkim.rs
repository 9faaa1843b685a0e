//! DKIM key material: generating keys (`posthorn dkim keygen`, the operator's generated
//! Secret), reading them, and the DNS TXT record that publishes their public half.
//! Signing with them is the transport's business (`transport/dkim.rs`).
//!
//! The key is a PEM file (a Secret in Kubernetes): RSA as PKCS#1 (`RSA PRIVATE KEY`) or
//! PKCS#8 (`PRIVATE KEY`), or Ed25519 as PKCS#8; the algorithm follows from the key.

use std::path::Path;

use anyhow::{Context, bail};
use mail_auth::common::crypto::{Algorithm, DkimKey, Ed25519Key, RsaKey, Sha256, SigningKey};
use rsa::pkcs8::der::pem::LineEnding;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;

/// The default selector of an Ed25519 key signing next to the RSA key of `selector`.
pub fn ed25519_selector(selector: &str) -> String {
    format!("{selector}-ed25519")
}

/// A private key with its public half, in the form the DNS record publishes.
pub struct KeyPair {
    key: DkimKey,
    /// `p=`: SubjectPublicKeyInfo DER for RSA, the raw 32 bytes for Ed25519.
    public: Vec<u8>,
}

impl KeyPair {
    /// Reads an RSA (PKCS#1 or PKCS#8) or Ed25519 (PKCS#8) private key.
    pub fn from_pem(pem: &[u8]) -> anyhow::Result<KeyPair> {
        let der = PrivateKeyDer::from_pem_slice(pem)
            .map_err(|e| anyhow::anyhow!("no PEM private key found: {e}"))?;
        if let PrivateKeyDer::Pkcs8(pkcs8) = &der
            && let Ok(key) = Ed25519Key::from_pkcs8_maybe_unchecked_der(pkcs8.secret_pkcs8_der())
        {
            let public = key.public_key();
            return Ok(KeyPair {
                key: DkimKey::Ed25519(key),
                public,
            });
        }
        let key = RsaKey::<Sha256>::from_key_der(der.clone_key()).map_err(|e| {
            anyhow::anyhow!("not an RSA (2048 to 4096 bits) or Ed25519 private key: {e}")
        })?;
        // ring gives the public key as PKCS#1 RSAPublicKey; DNS records carry it wrapped
        // in SubjectPublicKeyInfo, as opendkim-genkey and openssl publish it.
        let public = rsa::RsaPublicKey::from(rsa_private(&der)?)
            .to_public_key_der()
            .context("encoding the RSA public key")?
            .into_vec();
        Ok(KeyPair {
            key: DkimKey::Rsa(key),
            public,
        })
    }

    /// The signing key.
    pub fn key(&self) -> &DkimKey {
        &self.key
    }

    /// The DNS TXT record value (`v=DKIM1; k=...; p=...`) publishing the public half.
    pub fn dns_record(&self) -> String {
        use base64::Engine;
        let k = match self.key.algorithm() {
            Algorithm::Ed25519Sha256 => "ed25519",
            Algorithm::RsaSha256 | Algorithm::RsaSha1 => "rsa",
        };
        let p = base64::engine::general_purpose::STANDARD.encode(&self.public);
        format!("v=DKIM1; k={k}; p={p}")
    }
}

fn rsa_private(der: &PrivateKeyDer<'_>) -> anyhow::Result<rsa::RsaPrivateKey> {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::pkcs8::DecodePrivateKey;
    Ok(match der {
        PrivateKeyDer::Pkcs1(k) => rsa::RsaPrivateKey::from_pkcs1_der(k.secret_pkcs1_der())?,
        PrivateKeyDer::Pkcs8(k) => rsa::RsaPrivateKey::from_pkcs8_der(k.secret_pkcs8_der())?,
        _ => bail!("unsupported RSA key format"),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyAlgorithm {
    Rsa,
    Ed25519,
}

/// A new private key as PKCS#8 PEM and the TXT record value that publishes it.
pub struct GeneratedKey {
    pub private_pem: String,
    pub dns_record: String,
}

/// Generates a signing key. RSA is the default for compatibility: RFC 8463 asks signers
/// to add an RSA signature next to Ed25519, and many verifiers only know RSA.
pub fn generate_key(algorithm: KeyAlgorithm, bits: usize) -> anyhow::Result<GeneratedKey> {
    let private_pem = match algorithm {
        KeyAlgorithm::Rsa => {
            if !(2048..=4096).contains(&bits) {
                bail!("RSA keys must have 2048 to 4096 bits (got {bits})");
            }
            rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits)
                .context("generating the RSA key")?
                .to_pkcs8_pem(LineEnding::LF)
                .context("encoding the RSA key")?
                .to_string()
        }
        KeyAlgorithm::Ed25519 => {
            let der = Ed25519Key::generate_pkcs8()
                .map_err(|e| anyhow::anyhow!("generating the Ed25519 key: {e}"))?;
            rsa::pkcs8::der::pem::encode_string("PRIVATE KEY", LineEnding::LF, &der)
                .map_err(|e| anyhow::anyhow!("encoding the Ed25519 key: {e}"))?
        }
    };
    let dns_record = KeyPair::from_pem(private_pem.as_bytes())?.dns_record();
    Ok(GeneratedKey {
        private_pem,
        dns_record,
    })
}

/// The DNS TXT record value (`v=DKIM1; k=...; p=...`) publishing the public half of a
/// PEM private key.
pub fn dns_record_from_pem(pem: &[u8]) -> anyhow::Result<String> {
    Ok(KeyPair::from_pem(pem)?.dns_record())
}

/// A zone file line publishing `value` at `name`.
pub fn zone_line(name: &str, value: &str) -> String {
    format!("{name} IN TXT ( {} )", txt_strings(value))
}

/// A TXT value as quoted character-strings. One holds at most 255 bytes (RFC 1035
/// §3.3), so a long value (any RSA key) is split into several, which DKIM and SPF
/// verifiers join back together (RFC 6376 §3.6.2.2, RFC 7208 §3.3).
pub fn txt_strings(value: &str) -> String {
    let mut strings = Vec::new();
    let mut rest = value;
    while !rest.is_empty() || strings.is_empty() {
        let mut end = rest.len().min(255);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (chunk, tail) = rest.split_at(end);
        strings.push(format!(
            "\"{}\"",
            chunk.replace('\\', "\\\\").replace('"', "\\\"")
        ));
        rest = tail;
    }
    strings.join(" ")
}

/// Writes a private key readable by its owner only.
pub fn write_private_key(path: &Path, pem: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_records_and_key_formats() {
        let ed = generate_key(KeyAlgorithm::Ed25519, 0).unwrap();
        assert!(ed.private_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let p = ed
            .dns_record
            .strip_prefix("v=DKIM1; k=ed25519; p=")
            .unwrap();
        assert_eq!(p.len(), 44, "32 bytes in base64");

        let rsa = generate_key(KeyAlgorithm::Rsa, 2048).unwrap();
        assert!(rsa.private_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let p = rsa.dns_record.strip_prefix("v=DKIM1; k=rsa; p=").unwrap();
        // SubjectPublicKeyInfo of a 2048-bit key: 294 bytes.
        assert_eq!(p.len(), 392, "{p}");
        assert!(generate_key(KeyAlgorithm::Rsa, 1024).is_err());
    }

    #[test]
    fn reads_pkcs1_rsa_keys() {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let pkcs1 = key.to_pkcs1_pem(LineEnding::LF).unwrap();
        assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        let pair = KeyPair::from_pem(pkcs1.as_bytes()).unwrap();
        let pkcs8 = key.to_pkcs8_pem(LineEnding::LF).unwrap();
        assert_eq!(
            pair.dns_record(),
            KeyPair::from_pem(pkcs8.as_bytes()).unwrap().dns_record()
        );
    }

    #[test]
    fn txt_strings_quote_and_split_on_characters() {
        assert_eq!(txt_strings(""), "\"\"");
        assert_eq!(txt_strings(r#"a"b\c"#), r#""a\"b\\c""#);
        // 2-byte characters: a string ends before one would cross 255 bytes.
        let split = txt_strings(&"é".repeat(200));
        assert_eq!(
            split,
            format!("\"{}\" \"{}\"", "é".repeat(127), "é".repeat(73))
        );
    }

    #[test]
    fn zone_line_splits_long_values() {
        let value = "v=DKIM1; k=rsa; p=".to_string() + &"A".repeat(392);
        let line = zone_line("s._domainkey.example.com.", &value);
        let strings: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
        assert_eq!(strings.len(), 2);
        assert_eq!(strings[0].len(), 255);
        assert_eq!(strings.concat(), value);
        assert!(
            line.starts_with("s._domainkey.example.com. IN TXT ( \""),
            "{line}"
        );
    }

    #[test]
    fn rejects_garbage_keys() {
        assert!(KeyPair::from_pem(b"not a key").is_err());
    }

    #[test]
    fn private_key_file_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        write_private_key(&path, "x").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(
            write_private_key(&path, "y").is_err(),
            "never overwrites a key"
        );
    }
}

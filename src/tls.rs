//! TLS for the SMTP listeners: certificate loading, hot reload and the server config.
//!
//! The certificate lives behind a `ResolvesServerCert` that reads the current
//! `CertifiedKey` for every new handshake, so a renewed `kubernetes.io/tls` Secret takes
//! effect for new connections while established sessions keep the key they started with.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::crypto::ring::cipher_suite;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls::{ProtocolVersion, ServerConnection, SupportedCipherSuite};

use crate::reload::{self, Watched};

/// File names of a `kubernetes.io/tls` Secret, also used for the self-signed pair.
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";

/// Server-side TLS sessions remembered for resumption (TLS 1.2 session IDs and TLS 1.3
/// stateful tickets); stateless tickets below cover the rest.
const SESSION_CACHE_SIZE: usize = 4096;

/// A self-signed certificate is regenerated when it would expire within this margin.
const SELF_SIGNED_MIN_REMAINING: Duration = Duration::from_secs(30 * 24 * 3600);
const SELF_SIGNED_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The suites the server offers, most preferred first; the server's order wins over the
/// client's. Only AEAD suites with forward secrecy: TLS 1.3, then TLS 1.2 ECDHE (ECDSA for
/// EC certificates, RSA for RSA ones; a handshake only sees those its key can sign).
/// 256-bit ciphers come first, ChaCha20-Poly1305 before AES-128-GCM.
const SERVER_CIPHER_SUITES: [SupportedCipherSuite; 9] = [
    cipher_suite::TLS13_AES_256_GCM_SHA384,
    cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    cipher_suite::TLS13_AES_128_GCM_SHA256,
    cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
];

/// The ring provider restricted to `SERVER_CIPHER_SUITES`, in that order.
fn server_provider() -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        cipher_suites: SERVER_CIPHER_SUITES.to_vec(),
        ..rustls::crypto::ring::default_provider()
    })
}

/// A TLS client that trusts exactly the certificates in `pinned` (self-signed ones, as
/// the pods of one MailServer share): the server must present one of them, and its
/// handshake signatures are still checked.
pub fn pinned_client_config(
    pinned: Vec<CertificateDer<'static>>,
) -> anyhow::Result<rustls::ClientConfig> {
    let provider = provider();
    Ok(
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned { pinned, provider }))
            .with_no_client_auth(),
    )
}

#[derive(Debug)]
struct Pinned {
    pinned: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|c| c.as_ref() == end_entity.as_ref())
        {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the server does not present a pinned certificate".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Reads a PEM certificate chain and private key (RSA, ECDSA P-256/P-384 or Ed25519; in
/// PKCS#8, PKCS#1 or SEC1 form) and checks that the key belongs to the first certificate.
pub fn load_certified_key(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading certificates from {}", cert.display()))?;
    if chain.is_empty() {
        bail!("no certificate found in {}", cert.display());
    }
    let private_key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading private key from {}", key.display()))?;
    let signing_key = provider()
        .key_provider
        .load_private_key(private_key)
        .with_context(|| format!("unsupported private key in {}", key.display()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    // Every ring key type exposes its public key, so "unknown" consistency is an error too.
    certified.keys_match().with_context(|| {
        format!(
            "private key {} does not match certificate {}",
            key.display(),
            cert.display()
        )
    })?;
    Ok(certified)
}

/// Hands every new handshake the certificate as last loaded successfully: the ECDSA one
/// when there is one and the client can take it, else the main one.
struct ReloadingCert {
    current: Arc<Watched<CertifiedKey>>,
    ecdsa: Option<Arc<Watched<CertifiedKey>>>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(ecdsa) = &self.ecdsa {
            let key = ecdsa.get();
            if takes_ecdsa(&client_hello, &key) {
                return Some(key);
            }
        }
        Some(self.current.get())
    }
}

/// The client accepts a signature the ECDSA key can make, and a suite to go with it:
/// any TLS 1.3 suite, or a TLS 1.2 ECDHE_ECDSA one.
fn takes_ecdsa(client_hello: &ClientHello<'_>, key: &CertifiedKey) -> bool {
    key.key
        .choose_scheme(client_hello.signature_schemes())
        .is_some()
        && client_hello.cipher_suites().iter().any(|offered| {
            SERVER_CIPHER_SUITES.iter().any(|suite| {
                suite.suite() == *offered
                    && suite.usable_for_signature_algorithm(rustls::SignatureAlgorithm::ECDSA)
            })
        })
}

/// [`load_certified_key`] for the second pair, which must hold an ECDSA key.
fn load_ecdsa_key(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let certified = load_certified_key(cert, key)?;
    if certified.key.algorithm() != rustls::SignatureAlgorithm::ECDSA {
        bail!("{} is not an ECDSA key", key.display());
    }
    Ok(certified)
}

/// The server TLS configuration: TLS 1.2 and 1.3 with the server's cipher order, no
/// client certificates, no ALPN, session resumption through a cache and rotating tickets.
/// The certificate and key are re-read when either file changes (checked every
/// `reload_interval`); a broken or mismatched pair keeps the previous certificate. At
/// startup a broken pair is an error.
///
/// Must be called inside a tokio runtime (the reload runs as a task).
pub fn server_config(
    cert: &Path,
    key: &Path,
    ecdsa: Option<(&Path, &Path)>,
    reload_interval: Duration,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let watch = |what, cert: &Path, key: &Path, load: fn(&Path, &Path) -> _| {
        let (cert, key) = (cert.to_path_buf(), key.to_path_buf());
        reload::watch(
            what,
            vec![cert.clone(), key.clone()],
            reload_interval,
            move || load(&cert, &key),
        )
    };
    let current = watch("TLS certificate", cert, key, load_certified_key)?;
    let ecdsa = ecdsa
        .map(|(cert, key)| watch("ECDSA TLS certificate", cert, key, load_ecdsa_key))
        .transpose()?;
    let mut config = rustls::ServerConfig::builder_with_provider(server_provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(ReloadingCert { current, ecdsa }));
    config.ignore_client_order = true;
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_SIZE);
    config.ticketer = rustls::crypto::ring::Ticketer::new().context("TLS session tickets")?;
    Ok(Arc::new(config))
}

/// The negotiated protocol version and cipher suite of an established connection, as
/// printed in logs and the Received header: `("TLSv1.3", "TLS13_AES_256_GCM_SHA384")`.
pub fn session_info(conn: &ServerConnection) -> (&'static str, &'static str) {
    let version = match conn.protocol_version() {
        Some(ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "unknown",
    };
    let cipher = conn
        .negotiated_cipher_suite()
        .and_then(|suite| suite.suite().as_str())
        .unwrap_or("unknown");
    (version, cipher)
}

/// A self-signed ECDSA P-256 certificate for `hostname` (PEM certificate, PEM PKCS#8
/// key), valid from an hour ago for `validity`. Quick: a P-256 key takes well under a
/// millisecond.
pub fn self_signed_pem(hostname: &str, validity: Duration) -> anyhow::Result<(String, String)> {
    let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(vec![hostname.to_owned()])
        .with_context(|| format!("certificate for {hostname:?}"))?;
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::CommonName, hostname);
    params.distinguished_name = name;
    let now = SystemTime::now();
    // Back-dated a little so clients with a slightly slow clock accept it straight away.
    params.not_before = (now - Duration::from_secs(3600)).into();
    params.not_after = (now + validity).into();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.self_signed(&key_pair)?;
    Ok((cert.pem(), key_pair.serialize_pem()))
}

/// Makes sure `dir` holds a self-signed certificate for `hostname` (ECDSA P-256, one year)
/// as `tls.crt` and `tls.key`, and returns their paths. A pair already there is kept
/// while it matches, names `hostname` and stays valid for another 30 days, so the
/// certificate a client was told to trust survives restarts.
pub fn write_self_signed(hostname: &str, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    if cert_path.exists() && key_path.exists() {
        match reusable_self_signed(hostname, &cert_path, &key_path) {
            Ok(()) => return Ok((cert_path, key_path)),
            Err(err) => tracing::info!(
                dir = %dir.display(),
                reason = format!("{err:#}"),
                "replacing the self-signed certificate"
            ),
        }
    }

    let (cert, key) = self_signed_pem(hostname, SELF_SIGNED_VALIDITY)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_atomically(&key_path, key.as_bytes(), 0o600)?;
    write_atomically(&cert_path, cert.as_bytes(), 0o644)?;
    tracing::info!(hostname, cert = %cert_path.display(), "generated a self-signed certificate");
    Ok((cert_path, key_path))
}

/// Checks an existing self-signed pair by verifying the certificate as its own trust
/// anchor for `hostname`, at a time 30 days from now.
fn reusable_self_signed(hostname: &str, cert: &Path, key: &Path) -> anyhow::Result<()> {
    let certified = load_certified_key(cert, key)?;
    let end_entity = certified.end_entity_cert()?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(end_entity.clone())?;
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()?;
    let later = UnixTime::since_unix_epoch(
        (SystemTime::now() + SELF_SIGNED_MIN_REMAINING).duration_since(SystemTime::UNIX_EPOCH)?,
    );
    let name = ServerName::try_from(hostname.to_owned())?;
    verifier.verify_server_cert(end_entity, &[], &name, &[], later)?;
    Ok(())
}

fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A 2048-bit RSA key in PKCS#1 form (`openssl genrsa -traditional`) and its
    /// certificate for mail.test, test use only: with ring, rcgen can neither generate RSA
    /// keys nor sign with a PKCS#1 one.
    const RSA_PKCS1_KEY: &str = "-----BEGIN RSA PRIVATE KEY-----
MIIEpAIBAAKCAQEAn+CGHgxhuwpDA1F42Xb1LaSZtW1XKN4c0XSWDg6OnVBl+C8t
jwhhNNzhFdFEtCpP45pWGibhDZLOD+E+wRO5ExEXoMkABpoZSWdnBCvtu5p/lbNk
vvGd7sqcC+CR/9IbH2VRms8IcjsOg1yMOe/awY/D4NlMNLq0YojFifUsb1tKwJ5d
FiEjEQ30zYHDsk2MjWG95ypT3yIuib3QtHieqin451ranF+9gxt1gW3oh+ZZenvB
KWbO4ppkYyFWgls5BohErNSvneeKVhxvE1U8531wHHORyr02G6qMCCSWjyjvPBhe
K+fQkW5islCa0pfSbXPu6C3QFRG0JXYS6292CQIDAQABAoIBAA5z/RfmEWc35yU7
hiftpL5IszMXNIIPq04FosOYTgz7bc51EGKt9KCzZ59B7Pq3GQQHyakhUubX2sxN
de99NZXbTZYl2ZxfLbJIuGPEh2A2eDp7rlvDKr6Bvz/lIDm+4CATWCBdP0OZYmde
dFhP/kgRk7kF1+lr5/8A44/EU+0okFeppp8o6dRdBwGer3cokAdlk9IYdS/2buoi
x6touleQNOiNN7i0UTmv5g7ysJRFt1XRj5iMz5gxrz7UdUlhH1qVLypbbJbu/56o
FlfoTUF+A5If72odXYGebKVVQImXKfDOVKCg6C0E/w/jawInSQiVMcFroth7nRpa
eD58WkECgYEA13cYn6yLnXk4L3RdtXWwM6Ce49EbEL/EUlofXiPYlZO/ld3/d2FU
WsYkBrroHah9DlzDYuYxXC4CzclsTdlsxoCnNhq6rFio6tb6kBkGtYMcu8LEu8ct
TED6jnwmGiP90iDUUMjk+h6WUgiQNjvh6XtxBhLAO2JK4dz1h5LW3MkCgYEAvfRG
mpwnYwC0iwOyVHhA2W/gL+iwPNrtrAarZw7CEBt5cPG6DDyzclYqcnXW/MEZDz9z
Hi74Gx//taVTvh1FgR/Sc8KYUP/sB/yVBNW8BSKcr/VkuuMSn1Lv4sR3x9eZbRlw
drYutYw6P+2u4D2I/bJvWcdBLrJ8mvy/UtBUr0ECgYEAtrXBZbWVduXSJTuSM0wn
LMBpvFoXj25udj8CFnxjLwPpFJb6CSu5sngPGL3qEyxLT6CN9xGojbhenE7Pznwv
Z2y1XoXwAjH0m5/NPeBa9hTGitmwpmNSIDWBws24KbaXiFZadF7G/OpvIgUs9TB2
c90/jJzd8f157mnGsz5rgTECgYAKIgXCKaJQPbFj2QaiSufqsXUcGSWNmYAkNRbf
oIHpqg2IYNyz2mkYKFCLWo3lXcegcJoLeiXyDHrvjaox8g3LHY90bWUCrSRCKM8q
OtyUyYviNwzwizxrE1mIl0JsfqvIjhrZuk4zkQ9qaZtyitXL8sDN4Tsw6oSLIAB0
wnhCAQKBgQDLvpADK4IjggPjTTu+6N/GDxD/zC/an6O+fuwHrdhs966YLV2tj8vB
V9Z07PsbR5fYn4XcFR4TMO+OwJ1To8Hokpfcxt7T3VFRb3oNXpbfpWG+t5Bt8d6A
mpapmq32lp1QHzHnH29DOczXhg02vnoRP7EinovZl2ZDtB7teQqpIA==
-----END RSA PRIVATE KEY-----
";
    const RSA_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIDMzCCAhugAwIBAgIUXIxG0M/nYd3bknv60+TFqwZEcGIwDQYJKoZIhvcNAQEL
BQAwFDESMBAGA1UEAwwJbWFpbC50ZXN0MCAXDTI2MTEyNzE4MjkzMVoYDzIxMjYx
MTAzMTgyOTMxWjAUMRIwEAYDVQQDDAltYWlsLnRlc3QwggEiMA0GCSqGSIb3DQEB
AQUAA4IBDwAwggEKAoIBAQCf4IYeDGG7CkMDUXjZdvUtpJm1bVco3hzRdJYODo6d
UGX4Ly2PCGE03OEV0US0Kk/jmlYaJuENks4P4T7BE7kTERegyQAGmhlJZ2cEK+27
mn+Vs2S+8Z3uypwL4JH/0hsfZVGazwhyOw6DXIw579rBj8Pg2Uw0urRiiMWJ9Sxv
W0rAnl0WISMRDfTNgcOyTYyNYb3nKlPfIi6JvdC0eJ6qKfjnWtqcX72DG3WBbeiH
5ll6e8EpZs7immRjIVaCWzkGiESs1K+d54pWHG8TVTznfXAcc5HKvTYbqowIJJaP
KO88GF4r59CRbmKyUJrSl9Jtc+7oLdAVEbQldhLrb3YJAgMBAAGjezB5MB0GA1Ud
DgQWBBTts2kjZCYrem07aqmFSZ6UFWpbFzAfBgNVHSMEGDAWgBTts2kjZCYrem07
aqmFSZ6UFWpbFzAUBgNVHREEDTALggltYWlsLnRlc3QwDAYDVR0TAQH/BAIwADAT
BgNVHSUEDDAKBggrBgEFBQcDATANBgkqhkiG9w0BAQsFAAOCAQEAaiezVjaG3o8t
tsCbQB4Uy4bwmUPdZ6T0ht6aXc/iXN/JmK56x/XnFag+t1kiiJp/t3IMP/6eFOo4
lvZfRdpcJ1A9Ntg61nigpw+3dM0kDs/EKkoMxuaURcB4BH0aJdWn6HZ48uYMF7NC
1gJDEUHM56MTP/Uo/7Yg1wu2bhedCyPVljD1uVUJXvu6S6d++Bs7EZeiUdtEzaQW
AL1A6cqir3kQQ3UR7oYcvCQWU8iSBgOFc2p+kgD70XXisW3zZKl0RHNqz8ZPPPNz
T0IKTFBxt4oDysnx0PV0o5fPIsMKQn0hsXA7HdJhK0Lxoq12swbovALFvVLQNB3J
C4gGHNSq1w==
-----END CERTIFICATE-----
";

    /// A P-384 key in SEC1 form and its certificate, made with openssl (rcgen reads
    /// only PKCS#8 EC keys), test use only.
    const EC384_SEC1_KEY: &str = "-----BEGIN EC PRIVATE KEY-----
MIGkAgEBBDDPmF7jpRQG82B39rLriG39W7GxoimoOaaezhjPhdHafhfxkK9UtYQj
PM4wlZpaUkWgBwYFK4EEACKhZANiAASvUf5R7ghzRn5s4FFJF/dCQh94uACQvUha
znm9TEjRudxvhxu3vTOU6wIiRMKdo1r7gDJwuYmo4y4InlscvsRhuA+7A7kF3yhP
d0uJYhbvVbl0On40v52veGRYVDcxqNo=
-----END EC PRIVATE KEY-----
";
    const EC384_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIB0TCCAVigAwIBAgIUcVc22uDUni2PwcxnM9rigq8WlUMwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJc2VjMS50ZXN0MCAXDTI2MTEyNzE4MjgxMFoYDzIxMjYxMTAz
MTgyODEwWjAUMRIwEAYDVQQDDAlzZWMxLnRlc3QwdjAQBgcqhkjOPQIBBgUrgQQA
IgNiAASvUf5R7ghzRn5s4FFJF/dCQh94uACQvUhaznm9TEjRudxvhxu3vTOU6wIi
RMKdo1r7gDJwuYmo4y4InlscvsRhuA+7A7kF3yhPd0uJYhbvVbl0On40v52veGRY
VDcxqNqjaTBnMB0GA1UdDgQWBBRihxIBVhHHUtIVqfH7zcW9p6IGuTAfBgNVHSME
GDAWgBRihxIBVhHHUtIVqfH7zcW9p6IGuTAPBgNVHRMBAf8EBTADAQH/MBQGA1Ud
EQQNMAuCCXNlYzEudGVzdDAKBggqhkjOPQQDAgNnADBkAjAdRdchtQus+pbrtWrA
4z2RTWH12X+nd5FzEQvdy8mdb+Y8m3uQ31b8eL2QTiJtbzkCMESC/tG0aqztSD72
IpwR446loZjHrXqs//D2rv0ncIaTAaKnQSmGI7Xg8Ani/5tWmg==
-----END CERTIFICATE-----
";

    struct Pair {
        cert_pem: String,
        key_pem: String,
    }

    impl Pair {
        fn der(&self) -> CertificateDer<'static> {
            CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).unwrap()
        }

        fn write(&self, dir: &Path) -> (PathBuf, PathBuf) {
            std::fs::create_dir_all(dir).unwrap();
            let (cert, key) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
            std::fs::write(&cert, &self.cert_pem).unwrap();
            std::fs::write(&key, &self.key_pem).unwrap();
            (cert, key)
        }
    }

    fn generated(alg: &'static rcgen::SignatureAlgorithm) -> Pair {
        let key_pair = rcgen::KeyPair::generate_for(alg).unwrap();
        let params = rcgen::CertificateParams::new(vec!["mail.test".to_owned()]).unwrap();
        let cert = params.self_signed(&key_pair).unwrap();
        Pair {
            cert_pem: cert.pem(),
            key_pem: key_pair.serialize_pem(),
        }
    }

    fn rsa_pkcs1() -> Pair {
        Pair {
            cert_pem: RSA_CERT.to_owned(),
            key_pem: RSA_PKCS1_KEY.to_owned(),
        }
    }

    fn client_config(
        trusted: &[&Pair],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for pair in trusted {
            roots.add(pair.der()).unwrap();
        }
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider())
                .with_protocol_versions(versions)
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }

    struct Handshake {
        server_cert: CertificateDer<'static>,
        version: &'static str,
        cipher: &'static str,
        resumed: bool,
    }

    /// A full handshake over an in-memory pipe, plus one byte each way to prove the
    /// session carries data.
    async fn handshake(
        server: Arc<rustls::ServerConfig>,
        client: Arc<rustls::ClientConfig>,
    ) -> anyhow::Result<Handshake> {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let connector = tokio_rustls::TlsConnector::from(client);
        let server_side = async move {
            let mut tls = acceptor.accept(server_io).await?;
            let info = session_info(tls.get_ref().1);
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte).await?;
            tls.write_all(&byte).await?;
            tls.flush().await?;
            anyhow::Ok(info)
        };
        let client_side = async move {
            let name = ServerName::try_from("mail.test")?;
            let mut tls = connector.connect(name, client_io).await?;
            tls.write_all(b"x").await?;
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte).await?;
            let conn = tls.get_ref().1;
            let cert = conn.peer_certificates().unwrap()[0].clone().into_owned();
            let resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            anyhow::Ok((cert, resumed))
        };
        let (info, client_result) = tokio::join!(server_side, client_side);
        let (server_cert, resumed) = client_result?;
        let (version, cipher) = info?;
        Ok(Handshake {
            server_cert,
            version,
            cipher,
            resumed,
        })
    }

    #[test]
    fn loads_supported_key_types() {
        let dir = tempfile::tempdir().unwrap();
        let pairs = [
            ("rsa-pkcs1", rsa_pkcs1()),
            ("p256-pkcs8", generated(&rcgen::PKCS_ECDSA_P256_SHA256)),
            ("p384-pkcs8", generated(&rcgen::PKCS_ECDSA_P384_SHA384)),
            ("ed25519-pkcs8", generated(&rcgen::PKCS_ED25519)),
            (
                "p384-sec1",
                Pair {
                    cert_pem: EC384_CERT.to_owned(),
                    key_pem: EC384_SEC1_KEY.to_owned(),
                },
            ),
        ];
        for (name, pair) in &pairs {
            let (cert, key) = pair.write(&dir.path().join(name));
            let loaded =
                load_certified_key(&cert, &key).unwrap_or_else(|err| panic!("{name}: {err:#}"));
            assert_eq!(loaded.cert, vec![pair.der()], "{name}");
        }
    }

    #[test]
    fn rejects_mismatched_or_missing_parts() {
        let dir = tempfile::tempdir().unwrap();
        let a = generated(&rcgen::PKCS_ECDSA_P256_SHA256);
        let b = generated(&rcgen::PKCS_ECDSA_P256_SHA256);
        let (cert, key) = Pair {
            cert_pem: a.cert_pem.clone(),
            key_pem: b.key_pem.clone(),
        }
        .write(dir.path());
        let err = load_certified_key(&cert, &key).unwrap_err();
        assert!(format!("{err:#}").contains("does not match"), "{err:#}");

        std::fs::write(&key, "").unwrap();
        assert!(load_certified_key(&cert, &key).is_err());
        std::fs::write(&key, &a.key_pem).unwrap();
        std::fs::write(&cert, &a.key_pem).unwrap();
        let err = load_certified_key(&cert, &key).unwrap_err();
        assert!(format!("{err:#}").contains("no certificate"), "{err:#}");
    }

    #[tokio::test]
    async fn startup_fails_on_a_mismatched_pair() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = Pair {
            cert_pem: generated(&rcgen::PKCS_ECDSA_P256_SHA256).cert_pem,
            key_pem: generated(&rcgen::PKCS_ECDSA_P256_SHA256).key_pem,
        }
        .write(dir.path());
        assert!(server_config(&cert, &key, None, Duration::from_secs(60)).is_err());
    }

    #[tokio::test]
    async fn tls12_and_tls13_clients_connect_and_resume() {
        let dir = tempfile::tempdir().unwrap();
        for pair in [rsa_pkcs1(), generated(&rcgen::PKCS_ECDSA_P256_SHA256)] {
            let (cert, key) = pair.write(dir.path());
            let server = server_config(&cert, &key, None, Duration::from_secs(60)).unwrap();

            let tls13 = client_config(&[&pair], &[&rustls::version::TLS13]);
            let first = handshake(server.clone(), tls13.clone()).await.unwrap();
            assert_eq!(first.server_cert, pair.der());
            assert_eq!(first.version, "TLSv1.3");
            assert!(first.cipher.starts_with("TLS13_"), "{}", first.cipher);
            assert!(!first.resumed);
            let again = handshake(server.clone(), tls13).await.unwrap();
            assert!(again.resumed, "TLS 1.3 session was not resumed");

            let tls12 = client_config(&[&pair], &[&rustls::version::TLS12]);
            let first = handshake(server.clone(), tls12.clone()).await.unwrap();
            assert_eq!(first.version, "TLSv1.2");
            assert!(first.cipher.starts_with("TLS_ECDHE_"), "{}", first.cipher);
            let again = handshake(server, tls12).await.unwrap();
            assert!(again.resumed, "TLS 1.2 session was not resumed");
        }
    }

    /// For each certificate type and version, a client offers the server's suites in
    /// reverse order and drops each one once it was chosen: the server must pick them in
    /// exactly the documented order, whatever the client prefers.
    #[tokio::test]
    async fn server_cipher_order_wins() {
        use rustls::version::{TLS12, TLS13};
        let tls13 = [
            "TLS13_AES_256_GCM_SHA384",
            "TLS13_CHACHA20_POLY1305_SHA256",
            "TLS13_AES_128_GCM_SHA256",
        ];
        let ecdsa12 = [
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        ];
        let rsa12 = [
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        ];
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (generated(&rcgen::PKCS_ECDSA_P256_SHA256), &TLS13, tls13),
            (generated(&rcgen::PKCS_ECDSA_P256_SHA256), &TLS12, ecdsa12),
            (rsa_pkcs1(), &TLS13, tls13),
            (rsa_pkcs1(), &TLS12, rsa12),
        ];
        for (pair, version, expected) in cases {
            let (cert, key) = pair.write(dir.path());
            let server = server_config(&cert, &key, None, Duration::from_secs(60)).unwrap();
            let mut offered: Vec<SupportedCipherSuite> = rustls::crypto::ring::ALL_CIPHER_SUITES
                .iter()
                .rev()
                .copied()
                .collect();
            for want in expected {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(pair.der()).unwrap();
                let client_provider = CryptoProvider {
                    cipher_suites: offered.clone(),
                    ..rustls::crypto::ring::default_provider()
                };
                let client = rustls::ClientConfig::builder_with_provider(Arc::new(client_provider))
                    .with_protocol_versions(&[version])
                    .unwrap()
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                let got = handshake(server.clone(), Arc::new(client)).await.unwrap();
                assert_eq!(got.cipher, want, "client offered {offered:?}");
                offered.retain(|suite| suite.suite().as_str() != Some(want));
            }
        }
    }

    /// Lays out a directory like the kubelet does for a mounted Secret:
    /// `tls.crt -> ..data/tls.crt`, `..data -> ..<version>/`.
    fn kubelet_publish(root: &Path, version: &str, pair: &Pair) {
        pair.write(&root.join(version));
        let tmp = root.join("..data_tmp");
        symlink(version, &tmp).unwrap();
        std::fs::rename(&tmp, root.join("..data")).unwrap();
        for file in [CERT_FILE, KEY_FILE] {
            let link = root.join(file);
            if link.symlink_metadata().is_err() {
                symlink(Path::new("..data").join(file), &link).unwrap();
            }
        }
    }

    #[tokio::test]
    async fn reloads_certificate_after_secret_update() {
        let root = tempfile::tempdir().unwrap();
        let old = generated(&rcgen::PKCS_ECDSA_P256_SHA256);
        let new = rsa_pkcs1();
        kubelet_publish(root.path(), "..v1", &old);
        let (cert, key) = (root.path().join(CERT_FILE), root.path().join(KEY_FILE));
        let server = server_config(&cert, &key, None, Duration::from_millis(20)).unwrap();
        // A fresh client config for every handshake so it is full, not a resumption.
        let client = || client_config(&[&old, &new], &[&rustls::version::TLS13]);
        let served = |server| async { handshake(server, client()).await.unwrap().server_cert };
        assert_eq!(served(server.clone()).await, old.der());

        // A broken update (new certificate, old key) keeps serving the old pair.
        kubelet_publish(
            root.path(),
            "..v2",
            &Pair {
                cert_pem: new.cert_pem.clone(),
                key_pem: old.key_pem.clone(),
            },
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(served(server.clone()).await, old.der());

        kubelet_publish(root.path(), "..v3", &new);
        for _ in 0..200 {
            if served(server.clone()).await == new.der() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the new certificate was never served");
    }

    #[tokio::test]
    async fn ecdsa_to_clients_that_take_it_rsa_to_the_rest() {
        use rustls::version::{TLS12, TLS13};
        let (rsa_dir, ec_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (rsa, ec, ec_new) = (
            rsa_pkcs1(),
            generated(&rcgen::PKCS_ECDSA_P256_SHA256),
            generated(&rcgen::PKCS_ECDSA_P256_SHA256),
        );
        let (rsa_cert, rsa_key) = rsa.write(rsa_dir.path());
        kubelet_publish(ec_dir.path(), "..v1", &ec);
        let (ec_cert, ec_key) = (ec_dir.path().join(CERT_FILE), ec_dir.path().join(KEY_FILE));
        let ecdsa = Some((ec_cert.as_path(), ec_key.as_path()));
        let interval = Duration::from_millis(20);
        let server = server_config(&rsa_cert, &rsa_key, ecdsa, interval).unwrap();
        let trusted = [&rsa, &ec, &ec_new];
        let served = |server, version| async move {
            let client = client_config(&trusted, &[version]);
            handshake(server, client).await.unwrap().server_cert
        };
        assert_eq!(served(server.clone(), &TLS13).await, ec.der());
        assert_eq!(served(server.clone(), &TLS12).await, ec.der());

        // A TLS 1.2 client without ECDHE_ECDSA suites gets the RSA certificate.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rsa.der()).unwrap();
        let rsa_suites_only = CryptoProvider {
            cipher_suites: vec![cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256],
            ..rustls::crypto::ring::default_provider()
        };
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(rsa_suites_only))
            .with_protocol_versions(&[&TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let got = handshake(server.clone(), Arc::new(client)).await.unwrap();
        assert_eq!(got.server_cert, rsa.der());

        // The ECDSA pair reloads like the main one.
        kubelet_publish(ec_dir.path(), "..v2", &ec_new);
        let mut reloaded = false;
        for _ in 0..200 {
            if served(server.clone(), &TLS13).await == ec_new.der() {
                reloaded = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(reloaded, "the new ECDSA certificate was never served");

        // The second pair must be ECDSA.
        let rsa_as_ecdsa = Some((rsa_cert.as_path(), rsa_key.as_path()));
        let err = server_config(&rsa_cert, &rsa_key, rsa_as_ecdsa, interval).unwrap_err();
        assert!(
            format!("{err:#}").contains("is not an ECDSA key"),
            "{err:#}"
        );
    }

    #[test]
    fn self_signed_is_written_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let tls_dir = dir.path().join("tls");
        let (cert, key) = write_self_signed("mail.example.test", &tls_dir).unwrap();
        assert_eq!(cert, tls_dir.join(CERT_FILE));
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let first = std::fs::read(&cert).unwrap();
        load_certified_key(&cert, &key).unwrap();
        reusable_self_signed("mail.example.test", &cert, &key).unwrap();

        write_self_signed("mail.example.test", &tls_dir).unwrap();
        assert_eq!(
            std::fs::read(&cert).unwrap(),
            first,
            "valid pair was replaced"
        );

        // Another hostname needs another certificate.
        write_self_signed("other.example.test", &tls_dir).unwrap();
        assert_ne!(std::fs::read(&cert).unwrap(), first);
        assert!(reusable_self_signed("mail.example.test", &cert, &key).is_err());
        reusable_self_signed("other.example.test", &cert, &key).unwrap();
    }

    #[test]
    fn self_signed_replaces_an_expiring_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["mail.test".to_owned()]).unwrap();
        params.not_before = (SystemTime::now() - Duration::from_secs(86400)).into();
        params.not_after = (SystemTime::now() + Duration::from_secs(86400)).into();
        let cert = params.self_signed(&key_pair).unwrap();
        let pair = Pair {
            cert_pem: cert.pem(),
            key_pem: key_pair.serialize_pem(),
        };
        let (cert, key) = pair.write(dir.path());
        assert!(reusable_self_signed("mail.test", &cert, &key).is_err());
        write_self_signed("mail.test", dir.path()).unwrap();
        assert_ne!(std::fs::read_to_string(&cert).unwrap(), pair.cert_pem);
        reusable_self_signed("mail.test", &cert, &key).unwrap();
    }
}

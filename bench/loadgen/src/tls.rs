//! The client TLS setup: the server's own certificate pinned (the bench servers use a
//! self-signed one), signatures still checked, and session resumption on or off.

use std::sync::Arc;

use anyhow::Context;
use rustls::DigitallySignedStruct;
use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

/// A client config trusting exactly the certificate in `cert_file`. Without `resume`
/// every connection does a full handshake, as a fresh client would; with it, rustls keeps
/// its tickets and sessions across connections sharing this config.
pub fn client_config(cert_file: &str, resume: bool) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let trusted = CertificateDer::pem_file_iter(cert_file)
        .with_context(|| format!("reading {cert_file}"))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {cert_file}"))?;
    anyhow::ensure!(!trusted.is_empty(), "{cert_file}: no certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { trusted, provider }))
        .with_no_client_auth();
    if !resume {
        config.resumption = Resumption::disabled();
    }
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct Pinned {
    trusted: Vec<CertificateDer<'static>>,
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
            .trusted
            .iter()
            .any(|c| c.as_ref() == end_entity.as_ref())
        {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "server certificate is not the pinned one".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

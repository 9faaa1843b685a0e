//! The client TLS setup: the server's own certificate pinned (the bench servers use a
//! self-signed one), signatures still checked, and session resumption on or off.

use std::sync::Arc;

use anyhow::Context;
use rustls::client::Resumption;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// A client config trusting exactly the certificate in `cert_file`. Without `resume`
/// every connection does a full handshake, as a fresh client would; with it, rustls keeps
/// its tickets and sessions across connections sharing this config.
pub fn client_config(cert_file: &str, resume: bool) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let trusted = CertificateDer::pem_file_iter(cert_file)
        .with_context(|| format!("reading {cert_file}"))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {cert_file}"))?;
    anyhow::ensure!(!trusted.is_empty(), "{cert_file}: no certificate");
    let mut config = posthorn::tls::pinned_client_config(trusted)?;
    if !resume {
        config.resumption = Resumption::disabled();
    }
    Ok(Arc::new(config))
}

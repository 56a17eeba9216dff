//! HTTPS: when `tls_cert` and `tls_key` are both set the API serves TLS
//! itself (rustls); otherwise plain HTTP, for use behind a reverse proxy.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// Reads the PEM chain and key and builds a server config (TLS 1.2 and 1.3).
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<ServerConfig> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("cannot read the certificate chain {} (FILESYNC_TLS_CERT)", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!("{} (FILESYNC_TLS_CERT) holds no certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read the private key {} (FILESYNC_TLS_KEY)", key.display()))?;
    // The provider is named, not taken from the process default, which is
    // ambiguous when several crates enable different rustls backends.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the TLS certificate and key do not fit together")
}

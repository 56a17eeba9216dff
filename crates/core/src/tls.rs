//! The server side of TLS, shared by both daemons so an operator sees the same
//! rules and messages from either: a PEM certificate chain and key
//! (`FILESYNC_TLS_CERT`, `FILESYNC_TLS_KEY`) become a rustls server config.
//! Reading files is all this does; the daemons accept connections.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the certificate chain {} (FILESYNC_TLS_CERT): {source}", path.display())]
    Cert { path: PathBuf, source: pem::Error },
    #[error("{} (FILESYNC_TLS_CERT) holds no certificate", .0.display())]
    NoCert(PathBuf),
    #[error("cannot read the private key {} (FILESYNC_TLS_KEY): {source}", path.display())]
    Key { path: PathBuf, source: pem::Error },
    #[error("TLS protocol versions: {0}")]
    Versions(rustls::Error),
    #[error("the TLS certificate and key do not fit together: {0}")]
    Mismatch(rustls::Error),
}

/// Reads the PEM chain and key and builds a server config (TLS 1.2 and 1.3).
pub fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Cert { path: cert.to_path_buf(), source })?;
    if chain.is_empty() {
        return Err(TlsError::NoCert(cert.to_path_buf()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key { path: key.to_path_buf(), source })?;
    // The provider is named, not taken from the process default, which is
    // ambiguous when several crates in one binary enable different backends.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Versions)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(TlsError::Mismatch)
}

//! TLS on the sync port: when `tls_cert` and `tls_key` are both set the node
//! serves rustls (TLS 1.2 and 1.3) and nothing else on that port; otherwise
//! plain TCP, for use behind something that terminates TLS.
//!
//! The PEM rules and messages are the HTTP API's (`filesync-http-api`'s
//! `tls` module), so an operator sees the same error from either daemon.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use filesync_core::config::Config;

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
    // Named rather than the process default, which is ambiguous when several
    // crates in the binary enable different rustls backends.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the TLS certificate and key do not fit together")
}

/// The acceptor for `config`, or `None` for plain TCP. A bad certificate or key is an error: the node must
/// not start and silently serve something the operator did not ask for.
pub fn acceptor(config: &Config) -> anyhow::Result<Option<TlsAcceptor>> {
    match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Ok(Some(TlsAcceptor::from(Arc::new(server_config(cert, key)?)))),
        (None, None) => Ok(None),
        _ => anyhow::bail!("FILESYNC_TLS_CERT and FILESYNC_TLS_KEY must be set together"),
    }
}

//! TLS on the sync port: when `tls_cert` and `tls_key` are both set the node
//! serves rustls (TLS 1.2 and 1.3) and nothing else on that port; otherwise
//! plain TCP, for use behind something that terminates TLS.
//!
//! The PEM rules and messages are `filesync_core::tls`'s, shared with the
//! HTTP API, so an operator sees the same error from either daemon.

use std::sync::Arc;

use tokio_rustls::TlsAcceptor;

use filesync_core::config::Config;

pub use filesync_core::tls::server_config;

/// The acceptor for `config`, or `None` for plain TCP. A bad certificate or key is an error: the node must
/// not start and silently serve something the operator did not ask for.
pub fn acceptor(config: &Config) -> anyhow::Result<Option<TlsAcceptor>> {
    match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Ok(Some(TlsAcceptor::from(Arc::new(server_config(cert, key)?)))),
        (None, None) => Ok(None),
        _ => anyhow::bail!("FILESYNC_TLS_CERT and FILESYNC_TLS_KEY must be set together"),
    }
}

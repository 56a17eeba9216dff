//! TLS to sync nodes, and the trust behind it and behind HTTPS to the API.
//!
//! A sync address `tls://HOST:PORT` means TLS (HOST is also the name the
//! certificate must carry); `HOST:PORT` (or `tcp://HOST:PORT`) is plain TCP.
//!
//! Certificates are verified by `rustls-platform-verifier`: the operating
//! system's roots and verifier (the same one reqwest uses for `https://`
//! servers, so the two sides of the CLI trust the same things), plus the CAs
//! of `--ca FILE` for a private CA.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::ClientConfig;

/// Which certificates to trust: the system's, plus those of a CA file. Cheap to clone.
#[derive(Clone, Default)]
pub struct Trust {
    extra: Arc<Vec<CertificateDer<'static>>>,
    ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trust").field("ca_file", &self.ca_file).field("extra", &self.extra.len()).finish()
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read the CA file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("the CA file {0} holds no PEM certificate")]
    NoCertificate(String),
    #[error("cannot set up TLS: {0}")]
    Setup(String),
}

impl Trust {
    /// The system's roots only.
    pub fn system() -> Trust {
        Trust::default()
    }

    /// The system's roots plus every certificate in the PEM file `path` (`--ca FILE`).
    pub fn with_ca_file(path: &Path) -> Result<Trust, TlsSetupError> {
        let shown = path.display().to_string();
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| TlsSetupError::CaFile { path: shown.clone(), reason: e.to_string() })?;
        if certs.is_empty() {
            return Err(TlsSetupError::NoCertificate(shown));
        }
        Ok(Trust { extra: Arc::new(certs), ca_file: Some(path.to_path_buf()) })
    }

    /// The certificates added to the system's roots (DER).
    pub fn extra_roots(&self) -> &[CertificateDer<'static>] {
        &self.extra
    }

    /// A rustls client config that verifies with the platform verifier and the extra roots.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsSetupError> {
        // Named rather than the process default, which is ambiguous when several crates enable rustls backends.
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier =
            rustls_platform_verifier::Verifier::new_with_extra_roots(self.extra.iter().cloned(), provider.clone())
                .map_err(|e| TlsSetupError::Setup(format!("cannot load the trusted certificates: {e}")))?;
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsSetupError::Setup(e.to_string()))?
            .dangerous() // not a bypass: this installs the platform verifier
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Ok(Arc::new(config))
    }
}

/// A sync node address as given by the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `HOST:PORT` or `tcp://HOST:PORT`.
    Plain(String),
    /// `tls://HOST:PORT`: `host` is also the name checked against the certificate.
    Tls { host: String, port: u16 },
}

impl Endpoint {
    pub fn parse(addr: &str) -> Result<Endpoint, String> {
        let addr = addr.trim();
        if let Some(rest) = addr.strip_prefix("tls://") {
            let bad = || format!("invalid sync address {addr:?}; expected tls://HOST:PORT");
            let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
            let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
            let port = port.parse::<u16>().map_err(|_| bad())?;
            if host.is_empty() || ServerName::try_from(host).is_err() {
                return Err(bad());
            }
            Ok(Endpoint::Tls { host: host.to_owned(), port })
        } else if let Some(rest) = addr.strip_prefix("tcp://") {
            Ok(Endpoint::Plain(rest.to_owned()))
        } else if addr.contains("://") {
            Err(format!("invalid sync address {addr:?}; expected HOST:PORT, tcp://HOST:PORT or tls://HOST:PORT"))
        } else {
            Ok(Endpoint::Plain(addr.to_owned()))
        }
    }
}

/// Why a TLS handshake with a node failed, as one line a person can act on.
pub(crate) fn handshake_failure(e: &std::io::Error) -> crate::ClientError {
    let rustls_error = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(rustls::Error::InvalidCertificate(reason)) => crate::ClientError::Untrusted(reason.to_string()),
        Some(rustls::Error::InvalidMessage(_)) => crate::ClientError::Tls(format!(
            "{e}; the node did not answer in TLS (if it serves plain TCP, give the address without tls://)"
        )),
        _ if e.kind() == std::io::ErrorKind::UnexpectedEof => crate::ClientError::Tls(
            "the node closed the connection during the TLS handshake (if it serves plain TCP, give the address \
             without tls://)"
                .to_owned(),
        ),
        _ => crate::ClientError::Tls(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_name_their_transport() {
        assert_eq!(Endpoint::parse("127.0.0.1:7070").unwrap(), Endpoint::Plain("127.0.0.1:7070".into()));
        assert_eq!(Endpoint::parse("tcp://h:1").unwrap(), Endpoint::Plain("h:1".into()));
        assert_eq!(
            Endpoint::parse("tls://sync.example.com:7443").unwrap(),
            Endpoint::Tls { host: "sync.example.com".into(), port: 7443 }
        );
        assert_eq!(Endpoint::parse("tls://[::1]:7443").unwrap(), Endpoint::Tls { host: "::1".into(), port: 7443 });
        for bad in ["tls://host", "tls://:1", "tls://h:port", "http://h:1", "tls://h:70000"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        assert!(matches!(Trust::with_ca_file(&empty), Err(TlsSetupError::NoCertificate(_))));
        let missing = dir.path().join("missing.pem");
        let err = Trust::with_ca_file(&missing).unwrap_err().to_string();
        assert!(err.contains("missing.pem"), "{err}");
    }
}

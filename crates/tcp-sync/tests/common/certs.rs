#![allow(dead_code)] // each including test uses a different part

//! Certificates made at test time (rcgen): a private CA and a node
//! certificate it signed. Shared by the tcp-sync and client tests (the client
//! includes this file by path).

use filesync_core::config::Config;
use filesync_proto_client::ConnectOptions;

/// A private CA and a certificate it signed for `localhost` and 127.0.0.1, as PEM files (made at test time).
pub struct TestCerts {
    pub dir: tempfile::TempDir,
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

impl TestCerts {
    pub fn new() -> TestCerts {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "filesync test CA");
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let files = TestCerts {
            ca: dir.path().join("ca.pem"),
            cert: dir.path().join("node.pem"),
            key: dir.path().join("node.key"),
            dir,
        };
        std::fs::write(&files.ca, ca_cert.pem()).unwrap();
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }

    /// `config` serving TLS with this certificate.
    pub fn serve(&self, config: Config) -> Config {
        Config { tls_cert: Some(self.cert.clone()), tls_key: Some(self.key.clone()), ..config }
    }

    /// Client options that trust this CA.
    pub fn trusting(&self, token: &str, device: &str) -> ConnectOptions {
        let mut opts = ConnectOptions::new(token, device, format!("{device} name"));
        opts.trust = filesync_proto_client::tls::Trust::with_ca_file(&self.ca).unwrap();
        opts
    }
}

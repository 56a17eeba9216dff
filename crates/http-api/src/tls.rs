//! HTTPS: when `tls_cert` and `tls_key` are both set the API serves TLS
//! itself (rustls); otherwise plain HTTP, for use behind a reverse proxy.

pub use filesync_core::tls::server_config;

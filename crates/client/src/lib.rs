//! The filesync command-line client and sync agent (binary `filesync`).
//!
//! Everything that speaks the sync protocol lives in the protocol client library
//! [`filesync_proto_client`]; this crate adds what a person runs: the CLI ([`cli`]), the home
//! directory ([`home`]), the typed HTTP API client ([`http`]) and the sync agent ([`agent`]).

pub mod agent;
pub mod cli;
pub mod home;
pub mod http;
/// The trust behind TLS to sync nodes, shared with HTTPS to the API ([`http::Api::with_trust`]).
pub use filesync_proto_client::tls;

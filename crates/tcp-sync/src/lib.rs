//! `filesync-tcp`: the sync node. Clients keep one TCP connection to any
//! node; the nodes share one database, one chunk store and (optionally) one
//! Redis for presence and the bus.
//!
//! # Layout
//! - [`node`]: what connections share, start-up, the accept loop and shutdown.
//! - [`conn`]: one connection's life (handshake, reader, writer, cleanup);
//!   [`handshake`]: `Hello` checks; [`session`]: the requests.
//! - [`auth`]: the one place where membership and roles are checked.
//! - [`hub`]: per-node fan-out of journal entries to subscribers.
//! - the bus (Redis pub/sub or in-process) and presence are `filesync_bus`'s,
//!   shared with the HTTP API in `filesync-server`.
//! - [`tls`]: rustls on the sync port when a certificate and key are configured.
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics`; [`metrics`]: the counters.
//!
//! The protocol itself (messages, frames) lives in `filesync_core::proto` and
//! is specified in `docs/protocol.md`.

pub mod admin;
pub mod auth;
pub mod conn;
pub mod error;
pub mod handshake;
pub mod hub;
mod metered;
pub mod metrics;
pub mod node;
pub mod session;
pub mod streaming;
pub mod tls;

use std::future::Future;

pub use admin::run_admin;
pub use filesync_bus::{Deps, Services};
pub use node::{Node, Tuning};
use tokio::net::TcpListener;

/// Runs a node on `listener` until `shutdown` resolves (then: Goodbye to
/// every client, in-flight commits finish, return). `deps` is a `Config` or
/// [`Services`] built once and shared (see [`Node::start`]).
pub async fn run(
    listener: TcpListener,
    deps: impl Into<Deps>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    Node::start(deps).await?.serve(listener, shutdown).await
}

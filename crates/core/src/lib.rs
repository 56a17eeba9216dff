//! Everything the filesync daemons and the client agree on.
//!
//! # Layout
//! - [`ids`]: domain newtypes (`UserId`, `WorkspaceId`, `Role`).
//! - [`access`]: the access policy, what each role may do with a workspace (both daemons ask it).
//! - [`secret`]: a string that never shows up in `Debug` or logs.
//! - [`config`]: daemon configuration: defaults → TOML file → `FILESYNC_*` env.
//! - [`jwt`]: issuing and verifying the HS256 access tokens both daemons accept.
//! - [`events`]: JSON events published on the Redis bus by either daemon.
//! - [`path`]: the rules a workspace path must follow, path hashes, conflict-copy names.
//! - [`chunking`]: FastCDC content-defined chunks, BLAKE3 hashes, manifests.
//! - [`encoding`]: a chunk's stored form (raw or zstd), the same at rest and on the wire.
//! - [`proto`]: the sync protocol's messages and frame codec, presence key layout.
//! - [`storage`] (feature `storage`): the chunk store trait and its local directory backend.
//! - [`ingest`] (feature `ingest`): the one upload pipeline (store, durable, record, commit)
//!   of the sync node and the HTTP API.
//! - [`db`] (feature `db`): diesel schema, models, the two-backend connection,
//!   the pool and the embedded migrations; [`password`] (feature `db`): bcrypt.
//! - `testing` (feature `testing`, dev-dependencies only): a throw-away database per test.
//! - `test_data` (feature `test-data`, no dependency; `testing` includes it): deterministic test bytes.
//!
//! **Architecture Invariant:** this crate opens no socket. It describes data
//! and rules; the daemons and the client do the I/O.

pub mod access;
pub mod chunking;
pub mod config;
pub mod encoding;
pub mod events;
pub mod ids;
pub mod jwt;
pub mod path;
pub mod proto;
pub mod secret;
#[cfg(feature = "storage")]
pub mod storage;

#[cfg(feature = "bin")]
pub mod bin_support;
#[cfg(feature = "db")]
pub mod db;
#[cfg(feature = "storage")]
pub mod gc;
#[cfg(feature = "ingest")]
pub mod ingest;
#[cfg(feature = "db")]
pub mod password;
#[cfg(any(test, feature = "test-data"))]
pub mod test_data;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "tls")]
pub mod tls;

pub use ids::{Role, UserId, WorkspaceId};
pub use secret::Secret;

//! The agent's view of one connection to a sync node: the handful of calls
//! the sync engine makes, on top of the protocol client library
//! ([`filesync_proto_client`]). Keeping the engine behind this narrow seam means
//! it never touches frames or request ids.

use std::path::Path;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;

use filesync_core::chunking::{ChunkRef, FileScan, Hash};
use filesync_core::proto::{Change, ErrorCode, Notice};
use filesync_core::WorkspaceId;
use filesync_proto_client::download::Fetch;
pub use filesync_proto_client::HeadsPage;

use super::local::LocalFile;

/// What a node tells the agent without being asked.
#[derive(Debug, Clone)]
pub enum RemoteEvent {
    Change(Change),
    /// Changes of the workspace up to `up_to_seq` (after those already delivered) were not queued:
    /// read them with [`Remote::changes`] before the events that follow.
    Missed {
        workspace_id: WorkspaceId,
        up_to_seq: i64,
    },
    Notice(Notice),
    /// The node is going away; move to another one now.
    Goodbye {
        reason: String,
    },
    /// The connection ended.
    Closed {
        reason: String,
    },
}

/// A change the node accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub version: i64,
    pub seq: i64,
    pub path: String,
    /// Our base was stale: the content went to this conflict copy instead of `path`.
    pub conflict_path: Option<String>,
}

impl From<filesync_proto_client::Committed> for Committed {
    fn from(c: filesync_proto_client::Committed) -> Self {
        Committed { version: c.version, seq: c.seq, path: c.path, conflict_path: c.conflict_path }
    }
}

/// A delete or a move of a known file ([`Remote::edits`]), at the version it was based on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathEdit {
    Delete { path: String, base: i64 },
    Move { from: String, to: String, base: i64 },
}

/// One upload of a batch ([`Remote::put_files`]).
#[derive(Debug, Clone)]
pub struct PutJob {
    pub path: String,
    pub base_version: i64,
    pub abs: std::path::PathBuf,
    pub meta: LocalFile,
    pub scan: FileScan,
}

/// The content of one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub size: u64,
    pub mtime_ms: i64,
    pub content_hash: Hash,
    pub chunks: Vec<ChunkRef>,
}

impl From<filesync_proto_client::Manifest> for Manifest {
    fn from(m: filesync_proto_client::Manifest) -> Self {
        Manifest { size: m.size, mtime_ms: m.mtime_ms, content_hash: m.content_hash, chunks: m.chunks }
    }
}

/// Why a request was refused: the node's code, or a reason of this client's own. Typed end to
/// end: the engine matches on it, never on text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The node answered `Error` with this code.
    Node(ErrorCode),
    /// The node answered `Error` with a code this client does not know (a newer node).
    UnknownCode,
    /// The local file changed while it was read for upload; the watcher brings it back.
    FileChanged,
    /// This client's own setup stops it from connecting (an untrusted certificate, an unusable
    /// address).
    Misconfigured,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::Node(code) => code.as_str(),
            Refusal::UnknownCode => "unknown_code",
            Refusal::FileChanged => "file_changed",
            Refusal::Misconfigured => "client_misconfigured",
        })
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RemoteError {
    /// The request was refused (see [`Refusal`]); the connection is fine.
    #[error("{message} ({code})")]
    Refused { code: Refusal, message: String },
    /// The connection failed or closed; reconnect.
    #[error("{0}")]
    Connection(String),
    /// The workspace is gone for this user (removed from it, or it was deleted): the node
    /// answered `workspace_not_found`. Retrying cannot help; the folder stops syncing.
    #[error("{0}")]
    NoWorkspace(String),
}

impl RemoteError {
    /// Bad or expired token: retrying cannot help until the user logs in again.
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            RemoteError::Refused {
                code: Refusal::Node(ErrorCode::Unauthorized | ErrorCode::TokenExpired | ErrorCode::TokenRevoked),
                ..
            }
        )
    }

    /// Retrying cannot help: a bad token, or a node this client is not set up to talk to
    /// (an untrusted certificate, an unusable address).
    pub fn is_permanent(&self) -> bool {
        self.is_auth() || matches!(self, RemoteError::Refused { code: Refusal::Misconfigured, .. })
    }
}

pub use crate::agent::session::Session;

/// Chunks fetched by a task of its own beside the engine's event loop, over the same connection
/// (a large upload fetched before its commit). Answers like [`Fetch::chunk_sets`].
pub trait DetachedFetch: Send + Sync + 'static {
    fn chunk_sets(&self, ws: WorkspaceId, sets: Vec<Vec<Hash>>) -> BoxFuture<'static, ChunkAnswers>;
}

/// The answer to each set of [`DetachedFetch::chunk_sets`], in the order asked.
pub type ChunkAnswers = Vec<Result<Vec<Vec<u8>>, RemoteError>>;

/// A connection that can hand chunk fetching to a task ([`DetachedFetch`]).
pub trait Detach {
    fn detach(&self) -> Arc<dyn DetachedFetch>;
}

/// The protocol client is pipelined and its clones share the connection: a task's requests
/// travel beside the engine's own.
impl Detach for Session {
    fn detach(&self) -> Arc<dyn DetachedFetch> {
        Arc::new(SharedClient(self.client().clone()))
    }
}

struct SharedClient(filesync_proto_client::Client);

impl DetachedFetch for SharedClient {
    fn chunk_sets(&self, ws: WorkspaceId, sets: Vec<Vec<Hash>>) -> BoxFuture<'static, ChunkAnswers> {
        let mut client = self.0.clone();
        async move {
            let answers = Fetch::chunk_sets(&mut client, ws, &sets).await;
            answers.into_iter().map(|a| a.map_err(RemoteError::from)).collect()
        }
        .boxed()
    }
}

/// Everything the engine needs from a connection. Implemented by [`Session`]. Chunks come
/// through the library's [`Fetch`], so that downloads run the library's one implementation;
/// a task of the engine's may fetch beside it ([`Detach`]).
#[allow(async_fn_in_trait)]
pub trait Remote: Fetch<Error = RemoteError> + Detach {
    /// The next unsolicited event. Cancel-safe: nothing is lost if the future is dropped.
    async fn next_event(&mut self) -> RemoteEvent;
    /// An event that has already arrived, without waiting: `None` if there is none yet.
    fn try_next_event(&mut self) -> Option<RemoteEvent>;
    /// Subscribes from `since_seq`; returns the head seq. Every change up to it is delivered by
    /// [`Remote::next_event`] before any later one.
    async fn subscribe(&mut self, ws: WorkspaceId, since_seq: i64) -> Result<i64, RemoteError>;
    /// Up to `limit` journal changes after `after_seq`, and the head seq when they were read: a
    /// page of a catch-up, without subscribing. Consecutive from `after_seq + 1`, in order;
    /// empty only when `after_seq` is at the head.
    async fn changes(&mut self, ws: WorkspaceId, after_seq: i64, limit: u32)
        -> Result<(Vec<Change>, i64), RemoteError>;
    /// Up to `limit` live heads after the cursor `after` (`None`: the first page), for a
    /// reconciliation with the current files when the journal no longer reaches back to
    /// `last_seq` (the node answered `history_expired`).
    async fn heads(&mut self, ws: WorkspaceId, after: Option<Hash>, limit: u32) -> Result<HeadsPage, RemoteError>;
    /// Uploads `abs` (described by `meta` and `scan`); only the chunks the node lacks are sent.
    async fn put_file(
        &mut self,
        ws: WorkspaceId,
        path: &str,
        base_version: i64,
        abs: &Path,
        meta: &LocalFile,
        scan: &FileScan,
    ) -> Result<Committed, RemoteError>;
    /// Uploads several files, answering in the order given. A connection that can overlap them
    /// (pipelined requests) should: many small files are then bound by the node, not by round trips.
    async fn put_files(&mut self, ws: WorkspaceId, jobs: &[PutJob]) -> Vec<Result<Committed, RemoteError>> {
        let mut out = Vec::with_capacity(jobs.len());
        for j in jobs {
            out.push(self.put_file(ws, &j.path, j.base_version, &j.abs, &j.meta, &j.scan).await);
        }
        out
    }
    async fn delete(&mut self, ws: WorkspaceId, path: &str, base_version: i64) -> Result<Committed, RemoteError>;
    /// Several deletes and moves, answering in the order given. A connection that can overlap
    /// them (pipelined requests) should: the node commits pipelined edits together, so a deleted
    /// or renamed tree is bound neither by round trips nor by a transaction per file.
    async fn edits(&mut self, ws: WorkspaceId, edits: &[PathEdit]) -> Vec<Result<Committed, RemoteError>> {
        let mut out = Vec::with_capacity(edits.len());
        for e in edits {
            out.push(match e {
                PathEdit::Delete { path, base } => self.delete(ws, path, *base).await,
                PathEdit::Move { from, to, base } => self.move_path(ws, from, to, *base).await,
            });
        }
        out
    }
    async fn move_path(
        &mut self,
        ws: WorkspaceId,
        from: &str,
        to: &str,
        base_version: i64,
    ) -> Result<Committed, RemoteError>;
    async fn manifest(&mut self, ws: WorkspaceId, seq: i64) -> Result<Manifest, RemoteError>;
    /// The manifests of several versions, answering in the order given. A connection that can
    /// overlap them should: a batch of small downloads is then not bound by round trips.
    async fn manifests(&mut self, ws: WorkspaceId, seqs: &[i64]) -> Vec<Result<Manifest, RemoteError>> {
        let mut out = Vec::with_capacity(seqs.len());
        for &seq in seqs {
            out.push(self.manifest(ws, seq).await);
        }
        out
    }
}

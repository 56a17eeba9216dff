//! The sync protocol spoken between a client and a `filesync-tcp` node.
//!
//! One typed enum, [`Message`], travels both ways; [`frame`] puts each one in a
//! length-delimited frame as postcard. `docs/protocol.md` is the full
//! reference (byte layout, every message, every error code, the flows); keep
//! it in step with this file — the variant order below IS the wire format.
//!
//! - [`frame`]: the codec (4-byte big-endian length, then a postcard body).
//! - [`presence`]: where a node records its connections in Redis.

pub mod delta;
pub mod frame;
pub mod presence;

use serde::{Deserialize, Serialize};

use crate::chunking::{ChunkRef, Hash};
use crate::events::UserEvent;
use crate::ids::{Role, UserId, WorkspaceId};
use delta::Run;

/// Sent in `Hello`; a node refuses any other with `version_mismatch` (5: chunks travel in their
/// stored form, `Chunk.format`; pages of the journal, `GetChanges`).
pub const PROTOCOL_VERSION: u32 = 5;

/// Requests are numbered by the client; answers carry the same number.
/// `0` is reserved for frames about the whole connection.
pub type RequestId = u64;

/// Every frame body. **Append only**: the position of a variant is its tag on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// 0, client → node, first frame.
    Hello { protocol_version: u32, token: String, device_id: String, device_name: String },
    /// 1, node → client: handshake accepted.
    Welcome {
        user_id: UserId,
        node_id: String,
        session_id: String,
        /// Largest frame this node accepts.
        max_frame_bytes: u32,
        /// Send a `Ping` at least this often; after three intervals of silence the node closes.
        heartbeat_secs: u32,
    },
    /// 2, node → client: `request_id` failed (0: the connection failed and will be closed).
    Error { request_id: RequestId, code: String, message: String },
    /// 3, either way; answered by `Pong` with the same nonce.
    Ping { nonce: u64 },
    /// 4
    Pong { nonce: u64 },
    /// 5, node → client: the node is going away; reconnect (elsewhere) after `retry_after_ms`.
    Goodbye { reason: String, retry_after_ms: u64 },
    /// 6, client → node: start an upload. Answered by `NeedChunks`, then `Committed` or `Error`.
    PutFile(PutFile),
    /// 7, node → client: send these chunks (each once, any order) as `Chunk` frames.
    NeedChunks { request_id: RequestId, hashes: Vec<Hash> },
    /// 8, both ways: one chunk in its stored form (upload: client → node; download: node →
    /// client). `format` is [`crate::encoding::FORMAT_RAW`] (`payload` is the chunk's bytes) or
    /// [`crate::encoding::FORMAT_ZSTD`] (`payload` is one zstd frame of them). The receiver
    /// decodes with [`crate::encoding::decode`] (never more than the chunk's length, at most
    /// `MAX_CHUNK` bytes) and checks the hash.
    Chunk {
        request_id: RequestId,
        hash: Hash,
        format: u8,
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// 9, client → node: abandon the upload `request_id`. No answer.
    Cancel { request_id: RequestId },
    /// 10, node → client: the change is in the journal as `seq`.
    Committed {
        request_id: RequestId,
        workspace_id: WorkspaceId,
        /// The version of the path now; equal to `seq` (a version is the seq that made it).
        version: i64,
        seq: i64,
        /// Where the content was committed: the requested path, or the conflict copy.
        path: String,
        /// Set when `base_version` was stale: the content went to this conflict copy instead.
        conflict_path: Option<String>,
    },
    /// 11, client → node. Answered by `Committed` or `Error`.
    Delete { request_id: RequestId, workspace_id: WorkspaceId, path: String, base_version: i64 },
    /// 12, client → node. Answered by `Committed` (path = `to`) or `Error`.
    Move { request_id: RequestId, workspace_id: WorkspaceId, from: String, to: String, base_version: i64 },
    /// 13, client → node: an (empty) directory. Answered by `Committed` or `Error`.
    MakeDir { request_id: RequestId, workspace_id: WorkspaceId, path: String, base_version: i64 },
    /// 14, client → node: the chunk list of the version made by `seq`. Answered by `Manifest`.
    GetManifest { request_id: RequestId, workspace_id: WorkspaceId, seq: i64 },
    /// 15, node → client.
    Manifest {
        request_id: RequestId,
        workspace_id: WorkspaceId,
        seq: i64,
        path: String,
        size: u64,
        mtime_ms: i64,
        content_hash: Hash,
        chunks: Vec<ChunkRef>,
    },
    /// 16, client → node: answered by one `Chunk` per hash, in order, or an `Error` that ends the request.
    GetChunks { request_id: RequestId, workspace_id: WorkspaceId, hashes: Vec<Hash> },
    /// 17, client → node: send every change after `since_seq`, then live changes.
    Subscribe { request_id: RequestId, workspace_id: WorkspaceId, since_seq: i64 },
    /// 18, node → client: every change up to `head_seq` has been sent before this frame.
    Subscribed { request_id: RequestId, workspace_id: WorkspaceId, head_seq: i64 },
    /// 19, client → node. Answered by `Ack`.
    Unsubscribe { request_id: RequestId, workspace_id: WorkspaceId },
    /// 20, node → client: request done, nothing to report.
    Ack { request_id: RequestId },
    /// 21, node → client: one journal entry of a subscribed workspace.
    Change(Change),
    /// 22, node → client: something about the user's memberships changed.
    Notification(Notice),
    /// 23, client → node: `PutFile` with the chunk list as a delta against the
    /// version `base_seq` of this workspace. Answered like `PutFile`.
    PutDelta(PutDelta),
    /// 24, client → node: like `GetManifest`, as a delta against one of `bases`
    /// (versions whose chunk lists the client holds). Answered by `ManifestDelta`.
    GetManifestDelta { request_id: RequestId, workspace_id: WorkspaceId, seq: i64, bases: Vec<i64> },
    /// 25, node → client: the chunk list of `seq` as runs over `base_seq`'s (0: none, every run is `New`).
    ManifestDelta {
        request_id: RequestId,
        workspace_id: WorkspaceId,
        seq: i64,
        path: String,
        size: u64,
        mtime_ms: i64,
        content_hash: Hash,
        base_seq: i64,
        runs: Vec<Run>,
        /// [`delta::manifest_hash`] of the whole chunk list.
        manifest_hash: Hash,
    },
    /// 26, client → node: up to [`MAX_BATCH_FILES`] files of one workspace, committed together
    /// (one authorization, one chunk lookup, one transaction, one announcement). Answered by one
    /// `NeedChunks` for the chunks of all of them, then `CommittedMany` or an `Error` for the whole batch.
    PutFiles { request_id: RequestId, workspace_id: WorkspaceId, files: Vec<FileUpload> },
    /// 27, node → client: the outcome of each file of a `PutFiles`, in the order sent. Consecutive
    /// seqs; a refused file (stale base of a …) does not stop the others.
    CommittedMany { request_id: RequestId, workspace_id: WorkspaceId, results: Vec<BatchOutcome> },
    /// 28, client → node: up to `limit` (at most [`MAX_CHANGES_PAGE`]) journal changes after
    /// `after_seq`, as one answer: a page of a catch-up, read at the client's pace (a `Subscribe`
    /// queues the whole catch-up at once). Answered by `Changes`.
    GetChanges { request_id: RequestId, workspace_id: WorkspaceId, after_seq: i64, limit: u32 },
    /// 29, node → client: the changes after the asked `after_seq`, consecutive and in seq order:
    /// the `limit` asked, fewer only at `head_seq` (the workspace's newest seq when they were read)
    /// or when more would not fit in half a frame. None: `after_seq` is at (or past) the head.
    Changes { request_id: RequestId, workspace_id: WorkspaceId, head_seq: i64, changes: Vec<Change> },
    /// 30, client → node: up to `limit` (at most [`MAX_HEADS_PAGE`]) live heads of the workspace
    /// after the cursor `after` (`None`: from the start), as one answer: what a client whose
    /// catch-up was answered `history_expired` reconciles with. Answered by `Heads`.
    GetHeads { request_id: RequestId, workspace_id: WorkspaceId, after: Option<Hash>, limit: u32 },
    /// 31, node → client: a page of the live heads (files and directories), each as the change
    /// that made it, normalized: `op` is `Put`, `from_path` none, `deleted` false, `seq` the
    /// path's version. In an order of the node's (by path hash); `next` is the cursor of the next
    /// page, `None` on the last. `head_seq` is the workspace's newest seq when the page was read.
    Heads { request_id: RequestId, workspace_id: WorkspaceId, head_seq: i64, entries: Vec<Change>, next: Option<Hash> },
}

/// Changes one `GetChanges` may ask for.
pub const MAX_CHANGES_PAGE: u32 = 1024;

/// Heads one `GetHeads` may ask for.
pub const MAX_HEADS_PAGE: u32 = 1024;

/// Files one `PutFiles` may carry.
pub const MAX_BATCH_FILES: usize = 1024;
/// Chunk references one `PutFiles` may carry in all (a batch is for many small files; big ones go alone).
pub const MAX_BATCH_CHUNKS: usize = 16 * 1024;

/// One file's upload: where it goes, what it was based on, and its content as a chunk list. The
/// body of a `PutFile` and each entry of a `PutFiles` (postcard writes a nested struct's fields in
/// place, so `PutFile` is on the wire exactly its request, workspace, then these fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileUpload {
    pub path: String,
    /// The version the client's copy was based on; 0 = "I believe this path does not exist".
    pub base_version: i64,
    pub size: u64,
    pub mtime_ms: i64,
    /// Unix permission bits (0 if unknown).
    pub mode: u32,
    /// BLAKE3 of the whole content.
    pub content_hash: Hash,
    pub chunks: Vec<ChunkRef>,
}

/// What became of one file of a `PutFiles`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BatchOutcome {
    /// As `Committed` (the version is the seq).
    Committed { seq: i64, path: String, conflict_path: Option<String> },
    /// As an `Error` frame would have said for this file alone; nothing of it was committed.
    Refused { code: String, message: String },
}

/// An upload whose chunk list is a delta against `base_seq` (see [`delta`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutDelta {
    pub request_id: RequestId,
    pub workspace_id: WorkspaceId,
    pub path: String,
    pub base_version: i64,
    pub size: u64,
    pub mtime_ms: i64,
    pub mode: u32,
    pub content_hash: Hash,
    /// A version of this workspace (any path) whose chunk list the runs copy from.
    pub base_seq: i64,
    pub runs: Vec<Run>,
    /// [`delta::manifest_hash`] of the whole chunk list.
    pub manifest_hash: Hash,
}

/// An upload request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutFile {
    pub request_id: RequestId,
    pub workspace_id: WorkspaceId,
    pub file: FileUpload,
}

impl PutFile {
    /// This upload with its chunk list as runs over `base`, the list of version `base_seq`.
    pub fn to_delta(&self, base_seq: i64, base: &[ChunkRef]) -> PutDelta {
        let f = &self.file;
        PutDelta {
            request_id: self.request_id,
            workspace_id: self.workspace_id,
            path: f.path.clone(),
            base_version: f.base_version,
            size: f.size,
            mtime_ms: f.mtime_ms,
            mode: f.mode,
            content_hash: f.content_hash,
            base_seq,
            runs: delta::diff(base, &f.chunks),
            manifest_hash: delta::manifest_hash(&f.chunks),
        }
    }
}

impl PutDelta {
    /// The `PutFile` this delta stands for, once its chunk list is rebuilt (and checked).
    pub fn with_chunks(self, chunks: Vec<ChunkRef>) -> PutFile {
        PutFile {
            request_id: self.request_id,
            workspace_id: self.workspace_id,
            file: FileUpload {
                path: self.path,
                base_version: self.base_version,
                size: self.size,
                mtime_ms: self.mtime_ms,
                mode: self.mode,
                content_hash: self.content_hash,
                chunks,
            },
        }
    }
}

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChangeOp {
    Put,
    Delete,
    Move,
    Restore,
}

impl ChangeOp {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeOp::Put => "put",
            ChangeOp::Delete => "delete",
            ChangeOp::Move => "move",
            ChangeOp::Restore => "restore",
        }
    }

    pub fn parse(s: &str) -> Option<ChangeOp> {
        Some(match s {
            "put" => ChangeOp::Put,
            "delete" => ChangeOp::Delete,
            "move" => ChangeOp::Move,
            "restore" => ChangeOp::Restore,
            _ => return None,
        })
    }
}

/// A file or a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntryKind {
    File,
    Dir,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Dir => "dir",
        }
    }

    pub fn parse(s: &str) -> Option<EntryKind> {
        match s {
            "file" => Some(EntryKind::File),
            "dir" => Some(EntryKind::Dir),
            _ => None,
        }
    }
}

/// One journal entry as a subscriber sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub workspace_id: WorkspaceId,
    pub seq: i64,
    pub op: ChangeOp,
    pub kind: EntryKind,
    /// The path changed (for a move: the destination).
    pub path: String,
    /// For a move: the source, which is deleted by this same seq.
    pub from_path: Option<String>,
    pub size: u64,
    pub mtime_ms: i64,
    pub mode: u32,
    pub content_hash: Hash,
    /// True if `path` no longer exists after this change.
    pub deleted: bool,
    pub author_id: UserId,
    pub device_id: String,
    /// Commit time, milliseconds since the Unix epoch (whole seconds).
    pub committed_at_ms: i64,
}

/// A membership change delivered to the affected user's connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Notice {
    WorkspaceShared {
        workspace_id: WorkspaceId,
        workspace_name: String,
        role: Role,
        by_user_id: UserId,
        by_username: String,
    },
    /// The user's subscription to the workspace has already been ended.
    MemberRemoved {
        workspace_id: WorkspaceId,
    },
    RoleChanged {
        workspace_id: WorkspaceId,
        role: Role,
    },
    /// The workspace was deleted by its owner; the user's subscription to it has already been ended.
    WorkspaceDeleted {
        workspace_id: WorkspaceId,
    },
    /// A large upload to a subscribed workspace began (protocol 4): its chunks become readable
    /// with `GetChunks` as [`Notice::UploadProgress`] announces them, before the commit.
    /// Nothing here is committed: the file exists only once its `Change` arrives.
    UploadStarted {
        workspace_id: WorkspaceId,
        path: String,
        size: u64,
        content_hash: Hash,
        /// The uploading device (`Hello.device_id`): it ignores its own announcement.
        device_id: String,
        chunks: Vec<ChunkRef>,
    },
    /// The first `durable` chunks of the upload of `content_hash` are now held by the workspace.
    UploadProgress {
        workspace_id: WorkspaceId,
        content_hash: Hash,
        durable: u32,
    },
    /// The upload of `content_hash` ended without a commit (cancelled, refused, disconnected).
    UploadAbandoned {
        workspace_id: WorkspaceId,
        content_hash: Hash,
    },
}

impl Notice {
    /// The workspace an upload announcement is about; `None` for membership notices.
    pub fn upload_workspace(&self) -> Option<WorkspaceId> {
        match self {
            Notice::UploadStarted { workspace_id, .. }
            | Notice::UploadProgress { workspace_id, .. }
            | Notice::UploadAbandoned { workspace_id, .. } => Some(*workspace_id),
            Notice::WorkspaceShared { .. }
            | Notice::MemberRemoved { .. }
            | Notice::RoleChanged { .. }
            | Notice::WorkspaceDeleted { .. } => None,
        }
    }
}

impl Notice {
    /// The notice a user event becomes on the user's connections; `None` for an event the
    /// node acts on itself (a revocation closes connections with an error instead).
    pub fn of(ev: UserEvent) -> Option<Notice> {
        Some(match ev {
            UserEvent::WorkspaceShared { workspace_id, workspace_name, role, by_user_id, by_username } => {
                Notice::WorkspaceShared { workspace_id, workspace_name, role, by_user_id, by_username }
            }
            UserEvent::MemberRemoved { workspace_id } => Notice::MemberRemoved { workspace_id },
            UserEvent::RoleChanged { workspace_id, role } => Notice::RoleChanged { workspace_id, role },
            UserEvent::WorkspaceDeleted { workspace_id } => Notice::WorkspaceDeleted { workspace_id },
            UserEvent::TokensRevoked { .. } => return None,
        })
    }
}

impl Message {
    /// The request this frame belongs to, if any.
    pub fn request_id(&self) -> Option<RequestId> {
        match self {
            Message::Error { request_id, .. }
            | Message::NeedChunks { request_id, .. }
            | Message::Chunk { request_id, .. }
            | Message::Cancel { request_id }
            | Message::Committed { request_id, .. }
            | Message::Delete { request_id, .. }
            | Message::Move { request_id, .. }
            | Message::MakeDir { request_id, .. }
            | Message::GetManifest { request_id, .. }
            | Message::Manifest { request_id, .. }
            | Message::GetChunks { request_id, .. }
            | Message::Subscribe { request_id, .. }
            | Message::Subscribed { request_id, .. }
            | Message::Unsubscribe { request_id, .. }
            | Message::Ack { request_id } => Some(*request_id),
            Message::PutFile(p) => Some(p.request_id),
            Message::PutDelta(p) => Some(p.request_id),
            Message::GetManifestDelta { request_id, .. }
            | Message::ManifestDelta { request_id, .. }
            | Message::PutFiles { request_id, .. }
            | Message::CommittedMany { request_id, .. }
            | Message::GetChanges { request_id, .. }
            | Message::Changes { request_id, .. }
            | Message::GetHeads { request_id, .. }
            | Message::Heads { request_id, .. } => Some(*request_id),
            Message::Hello { .. }
            | Message::Welcome { .. }
            | Message::Ping { .. }
            | Message::Pong { .. }
            | Message::Goodbye { .. }
            | Message::Change(_)
            | Message::Notification(_) => None,
        }
    }

    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "hello",
            Message::Welcome { .. } => "welcome",
            Message::Error { .. } => "error",
            Message::Ping { .. } => "ping",
            Message::Pong { .. } => "pong",
            Message::Goodbye { .. } => "goodbye",
            Message::PutFile(_) => "put_file",
            Message::NeedChunks { .. } => "need_chunks",
            Message::Chunk { .. } => "chunk",
            Message::Cancel { .. } => "cancel",
            Message::Committed { .. } => "committed",
            Message::Delete { .. } => "delete",
            Message::Move { .. } => "move",
            Message::MakeDir { .. } => "make_dir",
            Message::GetManifest { .. } => "get_manifest",
            Message::Manifest { .. } => "manifest",
            Message::GetChunks { .. } => "get_chunks",
            Message::Subscribe { .. } => "subscribe",
            Message::Subscribed { .. } => "subscribed",
            Message::Unsubscribe { .. } => "unsubscribe",
            Message::Ack { .. } => "ack",
            Message::Change(_) => "change",
            Message::Notification(_) => "notification",
            Message::PutDelta(_) => "put_delta",
            Message::GetManifestDelta { .. } => "get_manifest_delta",
            Message::ManifestDelta { .. } => "manifest_delta",
            Message::PutFiles { .. } => "put_files",
            Message::CommittedMany { .. } => "committed_many",
            Message::GetChanges { .. } => "get_changes",
            Message::Changes { .. } => "changes",
            Message::GetHeads { .. } => "get_heads",
            Message::Heads { .. } => "heads",
        }
    }

    pub fn error(request_id: RequestId, code: ErrorCode, message: impl Into<String>) -> Message {
        Message::Error { request_id, code: code.as_str().to_owned(), message: message.into() }
    }
}

/// The `code` of an `Error` frame. Sent as its snake_case string so clients in
/// other languages can match on text; new codes may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The frame could not be decoded. Connection closed.
    BadFrame,
    /// The length prefix exceeded the maximum frame size. Connection closed.
    FrameTooLarge,
    /// The first frame was not `Hello`, or `Hello` came twice. Connection closed.
    HelloRequired,
    /// `Hello` carried another protocol version. Connection closed.
    VersionMismatch,
    /// The token is missing, malformed, badly signed or for a user that no longer exists. Connection closed.
    Unauthorized,
    /// The token has expired. Connection closed.
    TokenExpired,
    /// No `Hello` within the handshake timeout. Connection closed.
    HandshakeTimeout,
    /// Nothing received for three heartbeat intervals. Connection closed.
    IdleTimeout,
    /// The node is at its connection cap; try another node. Connection closed.
    Busy,
    /// A field is out of range or inconsistent (see the message).
    BadRequest,
    /// The path breaks a path rule.
    InvalidPath,
    /// The caller's role in the workspace does not allow the operation.
    Forbidden,
    /// No such path, version or chunk (in this workspace).
    NotFound,
    /// `base_version` is not the current head (delete, move), or the destination exists.
    Conflict,
    /// An uploaded chunk did not match its hash, length, or was not asked for.
    ChunkMismatch,
    /// A frame answered a request id that is unknown or already in use.
    UnknownRequest,
    /// The node failed; the request may be retried.
    Internal,
    /// No such workspace, or the user is not a member of it (indistinguishable on purpose; the
    /// HTTP API answers the same code with 404). An agent stops syncing the workspace.
    WorkspaceNotFound,
    /// The database cannot be reached (restarting, failing over): nothing was
    /// committed; retry the request after a short wait.
    Unavailable,
    /// The token was revoked (a logout, a removed device, a changed password, a deleted
    /// account): sent at handshake, or to a live connection before it is closed. Refreshing
    /// cannot help; the user must log in again. Connection closed.
    TokenRevoked,
    /// The catch-up asked for starts before the history the node still keeps (retention dropped
    /// journal entries after it): read the current heads (`GetHeads`) and reconcile with them,
    /// then continue from their `head_seq`. Retrying the same request cannot help.
    HistoryExpired,
    /// Garbage collection released chunks the upload relied on after the node had said the
    /// workspace held them (docs/storage.md §7): nothing was committed. Send the same upload again
    /// at once: the node asks for the chunks it lacks now.
    ChunksReleased,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 22] = [
        ErrorCode::BadFrame,
        ErrorCode::FrameTooLarge,
        ErrorCode::HelloRequired,
        ErrorCode::VersionMismatch,
        ErrorCode::Unauthorized,
        ErrorCode::TokenExpired,
        ErrorCode::HandshakeTimeout,
        ErrorCode::IdleTimeout,
        ErrorCode::Busy,
        ErrorCode::BadRequest,
        ErrorCode::InvalidPath,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::Conflict,
        ErrorCode::ChunkMismatch,
        ErrorCode::UnknownRequest,
        ErrorCode::Internal,
        ErrorCode::WorkspaceNotFound,
        ErrorCode::Unavailable,
        ErrorCode::TokenRevoked,
        ErrorCode::HistoryExpired,
        ErrorCode::ChunksReleased,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::HelloRequired => "hello_required",
            ErrorCode::VersionMismatch => "version_mismatch",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::HandshakeTimeout => "handshake_timeout",
            ErrorCode::IdleTimeout => "idle_timeout",
            ErrorCode::Busy => "busy",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidPath => "invalid_path",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::ChunkMismatch => "chunk_mismatch",
            ErrorCode::UnknownRequest => "unknown_request",
            ErrorCode::Internal => "internal",
            ErrorCode::WorkspaceNotFound => "workspace_not_found",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::TokenRevoked => "token_revoked",
            ErrorCode::HistoryExpired => "history_expired",
            ErrorCode::ChunksReleased => "chunks_released",
        }
    }

    /// True if the same request may succeed when sent again after a short wait.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorCode::Busy | ErrorCode::Internal | ErrorCode::Unavailable | ErrorCode::ChunksReleased)
    }

    pub fn parse(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::{FORMAT_RAW, FORMAT_ZSTD};

    #[test]
    fn error_codes_round_trip() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
        assert_eq!(ErrorCode::parse("nope"), None);
    }

    /// The tag of a variant is its position; documented in docs/protocol.md. Moving one breaks every client.
    #[test]
    fn variant_tags_are_stable() {
        let tag = |m: &Message| postcard::to_allocvec(m).unwrap()[0];
        assert_eq!(
            tag(&Message::Hello {
                protocol_version: 1,
                token: String::new(),
                device_id: String::new(),
                device_name: String::new()
            }),
            0
        );
        assert_eq!(tag(&Message::Ping { nonce: 0 }), 3);
        assert_eq!(tag(&Message::Chunk { request_id: 1, hash: [0; 32], format: 0, payload: vec![] }), 8);
        assert_eq!(tag(&Message::Ack { request_id: 1 }), 20);
        assert_eq!(tag(&Message::Notification(Notice::MemberRemoved { workspace_id: WorkspaceId(1) })), 22);
        let get = Message::GetManifestDelta { request_id: 1, workspace_id: WorkspaceId(1), seq: 2, bases: vec![1] };
        assert_eq!(tag(&get), 24);
        assert_eq!(tag(&Message::PutFiles { request_id: 1, workspace_id: WorkspaceId(1), files: vec![] }), 26);
        let many = Message::CommittedMany { request_id: 1, workspace_id: WorkspaceId(1), results: vec![] };
        assert_eq!(tag(&many), 27);
        let get = Message::GetChanges { request_id: 1, workspace_id: WorkspaceId(1), after_seq: 0, limit: 1 };
        assert_eq!(tag(&get), 28);
        let page = Message::Changes { request_id: 1, workspace_id: WorkspaceId(1), head_seq: 0, changes: vec![] };
        assert_eq!(tag(&page), 29);
        let get = Message::GetHeads { request_id: 1, workspace_id: WorkspaceId(1), after: None, limit: 1 };
        assert_eq!(tag(&get), 30);
        let heads =
            Message::Heads { request_id: 1, workspace_id: WorkspaceId(1), head_seq: 0, entries: vec![], next: None };
        assert_eq!(tag(&heads), 31);
        // A run is a variant tag then varints: a 16,000-chunk copy costs 4 bytes.
        assert_eq!(postcard::to_allocvec(&delta::Run::Copy { start: 1, count: 16_000 }).unwrap(), [0, 1, 0x80, 0x7d]);
        assert_eq!(PROTOCOL_VERSION, 5);
    }

    /// `PutFile` nests a `FileUpload`; on the wire that is its fields in place, as documented (and as
    /// protocol 2 sent them flat).
    #[test]
    fn a_put_file_is_its_fields_in_place() {
        let file = FileUpload {
            path: "a/b".into(),
            base_version: 3,
            size: 5,
            mtime_ms: -1,
            mode: 0o644,
            content_hash: [9; 32],
            chunks: vec![ChunkRef { hash: [8; 32], len: 5 }],
        };
        let put = postcard::to_allocvec(&Message::PutFile(PutFile {
            request_id: 300,
            workspace_id: WorkspaceId(2),
            file: file.clone(),
        }))
        .unwrap();
        let mut want = vec![6, 0xac, 0x02, 4];
        want.extend(postcard::to_allocvec(&file).unwrap());
        assert_eq!(put, want);
    }

    #[test]
    fn byte_layout_matches_the_protocol_doc() {
        // The worked example in docs/protocol.md.
        // Protocol 5: the format byte before the payload (0 raw, 1 zstd).
        let raw = Message::Chunk { request_id: 300, hash: [0xab; 32], format: FORMAT_RAW, payload: vec![1, 2, 3] };
        let mut want = vec![8, 0xac, 0x02];
        want.extend([0xab; 32]);
        want.extend([0, 3, 1, 2, 3]);
        assert_eq!(postcard::to_allocvec(&raw).unwrap(), want);
        let text = b"abc".repeat(100);
        let zstd = crate::encoding::Encoded::of(text.clone());
        assert_eq!(zstd.format, FORMAT_ZSTD);
        let sent = Message::Chunk {
            request_id: 300,
            hash: crate::chunking::hash(&text),
            format: zstd.format,
            payload: zstd.payload.clone(),
        };
        let bytes = postcard::to_allocvec(&sent).unwrap();
        assert_eq!(&bytes[..3], [8, 0xac, 0x02]);
        assert_eq!(&bytes[3..35], crate::chunking::hash(&text));
        assert_eq!(bytes[35], 1);
        assert_eq!(usize::from(bytes[36]), zstd.payload.len(), "a one-byte varint length");
        assert_eq!(&bytes[37..], zstd.payload);
        assert_eq!(&zstd.payload[..4], [0x28, 0xb5, 0x2f, 0xfd], "a zstd frame");
        assert_eq!(crate::encoding::decode(&crate::chunking::hash(&text), 1, &bytes[37..], 300).unwrap(), text);
        let err = postcard::to_allocvec(&Message::error(0, ErrorCode::Busy, "full")).unwrap();
        assert_eq!(err, [2, 0, 4, b'b', b'u', b's', b'y', 4, b'f', b'u', b'l', b'l']);
        // i64 fields are zigzag varints: -1 → 1, 1 → 2.
        let sub =
            postcard::to_allocvec(&Message::Subscribe { request_id: 1, workspace_id: WorkspaceId(1), since_seq: -1 })
                .unwrap();
        assert_eq!(sub, [17, 1, 2, 1]);
        // Protocol 4: the upload notices.
        let started = postcard::to_allocvec(&Message::Notification(Notice::UploadStarted {
            workspace_id: WorkspaceId(1),
            path: "a".into(),
            size: 3,
            content_hash: [0xcd; 32],
            device_id: "d".into(),
            chunks: vec![ChunkRef { hash: [0xab; 32], len: 3 }],
        }))
        .unwrap();
        let mut want = vec![22, 4, 2, 1, b'a', 3];
        want.extend([0xcd; 32]);
        want.extend([1, b'd', 1]);
        want.extend([0xab; 32]);
        want.push(3);
        assert_eq!(started, want);
        let progress = postcard::to_allocvec(&Message::Notification(Notice::UploadProgress {
            workspace_id: WorkspaceId(1),
            content_hash: [0xcd; 32],
            durable: 300,
        }))
        .unwrap();
        let mut want = vec![22, 5, 2];
        want.extend([0xcd; 32]);
        want.extend([0xac, 0x02]);
        assert_eq!(progress, want);
        let gone = postcard::to_allocvec(&Message::Notification(Notice::UploadAbandoned {
            workspace_id: WorkspaceId(1),
            content_hash: [0xcd; 32],
        }))
        .unwrap();
        let mut want = vec![22, 6, 2];
        want.extend([0xcd; 32]);
        assert_eq!(gone, want);
        // Protocol 5: a page of changes.
        let get = Message::GetChanges { request_id: 1, workspace_id: WorkspaceId(1), after_seq: 300, limit: 2 };
        assert_eq!(postcard::to_allocvec(&get).unwrap(), [28, 1, 2, 0xd8, 0x04, 2]);
        let page = Message::Changes { request_id: 1, workspace_id: WorkspaceId(1), head_seq: 1, changes: vec![] };
        assert_eq!(postcard::to_allocvec(&page).unwrap(), [29, 1, 2, 2, 0]);
        // Catch-up past the horizon: the error, then a page of the heads.
        let expired = Message::error(1, ErrorCode::HistoryExpired, "");
        let mut want = vec![2, 1, 15];
        want.extend(b"history_expired");
        want.push(0);
        assert_eq!(postcard::to_allocvec(&expired).unwrap(), want);
        let get =
            Message::GetHeads { request_id: 1, workspace_id: WorkspaceId(1), after: Some([0xab; 32]), limit: 300 };
        let mut want = vec![30, 1, 2, 1];
        want.extend([0xab; 32]);
        want.extend([0xac, 0x02]);
        assert_eq!(postcard::to_allocvec(&get).unwrap(), want);
        let heads =
            Message::Heads { request_id: 1, workspace_id: WorkspaceId(1), head_seq: 7, entries: vec![], next: None };
        assert_eq!(postcard::to_allocvec(&heads).unwrap(), [31, 1, 2, 0x0e, 0, 0]);
    }
}

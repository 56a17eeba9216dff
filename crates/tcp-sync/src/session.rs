//! The requests of one connection after the handshake.
//!
//! Requests are handled in arrival order by the reader loop; the long ones
//! (a download, a subscription's catch-up) run as tasks of this connection so
//! that pings and other requests keep flowing. A commit is awaited inside the
//! loop, so a shutdown signal is only seen between frames: an upload whose
//! last chunk has arrived is always committed and answered.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use filesync_core::chunking::{ChunkRef, Hash, MAX_CHUNK};
use filesync_core::db::journal::{self, Author, Content, Edit};
use filesync_core::path;
use filesync_core::proto::delta;
use filesync_core::proto::presence::PresenceEntry;
use filesync_core::proto::{Change, ChangeOp, EntryKind, ErrorCode, Message, PutDelta, PutFile, RequestId};
use filesync_core::storage::{StorageError, Stored};
use filesync_core::WorkspaceId;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use crate::auth::{authorize, Access};
use crate::conn::{End, Reader, Refresh};
use crate::error::ReqError;
use crate::handshake::Identity;
use crate::hub::ConnHandle;
use crate::node::Shared;

/// Uploads one connection may have open at once.
pub const MAX_OPEN_UPLOADS: usize = 64;

/// Longest chunk list a delta may describe (~64 GiB at the average chunk size): runs are a few
/// bytes each, so the limit is on what they expand to, not on the frame.
const MAX_DELTA_CHUNKS: usize = 1 << 20;
/// Bases of a `GetManifestDelta` looked at; the rest are ignored.
const MAX_DELTA_BASES: usize = 8;

/// Received chunks of one upload being stored at once (the blocking pool does the hashing and writing).
const STORE_AHEAD: usize = 4;
/// Chunks of one `GetChunks` read from the store ahead of the one being sent.
const READ_AHEAD: usize = 4;

/// Received chunks made durable and recorded together: one sync and one
/// transaction per batch instead of per chunk (~16 MiB at the usual chunk size),
/// while an interrupted upload still keeps what it sent.
const RECORD_BATCH: usize = 256;

/// A received chunk being verified and written on the blocking pool.
type ChunkWrite = JoinHandle<Result<Stored, StorageError>>;

/// An upload waiting for its chunks.
struct Upload {
    put: PutFile,
    /// Chunks still to come, with their lengths.
    needed: HashMap<Hash, u32>,
    /// Being hashed and written, in arrival order.
    storing: VecDeque<(Hash, u32, ChunkWrite)>,
    /// Stored but not yet durable and recorded: (hash, length, stored size).
    unrecorded: Vec<(Hash, u32, u64)>,
}

pub struct Session {
    shared: Arc<Shared>,
    identity: Identity,
    conn: ConnHandle,
    resp: mpsc::Sender<Message>,
    presence: PresenceEntry,
    refresh: Refresh,
    uploads: HashMap<RequestId, Upload>,
    tasks: JoinSet<()>,
}

impl Session {
    pub fn new(
        shared: Arc<Shared>,
        identity: Identity,
        conn: ConnHandle,
        resp: mpsc::Sender<Message>,
        presence: PresenceEntry,
    ) -> Session {
        let refresh = Refresh::new(shared.tuning.heartbeat / 2);
        Session { shared, identity, conn, resp, presence, refresh, uploads: HashMap::new(), tasks: JoinSet::new() }
    }

    /// Reads and handles frames until the connection should end.
    pub async fn run(&mut self, reader: &mut Reader) {
        let end = self.read_loop(reader).await;
        match end {
            End::Say(msg) => {
                if let Message::Error { code, .. } = &msg {
                    self.shared.metrics.request_errors.with_label_values(&[code.as_str()]).inc();
                }
                let _ = self.resp.try_send(msg);
            }
            End::PeerClosed | End::Killed => {}
        }
    }

    /// Stops this connection's background work.
    pub fn finish(&mut self) {
        self.tasks.abort_all();
    }

    async fn read_loop(&mut self, reader: &mut Reader) -> End {
        let idle = self.shared.tuning.idle_timeout;
        loop {
            while self.tasks.try_join_next().is_some() {}
            let next = tokio::select! {
                biased;
                () = self.conn.kill.cancelled() => return End::Killed,
                () = self.shared.shutdown.cancelled() => {
                    return End::Say(Message::Goodbye {
                        reason: "node shutting down".into(),
                        retry_after_ms: self.shared.tuning.goodbye_retry_after.as_millis() as u64,
                    })
                }
                next = tokio::time::timeout(idle, reader.next()) => next,
            };
            let msg = match next {
                Err(_) => {
                    return End::error(
                        ErrorCode::IdleTimeout,
                        format!("nothing received for {} seconds", idle.as_secs()),
                    )
                }
                Ok(None) => return End::PeerClosed,
                Ok(Some(Err(e))) => return End::from_frame(&e),
                Ok(Some(Ok(msg))) => msg,
            };
            self.shared.metrics.frames_in.inc();
            if let Some(end) = self.handle(msg).await {
                return end;
            }
        }
    }

    /// Queues an answer, waiting for room unless the connection is being closed.
    async fn reply(&self, msg: Message) -> bool {
        send_answer(&self.resp, &self.conn, msg).await
    }

    async fn reply_err(&self, request_id: RequestId, err: ReqError) {
        self.shared.metrics.request_errors.with_label_values(&[err.code.as_str()]).inc();
        self.reply(err.into_message(request_id)).await;
    }

    /// Handles one frame; `Some` ends the connection.
    async fn handle(&mut self, msg: Message) -> Option<End> {
        let rid = msg.request_id().unwrap_or(0);
        let result = match msg {
            Message::Ping { nonce } => {
                if self.refresh.due() {
                    self.shared.presence.refresh(&self.presence).await;
                }
                self.reply(Message::Pong { nonce }).await;
                Ok(())
            }
            Message::Pong { .. } => Ok(()),
            Message::Hello { .. } => {
                return Some(End::error(ErrorCode::HelloRequired, "Hello was already received on this connection"))
            }
            Message::PutFile(put) => self.put_file(put).await,
            Message::PutDelta(put) => self.put_delta(put).await,
            Message::GetManifestDelta { request_id, workspace_id, seq, bases } => {
                self.manifest_delta(request_id, workspace_id, seq, bases).await
            }
            Message::Chunk { request_id, hash, data } => self.chunk(request_id, hash, data).await,
            Message::Cancel { request_id } => {
                self.uploads.remove(&request_id);
                Ok(())
            }
            Message::Delete { request_id, workspace_id, path, base_version } => match check_path(&path) {
                Ok(()) => self.commit(request_id, workspace_id, Edit::Delete { path, base_version }).await,
                Err(e) => Err(e),
            },
            Message::Move { request_id, workspace_id, from, to, base_version } => {
                match check_path(&from).and_then(|()| check_path(&to)) {
                    Ok(()) => self.commit(request_id, workspace_id, Edit::Move { from, to, base_version }).await,
                    Err(e) => Err(e),
                }
            }
            Message::MakeDir { request_id, workspace_id, path, base_version } => match check_path(&path) {
                Ok(()) => self.commit(request_id, workspace_id, Edit::MakeDir { path, base_version }).await,
                Err(e) => Err(e),
            },
            Message::GetManifest { request_id, workspace_id, seq } => {
                self.manifest(request_id, workspace_id, seq).await
            }
            Message::GetChunks { request_id, workspace_id, hashes } => {
                self.get_chunks(request_id, workspace_id, hashes).await
            }
            Message::Subscribe { request_id, workspace_id, since_seq } => {
                self.subscribe(request_id, workspace_id, since_seq).await
            }
            Message::Unsubscribe { request_id, workspace_id } => {
                self.shared.hub.unsubscribe(workspace_id, self.conn.conn_id).await;
                self.reply(Message::Ack { request_id }).await;
                Ok(())
            }
            other => Err(ReqError::bad_request(format!("a client does not send {} frames", other.kind()))),
        };
        if let Err(err) = result {
            self.reply_err(rid, err).await;
        }
        None
    }

    fn author(&self) -> Author {
        Author {
            user_id: self.identity.user,
            device_id: self.identity.device_id.clone(),
            device_name: self.identity.device_name.clone(),
        }
    }

    async fn put_file(&mut self, put: PutFile) -> Result<(), ReqError> {
        if self.uploads.contains_key(&put.request_id) {
            return Err(ReqError::new(ErrorCode::UnknownRequest, "this request id already has an open upload"));
        }
        if self.uploads.len() >= MAX_OPEN_UPLOADS {
            return Err(ReqError::bad_request(format!("at most {MAX_OPEN_UPLOADS} uploads may be open at once")));
        }
        check_path(&put.path)?;
        let lengths = check_manifest(&put)?;
        authorize(&self.shared.db, self.identity.user, put.workspace_id, Access::Write).await?;
        let ws = put.workspace_id;
        let hashes: Vec<Hash> = put.chunks.iter().map(|c| c.hash).collect();
        let missing = self.shared.db.run(move |c| journal::missing_chunks(c, ws, &hashes)).await?;
        let needed: HashMap<Hash, u32> = missing.iter().map(|h| (*h, lengths[h])).collect();
        self.reply(Message::NeedChunks { request_id: put.request_id, hashes: missing }).await;
        if needed.is_empty() {
            return self.commit_upload(put).await;
        }
        self.uploads.insert(put.request_id, Upload { put, needed, storing: VecDeque::new(), unrecorded: Vec::new() });
        Ok(())
    }

    /// Rebuilds the full chunk list from the base version and the runs, then continues as `PutFile`.
    async fn put_delta(&mut self, d: PutDelta) -> Result<(), ReqError> {
        authorize(&self.shared.db, self.identity.user, d.workspace_id, Access::Write).await?;
        let (_, base) = self.file_version(d.workspace_id, d.base_seq).await?;
        let chunks = delta::apply(&base, &d.runs, MAX_DELTA_CHUNKS, &d.manifest_hash)
            .map_err(|e| ReqError::bad_request(format!("the delta against seq {} does not add up: {e}", d.base_seq)))?;
        self.put_file(d.with_chunks(chunks)).await
    }

    async fn chunk(&mut self, request_id: RequestId, hash: Hash, data: Vec<u8>) -> Result<(), ReqError> {
        let Some(upload) = self.uploads.get_mut(&request_id) else {
            return Err(ReqError::new(ErrorCode::UnknownRequest, "no open upload has this request id"));
        };
        let mismatch = |msg: &str| ReqError::new(ErrorCode::ChunkMismatch, format!("{msg}; the upload is abandoned"));
        let Some(&len) = upload.needed.get(&hash) else {
            self.uploads.remove(&request_id);
            return Err(mismatch("this chunk was not asked for"));
        };
        if data.len() != len as usize {
            self.uploads.remove(&request_id);
            return Err(mismatch("the chunk's length differs from the manifest"));
        }
        upload.needed.remove(&hash);
        let store = self.shared.store.clone();
        let write = tokio::task::spawn_blocking(move || store.put_deferred(&hash, &data));
        upload.storing.push_back((hash, len, write));
        let complete = upload.needed.is_empty();
        // A few chunks are hashed and written on the blocking pool while the next frames are read.
        if let Err(e) = self.settle(request_id, if complete { 0 } else { STORE_AHEAD }).await {
            self.uploads.remove(&request_id);
            return Err(e);
        }
        if complete {
            if let Some(done) = self.uploads.remove(&request_id) {
                return self.commit_upload(done.put).await;
            }
        }
        Ok(())
    }

    /// Waits for stored chunks until at most `keep` are in flight; records full batches (all of
    /// them once nothing is in flight).
    async fn settle(&mut self, request_id: RequestId, keep: usize) -> Result<(), ReqError> {
        loop {
            let Some(upload) = self.uploads.get_mut(&request_id) else { return Ok(()) };
            let ws = upload.put.workspace_id;
            let full = upload.unrecorded.len() >= RECORD_BATCH || (upload.storing.is_empty() && keep == 0);
            if full && !upload.unrecorded.is_empty() {
                let batch = std::mem::take(&mut upload.unrecorded);
                self.record(ws, batch).await?;
                continue;
            }
            if upload.storing.len() <= keep {
                return Ok(());
            }
            let Some((hash, len, write)) = upload.storing.pop_front() else { return Ok(()) };
            let stored = write.await??;
            self.shared.metrics.chunks_received.inc();
            self.shared.metrics.chunk_bytes_received.inc_by(u64::from(len));
            if stored.written {
                self.shared.metrics.chunks_stored.inc();
                self.shared.metrics.chunk_store_bytes_written.inc_by(stored.stored_size);
            }
            if let Some(upload) = self.uploads.get_mut(&request_id) {
                upload.unrecorded.push((hash, len, stored.stored_size));
            }
        }
    }

    /// Makes a batch of chunks durable, then records them for `ws` in one transaction.
    async fn record(&self, ws: WorkspaceId, batch: Vec<(Hash, u32, u64)>) -> Result<(), ReqError> {
        let store = self.shared.store.clone();
        let hashes: Vec<Hash> = batch.iter().map(|(h, _, _)| *h).collect();
        tokio::task::spawn_blocking(move || store.make_durable(&hashes)).await??;
        self.shared.db.write(move |c| journal::record_chunks(c, ws, &batch)).await?;
        Ok(())
    }

    async fn commit_upload(&mut self, put: PutFile) -> Result<(), ReqError> {
        let content = Content {
            size: put.size,
            mtime_ms: put.mtime_ms,
            mode: put.mode,
            content_hash: put.content_hash,
            chunks: put.chunks,
        };
        let edit = Edit::Put { path: put.path, base_version: put.base_version, content };
        self.commit(put.request_id, put.workspace_id, edit).await
    }

    /// Authorizes (again, for uploads: the role may have changed meanwhile), commits, announces, answers.
    async fn commit(&mut self, request_id: RequestId, ws: WorkspaceId, edit: Edit) -> Result<(), ReqError> {
        authorize(&self.shared.db, self.identity.user, ws, Access::Write).await?;
        let op = match &edit {
            Edit::Put { .. } | Edit::MakeDir { .. } => ChangeOp::Put,
            Edit::Delete { .. } => ChangeOp::Delete,
            Edit::Move { .. } => ChangeOp::Move,
            Edit::Restore { .. } => ChangeOp::Restore,
        };
        let author = self.author();
        let done = self.shared.db.write(move |c| journal::commit(c, ws, &author, &edit)).await?;
        if done.new_seq {
            self.shared.metrics.commits.with_label_values(&[op.as_str()]).inc();
            if done.conflict_path.is_some() {
                self.shared.metrics.conflicts.inc();
            }
            tracing::info!(workspace.id = %ws, seq = done.seq, op = op.as_str(), conflict = done.conflict_path.is_some(), "committed");
            self.shared.announce(ws, done.seq).await;
        }
        self.reply(Message::Committed {
            request_id,
            workspace_id: ws,
            version: done.seq,
            seq: done.seq,
            path: done.path,
            conflict_path: done.conflict_path,
        })
        .await;
        Ok(())
    }

    /// The journal entry and chunk list of a file version of `ws`.
    async fn file_version(&self, ws: WorkspaceId, seq: i64) -> Result<(Change, Vec<ChunkRef>), ReqError> {
        let found = self.shared.db.run(move |c| journal::version_at(c, ws, seq)).await?;
        let Some((change, chunks)) = found else {
            return Err(ReqError::new(ErrorCode::NotFound, format!("workspace {ws} has no seq {seq}")));
        };
        if change.deleted || change.kind == EntryKind::Dir {
            return Err(ReqError::new(ErrorCode::NotFound, format!("seq {seq} has no file content")));
        }
        Ok((change, chunks))
    }

    async fn manifest(&mut self, request_id: RequestId, ws: WorkspaceId, seq: i64) -> Result<(), ReqError> {
        authorize(&self.shared.db, self.identity.user, ws, Access::Read).await?;
        let (change, chunks) = self.file_version(ws, seq).await?;
        self.reply(Message::Manifest {
            request_id,
            workspace_id: ws,
            seq,
            path: change.path,
            size: change.size,
            mtime_ms: change.mtime_ms,
            content_hash: change.content_hash,
            chunks,
        })
        .await;
        Ok(())
    }

    /// Answers with runs over the first of `bases` that is a version of the same path, else over nothing.
    async fn manifest_delta(
        &mut self,
        request_id: RequestId,
        ws: WorkspaceId,
        seq: i64,
        bases: Vec<i64>,
    ) -> Result<(), ReqError> {
        authorize(&self.shared.db, self.identity.user, ws, Access::Read).await?;
        let (change, chunks) = self.file_version(ws, seq).await?;
        let mut base: Option<(i64, Vec<ChunkRef>)> = None;
        for b in bases.into_iter().take(MAX_DELTA_BASES) {
            if let Ok((c, list)) = self.file_version(ws, b).await {
                if c.path == change.path {
                    base = Some((b, list));
                    break;
                }
            }
        }
        let (base_seq, base_chunks) = base.unwrap_or_default();
        self.reply(Message::ManifestDelta {
            request_id,
            workspace_id: ws,
            seq,
            path: change.path,
            size: change.size,
            mtime_ms: change.mtime_ms,
            content_hash: change.content_hash,
            base_seq,
            runs: delta::diff(&base_chunks, &chunks),
            manifest_hash: delta::manifest_hash(&chunks),
        })
        .await;
        Ok(())
    }

    async fn get_chunks(&mut self, request_id: RequestId, ws: WorkspaceId, hashes: Vec<Hash>) -> Result<(), ReqError> {
        authorize(&self.shared.db, self.identity.user, ws, Access::Read).await?;
        let wanted = hashes.clone();
        let held = self.shared.db.run(move |c| journal::held_chunks(c, ws, &wanted)).await?;
        if let Some(h) = hashes.iter().find(|h| !held.contains(*h)) {
            return Err(ReqError::new(
                ErrorCode::NotFound,
                format!("chunk {} is not part of workspace {ws}", filesync_core::chunking::hex(h)),
            ));
        }
        let (shared, resp, conn) = (self.shared.clone(), self.resp.clone(), self.conn.clone());
        // Streams in the background; the answer queue's bound is the flow control.
        self.tasks.spawn(async move {
            // A few chunks are read (and verified) ahead, so the disk and the hashing overlap the sending.
            let reads = futures::stream::iter(hashes).map(|hash| {
                let store = shared.store.clone();
                async move { (hash, tokio::task::spawn_blocking(move || store.get(&hash)).await) }
            });
            let mut reads = reads.buffered(READ_AHEAD);
            while let Some((hash, got)) = reads.next().await {
                let msg = match got {
                    Ok(Ok(data)) => Message::Chunk { request_id, hash, data },
                    Ok(Err(e)) => ReqError::from(e).into_message(request_id),
                    Err(e) => ReqError::from(e).into_message(request_id),
                };
                let failed = matches!(msg, Message::Error { .. });
                if !send_answer(&resp, &conn, msg).await || failed {
                    return;
                }
            }
        });
        Ok(())
    }

    async fn subscribe(&mut self, request_id: RequestId, ws: WorkspaceId, since_seq: i64) -> Result<(), ReqError> {
        authorize(&self.shared.db, self.identity.user, ws, Access::Read).await?;
        let (shared, resp, conn) = (self.shared.clone(), self.resp.clone(), self.conn.clone());
        // The catch-up may be long: it runs beside the reader loop.
        self.tasks.spawn(async move {
            if let Err(err) = shared.hub.subscribe(&conn, request_id, ws, since_seq).await {
                send_answer(&resp, &conn, err.into_message(request_id)).await;
            }
        });
        Ok(())
    }
}

async fn send_answer(resp: &mpsc::Sender<Message>, conn: &ConnHandle, msg: Message) -> bool {
    tokio::select! {
        sent = resp.send(msg) => sent.is_ok(),
        () = conn.kill.cancelled() => false,
    }
}

fn check_path(p: &str) -> Result<(), ReqError> {
    path::validate(p).map_err(|e| ReqError::new(ErrorCode::InvalidPath, format!("{p:?}: {e}")))
}

/// The manifest must add up: lengths 1..=MAX_CHUNK, their sum the size, one length per hash.
fn check_manifest(put: &PutFile) -> Result<HashMap<Hash, u32>, ReqError> {
    let mut lengths = HashMap::new();
    let mut total: u64 = 0;
    for c in &put.chunks {
        if c.len == 0 || c.len > MAX_CHUNK {
            return Err(ReqError::bad_request(format!("chunk lengths must be 1 to {MAX_CHUNK} bytes")));
        }
        if *lengths.entry(c.hash).or_insert(c.len) != c.len {
            return Err(ReqError::bad_request("one chunk hash is listed with two lengths"));
        }
        total += u64::from(c.len);
    }
    if total != put.size {
        return Err(ReqError::bad_request(format!("the chunks add up to {total} bytes, not to size {}", put.size)));
    }
    Ok(lengths)
}

#[cfg(test)]
mod tests {
    use filesync_core::chunking::ChunkRef;

    use super::*;

    fn put(chunks: Vec<ChunkRef>, size: u64) -> PutFile {
        PutFile {
            request_id: 1,
            workspace_id: WorkspaceId(1),
            path: "a".into(),
            base_version: 0,
            size,
            mtime_ms: 0,
            mode: 0,
            content_hash: [0; 32],
            chunks,
        }
    }

    #[test]
    fn manifests_must_add_up() {
        let a = ChunkRef { hash: [1; 32], len: 10 };
        assert!(check_manifest(&put(vec![a, a], 20)).is_ok());
        assert!(check_manifest(&put(vec![], 0)).is_ok());
        assert_eq!(check_manifest(&put(vec![a], 11)).unwrap_err().code, ErrorCode::BadRequest);
        assert!(check_manifest(&put(vec![ChunkRef { hash: [1; 32], len: 0 }], 0)).is_err());
        assert!(check_manifest(&put(vec![ChunkRef { hash: [1; 32], len: MAX_CHUNK + 1 }], u64::from(MAX_CHUNK) + 1))
            .is_err());
        assert!(check_manifest(&put(vec![a, ChunkRef { hash: [1; 32], len: 11 }], 21)).is_err());
    }
}

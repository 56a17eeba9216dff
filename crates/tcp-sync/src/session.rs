//! The requests of one connection after the handshake.
//!
//! Requests are handled in arrival order by the reader loop; read-only ones
//! (manifests, chunk downloads, a subscription's catch-up) run as tasks of this
//! connection, a bounded number at once, so that pings, uploads and other
//! requests keep flowing and many small downloads overlap. A commit is awaited inside the
//! loop, so a shutdown signal is only seen between frames: an upload whose
//! last chunk has arrived is always committed and answered. While a request
//! waits (its last pack going to a slow object store), the loop reads on:
//! frames wait their turn in order, and once it has waited a heartbeat, pings
//! are answered at once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use filesync_core::chunking::{ChunkRef, Hash, MAX_CHUNK};
use filesync_core::db::horizon::{self, Seqs};
use filesync_core::db::journal::{self, Author, Content, Edit};
use filesync_core::db::{accounts, packs, retention};
use filesync_core::encoding::{Encoded, FORMAT_RAW};
use filesync_core::ingest::{self, ChunkSink, Progress};
use filesync_core::path;
use filesync_core::proto::delta;
use filesync_core::proto::frame::{FrameError, DEFAULT_MAX_FRAME_BYTES};
use filesync_core::proto::presence::PresenceEntry;
use filesync_core::proto::{
    BatchOutcome, Change, ChangeOp, EntryKind, ErrorCode, FileUpload, Message, PutDelta, PutFile, RequestId,
    MAX_BATCH_CHUNKS, MAX_BATCH_FILES, MAX_CHANGES_PAGE, MAX_HEADS_PAGE,
};
use filesync_core::WorkspaceId;
use futures::StreamExt;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use crate::auth::{self, authorize, Action};
use crate::conn::{End, Reader, Refresh};
use crate::error::ReqError;
use crate::handshake::Identity;
use crate::hub::ConnHandle;
use crate::node::Shared;
use crate::streaming::Announced;

mod edits;
use edits::Work;

/// Frames read while a request was being handled, in arrival order (`None`: the peer closed).
pub(crate) type Backlog = VecDeque<Option<Result<Message, FrameError>>>;

/// Uploads one connection may have open at once.
pub const MAX_OPEN_UPLOADS: usize = 64;

/// Longest chunk list a delta may describe (~64 GiB at the average chunk size): runs are a few
/// bytes each, so the limit is on what they expand to, not on the frame.
const MAX_DELTA_CHUNKS: usize = 1 << 20;
/// Bases of a `GetManifestDelta` looked at; the rest are ignored.
const MAX_DELTA_BASES: usize = 8;

/// Chunks of one `GetChunks` read from the store ahead of the one being sent.
const READ_AHEAD: usize = 4;
/// Read-only requests (manifests, chunk downloads) of one connection served at once.
const READS_IN_FLIGHT: usize = 16;
/// Frames read ahead (pings aside) while one request is being handled.
const MAX_BACKLOG: usize = 64;

/// What an upload commits once its chunks are in.
enum Job {
    One(PutFile),
    Many { request_id: RequestId, workspace_id: WorkspaceId, files: Vec<FileUpload> },
}

/// An upload waiting for its chunks.
struct Upload {
    job: Job,
    /// Chunks still to come, with their lengths.
    needed: HashMap<Hash, u32>,
    /// Where the received chunks go: core's ingest pipeline (verify, store, durable, record).
    sink: ChunkSink,
    /// A large upload announced to the workspace's other subscribers while it arrives.
    announced: Option<Announced>,
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
    reads: Arc<Semaphore>,
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
        Session {
            shared,
            identity,
            conn,
            resp,
            presence,
            refresh,
            uploads: HashMap::new(),
            tasks: JoinSet::new(),
            reads: Arc::new(Semaphore::new(READS_IN_FLIGHT)),
        }
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
        // Frames read while a request was being handled, in arrival order (`None`: the peer closed).
        let mut backlog: Backlog = VecDeque::new();
        loop {
            while self.tasks.try_join_next().is_some() {}
            if let Some(next) = backlog.pop_front() {
                let msg = match next {
                    None => return End::PeerClosed,
                    Some(Err(e)) => return End::from_frame(&e),
                    Some(Ok(msg)) => msg,
                };
                let work = edits::gather(msg, &mut backlog);
                if let Some(end) = self.handle_answering_pings(work, reader, &mut backlog).await {
                    return end;
                }
                continue;
            }
            let next = tokio::select! {
                biased;
                () = self.conn.kill.cancelled() => return End::Killed,
                () = self.conn.revoked.cancelled() => {
                    return End::error(
                        ErrorCode::TokenRevoked,
                        format!("{}; log in again", self.conn.revoked_reason()),
                    )
                }
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
            let work = edits::gather(msg, &mut backlog);
            if let Some(end) = self.handle_answering_pings(work, reader, &mut backlog).await {
                return end;
            }
        }
    }

    /// Handles `msg` while reading on: frames read meanwhile queue in `backlog` (at most
    /// [`MAX_BACKLOG`]; then reading waits) and are handled in order after it, so a `Pong` follows
    /// the answers to every earlier frame — except once `msg` has taken longer than a heartbeat:
    /// then pings are answered at once, so that a request that waits long (an upload's last pack
    /// going to a slow object store) does not make the client give the connection up for silence.
    async fn handle_answering_pings(&mut self, work: Work, reader: &mut Reader, backlog: &mut Backlog) -> Option<End> {
        let (shared, resp, conn) = (self.shared.clone(), self.resp.clone(), self.conn.clone());
        let slow_after = tokio::time::Instant::now() + shared.tuning.heartbeat;
        let handling = async {
            match work {
                Work::One(msg) => self.handle(msg).await,
                Work::Edits(group) => {
                    self.commit_edits(group).await;
                    None
                }
            }
        };
        tokio::pin!(handling);
        loop {
            let open = backlog.back().is_none_or(|b| matches!(b, Some(Ok(_))));
            tokio::select! {
                biased;
                end = &mut handling => return end,
                next = reader.next(), if open && backlog.len() < MAX_BACKLOG => match next {
                    Some(Ok(Message::Ping { nonce })) if tokio::time::Instant::now() >= slow_after => {
                        shared.metrics.frames_in.inc();
                        send_answer(&resp, &conn, Message::Pong { nonce }).await;
                    }
                    Some(Ok(other)) => {
                        shared.metrics.frames_in.inc();
                        backlog.push_back(Some(Ok(other)));
                    }
                    Some(Err(e)) => backlog.push_back(Some(Err(e))),
                    None => backlog.push_back(None),
                },
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
            Message::PutFiles { request_id, workspace_id, files } => {
                self.put_files(request_id, workspace_id, files).await
            }
            Message::PutDelta(put) => self.put_delta(put).await,
            Message::GetManifestDelta { request_id, workspace_id, seq, bases } => {
                self.spawn_read(request_id, |r| r.manifest_delta(request_id, workspace_id, seq, bases)).await
            }
            Message::Chunk { request_id, hash, format, payload } => {
                self.chunk(request_id, hash, Encoded { format, payload }).await
            }
            Message::Cancel { request_id } => {
                self.uploads.remove(&request_id);
                Ok(())
            }
            edit @ (Message::Delete { .. } | Message::Move { .. } | Message::MakeDir { .. }) => {
                self.commit_edits(vec![edit]).await;
                Ok(())
            }
            Message::GetManifest { request_id, workspace_id, seq } => {
                self.spawn_read(request_id, |r| r.manifest(request_id, workspace_id, seq)).await
            }
            Message::GetChunks { request_id, workspace_id, hashes } => {
                self.spawn_read(request_id, |r| r.get_chunks(request_id, workspace_id, hashes)).await
            }
            Message::Subscribe { request_id, workspace_id, since_seq } => {
                self.subscribe(request_id, workspace_id, since_seq).await
            }
            Message::GetChanges { request_id, workspace_id, after_seq, limit } => {
                self.spawn_read(request_id, |r| r.changes(request_id, workspace_id, after_seq, limit)).await
            }
            Message::GetHeads { request_id, workspace_id, after, limit } => {
                self.spawn_read(request_id, |r| r.heads(request_id, workspace_id, after, limit)).await
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
        self.put_file_holding(put, &HashSet::new()).await
    }

    /// [`Session::put_file`] of a version some of whose chunks the workspace is known to hold
    /// (`held`: a delta's base version's): only the others are looked up. Whether all are still
    /// held is checked again when the version is committed (in its transaction), as for any put.
    async fn put_file_holding(&mut self, put: PutFile, held: &HashSet<Hash>) -> Result<(), ReqError> {
        check_path(&put.file.path)?;
        let lengths = check_chunks(&put.file.chunks, put.file.size)?;
        // In file order, so the chunks come (and become durable) in the order a reader wants them.
        let order = put.file.chunks.iter().map(|c| c.hash).filter(|h| !held.contains(h)).collect();
        self.open_upload(put.request_id, put.workspace_id, lengths, order, Job::One(put)).await
    }

    /// A batch of small files: checked as a whole (one bad path or manifest refuses the batch),
    /// then uploaded and committed like one file.
    async fn put_files(
        &mut self,
        request_id: RequestId,
        ws: WorkspaceId,
        files: Vec<FileUpload>,
    ) -> Result<(), ReqError> {
        if files.is_empty() || files.len() > MAX_BATCH_FILES {
            return Err(ReqError::bad_request(format!("a batch carries 1 to {MAX_BATCH_FILES} files")));
        }
        if files.iter().map(|f| f.chunks.len()).sum::<usize>() > MAX_BATCH_CHUNKS {
            return Err(ReqError::bad_request(format!(
                "a batch lists at most {MAX_BATCH_CHUNKS} chunks; send large files alone"
            )));
        }
        let mut paths = HashSet::new();
        let mut lengths = HashMap::new();
        for f in &files {
            check_path(&f.path)?;
            if !paths.insert(f.path.as_str()) {
                return Err(ReqError::bad_request(format!("{:?} is listed twice in one batch", f.path)));
            }
            for (hash, len) in check_chunks(&f.chunks, f.size)? {
                if *lengths.entry(hash).or_insert(len) != len {
                    return Err(ReqError::bad_request("one chunk hash is listed with two lengths"));
                }
            }
        }
        let order = lengths.keys().copied().collect();
        self.open_upload(request_id, ws, lengths, order, Job::Many { request_id, workspace_id: ws, files }).await
    }

    /// Asks for the chunks the workspace lacks; commits at once if there are none.
    async fn open_upload(
        &mut self,
        request_id: RequestId,
        ws: WorkspaceId,
        lengths: HashMap<Hash, u32>,
        order: Vec<Hash>,
        job: Job,
    ) -> Result<(), ReqError> {
        if self.uploads.contains_key(&request_id) {
            return Err(ReqError::new(ErrorCode::UnknownRequest, "this request id already has an open upload"));
        }
        if self.uploads.len() >= MAX_OPEN_UPLOADS {
            return Err(ReqError::bad_request(format!("at most {MAX_OPEN_UPLOADS} uploads may be open at once")));
        }
        authorize(&self.shared.db, self.identity.user, ws, Action::WriteFiles).await?;
        // Which of the chunks the workspace lacks are stored already (for another workspace): the
        // client still proves it holds them, but they are not written again. One query for all.
        let (missing, stored) = self
            .shared
            .db
            .run(move |c| {
                let missing = journal::missing_chunks(c, ws, &order)?;
                let stored = packs::recorded(c, &missing)?;
                Ok((missing, stored))
            })
            .await?;
        let needed: HashMap<Hash, u32> = missing.iter().map(|h| (*h, lengths[h])).collect();
        let announced = match &job {
            Job::One(put) => Announced::start(&self.shared, ws, &put.file, &self.identity.device_id, &missing),
            Job::Many { .. } => None,
        };
        self.reply(Message::NeedChunks { request_id, hashes: missing }).await;
        if needed.is_empty() {
            return self.commit_upload(job).await;
        }
        let sink = ChunkSink::with_stored(self.shared.db.clone(), self.shared.store.clone(), ws, stored);
        self.uploads.insert(request_id, Upload { job, needed, sink, announced });
        Ok(())
    }

    /// Rebuilds the full chunk list from the base version and the runs, then continues as `PutFile`.
    async fn put_delta(&mut self, d: PutDelta) -> Result<(), ReqError> {
        authorize(&self.shared.db, self.identity.user, d.workspace_id, Action::WriteFiles).await?;
        let (_, base) = file_version(&self.shared, d.workspace_id, d.base_seq).await?;
        let chunks = delta::apply(&base, &d.runs, MAX_DELTA_CHUNKS, &d.manifest_hash)
            .map_err(|e| ReqError::bad_request(format!("the delta against seq {} does not add up: {e}", d.base_seq)))?;
        // The base version's chunks are the workspace's (a version in its journal): a small edit of
        // a large file looks up only its new chunks, not the ~16,000 of 1 GiB.
        let held: HashSet<Hash> = base.iter().map(|c| c.hash).collect();
        self.put_file_holding(d.with_chunks(chunks), &held).await
    }

    /// One chunk of an upload, in its stored form: stored as it came once it decodes (bounded by
    /// the manifest's length) to the bytes its hash names; anything else abandons the upload.
    async fn chunk(&mut self, request_id: RequestId, hash: Hash, encoded: Encoded) -> Result<(), ReqError> {
        let Some(upload) = self.uploads.get_mut(&request_id) else {
            return Err(ReqError::new(ErrorCode::UnknownRequest, "no open upload has this request id"));
        };
        let mismatch = |msg: &str| ReqError::new(ErrorCode::ChunkMismatch, format!("{msg}; the upload is abandoned"));
        let Some(&len) = upload.needed.get(&hash) else {
            self.uploads.remove(&request_id);
            return Err(mismatch("this chunk was not asked for"));
        };
        if encoded.format == FORMAT_RAW && encoded.payload.len() != len as usize {
            self.uploads.remove(&request_id);
            return Err(mismatch("the chunk's length differs from the manifest"));
        }
        // A compressed payload is sent only when it is smaller than the chunk.
        if encoded.payload.len() > len as usize {
            self.uploads.remove(&request_id);
            return Err(mismatch("the chunk's payload is longer than the chunk"));
        }
        upload.needed.remove(&hash);
        let complete = upload.needed.is_empty();
        // A few chunks are hashed and written on the blocking pool while the next frames are read;
        // the last one waits for all of them, makes them durable and records them.
        if let Some(a) = &mut upload.announced {
            a.pushed(hash);
        }
        let mut stored = upload.sink.push_encoded(hash, len, encoded).await;
        if complete {
            stored = match stored {
                Ok(a) => upload.sink.finish().await.map(|b| a + b),
                Err(e) => Err(e),
            };
        }
        match stored {
            Ok(progress) => {
                if let Some(a) = &mut upload.announced {
                    a.recorded(progress.recorded);
                }
                self.count(progress);
            }
            Err(e) => {
                self.uploads.remove(&request_id);
                return Err(e.into());
            }
        }
        if complete {
            if let Some(done) = self.uploads.remove(&request_id) {
                let result = self.commit_upload(done.job).await;
                if let (Ok(()), Some(a)) = (&result, done.announced) {
                    a.committed();
                }
                return result;
            }
        }
        Ok(())
    }

    fn count(&self, p: Progress) {
        let m = &self.shared.metrics;
        m.chunks_received.inc_by(p.chunks);
        m.chunk_bytes_received.inc_by(p.bytes);
        m.chunks_stored.inc_by(p.chunks_written);
        m.chunk_store_bytes_written.inc_by(p.bytes_written);
    }

    async fn commit_upload(&mut self, job: Job) -> Result<(), ReqError> {
        match job {
            Job::One(put) => self.commit(put.request_id, put.workspace_id, put_edit(put.file)).await,
            Job::Many { request_id, workspace_id, files } => self.commit_batch(request_id, workspace_id, files).await,
        }
    }

    /// One transaction for the whole batch, one announcement of its last seq.
    async fn commit_batch(
        &mut self,
        request_id: RequestId,
        ws: WorkspaceId,
        files: Vec<FileUpload>,
    ) -> Result<(), ReqError> {
        authorize(&self.shared.db, self.identity.user, ws, Action::WriteFiles).await?;
        let edits: Vec<Edit> = files.into_iter().map(put_edit).collect();
        let done = ingest::commit_many(&self.shared.db, ws, self.author(), edits).await?;
        let mut last = None;
        let results: Vec<BatchOutcome> = done
            .into_iter()
            .map(|r| match r {
                Ok(c) => {
                    if c.new_seq {
                        self.shared.metrics.commits.with_label_values(&[ChangeOp::Put.as_str()]).inc();
                        if c.conflict_path.is_some() {
                            self.shared.metrics.conflicts.inc();
                        }
                        last = Some(c.seq);
                    }
                    BatchOutcome::Committed { seq: c.seq, path: c.path, conflict_path: c.conflict_path }
                }
                Err(e) => {
                    let err = ReqError::from(e);
                    BatchOutcome::Refused { code: err.code.as_str().to_owned(), message: err.message }
                }
            })
            .collect();
        if let Some(seq) = last {
            tracing::info!(workspace.id = %ws, seq, files = results.len(), "committed a batch");
            self.shared.announce(ws, seq).await;
        }
        self.reply(Message::CommittedMany { request_id, workspace_id: ws, results }).await;
        Ok(())
    }

    /// Authorizes (again, for uploads: the role may have changed meanwhile), commits, announces, answers.
    async fn commit(&mut self, request_id: RequestId, ws: WorkspaceId, edit: Edit) -> Result<(), ReqError> {
        authorize(&self.shared.db, self.identity.user, ws, Action::WriteFiles).await?;
        let op = edits::op_of(&edit);
        let done = ingest::commit(&self.shared.db, ws, self.author(), edit).await?;
        if done.new_seq {
            self.shared.metrics.commits.with_label_values(&[op.as_str()]).inc();
            if done.conflict_path.is_some() {
                self.shared.metrics.conflicts.inc();
            }
            tracing::info!(workspace.id = %ws, seq = done.seq, op = op.as_str(), conflict = done.conflict_path.is_some(), "committed");
            self.shared.announce(ws, done.seq).await;
        }
        self.reply(edits::committed(request_id, ws, done)).await;
        Ok(())
    }

    /// Runs a read-only request beside the reader loop: many small downloads are then bound by
    /// the database and disk, not by one request's round trips. At most [`READS_IN_FLIGHT`] at
    /// once; beyond that the loop waits here (and so stops reading: back-pressure).
    async fn spawn_read<F, Fut>(&mut self, request_id: RequestId, read: F) -> Result<(), ReqError>
    where
        F: FnOnce(Reads) -> Fut,
        Fut: std::future::Future<Output = Result<(), ReqError>> + Send + 'static,
    {
        let permit = tokio::select! {
            p = self.reads.clone().acquire_owned() => p.map_err(|_| ReqError::internal())?,
            () = self.conn.kill.cancelled() => return Ok(()),
        };
        let reads = Reads {
            shared: self.shared.clone(),
            user: self.identity.user,
            resp: self.resp.clone(),
            conn: self.conn.clone(),
        };
        let fut = read(reads.clone());
        self.tasks.spawn(async move {
            if let Err(err) = fut.await {
                reads.shared.metrics.request_errors.with_label_values(&[err.code.as_str()]).inc();
                send_answer(&reads.resp, &reads.conn, err.into_message(request_id)).await;
            }
            drop(permit);
        });
        Ok(())
    }

    async fn subscribe(&mut self, request_id: RequestId, ws: WorkspaceId, since_seq: i64) -> Result<(), ReqError> {
        authorize(&self.shared.db, self.identity.user, ws, Action::ReadFiles).await?;
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

/// What a read-only request needs, owned, so that it can run as a task.
#[derive(Clone)]
struct Reads {
    shared: Arc<Shared>,
    user: filesync_core::UserId,
    resp: mpsc::Sender<Message>,
    conn: ConnHandle,
}

impl Reads {
    async fn reply(&self, msg: Message) {
        send_answer(&self.resp, &self.conn, msg).await;
    }

    async fn manifest(self, request_id: RequestId, ws: WorkspaceId, seq: i64) -> Result<(), ReqError> {
        let user = self.user;
        let (role, found) = self
            .shared
            .db
            .run(move |c| Ok((accounts::role_of(c, ws, user)?, journal::version_at(c, ws, seq)?)))
            .await?;
        auth::check(role, ws, Action::ReadFiles)?;
        let (change, chunks) = file_content(found, ws, seq)?;
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

    /// Answers a page of the journal after `after_seq`: `limit` changes, fewer at the head or
    /// when more would not fit in half the largest frame a client reads; `history_expired` if the
    /// journal no longer holds every change after `after_seq`.
    async fn changes(self, request_id: RequestId, ws: WorkspaceId, after_seq: i64, limit: u32) -> Result<(), ReqError> {
        if limit == 0 || limit > MAX_CHANGES_PAGE {
            return Err(ReqError::bad_request(format!("limit must be 1 to {MAX_CHANGES_PAGE}, not {limit}")));
        }
        let user = self.user;
        let (role, head, horizon, mut changes) = self
            .shared
            .db
            .run(move |c| {
                let role = accounts::role_of(c, ws, user)?;
                let head = journal::head_seq(c, ws)?.unwrap_or(0);
                // Every seq up to the head is committed: the head moves in the commit that takes it.
                let changes = journal::changes_between(c, ws, after_seq.max(0), head, i64::from(limit))?;
                // Read after the changes: a horizon that allows them was not raised before they were read.
                let horizon = retention::horizon(c, ws)?.unwrap_or(0);
                Ok((role, head, horizon, changes))
            })
            .await?;
        auth::check(role, ws, Action::ReadFiles)?;
        if !(Seqs { head, horizon }).can_catch_up_from(after_seq) {
            return Err(ReqError::history_expired(ws, after_seq, horizon));
        }
        changes.truncate(fitting(&changes, self.frame_budget()).max(1));
        self.reply(Message::Changes { request_id, workspace_id: ws, head_seq: head, changes }).await;
        Ok(())
    }

    /// Answers a page of the live heads after the cursor `after`: `limit` entries, fewer on the
    /// last page or when more would not fit in half the largest frame a client reads.
    async fn heads(
        self,
        request_id: RequestId,
        ws: WorkspaceId,
        after: Option<Hash>,
        limit: u32,
    ) -> Result<(), ReqError> {
        if limit == 0 || limit > MAX_HEADS_PAGE {
            return Err(ReqError::bad_request(format!("limit must be 1 to {MAX_HEADS_PAGE}, not {limit}")));
        }
        let user = self.user;
        let (role, head, page) = self
            .shared
            .db
            .run(move |c| {
                let role = accounts::role_of(c, ws, user)?;
                // One more than asked: whether a next page exists, without asking for it.
                let page = horizon::live_heads_page(c, ws, after, i64::from(limit) + 1)?;
                // Read after the page, so that no entry is past it.
                let head = journal::head_seq(c, ws)?.unwrap_or(0);
                Ok((role, head, page))
            })
            .await?;
        auth::check(role, ws, Action::ReadFiles)?;
        let asked = usize::try_from(limit).unwrap_or(usize::MAX);
        let (hashes, mut entries): (Vec<Hash>, Vec<Change>) = page.into_iter().unzip();
        let fits = fitting(&entries, self.frame_budget()).clamp(1, asked);
        entries.truncate(fits);
        let next = (hashes.len() > entries.len()).then(|| hashes[entries.len() - 1]);
        self.reply(Message::Heads { request_id, workspace_id: ws, head_seq: head, entries, next }).await;
        Ok(())
    }

    /// Half the largest frame a client reads: what a page of changes may fill.
    fn frame_budget(&self) -> usize {
        self.shared.config.max_frame_bytes.min(DEFAULT_MAX_FRAME_BYTES) / 2
    }

    /// Answers with runs over the first of `bases` that is a version of the same path, else over nothing.
    async fn manifest_delta(
        self,
        request_id: RequestId,
        ws: WorkspaceId,
        seq: i64,
        bases: Vec<i64>,
    ) -> Result<(), ReqError> {
        authorize(&self.shared.db, self.user, ws, Action::ReadFiles).await?;
        let (change, chunks) = file_version(&self.shared, ws, seq).await?;
        let mut base: Option<(i64, Vec<ChunkRef>)> = None;
        for b in bases.into_iter().take(MAX_DELTA_BASES) {
            if let Ok((c, list)) = file_version(&self.shared, ws, b).await {
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

    async fn get_chunks(self, request_id: RequestId, ws: WorkspaceId, hashes: Vec<Hash>) -> Result<(), ReqError> {
        let (user, wanted) = (self.user, hashes.clone());
        let (role, held) = self
            .shared
            .db
            .run(move |c| Ok((accounts::role_of(c, ws, user)?, journal::held_chunks(c, ws, &wanted)?)))
            .await?;
        auth::check(role, ws, Action::ReadFiles)?;
        if let Some(h) = hashes.iter().find(|h| !held.contains(*h)) {
            return Err(ReqError::new(
                ErrorCode::NotFound,
                format!("chunk {} is not part of workspace {ws}", filesync_core::chunking::hex(h)),
            ));
        }
        // Chunks travel as stored (protocol 5): the node neither decompresses nor hashes them, the
        // client decodes and verifies each. A few are read ahead, so the store overlaps the
        // sending; the answer queue's bound is the flow control.
        let mut reads = self.shared.store.read_many_stored(hashes, READ_AHEAD);
        while let Some(got) = reads.next().await {
            let (hash, stored) = got?;
            let chunk = Message::Chunk { request_id, hash, format: stored.format, payload: stored.payload };
            if !send_answer(&self.resp, &self.conn, chunk).await {
                return Ok(());
            }
        }
        Ok(())
    }
}

/// The journal entry and chunk list of a file version of `ws`.
async fn file_version(shared: &Shared, ws: WorkspaceId, seq: i64) -> Result<(Change, Vec<ChunkRef>), ReqError> {
    let found = shared.db.run(move |c| journal::version_at(c, ws, seq)).await?;
    file_content(found, ws, seq)
}

/// A version that has file content, or `not_found`.
fn file_content(
    found: Option<(Change, Vec<ChunkRef>)>,
    ws: WorkspaceId,
    seq: i64,
) -> Result<(Change, Vec<ChunkRef>), ReqError> {
    let Some((change, chunks)) = found else {
        return Err(ReqError::new(ErrorCode::NotFound, format!("workspace {ws} has no seq {seq}")));
    };
    if change.deleted || change.kind == EntryKind::Dir {
        return Err(ReqError::new(ErrorCode::NotFound, format!("seq {seq} has no file content")));
    }
    Ok((change, chunks))
}

async fn send_answer(resp: &mpsc::Sender<Message>, conn: &ConnHandle, msg: Message) -> bool {
    tokio::select! {
        sent = resp.send(msg) => sent.is_ok(),
        () = conn.kill.cancelled() => false,
    }
}

/// The journal edit an uploaded file asks for.
/// How many of `changes`, from the first, fit in `budget` bytes of a frame.
fn fitting(changes: &[Change], budget: usize) -> usize {
    let mut bytes = 0usize;
    changes
        .iter()
        .take_while(|c| {
            // Generous: the fixed fields are under 100 bytes encoded.
            bytes += c.path.len() + c.from_path.as_ref().map_or(0, String::len) + c.device_id.len() + 128;
            bytes <= budget
        })
        .count()
}

fn put_edit(f: FileUpload) -> Edit {
    let content =
        Content { size: f.size, mtime_ms: f.mtime_ms, mode: f.mode, content_hash: f.content_hash, chunks: f.chunks };
    Edit::Put { path: f.path, base_version: f.base_version, content }
}

fn check_path(p: &str) -> Result<(), ReqError> {
    path::validate(p).map_err(|e| ReqError::new(ErrorCode::InvalidPath, format!("{p:?}: {e}")))
}

/// A chunk list must add up: lengths 1..=MAX_CHUNK, their sum `size`, one length per hash.
fn check_chunks(chunks: &[ChunkRef], size: u64) -> Result<HashMap<Hash, u32>, ReqError> {
    let mut lengths = HashMap::new();
    let mut total: u64 = 0;
    for c in chunks {
        if c.len == 0 || c.len > MAX_CHUNK {
            return Err(ReqError::bad_request(format!("chunk lengths must be 1 to {MAX_CHUNK} bytes")));
        }
        if *lengths.entry(c.hash).or_insert(c.len) != c.len {
            return Err(ReqError::bad_request("one chunk hash is listed with two lengths"));
        }
        total += u64::from(c.len);
    }
    if total != size {
        return Err(ReqError::bad_request(format!("the chunks add up to {total} bytes, not to size {size}")));
    }
    Ok(lengths)
}

#[cfg(test)]
mod tests {
    use filesync_core::chunking::ChunkRef;

    use super::*;

    #[test]
    fn manifests_must_add_up() {
        let a = ChunkRef { hash: [1; 32], len: 10 };
        assert!(check_chunks(&[a, a], 20).is_ok());
        assert!(check_chunks(&[], 0).is_ok());
        assert_eq!(check_chunks(&[a], 11).unwrap_err().code, ErrorCode::BadRequest);
        assert!(check_chunks(&[ChunkRef { hash: [1; 32], len: 0 }], 0).is_err());
        assert!(check_chunks(&[ChunkRef { hash: [1; 32], len: MAX_CHUNK + 1 }], u64::from(MAX_CHUNK) + 1).is_err());
        assert!(check_chunks(&[a, ChunkRef { hash: [1; 32], len: 11 }], 21).is_err());
    }
}

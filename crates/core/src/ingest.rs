//! Ingest: how new content enters a workspace, for the sync node and for HTTP
//! uploads alike (feature `ingest`).
//!
//! 1. Each chunk is verified against its hash, encoded and appended to the
//!    upload's open pack ([`PackWriter::append`]) on the blocking pool, a few at
//!    once ([`STORE_AHEAD`]) while the caller reads the next one. A chunk the
//!    index already records (stored by anyone) is not written again: the node
//!    looks up the chunks it asks a client for in bulk before they arrive
//!    ([`ChunkSink::with_stored`]); an upload whose chunks are known only as
//!    they are cut waits for [`LOOKUP_BATCH`] of them (at most [`LOOKUP_BYTES`])
//!    and asks the index about them in one query.
//! 2. When the pack reaches [`PACK_TARGET`] bytes (or [`RECORD_BATCH`] chunks
//!    are waiting), and at the end, the pack is sealed — fsynced and renamed
//!    into place, or uploaded and acknowledged ([`ChunkStore::seal`]) — and
//!    only then recorded with its chunks in `packs`, `chunks` and
//!    `workspace_chunks` ([`journal::record_chunks`], one transaction), so an
//!    interrupted upload keeps what it sent and a committed version never names
//!    a chunk a crash can lose. The seal and the transaction of a full pack run
//!    in a background task while the next pack fills: one at a time, so packs
//!    are recorded in the order they were filled (a chunk may point into the
//!    pack recorded just before its own batch), and the sink waits for it before
//!    sealing the next one. Its error surfaces on the next call.
//! 3. The version is committed with [`journal::commit`] in one transaction; a
//!    stale base becomes a conflict copy there.
//!
//! The node feeds [`ChunkSink`] with the chunks its client sends (the client
//! chunked the file); an HTTP upload hands a byte stream to [`store_stream`],
//! which cuts it with the same FastCDC parameters as
//! [`crate::chunking::chunks`] while reading, so memory stays flat whatever
//! the size: one chunker buffer, two lookup batches (one filling, one being
//! written [`STORE_AHEAD`] chunks at a time while the next is read) of at most
//! [`LOOKUP_BYTES`] each; the pack being written is a spool file.

use std::collections::{HashSet, VecDeque};
use std::io;
use std::sync::Arc;

use futures::io::AsyncRead;
use futures::StreamExt;
use tokio::task::JoinHandle;

use crate::chunking::{self, ChunkRef, Hash, AVG_CHUNK, MAX_CHUNK, MIN_CHUNK};
use crate::db::journal::{self, Author, Committed, Content, Edit, NewChunk};
use crate::db::packs;
use crate::db::{Db, DbError};
use crate::encoding::Encoded;
use crate::storage::pack::{self, Appended};
use crate::storage::{ChunkStore, PackWriter, StorageError, Stored, PACK_TARGET};
use crate::WorkspaceId;

/// Received chunks of one upload being verified and written at once.
pub const STORE_AHEAD: usize = 4;

/// Chunks of an upload not looked up in advance that wait to be asked about in one index query...
pub const LOOKUP_BATCH: usize = 64;
/// ...or fewer, once they hold this many bytes (so an upload's memory stays a few MiB).
pub const LOOKUP_BYTES: usize = 4 << 20;

/// At most this many chunks wait to be recorded (their pack is sealed early): one transaction
/// stays small even when chunks are tiny after compression or already stored.
pub const RECORD_BATCH: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Db(#[from] DbError),
    /// Reading the upload's bytes failed (the client went away, a body error).
    #[error("reading the upload: {0}")]
    Read(#[source] io::Error),
    #[error("blocking task failed: {0}")]
    Task(String),
}

/// What settled during a [`ChunkSink`] call, for the caller's metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Chunks stored (or found already there) and their bytes.
    pub chunks: u64,
    pub bytes: u64,
    /// Of those, the chunks actually written and the bytes they take at rest.
    pub chunks_written: u64,
    pub bytes_written: u64,
    /// Chunks made durable and recorded for the workspace during the call: the oldest pushed
    /// chunks not recorded before (the sink records in push order).
    pub recorded: u64,
}

impl Progress {
    fn add(&mut self, len: u32, stored: Stored) {
        self.chunks += 1;
        self.bytes += u64::from(len);
        if stored.written {
            self.chunks_written += 1;
            self.bytes_written += stored.stored_size;
        }
    }
}

impl std::ops::Add for Progress {
    type Output = Progress;

    fn add(self, b: Progress) -> Progress {
        Progress {
            chunks: self.chunks + b.chunks,
            bytes: self.bytes + b.bytes,
            chunks_written: self.chunks_written + b.chunks_written,
            bytes_written: self.bytes_written + b.bytes_written,
            recorded: self.recorded + b.recorded,
        }
    }
}

/// A chunk as a [`ChunkSink`] receives it.
#[derive(Debug)]
enum Incoming {
    /// Its bytes (an HTTP upload): encoded here.
    Bytes(Vec<u8>),
    /// Its stored form: verified by decoding, then stored as it is.
    Encoded(Encoded),
}

/// A chunk being stored: `None` once done if the index already had it.
type ChunkWrite = JoinHandle<Result<Option<Appended>, StorageError>>;

/// A full pack being sealed and then recorded with its batch in the background: how many chunks
/// it recorded.
type Sealing = JoinHandle<Result<u64, IngestError>>;

/// The chunks of one upload to one workspace on their way into packs and
/// `workspace_chunks`. Dropping it abandons the chunks not yet recorded: the
/// background seal is aborted (its pack's spool file is deleted, or the sealed
/// pack stays unreferenced, like any interrupted upload's; a transaction already
/// under way commits whole or not at all).
#[derive(Debug)]
pub struct ChunkSink {
    db: Db,
    store: ChunkStore,
    writer: Arc<PackWriter>,
    ws: WorkspaceId,
    /// Being verified and written, in arrival order.
    storing: VecDeque<(Hash, u32, ChunkWrite)>,
    /// Stored but not yet durable and recorded.
    unrecorded: Vec<NewChunk>,
    /// Pack bytes written since the last record.
    unrecorded_bytes: u64,
    /// The last full pack's seal and record, running while the next pack fills.
    sealing: Option<Sealing>,
    /// The chunks the index held when the upload began, looked up by the caller in bulk; `None`:
    /// ask the index about the chunks as they arrive, a batch at a time ([`LOOKUP_BATCH`]).
    stored: Option<HashSet<Hash>>,
    /// Arrived chunks waiting for their batch's index query (`true`: a repeat of this upload),
    /// and their bytes.
    waiting: Vec<(Hash, u32, Incoming, bool)>,
    waiting_bytes: usize,
    /// Looked-up chunks not yet started (`true`: stored already, only verified), at most one batch.
    ready: VecDeque<(Hash, u32, Incoming, bool)>,
    /// Chunks of this upload already on their way (a file of zeros repeats one chunk), forgotten
    /// past [`SEEN_MAX`] entries: a repeat then costs dead bytes, never correctness.
    seen: HashSet<Hash>,
}

/// Hashes a [`ChunkSink`] remembers (~2 MiB) to store a repeated chunk once.
const SEEN_MAX: usize = 65_536;

impl ChunkSink {
    /// A sink for chunks not known in advance: it asks the index which are stored already a batch
    /// at a time ([`LOOKUP_BATCH`] chunks, at most [`LOOKUP_BYTES`], per query).
    pub fn new(db: Db, store: ChunkStore, ws: WorkspaceId) -> ChunkSink {
        let writer = Arc::new(store.writer());
        ChunkSink {
            db,
            store,
            writer,
            ws,
            storing: VecDeque::new(),
            unrecorded: Vec::new(),
            unrecorded_bytes: 0,
            sealing: None,
            stored: None,
            waiting: Vec::new(),
            waiting_bytes: 0,
            ready: VecDeque::new(),
            seen: HashSet::new(),
        }
    }

    /// A sink for chunks whose list the caller knew in advance and looked up in one query:
    /// `stored` are the ones the index held (not written again), any other is written without
    /// asking (one a concurrent upload stores meanwhile is dead bytes in one pack).
    pub fn with_stored(db: Db, store: ChunkStore, ws: WorkspaceId, stored: HashSet<Hash>) -> ChunkSink {
        let mut sink = ChunkSink::new(db, store, ws);
        sink.stored = Some(stored);
        sink
    }

    pub fn workspace(&self) -> WorkspaceId {
        self.ws
    }

    /// Starts verifying, encoding and writing `data` under `hash` on the blocking pool; waits for
    /// older chunks until at most [`STORE_AHEAD`] are in flight, recording full packs. Without a
    /// list of stored chunks the chunk first waits for its lookup batch.
    pub async fn push(&mut self, hash: Hash, data: Vec<u8>) -> Result<Progress, IngestError> {
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        self.push_any(hash, len, Incoming::Bytes(data)).await
    }

    /// Like [`ChunkSink::push`] for a chunk received in its stored form (protocol 5): it must
    /// decode (never to more than `len` bytes) to the `len` bytes `hash` names, and is then stored
    /// as it came, not re-encoded. A payload that does not is refused
    /// ([`StorageError::Undecodable`] or [`StorageError::HashMismatch`]) and nothing of it is stored.
    pub async fn push_encoded(&mut self, hash: Hash, len: u32, encoded: Encoded) -> Result<Progress, IngestError> {
        self.push_any(hash, len, Incoming::Encoded(encoded)).await
    }

    async fn push_any(&mut self, hash: Hash, len: u32, incoming: Incoming) -> Result<Progress, IngestError> {
        if self.seen.len() >= SEEN_MAX {
            self.seen.clear();
        }
        let repeat = !self.seen.insert(hash);
        let Some(stored) = &self.stored else {
            self.waiting_bytes += len as usize;
            self.waiting.push((hash, len, incoming, repeat));
            let mut progress = Progress::default();
            if self.waiting.len() >= LOOKUP_BATCH || self.waiting_bytes >= LOOKUP_BYTES {
                // At most one looked-up batch waits to be written.
                progress = self.pump(true).await?;
                self.look_up_waiting().await?;
            }
            progress = progress + self.pump(false).await?;
            progress.recorded += self.reap_sealing().await?;
            return Ok(progress);
        };
        let known = repeat || stored.contains(&hash);
        self.start(hash, len, incoming, known);
        let mut progress = self.settle(STORE_AHEAD).await?;
        progress.recorded += self.reap_sealing().await?;
        Ok(progress)
    }

    /// Asks the index which waiting chunks are stored (one query); they become ready to write.
    async fn look_up_waiting(&mut self) -> Result<(), IngestError> {
        let waiting = std::mem::take(&mut self.waiting);
        self.waiting_bytes = 0;
        let asked: Vec<Hash> = waiting.iter().filter(|w| !w.3).map(|w| w.0).collect();
        let stored =
            if asked.is_empty() { HashSet::new() } else { self.db.run(move |c| packs::recorded(c, &asked)).await? };
        self.ready.extend(waiting.into_iter().map(|(hash, len, incoming, repeat)| {
            let known = repeat || stored.contains(&hash);
            (hash, len, incoming, known)
        }));
        Ok(())
    }

    /// Settles the writes that are done and starts ready chunks while fewer than [`STORE_AHEAD`]
    /// are in flight, so writing goes on while the caller reads the next chunks; with `drain`,
    /// waits until every ready chunk has started.
    async fn pump(&mut self, drain: bool) -> Result<Progress, IngestError> {
        let mut progress = Progress::default();
        loop {
            while self.storing.front().is_some_and(|(_, _, write)| write.is_finished()) {
                progress = progress + self.settle_oldest().await?;
            }
            while self.storing.len() < STORE_AHEAD {
                let Some((hash, len, incoming, known)) = self.ready.pop_front() else { break };
                self.start(hash, len, incoming, known);
            }
            if !drain || self.ready.is_empty() {
                return Ok(progress);
            }
            progress = progress + self.settle_oldest().await?;
        }
    }

    /// Verifies the chunk (and appends it to the pack unless `known`: stored already, by anyone or
    /// earlier in this upload) on the blocking pool.
    fn start(&mut self, hash: Hash, len: u32, incoming: Incoming, known: bool) {
        let writer = self.writer.clone();
        let write = tokio::task::spawn_blocking(move || {
            match incoming {
                // Verified anyway: the client must prove it holds the bytes it names.
                Incoming::Bytes(data) if known => {
                    let actual = chunking::hash(&data);
                    if actual != hash {
                        return Err(StorageError::HashMismatch {
                            claimed: chunking::hex(&hash),
                            actual: chunking::hex(&actual),
                        });
                    }
                    Ok(None)
                }
                Incoming::Encoded(encoded) if known => pack::verify_encoded(&hash, len, &encoded).map(|()| None),
                Incoming::Bytes(data) => writer.append(&hash, data).map(Some),
                Incoming::Encoded(encoded) => writer.append_encoded(&hash, len, &encoded).map(Some),
            }
        });
        self.storing.push_back((hash, len, write));
    }

    /// Waits for every chunk, makes them durable and records them: from then on the workspace
    /// holds them and a version may name them.
    pub async fn finish(&mut self) -> Result<Progress, IngestError> {
        if !self.waiting.is_empty() {
            self.look_up_waiting().await?;
        }
        let started = self.pump(true).await?;
        let mut progress = started + self.settle(0).await?;
        progress.recorded += self.wait_sealing().await?;
        Ok(progress)
    }

    /// Settles the oldest chunks until at most `keep` are in flight; with 0, records them all.
    async fn settle(&mut self, keep: usize) -> Result<Progress, IngestError> {
        let mut progress = Progress::default();
        while self.storing.len() > keep {
            progress = progress + self.settle_oldest().await?;
        }
        if keep == 0 && !self.unrecorded.is_empty() {
            progress.recorded += self.record().await?;
        }
        Ok(progress)
    }

    /// Waits for the oldest chunk in flight; records a full pack.
    async fn settle_oldest(&mut self) -> Result<Progress, IngestError> {
        let mut progress = Progress::default();
        let Some((hash, len, write)) = self.storing.pop_front() else { return Ok(progress) };
        let appended = write.await.map_err(|e| IngestError::Task(e.to_string()))??;
        let stored_size = appended.map_or(0, |a| u64::from(a.stored_size));
        progress.add(len, Stored { stored_size, written: appended.is_some() });
        self.unrecorded.push(NewChunk { hash, size: len, stored_size, at: appended.map(|a| a.at) });
        self.unrecorded_bytes += stored_size;
        if self.unrecorded_bytes >= PACK_TARGET || self.unrecorded.len() >= RECORD_BATCH {
            progress.recorded += self.record().await?;
        }
        Ok(progress)
    }

    /// Starts sealing the open pack (durable), then recording it and the unrecorded chunks in one
    /// transaction, in the background; waits first for the previous pack's, so transactions commit
    /// in order (chunks still being appended when a pack is taken go to the next pack, and a settled
    /// chunk's entry is in the pack sealed now or in one recorded before). Returns how many chunks
    /// the previous one recorded.
    async fn record(&mut self) -> Result<u64, IngestError> {
        let before = self.wait_sealing().await?;
        let batch = std::mem::take(&mut self.unrecorded);
        let recorded = batch.len() as u64;
        self.unrecorded_bytes = 0;
        let pack = self.writer.take();
        let (store, db, ws) = (self.store.clone(), self.db.clone(), self.ws);
        self.sealing = Some(tokio::spawn(async move {
            let sealed = match pack {
                Some(pack) => Some(store.seal(pack).await?),
                None => None,
            };
            db.write(move |c| {
                if let Some(pack) = sealed {
                    packs::record_pack(c, pack.id, pack.size)?;
                }
                journal::record_chunks(c, ws, &batch)
            })
            .await?;
            Ok(recorded)
        }));
        Ok(before)
    }

    /// Waits for the background seal and record, if any: how many chunks it recorded, or its error.
    async fn wait_sealing(&mut self) -> Result<u64, IngestError> {
        match self.sealing.take() {
            Some(sealing) => sealing.await.map_err(|e| IngestError::Task(e.to_string()))?,
            None => Ok(0),
        }
    }

    /// What the background seal recorded if it is done (its error, if it failed); 0 while it runs.
    async fn reap_sealing(&mut self) -> Result<u64, IngestError> {
        if self.sealing.as_ref().is_some_and(JoinHandle::is_finished) {
            self.wait_sealing().await
        } else {
            Ok(0)
        }
    }
}

impl Drop for ChunkSink {
    fn drop(&mut self) {
        if let Some(sealing) = self.sealing.take() {
            sealing.abort();
        }
    }
}

/// Commits `edits` in one transaction (see [`journal::commit_many`]).
pub async fn commit_many(
    db: &Db,
    ws: WorkspaceId,
    author: Author,
    edits: Vec<Edit>,
) -> Result<Vec<Result<Committed, DbError>>, DbError> {
    db.write(move |c| journal::commit_many(c, ws, &author, &edits)).await
}

/// Commits one edit in one transaction (see [`journal::commit`]).
pub async fn commit(db: &Db, ws: WorkspaceId, author: Author, edit: Edit) -> Result<Committed, DbError> {
    db.write(move |c| journal::commit(c, ws, &author, &edit)).await
}

/// The version a change was made against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// The version the writer saw (0: it saw no file). Another head makes a put a conflict copy.
    Seen(i64),
    /// Whatever the path's head is when the change commits (read in the commit's transaction).
    Current,
}

impl Base {
    /// The base version for `path`, read in the caller's transaction for [`Base::Current`].
    pub fn resolve(self, conn: &mut crate::db::DbConn, ws: WorkspaceId, path: &str) -> Result<i64, DbError> {
        match self {
            Base::Seen(v) => Ok(v),
            Base::Current => Ok(journal::head_of(conn, ws, path)?.filter(|h| !h.deleted).map_or(0, |h| h.seq)),
        }
    }
}

/// Content read from a byte stream, stored, durable and recorded: ready to commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Streamed {
    pub size: u64,
    pub content_hash: Hash,
    pub chunks: Vec<ChunkRef>,
    pub progress: Progress,
}

/// Cuts `reader` into chunks while reading (FastCDC with the parameters of [`chunking::chunks`], so
/// the cuts are the agent's), stores and records them through a [`ChunkSink`] that asks the index
/// about them a batch at a time. Memory does not grow with the size of the content: one chunker
/// buffer and two lookup batches ([`LOOKUP_BYTES`] each).
pub async fn store_stream<R: AsyncRead + Unpin>(
    db: &Db,
    store: ChunkStore,
    ws: WorkspaceId,
    reader: R,
) -> Result<Streamed, IngestError> {
    let mut sink = ChunkSink::new(db.clone(), store, ws);
    let mut progress = Progress::default();
    let mut whole = blake3::Hasher::new();
    let mut size = 0u64;
    let mut refs: Vec<ChunkRef> = Vec::new();
    {
        let mut cdc =
            fastcdc::v2020::AsyncStreamCDC::new(reader, MIN_CHUNK as usize, AVG_CHUNK as usize, MAX_CHUNK as usize);
        let mut chunks = std::pin::pin!(cdc.as_stream());
        while let Some(next) = chunks.next().await {
            let chunk = next.map_err(|e| match e {
                fastcdc::v2020::Error::IoError(io) => IngestError::Read(io),
                other => IngestError::Read(io::Error::other(other.to_string())),
            })?;
            let len = u32::try_from(chunk.length).map_err(|_| IngestError::Read(io::Error::other("chunk too long")))?;
            let hash = chunking::hash(&chunk.data);
            whole.update(&chunk.data);
            size += u64::from(len);
            refs.push(ChunkRef { hash, len });
            progress = progress + sink.push(hash, chunk.data).await?;
        }
    }
    progress = progress + sink.finish().await?;
    Ok(Streamed { size, content_hash: *whole.finalize().as_bytes(), chunks: refs, progress })
}

/// What [`commit_put`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutDone {
    pub committed: Committed,
    /// The put made a file where there was none (a new path, or a conflict copy).
    pub created: bool,
}

/// Where and how stored content is to be committed.
#[derive(Debug, Clone)]
pub struct NewPut {
    pub path: String,
    pub base: Base,
    pub mtime_ms: i64,
    /// `None` keeps the mode of the file it replaces (0, "the reader's default", for a new one).
    pub mode: Option<u32>,
}

/// Commits stored content as a put in one transaction; a base other than the head makes it a
/// conflict copy.
pub async fn commit_put(
    db: &Db,
    ws: WorkspaceId,
    author: Author,
    put: NewPut,
    streamed: Streamed,
) -> Result<PutDone, DbError> {
    let NewPut { path, base, mtime_ms, mode } = put;
    db.write(move |c| {
        let base_version = base.resolve(c, ws, &path)?;
        let head = journal::head_of(c, ws, &path)?.filter(|h| !h.deleted);
        let mode = match (mode, head) {
            (Some(m), _) => m,
            (None, Some(h)) => journal::version_at(c, ws, h.seq)?.map_or(0, |(v, _)| v.mode),
            (None, None) => 0,
        };
        let Streamed { size, content_hash, chunks, .. } = streamed;
        let content = Content { size, mtime_ms, mode, content_hash, chunks };
        let committed = journal::commit(c, ws, &author, &Edit::Put { path, base_version, content })?;
        let created = head.is_none() || committed.conflict_path.is_some();
        Ok(PutDone { committed, created })
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use object_store::memory::InMemory;

    use super::*;
    use crate::db::accounts::{self, NewUser};
    use crate::db::packs::Location;
    use crate::storage::Backend;
    use crate::UserId;

    use crate::test_data::noise;

    fn memory_store(db: &Db) -> ChunkStore {
        ChunkStore::new(db.clone(), Backend::objects(Arc::new(InMemory::new()), "memory"))
    }

    fn setup(dir: &std::path::Path) -> (Db, WorkspaceId, Author) {
        let db = Db::open(&format!("sqlite://{}", dir.join("db.sqlite").display()), 2).unwrap();
        let (user, ws) = db
            .write_blocking(|c| {
                let new = NewUser {
                    first_name: "A",
                    last_name: "B",
                    username: "alice",
                    email: "alice@example.com",
                    password_hash: "x",
                };
                let user = accounts::create_user(c, &new)?;
                let ws = accounts::create_workspace(c, UserId(user.id), "team")?;
                Ok((UserId(user.id), WorkspaceId(ws.id)))
            })
            .unwrap();
        (db, ws, Author { user_id: user, device_id: "test".into(), device_name: "test".into() })
    }

    /// A streamed put lands in packs of about PACK_TARGET, every recorded chunk in a recorded pack
    /// and readable in one ranged read; repeated and known chunks are not stored again; the cuts
    /// are the agent's; a stale base becomes a conflict copy.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn streamed_puts_land_in_packs_and_stale_bases_copy() {
        let dir = tempfile::tempdir().unwrap();
        let (db, ws, author) = setup(dir.path());
        let store = memory_store(&db);
        // More than one pack.
        let data = noise(PACK_TARGET as usize * 5 / 4, 7);
        let streamed = store_stream(&db, store.clone(), ws, &data[..]).await.unwrap();
        assert_eq!((streamed.size, streamed.content_hash), (data.len() as u64, chunking::hash(&data)));
        assert_eq!(streamed.chunks, chunking::scan(&data[..]).unwrap().refs());
        let hashes: Vec<Hash> = streamed.chunks.iter().map(|c| c.hash).collect();
        let wanted = hashes.clone();
        let (held, located) =
            db.run(move |c| Ok((journal::held_chunks(c, ws, &wanted)?, packs::locate(c, &wanted)?))).await.unwrap();
        assert_eq!(held.len(), hashes.iter().collect::<HashSet<_>>().len());
        let in_packs: HashSet<_> = located
            .values()
            .map(|l| match l {
                Location::Packed { at, .. } => at.pack,
                Location::Loose => panic!("a new chunk was recorded loose"),
            })
            .collect();
        assert_eq!(in_packs.len(), 2, "20 MiB of noise is two packs");
        let recorded = db.run(packs::all_packs).await.unwrap();
        assert!(in_packs.iter().all(|p| recorded.contains(p)));
        assert_eq!(streamed.progress.chunks_written, hashes.len() as u64);
        let mut back = Vec::new();
        let mut reads = store.read_many(hashes.clone(), 4);
        while let Some(got) = reads.next().await {
            back.extend(got.unwrap().1);
        }
        assert_eq!(back, data);

        // Known chunks (the same content again) and repeats within an upload are stored once.
        let again = store_stream(&db, store.clone(), ws, &data[..]).await.unwrap();
        assert_eq!((again.progress.chunks, again.progress.chunks_written), (hashes.len() as u64, 0));
        let zeros = vec![0u8; 4 << 20];
        let z = store_stream(&db, store.clone(), ws, &zeros[..]).await.unwrap();
        assert!(z.progress.chunks > 10);
        assert_eq!(z.progress.chunks_written, 1);
        assert_eq!(store.get(&z.chunks[3].hash).await.unwrap(), vec![0u8; z.chunks[3].len as usize]);
        // A chunk repeated in one read reads back every time.
        let mut back = Vec::new();
        let mut reads = store.read_many(z.chunks.iter().map(|c| c.hash).collect(), 4);
        while let Some(got) = reads.next().await {
            back.extend(got.unwrap().1);
        }
        assert!(back == zeros, "a run of zeros reads back");

        let put = |base| NewPut { path: "big.bin".into(), base, mtime_ms: 1, mode: None };
        let first = commit_put(&db, ws, author.clone(), put(Base::Current), streamed).await.unwrap();
        assert!(first.created && first.committed.conflict_path.is_none());
        let v1 = first.committed.seq;
        let edit = store_stream(&db, store.clone(), ws, &b"edited"[..]).await.unwrap();
        let second = commit_put(&db, ws, author.clone(), put(Base::Seen(v1)), edit).await.unwrap();
        assert!(!second.created && second.committed.conflict_path.is_none());
        let stale = store_stream(&db, store.clone(), ws, &b"stale"[..]).await.unwrap();
        let third = commit_put(&db, ws, author.clone(), put(Base::Seen(v1)), stale).await.unwrap();
        let copy = third.committed.conflict_path.clone().expect("a conflict copy");
        assert!(third.created && copy.starts_with("big (conflict alice test "), "{copy}");
        let head = db.run(move |c| journal::head_of(c, ws, "big.bin")).await.unwrap().unwrap();
        assert_eq!(head.seq, second.committed.seq);
    }

    /// A sink told in advance which chunks are stored writes only the others and asks nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sink_told_what_is_stored_writes_only_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let (db, ws, _) = setup(dir.path());
        let store = memory_store(&db);
        let (old, new) = (noise(5000, 1), noise(5000, 2));
        let (h_old, h_new) = (chunking::hash(&old), chunking::hash(&new));
        let mut sink = ChunkSink::new(db.clone(), store.clone(), ws);
        sink.push(h_old, old.clone()).await.unwrap();
        sink.finish().await.unwrap();
        let mut sink = ChunkSink::with_stored(db.clone(), store.clone(), ws, HashSet::from([h_old]));
        let mut progress = sink.push(h_old, old.clone()).await.unwrap();
        progress = progress + sink.push(h_new, new.clone()).await.unwrap();
        progress = progress + sink.finish().await.unwrap();
        assert_eq!((progress.chunks, progress.chunks_written), (2, 1));
        assert_eq!(store.get(&h_new).await.unwrap(), new);
        assert_eq!(store.get(&h_old).await.unwrap(), old);
    }

    /// A chunk whose bytes do not match its name is refused and nothing of it is recorded, known
    /// chunk or new.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wrong_chunk_is_refused_and_not_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let (db, ws, _) = setup(dir.path());
        let store = memory_store(&db);
        let claimed = chunking::hash(b"what was announced");
        let mut sink = ChunkSink::new(db.clone(), store.clone(), ws);
        sink.push(claimed, b"something else".to_vec()).await.unwrap();
        assert!(matches!(sink.finish().await, Err(IngestError::Storage(StorageError::HashMismatch { .. }))));
        let held = db.run(move |c| journal::held_chunks(c, ws, &[claimed])).await.unwrap();
        assert!(held.is_empty());

        let mut sink = ChunkSink::new(db.clone(), store.clone(), ws);
        sink.push(claimed, b"what was announced".to_vec()).await.unwrap();
        sink.finish().await.unwrap();
        let other = db.write(|c| Ok(WorkspaceId(accounts::create_workspace(c, UserId(1), "other")?.id))).await.unwrap();
        let mut sink = ChunkSink::new(db.clone(), store, other);
        sink.push(claimed, b"something else".to_vec()).await.unwrap();
        assert!(matches!(sink.finish().await, Err(IngestError::Storage(StorageError::HashMismatch { .. }))));
        let held = db.run(move |c| journal::held_chunks(c, other, &[claimed])).await.unwrap();
        assert!(held.is_empty());
    }

    /// 64 KiB chunks of noise filling `packs` packs and a half, with their hashes.
    fn noise_chunks(packs: u64, seed: u64) -> Vec<(Hash, Vec<u8>)> {
        let n = (PACK_TARGET * packs + PACK_TARGET / 2) / 65_536;
        (0..n)
            .map(|i| {
                let data = noise(65_536, seed + 2 * i);
                (chunking::hash(&data), data)
            })
            .collect()
    }

    /// An upload of more than two packs: full packs are sealed and recorded while the next one
    /// fills, and what the sink reports recorded is always the oldest pushed chunks, which the
    /// workspace then holds; `finish` records the rest.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn full_packs_are_recorded_in_push_order_while_the_next_fills() {
        let dir = tempfile::tempdir().unwrap();
        let (db, ws, _) = setup(dir.path());
        let store = ChunkStore::new(db.clone(), Backend::dir(&dir.path().join("chunks")).unwrap());
        let chunks = noise_chunks(2, 100);
        let hashes: Vec<Hash> = chunks.iter().map(|c| c.0).collect();
        let mut sink = ChunkSink::with_stored(db.clone(), store.clone(), ws, HashSet::new());
        let mut recorded = 0u64;
        let mut recorded_before_finish = 0u64;
        for (i, (hash, data)) in chunks.into_iter().enumerate() {
            recorded += sink.push(hash, data).await.unwrap().recorded;
            assert!(recorded <= i as u64 + 1, "more recorded than pushed");
            let prefix = hashes[..recorded as usize].to_vec();
            let held = db.run(move |c| journal::held_chunks(c, ws, &prefix)).await.unwrap();
            assert_eq!(held.len() as u64, recorded, "the reported chunks are the oldest pushed, and held");
            recorded_before_finish = recorded;
        }
        assert!(recorded_before_finish > 0, "no pack was recorded before the end of the upload");
        recorded += sink.finish().await.unwrap().recorded;
        assert_eq!(recorded, hashes.len() as u64);
        let all = hashes.clone();
        let (held, packs) =
            db.run(move |c| Ok((journal::held_chunks(c, ws, &all)?, packs::all_packs(c)?))).await.unwrap();
        assert_eq!(held.len(), hashes.len());
        assert_eq!(packs.len(), 3, "40 MiB of noise is three packs");
        assert_eq!(store.backend().requests().objects_written(), 3);
        let mut reads = store.read_many(hashes.clone(), 4);
        let mut n = 0;
        while let Some(got) = reads.next().await {
            assert_eq!(got.unwrap().0, hashes[n]);
            n += 1;
        }
        assert_eq!(n, hashes.len());
    }

    /// A 1,000-chunk file reads back identical with a few coalesced ranged reads, not one per chunk;
    /// so do every other chunk of it (small gaps), the same chunk over and over, and the chunks
    /// backwards.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_file_is_read_with_few_coalesced_reads() {
        use crate::storage::requests::Op;
        let dir = tempfile::tempdir().unwrap();
        let (db, ws, _) = setup(dir.path());
        let store = ChunkStore::new(db.clone(), Backend::dir(&dir.path().join("chunks")).unwrap());
        let chunks: Vec<(Hash, Vec<u8>)> = (0..1000u64)
            .map(|i| {
                let data = noise(8192 + (i as usize % 7) * 1000, 1000 + 2 * i);
                (chunking::hash(&data), data)
            })
            .collect();
        let mut sink = ChunkSink::with_stored(db.clone(), store.clone(), ws, HashSet::new());
        for (hash, data) in &chunks {
            sink.push(*hash, data.clone()).await.unwrap();
        }
        sink.finish().await.unwrap();
        let reads = || store.backend().requests().of(Op::ReadRange);
        let read_all = |order: Vec<usize>| {
            let store = store.clone();
            let hashes: Vec<Hash> = order.iter().map(|&i| chunks[i].0).collect();
            let want: Vec<Vec<u8>> = order.iter().map(|&i| chunks[i].1.clone()).collect();
            async move {
                let got: Vec<Vec<u8>> = store.read_many(hashes, 4).map(|r| r.unwrap().1).collect().await;
                assert!(got == want, "the chunks read back differ");
            }
        };

        // ~11.5 MiB in one pack: a dozen reads of at most MAX_SPAN, where one per chunk would be 1,000.
        let bytes: u64 = chunks.iter().map(|c| c.1.len() as u64).sum();
        let few = bytes.div_ceil(crate::storage::coalesce::MAX_SPAN) + 4;
        let before = reads();
        read_all((0..1000).collect()).await;
        let whole = reads() - before;
        assert!(whole <= few, "1,000 chunks took {whole} reads (at most {few})");
        let before = reads();
        read_all((0..1000).step_by(2).collect()).await;
        assert!(reads() - before <= few, "every other chunk took {} reads", reads() - before);
        let before = reads();
        read_all(vec![7; 300]).await;
        assert!(reads() - before <= 2, "a repeated chunk took {} reads", reads() - before);
        let before = reads();
        read_all((0..1000).rev().collect()).await;
        assert!(reads() - before <= few, "chunks backwards took {} reads", reads() - before);
        // The stored forms come through the same reads.
        let stored: Vec<Encoded> =
            store.read_many_stored(vec![chunks[3].0, chunks[4].0], 4).map(|r| r.unwrap().1).collect().await;
        assert_eq!(stored.len(), 2);
    }

    /// An object store that accepts `puts` objects, then fails every write.
    #[derive(Debug)]
    struct FailingPuts {
        inner: InMemory,
        puts: std::sync::atomic::AtomicUsize,
    }

    impl std::fmt::Display for FailingPuts {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "FailingPuts")
        }
    }

    impl FailingPuts {
        fn allow(&self) -> object_store::Result<()> {
            use std::sync::atomic::Ordering::SeqCst;
            match self.puts.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)) {
                Ok(_) => Ok(()),
                Err(_) => Err(object_store::Error::Generic { store: "FailingPuts", source: "the disk is full".into() }),
            }
        }
    }

    #[async_trait::async_trait]
    impl object_store::ObjectStore for FailingPuts {
        async fn put_opts(
            &self,
            location: &object_store::path::Path,
            payload: object_store::PutPayload,
            opts: object_store::PutOptions,
        ) -> object_store::Result<object_store::PutResult> {
            self.allow()?;
            self.inner.put_opts(location, payload, opts).await
        }

        async fn put_multipart_opts(
            &self,
            location: &object_store::path::Path,
            opts: object_store::PutMultipartOptions,
        ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
            self.allow()?;
            self.inner.put_multipart_opts(location, opts).await
        }

        async fn get_opts(
            &self,
            location: &object_store::path::Path,
            options: object_store::GetOptions,
        ) -> object_store::Result<object_store::GetResult> {
            self.inner.get_opts(location, options).await
        }

        fn delete_stream(
            &self,
            locations: futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>> {
            self.inner.delete_stream(locations)
        }

        fn list(
            &self,
            prefix: Option<&object_store::path::Path>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
            self.inner.list(prefix)
        }

        async fn list_with_delimiter(
            &self,
            prefix: Option<&object_store::path::Path>,
        ) -> object_store::Result<object_store::ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }

        async fn copy_opts(
            &self,
            from: &object_store::path::Path,
            to: &object_store::path::Path,
            options: object_store::CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    /// A store that fails while an upload's later packs are sealed in the background: the upload
    /// gets the store's retryable error, and every chunk the workspace holds is readable.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_background_seal_fails_the_upload_and_references_nothing_missing() {
        let dir = tempfile::tempdir().unwrap();
        let (db, ws, _) = setup(dir.path());
        let failing = FailingPuts { inner: InMemory::new(), puts: 1.into() };
        let store = ChunkStore::new(db.clone(), Backend::objects(Arc::new(failing), "failing"));
        let chunks = noise_chunks(3, 300);
        let hashes: Vec<Hash> = chunks.iter().map(|c| c.0).collect();
        let mut sink = ChunkSink::with_stored(db.clone(), store.clone(), ws, HashSet::new());
        let mut failed = None;
        for (hash, data) in chunks {
            if let Err(e) = sink.push(hash, data).await {
                failed = Some(e);
                break;
            }
        }
        let failed = match failed {
            Some(e) => e,
            None => sink.finish().await.expect_err("the upload succeeded on a failing store"),
        };
        assert!(matches!(&failed, IngestError::Storage(e) if e.is_unavailable()), "{failed:?}");
        drop(sink);
        let all = hashes.clone();
        let held = db.run(move |c| journal::held_chunks(c, ws, &all)).await.unwrap();
        assert!(!held.is_empty(), "the first pack was stored and recorded");
        assert!(held.len() < hashes.len());
        for hash in &held {
            store.get(hash).await.unwrap_or_else(|e| panic!("a held chunk is unreadable: {e}"));
        }
    }

    /// The streaming chunker cuts exactly where the agent's does, so HTTP uploads dedupe with agents'.
    #[test]
    fn async_cuts_match_the_agents() {
        let data = crate::test_data::noise(3 * 1024 * 1024 + 5, 1);
        let sync: Vec<ChunkRef> = chunking::scan(&data[..]).unwrap().refs();
        let cuts = futures::executor::block_on(async {
            let mut cdc = fastcdc::v2020::AsyncStreamCDC::new(
                &data[..],
                MIN_CHUNK as usize,
                AVG_CHUNK as usize,
                MAX_CHUNK as usize,
            );
            let chunks: Vec<_> = cdc.as_stream().collect().await;
            chunks
                .into_iter()
                .map(|c| {
                    let c = c.unwrap();
                    ChunkRef { hash: chunking::hash(&c.data), len: c.length as u32 }
                })
                .collect::<Vec<_>>()
        });
        assert!(sync.len() > 10);
        assert_eq!(cuts, sync);
    }
}

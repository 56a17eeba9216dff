//! Uploads and downloads: streamed, chunk by chunk, verified.

use std::collections::HashMap;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use filesync_core::chunking::{self, Hash};
use filesync_core::encoding::{self, Encoded};
use filesync_core::proto::{BatchOutcome, ErrorCode, FileUpload, Message, PutFile};
use filesync_core::WorkspaceId;
use tokio::sync::mpsc;

use crate::download::mode_of;
use crate::{committed, unexpected, Client, ClientError, Committed};

/// One file of [`Client::put_files_scanned`], scanned by the caller.
#[derive(Debug, Clone, Copy)]
pub struct BatchUpload<'a> {
    pub path: &'a str,
    pub local: &'a Path,
    pub base_version: i64,
    pub scan: &'a chunking::FileScan,
}

/// Where each chunk of a local file starts.
type ChunkIndex = HashMap<Hash, (u64, u32)>;

fn index_of(scan: &chunking::FileScan) -> ChunkIndex {
    let mut index = HashMap::new();
    for c in &scan.chunks {
        index.entry(c.chunk.hash).or_insert((c.offset, c.chunk.len));
    }
    index
}

/// Chunks a batch upload reads ahead of the one being sent.
const READ_AHEAD_CHUNKS: usize = 16;
/// How many times an upload is sent when the node answers `unavailable` (see `put_file_scanned`).
const PUT_ATTEMPTS: u32 = 4;

/// One chunk read for a batch, in the form it is sent (compressed when that pays), `None` if the
/// file no longer has it (changed since its scan).
type ReadChunk = Result<Option<(Hash, Encoded)>, ClientError>;

/// Reads `wanted` chunks (hash, file index, place) from `files` in order into `tx`, each checked
/// against its hash and encoded as the node stores it (core's one decision, [`Encoded::of`]);
/// stops at the first that no longer matches. Blocking.
fn read_chunks(files: &[PathBuf], wanted: Vec<(Hash, usize, (u64, u32))>, tx: &mpsc::Sender<ReadChunk>) {
    use std::io::{Read, Seek};
    let mut open: Option<(usize, std::fs::File)> = None;
    for (hash, i, (offset, len)) in wanted {
        let read = (|| -> ReadChunk {
            let file = match &mut open {
                Some((j, f)) if *j == i => f,
                _ => &mut open.insert((i, std::fs::File::open(&files[i])?)).1,
            };
            file.seek(SeekFrom::Start(offset))?;
            let mut data = vec![0u8; len as usize];
            if file.read_exact(&mut data).is_err() || chunking::hash(&data) != hash {
                return Ok(None);
            }
            Ok(Some((hash, Encoded::of(data))))
        })();
        let stop = !matches!(read, Ok(Some(_)));
        if tx.blocking_send(read).is_err() || stop {
            return;
        }
    }
}

fn mtime_ms(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Client {
    /// Uploads `local` as `path`. `base_version` is the version the local copy
    /// was based on (0: new file). Only the chunks the node does not hold are
    /// sent. A stale base is not an error: the answer's `conflict_path` says
    /// where the content was kept instead.
    pub async fn put_file(
        &self,
        ws: WorkspaceId,
        path: &str,
        local: &Path,
        base_version: i64,
    ) -> Result<Committed, ClientError> {
        let source = local.to_path_buf();
        let scan = tokio::task::spawn_blocking(move || {
            std::fs::File::open(&source).and_then(|f| chunking::scan(std::io::BufReader::new(f)))
        })
        .await
        .map_err(|e| ClientError::Io(std::io::Error::other(e)))??;
        self.put_file_scanned(ws, path, local, base_version, &scan).await
    }

    /// Like [`Client::put_file`] for a caller that has just scanned `local`
    /// itself: the file is not read twice. Each chunk sent is still checked
    /// against `scan` (a file changed since gives [`ClientError::FileChanged`]).
    ///
    /// A commit answered `chunks_released` (garbage collection released a chunk the node had said
    /// the workspace held: nothing was committed) is sent again a few times: the node asks again
    /// for the chunks it lacks now. Other refusals, retryable ones included (`unavailable`), are
    /// the caller's to retry with its own backoff.
    pub async fn put_file_scanned(
        &self,
        ws: WorkspaceId,
        path: &str,
        local: &Path,
        base_version: i64,
        scan: &chunking::FileScan,
    ) -> Result<Committed, ClientError> {
        let mut attempt = 1;
        loop {
            match self.put_file_once(ws, path, local, base_version, scan).await {
                Err(e) if e.code() == Some(ErrorCode::ChunksReleased) && attempt < PUT_ATTEMPTS => {
                    tracing::info!(path, attempt, error = %e, "upload refused for now; sending it again");
                    tokio::time::sleep(std::time::Duration::from_millis(200 * attempt as u64)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn put_file_once(
        &self,
        ws: WorkspaceId,
        path: &str,
        local: &Path,
        base_version: i64,
        scan: &chunking::FileScan,
    ) -> Result<Committed, ClientError> {
        let meta = tokio::fs::metadata(local).await?;
        let (mtime, mode) = (mtime_ms(&meta), mode_of(&meta));
        let index = index_of(scan);
        let chunks = scan.refs();
        // A large file whose base version this connection knows goes as a delta.
        let base = self.manifests().get(ws, base_version, path);
        let put = |request_id| {
            let file = FileUpload {
                path: path.to_owned(),
                base_version,
                size: scan.size,
                mtime_ms: mtime,
                mode,
                content_hash: scan.content_hash,
                chunks: chunks.clone(),
            };
            let put = PutFile { request_id, workspace_id: ws, file };
            match &base {
                Some(base) => Message::PutDelta(put.to_delta(base_version, base)),
                None => Message::PutFile(put),
            }
        };
        let mut pending = self.request(put).await?;
        let needed = match pending.recv().await? {
            Message::NeedChunks { hashes, .. } => hashes,
            other => return Err(unexpected("NeedChunks", &other)),
        };
        let mut wanted = Vec::with_capacity(needed.len());
        for hash in needed {
            let at = *index
                .get(&hash)
                .ok_or_else(|| ClientError::Protocol("the node asked for a chunk not in the manifest".into()))?;
            wanted.push((hash, 0, at));
        }
        self.send_chunks(&mut pending, vec![local.to_path_buf()], wanted).await?;
        let done = committed(pending.recv().await?)?;
        self.remember(ws, done.seq, &done.path, &chunks);
        Ok(done)
    }

    /// Uploads several small files in one `PutFiles` request: one round trip for the list, the
    /// chunks the node lacks, one transaction for all. Each answer is the file's own outcome (a
    /// stale base gives a conflict copy, a refusal an error) in the order given. The whole batch
    /// fails alike (outer error) if the node refuses it or a file changed while it was read: then
    /// nothing of it was committed, and each file can be sent alone.
    pub async fn put_files_scanned(
        &self,
        ws: WorkspaceId,
        files: &[BatchUpload<'_>],
    ) -> Result<Vec<Result<Committed, ClientError>>, ClientError> {
        // The disk work runs on the blocking pool, one hand-off for all the stats and one reader
        // for all the chunks, not a few per file.
        let locals: Vec<PathBuf> = files.iter().map(|f| f.local.to_path_buf()).collect();
        let stat_paths = locals.clone();
        let metas = tokio::task::spawn_blocking(move || {
            stat_paths
                .iter()
                .map(|p| std::fs::metadata(p).map(|m| (mtime_ms(&m), mode_of(&m))))
                .collect::<std::io::Result<Vec<(i64, u32)>>>()
        })
        .await
        .map_err(|e| ClientError::Io(std::io::Error::other(e)))?;
        let metas = metas?;
        let mut list = Vec::with_capacity(files.len());
        let mut index: HashMap<Hash, (usize, (u64, u32))> = HashMap::new();
        for (i, (f, (mtime, mode))) in files.iter().zip(metas).enumerate() {
            for c in &f.scan.chunks {
                index.entry(c.chunk.hash).or_insert((i, (c.offset, c.chunk.len)));
            }
            list.push(FileUpload {
                path: f.path.to_owned(),
                base_version: f.base_version,
                size: f.scan.size,
                mtime_ms: mtime,
                mode,
                content_hash: f.scan.content_hash,
                chunks: f.scan.refs(),
            });
        }
        let mut pending =
            self.request(|request_id| Message::PutFiles { request_id, workspace_id: ws, files: list }).await?;
        let needed = match pending.recv().await? {
            Message::NeedChunks { hashes, .. } => hashes,
            other => return Err(unexpected("NeedChunks", &other)),
        };
        let mut wanted = Vec::with_capacity(needed.len());
        for hash in needed {
            let &(i, at) = index
                .get(&hash)
                .ok_or_else(|| ClientError::Protocol("the node asked for a chunk not in the batch".into()))?;
            wanted.push((hash, i, at));
        }
        self.send_chunks(&mut pending, locals, wanted).await?;
        let results = match pending.recv().await? {
            Message::CommittedMany { results, .. } if results.len() == files.len() => results,
            other => return Err(unexpected("CommittedMany with one result per file", &other)),
        };
        let mut out = Vec::with_capacity(results.len());
        for (r, f) in results.into_iter().zip(files) {
            out.push(match r {
                BatchOutcome::Committed { seq, path, conflict_path } => {
                    Ok(Committed { workspace_id: ws, seq, version: seq, path, conflict_path })
                }
                // Retryable (see `put_file_scanned`): this file goes again on its own.
                BatchOutcome::Refused { code, .. } if ErrorCode::parse(&code) == Some(ErrorCode::ChunksReleased) => {
                    self.put_file_scanned(ws, f.path, f.local, f.base_version, f.scan).await
                }
                BatchOutcome::Refused { code, message } => Err(ClientError::refused(code, message)),
            });
        }
        Ok(out)
    }

    /// Sends the `wanted` chunks (hash, index into `files`, place) of the upload `pending`, read on
    /// one blocking reader a few ahead. Stops at the node's error, or cancels the upload if a file
    /// no longer has a chunk it was scanned with.
    async fn send_chunks(
        &self,
        pending: &mut crate::Pending,
        files: Vec<PathBuf>,
        wanted: Vec<(Hash, usize, (u64, u32))>,
    ) -> Result<(), ClientError> {
        let (tx, mut rx) = mpsc::channel(READ_AHEAD_CHUNKS);
        let _reader = tokio::task::spawn_blocking(move || read_chunks(&files, wanted, &tx));
        while let Some(read) = rx.recv().await {
            // The node gave up on this upload (it answered Error): stop sending.
            if let Ok(msg) = pending.rx.try_recv() {
                return match msg {
                    Message::Error { code, message, .. } => Err(ClientError::refused(code, message)),
                    other => Err(unexpected("no answer before the chunks", &other)),
                };
            }
            let Some((hash, chunk)) = read? else {
                self.send(Message::Cancel { request_id: pending.id }).await?;
                return Err(ClientError::FileChanged);
            };
            let (format, payload) = (chunk.format, chunk.payload);
            self.send(Message::Chunk { request_id: pending.id, hash, format, payload }).await?;
        }
        Ok(())
    }

    /// The bytes of each chunk of `hashes`, in the order asked, each decoded from the form it
    /// travelled in (bounded: never more than `MAX_CHUNK` bytes) and checked against its hash.
    pub async fn chunks(&self, ws: WorkspaceId, hashes: Vec<Hash>) -> Result<Vec<Vec<u8>>, ClientError> {
        let wanted = hashes.clone();
        let mut p =
            self.request(|request_id| Message::GetChunks { request_id, workspace_id: ws, hashes: wanted }).await?;
        let mut out = Vec::with_capacity(hashes.len());
        for want in &hashes {
            match p.recv().await? {
                Message::Chunk { hash, format, payload, .. } if hash == *want => {
                    match encoding::decode(want, format, &payload, chunking::MAX_CHUNK) {
                        Ok(data) => out.push(data),
                        Err(e) => return Err(ClientError::Verify(format!("the node sent a bad chunk: {e}"))),
                    }
                }
                Message::Chunk { .. } => {
                    return Err(ClientError::Verify(format!("chunk {} does not match", chunking::hex(want))))
                }
                other => return Err(unexpected("Chunk", &other)),
            }
        }
        Ok(out)
    }
}

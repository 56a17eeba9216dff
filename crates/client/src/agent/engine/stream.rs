//! Fetching a large upload before its commit (protocol 4, `Notice::UploadStarted` and
//! `UploadProgress`): a task of its own per announced upload ([`Stream`]) fetches the chunks as
//! the node says they are durable, over a share of the connection ([`crate::agent::remote::Detach`]), and writes them
//! on the blocking pool, verified and hashed as they are written, to a temporary file beside the
//! destination ([`Staging`]); the event loop only passes on the durable prefix. Nothing appears
//! in the folder until the ordinary `Change` with the same content arrives:
//! [`FolderSync::download`] then joins the task and continues that same file
//! ([`Staging::continues`]: the rest of the chunks written after the staged prefix, the whole
//! content checked from the running hash, no second copy and no read-back) and renames it as
//! usual. A staged file that someone else changed meanwhile, or a `Change` whose chunk list
//! differs, downloads the ordinary way, the staged chunks read and checked like any local chunk.
//! Another content, an abandoned upload or a refused request drops the temporary file.

use std::sync::Arc;

use super::*;
use filesync_core::chunking::Hash;
use filesync_proto_client::download::{Resume, Stamp, CHUNK_BATCH, WINDOWS_AHEAD};
use tokio::sync::{watch, Semaphore};

use super::local::TempFile;
use crate::agent::remote::DetachedFetch;

/// Announced uploads fetched at once per folder; more are left to the ordinary download.
const MAX_STREAMS: usize = 4;

/// What a stream wrote: its temp file, how far, the hash of those bytes.
#[derive(Debug)]
pub(super) struct Staging {
    pub(super) rel: WsPath,
    pub(super) chunks: Arc<[ChunkRef]>,
    pub(super) tmp: TempFile,
    /// Chunks of `chunks` already in `tmp`.
    pub(super) next: usize,
    /// BLAKE3 of the bytes in `tmp` (each chunk was verified against its hash as it arrived).
    pub(super) hasher: filesync_core::chunking::tree::TreeHasher,
    /// `tmp` as the last write left it (`None`: nothing written yet, or unknown).
    pub(super) stamp: Option<Stamp>,
}

impl Staging {
    /// Whether the download of `manifest`'s content for `rel` can continue the staged file: this
    /// stream staged exactly that chunk list for that path, and nobody changed the file since.
    pub(super) fn continues(&self, rel: &WsPath, manifest: &Manifest) -> bool {
        let untouched = self.stamp.is_some() && self.tmp.stamp() == self.stamp;
        self.rel == *rel && *self.chunks == *manifest.chunks && untouched
    }

    /// The staged file and where a download continues in it ([`Staging::continues`]).
    pub(super) fn resume(self) -> (TempFile, Resume) {
        (self.tmp, Resume { chunks: self.next, hasher: self.hasher })
    }

    /// Where the staged chunks are in the temp file, for reading and checking them.
    pub(super) fn staged_chunks(&self) -> impl Iterator<Item = (Hash, u64)> + '_ {
        self.chunks[..self.next].iter().scan(0u64, |at, c| {
            let here = *at;
            *at += u64::from(c.len);
            Some((c.hash, here))
        })
    }

    /// Verifies and appends `group` (the next chunks of the list, fetched into `have`), hashing
    /// them. Blocking. `None`: a chunk is missing or damaged, or the file cannot be written.
    fn append(mut self, group: &[ChunkRef], have: &HashMap<Hash, Vec<u8>>) -> Option<Staging> {
        let mut checked: std::collections::HashSet<Hash> = std::collections::HashSet::new();
        for c in group {
            let data = have.get(&c.hash)?;
            if data.len() != c.len as usize || (!checked.contains(&c.hash) && chunking::hash(data) != c.hash) {
                return None;
            }
            checked.insert(c.hash);
            self.tmp.write(data).ok()?;
            self.hasher.update(data);
        }
        self.next += group.len();
        self.stamp = self.tmp.stamp();
        Some(self)
    }
}

/// An announced upload being fetched by its task. Dropped, the task ends and its temp file goes.
#[derive(Debug)]
pub(super) struct Stream {
    /// The durable prefix the node announced (it only grows); dropped to tell the task to end.
    durable: Option<watch::Sender<usize>>,
    /// Chunks in the temp file so far, as the task reports them.
    written: watch::Receiver<usize>,
    task: Option<tokio::task::JoinHandle<Option<Staging>>>,
}

impl Stream {
    fn start(fetch: Arc<dyn DetachedFetch>, ws: WorkspaceId, turn: Arc<Semaphore>, staging: Staging) -> Stream {
        let (durable, durable_rx) = watch::channel(0usize);
        let (written_tx, written) = watch::channel(0usize);
        let task = tokio::spawn(fetch_staged(written_tx, fetch, ws, turn, staging, durable_rx));
        Stream { durable: Some(durable), written, task: Some(task) }
    }

    /// The node holds the first `durable` chunks now.
    fn advance(&self, durable: usize) {
        if let Some(tx) = &self.durable {
            tx.send_if_modified(|d| std::mem::replace(d, (*d).max(durable)) < durable);
        }
    }

    /// Lets the task write what the node announced so far and takes its file (`None`: the task
    /// failed, was refused, or found a damaged chunk).
    pub(super) async fn join(mut self) -> Option<Staging> {
        drop(self.durable.take());
        let task = self.task.take()?;
        tracing::debug!(written = *self.written.borrow(), "joining an announced upload's fetch");
        task.await.ok().flatten()
    }

    /// Ends the task and waits until it has (its temp file is removed).
    async fn cancel(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Waits until the task has written the first `chunks` chunks; false if it ended first.
    #[cfg(test)]
    pub(super) async fn written(&mut self, chunks: usize) -> bool {
        self.written.wait_for(|n| *n >= chunks).await.is_ok()
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// A stream's task: fetches the durable prefix as it grows, a few windows at a time (one stream
/// of the folder at a time: `turn`, so memory stays that of one download), and appends it on the
/// blocking pool. Ends when told (`durable` dropped) with the staged file, or on a failure.
async fn fetch_staged(
    // First: dropped last, so whoever waits on it sees the temp file gone when the task ends.
    written: watch::Sender<usize>,
    fetch: Arc<dyn DetachedFetch>,
    ws: WorkspaceId,
    turn: Arc<Semaphore>,
    mut s: Staging,
    mut durable: watch::Receiver<usize>,
) -> Option<Staging> {
    loop {
        let upto = (*durable.borrow_and_update()).min(s.chunks.len());
        while s.next < upto {
            let _turn = turn.acquire().await.ok()?;
            let group: Vec<ChunkRef> = s.chunks[s.next..upto.min(s.next + CHUNK_BATCH * WINDOWS_AHEAD)].to_vec();
            let mut asked = std::collections::HashSet::new();
            let sets: Vec<Vec<Hash>> = group
                .chunks(CHUNK_BATCH)
                .map(|w| w.iter().map(|c| c.hash).filter(|h| asked.insert(*h)).collect())
                .collect();
            let mut have: HashMap<Hash, Vec<u8>> = HashMap::new();
            for (set, fetched) in sets.iter().zip(fetch.chunk_sets(ws, sets.clone()).await) {
                // A refusal or a lost connection ends the stream (the event loop hears of the latter).
                have.extend(set.iter().copied().zip(fetched.ok()?));
            }
            s = tokio::task::spawn_blocking(move || s.append(&group, &have)).await.ok()??;
            written.send_replace(s.next);
        }
        if durable.changed().await.is_err() {
            return Some(s);
        }
    }
}

impl FolderSync {
    /// Whether `n` is about an upload in progress (handled by [`FolderSync::on_upload`]).
    pub(super) fn is_upload_notice(n: &Notice) -> bool {
        n.upload_workspace().is_some()
    }

    /// An upload announcement: start, continue or drop a staged fetch. Never an error: a failed
    /// fetch just leaves the file to the ordinary download.
    pub(super) async fn on_upload<R: Remote>(&mut self, remote: &mut R, n: Notice) -> Result<(), SyncError> {
        match n {
            Notice::UploadStarted { workspace_id, path, size, content_hash, device_id, chunks }
                if workspace_id == self.ws && device_id != self.ident.device_id =>
            {
                let adds_up = chunks.iter().map(|c| u64::from(c.len)).sum::<u64>() == size;
                if !adds_up || self.streams.len() >= MAX_STREAMS || self.streams.contains_key(&content_hash) {
                    return Ok(());
                }
                let rel = match WsPath::try_from(path) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(workspace.id = %self.ws, folder = %self.name, error = %e, "an announced upload has an invalid path; ignored");
                        return Ok(());
                    }
                };
                if self.rules.is_ignored(rel.as_str(), false) {
                    return Ok(());
                }
                match local::temp_beside(&self.root, &rel) {
                    Ok(tmp) => {
                        let chunks = chunks.into();
                        let staging = Staging {
                            rel,
                            chunks,
                            tmp,
                            next: 0,
                            hasher: filesync_core::chunking::tree::TreeHasher::new(),
                            stamp: None,
                        };
                        let stream = Stream::start(remote.detach(), self.ws, self.stream_turn.clone(), staging);
                        self.streams.insert(content_hash, stream);
                    }
                    Err(e) => tracing::debug!(workspace.id = %self.ws, error = %e, "cannot stage an announced upload"),
                }
            }
            Notice::UploadProgress { workspace_id, content_hash, durable } if workspace_id == self.ws => {
                if let Some(stream) = self.streams.get(&content_hash) {
                    stream.advance(usize::try_from(durable).unwrap_or(usize::MAX));
                }
            }
            Notice::UploadAbandoned { workspace_id, content_hash } if workspace_id == self.ws => {
                if let Some(stream) = self.streams.remove(&content_hash) {
                    stream.cancel().await;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The staged fetch of `manifest`'s content, if there is one, once its task has written what
    /// it was told ([`Staging::continues`] tells whether the download can continue it).
    pub(super) async fn take_stream(&mut self, manifest: &Manifest) -> Option<Staging> {
        self.streams.remove(&manifest.content_hash)?.join().await
    }
}

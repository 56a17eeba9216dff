//! Fetching a large upload before its commit (protocol 4, `Notice::UploadStarted` and
//! `UploadProgress`): the announced chunks are fetched as the node says they are durable and
//! written, verified, to a temporary file beside the destination, hashed as they are written.
//! Nothing appears in the folder until the ordinary `Change` with the same content arrives:
//! [`FolderSync::download`] then continues that same file ([`Stream::continues`]: the rest of the
//! chunks written after the staged prefix, the whole content checked from the running hash, no
//! second copy and no read-back) and renames it as usual. A staged file that someone else
//! changed meanwhile, or a `Change` whose chunk list differs, downloads the ordinary way, the
//! staged chunks read and checked like any local chunk.
//! Another content, an abandoned upload or a refused request drops the temporary file.

use super::*;
use filesync_core::chunking::Hash;
use filesync_proto_client::download::{Resume, Stamp, CHUNK_BATCH, WINDOWS_AHEAD};

use super::local::TempFile;

/// Announced uploads fetched at once per folder; more are left to the ordinary download.
const MAX_STREAMS: usize = 4;

/// An announced upload being fetched.
#[derive(Debug)]
pub(super) struct Stream {
    pub(super) rel: WsPath,
    pub(super) chunks: Vec<ChunkRef>,
    pub(super) tmp: TempFile,
    /// Chunks of `chunks` already in `tmp`.
    pub(super) next: usize,
    /// BLAKE3 of the bytes in `tmp` (each chunk was verified against its hash as it arrived).
    pub(super) hasher: blake3::Hasher,
    /// `tmp` as this stream's last write left it (`None`: nothing written yet, or unknown).
    pub(super) stamp: Option<Stamp>,
}

impl Stream {
    /// Whether the download of `manifest`'s content for `rel` can continue the staged file: this
    /// stream staged exactly that chunk list for that path, and nobody changed the file since.
    pub(super) fn continues(&self, rel: &WsPath, manifest: &Manifest) -> bool {
        let untouched = self.stamp.is_some() && self.tmp.stamp() == self.stamp;
        self.rel == *rel && self.chunks == manifest.chunks && untouched
    }

    /// The staged file and where a download continues in it ([`Stream::continues`]).
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
}

impl FolderSync {
    /// Whether `n` is about an upload in progress (handled by [`FolderSync::on_upload`]).
    pub(super) fn is_upload_notice(n: &Notice) -> bool {
        n.upload_workspace().is_some()
    }

    /// An upload announcement: start, continue or drop a staged fetch. Only a lost connection
    /// is an error; anything else just leaves the file to the ordinary download.
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
                        let stream = Stream { rel, chunks, tmp, next: 0, hasher: blake3::Hasher::new(), stamp: None };
                        self.streams.insert(content_hash, stream);
                    }
                    Err(e) => tracing::debug!(workspace.id = %self.ws, error = %e, "cannot stage an announced upload"),
                }
            }
            Notice::UploadProgress { workspace_id, content_hash, durable } if workspace_id == self.ws => {
                let Some(mut stream) = self.streams.remove(&content_hash) else { return Ok(()) };
                let upto = usize::try_from(durable).unwrap_or(usize::MAX).min(stream.chunks.len());
                match self.stream_to(remote, &mut stream, upto).await {
                    Ok(true) => {
                        self.streams.insert(content_hash, stream);
                    }
                    Ok(false) => {}
                    Err(e) => return Err(e),
                }
            }
            Notice::UploadAbandoned { workspace_id, content_hash } if workspace_id == self.ws => {
                self.streams.remove(&content_hash);
            }
            _ => {}
        }
        Ok(())
    }

    /// Fetches the stream's chunks up to `upto` into its temporary file, each verified. False:
    /// the stream is to be dropped (a refusal, a damaged chunk, a local write error).
    pub(super) async fn stream_to<R: Remote>(
        &mut self,
        remote: &mut R,
        s: &mut Stream,
        upto: usize,
    ) -> Result<bool, SyncError> {
        while s.next < upto {
            let group = &s.chunks[s.next..upto.min(s.next + CHUNK_BATCH * WINDOWS_AHEAD)];
            let mut have: HashMap<Hash, Vec<u8>> = HashMap::new();
            let mut asked = std::collections::HashSet::new();
            let sets: Vec<Vec<Hash>> = group
                .chunks(CHUNK_BATCH)
                .map(|w| w.iter().map(|c| c.hash).filter(|h| asked.insert(*h)).collect())
                .collect();
            for (set, fetched) in sets.iter().zip(remote.chunk_sets(self.ws, &sets).await) {
                let fetched = match fetched {
                    Ok(f) => f,
                    Err(RemoteError::Refused { .. }) => return Ok(false),
                    Err(e) => return Err(e.into()),
                };
                for (hash, data) in set.iter().zip(fetched) {
                    if chunking::hash(&data) != *hash {
                        return Ok(false);
                    }
                    have.insert(*hash, data);
                }
            }
            for c in group {
                let Some(data) = have.get(&c.hash) else { return Ok(false) };
                if s.tmp.write(data).is_err() {
                    return Ok(false);
                }
                s.hasher.update(data);
            }
            s.next += group.len();
            s.stamp = s.tmp.stamp();
        }
        Ok(true)
    }

    /// The staged fetch of `manifest`'s content, if there is one ([`Stream::continues`] tells
    /// whether the download can continue it).
    pub(super) fn take_stream(&mut self, manifest: &Manifest) -> Option<Stream> {
        self.streams.remove(&manifest.content_hash)
    }
}

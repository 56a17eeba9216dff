//! Applying the server's changes: journal batches, fetching ahead, downloads.

use std::collections::HashSet;

use filesync_core::chunking::Hash;
use filesync_proto_client::download::{self, FetchError};

use super::*;

/// Journal changes applied as one batch: their small downloads are fetched ahead together and
/// made durable with one barrier. Also the most live changes taken from the queue at once.
pub(super) const APPLY_BATCH: usize = 512;

/// Files up to this size are fetched ahead whole; larger ones download alone, a window at a time.
pub(super) const PREFETCH_FILE_BYTES: u64 = download::AHEAD_FILE_BYTES;

/// A version of a file fetched ahead ([`FolderSync::prefetch`]), waiting beside its destination.
pub(super) use download::Staged;

/// What a prefetch gathered (the library's [`download::fetch_ahead`]), by destination.
type Gathered = download::Gathered<WsPath>;

impl FolderSync {
    /// Applies journal changes in order, [`APPLY_BATCH`] at a time: the downloads of a batch are
    /// fetched ahead together ([`FolderSync::prefetch`]), then each change is decided as if alone.
    /// `last_seq` follows each applied change. `show`: a progress bar (catch-up).
    pub(super) async fn apply_changes<R: Remote>(
        &mut self,
        remote: &mut R,
        changes: Vec<Change>,
        show: bool,
    ) -> Result<(), SyncError> {
        let bar = self.ui.steps(if show { changes.len() as u64 } else { 0 }, &format!("{}: catching up", self.name));
        self.apply_counted(remote, changes, &bar).await?;
        bar.finish();
        Ok(())
    }

    /// [`FolderSync::apply_changes`], counting each applied change on `bar`.
    pub(super) async fn apply_counted<R: Remote>(
        &mut self,
        remote: &mut R,
        changes: Vec<Change>,
        bar: &Bar,
    ) -> Result<(), SyncError> {
        let superseded = superseded(&changes);
        let mut rest = changes.into_iter().enumerate().peekable();
        while rest.peek().is_some() {
            let batch: Vec<(usize, Change)> = rest.by_ref().take(APPLY_BATCH).collect();
            let result = self.apply_batch(remote, batch, &superseded, bar, true).await;
            // Fetched ahead but not placed (a failure, a change decided otherwise): removed now.
            self.staged.clear();
            result?;
        }
        Ok(())
    }

    /// One batch of [`FolderSync::apply_counted`]. `journal`: the changes are consecutive
    /// journal entries, and `last_seq` follows them; otherwise (the heads of a reconciliation,
    /// in no seq order) it stays.
    pub(super) async fn apply_batch<R: Remote>(
        &mut self,
        remote: &mut R,
        batch: Vec<(usize, Change)>,
        superseded: &BTreeSet<usize>,
        bar: &Bar,
        journal: bool,
    ) -> Result<(), SyncError> {
        let applied: Vec<&Change> = batch.iter().filter(|(i, _)| !superseded.contains(i)).map(|(_, c)| c).collect();
        self.prefetch(remote, &applied).await?;
        for (i, c) in batch {
            if self.stopping() {
                self.store.save()?;
                return Err(SyncError::Stopped);
            }
            let seq = c.seq;
            if superseded.contains(&i) {
                self.remote_heads.insert(c);
            } else {
                self.apply_change(remote, c).await?;
            }
            if journal {
                // In order, without gaps: everything up to it is applied.
                self.store.advance(seq);
            }
            bar.inc(1);
        }
        // The batch's entries and `last_seq`, in one transaction.
        self.store.save()?;
        Ok(())
    }

    /// Fetches ahead what the batch's small downloads need (manifests, then the chunks no local
    /// file has; many requests in flight), writes each file beside its destination and makes them
    /// all durable with one barrier; [`FolderSync::download`] then only renames. Only an
    /// optimization: every change is still decided when it is applied, and whatever is not
    /// staged here downloads the usual way.
    pub(super) async fn prefetch<R: Remote>(&mut self, remote: &mut R, changes: &[&Change]) -> Result<(), SyncError> {
        let wanted = self.prefetch_candidates(changes);
        if wanted.len() < 2 {
            return Ok(()); // a lone download keeps its own path (and its own fsync)
        }
        let started = std::time::Instant::now();
        let (one_chunk, ask): (Vec<&Change>, Vec<&Change>) =
            wanted.into_iter().partition(|c| c.size <= u64::from(chunking::MIN_CHUNK));
        let mut manifests = self.fetch_manifests(remote, ask).await?;
        let (mut gathered, guessed_wrong) = self.fetch_guessed(remote, one_chunk).await?;
        manifests.extend(self.fetch_manifests(remote, guessed_wrong).await?);
        gathered.extend(self.fetch_chunks(remote, manifests).await?);
        let fetched_ms = started.elapsed().as_millis();
        let (root, ws) = (self.root.clone(), self.ws);
        let staged = tokio::task::spawn_blocking(move || {
            download::stage_all(ws, gathered, |rel| local::temp_beside(&root, rel))
        })
        .await
        .unwrap_or_default();
        tracing::debug!(workspace.id = %self.ws, files = staged.len(), fetched_ms, total_ms = started.elapsed().as_millis(), "fetched ahead");
        self.staged = staged;
        Ok(())
    }

    /// Fetches files no larger than the smallest chunk without asking for their manifests: such
    /// a file is one chunk, whose hash is the content hash, so the change tells the manifest.
    /// Returns the changes guessed wrong (cut otherwise by some other uploader: their chunk is
    /// refused), to be fetched by manifest after all. Contents are verified either way.
    pub(super) async fn fetch_guessed<'a, R: Remote>(
        &mut self,
        remote: &mut R,
        changes: Vec<&'a Change>,
    ) -> Result<(Gathered, Vec<&'a Change>), SyncError> {
        let files = changes.iter().map(|&c| (c, one_chunk_manifest(c))).collect();
        let mut gathered = self.fetch_chunks(remote, files).await?;
        let (whole, wrong): (Vec<_>, Vec<_>) =
            std::mem::take(&mut gathered.jobs).into_iter().partition(|j| gathered.has_all(j));
        gathered.jobs = whole;
        let wrong: BTreeSet<i64> = wrong.iter().map(|j| j.seq).collect();
        Ok((gathered, changes.into_iter().filter(|c| wrong.contains(&c.seq)).collect()))
    }

    /// The manifests of `changes`, many requests in flight; the refused ones are left out
    /// (decided and reported when their change is applied).
    pub(super) async fn fetch_manifests<'a, R: Remote>(
        &mut self,
        remote: &mut R,
        changes: Vec<&'a Change>,
    ) -> Result<Vec<(&'a Change, Manifest)>, SyncError> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let seqs: Vec<i64> = changes.iter().map(|c| c.seq).collect();
        let manifests = remote.manifests(self.ws, &seqs).await;
        let mut files = Vec::with_capacity(changes.len());
        for (c, m) in changes.into_iter().zip(manifests) {
            match m {
                Ok(m) if m.size <= PREFETCH_FILE_BYTES => files.push((c, m)),
                Ok(_) | Err(RemoteError::Refused { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(files)
    }

    /// The changes of a batch whose download may be fetched ahead: puts of small files that
    /// [`FolderSync::apply_change`] would not skip outright.
    pub(super) fn prefetch_candidates<'a>(&self, changes: &[&'a Change]) -> Vec<&'a Change> {
        let mut out = Vec::new();
        for &c in changes {
            let rules_file = |p: &str| p.starts_with(IGNORE_FILE);
            if rules_file(&c.path) || c.from_path.as_deref().is_some_and(rules_file) {
                break; // the rules may change here: what follows is decided under the new ones
            }
            let put = matches!(c.op, ChangeOp::Put | ChangeOp::Restore) && c.kind == EntryKind::File && !c.deleted;
            if put
                && c.size <= PREFETCH_FILE_BYTES
                && filesync_core::path::validate(&c.path).is_ok()
                && !self.rules.is_ignored(&c.path, false)
                && self.store.get(&c.path).is_none_or(|e| e.version < c.seq)
            {
                out.push(c);
            }
        }
        out
    }

    /// Fetches ahead (the library's [`download::fetch_ahead`]) the chunks of `files` that no
    /// local file holds; the jobs it leaves out download one by one.
    pub(super) async fn fetch_chunks<R: Remote>(
        &mut self,
        remote: &mut R,
        files: Vec<(&Change, Manifest)>,
    ) -> Result<Gathered, SyncError> {
        let mut jobs = Vec::with_capacity(files.len());
        let mut local = download::LocalChunks::new();
        for (c, manifest) in files {
            // Candidates passed the path rules ([`FolderSync::prefetch_candidates`]).
            let Ok(rel) = WsPath::parse(&c.path) else { continue };
            local.extend(self.local_chunks(&self.chunk_places(&rel, &manifest.chunks)));
            let Manifest { size, mtime_ms, content_hash, chunks } = manifest;
            jobs.push(download::AheadJob { seq: c.seq, key: rel, mode: c.mode, mtime_ms, size, content_hash, chunks });
        }
        Ok(download::fetch_ahead(remote, self.ws, jobs, local).await?)
    }

    /// Fetches version `c.seq` of `rel` into place: chunks we already have locally are copied,
    /// only the others are asked for. The file appears whole or not at all.
    pub(super) async fn download<R: Remote>(&mut self, remote: &mut R, rel: &WsPath, c: &Change) -> PathResult {
        if let Some(staged) = self.take_staged(rel, c.seq) {
            self.place(rel, c, staged);
            return Ok(());
        }
        let manifest = match remote.manifest(self.ws, c.seq).await {
            Ok(m) => m,
            Err(RemoteError::Refused { code, message }) => {
                tracing::warn!(workspace.id = %self.ws, path = rel.as_str(), seq = c.seq, %code, %message, "cannot fetch this version");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let before = local::stat(&self.root, rel);
        let planning = std::time::Instant::now();
        let places = self.chunk_places(rel, &manifest.chunks);
        let mut local_chunks = self.local_chunks(&places);
        // A large upload staged while it was being sent: the download continues its temp file.
        // If it cannot (someone changed the file, another chunk list or path), its chunks are read
        // from there and checked like any local chunk; it is dropped once this download is done.
        let (mut resume, staged) = match self.take_stream(&manifest).await {
            Some(s) if s.continues(rel, &manifest) => (Some(s.resume()), None),
            Some(s) => {
                tracing::info!(workspace.id = %self.ws, path = rel.as_str(), "the staged download does not continue into this version; reading its chunks");
                for (hash, at) in s.staged_chunks() {
                    local_chunks.entry(hash).or_insert_with(|| (s.tmp.path().to_path_buf(), at));
                }
                (None, Some(s))
            }
            None => (None, None),
        };
        // First the chunks of local files unchanged since scanned are copied in the kernel,
        // unread, and the whole file checked; should one have changed unnoticed, the download
        // runs again reading and checking every local chunk.
        let mut copy = self.copy_chunks(&places);
        let planned_ms = planning.elapsed().as_millis();
        let started = std::time::Instant::now();
        let (tmp, reused, bar) = loop {
            let resumed = resume.is_some();
            let (mut tmp, from) = match resume.take() {
                Some(r) => r,
                None => match local::temp_beside(&self.root, rel) {
                    Ok(t) => (t, download::Resume::default()),
                    Err(e) => {
                        self.local_error(rel, e);
                        return Ok(());
                    }
                },
            };
            let staged_bytes = tmp.len();
            let bar = self.ui.bytes(manifest.size, rel);
            let fetched = download::fetch_into(
                remote,
                self.ws,
                &manifest.chunks,
                &manifest.content_hash,
                &mut tmp,
                download::Local { read: &local_chunks, copy: &copy },
                from,
                &mut |n| bar.inc(n),
            )
            .await;
            match fetched {
                Ok(reused) => {
                    if resumed {
                        tracing::debug!(workspace.id = %self.ws, path = rel.as_str(), staged_bytes, "download continued the staged file");
                    }
                    break (tmp, reused, bar);
                }
                Err(FetchError::Remote(e)) => return Err(e.into()),
                Err(FetchError::Damaged) => return Err(SyncError::Connection("a chunk arrived damaged".into())),
                Err(FetchError::Write(e)) => {
                    self.local_error(rel, e);
                    return Ok(());
                }
                Err(FetchError::Mismatch) if resumed => {
                    tracing::info!(workspace.id = %self.ws, path = rel.as_str(), "the staged download does not add up; downloading it whole");
                }
                Err(FetchError::Mismatch) if !copy.is_empty() => {
                    tracing::info!(workspace.id = %self.ws, path = rel.as_str(), "local chunks not as recorded; reading and checking them");
                    copy.clear();
                }
                Err(FetchError::Mismatch) => {
                    tracing::warn!(workspace.id = %self.ws, path = rel.as_str(), "downloaded content does not match its hash; not applied");
                    return Ok(());
                }
            }
        };
        bar.finish();
        if local::stat(&self.root, rel) != before {
            // Edited while we downloaded: leave theirs for the conflict path (our next upload's base is stale).
            tracing::info!(workspace.id = %self.ws, path = rel.as_str(), "changed locally during download; not replaced");
            return Ok(());
        }
        let (mode, mtime_ms, unread) = (c.mode, manifest.mtime_ms, tmp.unread());
        let assembled_ms = started.elapsed().as_millis();
        let finished = tokio::task::spawn_blocking(move || tmp.finish(mode, mtime_ms)).await;
        let (copied, finish_ms) = (!copy.is_empty(), started.elapsed().as_millis() - assembled_ms);
        tracing::debug!(workspace.id = %self.ws, path = rel.as_str(), copied, unread, planned_ms, assembled_ms, finish_ms, "download written");
        let facts = match finished.unwrap_or_else(|e| Err(std::io::Error::other(e.to_string()))) {
            Ok(f) => f,
            Err(e) => {
                self.local_error(rel, e);
                return Ok(());
            }
        };
        drop(staged);
        self.downloaded(rel, c, &facts, &manifest, reused);
        Ok(())
    }

    /// The download of `seq` fetched ahead for `rel`, if there is one.
    pub(super) fn take_staged(&mut self, rel: &WsPath, seq: i64) -> Option<Staged> {
        let staged = self.staged.remove(&seq)?;
        (staged.file.dest() == local::abs_of(&self.root, rel)).then_some(staged)
    }

    /// Renames a download fetched ahead (whole, verified, durable) into place. The change was
    /// decided from the local file after that file was written, so the check is that the local
    /// file is still as decided: absent, or the one the state knows.
    pub(super) fn place(&mut self, rel: &WsPath, c: &Change, staged: Staged) {
        let known = |m: &LocalFile| self.store.get(rel).is_some_and(|e| e.size == m.size && e.mtime_ms == m.mtime_ms);
        if local::stat(&self.root, rel).is_some_and(|m| !known(&m)) {
            tracing::info!(workspace.id = %self.ws, path = rel.as_str(), "changed locally during download; not replaced");
            return;
        }
        let Staged { file, size, mtime_ms, content_hash, chunks, reused } = staged;
        match file.finish() {
            Ok(facts) => self.downloaded(rel, c, &facts, &Manifest { size, mtime_ms, content_hash, chunks }, reused),
            Err(e) => self.local_error(rel, e),
        }
    }

    /// Records a download now in place as `facts`.
    pub(super) fn downloaded(&mut self, rel: &WsPath, c: &Change, facts: &LocalFile, manifest: &Manifest, reused: u64) {
        let scan =
            FileScan { size: manifest.size, content_hash: manifest.content_hash, chunks: offsets(&manifest.chunks) };
        self.record(rel, c.seq, facts, &scan);
        tracing::info!(workspace.id = %self.ws, path = rel.as_str(), seq = c.seq, size = manifest.size, reused_bytes = reused, "downloaded");
        if c.device_id != self.ident.device_id {
            if c.op == ChangeOp::Put && filesync_core::path::is_conflict_copy(rel.as_str()) {
                // Another device (or the server) kept both sides of a conflicting edit: say so here too.
                tracing::warn!(workspace.id = %self.ws, conflict.copy = rel.as_str(), "conflicting edits elsewhere: both versions kept, this one as a copy");
                self.store.add_conflict(rel);
                self.ui.conflict(&self.name, rel);
            } else {
                self.ui.changed_by_other(&self.name, rel);
            }
        }
        if rel.starts_with(IGNORE_FILE) {
            self.rules = IgnoreRules::load(&self.root);
        }
    }

    /// Where local files held the chunks of `chunks`, as far as the state knows (may be stale):
    /// first the recorded content of `rel` itself, in one read (a new version of a large file is
    /// mostly its old chunks: no lookup per chunk), then a lookup for each chunk still missing.
    pub(super) fn chunk_places(&self, rel: &WsPath, chunks: &[ChunkRef]) -> HashMap<Hash, (WsPath, u64)> {
        let wanted: HashSet<Hash> = chunks.iter().map(|c| c.hash).collect();
        let mut out: HashMap<Hash, (WsPath, u64)> = HashMap::new();
        let mut offset = 0u64;
        for c in self.store.chunks(rel) {
            if wanted.contains(&c.hash) {
                out.entry(c.hash).or_insert_with(|| (rel.clone(), offset));
            }
            offset += u64::from(c.len);
        }
        for c in chunks {
            if let std::collections::hash_map::Entry::Vacant(slot) = out.entry(c.hash) {
                if let Some(place) = self.local_chunk_at(c) {
                    slot.insert(place);
                }
            }
        }
        out
    }

    /// [`FolderSync::chunk_places`] as files to read (the library checks each chunk it reads).
    pub(super) fn local_chunks(&self, places: &HashMap<Hash, (WsPath, u64)>) -> download::LocalChunks {
        places.iter().map(|(h, (path, offset))| (*h, (local::abs_of(&self.root, path), *offset))).collect()
    }

    /// The chunks of `places` held by local files that are as the state recorded them (size and
    /// mtime): copied unread ([`download::CopyChunks`]). Each such file is opened once.
    pub(super) fn copy_chunks(&self, places: &HashMap<Hash, (WsPath, u64)>) -> download::CopyChunks {
        let mut files: HashMap<&WsPath, Option<std::sync::Arc<std::fs::File>>> = HashMap::new();
        let mut out = download::CopyChunks::new();
        for (hash, (path, offset)) in places {
            let file = files.entry(path).or_insert_with(|| {
                let known = self.store.get(path.as_str())?;
                let now = local::stat(&self.root, path)?;
                if (now.size, now.mtime_ms) != (known.size, known.mtime_ms) {
                    return None;
                }
                local::open_file(&self.root, path).ok().map(std::sync::Arc::new)
            });
            if let Some(file) = file {
                out.insert(*hash, (file.clone(), *offset));
            }
        }
        out
    }

    /// Where the state says a local file held chunk `c` (path and offset); may be stale.
    fn local_chunk_at(&self, c: &ChunkRef) -> Option<(WsPath, u64)> {
        let (path, offset) = self.store.chunk_location(c)?;
        Some((WsPath::try_from(path).ok()?, offset))
    }
}

/// The manifest of a file that is a single chunk (not larger than [`chunking::MIN_CHUNK`]).
pub(super) fn one_chunk_manifest(c: &Change) -> Manifest {
    let chunks = download::one_chunk_list(c.size, c.content_hash);
    Manifest { size: c.size, mtime_ms: c.mtime_ms, content_hash: c.content_hash, chunks }
}

/// Puts that a later change of the same list overwrites or deletes: they need not be downloaded.
pub(super) fn superseded(changes: &[Change]) -> BTreeSet<usize> {
    let mut last_touch: HashMap<&str, usize> = HashMap::new();
    for (i, c) in changes.iter().enumerate() {
        last_touch.insert(c.path.as_str(), i);
    }
    changes
        .iter()
        .enumerate()
        .filter(|(i, c)| {
            matches!(c.op, ChangeOp::Put | ChangeOp::Restore) && last_touch.get(c.path.as_str()) != Some(i)
        })
        .map(|(i, _)| i)
        .collect()
}

pub(super) fn offsets(chunks: &[ChunkRef]) -> Vec<chunking::ScannedChunk> {
    let mut offset = 0u64;
    chunks
        .iter()
        .map(|c| {
            let s = chunking::ScannedChunk { chunk: *c, offset };
            offset += u64::from(c.len);
            s
        })
        .collect()
}

//! Applying the server's changes: journal batches, fetching ahead, downloads.

use super::*;

/// Chunks fetched per `GetChunks` request (bounded memory: 64 × 256 KiB).
pub(super) const CHUNK_BATCH: usize = 64;

/// `GetChunks` windows of one large download in flight together (at most 64 MiB held, 16 MiB at the
/// average chunk size).
pub(super) const WINDOWS_AHEAD: usize = 4;

/// Journal changes applied as one batch: their small downloads are fetched ahead together and
/// made durable with one barrier. Also the most live changes taken from the queue at once.
pub(super) const APPLY_BATCH: usize = 512;

/// Files up to this size are fetched ahead whole; larger ones download alone, a window at a time.
pub(super) const PREFETCH_FILE_BYTES: u64 = 1 << 20;

/// Chunk bytes fetched ahead for one batch (bounded memory); the files beyond download alone.
pub(super) const PREFETCH_BYTES: u64 = 32 << 20;

/// Chunk bytes asked for in one `GetChunks` while fetching ahead: several requests overlap, and
/// one refused request only sends its own files down the one-by-one path.
pub(super) const PREFETCH_REQUEST_BYTES: u64 = 1 << 20;

/// A version of a file fetched ahead ([`FolderSync::prefetch`]), waiting beside its destination.
#[derive(Debug)]
pub(super) struct Staged {
    file: StagedFile,
    manifest: Manifest,
    /// Bytes taken from local files rather than fetched.
    reused: u64,
}

/// What a prefetch gathered: the files to write, and where their chunks come from.
#[derive(Debug, Default)]
pub(super) struct Gathered {
    jobs: Vec<StageJob>,
    fetched: HashMap<Hash, Vec<u8>>,
    /// Chunks some local file holds: its path and the offset.
    local: HashMap<Hash, (PathBuf, u64)>,
}

impl Gathered {
    pub(super) fn extend(&mut self, other: Gathered) {
        self.jobs.extend(other.jobs);
        self.fetched.extend(other.fetched);
        self.local.extend(other.local);
    }

    pub(super) fn has_all(&self, job: &StageJob) -> bool {
        job.manifest.chunks.iter().all(|r| self.fetched.contains_key(&r.hash) || self.local.contains_key(&r.hash))
    }
}

/// A download to fetch ahead: one version of a small file.
#[derive(Debug)]
pub(super) struct StageJob {
    seq: i64,
    rel: WsPath,
    mode: u32,
    manifest: Manifest,
}

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
        let superseded = superseded(&changes);
        let bar = self.ui.steps(if show { changes.len() as u64 } else { 0 }, &format!("{}: catching up", self.name));
        let mut rest = changes.into_iter().enumerate().peekable();
        while rest.peek().is_some() {
            let batch: Vec<(usize, Change)> = rest.by_ref().take(APPLY_BATCH).collect();
            let result = self.apply_batch(remote, batch, &superseded, &bar).await;
            // Fetched ahead but not placed (a failure, a change decided otherwise): removed now.
            self.staged.clear();
            result?;
        }
        bar.finish();
        Ok(())
    }

    pub(super) async fn apply_batch<R: Remote>(
        &mut self,
        remote: &mut R,
        batch: Vec<(usize, Change)>,
        superseded: &BTreeSet<usize>,
        bar: &Bar,
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
            self.store.advance(seq);
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
        let staged = tokio::task::spawn_blocking(move || stage_all(&root, ws, gathered)).await.unwrap_or_default();
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
        let (whole, wrong): (Vec<StageJob>, Vec<StageJob>) =
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

    /// The files to stage and where the chunks local files hold can be read; and which chunks
    /// to ask for, grouped per request (a file's chunks in one request), within [`PREFETCH_BYTES`].
    pub(super) fn plan_fetch(&self, files: Vec<(&Change, Manifest)>) -> (Gathered, Vec<Vec<Hash>>) {
        let (mut jobs, mut sets, mut local_chunks) = (Vec::new(), Vec::new(), HashMap::new());
        let mut asked: std::collections::HashSet<Hash> = std::collections::HashSet::new();
        let (mut set, mut set_bytes, mut total) = (Vec::new(), 0u64, 0u64);
        for (c, manifest) in files {
            let (mut need, mut need_bytes) = (Vec::new(), 0u64);
            for r in &manifest.chunks {
                if let Some((path, offset)) = self.local_chunk_at(r) {
                    local_chunks.insert(r.hash, (local::abs_of(&self.root, &path), offset));
                } else if asked.insert(r.hash) {
                    need.push(r.hash);
                    need_bytes += u64::from(r.len);
                }
            }
            if total + need_bytes > PREFETCH_BYTES {
                break; // the rest download one by one
            }
            total += need_bytes;
            if !set.is_empty() && set_bytes + need_bytes > PREFETCH_REQUEST_BYTES {
                sets.push(std::mem::take(&mut set));
                set_bytes = 0;
            }
            set.extend(need);
            set_bytes += need_bytes;
            // Candidates passed the path rules ([`FolderSync::prefetch_candidates`]).
            let Ok(rel) = WsPath::parse(&c.path) else { continue };
            jobs.push(StageJob { seq: c.seq, rel, mode: c.mode, manifest });
        }
        if !set.is_empty() {
            sets.push(set);
        }
        (Gathered { jobs, fetched: HashMap::new(), local: local_chunks }, sets)
    }

    /// The chunks `files` lack locally ([`FolderSync::plan_fetch`], [`FolderSync::fetch_sets`]).
    pub(super) async fn fetch_chunks<R: Remote>(
        &mut self,
        remote: &mut R,
        files: Vec<(&Change, Manifest)>,
    ) -> Result<Gathered, SyncError> {
        let (mut gathered, sets) = self.plan_fetch(files);
        gathered.fetched = self.fetch_sets(remote, sets).await?;
        Ok(gathered)
    }

    /// The chunks of every set; a refused set is left out (its files download one by one).
    pub(super) async fn fetch_sets<R: Remote>(
        &mut self,
        remote: &mut R,
        sets: Vec<Vec<Hash>>,
    ) -> Result<HashMap<Hash, Vec<u8>>, SyncError> {
        let mut have = HashMap::new();
        if sets.is_empty() {
            return Ok(have);
        }
        let answers = remote.chunk_sets(self.ws, &sets).await;
        for (set, answer) in sets.into_iter().zip(answers) {
            match answer {
                // Checked as part of each file's content hash when staged.
                Ok(data) => have.extend(set.into_iter().zip(data)),
                Err(RemoteError::Refused { code, message }) => {
                    tracing::info!(workspace.id = %self.ws, %code, %message, chunks = set.len(), "chunks refused; their files download one by one");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(have)
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
        let mut tmp = match TempFile::beside(&self.root, rel) {
            Ok(t) => t,
            Err(e) => {
                self.local_error(rel, e);
                return Ok(());
            }
        };
        let bar = self.ui.bytes(manifest.size, rel);
        let mut whole = blake3::Hasher::new();
        let mut reused = 0u64;
        // A few windows are asked for at once (the node serves them concurrently), so the network,
        // the node's disk and our writes overlap instead of taking turns.
        for group in manifest.chunks.chunks(CHUNK_BATCH * WINDOWS_AHEAD) {
            let mut have: HashMap<Hash, Vec<u8>> = HashMap::new();
            for c in group {
                if have.contains_key(&c.hash) {
                    continue;
                }
                if let Some(data) = self.local_chunk(c) {
                    reused += u64::from(c.len);
                    have.insert(c.hash, data);
                }
            }
            let mut asked: std::collections::HashSet<Hash> = std::collections::HashSet::new();
            let sets: Vec<Vec<Hash>> = group
                .chunks(CHUNK_BATCH)
                .map(|window| {
                    window.iter().map(|c| c.hash).filter(|h| !have.contains_key(h) && asked.insert(*h)).collect()
                })
                .filter(|set: &Vec<Hash>| !set.is_empty())
                .collect();
            for (set, fetched) in sets.iter().zip(remote.chunk_sets(self.ws, &sets).await) {
                for (hash, data) in set.iter().zip(fetched?) {
                    if chunking::hash(&data) != *hash {
                        return Err(SyncError::Connection("a chunk arrived damaged".into()));
                    }
                    have.insert(*hash, data);
                }
            }
            for c in group {
                let Some(data) = have.get(&c.hash) else {
                    return Err(SyncError::Connection("the node did not send a chunk it listed".into()));
                };
                whole.update(data);
                if let Err(e) = tmp.write(data) {
                    self.local_error(rel, e);
                    return Ok(());
                }
                bar.inc(u64::from(c.len));
            }
        }
        bar.finish();
        if *whole.finalize().as_bytes() != manifest.content_hash {
            tracing::warn!(workspace.id = %self.ws, path = rel.as_str(), "downloaded content does not match its hash; not applied");
            return Ok(());
        }
        if local::stat(&self.root, rel) != before {
            // Edited while we downloaded: leave theirs for the conflict path (our next upload's base is stale).
            tracing::info!(workspace.id = %self.ws, path = rel.as_str(), "changed locally during download; not replaced");
            return Ok(());
        }
        let (mode, mtime_ms) = (c.mode, manifest.mtime_ms);
        let finished = tokio::task::spawn_blocking(move || tmp.finish(mode, mtime_ms)).await;
        let facts = match finished.unwrap_or_else(|e| Err(std::io::Error::other(e.to_string()))) {
            Ok(f) => f,
            Err(e) => {
                self.local_error(rel, e);
                return Ok(());
            }
        };
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
        match staged.file.finish() {
            Ok(facts) => self.downloaded(rel, c, &facts, &staged.manifest, staged.reused),
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

    /// A chunk from any local file that had it, if it is still there unchanged.
    pub(super) fn local_chunk(&self, c: &ChunkRef) -> Option<Vec<u8>> {
        let (path, offset) = self.local_chunk_at(c)?;
        local::read_chunk_at(&local::abs_of(&self.root, &path), offset, c)
    }

    /// Where the state says a local file held chunk `c` (path and offset); may be stale.
    fn local_chunk_at(&self, c: &ChunkRef) -> Option<(WsPath, u64)> {
        let (path, offset) = self.store.chunk_location(c)?;
        Some((WsPath::try_from(path).ok()?, offset))
    }
}

/// The manifest of a file that is a single chunk (not larger than [`chunking::MIN_CHUNK`]).
pub(super) fn one_chunk_manifest(c: &Change) -> Manifest {
    let chunks = match u32::try_from(c.size) {
        Ok(len) if len > 0 => vec![ChunkRef { hash: c.content_hash, len }],
        _ => Vec::new(),
    };
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

/// Writes each job's file beside its destination from the fetched and local chunks, then makes
/// them durable together. A file that cannot be built whole is left out (it downloads one by
/// one); if the barrier fails, all are.
pub(super) fn stage_all(root: &Path, ws: WorkspaceId, gathered: Gathered) -> HashMap<i64, Staged> {
    let Gathered { jobs, fetched, local } = gathered;
    let mut staged = Vec::with_capacity(jobs.len());
    for job in jobs {
        let (seq, rel) = (job.seq, job.rel.clone());
        match stage_one(root, job, &fetched, &local) {
            Ok(Some(s)) => staged.push((seq, s)),
            Ok(None) => {
                tracing::debug!(workspace.id = %ws, path = %rel, "not fetched ahead whole; downloading alone")
            }
            Err(e) => tracing::warn!(workspace.id = %ws, path = %rel, error = %e, "cannot write a download"),
        }
    }
    let files: Vec<&StagedFile> = staged.iter().map(|(_, s)| &s.file).collect();
    let barrier = std::time::Instant::now();
    let durable = local::make_durable(root, &files);
    tracing::debug!(workspace.id = %ws, files = files.len(), ms = barrier.elapsed().as_millis(), "downloads made durable");
    if let Err(e) = durable {
        tracing::warn!(workspace.id = %ws, error = %e, "cannot flush downloads to disk; downloading one by one");
        return HashMap::new();
    }
    staged.into_iter().collect()
}

/// One file fetched ahead, or `None` if a chunk is missing or the content does not match its hash.
pub(super) fn stage_one(
    root: &Path,
    job: StageJob,
    fetched: &HashMap<Hash, Vec<u8>>,
    local_chunks: &HashMap<Hash, (PathBuf, u64)>,
) -> std::io::Result<Option<Staged>> {
    let mut tmp = TempFile::beside(root, &job.rel)?;
    let mut whole = blake3::Hasher::new();
    let mut reused = 0u64;
    for r in &job.manifest.chunks {
        let local;
        let data = match fetched.get(&r.hash) {
            Some(d) => d,
            None => match local_chunks.get(&r.hash).and_then(|(path, offset)| local::read_chunk_at(path, *offset, r)) {
                Some(d) => {
                    reused += u64::from(r.len);
                    local = d;
                    &local
                }
                None => return Ok(None),
            },
        };
        whole.update(data);
        tmp.write(data)?;
    }
    if *whole.finalize().as_bytes() != job.manifest.content_hash {
        return Ok(None);
    }
    let file = tmp.stage(job.mode, job.manifest.mtime_ms)?;
    Ok(Some(Staged { file, manifest: job.manifest, reused }))
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

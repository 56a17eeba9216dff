//! Two-way sync of one linked folder over one connection.
//!
//! Every decision is made per path by comparing three things: the file on
//! disk, the state entry (what both sides last agreed on) and the server's
//! newest change. The rules, in one place ([`FolderSync::apply_put`],
//! [`FolderSync::apply_delete`], [`FolderSync::push_local`]):
//!
//! | local \ server | unchanged | changed | deleted |
//! |---|---|---|---|
//! | unchanged | — | download | delete locally |
//! | changed | upload | same content: record; else conflict copy of ours, download theirs | upload ours as new |
//! | deleted | delete on server | download (a change beats a delete) | forget |
//!
//! **Invariant:** no branch overwrites or deletes a local file whose content
//! the server has not got (or that is not kept as a conflict copy).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use futures::StreamExt;

use chrono::Utc;

use filesync_core::chunking::{self, ChunkRef, FileScan, Hash};
use filesync_core::path::{PathError, WsPath};
use filesync_core::proto::{Change, ChangeOp, EntryKind, Notice};
use filesync_core::{Role, WorkspaceId};

use super::ignore_rules::{IgnoreRules, IGNORE_FILE};
use super::local::{self, LocalFile, StagedFile, TempFile};
use super::remote::{Committed, Manifest, PutJob, Remote, RemoteError, RemoteEvent};
use super::state::{Entry, StateStore};
use super::ui::{Bar, Ui};
use super::watch::WatchEvent;

/// Chunks fetched per `GetChunks` request (bounded memory: 64 × 256 KiB).
const CHUNK_BATCH: usize = 64;
/// `GetChunks` windows of one large download in flight together (at most 64 MiB held, 16 MiB at the
/// average chunk size).
const WINDOWS_AHEAD: usize = 4;

/// Journal changes applied as one batch: their small downloads are fetched ahead together and
/// made durable with one barrier. Also the most live changes taken from the queue at once.
const APPLY_BATCH: usize = 512;

/// Files up to this size are fetched ahead whole; larger ones download alone, a window at a time.
const PREFETCH_FILE_BYTES: u64 = 1 << 20;

/// Chunk bytes fetched ahead for one batch (bounded memory); the files beyond download alone.
const PREFETCH_BYTES: u64 = 32 << 20;

/// Chunk bytes asked for in one `GetChunks` while fetching ahead: several requests overlap, and
/// one refused request only sends its own files down the one-by-one path.
const PREFETCH_REQUEST_BYTES: u64 = 1 << 20;

/// Paths whose local state is read in one blocking task.
const STATUS_GROUP: usize = 256;

/// Files uploaded per batch: the connection overlaps their requests, and the state
/// records each batch before the next starts.
const UPLOAD_BATCH: usize = 256;

/// Who we are, for conflict copy names.
#[derive(Debug, Clone)]
pub struct Identity {
    pub device_id: String,
    pub device_name: String,
    pub username: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The connection is gone: reconnect and catch up.
    #[error("connection lost: {0}")]
    Connection(String),
    /// The node went away politely: move to the next one at once.
    #[error("node said goodbye: {0}")]
    Goodbye(String),
    /// Retrying cannot help (bad token, an unusable setup).
    #[error("{0}")]
    Fatal(String),
    /// The user lost this workspace (removed from it, or it was deleted): stop syncing this folder
    /// and keep its files. The text says why.
    #[error("{0}")]
    AccessEnded(&'static str),
    /// The server no longer accepts this device's login (revoked, password changed): log in again.
    #[error("{0}")]
    SignedOut(String),
    #[error(transparent)]
    State(#[from] crate::home::HomeError),
    /// Shutdown was requested between two files.
    #[error("stopped")]
    Stopped,
}

impl From<RemoteError> for SyncError {
    fn from(e: RemoteError) -> SyncError {
        match e {
            e if e.is_auth() => SyncError::SignedOut(format!("signed out: {e}; run `filesync login` to sync again")),
            RemoteError::Refused { code, message } if code == super::remote::MISCONFIGURED => SyncError::Fatal(message),
            RemoteError::Connection(m) => SyncError::Connection(m),
            RemoteError::NoWorkspace(_) => SyncError::AccessEnded(NO_LONGER_MEMBER),
            RemoteError::Refused { code, message } => SyncError::Connection(format!("{message} ({code})")),
        }
    }
}

/// What the local copy of a path looks like compared with the state.
#[derive(Debug, Clone)]
enum Local {
    /// Neither a file nor a state entry.
    Absent,
    /// The state has an entry, the file is gone.
    Gone,
    /// The file matches the state entry.
    Same,
    /// The file is new or differs from the entry.
    Changed(LocalFile, FileScan),
}

/// Outcome of a request about one path that did not break the connection.
type PathResult = Result<(), SyncError>;

/// Why a folder stops when the node no longer knows the workspace for this user.
const NO_LONGER_MEMBER: &str = "you are no longer a member of it, or it was deleted";

/// The sync of one folder.
pub struct FolderSync {
    pub ws: WorkspaceId,
    pub name: String,
    root: PathBuf,
    pub store: StateStore,
    rules: IgnoreRules,
    pub role: Role,
    ident: Identity,
    ui: Ui,
    /// Where each chunk we have locally can be read: path and offset. Entries may be stale;
    /// every read is checked against the hash.
    chunk_index: HashMap<Hash, (WsPath, u64)>,
    /// The newest change seen per path, to fetch the head after our upload lost a race.
    remote_heads: HashMap<String, Change>,
    /// Download only: never upload, delete or move on the server (`workspace download`).
    pub read_only: bool,
    /// Set to `true` when the agent is asked to stop; long loops check it between files.
    pub stop: Option<tokio::sync::watch::Receiver<bool>>,
    /// Downloads of the batch being applied, fetched ahead and durable, by seq. Whatever is not
    /// placed when the batch ends is dropped, which removes its temp file.
    staged: HashMap<i64, Staged>,
}

/// A version of a file fetched ahead ([`FolderSync::prefetch`]), waiting beside its destination.
#[derive(Debug)]
struct Staged {
    file: StagedFile,
    manifest: Manifest,
    /// Bytes taken from local files rather than fetched.
    reused: u64,
}

/// What a prefetch gathered: the files to write, and where their chunks come from.
#[derive(Debug, Default)]
struct Gathered {
    jobs: Vec<StageJob>,
    fetched: HashMap<Hash, Vec<u8>>,
    /// Chunks some local file holds: its path and the offset.
    local: HashMap<Hash, (PathBuf, u64)>,
}

impl Gathered {
    fn extend(&mut self, other: Gathered) {
        self.jobs.extend(other.jobs);
        self.fetched.extend(other.fetched);
        self.local.extend(other.local);
    }

    fn has_all(&self, job: &StageJob) -> bool {
        job.manifest.chunks.iter().all(|r| self.fetched.contains_key(&r.hash) || self.local.contains_key(&r.hash))
    }
}

/// A download to fetch ahead: one version of a small file.
#[derive(Debug)]
struct StageJob {
    seq: i64,
    rel: WsPath,
    mode: u32,
    manifest: Manifest,
}

impl std::fmt::Debug for FolderSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FolderSync").field("ws", &self.ws).field("root", &self.root).finish_non_exhaustive()
    }
}

/// What ended a connected session.
#[derive(Debug)]
pub enum Ended {
    /// Shutdown requested; state saved.
    Stopped,
    /// `--once`: everything reconciled.
    Reconciled,
}

impl FolderSync {
    pub fn new(
        ws: WorkspaceId,
        name: String,
        root: PathBuf,
        store: StateStore,
        role: Role,
        ident: Identity,
        ui: Ui,
    ) -> FolderSync {
        let rules = IgnoreRules::load(&root);
        if let Some(w) = &rules.warning {
            tracing::warn!(workspace.id = %ws, "ignore rules: {w}");
        }
        let mut chunk_index = HashMap::new();
        for (path, entry) in &store.state.files {
            if let Ok(path) = WsPath::parse(path) {
                index_chunks(&mut chunk_index, &path, &entry.chunks);
            }
        }
        FolderSync {
            ws,
            name,
            root,
            store,
            rules,
            role,
            ident,
            ui,
            chunk_index,
            remote_heads: HashMap::new(),
            read_only: false,
            stop: None,
            staged: HashMap::new(),
        }
    }

    fn stopping(&self) -> bool {
        self.stop.as_ref().is_some_and(|s| *s.borrow())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Catch up from the last seq, then push local changes made meanwhile. Returns with the folder reconciled.
    pub async fn catch_up<R: Remote>(&mut self, remote: &mut R) -> Result<(), SyncError> {
        let removed = local::remove_stale_temps(&self.root);
        if removed > 0 {
            tracing::info!(workspace.id = %self.ws, count = removed, "removed partial downloads left by an earlier run");
        }
        let since = self.store.state.last_seq;
        let head = remote.subscribe(self.ws, since).await?;
        let mut changes = Vec::new();
        // The journal is gap-free: catch-up is done when the change numbered `head` is in.
        let mut seen = since;
        while seen < head {
            match remote.next_event().await {
                RemoteEvent::Change(c) if c.workspace_id == self.ws => {
                    seen = seen.max(c.seq);
                    changes.push(c);
                }
                RemoteEvent::Change(_) => {}
                RemoteEvent::Notice(n) => self.on_notice(n)?,
                RemoteEvent::Goodbye { reason } => return Err(SyncError::Goodbye(reason)),
                RemoteEvent::Closed { reason } => return Err(SyncError::Connection(reason)),
            }
        }
        tracing::info!(workspace.id = %self.ws, since, head, changes = changes.len(), "catching up");
        self.apply_changes(remote, changes, true).await?;
        self.store.advance(head);
        self.store.save()?;
        if !self.read_only {
            let mut paths: BTreeSet<String> = self.store.state.files.keys().cloned().collect();
            paths.extend(local::scan_tree(&self.root, &self.rules).into_keys());
            self.push_local(remote, paths).await?;
        }
        self.store.save()?;
        Ok(())
    }

    /// Live sync until shutdown or a connection problem.
    pub async fn live<R: Remote>(
        &mut self,
        remote: &mut R,
        watch: &mut tokio::sync::mpsc::Receiver<WatchEvent>,
        shutdown: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<Ended, SyncError> {
        let mut save_tick = tokio::time::interval(std::time::Duration::from_millis(500));
        save_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => {
                    self.store.save()?;
                    return Ok(Ended::Stopped);
                }
                ev = remote.next_event() => {
                    // Changes that arrived together are applied together (their downloads overlap);
                    // the first other event waits for them, so the order holds.
                    let (changes, after) = self.take_changes(remote, ev);
                    if !changes.is_empty() {
                        self.apply_changes(remote, changes, false).await?;
                    }
                    if let Some(ev) = after {
                        self.on_event(ev)?;
                    }
                }
                w = watch.recv() => match w {
                    Some(WatchEvent::Paths(paths)) => {
                        let rels = self.expand_watched(&paths);
                        self.push_local(remote, rels).await?;
                    }
                    Some(WatchEvent::Rescan) | None => {
                        let mut paths: BTreeSet<String> = self.store.state.files.keys().cloned().collect();
                        paths.extend(local::scan_tree(&self.root, &self.rules).into_keys());
                        self.push_local(remote, paths).await?;
                        if w.is_none() {
                            return Err(SyncError::Fatal("the folder watcher stopped".into()));
                        }
                    }
                },
                _ = save_tick.tick() => self.store.save()?,
            }
        }
    }

    /// This workspace's changes among `first` and the events already queued behind it, up to
    /// [`APPLY_BATCH`], and the first event that is not a change (left for after them).
    fn take_changes<R: Remote>(&self, remote: &mut R, first: RemoteEvent) -> (Vec<Change>, Option<RemoteEvent>) {
        let mut changes = Vec::new();
        let mut next = Some(first);
        while let Some(ev) = next.take() {
            match ev {
                RemoteEvent::Change(c) => {
                    if c.workspace_id == self.ws {
                        changes.push(c);
                    }
                    if changes.len() < APPLY_BATCH {
                        next = remote.try_next_event();
                    }
                }
                other => return (changes, Some(other)),
            }
        }
        (changes, None)
    }

    /// An event other than a change, in live sync.
    fn on_event(&mut self, ev: RemoteEvent) -> Result<(), SyncError> {
        match ev {
            RemoteEvent::Change(_) => Ok(()),
            RemoteEvent::Notice(n) => self.on_notice(n),
            RemoteEvent::Goodbye { reason } => {
                self.store.save()?;
                Err(SyncError::Goodbye(reason))
            }
            RemoteEvent::Closed { reason } => {
                self.store.save()?;
                Err(SyncError::Connection(reason))
            }
        }
    }

    /// Applies journal changes in order, [`APPLY_BATCH`] at a time: the downloads of a batch are
    /// fetched ahead together ([`FolderSync::prefetch`]), then each change is decided as if alone.
    /// `last_seq` follows each applied change. `show`: a progress bar (catch-up).
    async fn apply_changes<R: Remote>(
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

    async fn apply_batch<R: Remote>(
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
                self.remote_heads.insert(c.path.clone(), c);
            } else {
                self.apply_change(remote, c).await?;
            }
            self.store.advance(seq);
            bar.inc(1);
        }
        Ok(())
    }

    /// Fetches ahead what the batch's small downloads need (manifests, then the chunks no local
    /// file has; many requests in flight), writes each file beside its destination and makes them
    /// all durable with one barrier; [`FolderSync::download`] then only renames. Only an
    /// optimization: every change is still decided when it is applied, and whatever is not
    /// staged here downloads the usual way.
    async fn prefetch<R: Remote>(&mut self, remote: &mut R, changes: &[&Change]) -> Result<(), SyncError> {
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
    async fn fetch_guessed<'a, R: Remote>(
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
    async fn fetch_manifests<'a, R: Remote>(
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
    fn prefetch_candidates<'a>(&self, changes: &[&'a Change]) -> Vec<&'a Change> {
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
    fn plan_fetch(&self, files: Vec<(&Change, Manifest)>) -> (Gathered, Vec<Vec<Hash>>) {
        let (mut jobs, mut sets, mut local_chunks) = (Vec::new(), Vec::new(), HashMap::new());
        let mut asked: std::collections::HashSet<Hash> = std::collections::HashSet::new();
        let (mut set, mut set_bytes, mut total) = (Vec::new(), 0u64, 0u64);
        for (c, manifest) in files {
            let (mut need, mut need_bytes) = (Vec::new(), 0u64);
            for r in &manifest.chunks {
                if let Some((path, offset)) = self.chunk_index.get(&r.hash) {
                    local_chunks.insert(r.hash, (local::abs_of(&self.root, path), *offset));
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
    async fn fetch_chunks<R: Remote>(
        &mut self,
        remote: &mut R,
        files: Vec<(&Change, Manifest)>,
    ) -> Result<Gathered, SyncError> {
        let (mut gathered, sets) = self.plan_fetch(files);
        gathered.fetched = self.fetch_sets(remote, sets).await?;
        Ok(gathered)
    }

    /// The chunks of every set; a refused set is left out (its files download one by one).
    async fn fetch_sets<R: Remote>(
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

    /// The workspace paths a batch of watcher events may have changed: the paths themselves,
    /// everything under a directory that appeared, and every known path under one that vanished.
    fn expand_watched(&mut self, paths: &[PathBuf]) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for abs in paths {
            let Some(rel) = local::rel_of(&self.root, abs) else { continue };
            if rel == IGNORE_FILE {
                self.rules = IgnoreRules::load(&self.root);
                if let Some(w) = &self.rules.warning {
                    tracing::warn!(workspace.id = %self.ws, "ignore rules: {w}");
                }
            }
            match std::fs::symlink_metadata(abs) {
                Ok(m) if m.is_dir() => {
                    if !self.rules.is_ignored(&rel, true) {
                        out.extend(local::scan_under(&self.root, abs, &self.rules).into_keys());
                    }
                }
                _ => {
                    out.insert(rel.clone());
                }
            }
            out.extend(self.store.under(&rel));
        }
        out
    }

    fn on_notice(&mut self, n: Notice) -> Result<(), SyncError> {
        match n {
            Notice::WorkspaceShared { workspace_name, role, by_username, .. } => {
                self.ui.shared(&workspace_name, role, &by_username);
            }
            Notice::RoleChanged { workspace_id, role } if workspace_id == self.ws => {
                tracing::info!(workspace.id = %self.ws, role = %role, "your role changed");
                self.role = role;
            }
            Notice::MemberRemoved { workspace_id } if workspace_id == self.ws => {
                return Err(SyncError::AccessEnded("you were removed from it"));
            }
            Notice::WorkspaceDeleted { workspace_id } if workspace_id == self.ws => {
                return Err(SyncError::AccessEnded("its owner deleted it"));
            }
            _ => {}
        }
        Ok(())
    }

    /// Compares a path on disk with its state entry. Reads (hashes) the file only if size or mtime moved.
    async fn local_status(&mut self, rel: &WsPath) -> Local {
        let mut out = self.local_statuses(vec![rel.clone()]).await;
        out.pop().map(|(_, local)| local).unwrap_or(Local::Absent)
    }

    /// [`Local`] of each path, in order. The disk work runs on the blocking pool in groups of
    /// [`STATUS_GROUP`] paths, two groups at once: an initial sync of a large tree is not one
    /// thread hand-off per file.
    async fn local_statuses(&mut self, rels: Vec<WsPath>) -> Vec<(WsPath, Local)> {
        let jobs: Vec<Vec<(WsPath, Option<Entry>)>> = rels
            .chunks(STATUS_GROUP)
            .map(|group| group.iter().map(|rel| (rel.clone(), self.store.get(rel).cloned())).collect())
            .collect();
        let root = self.root.clone();
        let groups = futures::stream::iter(jobs).map(|group| {
            let root = root.clone();
            async move {
                let judged = tokio::task::spawn_blocking(move || {
                    group.into_iter().map(|(rel, entry)| (judge(&root, &rel, entry.as_ref()), rel)).collect::<Vec<_>>()
                })
                .await;
                judged.unwrap_or_default()
            }
        });
        let judged: Vec<Vec<(Judged, WsPath)>> = groups.buffered(2).collect().await;
        let mut out = Vec::with_capacity(rels.len());
        for (judged, rel) in judged.into_iter().flatten() {
            let local = match judged {
                Judged::Local(local) => local,
                Judged::Touched(meta) => {
                    // Touched, not changed: remember the new mtime so we do not read it again.
                    if let Some(mut e) = self.store.get(&rel).cloned() {
                        e.mtime_ms = meta.mtime_ms;
                        e.mode = meta.mode;
                        self.store.set(&rel, e);
                    }
                    Local::Same
                }
            };
            out.push((rel, local));
        }
        out
    }

    /// Applies one journal change from the server.
    async fn apply_change<R: Remote>(&mut self, remote: &mut R, c: Change) -> Result<(), SyncError> {
        let result = self.apply_change_inner(remote, &c).await;
        if let Some(from) = &c.from_path {
            self.remote_heads.remove(from);
        }
        self.remote_heads.insert(c.path.clone(), c);
        result
    }

    async fn apply_change_inner<R: Remote>(&mut self, remote: &mut R, c: &Change) -> PathResult {
        // A path from the network is checked here, once, and only the checked value goes on.
        let path = match WsPath::parse(&c.path) {
            Ok(p) => p,
            Err(e) => {
                self.bad_path("a change", &c.path, &e);
                return Ok(());
            }
        };
        let from = match c.from_path.as_deref().map(WsPath::parse) {
            None => None,
            Some(Ok(from)) => Some(from),
            Some(Err(e)) => {
                self.bad_path("the source of a move", c.from_path.as_deref().unwrap_or_default(), &e);
                return Ok(());
            }
        };
        if self.rules.is_ignored(&path, c.kind == EntryKind::Dir) {
            // Someone else does not ignore it; here it stays out of the folder.
            return Ok(());
        }
        if c.kind == EntryKind::Dir {
            return self.apply_dir(c, &path, from.as_ref());
        }
        match c.op {
            ChangeOp::Put | ChangeOp::Restore => self.apply_put(remote, &path, c).await,
            ChangeOp::Delete => self.apply_delete(remote, &path, c.seq).await,
            ChangeOp::Move => {
                let Some(from) = from else { return self.apply_put(remote, &path, c).await };
                if self.store.get(&path).is_some_and(|e| e.version >= c.seq) {
                    return Ok(()); // our own move, already recorded
                }
                let from_entry = self.store.get(&from).cloned();
                let can_rename = from_entry.as_ref().is_some_and(|e| e.hash == c.content_hash)
                    && local::stat(&self.root, &path).is_none()
                    && matches!(self.local_status(&from).await, Local::Same);
                if let (true, Some(mut e)) = (can_rename, from_entry) {
                    if local::rename(&self.root, &from, &path).is_ok() {
                        let facts = local::stat(&self.root, &path);
                        self.store.remove(&from);
                        e.version = c.seq;
                        if let Some(f) = facts {
                            e.mtime_ms = f.mtime_ms;
                        }
                        index_chunks(&mut self.chunk_index, &path, &e.chunks);
                        self.store.set(&path, e);
                        self.ui.changed_by_other(&self.name, &path);
                        return Ok(());
                    }
                }
                // Not a plain rename here (edited locally, or the content differs): a delete and a put.
                self.apply_delete(remote, &from, c.seq).await?;
                self.apply_put(remote, &path, c).await
            }
        }
    }

    /// Directory entries (the journal's explicit, possibly empty, directories): created, and
    /// removed when empty. A directory move moves only the entry; its files arrive as their own moves.
    fn apply_dir(&mut self, c: &Change, path: &WsPath, from: Option<&WsPath>) -> PathResult {
        if !c.deleted {
            if let Err(e) = local::make_dir(&self.root, path) {
                self.local_error(path, e);
            }
        }
        let gone = if c.op == ChangeOp::Move { from } else { c.deleted.then_some(path) };
        if let Some(gone) = gone {
            // Only an empty directory goes; files inside were (or will be) changed one by one.
            let _ = local::remove_dir(&self.root, gone);
        }
        Ok(())
    }

    /// A path from the node that breaks the path rules: one warning naming the folder; the
    /// message part it came in is skipped.
    fn bad_path(&self, what: &str, path: &str, e: &PathError) {
        tracing::warn!(workspace.id = %self.ws, folder = %self.name, path = ?path, error = %e, "the node sent {what} with an invalid path; skipped");
    }

    /// The server has new content for `rel`.
    async fn apply_put<R: Remote>(&mut self, remote: &mut R, rel: &WsPath, c: &Change) -> PathResult {
        if self.store.get(rel).is_some_and(|e| e.version >= c.seq) {
            return Ok(()); // already applied (our own upload, or a replay after reconnect)
        }
        match self.local_status(rel).await {
            Local::Same | Local::Gone | Local::Absent => self.download(remote, rel, c).await,
            Local::Changed(meta, scan) => {
                if scan.content_hash == c.content_hash {
                    self.record(rel, c.seq, &meta, &scan);
                    return Ok(());
                }
                // Both sides changed it: ours becomes a conflict copy, theirs takes the name.
                let Some(copy) = self.conflict_name(rel) else {
                    tracing::warn!(workspace.id = %self.ws, path = rel.as_str(), "no room for a conflict copy name; keeping the local file");
                    return Ok(());
                };
                if let Err(e) = local::rename(&self.root, rel, &copy) {
                    // Without the copy, downloading would overwrite our edit: leave both as they are.
                    self.local_error(rel, e);
                    return Ok(());
                }
                self.store.remove(rel);
                self.store.add_conflict(&copy);
                self.ui.conflict(&self.name, &copy);
                tracing::warn!(workspace.id = %self.ws, path = rel.as_str(), conflict.copy = %copy, "conflicting edits: kept ours as a copy");
                if let Some(meta) = local::stat(&self.root, &copy) {
                    self.upload(remote, &copy, 0, meta, scan).await?;
                }
                self.download(remote, rel, c).await
            }
        }
    }

    /// The server deleted `rel` at `seq`.
    async fn apply_delete<R: Remote>(&mut self, remote: &mut R, rel: &WsPath, seq: i64) -> PathResult {
        if self.store.get(rel).is_some_and(|e| e.version >= seq) {
            return Ok(());
        }
        match self.local_status(rel).await {
            Local::Same => {
                if let Err(e) = local::remove_file(&self.root, rel) {
                    self.local_error(rel, e);
                    return Ok(());
                }
                self.store.remove(rel);
                self.ui.changed_by_other(&self.name, rel);
            }
            Local::Gone | Local::Absent => {
                self.store.remove(rel);
            }
            Local::Changed(meta, scan) => {
                // Edited here, deleted there: the edit wins and comes back as a new file.
                self.store.remove(rel);
                self.upload(remote, rel, 0, meta, scan).await?;
            }
        }
        Ok(())
    }

    /// Sends local changes among `paths` to the server: moves (a vanished file whose content
    /// appeared elsewhere), then uploads, then deletes.
    async fn push_local<R: Remote>(&mut self, remote: &mut R, paths: BTreeSet<String>) -> PathResult {
        let mut gone: Vec<(WsPath, Entry)> = Vec::new();
        let mut changed: BTreeMap<WsPath, (LocalFile, FileScan)> = BTreeMap::new();
        let wanted: Vec<WsPath> = paths
            .into_iter()
            .filter(|rel| !self.rules.is_ignored(rel, false))
            .filter_map(|rel| WsPath::try_from(rel).ok())
            .collect();
        for (rel, local) in self.local_statuses(wanted).await {
            match local {
                Local::Gone => {
                    if let Some(e) = self.store.get(&rel).cloned() {
                        gone.push((rel, e));
                    }
                }
                Local::Changed(meta, scan) => {
                    changed.insert(rel, (meta, scan));
                }
                Local::Same | Local::Absent => {}
            }
        }
        if changed.is_empty() && gone.is_empty() {
            return Ok(());
        }
        if !self.role.can_write() || self.read_only {
            for rel in gone.iter().map(|(r, _)| r).chain(changed.keys()) {
                if self.store.keep_local(rel) {
                    self.ui.kept_local(&self.name, rel);
                }
            }
            return Ok(());
        }
        for (from, entry) in gone {
            let target = changed
                .iter()
                .find(|(to, (_, scan))| {
                    scan.content_hash == entry.hash && scan.size == entry.size && self.store.get(to).is_none()
                })
                .map(|(to, _)| to.clone());
            match target {
                Some(to) => {
                    let Some((meta, scan)) = changed.remove(&to) else { continue };
                    match remote.move_path(self.ws, &from, &to, entry.version).await {
                        Ok(done) => {
                            tracing::info!(workspace.id = %self.ws, from = %from, to = %to, seq = done.seq, "moved");
                            self.store.remove(&from);
                            self.record(&to, done.version, &meta, &scan);
                            self.store.advance_past_own(done.seq);
                        }
                        Err(RemoteError::Refused { code, message }) => {
                            // Changed meanwhile on the server: send it as a new file; the delete follows the table.
                            tracing::info!(workspace.id = %self.ws, from = %from, to = %to, %code, %message, "move refused; uploading instead");
                            self.upload(remote, &to, 0, meta, scan).await?;
                            self.delete_remote(remote, &from, entry.version).await?;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                None => self.delete_remote(remote, &from, entry.version).await?,
            }
        }
        let mut jobs: Vec<PutJob> = Vec::new();
        for (rel, (meta, scan)) in changed {
            let base = self.store.get(&rel).map(|e| e.version).unwrap_or(0);
            let abs = local::abs_of(&self.root, &rel);
            jobs.push(PutJob { path: rel.into(), base_version: base, abs, meta, scan });
        }
        for batch in jobs.chunks(UPLOAD_BATCH) {
            if self.stopping() {
                return Err(SyncError::Stopped);
            }
            self.upload_batch(remote, batch).await?;
        }
        Ok(())
    }

    /// Uploads a batch of files at once (the connection overlaps them), then settles each answer
    /// in order. Our own seqs are applied in ascending order so `last_seq` can follow them.
    async fn upload_batch<R: Remote>(&mut self, remote: &mut R, batch: &[PutJob]) -> PathResult {
        if !self.role.can_write() || self.read_only {
            for j in batch {
                if self.store.keep_local(&j.path) {
                    self.ui.kept_local(&self.name, &j.path);
                }
            }
            return Ok(());
        }
        for j in batch {
            self.store.mark_pending(&j.path, true);
        }
        let results = remote.put_files(self.ws, batch).await;
        let mut own: Vec<i64> = results.iter().flatten().map(|c| c.seq).collect();
        own.sort_unstable();
        for seq in own {
            self.store.advance_past_own(seq);
        }
        let mut first_error = Ok(());
        for (j, result) in batch.iter().zip(results) {
            // Our own paths (from the disk, checked in `push_local`).
            let Ok(rel) = WsPath::parse(&j.path) else { continue };
            let settled = self.settle_upload(remote, &rel, j.base_version, j.meta, &j.scan, result).await;
            if let Err(e) = settled {
                // A broken connection fails every later answer alike; the next round retries them.
                first_error = first_error.and(Err(e));
            }
        }
        first_error
    }

    async fn delete_remote<R: Remote>(&mut self, remote: &mut R, rel: &WsPath, base: i64) -> PathResult {
        match remote.delete(self.ws, rel, base).await {
            Ok(done) => {
                tracing::info!(workspace.id = %self.ws, path = rel.as_str(), seq = done.seq, "deleted");
                self.store.remove(rel);
                self.store.advance_past_own(done.seq);
                Ok(())
            }
            Err(RemoteError::Refused { code, message }) if code == "not_found" => {
                tracing::debug!(workspace.id = %self.ws, path = rel.as_str(), %message, "already gone on the server");
                self.store.remove(rel);
                Ok(())
            }
            Err(RemoteError::Refused { code, message }) => {
                // Changed on the server since: its change arrives by subscription and is downloaded
                // (a change beats a delete). Keep the entry so that happens.
                tracing::info!(workspace.id = %self.ws, path = rel.as_str(), %code, %message, "delete refused");
                if code == "forbidden" {
                    self.forbidden(rel);
                }
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Uploads `rel`. On a stale base the node keeps our content as a conflict copy; we rename
    /// ours to match and fetch the head of `rel`.
    async fn upload<R: Remote>(
        &mut self,
        remote: &mut R,
        rel: &WsPath,
        base: i64,
        meta: LocalFile,
        scan: FileScan,
    ) -> PathResult {
        if !self.role.can_write() || self.read_only {
            if self.store.keep_local(rel) {
                self.ui.kept_local(&self.name, rel);
            }
            return Ok(());
        }
        self.store.mark_pending(rel, true);
        let abs = local::abs_of(&self.root, rel);
        let result = remote.put_file(self.ws, rel, base, &abs, &meta, &scan).await;
        if let Ok(c) = &result {
            self.store.advance_past_own(c.seq);
        }
        self.settle_upload(remote, rel, base, meta, &scan, result).await
    }

    /// Applies the node's answer to an upload of `rel` (already sent as `meta`/`scan` on `base`).
    async fn settle_upload<R: Remote>(
        &mut self,
        remote: &mut R,
        rel: &WsPath,
        base: i64,
        meta: LocalFile,
        scan: &FileScan,
        result: Result<Committed, RemoteError>,
    ) -> PathResult {
        match result {
            Ok(Committed { version, seq, conflict_path: None, .. }) => {
                tracing::info!(workspace.id = %self.ws, path = rel.as_str(), seq, size = scan.size, "uploaded");
                self.record(rel, version, &meta, scan);
                Ok(())
            }
            Ok(Committed { version, conflict_path: Some(copy), .. }) => {
                // The copy's name is the node's choice: checked before it is joined, and it must be
                // beside the original. A bad one moves nothing; the file stays where it is.
                let copy = match WsPath::parse(&copy) {
                    Ok(p) if p.same_dir(rel) && p != *rel => p,
                    Ok(_) => {
                        tracing::warn!(workspace.id = %self.ws, folder = %self.name, path = rel.as_str(), conflict.copy = ?copy, "the node named a conflict copy outside the file's directory; not moved");
                        self.store.mark_pending(rel, false);
                        return Ok(());
                    }
                    Err(e) => {
                        self.bad_path("a conflict copy", &copy, &e);
                        self.store.mark_pending(rel, false);
                        return Ok(());
                    }
                };
                tracing::warn!(workspace.id = %self.ws, path = rel.as_str(), conflict.copy = %copy, "our edit raced another: kept as a conflict copy");
                let renamed = local::rename(&self.root, rel, &copy);
                self.store.mark_pending(rel, false);
                self.store.add_conflict(&copy);
                self.ui.conflict(&self.name, &copy);
                if renamed.is_ok() {
                    if let Some(m) = local::stat(&self.root, &copy) {
                        self.record(&copy, version, &m, scan);
                    }
                }
                self.store.remove(rel);
                // The change that beat us may already be here (then fetch it now) or still on its way
                // (then it is applied when it arrives: the path is unknown and absent here).
                if let Some(head) = self.remote_heads.get(rel.as_str()).cloned().filter(|h| h.seq > base) {
                    if !head.deleted {
                        self.download(remote, rel, &head).await?;
                    }
                }
                Ok(())
            }
            Err(RemoteError::Refused { code, message }) if code == "forbidden" => {
                tracing::info!(workspace.id = %self.ws, path = rel.as_str(), %message, "upload refused");
                self.forbidden(rel);
                Ok(())
            }
            Err(RemoteError::Refused { code, message }) => {
                // Usually the file changed while it was read; the watcher brings it back.
                tracing::warn!(workspace.id = %self.ws, path = rel.as_str(), %code, %message, "upload refused");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    fn forbidden(&mut self, rel: &WsPath) {
        self.role = Role::Viewer;
        if self.store.keep_local(rel) {
            self.ui.kept_local(&self.name, rel);
        }
    }

    /// Records that `rel` on disk (as `meta`/`scan`) is the server's `version`.
    fn record(&mut self, rel: &WsPath, version: i64, meta: &LocalFile, scan: &FileScan) {
        let chunks = scan.refs();
        index_chunks(&mut self.chunk_index, rel, &chunks);
        self.store.set(
            rel,
            Entry {
                version,
                hash: scan.content_hash,
                size: scan.size,
                mtime_ms: meta.mtime_ms,
                mode: meta.mode,
                chunks,
            },
        );
    }

    fn conflict_name(&self, rel: &WsPath) -> Option<WsPath> {
        (1..100).find_map(|n| {
            let name = filesync_core::path::conflict_copy_name(
                rel,
                &self.ident.username,
                &self.ident.device_name,
                Utc::now(),
                n,
            )?;
            let name = WsPath::try_from(name).ok()?;
            local::stat(&self.root, &name).is_none().then_some(name)
        })
    }

    fn local_error(&self, rel: &WsPath, e: std::io::Error) {
        tracing::warn!(workspace.id = %self.ws, path = rel.as_str(), error = %e, "cannot change the local file");
    }

    /// Fetches version `c.seq` of `rel` into place: chunks we already have locally are copied,
    /// only the others are asked for. The file appears whole or not at all.
    async fn download<R: Remote>(&mut self, remote: &mut R, rel: &WsPath, c: &Change) -> PathResult {
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
    fn take_staged(&mut self, rel: &WsPath, seq: i64) -> Option<Staged> {
        let staged = self.staged.remove(&seq)?;
        (staged.file.dest() == local::abs_of(&self.root, rel)).then_some(staged)
    }

    /// Renames a download fetched ahead (whole, verified, durable) into place. The change was
    /// decided from the local file after that file was written, so the check is that the local
    /// file is still as decided: absent, or the one the state knows.
    fn place(&mut self, rel: &WsPath, c: &Change, staged: Staged) {
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
    fn downloaded(&mut self, rel: &WsPath, c: &Change, facts: &LocalFile, manifest: &Manifest, reused: u64) {
        let scan =
            FileScan { size: manifest.size, content_hash: manifest.content_hash, chunks: offsets(&manifest.chunks) };
        self.record(rel, c.seq, facts, &scan);
        tracing::info!(workspace.id = %self.ws, path = rel.as_str(), seq = c.seq, size = manifest.size, reused_bytes = reused, "downloaded");
        if c.device_id != self.ident.device_id {
            self.ui.changed_by_other(&self.name, rel);
        }
        if rel.starts_with(IGNORE_FILE) {
            self.rules = IgnoreRules::load(&self.root);
        }
    }

    /// A chunk from any local file that had it, if it is still there unchanged.
    fn local_chunk(&self, c: &ChunkRef) -> Option<Vec<u8>> {
        let (path, offset) = self.chunk_index.get(&c.hash)?;
        local::read_chunk_at(&local::abs_of(&self.root, path), *offset, c)
    }
}

/// The manifest of a file that is a single chunk (not larger than [`chunking::MIN_CHUNK`]).
fn one_chunk_manifest(c: &Change) -> Manifest {
    let chunks = match u32::try_from(c.size) {
        Ok(len) if len > 0 => vec![ChunkRef { hash: c.content_hash, len }],
        _ => Vec::new(),
    };
    Manifest { size: c.size, mtime_ms: c.mtime_ms, content_hash: c.content_hash, chunks }
}

/// Puts that a later change of the same list overwrites or deletes: they need not be downloaded.
fn superseded(changes: &[Change]) -> BTreeSet<usize> {
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
fn stage_all(root: &Path, ws: WorkspaceId, gathered: Gathered) -> HashMap<i64, Staged> {
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
fn stage_one(
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

/// What the disk says about one path, decided off the async threads.
enum Judged {
    Local(Local),
    /// Same content as `entry`, newer mtime.
    Touched(LocalFile),
}

/// Compares the file at `rel` with what both sides last agreed on (`entry`): metadata first, the
/// content only when the metadata differs. Blocking.
fn judge(root: &Path, rel: &WsPath, entry: Option<&Entry>) -> Judged {
    let missing = || Judged::Local(if entry.is_some() { Local::Gone } else { Local::Absent });
    let Some(meta) = local::stat(root, rel) else { return missing() };
    if entry.is_some_and(|e| e.size == meta.size && e.mtime_ms == meta.mtime_ms) {
        return Judged::Local(Local::Same);
    }
    let Ok(scan) = local::scan_file(&local::abs_of(root, rel)) else {
        // Vanished or unreadable between stat and read: the next event will tell.
        return missing();
    };
    match entry {
        Some(e) if e.hash == scan.content_hash && e.size == scan.size => Judged::Touched(meta),
        _ => Judged::Local(Local::Changed(meta, scan)),
    }
}

fn index_chunks(index: &mut HashMap<Hash, (WsPath, u64)>, path: &WsPath, chunks: &[ChunkRef]) {
    let mut offset = 0u64;
    for c in chunks {
        index.insert(c.hash, (path.clone(), offset));
        offset += u64::from(c.len);
    }
}

fn offsets(chunks: &[ChunkRef]) -> Vec<chunking::ScannedChunk> {
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

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;

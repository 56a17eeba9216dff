//! Two-way sync of one linked folder over one connection.
//!
//! Every decision is made per path by comparing three things: the file on
//! disk, the state entry (what both sides last agreed on) and the server's
//! newest change. The rules, in one place ([`FolderSync::apply_put`],
//! [`FolderSync::apply_delete`], [`FolderSync::push_local_under`]):
//!
//! | local \ server | unchanged | changed | deleted |
//! |---|---|---|---|
//! | unchanged | — | download | delete locally |
//! | changed | upload | same content: record; else conflict copy of ours, download theirs | upload ours as new |
//! | deleted | delete on server | download (a change beats a delete) | forget |
//!
//! A folder whose `last_seq` the server's history no longer reaches (`history_expired`) is
//! reconciled with the server's current files instead ([`horizon`]).
//!
//! **Invariant:** no branch overwrites or deletes a local file whose content
//! the server has not got (or that is not kept as a conflict copy).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;

use chrono::Utc;

use filesync_core::chunking::{self, ChunkRef, FileScan};
use filesync_core::path::{PathError, WsPath};
use filesync_core::proto::{Change, ChangeOp, EntryKind, ErrorCode, Notice};
use filesync_core::{Role, WorkspaceId};

use super::ignore_rules::{IgnoreRules, IGNORE_FILE};
use super::local::{self, LocalFile};
use super::remote::{Committed, Manifest, PathEdit, PutJob, Refusal, Remote, RemoteError, RemoteEvent};
use super::state::{Entry, StateStore, VanishedSet};
use super::ui::{Bar, Ui};
use super::watch::WatchEvent;

mod fetch;
mod horizon;
mod judge;
mod rules;
mod scan;
mod stream;

pub use scan::{differences, COMPARE_PAGE};

use fetch::{Staged, APPLY_BATCH};
use judge::{Judging, Local};
use rules::UPLOAD_BATCH;

/// How often the whole folder is compared with the state anyway, for what a watcher can miss.
pub const DEFAULT_RESCAN_EVERY: Duration = Duration::from_secs(3600);

/// Changes read per page of a catch-up: two apply batches, so the next page is asked for only
/// when this one's downloads are done; the memory of a catch-up is one page.
pub const CATCH_UP_PAGE: u32 = 2 * APPLY_BATCH as u32;

/// Remote heads remembered (the newest seen first out): enough for the uploads in flight, whose
/// lost races they settle; never the whole tree.
const REMOTE_HEADS: usize = 4096;

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
    /// The node no longer keeps the journal since `last_seq` (`history_expired`): reconcile
    /// with its current files ([`FolderSync::catch_up`] does, on a fresh connection).
    #[error("the server no longer keeps the history since this folder last synced")]
    HistoryExpired,
}

impl From<RemoteError> for SyncError {
    fn from(e: RemoteError) -> SyncError {
        match e {
            e if e.is_auth() => SyncError::SignedOut(format!("signed out: {e}; run `filesync login` to sync again")),
            RemoteError::Refused { code: Refusal::Misconfigured, message } => SyncError::Fatal(message),
            RemoteError::Connection(m) => SyncError::Connection(m),
            RemoteError::NoWorkspace(_) => SyncError::AccessEnded(NO_LONGER_MEMBER),
            RemoteError::Refused { code: Refusal::Node(ErrorCode::HistoryExpired), .. } => SyncError::HistoryExpired,
            RemoteError::Refused { code, message } => SyncError::Connection(format!("{message} ({code})")),
        }
    }
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
    /// The newest change seen per path, to fetch the head after our upload lost a race.
    remote_heads: RemoteHeads,
    /// How often a full rescan runs during live sync.
    pub rescan_every: Duration,
    /// Download only: never upload, delete or move on the server (`workspace download`).
    pub read_only: bool,
    /// Changes asked for per page of a catch-up ([`FolderSync::catch_up`]).
    pub catch_up_page: u32,
    /// Known paths stat'ed per step of a comparison of the folder with the state.
    pub compare_page: usize,
    /// Whether [`FolderSync::catch_up`] leaves the comparison of the folder with the state to run
    /// in the background of [`FolderSync::live`] (a running agent) instead of finishing it first
    /// (`sync --once`, tests).
    pub compare_in_background: bool,
    /// The comparison of the folder with the state under way, if any.
    comparison: Option<scan::Comparison>,
    /// Live events handled (changes from the node, watcher reports): what the comparison judged
    /// ahead is judged again if any came in between.
    live_changes: u64,
    /// Temp files left by an earlier run were removed.
    temps_swept: bool,
    /// Set to `true` when the agent is asked to stop; long loops check it between files.
    pub stop: Option<tokio::sync::watch::Receiver<bool>>,
    /// Downloads of the batch being applied, fetched ahead and durable, by seq. Whatever is not
    /// placed when the batch ends is dropped, which removes its temp file.
    staged: HashMap<i64, Staged>,
    /// Large uploads announced by the node and fetched before their commit, by content hash.
    streams: HashMap<chunking::Hash, stream::Stream>,
    /// Taken by a stream's task for each window it fetches and writes: one at a time.
    stream_turn: std::sync::Arc<tokio::sync::Semaphore>,
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
        FolderSync {
            ws,
            name,
            root,
            store,
            rules,
            role,
            ident,
            ui,
            remote_heads: RemoteHeads::default(),
            rescan_every: DEFAULT_RESCAN_EVERY,
            read_only: false,
            catch_up_page: CATCH_UP_PAGE,
            compare_page: COMPARE_PAGE,
            compare_in_background: false,
            comparison: None,
            live_changes: 0,
            temps_swept: false,
            stop: None,
            staged: HashMap::new(),
            streams: HashMap::new(),
            stream_turn: std::sync::Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }

    fn stopping(&self) -> bool {
        self.stop.as_ref().is_some_and(|s| *s.borrow())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Catch up from the last seq, then push local changes made meanwhile. Returns with the folder
    /// reconciled, or, with [`FolderSync::compare_in_background`], with the comparison of the
    /// folder with the state started for [`FolderSync::live`] to carry on between live changes.
    ///
    /// The journal is read [`FolderSync::catch_up_page`] changes at a time ([`Remote::changes`])
    /// and each page is applied (and `last_seq` saved after each batch of it) before the next is
    /// asked for: an agent that was away for a million changes holds one page, not a million.
    /// Then it subscribes from where the pages ended; what was committed meanwhile arrives as the
    /// subscription's own catch-up and is applied a batch at a time as it comes.
    pub async fn catch_up<R: Remote>(&mut self, remote: &mut R) -> Result<(), SyncError> {
        if !self.temps_swept {
            // Only an earlier run can have left temp files (this one's are removed when dropped):
            // the folder is walked for them once, not at every reconnect.
            let removed = local::remove_stale_temps(&self.root);
            if removed > 0 {
                tracing::info!(workspace.id = %self.ws, count = removed, "removed partial downloads left by an earlier run");
            }
            self.temps_swept = true;
        }
        let since = self.store.last_seq();
        let paged = match self.fill(remote, None, true).await {
            // The journal no longer reaches back to `last_seq`: the current files instead.
            Err(SyncError::HistoryExpired) => self.reconcile_with_heads(remote).await?,
            other => other?,
        };
        let from = self.store.last_seq();
        // Should the horizon pass `from` meanwhile, the error ends this connection (and what the
        // subscription queued before it) and the next one reconciles again.
        let head = remote.subscribe(self.ws, from).await?;
        let mut changes = Vec::new();
        let mut late = 0usize;
        // The journal is gap-free: catch-up is done when the change numbered `head` is in.
        let mut seen = from;
        while seen < head {
            match remote.next_event().await {
                RemoteEvent::Change(c) if c.workspace_id == self.ws => {
                    seen = seen.max(c.seq);
                    changes.push(c);
                    if changes.len() >= APPLY_BATCH {
                        late += changes.len();
                        self.apply_changes(remote, std::mem::take(&mut changes), false).await?;
                    }
                }
                RemoteEvent::Missed { workspace_id, up_to_seq } if workspace_id == self.ws => {
                    // What arrived before the gap first, then the gap, read by pages.
                    late += changes.len();
                    self.apply_changes(remote, std::mem::take(&mut changes), false).await?;
                    self.fill(remote, Some(up_to_seq), false).await?;
                    seen = seen.max(up_to_seq);
                }
                RemoteEvent::Change(_) | RemoteEvent::Missed { .. } => {}
                RemoteEvent::Notice(n) => self.on_notice(n)?,
                RemoteEvent::Goodbye { reason } => return Err(SyncError::Goodbye(reason)),
                RemoteEvent::Closed { reason } => return Err(SyncError::Connection(reason)),
            }
        }
        late += changes.len();
        tracing::info!(workspace.id = %self.ws, since, head, paged, subscribed = late, "caught up");
        self.apply_changes(remote, changes, false).await?;
        self.store.advance(head);
        self.store.save()?;
        if !self.read_only {
            self.begin_comparison();
            if !self.compare_in_background {
                self.finish_comparison(remote).await?;
            }
        }
        self.store.save()?;
        Ok(())
    }

    /// Reads the journal after `last_seq` a page at a time ([`Remote::changes`]) and applies each
    /// page before asking for the next, up to `up_to` (`None`: the head). `last_seq` moves to the
    /// end of each page as it is applied (and is saved with it). Returns the changes read.
    pub(super) async fn fill<R: Remote>(
        &mut self,
        remote: &mut R,
        up_to: Option<i64>,
        show: bool,
    ) -> Result<usize, SyncError> {
        let since = self.store.last_seq();
        let mut bar: Option<Bar> = None;
        let mut read = 0usize;
        while up_to.is_none_or(|u| self.store.last_seq() < u) {
            let after = self.store.last_seq();
            let (mut changes, head) = remote.changes(self.ws, after, self.catch_up_page).await?;
            if let Some(u) = up_to {
                // What follows `up_to` is queued behind it already.
                changes.retain(|c| c.seq <= u);
            }
            let Some(last) = changes.last().map(|c| c.seq) else { break };
            let bar = bar.get_or_insert_with(|| {
                tracing::info!(workspace.id = %self.ws, since, head, "catching up by pages");
                let total = if show { u64::try_from(up_to.unwrap_or(head) - since).unwrap_or(0) } else { 0 };
                self.ui.steps(total, &format!("{}: catching up", self.name))
            });
            read += changes.len();
            self.apply_counted(remote, changes, bar).await?;
            // Every change of the page is applied: `last_seq` is at its end.
            self.store.advance(last);
            self.store.save()?;
            if up_to.is_none() && last >= head {
                break;
            }
        }
        if let Some(b) = &bar {
            b.finish();
        }
        Ok(read)
    }

    /// Live sync until shutdown or a connection problem.
    pub async fn live<R: Remote>(
        &mut self,
        remote: &mut R,
        watch: &mut tokio::sync::mpsc::Receiver<WatchEvent>,
        shutdown: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<Ended, SyncError> {
        let mut rescan_tick =
            tokio::time::interval_at(tokio::time::Instant::now() + self.rescan_every, self.rescan_every);
        rescan_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => {
                    self.store.save()?;
                    return Ok(Ended::Stopped);
                }
                ev = remote.next_event() => {
                    self.live_changes += 1;
                    // Changes that arrived together are applied together (their downloads overlap);
                    // the first other event waits for them, so the order holds.
                    let (changes, after) = self.take_changes(remote, ev);
                    if !changes.is_empty() {
                        self.apply_changes(remote, changes, false).await?;
                        self.store.save()?;
                    }
                    match after {
                        Some(RemoteEvent::Missed { workspace_id, up_to_seq }) if workspace_id == self.ws => {
                            self.fill(remote, Some(up_to_seq), false).await?;
                        }
                        Some(RemoteEvent::Notice(n)) if Self::is_upload_notice(&n) => self.on_upload(remote, n).await?,
                        Some(ev) => self.on_event(ev)?,
                        None => {}
                    }
                }
                w = watch.recv() => {
                    self.live_changes += 1;
                    match w {
                        Some(WatchEvent::Paths(paths)) => {
                            self.push_watched(remote, &paths).await?;
                            self.store.save()?;
                        }
                        Some(WatchEvent::Rescan) => {
                            // The watcher said why (and what to raise) when it asked. Events were
                            // lost, maybe in what a comparison under way had passed: from the start.
                            self.begin_comparison();
                        }
                        None => return Err(SyncError::Fatal("the folder watcher stopped".into())),
                    }
                }
                _ = rescan_tick.tick() => {
                    if !self.comparing() {
                        tracing::debug!(workspace.id = %self.ws, "periodic rescan");
                        self.begin_comparison();
                    }
                }
                // Lowest priority: a step of the comparison when nothing live is waiting.
                () = std::future::ready(()), if self.comparison.is_some() => {
                    self.compare_step(remote).await?;
                    self.store.save()?;
                }
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
            RemoteEvent::Change(_) | RemoteEvent::Missed { .. } => Ok(()),
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

    /// The workspace paths a batch of watcher events may have changed: the paths themselves, and
    /// the directories, whose files are walked when they are pushed ([`FolderSync::push_local_under`]),
    /// not listed here. What vanished is set aside in `gone` (in the state, not in memory): every
    /// known file under a path that is not a directory (one deleted or moved away), and, under a
    /// directory that is there, the known files gone from it (stat'ed a page at a time).
    async fn expand_watched(&mut self, paths: &[PathBuf], gone: VanishedSet) -> (BTreeSet<String>, Vec<PathBuf>) {
        let mut out = BTreeSet::new();
        let mut dirs = Vec::new();
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
                        dirs.push(abs.clone());
                    }
                    self.set_aside_gone_under(&rel, gone).await;
                }
                _ => {
                    // Nothing can be under a path that is not a directory.
                    self.store.add_vanished_under(gone, &rel);
                    out.insert(rel);
                }
            }
        }
        // A directory inside another one of the batch is walked with it.
        dirs.sort();
        dirs.dedup_by(|inner, outer| inner.starts_with(outer));
        (out, dirs)
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

    fn forbidden(&mut self, rel: &WsPath) {
        self.role = Role::Viewer;
        if self.store.keep_local(rel) {
            self.ui.kept_local(&self.name, rel);
        }
    }

    /// Records that `rel` on disk (as `meta`/`scan`) is the server's `version`.
    fn record(&mut self, rel: &WsPath, version: i64, meta: &LocalFile, scan: &FileScan) {
        let entry =
            Entry { version, hash: scan.content_hash, size: scan.size, mtime_ms: meta.mtime_ms, mode: meta.mode };
        self.store.set(rel, &entry, &scan.refs());
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
}

/// The newest change seen per path, for the most recent [`REMOTE_HEADS`] paths.
#[derive(Debug, Default)]
struct RemoteHeads {
    heads: HashMap<String, Change>,
    order: VecDeque<String>,
}

impl RemoteHeads {
    fn insert(&mut self, c: Change) {
        if !self.heads.contains_key(&c.path) {
            self.order.push_back(c.path.clone());
        }
        self.heads.insert(c.path.clone(), c);
        while self.heads.len() > REMOTE_HEADS {
            match self.order.pop_front() {
                Some(old) => {
                    self.heads.remove(&old);
                }
                None => break,
            }
        }
    }

    fn remove(&mut self, path: &str) {
        if self.heads.remove(path).is_some() {
            self.order.retain(|p| p != path);
        }
    }

    fn get(&self, path: &str) -> Option<&Change> {
        self.heads.get(path)
    }
}

#[cfg(test)]
mod tests;

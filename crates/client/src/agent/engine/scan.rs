//! Comparing the whole folder with the state: at the start of every connection, when the watcher
//! lost events, and every [`FolderSync::rescan_every`]. The state is walked a page at a time and
//! each page is stat'ed on several threads; only a path whose file is gone or whose size or mtime
//! moved goes on to be judged (and hashed). Then the disk is walked for files the state does not
//! know. So a restart on an in-sync tree reads no file, and neither the state nor the tree is ever
//! held whole: what is held is what differs.
//!
//! In live sync the comparison runs in the background: [`FolderSync::live`] does one step of it
//! (one page stat'ed, or one group of changed files sent) whenever no watcher event or change from
//! the node is waiting, so a restart applies and uploads live changes at once instead of after the
//! whole tree was compared. Every step only names paths; what is sent is decided when the path is
//! judged, against the disk and the state of that moment, by the same [`FolderSync::push_local_under`] a
//! watcher event goes through: a file edited while the comparison runs is uploaded once (whichever
//! of the two judges it first records it; the other finds it in sync), and a step never sends a
//! view older than its own judging.

use super::*;

/// Known paths compared per page.
pub const COMPARE_PAGE: usize = 4096;

/// Batches of listed paths (1,024 each) waiting while the state's pages are compared.
const WALK_AHEAD: usize = 64;

/// Threads that stat one page. Stat-ing is waiting on the file system more than computing: more
/// threads than cores pay off when the metadata is not cached.
const STAT_THREADS: usize = 8;

/// A comparison of the folder with the state, done a step at a time ([`FolderSync::compare_step`]).
pub(super) struct Comparison {
    started: std::time::Instant,
    /// The last known path compared; `None` before the first page.
    after: Option<String>,
    /// Every known path was stat'ed.
    known_done: bool,
    /// The folder's listing, on a thread of its own from the start, a bounded number of batches
    /// ahead of the steps that look its paths up (after the known pages).
    walk: tokio::sync::mpsc::Receiver<Vec<String>>,
    /// Files present on disk whose size or mtime moved, and new ones: sent an upload batch at a
    /// time (its `PutFiles` pipelined), so live changes wait at most one batch. A new one is
    /// listed after every known file was stat'ed, so it is matched against everything that
    /// vanished (`gone`); one that vanishes meanwhile is the watcher's to report.
    changed: VecDeque<String>,
    /// The next group of `changed`, judged while the one before is sent, with the count of live
    /// changes when it was started ([`FolderSync::live_changes`]).
    ahead: Option<(u64, Vec<WsPath>, Judging)>,
    /// Known files gone from disk, set aside in the state: where a new file may have been moved
    /// from while the agent was off; what is left of them at the end is deleted.
    gone: VanishedSet,
    known: usize,
    on_disk: usize,
    to_check: usize,
    stat_ms: u128,
}

impl Comparison {
    fn new(root: &Path, rules: &IgnoreRules, gone: VanishedSet) -> Comparison {
        let (tx, walk) = tokio::sync::mpsc::channel::<Vec<String>>(WALK_AHEAD);
        let (root, rules) = (root.to_path_buf(), rules.clone());
        // Ends by itself when the comparison is dropped (the receiver with it).
        tokio::task::spawn_blocking(move || local::walk_paths(&root, &rules, |b| tx.blocking_send(b).is_ok()));
        Comparison {
            started: std::time::Instant::now(),
            after: None,
            known_done: false,
            walk,
            changed: VecDeque::new(),
            ahead: None,
            gone,
            known: 0,
            on_disk: 0,
            to_check: 0,
            stat_ms: 0,
        }
    }
}

impl FolderSync {
    /// Compares the whole folder with the state and sends every local change the state does not
    /// know of yet ([`FolderSync::push_local_under`]); returns when done.
    #[cfg(test)]
    pub(super) async fn rescan<R: Remote>(&mut self, remote: &mut R) -> PathResult {
        self.begin_comparison();
        self.finish_comparison(remote).await
    }

    /// Starts comparing the folder with the state from the beginning (dropping one under way:
    /// what it had not reached is compared again, what it had may have been missed since).
    pub(super) fn begin_comparison(&mut self) {
        if self.comparison.is_some() {
            tracing::debug!(workspace.id = %self.ws, "comparison started again from the beginning");
        }
        // No push is under way between two steps: every set of vanished files left is one that
        // failed half-way (or the comparison's being replaced).
        self.store.clear_vanished();
        let gone = self.store.new_vanished();
        self.comparison = Some(Comparison::new(&self.root, &self.rules, gone));
    }

    /// Whether a comparison is under way.
    pub fn comparing(&self) -> bool {
        self.comparison.is_some()
    }

    /// The next group of changed files, being judged: the one judged ahead if nothing else
    /// changed the state since it was started (else it is judged again), or the next of `changed`.
    fn next_changed(&mut self, c: &mut Comparison) -> Option<Judging> {
        match c.ahead.take() {
            Some((at, _, judged)) if at == self.live_changes => Some(judged),
            Some((_, group, _)) => Some(self.judge_ahead(group)),
            None if c.changed.is_empty() => None,
            None => {
                let group = self.take_group(&mut c.changed);
                Some(self.judge_ahead(group))
            }
        }
    }

    /// Up to an upload batch of `changed`, the ignored left out.
    fn take_group(&self, changed: &mut VecDeque<String>) -> Vec<WsPath> {
        let n = changed.len().min(UPLOAD_BATCH);
        changed
            .drain(..n)
            .filter(|rel| !self.rules.is_ignored(rel, false))
            .filter_map(|rel| WsPath::try_from(rel).ok())
            .collect()
    }

    /// Sets the known files under the directory `dir` (there on disk) that are gone from it aside
    /// in `gone`, found a page of the state at a time.
    pub(super) async fn set_aside_gone_under(&mut self, dir: &str, gone: VanishedSet) {
        let mut after = None::<String>;
        loop {
            let page = self.store.under_page(dir, after.as_deref(), COMPARE_PAGE);
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            let root = self.root.clone();
            let moved = tokio::task::spawn_blocking(move || moved_since(&root, &page)).await.unwrap_or_default();
            for (path, _) in moved.into_iter().filter(|(_, g)| *g) {
                self.store.add_vanished(gone, &path);
            }
        }
    }

    /// Runs the comparison under way to its end.
    pub(super) async fn finish_comparison<R: Remote>(&mut self, remote: &mut R) -> PathResult {
        while self.comparison.is_some() {
            self.compare_step(remote).await?;
        }
        Ok(())
    }

    /// One step of the comparison under way: a group of changed files sent, or one page of the
    /// state stat'ed, or one batch of the folder's listing looked up, or (at the end) the vanished
    /// files that were not found moved deleted. The comparison is dropped when it is done (and on an error: the next
    /// connection starts a new one).
    pub(super) async fn compare_step<R: Remote>(&mut self, remote: &mut R) -> PathResult {
        let Some(mut c) = self.comparison.take() else { return Ok(()) };
        if let Some(judged) = self.next_changed(&mut c) {
            // The group after this one is judged while this one is sent.
            if !c.changed.is_empty() {
                let group = self.take_group(&mut c.changed);
                c.ahead = Some((self.live_changes, group.clone(), self.judge_ahead(group)));
            }
            let gone = c.gone;
            self.comparison = Some(c);
            let writer = self.role.can_write() && !self.read_only;
            return self.push_part(remote, judged, gone, writer).await;
        }
        if !c.known_done {
            let page = self.store.page(c.after.as_deref(), self.compare_page.max(1));
            match page.last() {
                None => {
                    c.known_done = true;
                    c.stat_ms = c.started.elapsed().as_millis();
                }
                Some((last, _)) => {
                    c.after = Some(last.clone());
                    c.known += page.len();
                    let root = self.root.clone();
                    let moved = tokio::task::spawn_blocking(move || moved_since(&root, &page)).await;
                    let moved = moved.map_err(|e| SyncError::Fatal(format!("rescan failed: {e}")))?;
                    c.to_check += moved.len();
                    for (path, gone) in moved {
                        if gone {
                            self.store.add_vanished(c.gone, &path);
                        } else {
                            c.changed.push_back(path);
                        }
                    }
                }
            }
            self.comparison = Some(c);
            return Ok(());
        }
        if let Some(batch) = c.walk.recv().await {
            c.on_disk += batch.len();
            let unknown = self.store.unknown(batch);
            c.to_check += unknown.len();
            // Every vanished file is set aside by now: a new file goes up with the next steps,
            // as a move if its content vanished.
            c.changed.extend(unknown);
            self.comparison = Some(c);
            return Ok(());
        }
        tracing::info!(
            workspace.id = %self.ws,
            known = c.known,
            on_disk = c.on_disk,
            to_check = c.to_check,
            stat_ms = c.stat_ms,
            total_ms = c.started.elapsed().as_millis(),
            "folder compared with the state"
        );
        let writer = self.role.can_write() && !self.read_only;
        let deleted = self.delete_vanished(remote, c.gone, writer).await;
        self.store.drop_vanished(c.gone);
        deleted
    }
}

/// Every path where the folder and the state differ, compared as [`FolderSync::rescan`] does: the
/// known paths a page at a time (those whose file is gone or whose size or mtime moved), then the
/// files on disk the state does not know, a listing batch at a time. Blocking (for `status`); it
/// holds one page, never the whole state or tree, and reads no file content.
pub fn differences(store: &StateStore, root: &Path, rules: &IgnoreRules, mut each: impl FnMut(String)) {
    let mut after = None::<String>;
    loop {
        let page = store.page(after.as_deref(), COMPARE_PAGE);
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        moved_since(root, &page).into_iter().for_each(|(p, _)| each(p));
    }
    local::walk_paths(root, rules, |batch| {
        store.unknown(batch).into_iter().for_each(&mut each);
        true
    });
}

/// The paths of `page` whose file is gone (`true`) or whose size or mtime moved since it was
/// recorded (`false`). Blocking; stats on [`STAT_THREADS`] threads.
fn moved_since(root: &Path, page: &[(String, Entry)]) -> Vec<(String, bool)> {
    // One handle on the folder for the page (a folder that cannot be opened has every file gone).
    let folder = local::Folder::open(root).ok();
    let folder = folder.as_ref();
    let per_thread = page.len().div_ceil(STAT_THREADS).max(1);
    std::thread::scope(|s| {
        let parts: Vec<_> = page
            .chunks(per_thread)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .filter_map(|(p, e)| match now_on_disk(folder, p) {
                            Some(m) if m.size == e.size && m.mtime_ms == e.mtime_ms => None,
                            Some(_) => Some((p.clone(), false)),
                            None => Some((p.clone(), true)),
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    })
}

fn now_on_disk(folder: Option<&local::Folder>, path: &str) -> Option<LocalFile> {
    let (Some(folder), Ok(rel)) = (folder, WsPath::parse(path)) else { return None };
    folder.stat(&rel)
}

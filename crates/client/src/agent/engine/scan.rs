//! Comparing the whole folder with the state: at the start of every connection, when the watcher
//! lost events, and every [`FolderSync::rescan_every`]. The state is walked a page at a time and
//! each page is stat'ed on several threads; only a path whose file is gone or whose size or mtime
//! moved goes on to be judged (and hashed). Then the disk is walked for files the state does not
//! know. So a restart on an in-sync tree reads no file, and neither the state nor the tree is ever
//! held whole: what is held is what differs.

use super::*;

/// Known paths compared per page.
const PAGE: usize = 4096;

/// Batches of listed paths (1,024 each) waiting while the state's pages are compared.
const WALK_AHEAD: usize = 64;

/// Threads that stat one page. Stat-ing is waiting on the file system more than computing: more
/// threads than cores pay off when the metadata is not cached.
const STAT_THREADS: usize = 8;

impl FolderSync {
    /// Sends every local change the state does not know of yet ([`FolderSync::push_local`]).
    pub(super) async fn rescan<R: Remote>(&mut self, remote: &mut R) -> PathResult {
        let started = std::time::Instant::now();
        let mut suspects: BTreeSet<String> = BTreeSet::new();
        // The folder is listed meanwhile on a thread of its own, a bounded number of batches ahead.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<String>>(WALK_AHEAD);
        let (root, rules) = (self.root.clone(), self.rules.clone());
        let walk =
            tokio::task::spawn_blocking(move || local::walk_paths(&root, &rules, |b| tx.blocking_send(b).is_ok()));
        let (mut known, mut after) = (0usize, None::<String>);
        loop {
            let page = self.store.page(after.as_deref(), PAGE);
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            known += page.len();
            let root = self.root.clone();
            let moved = tokio::task::spawn_blocking(move || moved_since(&root, &page)).await;
            suspects.extend(moved.map_err(|e| SyncError::Fatal(format!("rescan failed: {e}")))?);
        }
        let stat_ms = started.elapsed().as_millis();
        let mut on_disk = 0usize;
        while let Some(batch) = rx.recv().await {
            on_disk += batch.len();
            suspects.extend(self.store.unknown(batch));
        }
        let _ = walk.await;
        tracing::info!(
            workspace.id = %self.ws,
            known,
            on_disk,
            to_check = suspects.len(),
            stat_ms,
            total_ms = started.elapsed().as_millis(),
            "folder compared with the state"
        );
        self.push_local(remote, suspects).await
    }
}

/// Every path where the folder and the state differ, compared as [`FolderSync::rescan`] does: the
/// known paths a page at a time (those whose file is gone or whose size or mtime moved), then the
/// files on disk the state does not know, a listing batch at a time. Blocking (for `status`); it
/// holds one page, never the whole state or tree, and reads no file content.
pub fn differences(store: &StateStore, root: &Path, rules: &IgnoreRules, mut each: impl FnMut(String)) {
    let mut after = None::<String>;
    loop {
        let page = store.page(after.as_deref(), PAGE);
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        moved_since(root, &page).into_iter().for_each(&mut each);
    }
    local::walk_paths(root, rules, |batch| {
        store.unknown(batch).into_iter().for_each(&mut each);
        true
    });
}

/// The paths of `page` whose file is gone or whose size or mtime moved since it was recorded.
/// Blocking; stats on [`STAT_THREADS`] threads.
fn moved_since(root: &Path, page: &[(String, Entry)]) -> Vec<String> {
    // One handle on the folder for the page (a folder that cannot be opened has every file gone).
    let folder = local::Folder::open(root).ok();
    let folder = folder.as_ref();
    let per_thread = page.len().div_ceil(STAT_THREADS).max(1);
    std::thread::scope(|s| {
        let parts: Vec<_> = page
            .chunks(per_thread)
            .map(|part| {
                s.spawn(move || {
                    part.iter().filter(|(p, e)| !unchanged(folder, p, e)).map(|(p, _)| p.clone()).collect::<Vec<_>>()
                })
            })
            .collect();
        parts.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    })
}

fn unchanged(folder: Option<&local::Folder>, path: &str, e: &Entry) -> bool {
    let (Some(folder), Ok(rel)) = (folder, WsPath::parse(path)) else { return false };
    folder.stat(&rel).is_some_and(|m| m.size == e.size && m.mtime_ms == e.mtime_ms)
}

//! A recursive watcher on a linked folder whose events are debounced per
//! path: a path is reported once it has been quiet for the configured period,
//! so an editor's burst of writes becomes one upload. A file its writer has
//! closed (inotify close-write) is complete, and a removed one is gone: both
//! are reported after only [`CLOSED_SETTLE`], unless the path is written (or
//! created again) meanwhile.
//!
//! The watcher only says *where* to look; what changed is always decided by
//! comparing the file with the state, so lost or duplicated events cost a
//! little work, never a wrong sync. When the OS drops events (queue overflow)
//! the folder is rescanned.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// What the debouncer reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// These paths (absolute) have been quiet for the debounce period.
    Paths(Vec<PathBuf>),
    /// Events were lost: compare the whole folder.
    Rescan,
}

enum Raw {
    Path(PathBuf),
    /// A writer closed the file, or it was removed: nothing more is coming, report it almost at once.
    Closed(PathBuf),
    Rescan,
}

/// How the debouncer treats an event: `None` ignores it, `Some(true)` means the path is settled
/// (closed after writing, or removed), `Some(false)` that more may follow.
fn settled(kind: &EventKind) -> Option<bool> {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) | EventKind::Remove(_) => Some(true),
        // Reads (ours included: hashing a file opens it) change nothing.
        EventKind::Access(_) => None,
        _ => Some(false),
    }
}

/// How long a closed file waits for the events that come with it (a rename, another writer)
/// before it is reported. A file written again meanwhile waits the full quiet period instead.
const CLOSED_SETTLE: Duration = Duration::from_millis(2);

/// A live watch; dropping it stops the watcher and the debouncer.
pub struct FolderWatcher {
    _watcher: RecommendedWatcher,
    pub events: mpsc::Receiver<WatchEvent>,
}

impl std::fmt::Debug for FolderWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FolderWatcher").finish_non_exhaustive()
    }
}

/// Starts watching `root` recursively. Must be called inside a tokio runtime.
pub fn watch(root: &Path, quiet: Duration) -> notify::Result<FolderWatcher> {
    let (raw_tx, raw_rx) = mpsc::unbounded_channel::<Raw>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
        Ok(ev) => {
            if ev.need_rescan() {
                let _ = raw_tx.send(Raw::Rescan);
                return;
            }
            let Some(closed) = settled(&ev.kind) else { return };
            for p in ev.paths {
                let _ = raw_tx.send(if closed { Raw::Closed(p) } else { Raw::Path(p) });
            }
        }
        Err(_) => {
            let _ = raw_tx.send(Raw::Rescan);
        }
    })?;
    watcher.watch(root, RecursiveMode::Recursive)?;
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(debounce(raw_rx, tx, quiet));
    Ok(FolderWatcher { _watcher: watcher, events: rx })
}

async fn debounce(mut raw: mpsc::UnboundedReceiver<Raw>, out: mpsc::Sender<WatchEvent>, quiet: Duration) {
    let mut pending: HashMap<PathBuf, Instant> = HashMap::new();
    let mut rescan_at: Option<Instant> = None;
    loop {
        let next = pending.values().copied().chain(rescan_at).min();
        tokio::select! {
            msg = raw.recv() => match msg {
                None => return,
                Some(Raw::Path(p)) => {
                    pending.insert(p, Instant::now() + quiet);
                }
                Some(Raw::Closed(p)) => {
                    let soon = Instant::now() + CLOSED_SETTLE.min(quiet);
                    let due = pending.entry(p).or_insert(soon);
                    *due = (*due).min(soon);
                }
                Some(Raw::Rescan) => rescan_at = Some(Instant::now() + quiet),
            },
            () = sleep_until(next) => {
                let now = Instant::now();
                if rescan_at.is_some_and(|t| t <= now) {
                    rescan_at = None;
                    pending.clear();
                    if out.send(WatchEvent::Rescan).await.is_err() {
                        return;
                    }
                    continue;
                }
                let mut ready: Vec<PathBuf> = Vec::new();
                pending.retain(|p, due| {
                    let is_due = *due <= now;
                    if is_due {
                        ready.push(p.clone());
                    }
                    !is_due
                });
                if !ready.is_empty() {
                    ready.sort();
                    if out.send(WatchEvent::Paths(ready)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A debouncer fed by hand: (what the watcher would send, what the engine receives).
    fn debouncer(quiet: Duration) -> (mpsc::UnboundedSender<Raw>, mpsc::Receiver<WatchEvent>) {
        let (raw_tx, raw_rx) = mpsc::unbounded_channel();
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(debounce(raw_rx, tx, quiet));
        (raw_tx, rx)
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_on_one_path_is_reported_once_after_the_quiet_period() {
        let (raw_tx, mut rx) = debouncer(Duration::from_millis(50));
        let start = Instant::now();
        for _ in 0..5 {
            raw_tx.send(Raw::Path(PathBuf::from("/r/a"))).unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        raw_tx.send(Raw::Path(PathBuf::from("/r/b"))).unwrap();
        // Virtual time: the last write to a came at 80 ms, so it is due at 130 ms, once.
        assert_eq!(rx.recv().await.unwrap(), WatchEvent::Paths(vec![PathBuf::from("/r/a")]));
        assert_eq!(start.elapsed(), Duration::from_millis(130));
        assert_eq!(rx.recv().await.unwrap(), WatchEvent::Paths(vec![PathBuf::from("/r/b")]));
        assert_eq!(start.elapsed(), Duration::from_millis(150));
        raw_tx.send(Raw::Rescan).unwrap();
        assert_eq!(rx.recv().await.unwrap(), WatchEvent::Rescan);
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_file_is_reported_without_waiting_out_the_quiet_period() {
        let (raw_tx, mut rx) = debouncer(Duration::from_millis(50));
        let start = Instant::now();
        // A writer's modify events, then its close: one report, right after the close.
        for _ in 0..3 {
            raw_tx.send(Raw::Path(PathBuf::from("/r/a"))).unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        raw_tx.send(Raw::Closed(PathBuf::from("/r/a"))).unwrap();
        assert_eq!(rx.recv().await.unwrap(), WatchEvent::Paths(vec![PathBuf::from("/r/a")]));
        assert_eq!(start.elapsed(), Duration::from_millis(30) + CLOSED_SETTLE);
        // Opened and written again after the close: back to the quiet period.
        raw_tx.send(Raw::Closed(PathBuf::from("/r/b"))).unwrap();
        raw_tx.send(Raw::Path(PathBuf::from("/r/b"))).unwrap();
        let before = Instant::now();
        assert_eq!(rx.recv().await.unwrap(), WatchEvent::Paths(vec![PathBuf::from("/r/b")]));
        assert_eq!(before.elapsed(), Duration::from_millis(50));
        assert!(rx.try_recv().is_err(), "reported once");
    }

    #[test]
    fn closes_and_removals_settle_a_path_and_reads_are_ignored() {
        use notify::event::{CreateKind, ModifyKind, RemoveKind};
        assert_eq!(settled(&EventKind::Access(AccessKind::Close(AccessMode::Write))), Some(true));
        assert_eq!(settled(&EventKind::Remove(RemoveKind::File)), Some(true));
        assert_eq!(settled(&EventKind::Remove(RemoveKind::Folder)), Some(true));
        assert_eq!(settled(&EventKind::Create(CreateKind::File)), Some(false));
        assert_eq!(settled(&EventKind::Modify(ModifyKind::Any)), Some(false));
        assert_eq!(settled(&EventKind::Access(AccessKind::Close(AccessMode::Read))), None);
    }

    /// A deletion is final: it is reported long before a (here: one minute) quiet period ends.
    #[tokio::test]
    async fn a_real_delete_does_not_wait_out_the_quiet_period() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::write(root.join("old.txt"), b"x").unwrap();
        let mut w = watch(&root, Duration::from_secs(60)).unwrap();
        std::fs::remove_file(root.join("old.txt")).unwrap();
        let ev = tokio::time::timeout(Duration::from_secs(20), w.events.recv()).await;
        let ev = ev.expect("the delete was held for the quiet period").unwrap();
        assert_eq!(ev, WatchEvent::Paths(vec![root.join("old.txt")]));
    }

    #[tokio::test]
    async fn a_real_write_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let mut w = watch(&root, Duration::from_millis(20)).unwrap();
        std::fs::write(root.join("new.txt"), b"x").unwrap();
        let ev = tokio::time::timeout(Duration::from_secs(10), w.events.recv()).await.unwrap().unwrap();
        match ev {
            WatchEvent::Paths(paths) => assert!(paths.contains(&root.join("new.txt")), "{paths:?}"),
            WatchEvent::Rescan => {}
        }
    }
}

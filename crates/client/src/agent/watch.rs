//! A recursive watcher on a linked folder whose events are debounced per
//! path: a path is reported once it has been quiet for the configured period,
//! so an editor's burst of writes becomes one upload. A file its writer has
//! closed (inotify close-write) is complete, and a removed one is gone: both
//! are reported after only [`CLOSED_SETTLE`], unless the path is written (or
//! created again) meanwhile.
//!
//! The watcher only says *where* to look; what changed is always decided by
//! comparing the file with the state, so lost or duplicated events cost a
//! little work, never a wrong sync. When the OS drops events (an inotify
//! queue overflow) or a directory cannot be watched (the limit of inotify
//! watches is reached), the folder is rescanned and the user is told, in one
//! line, which system limit to raise. The engine also rescans periodically
//! for whatever a watcher can miss.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
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

/// Why events were lost, and what the user can do about it: the one line the agent prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lost {
    /// The kernel's event queue overflowed (`IN_Q_OVERFLOW`).
    Overflow,
    /// A directory could not be watched: `ENOSPC` from `inotify_add_watch`.
    WatchLimit,
    /// Any other watcher error.
    Other,
}

impl Lost {
    fn of(res: &notify::Result<notify::Event>) -> Option<Lost> {
        match res {
            Ok(ev) if ev.need_rescan() => Some(Lost::Overflow),
            Ok(_) => None,
            Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => Some(Lost::WatchLimit),
            Err(_) => Some(Lost::Other),
        }
    }

    fn advice(self, root: &Path) -> String {
        let root = root.display();
        match self {
            Lost::Overflow => format!(
                "{root}: the system dropped file change events (inotify queue overflow); comparing the whole folder. \
                 If this repeats, raise fs.inotify.max_queued_events (e.g. `sudo sysctl fs.inotify.max_queued_events=65536`)"
            ),
            Lost::WatchLimit => format!(
                "{root}: cannot watch every directory: the system's limit of inotify watches is reached, so changes in \
                 some directories are found only by rescans; raise fs.inotify.max_user_watches (e.g. \
                 `sudo sysctl fs.inotify.max_user_watches=1048576`, and in /etc/sysctl.d/ to keep it)"
            ),
            Lost::Other => format!("{root}: the folder watcher reported an error; comparing the whole folder"),
        }
    }
}

/// Says why events were lost, at most once per reason per [`ADVICE_EVERY`] (a burst of
/// overflows is one line, not a flood).
struct Advisor {
    root: PathBuf,
    said: Mutex<HashMap<&'static str, std::time::Instant>>,
}

const ADVICE_EVERY: Duration = Duration::from_secs(600);

impl Advisor {
    fn tell(&self, lost: Lost, error: Option<&notify::Error>) {
        let key = match lost {
            Lost::Overflow => "overflow",
            Lost::WatchLimit => "limit",
            Lost::Other => "other",
        };
        let mut said = self.said.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        if said.get(key).is_some_and(|t| now.duration_since(*t) < ADVICE_EVERY) {
            return;
        }
        said.insert(key, now);
        match error {
            Some(e) if lost == Lost::Other => tracing::warn!(error = %e, "{}", lost.advice(&self.root)),
            _ => tracing::warn!("{}", lost.advice(&self.root)),
        }
    }
}

/// What the watcher thread does with each notification: paths to the debouncer, and a rescan
/// (with one line saying why) when events were lost.
fn forward(res: notify::Result<notify::Event>, raw: &mpsc::UnboundedSender<Raw>, advisor: &Advisor) {
    if let Some(lost) = Lost::of(&res) {
        advisor.tell(lost, res.as_ref().err());
        let _ = raw.send(Raw::Rescan);
        return;
    }
    let Ok(ev) = res else { return };
    let Some(closed) = settled(&ev.kind) else { return };
    for p in ev.paths {
        let _ = raw.send(if closed { Raw::Closed(p) } else { Raw::Path(p) });
    }
}

/// Changed paths the debouncer holds (waiting out their quiet period, or for the engine to take
/// them) before it folds them into their directories: a tree of a million files copied into the
/// folder is then a few directory entries to walk, not a million paths in memory.
pub const PENDING_MAX: usize = 100_000;

/// Starts watching `root` recursively. Must be called inside a tokio runtime. Reaching the limit
/// of watches is not an error here: what is watched stays watched, the user is told what to
/// raise, and rescans cover the rest. At most `pending_max` changed paths are held at once
/// ([`PENDING_MAX`]).
pub fn watch(root: &Path, quiet: Duration, pending_max: usize) -> notify::Result<FolderWatcher> {
    let (raw_tx, raw_rx) = mpsc::unbounded_channel::<Raw>();
    let advisor = std::sync::Arc::new(Advisor { root: root.to_path_buf(), said: Mutex::new(HashMap::new()) });
    let mut watcher = notify::recommended_watcher({
        let (raw_tx, advisor) = (raw_tx.clone(), advisor.clone());
        move |res: notify::Result<notify::Event>| forward(res, &raw_tx, &advisor)
    })?;
    if let Err(e) = watcher.watch(root, RecursiveMode::Recursive) {
        if !matches!(e.kind, notify::ErrorKind::MaxFilesWatch) {
            return Err(e);
        }
        forward(Err(e), &raw_tx, &advisor);
    }
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(debounce(raw_rx, tx, quiet, Pending::new(root, pending_max)));
    Ok(FolderWatcher { _watcher: watcher, events: rx })
}

/// The paths waiting out their quiet period, each with the time it is due, at most `max` of them.
struct Pending {
    root: PathBuf,
    max: usize,
    due: HashMap<PathBuf, Instant>,
    /// The same paths by due time.
    queue: BTreeSet<(Instant, PathBuf)>,
    /// A whole-folder comparison is due then (events were lost, or too many paths changed).
    rescan_at: Option<Instant>,
    /// Tests: told how many paths are held after each change.
    #[cfg(test)]
    peak: Option<std::sync::mpsc::Sender<usize>>,
}

impl Pending {
    fn new(root: &Path, max: usize) -> Pending {
        Pending {
            root: root.to_path_buf(),
            max: max.max(2),
            due: HashMap::new(),
            queue: BTreeSet::new(),
            rescan_at: None,
            #[cfg(test)]
            peak: None,
        }
    }

    /// `p` is due at `at`; with `sooner`, only if that is sooner than it was.
    fn insert(&mut self, p: PathBuf, at: Instant, sooner: bool) {
        if let Some(&old) = self.due.get(&p) {
            if sooner && old <= at {
                return;
            }
            self.queue.remove(&(old, p.clone()));
        }
        self.due.insert(p.clone(), at);
        self.queue.insert((at, p));
        if self.due.len() > self.max {
            self.fold(at);
        }
        #[cfg(test)]
        if let Some(peak) = &self.peak {
            let _ = peak.send(self.due.len());
        }
    }

    fn rescan(&mut self, at: Instant) {
        self.rescan_at = Some(at);
        self.due.clear();
        self.queue.clear();
    }

    fn next(&self) -> Option<Instant> {
        self.queue.first().map(|(t, _)| *t).into_iter().chain(self.rescan_at).min()
    }

    /// Too many paths: the deepest are replaced by their directories (which the engine walks)
    /// until at most half the bound is left, all due at `at`. Paths that would fold into the
    /// folder itself make it a whole-folder comparison instead.
    fn fold(&mut self, at: Instant) {
        let before = self.due.len();
        let root = self.root.clone();
        let depth = |p: &Path| p.strip_prefix(&root).map_or(0, |r| r.components().count());
        let mut paths: HashMap<PathBuf, usize> = self
            .due
            .drain()
            .map(|(p, _)| {
                let d = depth(&p);
                (p, d)
            })
            .collect();
        self.queue.clear();
        while paths.len() > self.max / 2 {
            let deepest = paths.values().copied().max().unwrap_or(0);
            if deepest <= 1 {
                tracing::info!(root = %self.root.display(), pending = before, "too many changed paths at once: comparing the whole folder");
                self.rescan(at);
                return;
            }
            paths = paths
                .into_iter()
                .filter(|(_, d)| *d > 0)
                .map(|(p, d)| match p.parent() {
                    Some(parent) if d == deepest => (parent.to_path_buf(), d - 1),
                    _ => (p, d),
                })
                .collect();
        }
        tracing::info!(root = %self.root.display(), pending = before, directories = paths.len(), "too many changed paths at once: following their directories instead");
        for p in paths.into_keys() {
            self.due.insert(p.clone(), at);
            self.queue.insert((at, p));
        }
    }

    /// Removes and returns the paths due by `now`, or `None` if a whole-folder comparison is.
    fn take_due(&mut self, now: Instant) -> Option<Vec<PathBuf>> {
        if self.rescan_at.is_some_and(|t| t <= now) {
            self.rescan_at = None;
            self.due.clear();
            self.queue.clear();
            return None;
        }
        let mut ready = Vec::new();
        while let Some((t, _)) = self.queue.first() {
            if *t > now {
                break;
            }
            let Some((_, p)) = self.queue.pop_first() else { break };
            self.due.remove(&p);
            ready.push(p);
        }
        Some(ready)
    }
}

/// Reports paths once quiet. Never waits on the engine while events arrive: what is due waits
/// (one report, merged with what becomes due meanwhile) for room in `out`, while new events keep
/// being taken in, so neither the kernel's queue nor an unbounded one fills up behind a busy
/// engine; what is held stays within the bound of [`Pending`].
async fn debounce(
    mut raw: mpsc::UnboundedReceiver<Raw>,
    out: mpsc::Sender<WatchEvent>,
    quiet: Duration,
    mut pending: Pending,
) {
    let mut ready: BTreeSet<PathBuf> = BTreeSet::new();
    let mut rescan = false;
    loop {
        let waiting = rescan || !ready.is_empty();
        tokio::select! {
            msg = raw.recv() => match msg {
                None => return,
                Some(Raw::Path(p)) => pending.insert(p, Instant::now() + quiet, false),
                Some(Raw::Closed(p)) => pending.insert(p, Instant::now() + CLOSED_SETTLE.min(quiet), true),
                Some(Raw::Rescan) => pending.rescan(Instant::now() + quiet),
            },
            permit = out.reserve(), if waiting => {
                let Ok(permit) = permit else { return };
                if rescan {
                    permit.send(WatchEvent::Rescan);
                    rescan = false;
                    ready.clear();
                } else {
                    permit.send(WatchEvent::Paths(std::mem::take(&mut ready).into_iter().collect()));
                }
            }
            () = sleep_until(pending.next()) => match pending.take_due(Instant::now()) {
                None => rescan = true,
                Some(due) => {
                    ready.extend(due);
                    if ready.len() > pending.max {
                        // The engine is far behind: fold what waits for it too.
                        for p in std::mem::take(&mut ready) {
                            pending.insert(p, Instant::now(), false);
                        }
                    }
                }
            },
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
        tokio::spawn(debounce(raw_rx, tx, quiet, Pending::new(Path::new("/r"), PENDING_MAX)));
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

    /// More changed paths than the bound: the deepest are folded into their directories, so
    /// what is held stays bounded, and every changed file is still under a reported path.
    #[tokio::test(start_paused = true)]
    async fn too_many_paths_fold_into_their_directories() {
        let (raw_tx, raw_rx) = mpsc::unbounded_channel();
        let (tx, mut rx) = mpsc::channel(8);
        let max = 100;
        let (peak_tx, peak) = std::sync::mpsc::channel();
        let mut pending = Pending::new(Path::new("/r"), max);
        pending.peak = Some(peak_tx);
        tokio::spawn(debounce(raw_rx, tx, Duration::from_millis(50), pending));
        let files: Vec<PathBuf> = (0..1000).map(|i| PathBuf::from(format!("/r/big/d{}/f{i}", i % 10))).collect();
        for f in &files {
            raw_tx.send(Raw::Path(f.clone())).unwrap();
        }
        raw_tx.send(Raw::Path(PathBuf::from("/r/top.txt"))).unwrap();
        let WatchEvent::Paths(reported) = rx.recv().await.unwrap() else { panic!("a rescan") };
        assert!(reported.len() <= max, "{} paths reported", reported.len());
        for d in 0..10 {
            assert!(reported.contains(&PathBuf::from(format!("/r/big/d{d}"))), "d{d} folded: {reported:?}");
        }
        assert!(reported.contains(&PathBuf::from("/r/top.txt")), "a shallow path stays itself");
        assert!(files.iter().all(|f| reported.iter().any(|r| f.starts_with(r))), "every file is covered");
        drop(raw_tx);
        let most = peak.try_iter().max().unwrap_or(0);
        assert!(most > 0 && most <= max, "held at most {most} paths");
    }

    /// Too many paths right under the folder: nothing to fold them into but the folder itself,
    /// which is a whole-folder comparison.
    #[tokio::test(start_paused = true)]
    async fn too_many_paths_at_the_top_are_a_rescan() {
        let (raw_tx, raw_rx) = mpsc::unbounded_channel();
        let (tx, mut rx) = mpsc::channel(8);
        tokio::spawn(debounce(raw_rx, tx, Duration::from_millis(50), Pending::new(Path::new("/r"), 10)));
        for i in 0..50 {
            raw_tx.send(Raw::Path(PathBuf::from(format!("/r/f{i}")))).unwrap();
        }
        assert_eq!(rx.recv().await.unwrap(), WatchEvent::Rescan);
        assert!(rx.try_recv().is_err(), "nothing else: the comparison covers them");
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

    /// The boundary where the OS's notices enter: an inotify queue overflow (notify's
    /// `Flag::Rescan` event, which `IN_Q_OVERFLOW` becomes) and a watch the kernel refused
    /// (`ENOSPC`, notify's `MaxFilesWatch`) each end in one rescan. (A real overflow cannot be
    /// forced here: `fs.inotify.max_queued_events` is not writable in this sandbox.)
    #[tokio::test(start_paused = true)]
    async fn lost_events_and_a_refused_watch_become_a_rescan() {
        use notify::event::{EventKind, Flag};
        let advisor = Advisor { root: PathBuf::from("/r"), said: Mutex::new(HashMap::new()) };
        let (raw_tx, raw_rx) = mpsc::unbounded_channel();
        let (tx, mut rx) = mpsc::channel(8);
        tokio::spawn(debounce(raw_rx, tx, Duration::from_millis(50), Pending::new(Path::new("/r"), PENDING_MAX)));
        forward(Ok(notify::Event::new(EventKind::Other).set_flag(Flag::Rescan)), &raw_tx, &advisor);
        assert_eq!(rx.recv().await.unwrap(), WatchEvent::Rescan);
        forward(Err(notify::Error::new(notify::ErrorKind::MaxFilesWatch)), &raw_tx, &advisor);
        forward(Err(notify::Error::new(notify::ErrorKind::MaxFilesWatch)), &raw_tx, &advisor);
        assert_eq!(rx.recv().await.unwrap(), WatchEvent::Rescan, "two refusals, one rescan");
        forward(Ok(notify::Event::new(EventKind::Any).add_path(PathBuf::from("/r/a"))), &raw_tx, &advisor);
        assert_eq!(rx.recv().await.unwrap(), WatchEvent::Paths(vec![PathBuf::from("/r/a")]));
        // Each reason was told once, naming the setting to raise.
        let said = advisor.said.lock().unwrap();
        assert_eq!(said.len(), 2);
        assert!(Lost::Overflow.advice(Path::new("/r")).contains("fs.inotify.max_queued_events"));
        assert!(Lost::WatchLimit.advice(Path::new("/r")).contains("fs.inotify.max_user_watches"));
    }

    /// A real `IN_Q_OVERFLOW`: run by hand as root (`cargo test -p filesync-client --lib
    /// real_overflow -- --ignored`). It lowers the system-wide `fs.inotify.max_queued_events` for
    /// the moment the watcher is created (the limit is taken at `inotify_init`), so it is not part
    /// of the suite: it would touch every other watcher created meanwhile on the machine.
    #[tokio::test]
    #[ignore = "changes a system-wide sysctl for a moment; run by hand as root"]
    async fn a_real_overflow_is_a_rescan() {
        const KNOB: &str = "/proc/sys/fs/inotify/max_queued_events";
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let before = std::fs::read_to_string(KNOB).unwrap();
        std::fs::write(KNOB, "16").unwrap();
        let w = watch(&root, Duration::from_millis(20), PENDING_MAX);
        std::fs::write(KNOB, before.trim()).unwrap();
        let mut w = w.unwrap();
        for i in 0..5000 {
            std::fs::write(root.join(format!("f{i}")), b"x").unwrap();
        }
        let rescan = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(ev) = w.events.recv().await {
                if ev == WatchEvent::Rescan {
                    return true;
                }
            }
            false
        });
        assert!(rescan.await.unwrap_or(false), "no rescan after an overflow");
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
        let mut w = watch(&root, Duration::from_secs(60), PENDING_MAX).unwrap();
        std::fs::remove_file(root.join("old.txt")).unwrap();
        let ev = tokio::time::timeout(Duration::from_secs(20), w.events.recv()).await;
        let ev = ev.expect("the delete was held for the quiet period").unwrap();
        assert_eq!(ev, WatchEvent::Paths(vec![root.join("old.txt")]));
    }

    #[tokio::test]
    async fn a_real_write_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let mut w = watch(&root, Duration::from_millis(20), PENDING_MAX).unwrap();
        std::fs::write(root.join("new.txt"), b"x").unwrap();
        let ev = tokio::time::timeout(Duration::from_secs(10), w.events.recv()).await.unwrap().unwrap();
        match ev {
            WatchEvent::Paths(paths) => assert!(paths.contains(&root.join("new.txt")), "{paths:?}"),
            WatchEvent::Rescan => {}
        }
    }
}

//! The sync agent: keeps every linked folder in step with its workspace.
//!
//! - [`engine`]: the per-path sync rules for one folder over one connection.
//! - [`state`]: what each folder last agreed with the server, one SQLite row per path.
//! - [`local`]: listing, stat-ing, hashing and atomically changing local files.
//! - [`watch`]: the recursive watcher with per-path debounce.
//! - [`ignore_rules`]: `.filesyncignore` and the built-in ignores.
//! - [`remote`] / [`session`]: the connection to a sync node, over the protocol client library.
//! - [`ui`]: progress bars and desktop notifications.
//!
//! [`run_agent`] is the seam: `filesync sync` and the tests call it with a
//! config and a shutdown future. Each folder runs in its own task with its own
//! connection and reconnect loop, so one folder's trouble never stalls another.
//!
//! **Architecture Invariant:** nothing here writes outside a linked folder
//! and the home directory, and every workspace path is validated
//! (`filesync_core::path`) before it is joined to a folder root.

pub mod engine;
pub mod ignore_rules;
pub mod local;
pub mod remote;
pub mod session;
pub mod state;
pub mod ui;
pub mod watch;

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch as signal;

use filesync_core::WorkspaceId;

use crate::home::{Home, HomeError, LinkedFolder};
use crate::http::ApiWorkspace;
use engine::{Ended, FolderSync, Identity, SyncError};
use session::Session;
use state::StateStore;
use ui::Ui;

/// Everything the agent needs; built by the CLI from flags, env, config and the home directory.
#[derive(Clone)]
pub struct AgentConfig {
    pub home: Home,
    /// TCP sync nodes, tried in order.
    pub sync_addrs: Vec<String>,
    /// What `tls://` nodes' certificates are checked against (`--ca FILE`).
    pub trust: crate::tls::Trust,
    /// The saved login; renews its access token before it expires and when a node says `token_expired`.
    pub credentials: crate::http::Credentials,
    pub username: String,
    pub device_id: String,
    pub device_name: String,
    /// Quiet period before a changed path is synced.
    pub debounce: Duration,
    /// How often the whole folder is compared with the state, for what the watcher may miss.
    pub rescan_every: Duration,
    /// Known paths stat'ed per step of that comparison (`FILESYNC_COMPARE_PAGE`).
    pub compare_page: usize,
    /// Changed paths the watcher holds before it folds them into their directories
    /// (`FILESYNC_WATCH_PENDING_MAX`).
    pub watch_pending_max: usize,
    /// Reconcile once and return instead of syncing until shutdown.
    pub once: bool,
    /// Only this workspace's folder.
    pub only: Option<WorkspaceId>,
    /// Progress bars on a terminal.
    pub progress: bool,
    /// Desktop notifications.
    pub notifications: bool,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("home", &self.home)
            .field("sync_addrs", &self.sync_addrs)
            .field("device_id", &self.device_id)
            .field("once", &self.once)
            .field("only", &self.only)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("no linked folders; link one with `filesync workspace link WS DIR` or `filesync workspace create NAME`")]
    NothingLinked,
    #[error("cannot watch {path}: {message}")]
    Watch { path: String, message: String },
    #[error(transparent)]
    Home(#[from] HomeError),
    // Not named `source`: thiserror would chain it, and `{:#}` would print the message twice.
    #[error("{workspace}: {error}")]
    Folder { workspace: String, error: SyncError },
    /// The server no longer accepts this device's login.
    #[error("{0}")]
    SignedOut(String),
    #[error("cannot reach any sync node ({addrs}): {last}")]
    Unreachable { addrs: String, last: String },
}

impl AgentError {
    /// The login was refused for good (revoked, password changed, expired without renewal).
    pub fn is_signed_out(&self) -> bool {
        matches!(self, AgentError::SignedOut(_) | AgentError::Folder { error: SyncError::SignedOut(_), .. })
    }
}

/// How often a running agent re-reads the linked-folder list, so `workspace link`, `create` and
/// `unlink` take effect without a restart.
const FOLDER_LIST_EVERY: Duration = Duration::from_millis(250);

/// Syncs every linked folder until `shutdown` completes (or, with `once`, until each is reconciled).
/// On shutdown each folder finishes the file in flight and saves its state.
///
/// Without `once` the agent follows the linked-folder list live: a folder linked later starts,
/// an unlinked one stops (and `workspace unlink` waits for that, see [`release_folder`]). It
/// keeps running with no folder linked, waiting for one.
pub async fn run_agent(config: AgentConfig, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    let wanted = |home: &Home| -> Result<Vec<LinkedFolder>, HomeError> {
        Ok(home.folders()?.into_iter().filter(|f| config.only.is_none_or(|ws| ws == f.workspace_id)).collect())
    };
    let folders = wanted(&config.home)?;
    if folders.is_empty() {
        return Err(AgentError::NothingLinked);
    }
    // Tells `workspace link` that a live agent will sync a new folder (see `live_agent_running`).
    let _live = if config.once { None } else { Some(FileLock::shared(&config.home.dir().join("agent.lock")).await?) };
    let ui = if config.progress || config.notifications {
        Ui::new(config.progress, config.notifications)
    } else {
        Ui::quiet()
    };
    let mut set = FolderTasks {
        config: config.clone(),
        ui,
        running: HashMap::new(),
        started: HashMap::new(),
        tasks: tokio::task::JoinSet::new(),
    };
    for folder in folders {
        set.spawn(folder);
    }
    let mut shutdown = std::pin::pin!(shutdown);
    let mut list_check = tokio::time::interval(FOLDER_LIST_EVERY);
    list_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first_error = None;
    let mut stopping = false;
    loop {
        if set.running.is_empty() && (config.once || stopping || first_error.is_some()) {
            break;
        }
        tokio::select! {
            () = &mut shutdown, if !stopping => {
                stopping = true;
                set.stop_all();
            }
            _ = list_check.tick(), if !config.once && !stopping => match wanted(&config.home) {
                Ok(now) => set.follow(now),
                Err(e) => tracing::warn!(error = %e, "cannot read the linked folders; keeping the current ones"),
            },
            done = set.tasks.join_next(), if !set.tasks.is_empty() => match done {
                None => {}
                Some(Ok((ws, result))) => {
                    set.running.remove(&ws);
                    let Err(e) = result else { continue };
                    if e.is_signed_out() {
                        // Every folder would stop for the same reason: stop them all, say it once.
                        stopping = true;
                        set.stop_all();
                        if first_error.as_ref().is_some_and(AgentError::is_signed_out) {
                            continue;
                        }
                        first_error = Some(e);
                        continue;
                    }
                    tracing::error!(error = %e, "folder stopped");
                    first_error.get_or_insert(e);
                }
                Some(Err(join)) => {
                    // The task is gone and its workspace unknown: forget the senders nobody listens to.
                    set.running.retain(|_, stop| !stop.is_closed());
                    first_error.get_or_insert(AgentError::Folder {
                        workspace: "?".into(),
                        error: SyncError::Fatal(format!("sync task failed: {join}")),
                    });
                }
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// The folder tasks of one agent.
struct FolderTasks {
    config: AgentConfig,
    ui: Ui,
    /// The stop signal of each running folder.
    running: HashMap<WorkspaceId, signal::Sender<bool>>,
    /// The root each workspace was started for, so a folder that failed is not restarted in a loop.
    started: HashMap<WorkspaceId, PathBuf>,
    tasks: tokio::task::JoinSet<(WorkspaceId, Result<(), AgentError>)>,
}

impl FolderTasks {
    fn spawn(&mut self, folder: LinkedFolder) {
        let (stop_tx, stop_rx) = signal::channel(false);
        self.running.insert(folder.workspace_id, stop_tx);
        self.started.insert(folder.workspace_id, folder.root.clone());
        let cfg = self.config.clone();
        let ui = self.ui.clone();
        self.tasks.spawn(async move {
            let (ws, name) = (folder.workspace_id, folder.workspace_name.clone());
            let result = run_folder(cfg, folder, ui, stop_rx).await.map_err(|e| match e {
                FolderFailure::Sync(SyncError::SignedOut(m)) => AgentError::SignedOut(m),
                FolderFailure::Sync(error) => AgentError::Folder { workspace: name, error },
                FolderFailure::Other(e) => e,
            });
            (ws, result)
        });
    }

    fn stop_all(&self) {
        for stop in self.running.values() {
            let _ = stop.send(true);
        }
    }

    /// Stops the folders no longer linked (or linked elsewhere) and starts the newly linked ones.
    fn follow(&mut self, now: Vec<LinkedFolder>) {
        let linked = |ws: &WorkspaceId, root: &PathBuf| now.iter().any(|f| f.workspace_id == *ws && f.root == *root);
        for (ws, stop) in &self.running {
            let still = self.started.get(ws).is_some_and(|root| linked(ws, root));
            if !still && !*stop.borrow() {
                tracing::info!(workspace.id = %ws, "unlinked: stopping that folder");
                let _ = stop.send(true);
            }
        }
        self.started.retain(|ws, root| linked(ws, root));
        for folder in now {
            // A folder linked elsewhere starts once its old task has stopped.
            if !self.running.contains_key(&folder.workspace_id) && !self.started.contains_key(&folder.workspace_id) {
                tracing::info!(
                    workspace.id = %folder.workspace_id,
                    workspace.name = %folder.workspace_name,
                    root = %folder.root.display(),
                    "linked: syncing the folder"
                );
                self.spawn(folder);
            }
        }
    }
}

/// An advisory lock on a file in the home directory, held until dropped.
struct FileLock(std::fs::File);

impl FileLock {
    fn open(path: &Path) -> Result<std::fs::File, HomeError> {
        let io = |source| HomeError::Io { path: path.to_path_buf(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path).map_err(io)
    }

    /// A shared hold: any number of agents, but no `release_folder` while it lasts.
    async fn shared(path: &Path) -> Result<FileLock, HomeError> {
        let file = FileLock::open(path)?;
        loop {
            match file.try_lock_shared() {
                Ok(()) => return Ok(FileLock(file)),
                // `release_folder` holds it only for a moment.
                Err(std::fs::TryLockError::WouldBlock) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(std::fs::TryLockError::Error(source)) => {
                    return Err(HomeError::Io { path: path.to_path_buf(), source })
                }
            }
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// Whether a `filesync sync` (not `--once`) is running on this home; it picks up new links itself.
pub fn live_agent_running(home: &Home) -> bool {
    let Ok(file) = FileLock::open(&home.dir().join("agent.lock")) else { return false };
    match file.try_lock() {
        Ok(()) => {
            let _ = file.unlock();
            false
        }
        Err(_) => true,
    }
}

/// Waits (up to `within`) until no agent syncs `ws`'s folder any more; call it after the folder
/// left the linked-folder list. `false` if an agent still holds it when the time is up.
pub async fn release_folder(home: &Home, ws: WorkspaceId, within: Duration) -> Result<bool, HomeError> {
    let path = home.folder_lock_path(ws);
    let file = FileLock::open(&path)?;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match file.try_lock() {
            Ok(()) => {
                let _ = file.unlock();
                return Ok(true);
            }
            Err(std::fs::TryLockError::WouldBlock) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(std::fs::TryLockError::WouldBlock) => return Ok(false),
            Err(std::fs::TryLockError::Error(source)) => return Err(HomeError::Io { path, source }),
        }
    }
}

enum FolderFailure {
    Sync(SyncError),
    Other(AgentError),
}

impl From<SyncError> for FolderFailure {
    fn from(e: SyncError) -> Self {
        FolderFailure::Sync(e)
    }
}

impl From<HomeError> for FolderFailure {
    fn from(e: HomeError) -> Self {
        FolderFailure::Other(AgentError::Home(e))
    }
}

/// Exponential backoff with jitter, so many agents do not reconnect in lockstep after a node restart.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_secs(10);

    fn new() -> Backoff {
        Backoff { next: Backoff::FIRST }
    }

    fn reset(&mut self) {
        self.next = Backoff::FIRST;
    }

    /// The wait before the next round: between half and all of the current step.
    fn step(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(Backoff::MAX);
        base.mul_f64(rand::random_range(0.5..=1.0))
    }
}

/// One folder, reconnecting as needed, until stopped (or reconciled once).
async fn run_folder(
    cfg: AgentConfig,
    folder: LinkedFolder,
    ui: Ui,
    mut stop: signal::Receiver<bool>,
) -> Result<(), FolderFailure> {
    let ws = folder.workspace_id;
    // Held while this folder syncs: `workspace unlink` waits for it before saying it is done.
    let _syncing = FileLock::shared(&cfg.home.folder_lock_path(ws)).await?;
    let store = StateStore::load(&cfg.home.state_path(ws), ws, &folder.root)?;
    if !folder.root.is_dir() {
        return Err(SyncError::Fatal(format!("the linked folder {} is missing", folder.root.display())).into());
    }
    let ident = Identity {
        device_id: cfg.device_id.clone(),
        device_name: cfg.device_name.clone(),
        username: cfg.username.clone(),
    };
    let mut sync =
        FolderSync::new(ws, folder.workspace_name.clone(), folder.root.clone(), store, folder.role, ident, ui.clone());
    sync.stop = Some(stop.clone());
    sync.rescan_every = cfg.rescan_every;
    sync.compare_page = cfg.compare_page;
    // A running agent goes live at once and compares the folder between live changes.
    sync.compare_in_background = !cfg.once;
    // Watch before the first scan, so nothing changed during the scan is missed.
    let mut watcher = if cfg.once {
        None
    } else {
        Some(watch::watch(&folder.root, cfg.debounce, cfg.watch_pending_max).map_err(|e| {
            FolderFailure::Other(AgentError::Watch { path: folder.root.display().to_string(), message: e.to_string() })
        })?)
    };
    let addrs =
        if cfg.sync_addrs.is_empty() { vec![crate::home::DEFAULT_SYNC.to_owned()] } else { cfg.sync_addrs.clone() };
    let mut backoff = Backoff::new();
    let mut index = 0usize;
    let mut failed_rounds = 0u32;
    loop {
        if *stop.borrow() {
            sync.store.save()?;
            return Ok(());
        }
        let addr = &addrs[index % addrs.len()];
        let connected = tokio::select! {
            r = Session::connect(addr, &cfg) => r,
            _ = stop.changed() => continue,
        };
        let mut session = match connected {
            Ok(s) => s,
            Err(e) if e.is_permanent() => return Err(SyncError::from(e).into()),
            Err(e) => {
                tracing::warn!(workspace.id = %ws, node.addr = %addr, error = %e, "cannot connect to sync node");
                let last_error = e.to_string();
                index += 1;
                if index.is_multiple_of(addrs.len()) {
                    failed_rounds += 1;
                    if cfg.once && failed_rounds >= 3 {
                        return Err(FolderFailure::Other(AgentError::Unreachable {
                            addrs: addrs.join(", "),
                            last: last_error,
                        }));
                    }
                    let wait = backoff.step();
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        _ = stop.changed() => {}
                    }
                }
                continue;
            }
        };
        tracing::info!(workspace.id = %ws, node.addr = %addr, "connected");
        backoff.reset();
        failed_rounds = 0;
        // A full comparison follows (in the background when live): queued watcher events add
        // nothing to it.
        if let Some(w) = watcher.as_mut() {
            while w.events.try_recv().is_ok() {}
        }
        let outcome = match sync.catch_up(&mut session).await {
            Ok(()) if cfg.once => Ok(Ended::Reconciled),
            Ok(()) => match watcher.as_mut() {
                Some(w) => sync.live(&mut session, &mut w.events, &mut stop).await,
                None => Ok(Ended::Reconciled),
            },
            Err(e) => Err(e),
        };
        sync.store.save()?;
        match outcome {
            Ok(Ended::Stopped | Ended::Reconciled) | Err(SyncError::Stopped) => return Ok(()),
            Err(SyncError::AccessEnded(why)) => {
                forget_folder(&cfg.home, ws)?;
                ui.access_ended(&folder.workspace_name, &folder.root, why);
                return Ok(());
            }
            Err(SyncError::Goodbye(reason)) => {
                tracing::info!(workspace.id = %ws, node.addr = %addr, reason = %reason, "node is leaving; moving to the next");
                index += 1;
            }
            Err(SyncError::HistoryExpired) => {
                // A catch-up (a gap read by pages, or a subscription that lost a race with the
                // server's retention) starts before the history the server keeps: a new
                // connection reconciles with the current files.
                tracing::info!(workspace.id = %ws, node.addr = %addr, "the server's history moved past this folder; reconnecting to reconcile");
                let wait = backoff.step();
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => {}
                }
            }
            Err(SyncError::Connection(reason)) => {
                tracing::warn!(workspace.id = %ws, node.addr = %addr, reason = %reason, "connection lost; reconnecting");
                index += 1;
                let wait = backoff.step();
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => {}
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Serializes edits of the linked-folder list by the folder tasks of one agent.
static FOLDER_LIST: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Unlinks `ws`'s folder (its files stay) and drops its sync state: the workspace is gone for
/// this user, so no later `filesync sync` tries it again.
fn forget_folder(home: &Home, ws: WorkspaceId) -> Result<(), HomeError> {
    let _guard = FOLDER_LIST.lock().unwrap_or_else(|p| p.into_inner());
    let mut folders = home.folders()?;
    folders.retain(|f| f.workspace_id != ws);
    home.save_folders(&folders)?;
    state::remove(&home.state_path(ws));
    Ok(())
}

/// What `workspace download` fetched.
#[derive(Debug, Clone, Copy, Default)]
pub struct DownloadReport {
    pub files: usize,
    pub bytes: u64,
}

/// Copies every file of `ws` into `dir` once, uploading nothing and remembering nothing.
pub async fn download_once(config: AgentConfig, ws: &ApiWorkspace, dir: &Path) -> Result<DownloadReport, AgentError> {
    let scratch = tempfile::tempdir_in(config.home.dir())
        .map_err(|e| AgentError::Home(HomeError::Io { path: config.home.dir().to_path_buf(), source: e }))?;
    let root = std::fs::canonicalize(dir)
        .map_err(|e| AgentError::Home(HomeError::Io { path: dir.to_path_buf(), source: e }))?;
    let store = StateStore::load(&scratch.path().join("state.db"), ws.id, &root)?;
    let ident = Identity {
        device_id: config.device_id.clone(),
        device_name: config.device_name.clone(),
        username: config.username.clone(),
    };
    let ui = Ui::new(config.progress, false);
    let mut sync = FolderSync::new(ws.id, ws.name.clone(), root, store, ws.role, ident, ui);
    sync.read_only = true;
    let mut last = String::new();
    for addr in &config.sync_addrs {
        let mut session = match Session::connect(addr, &config).await {
            Ok(s) => s,
            Err(e) if e.is_permanent() => {
                return Err(AgentError::Folder { workspace: ws.name.clone(), error: SyncError::from(e) })
            }
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        match sync.catch_up(&mut session).await {
            Ok(()) => {
                let (files, bytes) = sync.store.totals();
                return Ok(DownloadReport { files, bytes });
            }
            Err(e @ (SyncError::Fatal(_) | SyncError::AccessEnded(_))) => {
                return Err(AgentError::Folder { workspace: ws.name.clone(), error: e })
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(AgentError::Unreachable { addrs: config.sync_addrs.join(", "), last })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let mut b = Backoff::new();
        let first = b.step();
        assert!(first >= Duration::from_millis(100) && first <= Duration::from_millis(200), "{first:?}");
        for _ in 0..20 {
            assert!(b.step() <= Backoff::MAX);
        }
        assert!(b.step() >= Backoff::MAX / 2);
        b.reset();
        assert!(b.step() <= Duration::from_millis(200));
    }
}

//! The sync agent: keeps every linked folder in step with its workspace.
//!
//! - [`engine`]: the per-path sync rules for one folder over one connection.
//! - [`state`]: what each folder last agreed with the server, saved atomically.
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

use std::future::Future;
use std::path::Path;
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

/// Syncs every linked folder until `shutdown` completes (or, with `once`, until each is reconciled).
/// On shutdown each folder finishes the file in flight and saves its state.
pub async fn run_agent(config: AgentConfig, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    let folders: Vec<LinkedFolder> =
        config.home.folders()?.into_iter().filter(|f| config.only.is_none_or(|ws| ws == f.workspace_id)).collect();
    if folders.is_empty() {
        return Err(AgentError::NothingLinked);
    }
    let ui = if config.progress || config.notifications {
        Ui::new(config.progress, config.notifications)
    } else {
        Ui::quiet()
    };
    let (stop_tx, stop_rx) = signal::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for folder in folders {
        let cfg = config.clone();
        let ui = ui.clone();
        let stop = stop_rx.clone();
        tasks.spawn(async move {
            let name = folder.workspace_name.clone();
            run_folder(cfg, folder, ui, stop).await.map_err(|e| match e {
                FolderFailure::Sync(SyncError::SignedOut(m)) => AgentError::SignedOut(m),
                FolderFailure::Sync(error) => AgentError::Folder { workspace: name, error },
                FolderFailure::Other(e) => e,
            })
        });
    }
    let mut shutdown = std::pin::pin!(shutdown);
    let mut first_error = None;
    let mut stopping = false;
    loop {
        tokio::select! {
            () = &mut shutdown, if !stopping => {
                stopping = true;
                let _ = stop_tx.send(true);
            }
            done = tasks.join_next() => match done {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => {
                    if e.is_signed_out() {
                        // Every folder would stop for the same reason: stop them all, say it once.
                        let _ = stop_tx.send(true);
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
    // Watch before the first scan, so nothing changed during the scan is missed.
    let mut watcher = if cfg.once {
        None
    } else {
        Some(watch::watch(&folder.root, cfg.debounce).map_err(|e| {
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
        // A full scan follows: queued watcher events add nothing to it.
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
    let _ = std::fs::remove_file(home.state_path(ws));
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
    let store = StateStore::load(&scratch.path().join("state.json"), ws.id, &root)?;
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
                let files = &sync.store.state.files;
                return Ok(DownloadReport { files: files.len(), bytes: files.values().map(|e| e.size).sum() });
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

//! `filesync sync`: runs the agent in the foreground until SIGINT/SIGTERM.

use std::io::IsTerminal;

use clap::Args;

use super::Ctx;
use crate::agent::{run_agent, AgentConfig};

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Reconcile every linked folder once and exit (for scripts and tests).
    #[arg(long)]
    pub once: bool,
    /// Only the folder of this workspace (id or name).
    #[arg(long, value_name = "WS")]
    pub only: Option<String>,
    /// No desktop notifications.
    #[arg(long)]
    pub no_notify: bool,
    /// No progress bars, even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
}

pub async fn run(ctx: &Ctx, args: SyncArgs) -> anyhow::Result<()> {
    refresh_roles(ctx).await;
    let mut config = ctx.agent_config()?;
    config.once = args.once;
    config.notifications = !args.no_notify && !args.once;
    config.progress = !args.no_progress;
    if let Some(ws) = args.only {
        let folders = ctx.home.folders()?;
        let hit = folders.iter().find(|f| f.workspace_id.to_string() == ws || f.workspace_name == ws);
        match hit {
            Some(f) => config.only = Some(f.workspace_id),
            None => anyhow::bail!("{ws:?} is not linked here (see `filesync status`)"),
        }
    }
    if !args.once {
        let folders = ctx.home.folders()?;
        if std::io::stderr().is_terminal() {
            for f in &folders {
                eprintln!("syncing {} at {}", f.workspace_name, f.root.display());
            }
            eprintln!("press Ctrl-C to stop");
        }
        tracing::info!(folders = folders.len(), "syncing; press Ctrl-C to stop");
    }
    run_agent(config, shutdown_signal()).await?;
    Ok(())
}

/// Roles (and names: the owner may have renamed a workspace) may have changed while the agent was
/// off; the sync node announces role changes only live. Best effort: without the HTTP API the
/// recorded roles stand (the node refuses what is not allowed).
async fn refresh_roles(ctx: &Ctx) {
    let Ok(api) = ctx.api() else { return };
    let Ok(all) = api.workspace_names().await else { return };
    let Ok(mut folders) = ctx.home.folders() else { return };
    let mut changed = false;
    for f in &mut folders {
        if let Some(ws) = all.iter().find(|w| w.id == f.workspace_id) {
            if ws.role != f.role {
                tracing::info!(workspace.id = %f.workspace_id, role = %ws.role, "your role changed");
                f.role = ws.role;
                changed = true;
            }
            if ws.name != f.workspace_name {
                tracing::info!(workspace.id = %f.workspace_id, name = %ws.name, "the workspace was renamed");
                f.workspace_name = ws.name.clone();
                changed = true;
            }
        }
    }
    if changed {
        if let Err(e) = ctx.home.save_folders(&folders) {
            tracing::warn!(error = %e, "cannot record the new roles");
        }
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("stopping: finishing the file in flight and saving state");
}

/// A positive count from the environment (a tuning knob, see docs/client.md), else `default`.
fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).filter(|n| *n > 0).unwrap_or(default)
}

impl Ctx {
    /// The agent's settings from flags, env, config.toml and the saved login.
    pub fn agent_config(&self) -> anyhow::Result<AgentConfig> {
        let token = self.token()?;
        Ok(AgentConfig {
            home: self.home.clone(),
            sync_addrs: self.sync_addrs(),
            trust: self.trust()?,
            credentials: self.credentials()?,
            username: if token.username.is_empty() { token.email.clone() } else { token.username },
            device_id: self.home.device_id()?,
            device_name: self.device_name(),
            debounce: std::time::Duration::from_millis(self.debounce_ms()),
            rescan_every: self
                .settings
                .rescan_secs
                .filter(|s| *s > 0)
                .map_or(crate::agent::engine::DEFAULT_RESCAN_EVERY, std::time::Duration::from_secs),
            compare_page: env_count("FILESYNC_COMPARE_PAGE", crate::agent::engine::COMPARE_PAGE),
            watch_pending_max: env_count("FILESYNC_WATCH_PENDING_MAX", crate::agent::watch::PENDING_MAX),
            once: false,
            only: None,
            progress: true,
            notifications: false,
        })
    }

    /// A readable name for this machine, for presence and conflict copy names.
    pub fn device_name(&self) -> String {
        if let Some(name) = &self.settings.device_name {
            return name.clone();
        }
        std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "device".to_owned())
    }
}

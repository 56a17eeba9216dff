//! Workspaces: create, list, share, members, download, link, unlink.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use clap::Subcommand;

use filesync_core::Role;

use super::{absolute, share_role, Ctx};
use crate::home::LinkedFolder;
use crate::http::ApiWorkspace;

#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// Create a workspace and link DIR to it (default ./NAME).
    Create {
        name: String,
        dir: Option<PathBuf>,
        /// Only create and link; do not sync now.
        #[arg(long)]
        no_sync: bool,
    },
    /// The workspaces you belong to, with your role.
    List,
    /// Give someone access to a workspace you own.
    Share {
        /// Workspace id or name.
        workspace: String,
        email: String,
        #[arg(long, default_value = "editor", value_parser = share_role)]
        role: Role,
    },
    /// Who belongs to a workspace.
    Members {
        /// Workspace id or name.
        workspace: String,
    },
    /// Copy a workspace's files into DIR once, without linking it (default ./NAME).
    Download {
        /// Workspace id or name.
        workspace: String,
        dir: Option<PathBuf>,
    },
    /// Attach a folder to a workspace: an empty one is filled, a non-empty one reconciled (nothing is
    /// deleted or overwritten silently: differing files become conflict copies).
    Link {
        /// Workspace id or name.
        workspace: String,
        dir: PathBuf,
        /// Only link; do not sync now.
        #[arg(long)]
        no_sync: bool,
    },
    /// Detach a folder from its workspace; its files stay as they are.
    Unlink {
        /// Workspace id or name, or the linked folder.
        workspace: String,
    },
}

pub async fn run(ctx: &Ctx, cmd: WorkspaceCommand) -> anyhow::Result<()> {
    match cmd {
        WorkspaceCommand::Create { name, dir, no_sync } => {
            let api = ctx.api()?;
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            // Check the folder before creating anything, so a bad DIR leaves no orphan workspace.
            check_linkable(ctx, &dir, None)?;
            let ws = api.create_workspace(&name).await?;
            println!("created workspace {} (id {})", ws.name, ws.id);
            link_folder(ctx, &ws, &dir, no_sync).await
        }
        WorkspaceCommand::List => {
            let api = ctx.api()?;
            let all = api.workspaces().await?;
            let linked = ctx.home.folders()?;
            if all.is_empty() {
                println!("no workspaces yet; create one with `filesync workspace create NAME`");
            }
            for ws in all {
                let at = linked
                    .iter()
                    .find(|f| f.workspace_id == ws.id)
                    .map(|f| format!("  linked at {}", f.root.display()))
                    .unwrap_or_default();
                println!("{:>6}  {:<24} {:<7}{at}", ws.id, ws.name, ws.role);
            }
            Ok(())
        }
        WorkspaceCommand::Share { workspace, email, role } => {
            let api = ctx.api()?;
            let ws = ctx.resolve_workspace(&api, &workspace).await?;
            api.add_user(ws.id, &email, role).await?;
            println!("shared {} with {email} as {role}", ws.name);
            Ok(())
        }
        WorkspaceCommand::Members { workspace } => {
            let api = ctx.api()?;
            let ws = ctx.resolve_workspace(&api, &workspace).await?;
            for m in api.members(ws.id).await? {
                println!("{:<24} {:<32} {}", m.username, m.email, m.role);
            }
            Ok(())
        }
        WorkspaceCommand::Download { workspace, dir } => {
            let api = ctx.api()?;
            let ws = ctx.resolve_workspace(&api, &workspace).await?;
            let dir = absolute(&dir.unwrap_or_else(|| PathBuf::from(&ws.name)))?;
            if dir.exists() && std::fs::read_dir(&dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
                bail!("{} is not empty; download into a new or empty folder", dir.display());
            }
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            let report = crate::agent::download_once(ctx.agent_config()?, &ws, &dir).await?;
            println!(
                "downloaded {} files ({} bytes) of {} into {}",
                report.files,
                report.bytes,
                ws.name,
                dir.display()
            );
            Ok(())
        }
        WorkspaceCommand::Link { workspace, dir, no_sync } => {
            let api = ctx.api()?;
            let ws = ctx.resolve_workspace(&api, &workspace).await?;
            check_linkable(ctx, &dir, Some(&ws))?;
            link_folder(ctx, &ws, &dir, no_sync).await
        }
        WorkspaceCommand::Unlink { workspace } => {
            let as_path = absolute(Path::new(&workspace)).ok();
            let (gone, kept): (Vec<LinkedFolder>, Vec<LinkedFolder>) = ctx.home.folders()?.into_iter().partition(|f| {
                f.workspace_id.to_string() == workspace
                    || f.workspace_name == workspace
                    || as_path.as_deref() == Some(f.root.as_path())
            });
            if gone.is_empty() {
                bail!("{workspace:?} is not linked here (see `filesync status`)");
            }
            ctx.home.save_folders(&kept)?;
            for f in gone {
                // The state describes this folder only; a later link starts afresh.
                let _ = std::fs::remove_file(ctx.home.state_path(f.workspace_id));
                println!("unlinked {} from {}; the files stay where they are", f.workspace_name, f.root.display());
            }
            Ok(())
        }
    }
}

/// A folder can be linked if it is not a file, and neither inside nor around another linked folder.
fn check_linkable(ctx: &Ctx, dir: &Path, ws: Option<&ApiWorkspace>) -> anyhow::Result<()> {
    let abs = absolute(dir)?;
    if abs.exists() && !abs.is_dir() {
        bail!("{} is a file, not a folder", abs.display());
    }
    if abs.starts_with(ctx.home.dir()) || ctx.home.dir().starts_with(&abs) {
        bail!("{} overlaps the filesync home {}; choose another folder", abs.display(), ctx.home.dir().display());
    }
    for f in ctx.home.folders()? {
        if Some(f.workspace_id) == ws.map(|w| w.id) {
            if f.root == abs {
                return Ok(());
            }
            bail!("workspace {} is already linked at {}; unlink it first", f.workspace_name, f.root.display());
        }
        if abs.starts_with(&f.root) || f.root.starts_with(&abs) {
            bail!("{} overlaps {}, already linked to {}", abs.display(), f.root.display(), f.workspace_name);
        }
    }
    Ok(())
}

async fn link_folder(ctx: &Ctx, ws: &ApiWorkspace, dir: &Path, no_sync: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let root = std::fs::canonicalize(dir).with_context(|| format!("cannot resolve {}", dir.display()))?;
    let mut folders = ctx.home.folders()?;
    folders.retain(|f| f.workspace_id != ws.id);
    folders.push(LinkedFolder {
        workspace_id: ws.id,
        workspace_name: ws.name.clone(),
        root: root.clone(),
        role: ws.role,
    });
    ctx.home.save_folders(&folders)?;
    println!("linked {} to {}", ws.name, root.display());
    if no_sync {
        return Ok(());
    }
    let mut config = ctx.agent_config()?;
    config.once = true;
    config.only = Some(ws.id);
    crate::agent::run_agent(config, std::future::pending())
        .await
        .context("linked, but could not sync now; `filesync sync` will finish it")?;
    println!("{} is in sync", root.display());
    Ok(())
}

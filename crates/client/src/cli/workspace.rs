//! Workspaces: create, list, share, members, role, remove, leave, rename, delete, download, link, unlink,
//! retention.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use clap::Subcommand;

use filesync_core::Role;

use super::{absolute, human_bytes, print_table, prompt, share_role, Ctx};
use crate::home::LinkedFolder;
use crate::http::{Api, ApiMember, ApiWorkspace, Shared};

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
    /// The workspaces you belong to, with your role and what each stores (current files, older
    /// versions, trash).
    List,
    /// Give someone access to a workspace you own.
    Share {
        /// Workspace id or name.
        workspace: String,
        email: String,
        #[arg(long, default_value = "editor", value_parser = share_role)]
        role: Role,
    },
    /// Who belongs to a workspace, and who is invited but has no account yet.
    Members {
        /// Workspace id or name.
        workspace: String,
    },
    /// Give a member of a workspace you own another role (editor or viewer).
    Role {
        /// Workspace id or name.
        workspace: String,
        email: String,
        #[arg(value_parser = share_role)]
        role: Role,
    },
    /// Take someone out of a workspace you own (or cancel their pending invitation). Their agents
    /// stop syncing it at once; their copies of the files stay on their machines.
    Remove {
        /// Workspace id or name.
        workspace: String,
        email: String,
    },
    /// Leave a workspace someone shared with you; the local folder is unlinked, its files stay.
    Leave {
        /// Workspace id or name.
        workspace: String,
    },
    /// Rename a workspace you own.
    Rename {
        /// Workspace id or name.
        workspace: String,
        new_name: String,
    },
    /// Delete a workspace you own, with its history, for every member (their local files stay).
    Delete {
        /// Workspace id or name.
        workspace: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
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
    /// How long a workspace keeps old versions and deleted files; its owner may change it.
    Retention {
        /// Workspace id or name.
        workspace: String,
        /// Days every version is kept before older ones are thinned (0: only the current version).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=36500))]
        keep_days: Option<u32>,
        /// Days a deleted file stays in the trash (0: emptied at the next collection).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=36500))]
        trash_days: Option<u32>,
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
                return Ok(());
            }
            let rows = all.into_iter().map(|ws| {
                let at = linked
                    .iter()
                    .find(|f| f.workspace_id == ws.id)
                    .map(|f| format!("linked at {}", f.root.display()))
                    .unwrap_or_else(|| "not linked here".into());
                let used = ws.usage.unwrap_or_default();
                [
                    ws.id.to_string(),
                    ws.name,
                    ws.role.to_string(),
                    human_bytes(used.live_bytes),
                    human_bytes(used.history_bytes),
                    human_bytes(used.trash_bytes),
                    at,
                ]
            });
            print_table(["ID", "NAME", "ROLE", "FILES", "HISTORY", "TRASH", "FOLDER"], rows);
            Ok(())
        }
        WorkspaceCommand::Share { workspace, email, role } => {
            let api = ctx.api()?;
            let ws = ctx.resolve_workspace(&api, &workspace).await?;
            match api.add_user(ws.id, &email, role).await? {
                Shared::Member { .. } => println!("shared {} with {email} as {role}", ws.name),
                Shared::Invited { invitation } => println!(
                    "invited {} to {} as {role}: no account has this email yet; they become a member when they \
                     run `filesync register` with it",
                    invitation.email, ws.name
                ),
            }
            Ok(())
        }
        WorkspaceCommand::Members { workspace } => {
            let api = ctx.api()?;
            let ws = ctx.resolve_workspace(&api, &workspace).await?;
            let people = api.people(ws.id).await?;
            let users = people.users.into_iter().map(|m| [m.username, m.email, m.role.to_string(), String::new()]);
            let invited = people
                .invitations
                .into_iter()
                .map(|i| ["-".into(), i.email, i.role.to_string(), "invited, no account yet".into()]);
            print_table(["USERNAME", "EMAIL", "ROLE", "NOTE"], users.chain(invited));
            Ok(())
        }
        WorkspaceCommand::Role { workspace, email, role } => {
            let api = ctx.api()?;
            let ws = ctx.resolve_workspace(&api, &workspace).await?;
            let member = find_member(&api, &ws, &email).await?;
            let member = api.set_role(ws.id, member.user_id, role).await?;
            println!("{} is now {} in {}", member.email, member.role, ws.name);
            Ok(())
        }
        WorkspaceCommand::Remove { workspace, email } => {
            let api = ctx.api()?;
            let ws = ctx.resolve_workspace(&api, &workspace).await?;
            let people = api.people(ws.id).await?;
            let wanted = email.trim().to_lowercase();
            if let Some(m) = people.users.iter().find(|m| m.email == wanted) {
                api.remove_member(ws.id, m.user_id).await?;
                println!("removed {} from {}; their copies of the files stay on their machines", m.email, ws.name);
            } else if let Some(i) = people.invitations.iter().find(|i| i.email == wanted) {
                api.cancel_invitation(ws.id, i.id).await?;
                println!("cancelled the invitation of {} to {}", i.email, ws.name);
            } else {
                bail!("{email} is neither a member of {} nor invited to it", ws.name);
            }
            Ok(())
        }
        WorkspaceCommand::Leave { workspace } => {
            let api = ctx.api()?;
            let ws = ctx.resolve_workspace(&api, &workspace).await?;
            if ws.role == Role::Owner {
                bail!("you own {}; an owner cannot leave (delete it with `filesync workspace delete`)", ws.name);
            }
            api.remove_member(ws.id, ctx.token()?.user_id).await?;
            println!("left {}", ws.name);
            forget_link(ctx, &ws).await
        }
        WorkspaceCommand::Rename { workspace, new_name } => {
            let api = ctx.api()?;
            let ws = ctx.resolve_workspace(&api, &workspace).await?;
            api.rename_workspace(ws.id, &new_name).await?;
            let mut folders = ctx.home.folders()?;
            if let Some(f) = folders.iter_mut().find(|f| f.workspace_id == ws.id) {
                f.workspace_name = new_name.clone();
                ctx.home.save_folders(&folders)?;
            }
            println!("renamed {} to {new_name}", ws.name);
            Ok(())
        }
        WorkspaceCommand::Delete { workspace, yes } => {
            let api = ctx.api()?;
            let ws = ctx.resolve_workspace(&api, &workspace).await?;
            let question = format!("Delete workspace {} (id {}) and its history for every member?", ws.name, ws.id);
            if !prompt::confirm(&question, yes)? {
                bail!("not deleted");
            }
            api.delete_workspace(ws.id).await?;
            println!("deleted {}; every member lost access", ws.name);
            forget_link(ctx, &ws).await
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
        WorkspaceCommand::Retention { workspace, keep_days, trash_days } => {
            let api = ctx.api()?;
            let ws = ctx.resolve_workspace(&api, &workspace).await?;
            let mut now = api.retention(ws.id).await?;
            if keep_days.is_some() || trash_days.is_some() {
                // A setting not given stays as it is (the workspace's own, or the server's default).
                let own =
                    |given: Option<u32>, current: u32, is_default: bool| given.or((!is_default).then_some(current));
                now = api
                    .set_retention(
                        ws.id,
                        own(keep_days, now.keep_days, now.keep_days_is_default),
                        own(trash_days, now.trash_days, now.trash_days_is_default),
                    )
                    .await
                    .with_context(|| format!("cannot change the retention of {}", ws.name))?;
            }
            let default = |is: bool| if is { " (server default)" } else { "" };
            let keep = match now.keep_days {
                0 => "only the current version of each file is kept".to_owned(),
                n => format!("every version is kept {n} days, then one a week up to {} days", 3 * n),
            };
            println!("{}: {keep}{}", ws.name, default(now.keep_days_is_default));
            println!("deleted files stay {} days in the trash{}", now.trash_days, default(now.trash_days_is_default));
            Ok(())
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
                let released = release(ctx, &f).await?;
                println!("unlinked {} from {}; the files stay where they are", f.workspace_name, f.root.display());
                if !released {
                    println!("(the running agent is still finishing a file in it; it stops after that one)");
                }
            }
            Ok(())
        }
    }
}

/// The member of `ws` with `email`.
async fn find_member(api: &Api, ws: &ApiWorkspace, email: &str) -> anyhow::Result<ApiMember> {
    let wanted = email.trim().to_lowercase();
    match api.members(ws.id).await?.into_iter().find(|m| m.email == wanted) {
        Some(m) => Ok(m),
        None => bail!("{email} is not a member of {} (see `filesync workspace members {}`)", ws.name, ws.id),
    }
}

/// Unlinks `ws`'s folder after the workspace went away for us; its files stay.
async fn forget_link(ctx: &Ctx, ws: &ApiWorkspace) -> anyhow::Result<()> {
    let (gone, kept): (Vec<LinkedFolder>, Vec<LinkedFolder>) =
        ctx.home.folders()?.into_iter().partition(|f| f.workspace_id == ws.id);
    if gone.is_empty() {
        return Ok(());
    }
    ctx.home.save_folders(&kept)?;
    for f in gone {
        release(ctx, &f).await?;
        println!("unlinked {}; the files stay where they are", f.root.display());
    }
    Ok(())
}

/// After `f` left the linked-folder list: waits until a running agent has stopped syncing it
/// (it re-reads the list within a moment and finishes the file in flight), then drops its
/// state, so a later link starts afresh. `false` if the agent is still busy with it.
async fn release(ctx: &Ctx, f: &LinkedFolder) -> anyhow::Result<bool> {
    let released = crate::agent::release_folder(&ctx.home, f.workspace_id, RELEASE_WAIT).await?;
    if released {
        crate::agent::state::remove(&ctx.home.state_path(f.workspace_id));
    }
    Ok(released)
}

/// How long `unlink` waits for a running agent to let go of the folder.
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

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
    if crate::agent::live_agent_running(&ctx.home) {
        println!("the running `filesync sync` is syncing it now");
        return Ok(());
    }
    let mut config = ctx.agent_config()?;
    config.once = true;
    config.only = Some(ws.id);
    match crate::agent::run_agent(config, std::future::pending()).await {
        Ok(()) => {
            println!("{} is in sync", root.display());
            Ok(())
        }
        // Retrying with the same address would fail the same way: say what to fix.
        Err(e @ crate::agent::AgentError::Unreachable { .. }) => Err(anyhow::Error::new(e).context(
            "linked, but no sync node answered; check the address (--sync, FILESYNC_SYNC or `sync` in config.toml), \
             then run `filesync sync`",
        )),
        Err(e) => Err(anyhow::Error::new(e).context("linked, but the first sync failed; `filesync sync` tries again")),
    }
}

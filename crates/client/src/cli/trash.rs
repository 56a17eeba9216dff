//! The trash: `filesync trash [WS]` lists deleted files and folders, `filesync trash restore PATH`
//! brings one back (a folder with everything under it still in the trash).

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};

use super::{absolute, human_bytes, print_table, Ctx};
use crate::http::{Api, ApiWorkspace};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct TrashArgs {
    /// Workspace id or name [default: the linked folder around the current directory].
    pub workspace: Option<String>,
    /// Entries deleted before this version (the next page, as the previous one says).
    #[arg(long, value_name = "VERSION")]
    pub before: Option<i64>,
    /// Entries per page, 1 to 500.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub limit: u32,
    #[command(subcommand)]
    pub action: Option<TrashCommand>,
}

#[derive(Debug, Subcommand)]
pub enum TrashCommand {
    /// Bring back a deleted file, or a deleted folder with everything under it, as it last was.
    Restore {
        /// A path inside a linked folder, or, with --workspace, a path in that workspace.
        path: String,
        /// Workspace id or name; PATH is then relative to the workspace's root.
        #[arg(long, short)]
        workspace: Option<String>,
    },
}

pub async fn run(ctx: &Ctx, args: TrashArgs) -> anyhow::Result<()> {
    let api = ctx.api()?;
    match args.action {
        None => list(ctx, &api, args.workspace.as_deref(), args.before, args.limit).await,
        Some(TrashCommand::Restore { path, workspace }) => {
            let (ws, rel) = match workspace {
                Some(w) => (ctx.resolve_workspace(&api, &w).await?, path.trim_matches('/').to_owned()),
                None => {
                    let (folder, rel) = ctx.locate(std::path::Path::new(&path))?;
                    (ctx.resolve_workspace(&api, &folder.workspace_id.to_string()).await?, rel)
                }
            };
            let restored =
                api.trash_restore(ws.id, &rel).await.with_context(|| format!("cannot restore {rel} from the trash"))?;
            let rows = restored.into_iter().map(|r| [r.version.to_string(), r.path]);
            print_table(["VERSION", "RESTORED"], rows);
            println!("a running `filesync sync` brings them into the folder");
            Ok(())
        }
    }
}

/// The workspace named, or the one linked around the current directory.
async fn workspace_of(ctx: &Ctx, api: &Api, named: Option<&str>) -> anyhow::Result<ApiWorkspace> {
    if let Some(name) = named {
        return ctx.resolve_workspace(api, name).await;
    }
    let here = absolute(std::path::Path::new("."))?;
    match ctx.home.folders()?.into_iter().find(|f| here.starts_with(&f.root)) {
        Some(f) => ctx.resolve_workspace(api, &f.workspace_id.to_string()).await,
        None => bail!("the current directory is not inside a linked folder; name a workspace: `filesync trash WS`"),
    }
}

async fn list(ctx: &Ctx, api: &Api, named: Option<&str>, before: Option<i64>, limit: u32) -> anyhow::Result<()> {
    let ws = workspace_of(ctx, api, named).await?;
    let page = api.trash(ws.id, before, limit).await?;
    if page.entries.is_empty() {
        println!("the trash of {} is empty (deleted files stay {} days)", ws.name, page.trash_days);
        return Ok(());
    }
    let rows = page.entries.into_iter().map(|e| {
        let size = if e.kind == "dir" { "-".to_owned() } else { human_bytes(e.size) };
        [
            e.deleted_at.format("%Y-%m-%d %H:%M").to_string(),
            e.deleted_by.unwrap_or_default(),
            size,
            e.expires_at.format("%Y-%m-%d").to_string(),
            if e.kind == "dir" { format!("{}/", e.path) } else { e.path },
        ]
    });
    print_table(["DELETED", "BY", "SIZE", "EXPIRES", "PATH"], rows);
    if let Some(next) = page.next_before_seq {
        println!("more: filesync trash {} --before {next}", ws.id);
    }
    Ok(())
}

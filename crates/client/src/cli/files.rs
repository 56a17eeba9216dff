//! Looking at and around files: status, history, restore, who.

use std::path::Path;

use anyhow::Context as _;

use super::Ctx;
use std::collections::BTreeSet;

use crate::agent::ignore_rules::IgnoreRules;
use crate::agent::local;
use crate::agent::state::{FolderState, StateStore};

pub fn status(ctx: &Ctx) -> anyhow::Result<()> {
    let folders = ctx.home.folders()?;
    match ctx.home.token()? {
        Some(t) => println!("logged in as {} on {}", t.email, t.server),
        None => println!("not logged in"),
    }
    println!("sync nodes: {}", ctx.sync_addrs().join(", "));
    if folders.is_empty() {
        println!("no linked folders");
        return Ok(());
    }
    for f in folders {
        let state = StateStore::peek(&ctx.home.state_path(f.workspace_id))?
            .filter(|s| s.root.as_deref() == Some(f.root.as_path()))
            .unwrap_or_default();
        let pending = local_changes(&f.root, &state);
        // A conflict copy the user has dealt with (deleted) is no longer worth a line.
        let conflicts: Vec<&String> = state.conflicts.iter().filter(|c| f.root.join(c.as_str()).exists()).collect();
        println!(
            "{} (id {}, {}) at {}: last seq {}, {} files in sync, {} pending uploads, {} conflicts",
            f.workspace_name,
            f.workspace_id,
            f.role,
            f.root.display(),
            state.last_seq,
            state.files.len(),
            pending.len(),
            conflicts.len()
        );
        for p in &pending {
            println!("  pending: {p}");
        }
        for c in &conflicts {
            println!("  conflict copy: {c}");
        }
        for p in &state.local_only {
            println!("  kept local (viewer): {p}");
        }
    }
    Ok(())
}

/// Paths that differ from the state (new, changed by size or mtime, or deleted), plus uploads the
/// agent had started; a viewer's local-only edits are listed apart. Reads no file content.
fn local_changes(root: &Path, state: &FolderState) -> BTreeSet<String> {
    let rules = IgnoreRules::load(root);
    let on_disk = local::scan_tree(root, &rules);
    let mut out: BTreeSet<String> = state.pending.clone();
    for (path, meta) in &on_disk {
        match state.files.get(path) {
            Some(e) if e.size == meta.size && e.mtime_ms == meta.mtime_ms => {}
            _ => {
                out.insert(path.clone());
            }
        }
    }
    out.extend(state.files.keys().filter(|p| !on_disk.contains_key(*p)).cloned());
    out.retain(|p| !state.local_only.contains(p));
    out
}

pub async fn history(ctx: &Ctx, path: &Path) -> anyhow::Result<()> {
    let (folder, rel) = ctx.locate(path)?;
    let is_dir = folder.root.join(&rel).is_dir();
    if IgnoreRules::load(&folder.root).is_ignored(&rel, is_dir) {
        println!("{rel} is ignored (by .filesyncignore or a built-in rule): it is not synced, so it has no history");
        return Ok(());
    }
    let api = ctx.api()?;
    let versions = match api.history(folder.workspace_id, &rel).await {
        Ok(v) => v,
        Err(e) if e.is_not_found() && is_dir => {
            println!("{rel} is a folder: history is kept per file; try `filesync history {}/FILE`", path.display());
            return Ok(());
        }
        Err(e) if e.is_not_found() => {
            println!(
                "{rel} has no history in {}: it was never synced (not uploaded yet, or never there)",
                folder.workspace_name
            );
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    if versions.is_empty() {
        println!("{rel} has no history in {}", folder.workspace_name);
        return Ok(());
    }
    let rows = versions.into_iter().map(|v| {
        let what = match &v.from_path {
            // The same row lists for both names: say which way it went.
            Some(from) => format!("from {from} to {}", v.path),
            None if v.deleted => "deleted".to_owned(),
            None => format!("{} bytes", v.size),
        };
        [v.version.to_string(), v.op, what, v.created_at.unwrap_or_default(), v.author.unwrap_or_default()]
    });
    super::print_table(["VERSION", "CHANGE", "WHAT", "WHEN", "BY"], rows);
    Ok(())
}

pub async fn restore(ctx: &Ctx, path: &Path, version: i64) -> anyhow::Result<()> {
    let (folder, rel) = ctx.locate(path)?;
    let api = ctx.api()?;
    api.restore(folder.workspace_id, &rel, version)
        .await
        .with_context(|| format!("cannot restore {rel} to version {version}"))?;
    println!("restored {rel} to version {version}; a running `filesync sync` brings it into the folder");
    Ok(())
}

pub async fn who(ctx: &Ctx, workspace: &str) -> anyhow::Result<()> {
    let api = ctx.api()?;
    let ws = ctx.resolve_workspace(&api, workspace).await?;
    let Some(online) = api.presence(ws.id).await? else {
        anyhow::bail!("the server cannot tell who is online: it runs without Redis (a single-process server)");
    };
    if online.is_empty() {
        println!("nobody is online in {}", ws.name);
    }
    if online.is_empty() {
        return Ok(());
    }
    let rows = online.into_iter().map(|p| {
        [
            if p.username.is_empty() { p.email } else { p.username },
            p.device_name.unwrap_or(p.device_id),
            p.node.unwrap_or_default(),
            p.since.map(|s| s.to_string()).unwrap_or_default(),
        ]
    });
    super::print_table(["USER", "DEVICE", "NODE", "SINCE"], rows);
    Ok(())
}

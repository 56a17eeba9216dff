//! Looking at and around files: status, history, restore, who.

use std::path::Path;

use anyhow::Context as _;

use super::Ctx;
use std::collections::BTreeSet;

use crate::agent::engine::differences;
use crate::agent::ignore_rules::IgnoreRules;
use crate::agent::local;
use crate::agent::state::{FolderState, StateStore};

/// Paths `status` lists per kind; beyond that it counts them.
const LISTED: usize = 20;

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
        // The state is counted in SQL and compared with the folder a page at a time: a folder of a
        // million files costs a walk of it, not a million entries in memory.
        let store = StateStore::open_read_only(&ctx.home.state_path(f.workspace_id))?;
        let (store, state) = match store {
            Some(s) => {
                let state = s.summary()?;
                if state.root.as_deref() == Some(f.root.as_path()) {
                    (Some(s), state)
                } else {
                    (None, FolderState::default())
                }
            }
            None => (None, FolderState::default()),
        };
        let pending = local_changes(&f.root, store.as_ref(), &state);
        // A conflict copy the user has dealt with (deleted) is no longer worth a line.
        let conflicts: Vec<&String> = state.conflicts.iter().filter(|c| f.root.join(c.as_str()).exists()).collect();
        println!(
            "{} (id {}, {}) at {}: last seq {}, {} files in sync, {} pending uploads, {} conflicts",
            f.workspace_name,
            f.workspace_id,
            f.role,
            f.root.display(),
            state.last_seq,
            state.files,
            pending.count,
            conflicts.len()
        );
        list("pending", pending.count, pending.first.iter());
        list("conflict copy", conflicts.len(), conflicts.into_iter());
        list("kept local (viewer)", state.local_only.len(), state.local_only.iter());
    }
    Ok(())
}

/// One line per path, the first [`LISTED`] of `count`, then how many more there are.
fn list<'a>(what: &str, count: usize, paths: impl Iterator<Item = &'a String>) {
    for p in paths.take(LISTED) {
        println!("  {what}: {p}");
    }
    if count > LISTED {
        println!("  … and {} more {what}", count - LISTED);
    }
}

/// How many paths differ from the state, and the first [`LISTED`] of them in path order.
#[derive(Debug, Default, PartialEq, Eq)]
struct Pending {
    count: usize,
    first: BTreeSet<String>,
}

impl Pending {
    fn add(&mut self, path: String) {
        self.count += 1;
        self.first.insert(path);
        if self.first.len() > LISTED {
            self.first.pop_last();
        }
    }
}

/// Paths that differ from the state (new, changed by size or mtime, or deleted), plus uploads the
/// agent had started; a viewer's local-only edits are listed apart. Reads no file content; holds
/// a page of the state and [`LISTED`] paths, never the whole tree (no state: every file is new).
fn local_changes(root: &Path, store: Option<&StateStore>, state: &FolderState) -> Pending {
    let rules = IgnoreRules::load(root);
    let mut out = Pending::default();
    let mut each = |p: String| {
        if !state.pending.contains(&p) && !state.local_only.contains(&p) {
            out.add(p);
        }
    };
    match store {
        Some(store) => differences(store, root, &rules, &mut each),
        None => local::walk_paths(root, &rules, |batch| {
            batch.into_iter().for_each(&mut each);
            true
        }),
    }
    for p in state.pending.iter().filter(|p| !state.local_only.contains(*p)) {
        out.add(p.clone());
    }
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
    let history = match api.history(folder.workspace_id, &rel).await {
        Ok(h) => h,
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
    if history.versions.is_empty() {
        println!("{rel} has no history in {}", folder.workspace_name);
        return Ok(());
    }
    let expired = history.expired_versions;
    let rows = history.versions.into_iter().map(|v| {
        let what = match &v.from_path {
            // The same row lists for both names: say which way it went.
            Some(from) => format!("from {from} to {}", v.path),
            None if v.deleted => "deleted".to_owned(),
            None => format!("{} bytes", v.size),
        };
        [v.version.to_string(), v.op, what, v.created_at.unwrap_or_default(), v.author.unwrap_or_default()]
    });
    super::print_table(["VERSION", "CHANGE", "WHAT", "WHEN", "BY"], rows);
    if expired > 0 {
        println!("{expired} older versions expired (see `filesync workspace retention {}`)", folder.workspace_id);
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::state::Entry;
    use filesync_core::path::WsPath;
    use filesync_core::WorkspaceId;

    /// A folder of a few thousand files, its state kept by an agent (entries, marks), then changed
    /// behind its back: `status` counts every difference once, lists the first ones in path order,
    /// and counts the state in SQL.
    #[test]
    fn status_counts_a_large_state_and_its_differences() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap().join("folder");
        let db = dir.path().join("state.db");
        let mut store = StateStore::load(&db, WorkspaceId(1), &root).unwrap();
        let n = 3000;
        for i in 0..n {
            let rel = format!("d{}/f{i:04}.txt", i % 7);
            let abs = root.join(&rel);
            std::fs::create_dir_all(abs.parent().unwrap()).unwrap();
            std::fs::write(&abs, format!("file {i}")).unwrap();
            let m = local::stat(&root, &WsPath::parse(&rel).unwrap()).unwrap();
            let e = Entry { version: i + 1, hash: [1; 32], size: m.size, mtime_ms: m.mtime_ms, mode: m.mode };
            store.set(&rel, &e, &[]);
        }
        store.advance(n);
        let path = |i: i64| format!("d{}/f{i:04}.txt", i % 7);
        // 25 edited (another size), 5 deleted, 30 new, two uploads under way (one of them also
        // edited: counted once), one viewer's edit (listed apart, not pending).
        for i in 100..125 {
            std::fs::write(root.join(path(i)), "edited, longer than before").unwrap();
        }
        for i in 200..205 {
            std::fs::remove_file(root.join(path(i))).unwrap();
        }
        for i in 0..30 {
            std::fs::write(root.join(format!("new-{i:02}.txt")), "new").unwrap();
        }
        store.mark_pending(&path(100), true);
        store.mark_pending(&path(300), true);
        std::fs::write(root.join(path(400)), "a viewer's edit, longer").unwrap();
        store.keep_local(&path(400));
        store.save().unwrap();
        drop(store);

        let store = StateStore::open_read_only(&db).unwrap().unwrap();
        let state = store.summary().unwrap();
        assert_eq!((state.files, state.last_seq, state.root.as_deref()), (n as usize, n, Some(root.as_path())));
        let pending = local_changes(&root, Some(&store), &state);
        assert_eq!(pending.count, 25 + 5 + 30 + 1);
        let first: Vec<&str> = pending.first.iter().map(String::as_str).collect();
        assert_eq!(first.len(), LISTED);
        assert_eq!((first[0], first[LISTED - 1]), ("d0/f0105.txt", "d4/f0123.txt"));
        assert!(!first.contains(&path(400).as_str()));
        // Without a state for this folder, every file on disk is new.
        let none = local_changes(&root, None, &FolderState::default());
        assert_eq!(none.count, n as usize - 5 + 30);
    }
}

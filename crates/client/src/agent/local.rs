//! The local side of a folder: listing it, reading file facts, and changing it
//! safely. A downloaded file is written to a temp file in the same directory
//! and renamed into place, so no other program ever sees half a file; a crash
//! leaves at most a temp file, which the next start removes. Every change (and
//! every stat) goes through the library's [`Folder`]: resolved beneath a handle
//! on the folder, never through a symbolic link, with no check-then-use race.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use filesync_core::chunking::{self, ChunkRef, FileScan};
use filesync_core::path::WsPath;

use super::ignore_rules::IgnoreRules;

pub use filesync_proto_client::download::{system_time_ms, LocalFile, StagedFile, TempFile};
pub use filesync_proto_client::folder::Folder;

/// The workspace path of `abs` under `root`, if it is a valid one (UTF-8, inside, not the root).
pub fn rel_of(root: &Path, abs: &Path) -> Option<String> {
    let rel = abs.strip_prefix(root).ok()?;
    let mut parts = Vec::new();
    for c in rel.components() {
        match c {
            std::path::Component::Normal(s) => parts.push(s.to_str()?),
            _ => return None,
        }
    }
    let rel = parts.join("/");
    WsPath::parse(&rel).ok()?;
    Some(rel)
}

/// `root` joined with a workspace path. Only a [`WsPath`] can be joined: it cannot climb out of
/// `root`. For reading and naming only; what writes, renames, deletes or stats goes through a
/// [`Folder`], which resolves beneath a handle on the folder and never follows a link.
pub fn abs_of(root: &Path, rel: &WsPath) -> PathBuf {
    let mut p = root.to_path_buf();
    for part in rel.components() {
        p.push(part);
    }
    p
}

/// Creates the directory `rel` and its parents, none through a link.
pub fn make_dir(root: &Path, rel: &WsPath) -> std::io::Result<()> {
    Folder::open(root)?.make_dir(rel)
}

/// Removes the directory `rel` if it is empty.
pub fn remove_dir(root: &Path, rel: &WsPath) -> std::io::Result<()> {
    Folder::open(root)?.remove_dir(rel)
}

/// Facts about a regular file at `rel`; `None` if it is missing, not a regular file, or reached
/// through a link.
pub fn stat(root: &Path, rel: &WsPath) -> Option<LocalFile> {
    Folder::open(root).ok()?.stat(rel)
}

/// Every regular file under `root` that is not ignored. Symlinks are not followed nor synced.
pub fn scan_tree(root: &Path, rules: &IgnoreRules) -> BTreeMap<String, LocalFile> {
    scan_under(root, root, rules)
}

/// Like [`scan_tree`], limited to the directory `dir` (absolute, under `root`).
pub fn scan_under(root: &Path, dir: &Path, rules: &IgnoreRules) -> BTreeMap<String, LocalFile> {
    let mut out = BTreeMap::new();
    for entry in walker(root, dir, rules).flatten() {
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let Some(rel) = rel_of(root, entry.path()) else { continue };
        if let Ok(meta) = entry.path().symlink_metadata() {
            out.insert(rel, LocalFile::from_metadata(&meta));
        }
    }
    out
}

/// Files found per call of [`walk_paths`]' callback.
const WALK_BATCH: usize = 1024;

/// The workspace paths of every regular file under `root` that is not ignored, [`WALK_BATCH`] at
/// a time, without a stat each (the directory listing tells files apart): a whole tree is never
/// held at once. Stops early when `each` returns `false`. Blocking.
pub fn walk_paths(root: &Path, rules: &IgnoreRules, each: impl FnMut(Vec<String>) -> bool) {
    walk_paths_under(root, root, rules, each);
}

/// [`walk_paths`] of the directory `dir` (absolute, under `root`) only.
pub fn walk_paths_under(root: &Path, dir: &Path, rules: &IgnoreRules, mut each: impl FnMut(Vec<String>) -> bool) {
    let mut batch = Vec::with_capacity(WALK_BATCH);
    for entry in walker(root, dir, rules).flatten() {
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let Some(rel) = rel_of(root, entry.path()) else { continue };
        batch.push(rel);
        if batch.len() == WALK_BATCH && !each(std::mem::replace(&mut batch, Vec::with_capacity(WALK_BATCH))) {
            return;
        }
    }
    if !batch.is_empty() {
        each(batch);
    }
}

/// A walk of `dir` (under `root`) that never enters an ignored directory nor follows a link.
fn walker(root: &Path, dir: &Path, rules: &IgnoreRules) -> ignore::Walk {
    ignore::WalkBuilder::new(dir)
        .standard_filters(false)
        .hidden(false)
        .follow_links(false)
        .filter_entry({
            let root = root.to_path_buf();
            let rules = rules.clone();
            move |entry| {
                if entry.depth() == 0 {
                    return true;
                }
                let is_dir = entry.file_type().is_some_and(|t| t.is_dir());
                // Ignored directories are not even entered (think node_modules).
                rel_of(&root, entry.path()).is_some_and(|rel| !rules.is_ignored(&rel, is_dir))
            }
        })
        .build()
}

/// Opens the regular file `rel` for reading, never through a link.
pub fn open_file(root: &Path, rel: &WsPath) -> std::io::Result<std::fs::File> {
    Folder::open(root)?.open_file(rel)
}

/// Chunks and hashes the file `rel`, streaming (never the whole file in memory), not through a
/// link; `before`: the chunks of its previous content, if known ([`chunking::rescan`]).
/// Blocking: call from a blocking task.
pub fn scan_file(root: &Path, rel: &WsPath, before: &[ChunkRef]) -> std::io::Result<FileScan> {
    use std::io::Read;
    let mut file = open_file(root, rel)?;
    // Small files (most of a source tree) are read whole and hashed once; the streaming chunker
    // reads big ones in its own large blocks.
    let mut head = Vec::new();
    (&mut file).take(u64::from(chunking::MIN_CHUNK) + 1).read_to_end(&mut head)?;
    if let Some(scan) = chunking::scan_small(&head) {
        return Ok(scan);
    }
    chunking::rescan(std::io::Cursor::new(head).chain(file), before)
}

/// A temp file for a download of `rel` beside it (its directory made if missing, never through
/// a link).
pub fn temp_beside(root: &Path, rel: &WsPath) -> std::io::Result<TempFile> {
    Folder::open(root)?.temp_beside(rel)
}

/// Removes temp files left by a crashed run. Returns how many.
pub fn remove_stale_temps(root: &Path) -> usize {
    let Ok(folder) = Folder::open(root) else { return 0 };
    let mut removed = 0;
    let walker = ignore::WalkBuilder::new(root).standard_filters(false).hidden(false).follow_links(false).build();
    for entry in walker.flatten() {
        let is_temp = entry.file_name().to_str().is_some_and(IgnoreRules::is_temp);
        if !is_temp || !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let Some(rel) = rel_of(root, entry.path()).and_then(|r| WsPath::parse(&r).ok()) else { continue };
        if folder.remove_file(&rel).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Deletes a file, then every directory above it (up to, not including, `root`) left empty.
pub fn remove_file(root: &Path, rel: &WsPath) -> std::io::Result<()> {
    let folder = Folder::open(root)?;
    folder.remove_file(rel)?;
    folder.prune_empty_parents(rel);
    Ok(())
}

/// Renames `from` to `to` (both workspace paths), creating `to`'s directory and removing
/// `from`'s directories left empty. Fails if `to` exists or either path goes through a link.
pub fn rename(root: &Path, from: &WsPath, to: &WsPath) -> std::io::Result<()> {
    Folder::open(root)?.rename(from, to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_skips_ignored_and_temp_files_and_stale_temps_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/c.txt"), b"c").unwrap();
        std::fs::write(root.join("a/.filesync-tmp-x"), b"partial").unwrap();
        std::fs::write(root.join("x.swp"), b"swap").unwrap();
        std::fs::write(root.join(".filesyncignore"), b"secret/\n").unwrap();
        std::fs::create_dir_all(root.join("secret")).unwrap();
        std::fs::write(root.join("secret/key"), b"k").unwrap();
        let rules = IgnoreRules::load(root);
        let found: Vec<String> = scan_tree(root, &rules).into_keys().collect();
        assert_eq!(found, vec![".filesyncignore", "a/b/c.txt"]);
        assert_eq!(remove_stale_temps(root), 1);
        assert!(!root.join("a/.filesync-tmp-x").exists());
    }

    #[test]
    fn paths_outside_or_invalid_are_refused() {
        let root = Path::new("/r");
        assert_eq!(rel_of(root, Path::new("/r/a/b")).as_deref(), Some("a/b"));
        assert_eq!(rel_of(root, Path::new("/r")), None);
        assert_eq!(rel_of(root, Path::new("/other/a")), None);
    }
}

//! The local side of a folder: listing it, reading file facts, and changing it
//! safely. A downloaded file is written to a temp file in the same directory
//! and renamed into place, so no other program ever sees half a file; a crash
//! leaves at most a temp file, which the next start removes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use filesync_core::chunking::{self, FileScan};
use filesync_core::path::WsPath;

use super::ignore_rules::IgnoreRules;

pub use filesync_proto_client::download::{system_time_ms, LocalFile, StagedFile, TempFile};

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
/// `root`. For reading; what writes, renames, deletes or stats goes through [`resolve`] or
/// [`make_parents`], which also refuse a path through a symbolic link inside the folder.
pub fn abs_of(root: &Path, rel: &WsPath) -> PathBuf {
    let mut p = root.to_path_buf();
    for part in rel.components() {
        p.push(part);
    }
    p
}

fn through_link(rel: &WsPath) -> std::io::Error {
    std::io::Error::other(format!("{rel} goes through a symbolic link or a file inside the folder; not followed"))
}

/// `root` joined with `rel`, if no directory on the way (below `root`) is a symbolic link or
/// something other than a directory: a link the user made inside the folder never lets a change
/// reach outside it. A missing directory ends the check (nothing lies beyond it).
pub fn resolve(root: &Path, rel: &WsPath) -> std::io::Result<PathBuf> {
    let mut p = root.to_path_buf();
    let mut parts = rel.components().peekable();
    let mut checking = true;
    while let Some(part) = parts.next() {
        p.push(part);
        if checking && parts.peek().is_some() {
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(through_link(rel)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => checking = false,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(p)
}

/// Like [`resolve`], creating the missing directories of `rel` (never following a link).
pub fn make_parents(root: &Path, rel: &WsPath) -> std::io::Result<PathBuf> {
    let mut p = root.to_path_buf();
    let mut parts = rel.components().peekable();
    while let Some(part) = parts.next() {
        p.push(part);
        if parts.peek().is_some() {
            make_dir_at(&p).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotADirectory {
                    through_link(rel)
                } else {
                    e
                }
            })?;
        }
    }
    Ok(p)
}

/// Creates the directory `abs` if missing; an error if something else (a link, a file) is there.
fn make_dir_at(abs: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(abs) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => return Err(std::io::ErrorKind::NotADirectory.into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    match std::fs::create_dir(abs) {
        Ok(()) => Ok(()),
        // Made meanwhile (by the user or another task): fine if it is a real directory.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => match std::fs::symlink_metadata(abs) {
            Ok(m) if m.is_dir() => Ok(()),
            _ => Err(std::io::ErrorKind::NotADirectory.into()),
        },
        Err(e) => Err(e),
    }
}

/// Creates the directory `rel` and its parents, none through a link.
pub fn make_dir(root: &Path, rel: &WsPath) -> std::io::Result<()> {
    let abs = make_parents(root, rel)?;
    make_dir_at(&abs).map_err(|e| if e.kind() == std::io::ErrorKind::NotADirectory { through_link(rel) } else { e })
}

/// Removes the directory `rel` if it is empty.
pub fn remove_dir(root: &Path, rel: &WsPath) -> std::io::Result<()> {
    std::fs::remove_dir(resolve(root, rel)?)
}

/// Facts about a regular file at `rel`; `None` if it is missing, not a regular file, or reached
/// through a link.
pub fn stat(root: &Path, rel: &WsPath) -> Option<LocalFile> {
    let meta = std::fs::symlink_metadata(resolve(root, rel).ok()?).ok()?;
    meta.is_file().then(|| LocalFile::from_metadata(&meta))
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
pub fn walk_paths(root: &Path, rules: &IgnoreRules, mut each: impl FnMut(Vec<String>) -> bool) {
    let mut batch = Vec::with_capacity(WALK_BATCH);
    for entry in walker(root, root, rules).flatten() {
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

/// Chunks and hashes a file, streaming (never the whole file in memory). Blocking: call from a blocking task.
pub fn scan_file(path: &Path) -> std::io::Result<FileScan> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    // Small files (most of a source tree) are read whole and hashed once; the streaming chunker
    // reads big ones in its own large blocks.
    let mut head = Vec::new();
    (&mut file).take(u64::from(chunking::MIN_CHUNK) + 1).read_to_end(&mut head)?;
    if let Some(scan) = chunking::scan_small(&head) {
        return Ok(scan);
    }
    chunking::scan(std::io::Cursor::new(head).chain(file))
}

/// A temp file for a download of `rel` beside it (its directory made if missing, never through
/// a link).
pub fn temp_beside(root: &Path, rel: &WsPath) -> std::io::Result<TempFile> {
    TempFile::beside(make_parents(root, rel)?)
}

/// Removes temp files left by a crashed run. Returns how many.
pub fn remove_stale_temps(root: &Path) -> usize {
    let mut removed = 0;
    let walker = ignore::WalkBuilder::new(root).standard_filters(false).hidden(false).follow_links(false).build();
    for entry in walker.flatten() {
        let is_temp = entry.file_name().to_str().is_some_and(IgnoreRules::is_temp);
        if is_temp && entry.file_type().is_some_and(|t| t.is_file()) && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Deletes a file, then every directory above it (up to, not including, `root`) left empty.
pub fn remove_file(root: &Path, rel: &WsPath) -> std::io::Result<()> {
    let abs = resolve(root, rel)?;
    match std::fs::remove_file(&abs) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    prune_empty_parents(root, &abs);
    Ok(())
}

/// Removes now-empty directories from `abs`'s parent upwards, stopping at `root` or the first non-empty one.
pub fn prune_empty_parents(root: &Path, abs: &Path) {
    let mut dir = abs.parent();
    while let Some(d) = dir {
        if d == root || !d.starts_with(root) || std::fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
}

/// Renames `from` to `to` (both workspace paths), creating `to`'s directory. Fails if `to` exists
/// or either path goes through a link.
pub fn rename(root: &Path, from: &WsPath, to: &WsPath) -> std::io::Result<()> {
    let src = resolve(root, from)?;
    if resolve(root, to)?.symlink_metadata().is_ok() {
        return Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, format!("{to} already exists")));
    }
    let dst = make_parents(root, to)?;
    std::fs::rename(&src, &dst)?;
    prune_empty_parents(root, &src);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(p: &str) -> WsPath {
        WsPath::parse(p).unwrap()
    }

    #[test]
    fn a_download_appears_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("sub/f.txt");
        let mut t = temp_beside(dir.path(), &w("sub/f.txt")).unwrap();
        t.write(b"hello").unwrap();
        assert!(!dest.exists(), "nothing at the destination before the rename");
        let facts = t.finish(0o640, 1_600_000_000_123).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello");
        assert_eq!(facts.mtime_ms, 1_600_000_000_123);
        assert_eq!(stat(dir.path(), &w("sub/f.txt")).unwrap(), facts);
        #[cfg(unix)]
        assert_eq!(facts.mode, 0o640);
        // An abandoned one leaves no trace.
        let mut t = temp_beside(dir.path(), &w("sub/f.txt")).unwrap();
        t.write(b"partial").unwrap();
        drop(t);
        assert_eq!(std::fs::read_dir(dir.path().join("sub")).unwrap().count(), 1);
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello");
    }

    /// Thousands of downloads in one run must not use up the process's file descriptors.
    #[cfg(target_os = "linux")]
    #[test]
    fn finished_downloads_close_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let open_fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
        // Warm up anything lazily opened, then count.
        temp_beside(dir.path(), &w("warm")).unwrap().finish(0, 1_600_000_000_000).unwrap();
        let before = open_fds();
        for i in 0..200 {
            let mut t = temp_beside(dir.path(), &w(&format!("f{i}"))).unwrap();
            t.write(b"x").unwrap();
            t.finish(0o644, 1_600_000_000_000).unwrap();
        }
        // Other tests run in parallel threads and may hold a few descriptors meanwhile.
        assert!(open_fds() < before + 20, "{} descriptors open after 200 downloads, {before} before", open_fds());
    }

    /// A batch of downloads: written and closed, made durable together, then renamed; the ones
    /// never placed leave nothing behind.
    #[test]
    fn staged_downloads_appear_only_when_placed_and_hold_no_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let open_fds = || std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0);
        let before = open_fds();
        let mut staged = Vec::new();
        for i in 0..40 {
            let mut t = temp_beside(dir.path(), &w(&format!("d/f{i}"))).unwrap();
            t.write(format!("file {i}").as_bytes()).unwrap();
            staged.push(t.stage(0o600, 1_600_000_000_000 + i).unwrap());
        }
        assert!(open_fds() < before + 20, "staged files keep no descriptor open");
        assert_eq!(stat(dir.path(), &w("d/f0")), None, "nothing at the destination before the rename");
        // Above the syncfs threshold, and below it (one fsync each).
        filesync_proto_client::download::make_durable(dir.path(), &staged.iter().collect::<Vec<_>>()).unwrap();
        filesync_proto_client::download::make_durable(dir.path(), &staged.iter().take(3).collect::<Vec<_>>()).unwrap();
        let unplaced = staged.split_off(30);
        for (i, s) in staged.into_iter().enumerate() {
            let facts = s.finish().unwrap();
            assert_eq!(std::fs::read(dir.path().join(format!("d/f{i}"))).unwrap(), format!("file {i}").as_bytes());
            assert_eq!(stat(dir.path(), &w(&format!("d/f{i}"))), Some(facts));
            assert_eq!(facts.mtime_ms, 1_600_000_000_000 + i as i64);
            #[cfg(unix)]
            assert_eq!(facts.mode, 0o600);
        }
        drop(unplaced);
        assert_eq!(std::fs::read_dir(dir.path().join("d")).unwrap().count(), 30, "no temp file is left");
    }

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
    fn removing_and_renaming_tidy_empty_directories() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/c.txt"), b"c").unwrap();
        rename(root, &w("a/b/c.txt"), &w("d/e.txt")).unwrap();
        assert!(!root.join("a").exists());
        assert_eq!(std::fs::read(root.join("d/e.txt")).unwrap(), b"c");
        std::fs::write(root.join("d/f.txt"), b"f").unwrap();
        assert!(rename(root, &w("d/e.txt"), &w("d/f.txt")).is_err(), "never overwrite by rename");
        remove_file(root, &w("d/e.txt")).unwrap();
        assert!(root.join("d").exists());
        remove_file(root, &w("d/f.txt")).unwrap();
        assert!(!root.join("d").exists() && root.exists());
    }

    /// A link the user made inside the folder, pointing outside it: nothing is written, renamed,
    /// deleted or read through it, and the files outside stay as they were.
    #[cfg(unix)]
    #[test]
    fn nothing_goes_through_a_link_inside_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = (dir.path().join("root"), dir.path().join("outside"));
        std::fs::create_dir_all(root.join("real")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("victim"), b"keep").unwrap();
        std::fs::write(root.join("real/f"), b"mine").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        std::fs::write(root.join("plain"), b"file").unwrap();

        assert_eq!(stat(&root, &w("link/victim")), None, "not read through the link");
        assert!(temp_beside(&root, &w("link/new")).is_err());
        assert!(temp_beside(&root, &w("link/deeper/new")).is_err());
        assert!(temp_beside(&root, &w("plain/new")).is_err(), "a file is not a directory");
        assert!(rename(&root, &w("real/f"), &w("link/f")).is_err());
        assert!(rename(&root, &w("link/victim"), &w("real/v")).is_err());
        assert!(remove_file(&root, &w("link/victim")).is_err());
        assert!(make_dir(&root, &w("link/d")).is_err());
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1, "nothing new outside");
        assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"keep");
        assert_eq!(std::fs::read(root.join("real/f")).unwrap(), b"mine");
        // Real directories still work, made as needed.
        make_dir(&root, &w("a/b")).unwrap();
        rename(&root, &w("real/f"), &w("a/b/f")).unwrap();
        assert_eq!(stat(&root, &w("a/b/f")).map(|f| f.size), Some(4));
    }

    #[test]
    fn paths_outside_or_invalid_are_refused() {
        let root = Path::new("/r");
        assert_eq!(rel_of(root, Path::new("/r/a/b")).as_deref(), Some("a/b"));
        assert_eq!(rel_of(root, Path::new("/r")), None);
        assert_eq!(rel_of(root, Path::new("/other/a")), None);
    }
}

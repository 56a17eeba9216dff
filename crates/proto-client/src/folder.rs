//! Changing files inside a folder through a handle on the folder, never through a symbolic link.
//!
//! Every path is resolved *beneath* an open handle on the folder: on Linux with one `openat2`
//! (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`), elsewhere, on a kernel without it, or to create
//! missing directories, one component at a time with `O_NOFOLLOW`. The last component is then
//! created, renamed or removed by name relative to its directory's handle (`openat`, `renameat`,
//! `unlinkat`, `mkdirat`), which never follows a link in that name either. There is no check to
//! race: a directory swapped for a link between two steps is refused by the kernel at the use
//! (`ELOOP`/`ENOTDIR`), so nothing is created, written, renamed or removed outside the folder.
//!
//! A directory opened this way stays the same directory for as long as it is held: if it is moved
//! (inside the folder) meanwhile, what is written goes where it went.

use std::ffi::OsString;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use filesync_core::path::WsPath;
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::download::{LocalFile, TempFile};

/// How directories on the way are opened: for reading (so they can be fsynced), never a link.
const DIR_FLAGS: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);

/// An open folder: the root every path of [`WsPath`] is resolved beneath.
#[derive(Debug)]
pub struct Folder {
    fd: OwnedFd,
    path: PathBuf,
}

/// The directory part and the name of a path: `a/b/c` → (`a/b`, `c`).
fn split(rel: &WsPath) -> (&str, &str) {
    let dir = rel.dir();
    let name = if dir.is_empty() { rel.as_str() } else { &rel.as_str()[dir.len() + 1..] };
    (dir, name)
}

fn through_link(what: &str) -> io::Error {
    io::Error::other(format!("{what} goes through a symbolic link or a file inside the folder; not followed"))
}

/// `e` as an I/O error; a link or a non-directory on the way (or an escape) named as such.
fn refused(e: Errno, what: &str) -> io::Error {
    match e {
        Errno::LOOP | Errno::NOTDIR | Errno::XDEV => through_link(what),
        e => e.into(),
    }
}

#[cfg(target_os = "linux")]
static NO_OPENAT2: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl Folder {
    /// Opens the folder at `path`. The folder itself is the one the user chose, so links in
    /// `path` are followed; nothing below it is.
    pub fn open(path: &Path) -> io::Result<Folder> {
        let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        Ok(Folder { fd, path: path.to_path_buf() })
    }

    /// Where the folder is (for messages and for reading).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the directory `dir` beneath the folder (`""`: the folder itself; otherwise valid
    /// path components joined by `/`), following no link.
    pub(crate) fn open_dir(&self, dir: &str) -> io::Result<OwnedFd> {
        #[cfg(target_os = "linux")]
        if !NO_OPENAT2.load(std::sync::atomic::Ordering::Relaxed) {
            use rustix::fs::ResolveFlags;
            let path = if dir.is_empty() { "." } else { dir };
            // EAGAIN: a rename somewhere on the system during the lookup; it is only retried.
            for _ in 0..16 {
                match rustix::fs::openat2(
                    &self.fd,
                    path,
                    DIR_FLAGS,
                    Mode::empty(),
                    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
                ) {
                    Ok(fd) => return Ok(fd),
                    Err(Errno::AGAIN) => continue,
                    Err(Errno::NOSYS) => {
                        // A kernel before 5.6: one component at a time from now on.
                        NO_OPENAT2.store(true, std::sync::atomic::Ordering::Relaxed);
                        break;
                    }
                    // Refused by a seccomp filter (some containers), or a real EPERM: the walk says which.
                    Err(Errno::PERM) => break,
                    Err(e) => return Err(refused(e, dir)),
                }
            }
        }
        self.walk(dir, false)
    }

    /// Opens `dir` one component at a time, each with `O_NOFOLLOW` relative to the one before;
    /// `create`: missing directories are made on the way.
    pub(crate) fn walk(&self, dir: &str, create: bool) -> io::Result<OwnedFd> {
        let mut fd = rustix::fs::openat(&self.fd, ".", DIR_FLAGS, Mode::empty())?;
        for part in dir.split('/').filter(|c| !c.is_empty()) {
            let next = match rustix::fs::openat(&fd, part, DIR_FLAGS, Mode::empty()) {
                Err(Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(&fd, part, Mode::from_raw_mode(0o777)) {
                        // Made meanwhile (by the user or another task): fine if it is a real directory.
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(refused(e, dir)),
                    }
                    rustix::fs::openat(&fd, part, DIR_FLAGS, Mode::empty())
                }
                r => r,
            };
            fd = next.map_err(|e| refused(e, dir))?;
        }
        Ok(fd)
    }

    /// Opens `dir` beneath the folder, making the directories that are missing.
    pub(crate) fn make_dirs(&self, dir: &str) -> io::Result<OwnedFd> {
        match self.open_dir(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.walk(dir, true),
            r => r,
        }
    }

    /// A temp file for a download of `rel`, in `rel`'s directory (made if missing).
    pub fn temp_beside(&self, rel: &WsPath) -> io::Result<TempFile> {
        let (dir, name) = split(rel);
        let fd = self.make_dirs(dir)?;
        TempFile::create(fd, self.path.clone(), dir.to_owned(), OsString::from(name))
    }

    /// Creates the directory `rel` and its parents.
    pub fn make_dir(&self, rel: &WsPath) -> io::Result<()> {
        self.make_dirs(rel.as_str()).map(drop)
    }

    /// Removes the directory `rel` if it is empty.
    pub fn remove_dir(&self, rel: &WsPath) -> io::Result<()> {
        let (dir, name) = split(rel);
        let fd = self.open_dir(dir)?;
        rustix::fs::unlinkat(&fd, name, AtFlags::REMOVEDIR).map_err(|e| refused(e, rel))
    }

    /// Removes the file (or link) `rel`; a missing one is not an error.
    pub fn remove_file(&self, rel: &WsPath) -> io::Result<()> {
        let (dir, name) = split(rel);
        let fd = match self.open_dir(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            r => r?,
        };
        match rustix::fs::unlinkat(&fd, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(refused(e, rel)),
        }
    }

    /// Removes the directories of `rel` left empty, innermost first, up to (not including) the
    /// folder; stops at the first that is not empty.
    pub fn prune_empty_parents(&self, rel: &WsPath) {
        let mut dir = rel.dir();
        while !dir.is_empty() {
            let (parent, name) = dir.rsplit_once('/').unwrap_or(("", dir));
            let Ok(fd) = self.open_dir(parent) else { return };
            if rustix::fs::unlinkat(&fd, name, AtFlags::REMOVEDIR).is_err() {
                return;
            }
            dir = parent;
        }
    }

    /// Renames `from` to `to`, making `to`'s directory, then removes `from`'s directories left
    /// empty. Never replaces: fails if `to` exists.
    pub fn rename(&self, from: &WsPath, to: &WsPath) -> io::Result<()> {
        let ((from_dir, from_name), (to_dir, to_name)) = (split(from), split(to));
        let src = self.open_dir(from_dir)?;
        let exists = || io::Error::new(io::ErrorKind::AlreadyExists, format!("{to} already exists"));
        match self.open_dir(to_dir) {
            Ok(dst) if rustix::fs::statat(&dst, to_name, AtFlags::SYMLINK_NOFOLLOW).is_ok() => return Err(exists()),
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let dst = self.make_dirs(to_dir)?;
        no_replace_rename(&src, from_name, &dst, to_name).map_err(|e| match e {
            Errno::EXIST => exists(),
            e => refused(e, from),
        })?;
        self.prune_empty_parents(from);
        Ok(())
    }

    /// Facts about the regular file `rel`; `None` if it is missing, not a regular file, or
    /// reached through a link.
    pub fn stat(&self, rel: &WsPath) -> Option<LocalFile> {
        let regular = |st: rustix::fs::Stat| {
            (rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile)
                .then(|| LocalFile::from_stat(&st))
        };
        #[cfg(target_os = "linux")]
        if !NO_OPENAT2.load(std::sync::atomic::Ordering::Relaxed) {
            use rustix::fs::ResolveFlags;
            // One lookup (a rescan stats every file): the file itself, a link as itself (`O_PATH |
            // O_NOFOLLOW`), no link on the way.
            let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            for _ in 0..16 {
                let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS;
                match rustix::fs::openat2(&self.fd, rel.as_str(), flags, Mode::empty(), how) {
                    Ok(fd) => return regular(rustix::fs::fstat(&fd).ok()?),
                    Err(Errno::AGAIN) => continue,
                    Err(Errno::NOSYS | Errno::PERM) => break,
                    Err(_) => return None,
                }
            }
        }
        let (dir, name) = split(rel);
        regular(rustix::fs::statat(self.open_dir(dir).ok()?, name, AtFlags::SYMLINK_NOFOLLOW).ok()?)
    }

    /// Opens the regular file `rel` for reading, not through a link.
    pub fn open_file(&self, rel: &WsPath) -> io::Result<std::fs::File> {
        let (dir, name) = split(rel);
        let fd = self.open_dir(dir)?;
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
        let file =
            std::fs::File::from(rustix::fs::openat(&fd, name, flags, Mode::empty()).map_err(|e| refused(e, rel))?);
        if !file.metadata()?.is_file() {
            return Err(io::Error::other(format!("{rel} is not a regular file")));
        }
        Ok(file)
    }
}

/// `renameat2(RENAME_NOREPLACE)`: the destination cannot appear between a check and the rename.
/// A file system without it gets the check, then a plain rename.
fn no_replace_rename(src: &OwnedFd, from: &str, dst: &OwnedFd, to: &str) -> Result<(), Errno> {
    #[cfg(target_os = "linux")]
    match rustix::fs::renameat_with(src, from, dst, to, rustix::fs::RenameFlags::NOREPLACE) {
        Err(Errno::INVAL | Errno::NOSYS) => {}
        r => return r,
    }
    if rustix::fs::statat(dst, to, AtFlags::SYMLINK_NOFOLLOW).is_ok() {
        return Err(Errno::EXIST);
    }
    rustix::fs::renameat(src, from, dst, to)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(p: &str) -> WsPath {
        WsPath::parse(p).unwrap()
    }

    /// The names and contents of every entry under `dir` (links as their targets), sorted.
    fn listing(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut dirs = vec![dir.to_path_buf()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let t = e.file_type().unwrap();
                if t.is_dir() {
                    dirs.push(e.path());
                    out.push((e.path(), b"<dir>".to_vec()));
                } else if t.is_symlink() {
                    out.push((e.path(), std::fs::read_link(e.path()).unwrap().into_os_string().into_encoded_bytes()));
                } else {
                    out.push((e.path(), std::fs::read(e.path()).unwrap_or_default()));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn a_download_appears_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let folder = Folder::open(dir.path()).unwrap();
        let dest = dir.path().join("sub/f.txt");
        let mut t = folder.temp_beside(&w("sub/f.txt")).unwrap();
        t.write(b"hello").unwrap();
        assert!(!dest.exists(), "nothing at the destination before the rename");
        assert_eq!(t.dest(), dest);
        let facts = t.finish(0o640, 1_600_000_000_123).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello");
        assert_eq!(facts.mtime_ms, 1_600_000_000_123);
        assert_eq!(folder.stat(&w("sub/f.txt")).unwrap(), facts);
        assert_eq!(facts.mode, 0o640);
        // An abandoned one leaves no trace.
        let mut t = folder.temp_beside(&w("sub/f.txt")).unwrap();
        t.write(b"partial").unwrap();
        drop(t);
        assert_eq!(std::fs::read_dir(dir.path().join("sub")).unwrap().count(), 1);
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello");
    }

    /// A modification time before 1970 reads back as written (the stat beneath the folder and
    /// the file's own metadata agree).
    #[test]
    fn times_before_the_epoch_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let folder = Folder::open(dir.path()).unwrap();
        let facts = folder.temp_beside(&w("old")).unwrap().finish(0o600, -1_500).unwrap();
        assert_eq!(facts.mtime_ms, -1_500);
        assert_eq!(folder.stat(&w("old")), Some(facts));
    }

    /// Thousands of downloads in one run must not use up the process's file descriptors.
    #[cfg(target_os = "linux")]
    #[test]
    fn finished_downloads_close_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let folder = Folder::open(dir.path()).unwrap();
        let open_fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
        // Warm up anything lazily opened, then count.
        folder.temp_beside(&w("warm")).unwrap().finish(0, 1_600_000_000_000).unwrap();
        let before = open_fds();
        for i in 0..200 {
            let mut t = folder.temp_beside(&w(&format!("d/f{i}"))).unwrap();
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
        use crate::download::{make_durable, StagedFile};
        let dir = tempfile::tempdir().unwrap();
        let folder = Folder::open(dir.path()).unwrap();
        let open_fds = || std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0);
        let before = open_fds();
        let mut staged = Vec::new();
        for i in 0..40 {
            let mut t = folder.temp_beside(&w(&format!("d/f{i}"))).unwrap();
            t.write(format!("file {i}").as_bytes()).unwrap();
            staged.push(t.stage(0o600, 1_600_000_000_000 + i).unwrap());
        }
        assert!(open_fds() < before + 20, "staged files keep no descriptor open");
        assert_eq!(folder.stat(&w("d/f0")), None, "nothing at the destination before the rename");
        // Above the syncfs threshold, and below it (one fsync each).
        make_durable(&staged.iter().collect::<Vec<&StagedFile>>()).unwrap();
        make_durable(&staged.iter().take(3).collect::<Vec<_>>()).unwrap();
        let unplaced = staged.split_off(30);
        for (i, s) in staged.into_iter().enumerate() {
            let facts = s.finish().unwrap();
            assert_eq!(std::fs::read(dir.path().join(format!("d/f{i}"))).unwrap(), format!("file {i}").as_bytes());
            assert_eq!(folder.stat(&w(&format!("d/f{i}"))), Some(facts));
            assert_eq!(facts.mtime_ms, 1_600_000_000_000 + i as i64);
            assert_eq!(facts.mode, 0o600);
        }
        drop(unplaced);
        assert_eq!(std::fs::read_dir(dir.path().join("d")).unwrap().count(), 30, "no temp file is left");
    }

    #[test]
    fn removing_and_renaming_tidy_empty_directories() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let folder = Folder::open(root).unwrap();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/c.txt"), b"c").unwrap();
        folder.rename(&w("a/b/c.txt"), &w("d/e.txt")).unwrap();
        assert!(!root.join("a").exists());
        assert_eq!(std::fs::read(root.join("d/e.txt")).unwrap(), b"c");
        std::fs::write(root.join("d/f.txt"), b"f").unwrap();
        let e = folder.rename(&w("d/e.txt"), &w("d/f.txt")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "never overwrite by rename");
        assert_eq!(std::fs::read(root.join("d/f.txt")).unwrap(), b"f");
        folder.remove_file(&w("d/e.txt")).unwrap();
        folder.prune_empty_parents(&w("d/e.txt"));
        assert!(root.join("d").exists());
        folder.remove_file(&w("d/f.txt")).unwrap();
        folder.prune_empty_parents(&w("d/f.txt"));
        assert!(!root.join("d").exists() && root.exists());
        folder.remove_file(&w("d/f.txt")).unwrap();
    }

    /// A link the user made inside the folder, pointing outside it: nothing is written, renamed,
    /// deleted or read through it, and the files outside stay as they were.
    #[test]
    fn nothing_goes_through_a_link_inside_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = (dir.path().join("root"), dir.path().join("outside"));
        std::fs::create_dir_all(root.join("real")).unwrap();
        std::fs::create_dir_all(outside.join("sub")).unwrap();
        std::fs::write(outside.join("victim"), b"keep").unwrap();
        std::fs::write(root.join("real/f"), b"mine").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        std::os::unix::fs::symlink(outside.join("victim"), root.join("real/file-link")).unwrap();
        std::fs::write(root.join("plain"), b"file").unwrap();
        let before = listing(&outside);
        let folder = Folder::open(&root).unwrap();

        assert_eq!(folder.stat(&w("link/victim")), None, "not read through the link");
        assert_eq!(folder.stat(&w("real/file-link")), None, "a link is not a file");
        assert!(folder.open_file(&w("link/victim")).is_err());
        assert!(folder.open_file(&w("real/file-link")).is_err());
        assert!(folder.temp_beside(&w("link/new")).is_err());
        assert!(folder.temp_beside(&w("link/deeper/new")).is_err());
        assert!(folder.temp_beside(&w("plain/new")).is_err(), "a file is not a directory");
        assert!(folder.rename(&w("real/f"), &w("link/f")).is_err());
        assert!(folder.rename(&w("link/victim"), &w("real/v")).is_err());
        assert!(folder.remove_file(&w("link/victim")).is_err());
        assert!(folder.remove_dir(&w("link/sub")).is_err());
        assert!(folder.make_dir(&w("link/d")).is_err());
        assert!(
            folder.walk("link", false).is_err() && folder.walk("link/sub", true).is_err(),
            "one component at a time too"
        );
        folder.prune_empty_parents(&w("link/sub/x"));
        // A link as the last component is itself renamed or removed, never what it points to.
        folder.rename(&w("real/file-link"), &w("real/moved-link")).unwrap();
        folder.remove_file(&w("real/moved-link")).unwrap();
        assert_eq!(listing(&outside), before, "nothing changed outside");
        assert_eq!(std::fs::read(root.join("real/f")).unwrap(), b"mine");
        // Real directories still work, made as needed.
        folder.make_dir(&w("a/b")).unwrap();
        folder.rename(&w("real/f"), &w("a/b/f")).unwrap();
        assert_eq!(folder.stat(&w("a/b/f")).map(|f| f.size), Some(4));
    }

    /// The race the handle closes: while a thread keeps swapping a directory of the folder for a
    /// link to a directory outside it (and back), every operation of a download, a conflict copy,
    /// a move and a delete runs into it. Nothing outside is ever created, changed or removed.
    #[test]
    fn a_directory_swapped_for_a_link_mid_operation_never_leads_outside() {
        use rustix::fs::{RenameFlags, CWD};
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = (dir.path().join("root"), dir.path().join("outside"));
        std::fs::create_dir_all(root.join("d/e")).unwrap();
        std::fs::create_dir_all(outside.join("e")).unwrap();
        for name in ["f", "g", "e/f", "e/g"] {
            std::fs::write(outside.join(name), b"outside").unwrap();
        }
        let before = listing(&outside);
        let stop = AtomicBool::new(false);
        let folder = Folder::open(&root).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                let (d, link) = (root.join("d"), root.join("d-link"));
                std::os::unix::fs::symlink(&outside, &link).unwrap();
                let exchange = || rustix::fs::renameat_with(CWD, &d, CWD, &link, RenameFlags::EXCHANGE);
                // `d` becomes a link to outside, then the directory again, atomically, nonstop.
                // (The same test with a check-then-open of each directory fails at once.)
                while !stop.load(Ordering::Relaxed) {
                    let _ = exchange();
                    let _ = exchange();
                }
            });
            for i in 0..3000 {
                for rel in [w("d/f"), w("d/e/f")] {
                    if let Ok(mut t) = folder.temp_beside(&rel) {
                        let _ = t.write(format!("download {i}").as_bytes());
                        let _ = t.finish(0o644, 1_700_000_000_000);
                    }
                    let _ = folder.stat(&rel);
                }
                let _ = folder.rename(&w("d/f"), &w("d/g"));
                let _ = folder.rename(&w("d/e/f"), &w("d/e/g"));
                let _ = folder.remove_file(&w("d/g"));
                let _ = folder.remove_file(&w("d/e/g"));
                folder.prune_empty_parents(&w("d/e/g"));
                let _ = folder.make_dir(&w("d/e/h"));
                let _ = folder.remove_dir(&w("d/e/h"));
                let mut staged = Vec::new();
                for rel in [w("d/e/s1"), w("d/s2")] {
                    if let Ok(mut t) = folder.temp_beside(&rel) {
                        let _ = t.write(b"staged");
                        staged.extend(t.stage(0o644, 1_700_000_000_000).ok());
                    }
                }
                let _ = crate::download::make_durable(&staged.iter().collect::<Vec<_>>());
                staged.into_iter().for_each(|s| drop(s.finish()));
                let _ = folder.remove_file(&w("d/e/s1"));
                let _ = folder.remove_file(&w("d/s2"));
            }
            stop.store(true, Ordering::Relaxed);
        });
        assert_eq!(listing(&outside), before, "nothing outside the folder was created, changed or removed");
    }
}

//! Test data and the checks that it arrived intact. Data is random (so no
//! system can compress or deduplicate it) and seeded (so a run can be
//! repeated), except the source-like text of [`write_text_tree`]; large files
//! are written and hashed in pieces, never held whole.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;
pub const GIB: u64 = 1024 * MIB;

const PIECE: usize = MIB as usize;

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

pub fn random_bytes(rng: &mut StdRng, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    rng.fill_bytes(&mut v);
    v
}

/// Writes `size` random bytes to `path` and flushes them to disk.
pub fn write_random_file(path: &Path, size: u64, rng: &mut StdRng) -> Result<()> {
    let mut f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut buf = vec![0; PIECE];
    let mut left = size;
    while left > 0 {
        let n = left.min(PIECE as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.sync_all()?;
    Ok(())
}

/// The name of file `i` of directory `d` in a generated tree.
pub fn tree_file(d: usize, i: usize) -> PathBuf {
    PathBuf::from(format!("d{d:03}")).join(format!("f{i:05}.bin"))
}

/// `dirs` directories of `per_dir` random files of `size` bytes each, flushed to disk.
pub fn write_tree(root: &Path, dirs: usize, per_dir: usize, size: usize, rng: &mut StdRng) -> Result<()> {
    write_tree_dirs(root, 0..dirs, per_dir, size, rng)
}

/// [`write_tree`] for the directories numbered `dirs` only (a tree grown in steps).
pub fn write_tree_dirs(root: &Path, dirs: Range<usize>, per_dir: usize, size: usize, rng: &mut StdRng) -> Result<()> {
    let mut buf = vec![0; size];
    for d in dirs {
        fs::create_dir_all(root.join(format!("d{d:03}")))?;
        for i in 0..per_dir {
            rng.fill_bytes(&mut buf);
            fs::write(root.join(tree_file(d, i)), &buf)?;
        }
    }
    // One sync for the whole tree: the data must be on disk before the clock starts, as a user's would be.
    rustix::fs::sync();
    Ok(())
}

/// Source-code-like text: indented lines of keywords and identifiers, some numbered, ending in `;` or `{`.
/// Seeded; it compresses about as well as real source (zstd and gzip: 3 to 4 times) and repeats no
/// block, so nothing is deduplicated.
pub fn text_bytes(rng: &mut StdRng, len: usize) -> Vec<u8> {
    const WORDS: [&str; 32] = [
        "let", "fn", "match", "return", "self", "value", "count", "buffer", "error", "Some", "None", "Ok", "if",
        "else", "for", "in", "mut", "struct", "impl", "pub", "use", "name", "index", "result", "&", "=", "+", "(", ")",
        "->", "::", "len",
    ];
    let mut out = Vec::with_capacity(len + 128);
    while out.len() < len {
        let r = rng.next_u64();
        out.resize(out.len() + (r % 4 * 4) as usize, b' ');
        for w in 0..(r >> 8) % 10 + 1 {
            let r = rng.next_u64();
            if w > 0 {
                out.push(b' ');
            }
            out.extend_from_slice(WORDS[(r % WORDS.len() as u64) as usize].as_bytes());
            if r >> 40 & 3 == 0 {
                out.extend_from_slice(format!("_{}", r >> 48 & 0xfff).as_bytes());
            }
        }
        out.extend_from_slice(if r >> 20 & 1 == 0 { b";\n" } else { b" {\n" });
    }
    out.truncate(len);
    out
}

/// [`write_tree`]'s layout (names, sizes) with source-like text ([`text_bytes`]) in every file.
pub fn write_text_tree(root: &Path, dirs: usize, per_dir: usize, size: usize, rng: &mut StdRng) -> Result<()> {
    for d in 0..dirs {
        fs::create_dir_all(root.join(format!("d{d:03}")))?;
        for i in 0..per_dir {
            fs::write(root.join(tree_file(d, i)), text_bytes(rng, size))?;
        }
    }
    rustix::fs::sync();
    Ok(())
}

pub fn hash_file(path: &Path) -> Result<blake3::Hash> {
    let mut h = blake3::Hasher::new();
    h.update_reader(File::open(path).with_context(|| format!("opening {}", path.display()))?)?;
    Ok(h.finalize())
}

/// Relative path → content hash of every regular file under `root`, leaving out names starting with `.`
/// (markers and temp files of the systems under test).
pub fn tree_digest(root: &Path) -> Result<BTreeMap<PathBuf, blake3::Hash>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let ty = entry.file_type()?;
            if ty.is_dir() {
                stack.push(entry.path());
            } else if ty.is_file() {
                let rel = entry.path().strip_prefix(root)?.to_path_buf();
                out.insert(rel, hash_file(&entry.path())?);
            }
        }
    }
    Ok(out)
}

/// Fails unless the two trees hold the same files with the same contents.
pub fn same_tree(a: &Path, b: &Path) -> Result<()> {
    let (da, db) = (tree_digest(a)?, tree_digest(b)?);
    if da != db {
        let missing = da.keys().filter(|k| !db.contains_key(*k)).count();
        let extra = db.keys().filter(|k| !da.contains_key(*k)).count();
        let differ = da.iter().filter(|(k, v)| db.get(*k).is_some_and(|w| w != *v)).count();
        bail!(
            "{} differs from {}: {missing} missing, {extra} extra, {differ} with other contents",
            b.display(),
            a.display()
        );
    }
    Ok(())
}

/// Counts a generated tree's files as they arrive under `root` at full size. Each poll reads the directories
/// and looks only at files not seen complete yet, so watching a large tree costs the systems under test
/// little CPU.
pub struct Arrivals {
    root: PathBuf,
    size: u64,
    pending: Vec<(PathBuf, BTreeSet<OsString>)>,
    arrived: usize,
}

impl Arrivals {
    pub fn new(root: &Path, dirs: usize, per_dir: usize, size: u64) -> Arrivals {
        Arrivals::of_dirs(root, 0..dirs, per_dir, size)
    }

    /// Only the directories numbered `dirs` of a generated tree.
    pub fn of_dirs(root: &Path, dirs: Range<usize>, per_dir: usize, size: u64) -> Arrivals {
        let pending = dirs
            .map(|d| {
                let names = (0..per_dir).filter_map(|i| tree_file(d, i).file_name().map(OsString::from)).collect();
                (PathBuf::from(format!("d{d:03}")), names)
            })
            .collect();
        Arrivals { root: root.to_path_buf(), size, pending, arrived: 0 }
    }

    /// How many have arrived so far.
    pub fn poll(&mut self) -> usize {
        for (dir, names) in &mut self.pending {
            if names.is_empty() {
                continue;
            }
            let Ok(entries) = fs::read_dir(self.root.join(&*dir)) else { continue };
            for entry in entries.flatten() {
                let name = entry.file_name();
                if names.contains(&name) && entry.metadata().is_ok_and(|m| m.len() == self.size) {
                    names.remove(&name);
                    self.arrived += 1;
                }
            }
        }
        self.arrived
    }
}

/// True when `path` holds exactly `expected`.
pub fn has_contents(path: &Path, expected: &[u8]) -> bool {
    let Ok(mut f) = File::open(path) else { return false };
    let mut buf = Vec::with_capacity(expected.len() + 1);
    Read::by_ref(&mut f).take(expected.len() as u64 + 1).read_to_end(&mut buf).is_ok() && buf == expected
}

/// True when `path` exists with `size` bytes and `expected` at `offset`.
pub fn has_patch(path: &Path, size: u64, offset: u64, expected: &[u8]) -> bool {
    let Ok(mut f) = File::open(path) else { return false };
    if f.metadata().map(|m| m.len()).unwrap_or(0) != size || f.seek(SeekFrom::Start(offset)).is_err() {
        return false;
    }
    let mut buf = vec![0; expected.len()];
    f.read_exact(&mut buf).is_ok() && buf == expected
}

pub fn is_gone(path: &Path) -> bool {
    matches!(fs::symlink_metadata(path), Err(e) if e.kind() == ErrorKind::NotFound)
}

/// Overwrites `patch.len()` bytes at `offset` in place, like an editor saving a small change in a large file,
/// and moves the modification time to a new whole second so time-based quick checks cannot skip the file.
pub fn patch_file(path: &Path, offset: u64, patch: &[u8]) -> Result<()> {
    let mut f = OpenOptions::new().write(true).open(path)?;
    let old = f.metadata()?.modified()?;
    f.seek(SeekFrom::Start(offset))?;
    f.write_all(patch)?;
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)?
        .as_secs()
        .max(old.duration_since(SystemTime::UNIX_EPOCH)?.as_secs())
        + 1;
    f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))?;
    Ok(())
}

/// Bytes of every regular file under `root` (their sizes, not the blocks they take).
pub fn dir_bytes(root: &Path) -> Result<u64> {
    let mut total = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry?;
            let ty = entry.file_type()?;
            if ty.is_dir() {
                stack.push(entry.path());
            } else if ty.is_file() {
                total += entry.metadata()?.len();
            }
        }
    }
    Ok(total)
}

/// Removes a file or a directory tree; a missing one is fine.
pub fn remove(path: &Path) -> Result<()> {
    let r = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    r.with_context(|| format!("removing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_files_are_seeded_and_streamed_to_size() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        write_random_file(&a, 3 * MIB + 5, &mut rng(7)).unwrap();
        write_random_file(&b, 3 * MIB + 5, &mut rng(7)).unwrap();
        assert_eq!(fs::metadata(&a).unwrap().len(), 3 * MIB + 5);
        assert_eq!(hash_file(&a).unwrap(), hash_file(&b).unwrap());
        write_random_file(&b, 3 * MIB + 5, &mut rng(8)).unwrap();
        assert_ne!(hash_file(&a).unwrap(), hash_file(&b).unwrap());
    }

    #[test]
    fn trees_compare_by_content_and_count_arrivals() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        write_tree(&a, 2, 3, 100, &mut rng(1)).unwrap();
        write_tree(&b, 2, 3, 100, &mut rng(1)).unwrap();
        fs::write(b.join(".stfolder"), "").unwrap();
        same_tree(&a, &b).unwrap();
        assert_eq!(Arrivals::new(&b, 2, 3, 100).poll(), 6);
        fs::write(b.join(tree_file(1, 2)), b"short").unwrap();
        let mut arrivals = Arrivals::new(&b, 2, 3, 100);
        assert_eq!(arrivals.poll(), 5);
        fs::write(b.join(tree_file(1, 2)), [0; 100]).unwrap();
        assert_eq!(arrivals.poll(), 6);
        let err = same_tree(&a, &b).unwrap_err().to_string();
        assert!(err.contains("1 with other contents"), "{err}");
        // A tree grown by two more directories: only those are waited for.
        write_tree_dirs(&b, 2..4, 3, 100, &mut rng(2)).unwrap();
        assert!(b.join(tree_file(3, 2)).is_file());
        assert_eq!(Arrivals::of_dirs(&b, 2..4, 3, 100).poll(), 6);
        assert_eq!(dir_bytes(&b).unwrap(), 4 * 3 * 100);
    }

    #[test]
    fn text_trees_are_seeded_and_compressible() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        write_text_tree(&a, 2, 3, 20_000, &mut rng(4)).unwrap();
        write_text_tree(&b, 2, 3, 20_000, &mut rng(4)).unwrap();
        same_tree(&a, &b).unwrap();
        assert_eq!(Arrivals::new(&b, 2, 3, 20_000).poll(), 6);
        let text = fs::read(a.join(tree_file(1, 2))).unwrap();
        assert!(text.is_ascii() && text.contains(&b'\n'));
        assert_ne!(text, fs::read(a.join(tree_file(1, 1))).unwrap(), "every file is its own text");
        // As filesync stores and sends it: zstd, at least 2.5 times smaller.
        let packed = filesync_core::encoding::Encoded::of(text.clone()).payload;
        assert!(packed.len() * 5 / 2 < text.len(), "{} of {} bytes", packed.len(), text.len());
    }

    #[test]
    fn a_patch_changes_bytes_in_place_and_bumps_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("big");
        write_random_file(&f, MIB, &mut rng(3)).unwrap();
        let before = fs::metadata(&f).unwrap().modified().unwrap();
        patch_file(&f, MIB / 2, &[7; 4096]).unwrap();
        assert!(has_patch(&f, MIB, MIB / 2, &[7; 4096]));
        assert!(!has_patch(&f, MIB, 0, &[7; 4096]));
        assert!(fs::metadata(&f).unwrap().modified().unwrap() > before);
        assert!(has_contents(&dir.path().join("big"), &fs::read(&f).unwrap()));
        remove(&f).unwrap();
        assert!(is_gone(&f));
        remove(&f).unwrap();
    }
}

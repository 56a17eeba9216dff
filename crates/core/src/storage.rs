//! Chunk storage: content-addressed, verified, atomic.
//!
//! [`ChunkStore`] is the backend trait (object storage comes later behind it);
//! [`LocalDirStore`] keeps each chunk as one file `<root>/<hh>/<hash hex>`
//! where `hh` is the first byte of the hash. A stored file starts with one
//! format byte — `0` raw, `1` zstd — followed by the payload; zstd is used
//! only when it makes the chunk smaller.
//!
//! **Architecture Invariant:** nothing is stored unless its bytes hash to the
//! name it is stored under, and nothing is returned unless it still does.
//! Writes go to a temporary file in the same directory, then are renamed, so
//! a reader never sees half a chunk. [`ChunkStore::put`] fsyncs each chunk;
//! an upload of many chunks uses [`ChunkStore::put_deferred`] and then one
//! [`ChunkStore::make_durable`] per batch before the batch is recorded in the
//! database (one fsync per chunk costs ~2.5 ms here: 40 s for 1 GiB). A chunk
//! file a crash left incomplete is found and rewritten by the next `put`,
//! because an existing file is verified before it is trusted.
//!
//! The API is blocking; async callers use `spawn_blocking`.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::chunking::{hash, hex, Hash};

const FORMAT_RAW: u8 = 0;
const FORMAT_ZSTD: u8 = 1;
const ZSTD_LEVEL: i32 = 3;
/// Bytes compressed at level 1 to decide whether the whole chunk is worth compressing.
const SAMPLE: usize = 4096;
/// More files than this in one `make_durable` call: one `syncfs` instead of one fsync each.
const SYNCFS_ABOVE: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("chunk bytes hash to {actual}, not to the claimed {claimed}")]
    HashMismatch { claimed: String, actual: String },
    #[error("chunk {0} is not in the store")]
    NotFound(String),
    #[error("stored chunk {0} is corrupt")]
    Corrupt(String),
    #[error("chunk store I/O on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// What [`ChunkStore::put`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// Bytes the chunk takes at rest (format byte included).
    pub stored_size: u64,
    /// False if the chunk was already there and left untouched.
    pub written: bool,
}

/// A place chunks live. Implementations must verify hashes on the way in and out.
pub trait ChunkStore: Send + Sync + std::fmt::Debug + 'static {
    /// Verifies `data` against `hash` and stores it unless it is already there.
    fn put(&self, hash: &Hash, data: &[u8]) -> Result<Stored, StorageError>;
    /// The chunk's bytes, verified against `hash`.
    fn get(&self, hash: &Hash) -> Result<Vec<u8>, StorageError>;
    fn contains(&self, hash: &Hash) -> Result<bool, StorageError>;
    /// Like [`ChunkStore::put`] but the chunk need not be durable until
    /// [`ChunkStore::make_durable`] is called with its hash.
    fn put_deferred(&self, hash: &Hash, data: &[u8]) -> Result<Stored, StorageError> {
        self.put(hash, data)
    }
    /// Makes the chunks named (stored with `put_deferred`, by anyone) durable.
    fn make_durable(&self, _hashes: &[Hash]) -> Result<(), StorageError> {
        Ok(())
    }
}

/// Chunks as files under one directory.
#[derive(Debug, Clone)]
pub struct LocalDirStore {
    root: PathBuf,
}

impl LocalDirStore {
    /// Creates the directory if needed.
    pub fn open(root: impl Into<PathBuf>) -> Result<LocalDirStore, StorageError> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(|source| StorageError::Io { path: root.clone(), source })?;
        Ok(LocalDirStore { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, hash: &Hash) -> PathBuf {
        let name = hex(hash);
        self.root.join(&name[..2]).join(name)
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StorageError + '_ {
    move |source| StorageError::Io { path: path.to_path_buf(), source }
}

impl LocalDirStore {
    fn store(&self, claimed: &Hash, data: &[u8], durable: bool) -> Result<Stored, StorageError> {
        let actual = hash(data);
        if &actual != claimed {
            return Err(StorageError::HashMismatch { claimed: hex(claimed), actual: hex(&actual) });
        }
        let path = self.path_of(claimed);
        if let Ok(meta) = fs::metadata(&path) {
            // A crash between a deferred write and its sync can leave a torn file: trust only what verifies.
            if self.get(claimed).is_ok() {
                return Ok(Stored { stored_size: meta.len(), written: false });
            }
        }
        let compressed =
            if worth_compressing(data) { Some(compress(data, ZSTD_LEVEL).map_err(io_err(&path))?) } else { None };
        let (format, payload) = match &compressed {
            Some(c) if c.len() < data.len() => (FORMAT_ZSTD, &c[..]),
            _ => (FORMAT_RAW, data),
        };
        let dir = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        if durable {
            write_atomic(dir, &path, &[&[format], payload])?;
        } else {
            write_renamed(dir, &path, &[&[format], payload], false)?;
        }
        Ok(Stored { stored_size: payload.len() as u64 + 1, written: true })
    }
}

/// Random or already-compressed data (the common case for big files) costs a
/// full zstd pass for nothing; a level-1 pass over the first 4 KiB tells.
fn worth_compressing(data: &[u8]) -> bool {
    if data.len() <= 2 * SAMPLE {
        return true;
    }
    match compress(&data[..SAMPLE], 1) {
        Ok(c) => c.len() < SAMPLE * 97 / 100,
        Err(_) => true,
    }
}

thread_local! {
    /// One zstd context per blocking thread and level: creating one per chunk showed in profiles.
    static COMPRESSORS: std::cell::RefCell<Vec<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// `zstd::bulk::compress` on this thread's reused context for `level`.
fn compress(data: &[u8], level: i32) -> io::Result<Vec<u8>> {
    COMPRESSORS.with(|cell| {
        let mut all = cell.borrow_mut();
        let at = match all.iter().position(|(l, _)| *l == level) {
            Some(at) => at,
            None => {
                all.push((level, zstd::bulk::Compressor::new(level)?));
                all.len() - 1
            }
        };
        all[at].1.compress(data)
    })
}

impl ChunkStore for LocalDirStore {
    fn put(&self, claimed: &Hash, data: &[u8]) -> Result<Stored, StorageError> {
        self.store(claimed, data, true)
    }

    fn put_deferred(&self, claimed: &Hash, data: &[u8]) -> Result<Stored, StorageError> {
        self.store(claimed, data, false)
    }

    fn make_durable(&self, hashes: &[Hash]) -> Result<(), StorageError> {
        #[cfg(target_os = "linux")]
        if hashes.len() > SYNCFS_ABOVE {
            let root = File::open(&self.root).map_err(io_err(&self.root))?;
            return rustix::fs::syncfs(&root).map_err(|e| io_err(&self.root)(e.into()));
        }
        let mut dirs = std::collections::BTreeSet::new();
        for h in hashes {
            let path = self.path_of(h);
            File::open(&path).and_then(|f| f.sync_all()).map_err(io_err(&path))?;
            if let Some(dir) = path.parent() {
                dirs.insert(dir.to_path_buf());
            }
        }
        for dir in dirs {
            File::open(&dir).and_then(|d| d.sync_all()).map_err(io_err(&dir))?;
        }
        Ok(())
    }

    fn get(&self, claimed: &Hash) -> Result<Vec<u8>, StorageError> {
        let path = self.path_of(claimed);
        let mut raw = Vec::new();
        match File::open(&path) {
            Ok(mut f) => f.read_to_end(&mut raw).map_err(io_err(&path))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StorageError::NotFound(hex(claimed))),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let data = match raw.split_first() {
            Some((&FORMAT_RAW, payload)) => payload.to_vec(),
            Some((&FORMAT_ZSTD, payload)) => {
                // Chunks are at most MAX_CHUNK bytes; a bigger result means corruption.
                zstd::bulk::decompress(payload, crate::chunking::MAX_CHUNK as usize)
                    .map_err(|_| StorageError::Corrupt(hex(claimed)))?
            }
            _ => return Err(StorageError::Corrupt(hex(claimed))),
        };
        if &hash(&data) != claimed {
            return Err(StorageError::Corrupt(hex(claimed)));
        }
        Ok(data)
    }

    fn contains(&self, hash: &Hash) -> Result<bool, StorageError> {
        Ok(self.path_of(hash).is_file())
    }
}

/// Writes `parts` to a temporary file in `dir`, fsyncs it, renames it to
/// `target` and fsyncs the directory so the rename itself is durable.
pub fn write_atomic(dir: &Path, target: &Path, parts: &[&[u8]]) -> Result<(), StorageError> {
    write_renamed(dir, target, parts, true)
}

fn write_renamed(dir: &Path, target: &Path, parts: &[&[u8]], durable: bool) -> Result<(), StorageError> {
    let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        for part in parts {
            f.write_all(part).map_err(io_err(&tmp))?;
        }
        if durable {
            f.sync_all().map_err(io_err(&tmp))?;
        }
        fs::rename(&tmp, target).map_err(io_err(target))?;
        if durable {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_verifies_then_get_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDirStore::open(dir.path().join("chunks")).unwrap();
        let data = b"hello chunk".repeat(1000);
        let h = hash(&data);
        let wrong = hash(b"something else");
        assert!(matches!(store.put(&wrong, &data), Err(StorageError::HashMismatch { .. })));
        assert!(!store.contains(&wrong).unwrap());
        let first = store.put(&h, &data).unwrap();
        assert!(first.written);
        // Repetitive data compresses; zstd is used.
        assert!(first.stored_size < data.len() as u64);
        let again = store.put(&h, &data).unwrap();
        assert!(!again.written);
        assert_eq!(store.get(&h).unwrap(), data);
        assert!(matches!(store.get(&wrong), Err(StorageError::NotFound(_))));
    }

    #[test]
    fn incompressible_chunks_are_kept_raw_and_no_temp_files_remain() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDirStore::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let h = hash(&data);
        let stored = store.put(&h, &data).unwrap();
        let file = dir.path().join(&hex(&h)[..2]).join(hex(&h));
        let raw = fs::read(&file).unwrap();
        if raw[0] == FORMAT_RAW {
            assert_eq!(stored.stored_size, data.len() as u64 + 1);
        } else {
            assert!(stored.stored_size < data.len() as u64);
        }
        let leftovers: Vec<_> = fs::read_dir(file.parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn corruption_at_rest_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDirStore::open(dir.path()).unwrap();
        let data = vec![42u8; 10_000];
        let h = hash(&data);
        store.put(&h, &data).unwrap();
        let file = dir.path().join(&hex(&h)[..2]).join(hex(&h));
        fs::write(&file, [FORMAT_RAW, 1, 2, 3]).unwrap();
        assert!(matches!(store.get(&h), Err(StorageError::Corrupt(_))));
        fs::write(&file, [9u8]).unwrap();
        assert!(matches!(store.get(&h), Err(StorageError::Corrupt(_))));
        // A torn file (e.g. a crash before a deferred write was synced) is rewritten, not trusted.
        let again = store.put_deferred(&h, &data).unwrap();
        assert!(again.written);
        assert_eq!(store.get(&h).unwrap(), data);
    }

    #[test]
    fn deferred_chunks_are_readable_and_made_durable_in_a_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDirStore::open(dir.path()).unwrap();
        let chunks: Vec<Vec<u8>> = (0..40u32).map(|i| format!("chunk {i} ").repeat(500).into_bytes()).collect();
        let hashes: Vec<Hash> = chunks.iter().map(|c| hash(c)).collect();
        for (h, c) in hashes.iter().zip(&chunks) {
            assert!(store.put_deferred(h, c).unwrap().written);
        }
        // Both paths: one fsync per file for a few chunks, syncfs for many.
        store.make_durable(&hashes[..2]).unwrap();
        store.make_durable(&hashes).unwrap();
        for (h, c) in hashes.iter().zip(&chunks) {
            assert_eq!(&store.get(h).unwrap(), c);
        }
        let missing = hash(b"never stored");
        assert!(matches!(store.make_durable(&[missing]), Err(StorageError::Io { .. })));
    }

    #[test]
    fn random_chunks_skip_compression_and_text_is_compressed() {
        let mut random = vec![0u8; 65_536];
        blake3::Hasher::new().finalize_xof().fill(&mut random);
        assert!(!worth_compressing(&random));
        assert!(worth_compressing(&b"all work and no play ".repeat(4000)));
    }
}

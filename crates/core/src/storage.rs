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
//! Writes go to a temporary file in the same directory, are fsynced, then
//! renamed, so a crash leaves either the whole chunk or none of it.
//!
//! The API is blocking; async callers use `spawn_blocking`.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::chunking::{hash, hex, Hash};

const FORMAT_RAW: u8 = 0;
const FORMAT_ZSTD: u8 = 1;
const ZSTD_LEVEL: i32 = 3;

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

impl ChunkStore for LocalDirStore {
    fn put(&self, claimed: &Hash, data: &[u8]) -> Result<Stored, StorageError> {
        let actual = hash(data);
        if &actual != claimed {
            return Err(StorageError::HashMismatch { claimed: hex(claimed), actual: hex(&actual) });
        }
        let path = self.path_of(claimed);
        if let Ok(meta) = fs::metadata(&path) {
            return Ok(Stored { stored_size: meta.len(), written: false });
        }
        let compressed = zstd::bulk::compress(data, ZSTD_LEVEL).map_err(io_err(&path))?;
        let (format, payload) =
            if compressed.len() < data.len() { (FORMAT_ZSTD, &compressed[..]) } else { (FORMAT_RAW, data) };
        let dir = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        write_atomic(dir, &path, &[&[format], payload])?;
        Ok(Stored { stored_size: payload.len() as u64 + 1, written: true })
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
    let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        for part in parts {
            f.write_all(part).map_err(io_err(&tmp))?;
        }
        f.sync_all().map_err(io_err(&tmp))?;
        fs::rename(&tmp, target).map_err(io_err(target))?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
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
    }
}

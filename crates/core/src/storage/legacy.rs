//! Loose chunks: the layout of releases before packs, one file per chunk
//! `<root>/<hh>/<hash hex>` (`hh`: the hash's first byte) holding one format
//! byte and the payload ([`super::encoding`]). A directory store still reads
//! them in place while the index has no pack for them; `storage migrate`
//! ([`super::migrate`]) moves them into packs and deletes the files.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::encoding::{self, Encoded};
use super::StorageError;
use crate::chunking::{hex, Hash, MAX_CHUNK};

/// The loose file of `hash` under `root`.
pub fn loose_path(root: &Path, hash: &Hash) -> PathBuf {
    let name = hex(hash);
    root.join(&name[..2]).join(name)
}

/// A loose chunk's bytes, verified. Blocking.
pub fn read_loose(root: &Path, hash: &Hash) -> Result<Vec<u8>, StorageError> {
    let stored = read_loose_stored(root, hash)?;
    encoding::decode(hash, stored.format, &stored.payload, MAX_CHUNK).map_err(|_| StorageError::Corrupt(hex(hash)))
}

/// A loose chunk's stored form, not decoded (the node sends it as it is). Blocking.
pub fn read_loose_stored(root: &Path, hash: &Hash) -> Result<Encoded, StorageError> {
    let path = loose_path(root, hash);
    let mut raw = match fs::read(&path) {
        Ok(raw) => raw,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StorageError::NotFound(hex(hash))),
        Err(e) => return Err(StorageError::io(path)(e)),
    };
    if raw.is_empty() {
        return Err(StorageError::Corrupt(hex(hash)));
    }
    let format = raw.remove(0);
    Ok(Encoded { format, payload: raw })
}

/// Deletes a loose chunk's file (after it was moved into a pack); a missing file is fine. Blocking.
pub fn remove_loose(root: &Path, hash: &Hash) -> Result<(), StorageError> {
    let path = loose_path(root, hash);
    match fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(StorageError::io(path)(e)),
        _ => Ok(()),
    }
}

/// Writes a chunk the way releases before packs did (encoded, one file), returning the bytes it
/// takes at rest. Only for tests that build such a store and upgrade it.
#[cfg(any(test, feature = "testing"))]
pub fn write_loose(root: &Path, hash: &Hash, data: Vec<u8>) -> Result<u64, StorageError> {
    let encoded = encoding::encode(hash, data)?;
    let path = loose_path(root, hash);
    let dir = path.parent().unwrap_or(root);
    fs::create_dir_all(dir).map_err(StorageError::io(dir))?;
    let mut bytes = Vec::with_capacity(encoded.payload.len() + 1);
    bytes.push(encoded.format);
    bytes.extend_from_slice(&encoded.payload);
    fs::write(&path, &bytes).map_err(StorageError::io(&path))?;
    Ok(bytes.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunking::hash;
    use crate::encoding::FORMAT_RAW;

    #[test]
    fn loose_chunks_read_verified_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let data = b"hello chunk".repeat(1000);
        let h = hash(&data);
        let stored = write_loose(dir.path(), &h, data.clone()).unwrap();
        assert!(stored < data.len() as u64);
        assert_eq!(read_loose(dir.path(), &h).unwrap(), data);
        fs::write(loose_path(dir.path(), &h), [FORMAT_RAW, 1, 2, 3]).unwrap();
        assert!(matches!(read_loose(dir.path(), &h), Err(StorageError::Corrupt(_))));
        fs::write(loose_path(dir.path(), &h), []).unwrap();
        assert!(matches!(read_loose(dir.path(), &h), Err(StorageError::Corrupt(_))));
        remove_loose(dir.path(), &h).unwrap();
        remove_loose(dir.path(), &h).unwrap();
        assert!(matches!(read_loose(dir.path(), &h), Err(StorageError::NotFound(_))));
    }
}

//! Pack files: the byte layout (`docs/storage.md`) and the writer.
//!
//! ```text
//! pack   = header entry*
//! header = "FSPK" version:u8 (=1) 0x00 0x00 0x00          8 bytes
//! entry  = hash:[u8;32] format:u8 length:u32le payload    37 + length bytes
//! ```
//!
//! `format` and `payload` are a chunk's stored form ([`super::encoding`]).
//! The database indexes every entry (pack id, entry offset, entry length,
//! format); a reader fetches an entry with a ranged read (entries that lie
//! together share one, `super::coalesce`) and checks its header against the
//! index before decoding and verifying the payload.
//! The header's hash makes a pack self-describing: a pack can be scanned and
//! checked without the index (GC and repair tools rely on it).
//!
//! A [`PackWriter`] spools one upload's chunks into a temporary file (never
//! into memory: a pack is up to [`PACK_TARGET`] and many uploads run at once)
//! that the backend then makes durable under the pack's key.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::encoding::{self, Encoded};
use super::StorageError;
use crate::chunking::{hex, Hash, MAX_CHUNK};
use crate::db::packs::{PackId, PackedAt};

pub const MAGIC: [u8; 4] = *b"FSPK";
pub const VERSION: u8 = 1;
/// Bytes before the first entry.
pub const HEADER_LEN: u64 = 8;
/// Bytes before an entry's payload: hash, format, payload length.
pub const ENTRY_HEADER_LEN: usize = 32 + 1 + 4;

/// A pack is sealed once it holds this many bytes (and at the end of an upload). 16 MiB, like
/// restic's default: one record batch of the ingest pipeline at the average chunk size (256 ×
/// 64 KiB), big enough that an object store sees ~64 PUTs per GiB and the local disk ~64 files, small
/// enough that one sync or PUT per pack keeps an interrupted upload's loss small and GC's rewrites
/// cheap. Measured in docs/BENCHMARKS.md.
pub const PACK_TARGET: u64 = 16 * 1024 * 1024;

/// The pack's 8-byte header.
pub fn pack_header() -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..4].copy_from_slice(&MAGIC);
    h[4] = VERSION;
    h
}

/// An entry's header: the chunk's hash, the payload's format and length.
pub fn entry_header(hash: &Hash, format: u8, payload_len: u32) -> [u8; ENTRY_HEADER_LEN] {
    let mut h = [0u8; ENTRY_HEADER_LEN];
    h[..32].copy_from_slice(hash);
    h[32] = format;
    h[33..].copy_from_slice(&payload_len.to_le_bytes());
    h
}

/// The object key of a pack: `packs/<first two hex digits>/<32 hex digits>.pack`.
pub fn pack_key(id: &PackId) -> object_store::path::Path {
    let name = id.hex();
    object_store::path::Path::from(format!("packs/{}/{name}.pack", &name[..2]))
}

/// The chunk in `entry` (the bytes a ranged read of the index's location returned), checked
/// against the index (`claimed`, `at.format`) and verified.
pub fn read_entry(claimed: &Hash, at: &PackedAt, entry: &[u8]) -> Result<Vec<u8>, StorageError> {
    let stored = read_entry_stored(claimed, at, entry)?;
    encoding::decode(claimed, stored.format, &stored.payload, MAX_CHUNK)
        .map_err(|_| StorageError::Corrupt(hex(claimed)))
}

/// The stored form in `entry`, its header checked against the index (hash, format, length) but
/// its payload not decoded: what the node sends a client, which decodes and verifies it.
pub fn read_entry_stored(claimed: &Hash, at: &PackedAt, entry: &[u8]) -> Result<Encoded, StorageError> {
    let corrupt = || StorageError::Corrupt(hex(claimed));
    if entry.len() < ENTRY_HEADER_LEN {
        return Err(corrupt());
    }
    let (head, payload) = entry.split_at(ENTRY_HEADER_LEN);
    let len = u32::from_le_bytes([head[33], head[34], head[35], head[36]]);
    if &head[..32] != claimed || head[32] != at.format || len as usize != payload.len() {
        return Err(corrupt());
    }
    Ok(Encoded { format: at.format, payload: payload.to_vec() })
}

/// Where [`PackWriter::append`] put a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub at: PackedAt,
    /// The entry's length: header and payload.
    pub stored_size: u32,
}

/// A pack being written: its id and its spool file.
#[derive(Debug)]
pub struct OpenPack {
    pub id: PackId,
    pub(crate) file: tempfile::NamedTempFile,
    /// Bytes written so far (header included).
    pub len: u64,
}

impl OpenPack {
    fn create(spool_dir: &Path) -> Result<OpenPack, StorageError> {
        let mut pack = OpenPack::receiving(spool_dir, PackId::random())?;
        pack.write(&pack_header())?;
        Ok(pack)
    }

    /// An empty spool for a pack that already exists elsewhere (copied byte for byte).
    pub(crate) fn receiving(spool_dir: &Path, id: PackId) -> Result<OpenPack, StorageError> {
        let file =
            tempfile::Builder::new().prefix(".spool-").tempfile_in(spool_dir).map_err(StorageError::io(spool_dir))?;
        Ok(OpenPack { id, file, len: 0 })
    }

    /// Appends raw bytes (a copied pack's).
    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        self.file.write_all(bytes).map_err(StorageError::io(self.file.path()))?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn append(&mut self, hash: &Hash, e: &Encoded) -> Result<Appended, StorageError> {
        let payload_len = u32::try_from(e.payload.len()).map_err(|_| StorageError::Corrupt(hex(hash)))?;
        let offset = self.len;
        let path = self.file.path().to_path_buf();
        let f = self.file.as_file_mut();
        let written = f.write_all(&entry_header(hash, e.format, payload_len)).and_then(|()| f.write_all(&e.payload));
        if let Err(err) = written {
            // Leave no half entry behind for the next append to follow.
            let _ = f.set_len(offset).and_then(|()| f.seek(SeekFrom::Start(offset)).map(|_| ()));
            return Err(StorageError::io(path)(err));
        }
        let stored_size = ENTRY_HEADER_LEN as u32 + payload_len;
        self.len += u64::from(stored_size);
        Ok(Appended { at: PackedAt { pack: self.id, offset, format: e.format }, stored_size })
    }

    /// The spool file, for the backend to make durable or upload.
    pub(crate) fn file(&self) -> &File {
        self.file.as_file()
    }
}

/// Checks a chunk received in its stored form: it decodes, within the bound `len` (at most
/// `MAX_CHUNK`), to exactly `len` bytes that hash to `hash`. Blocking (decompresses and hashes).
pub fn verify_encoded(hash: &Hash, len: u32, encoded: &Encoded) -> Result<(), StorageError> {
    let data = encoding::decode(hash, encoded.format, &encoded.payload, len)?;
    if data.len() != len as usize {
        return Err(StorageError::Undecodable(format!("chunk {} is not {len} bytes long", hex(hash))));
    }
    Ok(())
}

/// Appends the chunks of one upload to packs. The blocking tasks that verify and encode chunks
/// append to it concurrently (the order of entries in a pack does not matter); the owner takes the
/// open pack to seal it ([`PackWriter::take`]) and later appends start a new one.
#[derive(Debug)]
pub struct PackWriter {
    spool_dir: PathBuf,
    open: Mutex<Option<OpenPack>>,
}

impl PackWriter {
    pub(crate) fn new(spool_dir: PathBuf) -> PackWriter {
        PackWriter { spool_dir, open: Mutex::new(None) }
    }

    /// Verifies `data` against `hash`, encodes it and appends it to the open pack. Blocking.
    pub fn append(&self, hash: &Hash, data: Vec<u8>) -> Result<Appended, StorageError> {
        let encoded = encoding::encode(hash, data)?;
        self.append_checked(hash, &encoded)
    }

    /// Appends a chunk received in its stored form (a protocol 5 upload) as it is, once it
    /// decodes (to at most `len` bytes, the length its manifest announced) to bytes that hash to
    /// `hash` and are exactly `len` long. Nothing is re-encoded. Blocking.
    pub fn append_encoded(&self, hash: &Hash, len: u32, encoded: &Encoded) -> Result<Appended, StorageError> {
        verify_encoded(hash, len, encoded)?;
        self.append_checked(hash, encoded)
    }

    fn append_checked(&self, hash: &Hash, encoded: &Encoded) -> Result<Appended, StorageError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.is_none() {
            *open = Some(OpenPack::create(&self.spool_dir)?);
        }
        match open.as_mut() {
            Some(pack) => pack.append(hash, encoded),
            None => Err(StorageError::Task("no open pack".into())),
        }
    }

    /// The pack being written, if any; the next append starts a new one.
    pub fn take(&self) -> Option<OpenPack> {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunking::hash;
    use crate::encoding::{FORMAT_RAW, FORMAT_ZSTD};

    /// The byte layout of docs/storage.md, pinned: a change here is a format change.
    #[test]
    fn pack_bytes_are_the_documented_layout() {
        let dir = tempfile::tempdir().unwrap();
        let w = PackWriter::new(dir.path().to_path_buf());
        let raw = b"abc".to_vec();
        let text = b"la ".repeat(1000);
        let (h1, h2) = (hash(&raw), hash(&text));
        let a = w.append(&h1, raw.clone()).unwrap();
        let b = w.append(&h2, text.clone()).unwrap();
        let pack = w.take().unwrap();
        assert!(w.take().is_none());
        let bytes = std::fs::read(pack.file.path()).unwrap();

        assert_eq!(&bytes[..8], b"FSPK\x01\x00\x00\x00");
        assert_eq!((a.at.offset, a.at.format, a.stored_size), (8, FORMAT_RAW, 37 + 3));
        let mut first = h1.to_vec();
        first.extend([FORMAT_RAW, 3, 0, 0, 0]);
        first.extend(b"abc");
        assert_eq!(&bytes[8..48], &first[..]);
        assert_eq!((b.at.offset, b.at.format), (48, FORMAT_ZSTD));
        assert_eq!(&bytes[48..80], &h2[..]);
        assert_eq!(bytes[80], FORMAT_ZSTD);
        let len = u32::from_le_bytes(bytes[81..85].try_into().unwrap()) as usize;
        assert_eq!(b.stored_size as usize, 37 + len);
        assert_eq!(bytes.len(), 85 + len);
        assert_eq!(pack.len, bytes.len() as u64);
        assert_eq!(zstd::bulk::decompress(&bytes[85..], 10_000).unwrap(), text);

        // What one ranged read returns is checked against the index, then decoded and verified.
        let entry = |x: &Appended| &bytes[x.at.offset as usize..x.at.offset as usize + x.stored_size as usize];
        assert_eq!(read_entry(&h1, &a.at, entry(&a)).unwrap(), raw);
        assert_eq!(read_entry(&h2, &b.at, entry(&b)).unwrap(), text);
        assert!(matches!(read_entry(&h2, &a.at, entry(&a)), Err(StorageError::Corrupt(_))));
        assert!(matches!(read_entry(&h1, &a.at, &entry(&a)[..30]), Err(StorageError::Corrupt(_))));
        let mut flipped = entry(&a).to_vec();
        flipped[38] ^= 1;
        assert!(matches!(read_entry(&h1, &a.at, &flipped), Err(StorageError::Corrupt(_))));
        assert_eq!(pack_key(&PackId([0xab; 16])).as_ref(), format!("packs/ab/{}.pack", "ab".repeat(16)));
    }

    #[test]
    fn a_wrong_chunk_is_refused_and_leaves_the_pack_alone() {
        let dir = tempfile::tempdir().unwrap();
        let w = PackWriter::new(dir.path().to_path_buf());
        assert!(matches!(w.append(&hash(b"x"), b"y".to_vec()), Err(StorageError::HashMismatch { .. })));
        assert!(w.take().is_none());
    }
}

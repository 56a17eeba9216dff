//! Content-defined chunking (FastCDC 2020) and BLAKE3 hashes.
//!
//! A file is cut where its content says, not at fixed offsets, so an edit in
//! the middle of a large file changes only the chunks around the edit, and an
//! insertion does not shift every later chunk. Sizes: see [`MIN_CHUNK`] and
//! `docs/protocol.md` ("Chunk sizes") for the measurement behind them.
//!
//! Everything here streams: a file is read through a buffer of at most
//! [`MAX_CHUNK`] bytes, never held whole in memory.

use std::io::{self, Read};

use serde::{Deserialize, Serialize};

/// A BLAKE3 hash (of a chunk or of a whole file).
pub type Hash = [u8; 32];

/// Smallest chunk (except the last one of a file).
pub const MIN_CHUNK: u32 = 16 * 1024;
/// Target average chunk size.
pub const AVG_CHUNK: u32 = 64 * 1024;
/// Largest chunk; also the largest chunk a node accepts.
pub const MAX_CHUNK: u32 = 256 * 1024;

/// Bytes per manifest record: 32-byte hash, then the length as u32 big-endian.
pub const MANIFEST_RECORD_BYTES: usize = 36;

/// One chunk of a file: its hash and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkRef {
    pub hash: Hash,
    pub len: u32,
}

/// A chunk and where it starts in the file it was cut from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScannedChunk {
    pub chunk: ChunkRef,
    pub offset: u64,
}

/// What a scan of a file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileScan {
    pub size: u64,
    /// BLAKE3 of the whole content.
    pub content_hash: Hash,
    pub chunks: Vec<ScannedChunk>,
}

impl FileScan {
    pub fn refs(&self) -> Vec<ChunkRef> {
        self.chunks.iter().map(|c| c.chunk).collect()
    }
}

pub fn hash(data: &[u8]) -> Hash {
    *blake3::hash(data).as_bytes()
}

/// Lower-case hex of a hash, for file names and logs.
pub fn hex(hash: &Hash) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// Cuts `source` into chunks, yielding each with its bytes. At most one chunk is in memory at a time.
pub fn chunks<R: Read>(source: R) -> impl Iterator<Item = io::Result<(ScannedChunk, Vec<u8>)>> {
    fastcdc::v2020::StreamCDC::new(source, MIN_CHUNK as usize, AVG_CHUNK as usize, MAX_CHUNK as usize).map(|r| {
        let c = r.map_err(|e| match e {
            fastcdc::v2020::Error::IoError(io) => io,
            other => io::Error::other(other.to_string()),
        })?;
        let len = u32::try_from(c.length).map_err(|_| io::Error::other("chunk longer than u32"))?;
        Ok((ScannedChunk { chunk: ChunkRef { hash: hash(&c.data), len }, offset: c.offset }, c.data))
    })
}

/// Chunks and hashes a whole stream, keeping only the chunk list.
pub fn scan<R: Read>(source: R) -> io::Result<FileScan> {
    let mut whole = blake3::Hasher::new();
    let mut size = 0u64;
    let mut list = Vec::new();
    for item in chunks(source) {
        let (chunk, data) = item?;
        whole.update(&data);
        size += data.len() as u64;
        list.push(chunk);
    }
    Ok(FileScan { size, content_hash: *whole.finalize().as_bytes(), chunks: list })
}

/// [`scan`] of content already in memory and at most [`MIN_CHUNK`] bytes long: FastCDC never cuts
/// below its minimum, so such content is one chunk (none if empty), hashed once, without the
/// streaming chunker's buffers (a small-file tree would otherwise allocate 256 KiB per file).
pub fn scan_small(data: &[u8]) -> Option<FileScan> {
    if data.len() > MIN_CHUNK as usize {
        return None;
    }
    let content_hash = hash(data);
    let chunks = if data.is_empty() {
        Vec::new()
    } else {
        vec![ScannedChunk { chunk: ChunkRef { hash: content_hash, len: data.len() as u32 }, offset: 0 }]
    };
    Some(FileScan { size: data.len() as u64, content_hash, chunks })
}

/// The manifest stored with a version: [`MANIFEST_RECORD_BYTES`] per chunk.
pub fn encode_manifest(chunks: &[ChunkRef]) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunks.len() * MANIFEST_RECORD_BYTES);
    for c in chunks {
        out.extend_from_slice(&c.hash);
        out.extend_from_slice(&c.len.to_be_bytes());
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("manifest of {0} bytes is not a whole number of {MANIFEST_RECORD_BYTES}-byte records")]
pub struct ManifestError(pub usize);

pub fn decode_manifest(bytes: &[u8]) -> Result<Vec<ChunkRef>, ManifestError> {
    if !bytes.len().is_multiple_of(MANIFEST_RECORD_BYTES) {
        return Err(ManifestError(bytes.len()));
    }
    Ok(bytes
        .chunks_exact(MANIFEST_RECORD_BYTES)
        .map(|r| {
            let mut hash = [0u8; 32];
            hash.copy_from_slice(&r[..32]);
            let len = u32::from_be_bytes([r[32], r[33], r[34], r[35]]);
            ChunkRef { hash, len }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn small_content_scans_as_the_stream_does() {
        for len in [0, 1, 4096, MIN_CHUNK as usize - 1, MIN_CHUNK as usize] {
            let data = pseudo_random(len, 9);
            let streamed = scan(std::io::Cursor::new(&data)).unwrap();
            assert_eq!(scan_small(&data), Some(streamed), "{len} bytes");
        }
        assert_eq!(scan_small(&pseudo_random(MIN_CHUNK as usize + 1, 9)), None);
    }

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn scan_covers_the_file_and_respects_sizes() {
        let data = pseudo_random(3 * 1024 * 1024 + 17, 1);
        let s = scan(&data[..]).unwrap();
        assert_eq!(s.size, data.len() as u64);
        assert_eq!(s.content_hash, hash(&data));
        let mut offset = 0;
        for (i, c) in s.chunks.iter().enumerate() {
            assert_eq!(c.offset, offset);
            assert!(c.chunk.len <= MAX_CHUNK);
            if i + 1 < s.chunks.len() {
                assert!(c.chunk.len >= MIN_CHUNK);
            }
            let start = c.offset as usize;
            assert_eq!(c.chunk.hash, hash(&data[start..start + c.chunk.len as usize]));
            offset += u64::from(c.chunk.len);
        }
        assert_eq!(offset, data.len() as u64);
    }

    #[test]
    fn an_edit_in_the_middle_changes_few_chunks() {
        let mut data = pseudo_random(8 * 1024 * 1024, 2);
        let before: HashSet<Hash> = scan(&data[..]).unwrap().chunks.iter().map(|c| c.chunk.hash).collect();
        let mid = data.len() / 2;
        data[mid..mid + 4096].copy_from_slice(&pseudo_random(4096, 3));
        let after = scan(&data[..]).unwrap();
        let new_bytes: u64 =
            after.chunks.iter().filter(|c| !before.contains(&c.chunk.hash)).map(|c| u64::from(c.chunk.len)).sum();
        assert!(new_bytes > 0 && new_bytes <= 2 * u64::from(MAX_CHUNK), "{new_bytes} new bytes");
        // An insertion shifts the rest of the file but changes only local chunks.
        data.splice(mid..mid, pseudo_random(100, 4));
        let shifted = scan(&data[..]).unwrap();
        let changed = shifted.chunks.iter().filter(|c| !before.contains(&c.chunk.hash)).count();
        assert!(changed <= 3, "{changed} chunks changed after a 100-byte insert");
    }

    #[test]
    fn empty_input_has_no_chunks() {
        let s = scan(&[][..]).unwrap();
        assert_eq!((s.size, s.chunks.len()), (0, 0));
        assert_eq!(s.content_hash, hash(b""));
    }

    #[test]
    fn manifest_round_trips_and_rejects_torn_records() {
        let refs = vec![ChunkRef { hash: [7; 32], len: 1 }, ChunkRef { hash: [9; 32], len: MAX_CHUNK }];
        let bytes = encode_manifest(&refs);
        assert_eq!(bytes.len(), 72);
        assert_eq!(&bytes[32..36], &[0, 0, 0, 1]);
        assert_eq!(decode_manifest(&bytes).unwrap(), refs);
        assert_eq!(decode_manifest(&bytes[..71]), Err(ManifestError(71)));
    }
}

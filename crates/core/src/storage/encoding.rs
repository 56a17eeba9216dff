//! A chunk at rest: one format byte's worth of choice — [`FORMAT_RAW`] or
//! [`FORMAT_ZSTD`] — and a payload. zstd is used only when a 4 KiB level-1
//! sample shows it pays and the result is smaller. Encoding verifies the bytes
//! against the hash they are stored under; decoding verifies them again.

use std::io;

use super::StorageError;
use crate::chunking::{hash, hex, Hash, MAX_CHUNK};

pub const FORMAT_RAW: u8 = 0;
pub const FORMAT_ZSTD: u8 = 1;
const ZSTD_LEVEL: i32 = 3;
/// Bytes compressed at level 1 to decide whether the whole chunk is worth compressing.
const SAMPLE: usize = 4096;

/// A chunk's stored form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub format: u8,
    pub payload: Vec<u8>,
}

/// Verifies `data` against `claimed` and encodes it (zstd when that makes it smaller).
pub fn encode(claimed: &Hash, data: Vec<u8>) -> Result<Encoded, StorageError> {
    let actual = hash(&data);
    if &actual != claimed {
        return Err(StorageError::HashMismatch { claimed: hex(claimed), actual: hex(&actual) });
    }
    if worth_compressing(&data) {
        let compressed =
            compress(&data, ZSTD_LEVEL).map_err(|source| StorageError::Io { path: "<zstd>".into(), source })?;
        if compressed.len() < data.len() {
            return Ok(Encoded { format: FORMAT_ZSTD, payload: compressed });
        }
    }
    Ok(Encoded { format: FORMAT_RAW, payload: data })
}

/// The chunk's bytes from its stored form, verified against `claimed`.
pub fn decode(claimed: &Hash, format: u8, payload: &[u8]) -> Result<Vec<u8>, StorageError> {
    let data = match format {
        FORMAT_RAW => payload.to_vec(),
        // Chunks are at most MAX_CHUNK bytes; a bigger result means corruption.
        FORMAT_ZSTD => {
            zstd::bulk::decompress(payload, MAX_CHUNK as usize).map_err(|_| StorageError::Corrupt(hex(claimed)))?
        }
        _ => return Err(StorageError::Corrupt(hex(claimed))),
    };
    if &hash(&data) != claimed {
        return Err(StorageError::Corrupt(hex(claimed)));
    }
    Ok(data)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_compressed_random_is_not_and_both_round_trip() {
        let text = b"all work and no play ".repeat(4000);
        let mut random = vec![0u8; 65_536];
        blake3::Hasher::new().finalize_xof().fill(&mut random);
        assert!(!worth_compressing(&random));
        assert!(worth_compressing(&text));
        for (data, format) in [(text, FORMAT_ZSTD), (random, FORMAT_RAW)] {
            let h = hash(&data);
            let e = encode(&h, data.clone()).unwrap();
            assert_eq!(e.format, format);
            assert_eq!(decode(&h, e.format, &e.payload).unwrap(), data);
        }
    }

    #[test]
    fn wrong_bytes_are_refused_in_and_out() {
        let h = hash(b"announced");
        assert!(matches!(encode(&h, b"other".to_vec()), Err(StorageError::HashMismatch { .. })));
        assert!(matches!(decode(&h, FORMAT_RAW, b"other"), Err(StorageError::Corrupt(_))));
        assert!(matches!(decode(&h, FORMAT_ZSTD, b"not zstd"), Err(StorageError::Corrupt(_))));
        assert!(matches!(decode(&h, 9, b"announced"), Err(StorageError::Corrupt(_))));
    }
}

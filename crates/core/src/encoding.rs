//! A chunk's stored form: one format byte — [`FORMAT_RAW`] or [`FORMAT_ZSTD`] — and a payload.
//! The same form is kept at rest (pack entries, `docs/storage.md`) and travels on the wire
//! (`Message::Chunk`, protocol 5, `docs/protocol.md`), so a chunk is compressed once, by whoever
//! first has its bytes (the agent that uploads it, or the HTTP API), and decompressed only by
//! whoever needs the bytes.
//!
//! - [`Encoded::of`] is the one decision: zstd only when a 4 KiB level-1 sample shows it pays
//!   and the result is smaller than the chunk.
//! - [`encode`] verifies the bytes against their hash, then encodes them.
//! - [`decode`] is the one decoder: bounded (a zstd payload never yields more than `max` bytes,
//!   at most [`MAX_CHUNK`], whatever it claims) and verified against the hash.
//!
//! Without the `storage` feature: the client compresses uploads and decodes downloads with it.

use std::io;

use crate::chunking::{hash, hex, Hash, MAX_CHUNK};

pub const FORMAT_RAW: u8 = 0;
pub const FORMAT_ZSTD: u8 = 1;
const ZSTD_LEVEL: i32 = 3;
/// Bytes compressed at level 1 to decide whether the whole chunk is worth compressing.
const SAMPLE: usize = 4096;

/// Why bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodingError {
    /// The chunk's bytes are not the ones its hash names.
    #[error("chunk bytes hash to {actual}, not to the claimed {claimed}")]
    HashMismatch { claimed: String, actual: String },
    /// The payload cannot be decoded: an unknown format, not zstd, or more bytes than allowed.
    #[error("chunk {hash}: {reason}")]
    Undecodable { hash: String, reason: &'static str },
}

/// A chunk's stored form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub format: u8,
    pub payload: Vec<u8>,
}

impl Encoded {
    /// `data` as it is stored and sent: zstd when that pays, else raw. Does not verify.
    pub fn of(data: Vec<u8>) -> Encoded {
        if worth_compressing(&data) {
            if let Ok(compressed) = compress(&data, ZSTD_LEVEL) {
                if compressed.len() < data.len() {
                    return Encoded { format: FORMAT_ZSTD, payload: compressed };
                }
            }
        }
        Encoded { format: FORMAT_RAW, payload: data }
    }
}

/// Verifies `data` against `claimed` and encodes it ([`Encoded::of`]).
pub fn encode(claimed: &Hash, data: Vec<u8>) -> Result<Encoded, EncodingError> {
    let actual = hash(&data);
    if &actual != claimed {
        return Err(EncodingError::HashMismatch { claimed: hex(claimed), actual: hex(&actual) });
    }
    Ok(Encoded::of(data))
}

/// The chunk's bytes from its stored form, at most `max` of them (capped at [`MAX_CHUNK`]; a zstd
/// payload that would yield more is refused without producing it), verified against `claimed`.
pub fn decode(claimed: &Hash, format: u8, payload: &[u8], max: u32) -> Result<Vec<u8>, EncodingError> {
    let max = max.min(MAX_CHUNK) as usize;
    let undecodable = |reason| EncodingError::Undecodable { hash: hex(claimed), reason };
    let data = match format {
        FORMAT_RAW if payload.len() > max => return Err(undecodable("raw payload longer than allowed")),
        FORMAT_RAW => payload.to_vec(),
        // The output buffer is `max` bytes: a frame claiming or producing more fails here.
        FORMAT_ZSTD => zstd::bulk::decompress(payload, max)
            .map_err(|_| undecodable("not a zstd frame of at most the allowed length"))?,
        _ => return Err(undecodable("unknown format")),
    };
    let actual = hash(&data);
    if &actual != claimed {
        return Err(EncodingError::HashMismatch { claimed: hex(claimed), actual: hex(&actual) });
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
    /// One zstd context per thread and level: creating one per chunk showed in profiles.
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
            assert_eq!(decode(&h, e.format, &e.payload, MAX_CHUNK).unwrap(), data);
        }
    }

    #[test]
    fn wrong_bytes_are_refused_in_and_out() {
        let h = hash(b"announced");
        assert!(matches!(encode(&h, b"other".to_vec()), Err(EncodingError::HashMismatch { .. })));
        assert!(matches!(decode(&h, FORMAT_RAW, b"other", MAX_CHUNK), Err(EncodingError::HashMismatch { .. })));
        assert!(matches!(decode(&h, FORMAT_ZSTD, b"not zstd", MAX_CHUNK), Err(EncodingError::Undecodable { .. })));
        assert!(matches!(decode(&h, 9, b"announced", MAX_CHUNK), Err(EncodingError::Undecodable { .. })));
        // Valid zstd of other bytes.
        let other = Encoded::of(b"other ".repeat(100));
        assert!(matches!(decode(&h, other.format, &other.payload, MAX_CHUNK), Err(EncodingError::HashMismatch { .. })));
    }

    /// A small payload that expands past the bound is refused, never produced: 16 MiB of zeros
    /// compress to a few hundred bytes.
    #[test]
    fn a_zstd_bomb_is_refused() {
        let zeros = vec![0u8; 16 << 20];
        let bomb = zstd::bulk::compress(&zeros, 3).unwrap();
        assert!(bomb.len() < 4096, "{}", bomb.len());
        let h = hash(&zeros);
        assert!(matches!(decode(&h, FORMAT_ZSTD, &bomb, u32::MAX), Err(EncodingError::Undecodable { .. })));
        // Exactly the bound passes; one byte less is refused.
        let zeros = vec![0u8; 1000];
        let e = Encoded::of(zeros.clone());
        assert_eq!(e.format, FORMAT_ZSTD);
        assert_eq!(decode(&hash(&zeros), e.format, &e.payload, 1000).unwrap(), zeros);
        assert!(decode(&hash(&zeros), e.format, &e.payload, 999).is_err());
        assert!(decode(&hash(&zeros), FORMAT_RAW, &zeros, 999).is_err());
    }
}

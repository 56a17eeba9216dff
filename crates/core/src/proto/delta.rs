//! A manifest sent as a delta against a version both ends already hold.
//!
//! A 1 GiB file has ~16,000 chunks, so its full manifest is ~540 KB: far more
//! than the chunks a small edit changes. Both directions therefore send the
//! new chunk list as [`Run`]s over the base version's list — "copy base chunks
//! `start..start+count`" or "this new chunk" — and the whole list's
//! [`manifest_hash`], so the receiver can tell it rebuilt exactly what the
//! sender meant (a wrong base or a corrupted delta is refused, never stored).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::chunking::{ChunkRef, Hash, MANIFEST_RECORD_BYTES};

/// One piece of a delta manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Run {
    /// The base's chunks `start..start + count`, in order.
    Copy { start: u32, count: u32 },
    /// A chunk the base does not have at this place.
    New(ChunkRef),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    #[error("a copy run reaches past the base's {0} chunks")]
    OutOfRange(usize),
    #[error("the delta describes more than {0} chunks")]
    TooLong(usize),
    #[error("the rebuilt chunk list does not match the manifest hash")]
    HashMismatch,
}

/// BLAKE3 of the manifest's stored form ([`crate::chunking::encode_manifest`]), computed without building it.
pub fn manifest_hash(chunks: &[ChunkRef]) -> Hash {
    let mut h = blake3::Hasher::new();
    let mut record = [0u8; MANIFEST_RECORD_BYTES];
    for c in chunks {
        record[..32].copy_from_slice(&c.hash);
        record[32..].copy_from_slice(&c.len.to_be_bytes());
        h.update(&record);
    }
    *h.finalize().as_bytes()
}

/// `new` as runs over `base`: consecutive base chunks become one copy run.
pub fn diff(base: &[ChunkRef], new: &[ChunkRef]) -> Vec<Run> {
    let mut first: HashMap<ChunkRef, u32> = HashMap::with_capacity(base.len());
    for (i, c) in base.iter().enumerate() {
        first.entry(*c).or_insert(i as u32);
    }
    let mut runs: Vec<Run> = Vec::new();
    for c in new {
        if let Some(Run::Copy { start, count }) = runs.last_mut() {
            let next = (*start + *count) as usize;
            if base.get(next) == Some(c) {
                *count += 1;
                continue;
            }
        }
        runs.push(match first.get(c) {
            Some(&start) => Run::Copy { start, count: 1 },
            None => Run::New(*c),
        });
    }
    runs
}

/// Rebuilds the chunk list from `base` and `runs`, refusing more than
/// `max_chunks` entries (a few bytes of runs must not make the receiver
/// allocate gigabytes) and any list whose hash is not `expected`.
pub fn apply(base: &[ChunkRef], runs: &[Run], max_chunks: usize, expected: &Hash) -> Result<Vec<ChunkRef>, DeltaError> {
    let mut out: Vec<ChunkRef> = Vec::new();
    for run in runs {
        match *run {
            Run::Copy { start, count } => {
                let (start, count) = (start as usize, count as usize);
                let part = start
                    .checked_add(count)
                    .and_then(|end| base.get(start..end))
                    .ok_or(DeltaError::OutOfRange(base.len()))?;
                if out.len() + part.len() > max_chunks {
                    return Err(DeltaError::TooLong(max_chunks));
                }
                out.extend_from_slice(part);
            }
            Run::New(c) => {
                if out.len() >= max_chunks {
                    return Err(DeltaError::TooLong(max_chunks));
                }
                out.push(c);
            }
        }
    }
    if &manifest_hash(&out) != expected {
        return Err(DeltaError::HashMismatch);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunking::{encode_manifest, hash};

    fn chunk(i: u32) -> ChunkRef {
        ChunkRef { hash: hash(&i.to_be_bytes()), len: 1000 + i }
    }

    #[test]
    fn an_edit_in_the_middle_is_three_runs_and_rebuilds_exactly() {
        let base: Vec<ChunkRef> = (0..1000).map(chunk).collect();
        let mut new = base.clone();
        new[500] = chunk(5000);
        new.insert(501, chunk(5001));
        let runs = diff(&base, &new);
        assert_eq!(
            runs,
            vec![
                Run::Copy { start: 0, count: 500 },
                Run::New(chunk(5000)),
                Run::New(chunk(5001)),
                Run::Copy { start: 501, count: 499 }
            ]
        );
        assert_eq!(apply(&base, &runs, 10_000, &manifest_hash(&new)).unwrap(), new);
        assert_eq!(manifest_hash(&new), *blake3::hash(&encode_manifest(&new)).as_bytes());
    }

    #[test]
    fn moved_and_repeated_chunks_copy_from_the_base() {
        let base: Vec<ChunkRef> = (0..10).map(chunk).collect();
        let new: Vec<ChunkRef> = [5, 6, 7, 0, 1, 0, 1].iter().map(|&i| chunk(i)).collect();
        let runs = diff(&base, &new);
        assert!(runs.iter().all(|r| matches!(r, Run::Copy { .. })));
        assert_eq!(apply(&base, &runs, 100, &manifest_hash(&new)).unwrap(), new);
        assert_eq!(diff(&[], &new).len(), new.len());
    }

    #[test]
    fn bad_deltas_are_refused() {
        let base: Vec<ChunkRef> = (0..10).map(chunk).collect();
        let good = manifest_hash(&base);
        let whole = [Run::Copy { start: 0, count: 10 }];
        assert_eq!(apply(&base, &whole, 100, &good).unwrap(), base);
        // Past the end, overflowing, too long, or not what the sender hashed.
        assert_eq!(apply(&base, &[Run::Copy { start: 5, count: 6 }], 100, &good), Err(DeltaError::OutOfRange(10)));
        assert_eq!(
            apply(&base, &[Run::Copy { start: u32::MAX, count: u32::MAX }], 100, &good),
            Err(DeltaError::OutOfRange(10))
        );
        assert_eq!(apply(&base, &[whole[0]; 20], 100, &good), Err(DeltaError::TooLong(100)));
        assert_eq!(apply(&base, &[Run::Copy { start: 0, count: 9 }], 100, &good), Err(DeltaError::HashMismatch));
        assert_eq!(apply(&base[1..], &whole[..], 100, &good), Err(DeltaError::OutOfRange(9)));
    }
}

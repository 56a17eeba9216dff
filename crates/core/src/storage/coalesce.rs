//! Coalesced reads: the chunks of a download, in order, grouped into as few
//! ranged reads as their places in the packs allow (`docs/storage.md` §5).
//!
//! A file uploaded in one go lies in its packs about in order, entry after
//! entry (a few chunks are appended at once, so neighbours may swap), so one
//! ranged read of a few MiB returns dozens of its chunks. Consecutive chunks
//! (in the order asked) join the current read while they lie in the same pack,
//! at most [`MAX_GAP`] dead bytes before or after what the read covers so far,
//! and keep the read within [`MAX_SPAN`] bytes. A chunk repeated in a row (a
//! run of zeros) lies inside the read already and costs nothing. Anything else
//! starts a new read; a loose chunk or one the index lacks is read (or fails)
//! alone.

use super::pack;
use super::StorageError;
use crate::chunking::Hash;
use crate::db::packs::{Location, PackId, PackedAt};
use crate::encoding::Encoded;

/// The longest coalesced read: 1 MiB, about 16 chunks of the average size. A node serves a
/// client's pipelined `GetChunks` windows at once, each with the daemons' 4 reads in flight: at
/// 4 MiB a read, a 1 GiB download held ~115 MiB of node RSS (release, 2026-12-02); at 1 MiB it
/// stays under the 100 MiB budget, and a GiB still takes ~1,000–2,000 reads instead of ~13,500
/// (the windows, not this bound, set most of the splits: docs/storage.md §5).
pub const MAX_SPAN: u64 = 1 << 20;

/// Dead bytes (entries nobody asked for: other files' chunks, duplicates) a read may carry
/// rather than be split in two: a request costs more than 64 KiB of transfer on any store.
pub const MAX_GAP: u64 = 64 << 10;

/// One backend read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Read {
    /// Bytes `start..end` of `pack`, holding `entries` (in the order asked; an entry may repeat).
    Span { pack: PackId, start: u64, end: u64, entries: Vec<(Hash, PackedAt, u32)> },
    /// One chunk that is not in a pack (loose, or not recorded).
    One(Hash, Option<Location>),
}

impl Read {
    /// The entries of a span read from `bytes` (the bytes `start..end`), each checked against the
    /// index as a lone read's would be.
    pub(crate) fn split(
        start: u64,
        entries: Vec<(Hash, PackedAt, u32)>,
        bytes: &[u8],
    ) -> Vec<Result<(Hash, Encoded), StorageError>> {
        entries
            .into_iter()
            .map(|(hash, at, stored_size)| {
                let from = usize::try_from(at.offset - start).unwrap_or(usize::MAX);
                let entry = bytes.get(from..from.saturating_add(stored_size as usize)).unwrap_or(&[]);
                pack::read_entry_stored(&hash, &at, entry).map(|stored| (hash, stored))
            })
            .collect()
    }
}

/// Groups located chunks, pushed in order, into [`Read`]s.
#[derive(Debug, Default)]
pub(crate) struct Coalescer {
    open: Option<Read>,
}

impl Coalescer {
    /// Adds the next chunk; returns the reads it completed (none while it joins the open one).
    pub(crate) fn push(&mut self, hash: Hash, location: Option<Location>) -> Vec<Read> {
        let Some(Location::Packed { at, stored_size }) = location else {
            return self.open.take().into_iter().chain([Read::One(hash, location)]).collect();
        };
        let entry_end = at.offset + u64::from(stored_size);
        if let Some(Read::Span { pack, start, end, entries }) = &mut self.open {
            let joins = *pack == at.pack
                && at.offset <= *end + MAX_GAP
                && entry_end + MAX_GAP >= *start
                && entry_end.max(*end) - at.offset.min(*start) <= MAX_SPAN;
            if joins {
                *start = at.offset.min(*start);
                *end = entry_end.max(*end);
                entries.push((hash, at, stored_size));
                return Vec::new();
            }
        }
        let span =
            Read::Span { pack: at.pack, start: at.offset, end: entry_end, entries: vec![(hash, at, stored_size)] };
        self.open.replace(span).into_iter().collect()
    }

    /// The read still open, at the end.
    pub(crate) fn finish(&mut self) -> Option<Read> {
        self.open.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(pack: u8, offset: u64, size: u32) -> Option<Location> {
        Some(Location::Packed { at: PackedAt { pack: PackId([pack; 16]), offset, format: 0 }, stored_size: size })
    }

    fn spans(reads: &[Read]) -> Vec<(u64, u64, usize)> {
        reads
            .iter()
            .map(|r| match r {
                Read::Span { start, end, entries, .. } => (*start, *end, entries.len()),
                Read::One(..) => (0, 0, 0),
            })
            .collect()
    }

    fn group(chunks: &[Option<Location>]) -> Vec<Read> {
        let mut c = Coalescer::default();
        let mut reads: Vec<Read> = chunks.iter().enumerate().flat_map(|(i, l)| c.push([i as u8; 32], *l)).collect();
        reads.extend(c.finish());
        reads
    }

    #[test]
    fn adjacent_entries_of_one_pack_are_one_read() {
        let reads = group(&[at(1, 8, 100), at(1, 108, 50), at(1, 158, 10)]);
        assert_eq!(spans(&reads), vec![(8, 168, 3)]);
    }

    #[test]
    fn small_gaps_and_repeats_join_large_gaps_other_packs_and_going_back_split() {
        // A gap of 64 KiB joins; one byte more does not.
        let reads = group(&[at(1, 8, 100), at(1, 108 + MAX_GAP, 10), at(1, 118 + 2 * MAX_GAP + 1, 10)]);
        assert_eq!(spans(&reads), vec![(8, 118 + MAX_GAP, 2), (118 + 2 * MAX_GAP + 1, 129 + 2 * MAX_GAP, 1)]);
        // The same chunk again, inside the read: no new read.
        assert_eq!(spans(&group(&[at(1, 8, 100), at(1, 108, 5), at(1, 8, 100)])), vec![(8, 113, 3)]);
        // Neighbours swapped by the writer, or read backwards: the read grows at its start too.
        assert_eq!(spans(&group(&[at(1, 108, 100), at(1, 8, 100), at(1, 208, 10)])), vec![(8, 218, 3)]);
        // Another pack, or an entry far before the read's start.
        assert_eq!(spans(&group(&[at(1, 8, 100), at(2, 108, 5)])).len(), 2);
        let far = 2 * MAX_GAP;
        assert_eq!(spans(&group(&[at(1, far + 108, 100), at(1, 8, 100)])).len(), 2);
    }

    #[test]
    fn reads_stay_within_the_span_and_lone_chunks_are_read_alone() {
        let entry = 256 * 1024;
        let chunks: Vec<_> = (0..40).map(|i| at(1, 8 + i * u64::from(entry), entry)).collect();
        let reads = group(&chunks);
        assert_eq!(reads.len(), 10, "40 entries of 256 KiB in reads of at most 1 MiB");
        assert!(spans(&reads).iter().all(|(s, e, _)| e - s <= MAX_SPAN));
        let reads = group(&[at(1, 8, 10), Some(Location::Loose), at(1, 18, 10), None]);
        assert_eq!(reads.len(), 4);
        assert!(matches!(reads[1], Read::One(_, Some(Location::Loose))));
        assert!(matches!(reads[3], Read::One(_, None)));
    }

    #[test]
    fn a_span_splits_into_checked_entries() {
        let dir = tempfile::tempdir().unwrap();
        let w = pack::PackWriter::new(dir.path().to_path_buf());
        let (a, b) = (b"first chunk".to_vec(), b"second".to_vec());
        let (ha, hb) = (crate::chunking::hash(&a), crate::chunking::hash(&b));
        let x = w.append(&ha, a.clone()).unwrap();
        let y = w.append(&hb, b.clone()).unwrap();
        let bytes = std::fs::read(w.take().unwrap().file.path()).unwrap();
        let start = x.at.offset;
        let end = y.at.offset + u64::from(y.stored_size);
        let got = Read::split(
            start,
            vec![(hb, y.at, y.stored_size), (ha, x.at, x.stored_size)],
            &bytes[start as usize..end as usize],
        );
        assert_eq!(got[0].as_ref().unwrap().1.payload, b);
        assert_eq!(got[1].as_ref().unwrap().1.payload, a);
        // An index that names the wrong hash at an offset: that entry is corrupt.
        let got = Read::split(start, vec![(hb, x.at, x.stored_size)], &bytes[start as usize..end as usize]);
        assert!(matches!(got[0], Err(StorageError::Corrupt(_))));
    }
}

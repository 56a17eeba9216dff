//! Chunk lists of large versions this connection uploaded or downloaded, so
//! the next version of the same file travels as a delta (`proto::delta`) both
//! ways instead of as a full manifest (~540 KB for 1 GiB).

use std::collections::VecDeque;
use std::sync::Arc;

use filesync_core::chunking::ChunkRef;
use filesync_core::WorkspaceId;

/// Smaller lists are cheaper to send whole than to remember.
pub(crate) const MIN_CACHED_CHUNKS: usize = 64;
/// Bounds memory: ~9 MiB of chunk references (16 GiB of files at the average chunk size).
const MAX_REFS: usize = 1 << 18;
const MAX_ENTRIES: usize = 32;
/// Bases offered per `GetManifestDelta`, newest first.
const MAX_OFFERED: usize = 8;

struct Entry {
    ws: WorkspaceId,
    seq: i64,
    path: String,
    chunks: Arc<Vec<ChunkRef>>,
}

#[derive(Default)]
pub(crate) struct ManifestCache {
    entries: VecDeque<Entry>,
    refs: usize,
}

impl ManifestCache {
    /// Remembers `seq`'s list if it is large; evicts the oldest beyond the bounds.
    pub(crate) fn insert(&mut self, ws: WorkspaceId, seq: i64, path: &str, chunks: Arc<Vec<ChunkRef>>) {
        if chunks.len() < MIN_CACHED_CHUNKS || chunks.len() > MAX_REFS {
            return;
        }
        // One entry per path: the newest version is the likely base of the next.
        let before = self.entries.len();
        self.entries.retain(|e| !(e.ws == ws && (e.seq == seq || e.path == path)));
        if self.entries.len() != before {
            self.refs = self.entries.iter().map(|e| e.chunks.len()).sum();
        }
        self.refs += chunks.len();
        self.entries.push_back(Entry { ws, seq, path: path.to_owned(), chunks });
        while self.refs > MAX_REFS || self.entries.len() > MAX_ENTRIES {
            match self.entries.pop_front() {
                Some(old) => self.refs -= old.chunks.len(),
                None => break,
            }
        }
    }

    /// The list of `seq` if it was a version of `path`.
    pub(crate) fn get(&self, ws: WorkspaceId, seq: i64, path: &str) -> Option<Arc<Vec<ChunkRef>>> {
        self.entries.iter().find(|e| e.ws == ws && e.seq == seq && e.path == path).map(|e| e.chunks.clone())
    }

    /// Versions of `ws` a delta may be based on, newest first, with their lists.
    pub(crate) fn offered(&self, ws: WorkspaceId) -> Vec<(i64, Arc<Vec<ChunkRef>>)> {
        self.entries.iter().rev().filter(|e| e.ws == ws).take(MAX_OFFERED).map(|e| (e.seq, e.chunks.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(n: usize, tag: u8) -> Arc<Vec<ChunkRef>> {
        Arc::new((0..n).map(|i| ChunkRef { hash: [tag; 32], len: i as u32 + 1 }).collect())
    }

    #[test]
    fn keeps_the_newest_version_per_path_within_bounds() {
        let mut c = ManifestCache::default();
        let ws = WorkspaceId(1);
        c.insert(ws, 1, "small", list(3, 0));
        assert!(c.get(ws, 1, "small").is_none());
        c.insert(ws, 2, "big", list(100, 1));
        c.insert(ws, 3, "big", list(100, 2));
        assert!(c.get(ws, 2, "big").is_none());
        assert_eq!(c.get(ws, 3, "big").unwrap()[0].hash, [2; 32]);
        assert!(c.get(ws, 3, "other").is_none());
        assert!(c.get(WorkspaceId(2), 3, "big").is_none());
        for seq in 10..(10 + MAX_ENTRIES as i64 + 5) {
            c.insert(ws, seq, &format!("f{seq}"), list(MAX_REFS / 8, 3));
        }
        assert!(c.refs <= MAX_REFS && c.entries.len() <= MAX_ENTRIES);
        let offered = c.offered(ws);
        assert_eq!(offered[0].0, 10 + MAX_ENTRIES as i64 + 4);
        assert!(offered.len() <= MAX_OFFERED);
        assert!(c.get(ws, 3, "big").is_none());
    }
}

//! Streaming a large upload to the workspace's other devices while it arrives.
//!
//! When a `PutFile` (or `PutDelta`) lists at least [`STREAM_MIN_CHUNKS`] chunks and brings mostly
//! new content ([`mostly_new`]: the chunks the workspace lacks are at least half of its bytes),
//! the node announces it to the workspace's subscribers on every node (through the bus):
//! `Notice::UploadStarted` with the chunk list, then `Notice::UploadProgress` each time a
//! batch of the upload's chunks becomes durable and recorded for the workspace, so that the
//! first `durable` chunks of the list can be read with an ordinary `GetChunks` before the
//! commit. An upload that ends without a commit is announced as `Notice::UploadAbandoned`.
//!
//! Nothing here changes what a workspace may read: a chunk is served only once the workspace
//! holds it (`workspace_chunks`), and only subscribers (members) hear the announcements.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use filesync_core::chunking::Hash;
use filesync_core::proto::{FileUpload, Notice};
use filesync_core::WorkspaceId;

use crate::node::Shared;

/// Uploads with at least this many chunks (~4 MiB at the average chunk size) are announced.
pub const STREAM_MIN_CHUNKS: usize = 64;

/// Whether an upload of `file` whose chunks `missing` the workspace lacks brings mostly new
/// content: the bytes of those chunks (each place in the list counted) are at least half of the
/// file. Only such uploads are announced. An edit of a file the others hold is left to their
/// download after the commit, which takes the unchanged chunks from their own copy and fetches
/// only the changed ones; fetching it ahead would fetch it all, and its announcement alone (the
/// whole list, 33 bytes a chunk) would outweigh the edit many times over.
pub fn mostly_new(file: &FileUpload, missing: &[Hash]) -> bool {
    let missing: HashSet<&Hash> = missing.iter().collect();
    let new: u64 = file.chunks.iter().filter(|c| missing.contains(&c.hash)).map(|c| u64::from(c.len)).sum();
    new > 0 && new.saturating_mul(2) >= file.size
}

/// An announced upload: which prefix of its chunk list the workspace holds.
pub struct Announced {
    shared: Arc<Shared>,
    ws: WorkspaceId,
    content_hash: Hash,
    /// The chunk list, in file order.
    order: Vec<Hash>,
    /// Asked for and not yet recorded.
    pending: HashSet<Hash>,
    /// Received and not yet recorded, in the order they were given to the sink.
    received: VecDeque<Hash>,
    /// Length of the list's prefix the workspace holds.
    durable: usize,
    committed: bool,
}

impl Announced {
    /// Announces the upload of `file` if it is large and mostly new ([`mostly_new`]: `missing`
    /// are the chunks the workspace lacks).
    pub fn start(
        shared: &Arc<Shared>,
        ws: WorkspaceId,
        file: &FileUpload,
        device_id: &str,
        missing: &[Hash],
    ) -> Option<Announced> {
        if file.chunks.len() < STREAM_MIN_CHUNKS || !mostly_new(file, missing) {
            return None;
        }
        shared.announce_upload(
            ws,
            Notice::UploadStarted {
                workspace_id: ws,
                path: file.path.clone(),
                size: file.size,
                content_hash: file.content_hash,
                device_id: device_id.to_owned(),
                chunks: file.chunks.clone(),
            },
        );
        let mut announced = Announced {
            shared: shared.clone(),
            ws,
            content_hash: file.content_hash,
            order: file.chunks.iter().map(|c| c.hash).collect(),
            pending: missing.iter().copied().collect(),
            received: VecDeque::new(),
            durable: 0,
            committed: false,
        };
        announced.advance();
        Some(announced)
    }

    /// `hash` was handed to the upload's sink.
    pub fn pushed(&mut self, hash: Hash) {
        self.received.push_back(hash);
    }

    /// The sink recorded its `n` oldest unrecorded chunks: announce the new durable prefix.
    pub fn recorded(&mut self, n: u64) {
        for _ in 0..n {
            match self.received.pop_front() {
                Some(h) => {
                    self.pending.remove(&h);
                }
                None => break,
            }
        }
        self.advance();
    }

    /// The upload was committed: no abandonment to announce (the `Change` follows).
    pub fn committed(mut self) {
        self.committed = true;
    }

    fn advance(&mut self) {
        let before = self.durable;
        while self.durable < self.order.len() && !self.pending.contains(&self.order[self.durable]) {
            self.durable += 1;
        }
        if self.durable > before {
            let durable = u32::try_from(self.durable).unwrap_or(u32::MAX);
            let notice = Notice::UploadProgress { workspace_id: self.ws, content_hash: self.content_hash, durable };
            self.shared.announce_upload(self.ws, notice);
        }
    }
}

impl Drop for Announced {
    fn drop(&mut self) {
        if !self.committed && tokio::runtime::Handle::try_current().is_ok() {
            let notice = Notice::UploadAbandoned { workspace_id: self.ws, content_hash: self.content_hash };
            self.shared.announce_upload(self.ws, notice);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use filesync_core::chunking::ChunkRef;

    fn upload(chunks: &[(u8, u32)]) -> FileUpload {
        let chunks: Vec<ChunkRef> = chunks.iter().map(|&(h, len)| ChunkRef { hash: [h; 32], len }).collect();
        let size = chunks.iter().map(|c| u64::from(c.len)).sum();
        FileUpload { path: "f".into(), base_version: 0, size, mtime_ms: 0, mode: 0, content_hash: [9; 32], chunks }
    }

    #[test]
    fn only_uploads_of_mostly_new_bytes_are_announced() {
        let file = upload(&[(1, 100), (2, 100), (3, 100), (4, 100)]);
        assert!(mostly_new(&file, &[[1; 32], [2; 32], [3; 32], [4; 32]]), "a new file");
        assert!(mostly_new(&file, &[[3; 32], [4; 32]]), "half of it new");
        assert!(!mostly_new(&file, &[[4; 32]]), "an edit of a quarter");
        assert!(!mostly_new(&file, &[]), "nothing to send");
        // Bytes count, not chunks: one large new chunk among small held ones.
        let file = upload(&[(1, 10), (2, 10), (3, 300)]);
        assert!(mostly_new(&file, &[[3; 32]]));
        // A chunk listed twice counts twice.
        let file = upload(&[(1, 100), (1, 100), (2, 100)]);
        assert!(mostly_new(&file, &[[1; 32]]) && !mostly_new(&file, &[[2; 32]]));
    }
}

//! The whole-content hash ([`super::hash`], plain BLAKE3) computed over fixed, aligned blocks of
//! [`TREE_BLOCK`] bytes, keeping each block's BLAKE3 chaining value ([`Blocks`]).
//!
//! BLAKE3 is a tree: the hash of a file is fixed by the chaining values of its aligned
//! power-of-two subtrees, and a block's chaining value depends only on its bytes and its offset.
//! So a new version of a file that keeps most blocks of an old one byte for byte *at the same
//! offsets* (an edit that did not change the length: a copy-on-write clone of the old file's
//! ranges) has the same chaining values there, and its hash is that of the old file's values
//! for those blocks, the changed blocks hashed again, merged up the tree
//! ([`blake3::hazmat`]). The result is exactly `blake3::hash` of the content, as a test checks
//! against it for lengths around every boundary; nothing on the wire or at rest changes.
//!
//! Whoever reuses a block's value instead of hashing its bytes vouches that those bytes are the
//! ones hashed then: see `filesync_proto_client::download` for when a download does.

use blake3::hazmat::{merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode};

use super::{ChunkRef, Hash};

/// A block's (or subtree's) BLAKE3 chaining value.
pub type Cv = ChainingValue;

/// Bytes per block of [`TreeHasher`] (a power of two, 1,024 BLAKE3 chunks): the unit in which a
/// content hash can reuse an old file's work. 1 GiB has 1,024 blocks (32 KiB of values).
pub const TREE_BLOCK: u64 = 1 << 20;

/// The chaining values of a content's blocks ([`TreeHasher::finalize`]): one per whole or final
/// partial block, empty for content of one block or less (its hash is the root itself).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Blocks {
    /// The content's length.
    pub len: u64,
    pub cvs: Vec<ChainingValue>,
}

impl Blocks {
    /// The chaining value of block `i` (starting at `i * TREE_BLOCK`) if it is a whole block of
    /// this content.
    pub fn whole(&self, i: u64) -> Option<&ChainingValue> {
        let end = (i + 1).checked_mul(TREE_BLOCK)?;
        (end <= self.len).then(|| self.cvs.get(usize::try_from(i).ok()?)).flatten()
    }
}

/// Hashes content in order like [`blake3::Hasher`] (same result), block by block, keeping each
/// block's chaining value; a whole block can be given by its value instead of its bytes
/// ([`TreeHasher::push_block`]).
#[derive(Debug, Clone)]
pub struct TreeHasher {
    /// Bytes hashed (or pushed) so far.
    pos: u64,
    /// The block in progress, holding `filled` bytes (closed only once a byte past it comes: a
    /// content of exactly one block needs that block's root, not its chaining value).
    block: blake3::Hasher,
    filled: u64,
    cvs: Vec<ChainingValue>,
}

impl Default for TreeHasher {
    fn default() -> Self {
        TreeHasher::new()
    }
}

impl TreeHasher {
    pub fn new() -> TreeHasher {
        TreeHasher { pos: 0, block: blake3::Hasher::new(), filled: 0, cvs: Vec::new() }
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.pos
    }

    /// True if nothing was hashed yet.
    pub fn is_empty(&self) -> bool {
        self.pos == 0
    }

    /// True if the next byte starts a block.
    pub fn at_block_start(&self) -> bool {
        self.pos.is_multiple_of(TREE_BLOCK)
    }

    pub fn update(&mut self, mut data: &[u8]) -> &mut TreeHasher {
        while !data.is_empty() {
            if self.filled == TREE_BLOCK {
                self.close_block();
            }
            let room = TREE_BLOCK - self.filled;
            let n = usize::try_from(room).unwrap_or(usize::MAX).min(data.len());
            self.block.update(&data[..n]);
            self.pos += n as u64;
            self.filled += n as u64;
            data = &data[n..];
        }
        self
    }

    /// Appends a whole block by its chaining value, as if its bytes were hashed; `false` (and
    /// nothing appended) unless the next byte starts a block other than the first (the first
    /// block of a content of one block is its root, which a chaining value does not give). The
    /// caller vouches that the value is that of this block's bytes at this offset.
    pub fn push_block(&mut self, cv: ChainingValue) -> bool {
        if self.pos == 0 || !self.at_block_start() {
            return false;
        }
        if self.filled == TREE_BLOCK {
            self.close_block();
        }
        self.cvs.push(cv);
        self.pos += TREE_BLOCK;
        self.block = block_hasher(self.pos);
        true
    }

    /// The values of the blocks closed so far (whole blocks, in order).
    pub fn closed(&self) -> &[ChainingValue] {
        &self.cvs
    }

    /// The block just filled: its value is kept, the next one starts.
    fn close_block(&mut self) {
        let block = std::mem::replace(&mut self.block, block_hasher(self.pos));
        self.cvs.push(block.finalize_non_root());
        self.filled = 0;
    }

    /// The content hash (as [`super::hash`] of all the bytes) and the blocks' values.
    pub fn finalize(mut self) -> (Hash, Blocks) {
        let len = self.pos;
        if len <= TREE_BLOCK {
            // One block at most (nothing pushed: see `push_block`): it is the root.
            return (*self.block.finalize().as_bytes(), Blocks { len, cvs: Vec::new() });
        }
        if self.filled > 0 {
            self.cvs.push(self.block.finalize_non_root());
        }
        let root = root_of(&self.cvs, len);
        (root, Blocks { len, cvs: self.cvs })
    }
}

/// Blocks of contents scanned lately, by their chunk list ([`remember`], [`recall`]).
static RECENT: std::sync::Mutex<Vec<(Hash, std::sync::Arc<Blocks>)>> = std::sync::Mutex::new(Vec::new());

/// Contents remembered at most by [`remember`] (32 bytes per MiB each; the oldest go first).
const RECENT_MAX: usize = 64;

/// Contents smaller than this are not remembered: re-hashing them costs little.
pub const REMEMBER_FROM: u64 = 4 * TREE_BLOCK;

/// What names a content by its chunk list: the hash of the list's records. Two lists with the
/// same digest are the same list, hence the same content.
pub fn list_digest(chunks: impl IntoIterator<Item = ChunkRef>) -> Hash {
    let mut h = blake3::Hasher::new();
    for c in chunks {
        h.update(&c.hash);
        h.update(&c.len.to_be_bytes());
    }
    *h.finalize().as_bytes()
}

/// Remembers (in this process) the blocks of the content whose chunk list has `digest`
/// ([`list_digest`]). Purely content-addressed: whatever file holds that content later, these
/// are its blocks' values, so a rescan of a new version can tell which blocks did not change
/// without the old bytes ([`super::rescan`]).
pub fn remember(digest: Hash, blocks: Blocks) {
    if blocks.len < REMEMBER_FROM || blocks.cvs.is_empty() {
        return;
    }
    let Ok(mut recent) = RECENT.lock() else { return };
    recent.retain(|(d, _)| *d != digest);
    if recent.len() >= RECENT_MAX {
        recent.remove(0);
    }
    recent.push((digest, std::sync::Arc::new(blocks)));
}

/// The blocks of the content whose chunk list has `digest`, if remembered.
pub fn recall(digest: &Hash) -> Option<std::sync::Arc<Blocks>> {
    RECENT.lock().ok()?.iter().find(|(d, _)| d == digest).map(|(_, b)| b.clone())
}

/// A hasher for the block starting at `offset`.
fn block_hasher(offset: u64) -> blake3::Hasher {
    let mut h = blake3::Hasher::new();
    h.set_input_offset(offset);
    h
}

/// The root of content of `len` bytes (more than one block) whose blocks have the values `cvs`.
fn root_of(cvs: &[ChainingValue], len: u64) -> Hash {
    let (left, right) = split(cvs, len);
    *merge_subtrees_root(&left, &right, Mode::Hash).as_bytes()
}

/// The values of the left and right subtrees of `len` bytes (more than one block), as BLAKE3
/// splits them: the left one the largest power of two of bytes less than `len` (a whole number
/// of blocks, since `len` exceeds one).
fn split(cvs: &[ChainingValue], len: u64) -> (ChainingValue, ChainingValue) {
    let left = blake3::hazmat::left_subtree_len(len);
    let n = usize::try_from(left / TREE_BLOCK).unwrap_or(usize::MAX);
    (subtree(&cvs[..n], left), subtree(&cvs[n..], len - left))
}

fn subtree(cvs: &[ChainingValue], len: u64) -> ChainingValue {
    if len <= TREE_BLOCK {
        return cvs[0];
    }
    let (left, right) = split(cvs, len);
    merge_subtrees_non_root(&left, &right, Mode::Hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_data::noise;

    /// Exactly BLAKE3's hash, for lengths around every boundary that matters (one chunk of
    /// BLAKE3, one block, a power of two of blocks), however the bytes are split into updates.
    #[test]
    fn the_hash_is_blake3s_at_every_boundary() {
        let b = TREE_BLOCK as usize;
        let data = noise(5 * b + 3000, 7);
        for len in [0, 1, 1024, 1025, b - 1, b, b + 1, 2 * b, 2 * b + 1, 3 * b - 5, 4 * b, 4 * b + 1024, 5 * b + 3000] {
            let want = *blake3::hash(&data[..len]).as_bytes();
            let mut one = TreeHasher::new();
            one.update(&data[..len]);
            let (got, blocks) = one.finalize();
            assert_eq!(got, want, "len {len}");
            assert_eq!(blocks.len, len as u64);
            assert_eq!(blocks.cvs.len(), if len <= b { 0 } else { len.div_ceil(b) }, "len {len}");
            let mut pieces = TreeHasher::new();
            for part in data[..len].chunks(333_333) {
                pieces.update(part);
            }
            assert_eq!(pieces.finalize().0, want, "len {len} in pieces");
        }
    }

    /// A block given by its value (from an old version with the same block at the same offset)
    /// gives the same hash as its bytes; a value of other bytes gives another hash; a value is
    /// refused off a block boundary and for the first block.
    #[test]
    fn pushed_blocks_count_as_their_bytes() {
        let b = TREE_BLOCK as usize;
        let old = noise(3 * b + 500, 8);
        let (_, blocks) = TreeHasher::new().update(&old).clone().finalize();
        let mut new = old.clone();
        new[b / 2] ^= 1; // the first block changes, the others stay
        let mut h = TreeHasher::new();
        assert!(!h.push_block(blocks.cvs[0]), "never the first block");
        h.update(&new[..b]);
        assert!(h.push_block(*blocks.whole(1).unwrap()));
        assert!(h.push_block(*blocks.whole(2).unwrap()));
        assert!(blocks.whole(3).is_none(), "the last block is partial");
        h.update(&new[3 * b..3 * b + 10]);
        assert!(!h.push_block(blocks.cvs[1]), "off a boundary");
        h.update(&new[3 * b + 10..]);
        assert_eq!(h.finalize().0, *blake3::hash(&new).as_bytes());

        let mut wrong = TreeHasher::new();
        wrong.update(&new[..b]);
        wrong.push_block(blocks.cvs[2]);
        wrong.update(&new[2 * b..]);
        assert_ne!(wrong.finalize().0, *blake3::hash(&new).as_bytes(), "a block's value is tied to its offset");
    }
}

//! The scenarios of issue #6 (and 9, `scale`, and 11, `rename_tree`, of issue #11; 10, `compressible_tree`, of
//! issue #12), each runnable alone. Scenarios 1–4 and 9–11 are written against [`crate::mirror::Mirror`] and run
//! on filesync and the peers alike.

pub mod compressible_tree;
pub mod large_file;
pub mod latency;
pub mod many_files;
pub mod rename_tree;
pub mod scale;
pub mod small_edit;

/// A tree of about `files` files of `size` bytes in `dirs` directories (scenarios 4 and 10), how many samples
/// to take and the seed of their bytes.
#[derive(Debug, Clone, Copy)]
pub struct TreeRuns {
    pub files: usize,
    pub dirs: usize,
    pub size: usize,
    pub runs: usize,
    pub seed: u64,
}

impl TreeRuns {
    /// Files in each directory: every directory holds as many, so `files` is rounded up.
    pub fn per_dir(&self) -> usize {
        self.files.div_ceil(self.dirs.max(1))
    }

    /// The files the tree really holds.
    pub fn total_files(&self) -> usize {
        self.per_dir() * self.dirs
    }

    /// The bytes of all its files.
    pub fn total_bytes(&self) -> u64 {
        (self.total_files() * self.size) as u64
    }
}

/// A file size, how many samples to take and the seed of their random bytes.
#[derive(Debug, Clone, Copy)]
pub struct SizedRuns {
    pub size: u64,
    pub runs: usize,
    pub seed: u64,
}

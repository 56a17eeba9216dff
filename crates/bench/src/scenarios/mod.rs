//! The scenarios of issue #6 (and 9, `scale`, of issue #11; 10, `compressible_tree`, of issue #12), each
//! runnable alone. Scenarios 1–4, 9 and 10 are written against [`crate::mirror::Mirror`] and run on filesync
//! and the peers alike.

pub mod compressible_tree;
pub mod large_file;
pub mod latency;
pub mod many_files;
pub mod scale;
pub mod small_edit;

/// A file size, how many samples to take and the seed of their random bytes.
#[derive(Debug, Clone, Copy)]
pub struct SizedRuns {
    pub size: u64,
    pub runs: usize,
    pub seed: u64,
}

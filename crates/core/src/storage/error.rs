//! What can go wrong storing or reading a chunk.

use std::io;
use std::path::PathBuf;

use crate::db::DbError;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("chunk bytes hash to {actual}, not to the claimed {claimed}")]
    HashMismatch { claimed: String, actual: String },
    /// An uploaded chunk's payload does not decode (an unknown format, not zstd, longer than
    /// the chunk its manifest announced).
    #[error("the chunk is refused: {0}")]
    Undecodable(String),
    #[error("chunk {0} is not in the store")]
    NotFound(String),
    #[error("stored chunk {0} is corrupt")]
    Corrupt(String),
    #[error("chunk store I/O on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// The object store failed or could not be reached; the request may be retried.
    #[error("the object store is unavailable: {0}")]
    Unavailable(String),
    /// The pack index (the database).
    #[error("pack index: {0}")]
    Index(#[from] DbError),
    #[error("chunk store configuration: {0}")]
    Config(String),
    #[error("blocking task failed: {0}")]
    Task(String),
}

impl StorageError {
    /// True for failures that say "try again later" (the object store or the database is away),
    /// answered as `unavailable` / 503 rather than as an internal error.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StorageError::Unavailable(_) => true,
            StorageError::Index(e) => e.is_unavailable(),
            _ => false,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> StorageError {
        let path = path.into();
        move |source| StorageError::Io { path, source }
    }
}

impl From<object_store::Error> for StorageError {
    fn from(e: object_store::Error) -> StorageError {
        match e {
            // A pack the index names is gone: the chunk is not in the store.
            object_store::Error::NotFound { path, .. } => StorageError::NotFound(path),
            other => StorageError::Unavailable(other.to_string()),
        }
    }
}

/// Bytes received for storing: a wrong hash stays a mismatch, the rest is undecodable. (Bytes
/// read back from the store map every failure to [`StorageError::Corrupt`] instead.)
impl From<crate::encoding::EncodingError> for StorageError {
    fn from(e: crate::encoding::EncodingError) -> StorageError {
        match e {
            crate::encoding::EncodingError::HashMismatch { claimed, actual } => {
                StorageError::HashMismatch { claimed, actual }
            }
            other @ crate::encoding::EncodingError::Undecodable { .. } => StorageError::Undecodable(other.to_string()),
        }
    }
}

impl From<tokio::task::JoinError> for StorageError {
    fn from(e: tokio::task::JoinError) -> StorageError {
        StorageError::Task(e.to_string())
    }
}

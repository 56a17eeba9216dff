//! What a failed request answers: an `Error` frame with a code from
//! [`ErrorCode`] and a sentence. Internal details are logged, never sent.

use filesync_core::db::journal::Refusal;
use filesync_core::db::DbError;
use filesync_core::ingest::IngestError;
use filesync_core::proto::{ErrorCode, Message, RequestId};
use filesync_core::storage::StorageError;
use filesync_core::WorkspaceId;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ReqError {
    pub code: ErrorCode,
    pub message: String,
}

impl ReqError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ReqError {
        ReqError { code, message: message.into() }
    }

    pub fn bad_request(message: impl Into<String>) -> ReqError {
        ReqError::new(ErrorCode::BadRequest, message)
    }

    pub fn internal() -> ReqError {
        ReqError::new(ErrorCode::Internal, "the node failed; try again")
    }

    /// The answer to a catch-up from `after`, before the workspace's horizon.
    pub fn history_expired(ws: WorkspaceId, after: i64, horizon: i64) -> ReqError {
        ReqError::new(
            ErrorCode::HistoryExpired,
            format!(
                "workspace {ws} keeps its history after seq {horizon} only, not from seq {after}: \
                 reconcile with its current files (GetHeads)"
            ),
        )
    }

    pub fn into_message(self, request_id: RequestId) -> Message {
        Message::error(request_id, self.code, self.message)
    }
}

impl From<DbError> for ReqError {
    fn from(e: DbError) -> ReqError {
        match e {
            DbError::NotFound => ReqError::new(ErrorCode::NotFound, "no such workspace, path or version"),
            // Garbage collection released a chunk the upload relied on after the node said the
            // workspace held it (docs/storage.md §7): nothing was committed, and the same request
            // sent again is asked for that chunk.
            DbError::Refused(Refusal::ChunksNotHeld) => ReqError::new(
                ErrorCode::ChunksReleased,
                "chunks this upload relied on were collected meanwhile; send the request again",
            ),
            // The journal's refusals are full sentences meant for the client.
            DbError::Refused(refusal) => ReqError::new(ErrorCode::Conflict, refusal.sentence()),
            DbError::Conflict(what) => ReqError::new(ErrorCode::Conflict, format!("{what} already exists")),
            other if other.is_unavailable() => {
                tracing::warn!(error = %other, "database unavailable");
                ReqError::new(ErrorCode::Unavailable, "the database is unavailable; retry shortly")
            }
            other => {
                tracing::error!(error = %other, "database error");
                ReqError::internal()
            }
        }
    }
}

impl From<StorageError> for ReqError {
    fn from(e: StorageError) -> ReqError {
        match e {
            StorageError::HashMismatch { .. } | StorageError::Undecodable(_) => {
                ReqError::new(ErrorCode::ChunkMismatch, e.to_string())
            }
            StorageError::NotFound(_) => ReqError::new(ErrorCode::NotFound, e.to_string()),
            StorageError::Index(e) => e.into(),
            other if other.is_unavailable() => {
                tracing::warn!(error = %other, "chunk store unavailable");
                ReqError::new(ErrorCode::Unavailable, "the chunk store is unavailable; retry shortly")
            }
            other => {
                tracing::error!(error = %other, "chunk store error");
                ReqError::internal()
            }
        }
    }
}

impl From<IngestError> for ReqError {
    fn from(e: IngestError) -> ReqError {
        match e {
            IngestError::Storage(e) => e.into(),
            IngestError::Db(e) => e.into(),
            other => {
                tracing::error!(error = %other, "storing an upload failed");
                ReqError::internal()
            }
        }
    }
}

impl From<tokio::task::JoinError> for ReqError {
    fn from(e: tokio::task::JoinError) -> ReqError {
        tracing::error!(error = %e, "blocking task failed");
        ReqError::internal()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A commit refused because garbage collection released a chunk is retryable (proto-client sends
    /// the upload again); the journal's other refusals are conflicts.
    #[test]
    fn a_commit_refused_for_a_released_chunk_is_retryable() {
        assert_eq!(ReqError::from(DbError::Refused(Refusal::ChunksNotHeld)).code, ErrorCode::ChunksReleased);
        assert_eq!(ReqError::from(DbError::Refused(Refusal::StaleBase)).code, ErrorCode::Conflict);
    }

    /// A transaction MariaDB rolled back as a deadlock's victim (an upload's chunk records meeting
    /// garbage collection's deletes) is answered as retryable, not as the node failing.
    #[test]
    fn a_deadlock_victim_is_retryable() {
        use diesel::result::{DatabaseErrorKind, Error};
        let info = Box::new("Deadlock found when trying to get lock; try restarting transaction".to_owned());
        let err = ReqError::from(DbError::Query(Error::DatabaseError(DatabaseErrorKind::SerializationFailure, info)));
        assert_eq!(err.code, ErrorCode::Unavailable);
        assert!(err.code.is_retryable());
    }
}

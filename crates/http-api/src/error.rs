//! The one error type every handler and extractor returns, and the mapping
//! of actix's own extractor errors onto it, so that every failure reaches the
//! client as `{"error": {"code": "<snake_case>", "message": "<text>"}}`.

use actix_web::error::{JsonPayloadError, PayloadError, QueryPayloadError};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use filesync_core::db::DbError;
use filesync_core::storage::StorageError;
use serde::Serialize;

/// Largest JSON request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Every `code` an error response can carry, written in snake_case
/// (`ErrorCode::WorkspaceNotFound` is `"workspace_not_found"`). Clients may
/// rely on these; the `message` is for people. `/openapi.json` lists them (the
/// `ErrorCode` schema) and docs/http-api.md says which status carries which
/// (`tests/openapi.rs` checks that the two agree).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    AlreadyInvited,
    AlreadyMember,
    AssetNotFound,
    DatabaseUnavailable,
    DestinationExists,
    DeviceNotFound,
    EmailTaken,
    FileNotFound,
    Forbidden,
    Internal,
    InvalidBeforeSeq,
    InvalidCredentials,
    InvalidDeviceName,
    InvalidEmail,
    InvalidIfMatch,
    InvalidLimit,
    InvalidName,
    InvalidPassword,
    InvalidPath,
    InvalidRefreshToken,
    InvalidRequest,
    InvalidRetention,
    InvalidRole,
    InvalidToken,
    InvalidUsername,
    InvalidWorkspaceName,
    InvitationNotFound,
    KindMismatch,
    MalformedJson,
    MemberNotFound,
    MethodNotAllowed,
    MissingToken,
    MoveIntoItself,
    NoConflictName,
    NotAFile,
    NotInTrash,
    OwnerCannotLeave,
    OwnerRoleFixed,
    OwnsSharedWorkspaces,
    ParentIsFile,
    PathNotFound,
    PayloadTooLarge,
    RangeNotSatisfiable,
    RestoreConflict,
    RouteNotFound,
    SamePath,
    StaleBase,
    StorageUnavailable,
    TokenExpired,
    TokenRevoked,
    TooManyAttempts,
    Unavailable,
    UnsupportedMediaType,
    UsernameTaken,
    VersionExpired,
    VersionIsDelete,
    VersionNotFound,
    WorkspaceExists,
    WorkspaceNotFound,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the body is not JSON at all.
    #[error("{0}")]
    Malformed(String),
    /// 422: well-formed but invalid input; `code` names the rule broken.
    #[error("{message}")]
    Invalid { code: ErrorCode, message: String },
    /// 401: no usable credentials.
    #[error("{message}")]
    Unauthorized { code: ErrorCode, message: &'static str },
    /// 403: authenticated and allowed to see the thing, not to do this to it.
    #[error("{0}")]
    Forbidden(&'static str),
    /// 404.
    #[error("{message}")]
    NotFound { code: ErrorCode, message: &'static str },
    /// 405.
    #[error("method {0} is not allowed on this route")]
    MethodNotAllowed(String),
    /// 409.
    #[error("{message}")]
    Conflict { code: ErrorCode, message: &'static str },
    /// 410: it existed, and retention dropped it.
    #[error("{message}")]
    Gone { code: ErrorCode, message: String },
    /// 413.
    #[error("request body is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    /// 416, with `Content-Range: bytes */<size>`.
    #[error("the requested range is outside the file's {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    /// 415.
    #[error("request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    /// 429, with `Retry-After`.
    #[error("too many failed attempts; retry in {retry_after_secs} seconds")]
    TooManyAttempts { retry_after_secs: u64 },
    /// 503 with `Retry-After`: something this request needs (Redis) is not answering.
    #[error("the service is temporarily unavailable")]
    Unavailable,
    /// A database failure: 503 `database_unavailable` with `Retry-After` when the
    /// database cannot be reached ([`DbError::is_unavailable`]), else a 500 whose
    /// cause is logged, never sent. Kept whole so `AppState::read` can hand it
    /// back to the pool, which heals a dead connection.
    #[error("{}", if .0.is_unavailable() { "the database is unavailable; retry shortly" } else { "internal server error" })]
    Database(DbError),
    /// 503 `storage_unavailable` with `Retry-After`: the chunk store (an object store) failed or
    /// cannot be reached; nothing was committed. The cause is logged, never sent.
    #[error("the chunk store is unavailable; retry shortly")]
    StorageUnavailable(String),
    /// 500. The cause is logged, never sent.
    #[error("internal server error")]
    Internal(String),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn invalid(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError::Invalid { code, message: message.into() }
    }

    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        ApiError::Internal(cause.to_string())
    }

    fn code(&self) -> ErrorCode {
        match self {
            ApiError::Malformed(_) => ErrorCode::MalformedJson,
            ApiError::Invalid { code, .. }
            | ApiError::Unauthorized { code, .. }
            | ApiError::NotFound { code, .. }
            | ApiError::Conflict { code, .. }
            | ApiError::Gone { code, .. } => *code,
            ApiError::Forbidden(_) => ErrorCode::Forbidden,
            ApiError::MethodNotAllowed(_) => ErrorCode::MethodNotAllowed,
            ApiError::TooLarge => ErrorCode::PayloadTooLarge,
            ApiError::UnsupportedMediaType => ErrorCode::UnsupportedMediaType,
            ApiError::RangeNotSatisfiable { .. } => ErrorCode::RangeNotSatisfiable,
            ApiError::TooManyAttempts { .. } => ErrorCode::TooManyAttempts,
            ApiError::Unavailable => ErrorCode::Unavailable,
            ApiError::StorageUnavailable(_) => ErrorCode::StorageUnavailable,
            ApiError::Database(e) if e.is_unavailable() => ErrorCode::DatabaseUnavailable,
            ApiError::Database(_) | ApiError::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl From<DbError> for ApiError {
    fn from(err: DbError) -> ApiError {
        ApiError::Database(err)
    }
}

impl From<StorageError> for ApiError {
    fn from(err: StorageError) -> ApiError {
        match err {
            StorageError::Index(e) => e.into(),
            e if e.is_unavailable() => ApiError::StorageUnavailable(e.to_string()),
            e => ApiError::internal(e),
        }
    }
}

/// What a 503 tells clients to wait before retrying, in seconds.
pub const RETRY_AFTER_SECS: u64 = 2;

/// The body of every error response.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ErrorDetail)]
pub struct ErrorDetail {
    code: ErrorCode,
    /// For people; may change between versions.
    message: String,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Malformed(_) => StatusCode::BAD_REQUEST,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Gone { .. } => StatusCode::GONE,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::TooManyAttempts { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable | ApiError::StorageUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Database(e) if e.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Database(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        // Logged once, here, where it turns into a response.
        match self {
            ApiError::Internal(cause) => tracing::error!(error = %cause, "request failed"),
            ApiError::StorageUnavailable(cause) => tracing::warn!(error = %cause, "chunk store unavailable"),
            ApiError::Database(e) if e.is_unavailable() => tracing::warn!(error = %e, "database unavailable"),
            ApiError::Database(e) => tracing::error!(error = %e, "request failed"),
            _ => {}
        }
        let mut res = HttpResponse::build(self.status_code());
        match self {
            ApiError::TooManyAttempts { retry_after_secs } => {
                res.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
            }
            ApiError::Unauthorized { .. } => {
                res.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            ApiError::RangeNotSatisfiable { size } => {
                res.insert_header((header::CONTENT_RANGE, format!("bytes */{size}")));
            }
            _ if self.status_code() == StatusCode::SERVICE_UNAVAILABLE => {
                res.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS.to_string()));
            }
            _ => {}
        }
        res.json(ErrorBody { error: ErrorDetail { code: self.code(), message: self.to_string() } })
    }
}

/// Body handling for every JSON route: 64 KiB limit, `Content-Type:
/// application/json` required (so a cross-site HTML form cannot post to the
/// API), and errors mapped onto [`ApiError`].
pub fn json_config() -> web::JsonConfig {
    web::JsonConfig::default().limit(MAX_BODY_BYTES).error_handler(json_error)
}

fn json_error(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let api = match err {
        JsonPayloadError::OverflowKnownLength { .. }
        | JsonPayloadError::Overflow { .. }
        | JsonPayloadError::Payload(PayloadError::Overflow) => ApiError::TooLarge,
        JsonPayloadError::ContentType => ApiError::UnsupportedMediaType,
        // Valid JSON of the wrong shape (missing field, wrong type) is a 422;
        // text that is not JSON at all is a 400.
        JsonPayloadError::Deserialize(e) if e.is_data() => ApiError::invalid(ErrorCode::InvalidRequest, e.to_string()),
        JsonPayloadError::Deserialize(e) => ApiError::Malformed(format!("request body is not valid JSON: {e}")),
        JsonPayloadError::Payload(e) => ApiError::Malformed(format!("cannot read request body: {e}")),
        other => ApiError::internal(other),
    };
    api.into()
}

/// Query-string handling: a missing or unparsable parameter is a 422.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _req| {
        let QueryPayloadError::Deserialize(e) = err else {
            return ApiError::invalid(ErrorCode::InvalidRequest, err.to_string()).into();
        };
        ApiError::invalid(ErrorCode::InvalidRequest, format!("invalid query string: {e}")).into()
    })
}

/// Path parameters: `/workspaces/abc/files` names no workspace, so it is a
/// 404 like any other workspace the caller cannot see.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|_, _| {
        ApiError::NotFound { code: ErrorCode::WorkspaceNotFound, message: "no such workspace" }.into()
    })
}

/// Any path no route matches.
pub async fn route_not_found() -> ApiResult<HttpResponse> {
    Err(ApiError::NotFound { code: ErrorCode::RouteNotFound, message: "no such route" })
}

/// A known path asked with a method it does not serve; `Allow` lists the
/// methods `/openapi.json` describes for it.
pub async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    let mut res = ApiError::MethodNotAllowed(req.method().to_string()).error_response();
    let allowed = req.match_pattern().map(|p| crate::openapi::methods_of(&p)).unwrap_or_default();
    if let Ok(value) = header::HeaderValue::from_str(&allowed.join(", ")) {
        res.headers_mut().insert(header::ALLOW, value);
    }
    res
}

#[cfg(test)]
mod tests {
    use actix_web::body::to_bytes;

    use super::*;

    async fn body_of(err: ApiError) -> (StatusCode, serde_json::Value, HttpResponse) {
        let res = err.error_response();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = to_bytes(res.into_body()).await.unwrap();
        let mut copy = HttpResponse::build(status).finish();
        *copy.headers_mut() = headers;
        (status, serde_json::from_slice(&bytes).unwrap(), copy)
    }

    #[actix_web::test]
    async fn internal_errors_hide_their_cause() {
        let (status, body, _) = body_of(ApiError::internal("secret table name")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"]["code"], "internal");
        assert!(!body.to_string().contains("secret table name"));
    }

    #[actix_web::test]
    async fn throttled_errors_say_when_to_retry() {
        let (status, body, res) = body_of(ApiError::TooManyAttempts { retry_after_secs: 42 }).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(body["error"]["code"], "too_many_attempts");
        assert_eq!(res.headers().get(header::RETRY_AFTER).unwrap(), "42");
    }

    #[actix_web::test]
    async fn database_outage_is_a_503_with_retry_after_not_a_500() {
        for err in [DbError::Pool("timed out".into()), DbError::Unavailable("Server has gone away".into())] {
            let (status, body, res) = body_of(err.into()).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(body["error"]["code"], "database_unavailable");
            assert!(!body.to_string().contains("gone away"), "{body}");
            assert_eq!(res.headers().get(header::RETRY_AFTER).unwrap(), "2");
        }
        let (status, body, _) = body_of(DbError::Migration("secret".into()).into()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"]["code"], "internal");
        assert!(!body.to_string().contains("secret"), "{body}");
    }
}

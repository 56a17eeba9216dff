//! One file over HTTP: `GET` and `PUT /workspaces/{id}/file` (its `DELETE`,
//! moves and new folders are in [`super::tree`], the feed in
//! [`super::activity`]), and what those share: the journal's refusals as API
//! errors, `If-Match`, the author and the announcement of a commit.
//!
//! Uploads go through core's `ingest` (the node's pipeline: chunks verified,
//! stored, made durable and recorded before the one-transaction commit); a
//! stale base is a conflict copy, as for an agent. Every change is announced
//! on the bus after it commits. Downloads stream the chunks through
//! `archive::file_stream`, the zip's reader.

use std::io;

use actix_web::http::header::{self, ByteRangeSpec, Range};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use filesync_core::db::journal::{self, Author, Committed, Refusal};
use filesync_core::db::{DbConn, DbError};
use filesync_core::events::WorkspaceEvent;
use filesync_core::ingest::{self, Base, IngestError, NewPut};
use filesync_core::proto::{Change, EntryKind};
use filesync_core::WorkspaceId;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::files::{attachment, HTTP_DEVICE_ID};
use crate::archive;
use crate::auth::AuthUser;
use crate::authz::{authorize, Action};
use crate::error::{ApiError, ApiResult, ErrorBody, ErrorCode};
use crate::openapi::{AuthErrors, ServerErrors};
use crate::state::AppState;
use crate::validate;

const FILE_NOT_FOUND: ApiError = ApiError::NotFound { code: ErrorCode::FileNotFound, message: "no file at this path" };
const PATH_NOT_FOUND: ApiError =
    ApiError::NotFound { code: ErrorCode::PathNotFound, message: "nothing lives at this path in the workspace" };
const VERSION_NOT_FOUND: ApiError =
    ApiError::NotFound { code: ErrorCode::VersionNotFound, message: "this path has no such version" };

pub(super) fn author(user: &AuthUser) -> Author {
    Author { user_id: user.id, device_id: HTTP_DEVICE_ID.into(), device_name: "web".into() }
}

/// The journal's refusals as API errors: a missing path is a 404, a stale base or a clash with
/// what exists a 409, a request that can never succeed a 422.
pub(super) fn refused(e: DbError) -> ApiError {
    match e {
        DbError::NotFound => PATH_NOT_FOUND,
        DbError::Refused(refusal) => {
            let message = refusal.sentence();
            let code = match refusal {
                Refusal::SamePath => return ApiError::invalid(ErrorCode::SamePath, message),
                Refusal::NoConflictName => return ApiError::invalid(ErrorCode::NoConflictName, message),
                Refusal::StaleBase => ErrorCode::StaleBase,
                Refusal::DestinationExists => ErrorCode::DestinationExists,
                Refusal::ParentIsFile => ErrorCode::ParentIsFile,
                Refusal::KindMismatch => ErrorCode::KindMismatch,
                // The API stores an upload's chunks itself before it commits; garbage collection
                // deleted one it found stored meanwhile (docs/storage.md §7). Nothing was
                // committed: the upload sent again stores it anew.
                Refusal::ChunksNotHeld => {
                    return ApiError::StorageUnavailable(format!(
                        "an upload's chunk was collected meanwhile: {message}"
                    ))
                }
            };
            ApiError::Conflict { code, message }
        }
        other => other.into(),
    }
}

/// `res` with `Connection: close`: the answer to an upload refused before its body was read to the
/// end. The rest of the body may still be on its way (or sit unread on the socket), so the
/// connection cannot carry another request; a client that reused it would wait forever.
fn closing(mut res: HttpResponse) -> HttpResponse {
    res.head_mut().set_connection_type(actix_web::http::ConnectionType::Close);
    res
}

fn ingest_failed(e: IngestError) -> ApiError {
    match e {
        IngestError::Db(e) => e.into(),
        IngestError::Storage(e) => e.into(),
        IngestError::Read(e) => ApiError::Malformed(format!("the upload's body could not be read: {e}")),
        other => ApiError::internal(other),
    }
}

/// `If-Match: <version>` (quoted or not; `*` is the current head): the version the writer saw.
pub(super) fn base_of(req: &HttpRequest) -> ApiResult<Base> {
    let Some(raw) = req.headers().get(header::IF_MATCH) else { return Ok(Base::Current) };
    let text = raw.to_str().unwrap_or("").trim();
    if text == "*" {
        return Ok(Base::Current);
    }
    let bare = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    bare.parse::<i64>()
        .ok()
        .filter(|v| *v >= 0)
        .map(Base::Seen)
        .ok_or_else(|| ApiError::invalid(ErrorCode::InvalidIfMatch, "If-Match must be a version number, e.g. \"12\""))
}

/// Announces the workspace's new seq to the nodes (and so to agents), after the commit.
pub(super) async fn announce(state: &AppState, ws: WorkspaceId, seq: i64) {
    state.bus.publish_workspace(ws, &WorkspaceEvent::Committed { workspace_id: ws, seq }).await;
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FileQuery {
    /// A path in the workspace (`/`-separated, relative).
    #[param(min_length = 1, max_length = 4096, example = "docs/report.txt")]
    path: String,
    /// A version (seq) of this path; the current one without it.
    #[param(minimum = 1)]
    version: Option<i64>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PathQuery {
    /// A path in the workspace (`/`-separated, relative).
    #[param(min_length = 1, max_length = 4096, example = "docs/report.txt")]
    pub(super) path: String,
}

/// The version of `path` asked for (its head without `version`), with its chunk list.
fn file_version(
    conn: &mut DbConn,
    ws: WorkspaceId,
    path: &str,
    version: Option<i64>,
) -> ApiResult<(Change, Vec<filesync_core::chunking::ChunkRef>)> {
    let missing = || if version.is_some() { VERSION_NOT_FOUND } else { FILE_NOT_FOUND };
    let seq = match version {
        Some(v) => v,
        None => match journal::head_of(conn, ws, path)? {
            Some(h) if !h.deleted => h.seq,
            _ => return Err(FILE_NOT_FOUND),
        },
    };
    let Some((change, chunks)) = journal::version_at(conn, ws, seq)? else {
        return Err(super::files::expired(conn, ws, seq)?.unwrap_or_else(missing));
    };
    if change.path != path || change.deleted {
        return Err(missing());
    }
    if change.kind != EntryKind::File {
        return Err(ApiError::invalid(ErrorCode::NotAFile, "this path is a directory, not a file"));
    }
    Ok((change, chunks))
}

/// True if an `If-None-Match` list names `etag` (or is `*`).
fn none_match(req: &HttpRequest, etag: &str) -> bool {
    req.headers().get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|list| {
        list.split(',').map(|t| t.trim()).any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
    })
}

/// The one byte range asked for, `start..end`; `Ok(None)` serves everything (no `Range`, one
/// that does not parse, or several ranges), `Err` is a 416.
fn byte_range(req: &HttpRequest, size: u64) -> ApiResult<Option<(u64, u64)>> {
    let Some(raw) = req.headers().get(header::RANGE).and_then(|v| v.to_str().ok()) else { return Ok(None) };
    let Ok(Range::Bytes(specs)) = raw.parse::<Range>() else { return Ok(None) };
    let [spec]: [ByteRangeSpec; 1] = match specs.try_into() {
        Ok(one) => one,
        Err(_) => return Ok(None),
    };
    match spec.to_satisfiable_range(size) {
        Some((first, last)) => Ok(Some((first, last + 1))),
        None => Err(ApiError::RangeNotSatisfiable { size }),
    }
}

/// The bytes of a file (a version of it with `version`), streamed from the chunk store.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/file",
    tag = "files",
    security(("bearer" = [])),
    params(
        ("id" = i64, Path, description = "The workspace", example = 1),
        FileQuery,
        ("Range" = Option<String>, Header, description = "One byte range, e.g. `bytes=0-1023`"),
        ("If-None-Match" = Option<String>, Header, description = "An ETag seen before: 304 if it is still this version"),
    ),
    responses(
        (status = 200, description = "The whole file; its `Content-Type` follows its name", content_type = "*/*", body = [u8],
            headers(
                ("ETag" = String, description = "The version, quoted"),
                ("Content-Disposition" = String, description = "`attachment` with the file's name"),
                ("Accept-Ranges" = String, description = "`bytes`"),
            )),
        (status = 206, description = "The range asked for", content_type = "*/*", body = [u8],
            headers(("Content-Range" = String, description = "`bytes first-last/size`"))),
        (status = 304, description = "`If-None-Match` names this version"),
        (status = 404, description = "`workspace_not_found`, `file_not_found` or `version_not_found`", body = ErrorBody),
        (status = 410, description = "`version_expired`: retention dropped this version", body = ErrorBody),
        (status = 416, description = "`range_not_satisfiable`", body = ErrorBody,
            headers(("Content-Range" = String, description = "`bytes */size`"))),
        (status = 422, description = "`invalid_request`, `invalid_path` or `not_a_file`", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn download(
    state: web::Data<AppState>,
    user: AuthUser,
    ws: web::Path<i64>,
    query: web::Query<FileQuery>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let ws = WorkspaceId(ws.into_inner());
    let FileQuery { path, version } = query.into_inner();
    validate::workspace_path(&path)?;
    let key = path.clone();
    let (change, chunks) = state
        .read(move |conn| {
            authorize(conn, user.id, ws, Action::ReadFiles)?;
            file_version(conn, ws, &key, version)
        })
        .await?;
    let size = change.size;
    let total: u64 = chunks.iter().map(|c| u64::from(c.len)).sum();
    if total != size {
        return Err(ApiError::internal(format!(
            "version {} of {path:?}: chunks add up to {total}, not {size}",
            change.seq
        )));
    }
    // Versions never change: the seq names the bytes.
    let etag = format!("\"{}\"", change.seq);
    if none_match(&req, &etag) {
        return Ok(HttpResponse::NotModified().insert_header((header::ETAG, etag)).finish());
    }
    let range = byte_range(&req, size)?;
    let (status, start, end) = match range {
        Some((start, end)) => (StatusCode::PARTIAL_CONTENT, start, end),
        None => (StatusCode::OK, 0, size),
    };
    let name = path.rsplit('/').next().unwrap_or(&path);
    let mime = mime_guess::from_path(name).first_or_octet_stream();
    let mut res = HttpResponse::build(status);
    res.content_type(mime.essence_str())
        .insert_header(attachment(name))
        .insert_header((header::ETAG, etag))
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::CACHE_CONTROL, "private, no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
    if range.is_some() {
        res.insert_header((header::CONTENT_RANGE, format!("bytes {start}-{}/{size}", end - 1)));
    }
    let (seq, path_for_log) = (change.seq, path);
    let body = archive::file_stream(state.store.clone(), chunks, start, end).inspect_err(move |e| {
        tracing::error!(workspace.id = ws.0, seq, path = %path_for_log, error = %e, "file download aborted");
    });
    Ok(res.no_chunking(end - start).streaming(body))
}

#[derive(Serialize, ToSchema)]
struct PutResponse {
    path: String,
    version: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    conflict_path: Option<String>,
}

/// The body becomes the new content of `path`, chunked and stored while it is read.
#[utoipa::path(
    put,
    path = "/workspaces/{id}/file",
    tag = "files",
    security(("bearer" = [])),
    params(
        ("id" = i64, Path, description = "The workspace", example = 1),
        PathQuery,
        ("If-Match" = Option<String>, Header, description = "The version the content was based on; a newer head makes a conflict copy"),
    ),
    request_body(content = [u8], content_type = "application/octet-stream", description = "The new content, any size"),
    responses(
        (status = 200, description = "The file was updated", body = PutResponse),
        (status = 201, description = "A new file, or a conflict copy (`conflict_path`)", body = PutResponse),
        (status = 400, description = "`malformed_json`: the body could not be read", body = ErrorBody),
        (status = 403, description = "`forbidden`: viewers may not change files", body = ErrorBody),
        (status = 404, description = "`workspace_not_found`", body = ErrorBody),
        (status = 409, description = "`parent_is_file` or `kind_mismatch` (a directory is at the path)", body = ErrorBody),
        (status = 422, description = "`invalid_request`, `invalid_path`, `invalid_if_match` or `no_conflict_name`", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn upload(
    state: web::Data<AppState>,
    user: AuthUser,
    ws: web::Path<i64>,
    query: web::Query<PathQuery>,
    req: HttpRequest,
    body: web::Payload,
) -> ApiResult<HttpResponse> {
    let ws = WorkspaceId(ws.into_inner());
    let path = query.into_inner().path;
    validate::workspace_path(&path)?;
    let base = base_of(&req)?;
    state.read(move |conn| authorize(conn, user.id, ws, Action::WriteFiles).map(|_| ())).await?;
    let reader = body.map_err(|e| io::Error::other(e.to_string())).into_async_read();
    let streamed = match ingest::store_stream(&state.db, state.store.clone(), ws, reader).await {
        Ok(streamed) => streamed,
        Err(e) => return Ok(closing(ingest_failed(e).error_response())),
    };
    // The role may have changed while the body was read.
    state.read(move |conn| authorize(conn, user.id, ws, Action::WriteFiles).map(|_| ())).await?;
    let size = streamed.size;
    let put = NewPut { path, base, mtime_ms: chrono::Utc::now().timestamp_millis(), mode: None };
    let done = ingest::commit_put(&state.db, ws, author(&user), put, streamed).await.map_err(refused)?;
    let Committed { seq, path, conflict_path, new_seq } = done.committed;
    if new_seq {
        tracing::info!(
            workspace.id = ws.0,
            user.id = user.id.0,
            seq,
            size,
            conflict = conflict_path.is_some(),
            "file uploaded"
        );
        announce(&state, ws, seq).await;
    }
    let status = if done.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(HttpResponse::build(status).json(PutResponse { path, version: seq, conflict_path }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A commit refused because garbage collection released a chunk the upload found stored is
    /// 503 `storage_unavailable` with `Retry-After` (nothing was committed; the upload sent again
    /// stores the chunk anew), not a 500.
    #[test]
    fn a_commit_refused_for_a_released_chunk_is_retryable() {
        let err = refused(DbError::Refused(Refusal::ChunksNotHeld));
        assert_eq!(err.status_code(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(err.error_response().headers().contains_key(header::RETRY_AFTER));
        assert_eq!(refused(DbError::Refused(Refusal::StaleBase)).status_code(), StatusCode::CONFLICT);
    }
}

//! One file over HTTP: `GET`/`PUT`/`DELETE /workspaces/{id}/file`,
//! `POST /workspaces/{id}/move`, `POST /workspaces/{id}/mkdir` and
//! `GET /workspaces/{id}/activity`.
//!
//! Uploads go through core's `ingest` (the node's pipeline: chunks verified,
//! stored, made durable and recorded before the one-transaction commit);
//! deletes, moves and new folders are the journal edits agents send, so the
//! same rules decide (a stale base is a conflict copy or a refusal). Every
//! change is announced on the bus after it commits. Downloads stream the
//! chunks through `archive::file_stream`, the zip's reader.

use std::io;

use actix_web::http::header::{self, ByteRangeSpec, Range};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use filesync_core::db::journal::{self, Author, Committed, Edit};
use filesync_core::db::{DbConn, DbError};
use filesync_core::events::WorkspaceEvent;
use filesync_core::ingest::{self, Base, IngestError, NewPut};
use filesync_core::proto::{Change, EntryKind};
use filesync_core::WorkspaceId;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::files::{attachment, usernames, HTTP_DEVICE_ID};
use crate::archive;
use crate::auth::AuthUser;
use crate::authz::{authorize, Action};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::openapi::{AuthErrors, JsonBodyErrors, ServerErrors};
use crate::state::AppState;
use crate::validate;
use crate::wire::ActivityJson;

const FILE_NOT_FOUND: ApiError = ApiError::NotFound { code: "file_not_found", message: "no file at this path" };
const PATH_NOT_FOUND: ApiError =
    ApiError::NotFound { code: "path_not_found", message: "nothing lives at this path in the workspace" };
const VERSION_NOT_FOUND: ApiError =
    ApiError::NotFound { code: "version_not_found", message: "this path has no such version" };

/// Activity entries per page unless `limit` says otherwise, and the most one page may hold.
const DEFAULT_ACTIVITY: i64 = 50;
const MAX_ACTIVITY: i64 = 500;

fn author(user: &AuthUser) -> Author {
    Author { user_id: user.id, device_id: HTTP_DEVICE_ID.into(), device_name: "web".into() }
}

/// The journal's refusals as API errors: a missing path is a 404, a stale base or a clash with
/// what exists a 409, a request that can never succeed a 422.
fn refused(e: DbError) -> ApiError {
    match e {
        DbError::NotFound => PATH_NOT_FOUND,
        DbError::Conflict(message) => {
            let code = match message {
                journal::SAME_PATH => return ApiError::invalid("same_path", message),
                journal::NO_CONFLICT_NAME => return ApiError::invalid("no_conflict_name", message),
                journal::STALE_BASE => "stale_base",
                journal::DESTINATION_EXISTS => "destination_exists",
                journal::PARENT_IS_FILE => "parent_is_file",
                journal::KIND_MISMATCH => "kind_mismatch",
                other => return ApiError::internal(format!("unexpected journal refusal: {other}")),
            };
            ApiError::Conflict { code, message }
        }
        other => other.into(),
    }
}

fn ingest_failed(e: IngestError) -> ApiError {
    match e {
        IngestError::Db(e) => e.into(),
        IngestError::Read(e) => ApiError::Malformed(format!("the upload's body could not be read: {e}")),
        other => ApiError::internal(other),
    }
}

/// `If-Match: <version>` (quoted or not; `*` is the current head): the version the writer saw.
fn base_of(req: &HttpRequest) -> ApiResult<Base> {
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
        .ok_or_else(|| ApiError::invalid("invalid_if_match", "If-Match must be a version number, e.g. \"12\""))
}

/// Announces the workspace's new seq to the nodes (and so to agents), after the commit.
async fn announce(state: &AppState, ws: WorkspaceId, seq: i64) {
    if let Some(bus) = &state.bus {
        bus.publish_workspace(ws, &WorkspaceEvent::Committed { workspace_id: ws, seq }).await;
    }
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
    path: String,
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
    let (change, chunks) = journal::version_at(conn, ws, seq)?.ok_or_else(missing)?;
    if change.path != path || change.deleted {
        return Err(missing());
    }
    if change.kind != EntryKind::File {
        return Err(ApiError::invalid("not_a_file", "this path is a directory, not a file"));
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
    let streamed = ingest::store_stream(&state.db, state.store.clone(), ws, reader).await.map_err(ingest_failed)?;
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

/// The edits that delete `path` or move it to `to`: the path itself and, for a directory,
/// everything under it (children deleted before their parent, moved after it).
fn subtree(conn: &mut DbConn, ws: WorkspaceId, path: &str, base: Base, to: Option<&str>) -> Result<Vec<Edit>, DbError> {
    let head = journal::head_of(conn, ws, path)?.filter(|h| !h.deleted);
    let under = journal::live_under(conn, ws, path)?;
    if head.is_none() && under.is_empty() {
        return Err(DbError::NotFound);
    }
    let top_base = base.resolve(conn, ws, path)?;
    let moved = |p: &str| to.map(|to| format!("{to}{}", &p[path.len()..]));
    let edit = |p: &str, base_version: i64| match moved(p) {
        Some(to) => Edit::Move { from: p.to_owned(), to, base_version },
        None => Edit::Delete { path: p.to_owned(), base_version },
    };
    let mut edits: Vec<Edit> = under.iter().map(|c| edit(&c.path, c.seq)).collect();
    if head.is_some() {
        match to {
            Some(_) => edits.insert(0, edit(path, top_base)),
            None => {
                edits.reverse();
                edits.push(edit(path, top_base));
            }
        }
    } else if to.is_none() {
        edits.reverse();
    }
    Ok(edits)
}

/// Commits `edits` as one transaction: all of them or, if the journal refuses one, none.
async fn commit_all(
    state: &AppState,
    ws: WorkspaceId,
    author: Author,
    make: impl FnOnce(&mut DbConn) -> Result<Vec<Edit>, DbError> + Send + 'static,
) -> ApiResult<Committed> {
    let done = state
        .db
        .write(move |c| {
            let edits = make(c)?;
            let mut last = None;
            for r in journal::commit_many(c, ws, &author, &edits)? {
                last = Some(r?);
            }
            last.ok_or(DbError::NotFound)
        })
        .await
        .map_err(refused)?;
    if done.new_seq {
        announce(state, ws, done.seq).await;
    }
    Ok(done)
}

#[derive(Serialize, ToSchema)]
struct ChangedResponse {
    path: String,
    version: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<String>,
}

/// Deletes a file, or a directory with everything under it.
#[utoipa::path(
    delete,
    path = "/workspaces/{id}/file",
    tag = "files",
    security(("bearer" = [])),
    params(
        ("id" = i64, Path, description = "The workspace", example = 1),
        PathQuery,
        ("If-Match" = Option<String>, Header, description = "The version the caller saw; another head refuses the delete"),
    ),
    responses(
        (status = 200, description = "Deleted", body = ChangedResponse),
        (status = 403, description = "`forbidden`: viewers may not change files", body = ErrorBody),
        (status = 404, description = "`workspace_not_found` or `path_not_found`", body = ErrorBody),
        (status = 409, description = "`stale_base`", body = ErrorBody),
        (status = 422, description = "`invalid_request`, `invalid_path` or `invalid_if_match`", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn delete(
    state: web::Data<AppState>,
    user: AuthUser,
    ws: web::Path<i64>,
    query: web::Query<PathQuery>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let ws = WorkspaceId(ws.into_inner());
    let path = query.into_inner().path;
    validate::workspace_path(&path)?;
    let base = base_of(&req)?;
    state.read(move |conn| authorize(conn, user.id, ws, Action::WriteFiles).map(|_| ())).await?;
    let key = path.clone();
    let done = commit_all(&state, ws, author(&user), move |c| subtree(c, ws, &key, base, None)).await?;
    tracing::info!(workspace.id = ws.0, user.id = user.id.0, seq = done.seq, "deleted over HTTP");
    Ok(HttpResponse::Ok().json(ChangedResponse { path, version: done.seq, from: None }))
}

#[derive(Deserialize, ToSchema)]
pub struct MoveRequest {
    #[schema(min_length = 1, max_length = 4096, example = "docs/old.txt")]
    from: String,
    #[schema(min_length = 1, max_length = 4096, example = "docs/new.txt")]
    to: String,
    /// The version of `from` the caller saw; without it, the current one.
    base_version: Option<i64>,
}

/// Moves (renames) a file, or a directory with everything under it.
#[utoipa::path(
    post,
    path = "/workspaces/{id}/move",
    tag = "files",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The workspace", example = 1)),
    request_body = MoveRequest,
    responses(
        (status = 200, description = "Moved", body = ChangedResponse),
        (status = 403, description = "`forbidden`: viewers may not change files", body = ErrorBody),
        (status = 404, description = "`workspace_not_found` or `path_not_found`", body = ErrorBody),
        (status = 409, description = "`stale_base`, `destination_exists` or `parent_is_file`", body = ErrorBody),
        (status = 422, description = "`invalid_request`, `invalid_path`, `same_path` or `move_into_itself`", body = ErrorBody),
        AuthErrors,
        JsonBodyErrors,
        ServerErrors,
    )
)]
pub async fn move_path(
    state: web::Data<AppState>,
    user: AuthUser,
    ws: web::Path<i64>,
    body: web::Json<MoveRequest>,
) -> ApiResult<HttpResponse> {
    let ws = WorkspaceId(ws.into_inner());
    let MoveRequest { from, to, base_version } = body.into_inner();
    validate::workspace_path(&from)?;
    validate::workspace_path(&to)?;
    if to.starts_with(&format!("{from}/")) {
        return Err(ApiError::invalid("move_into_itself", "a directory cannot move inside itself"));
    }
    let base = base_version.map_or(Base::Current, Base::Seen);
    state.read(move |conn| authorize(conn, user.id, ws, Action::WriteFiles).map(|_| ())).await?;
    let (src, dst) = (from.clone(), to.clone());
    let done = commit_all(&state, ws, author(&user), move |c| {
        if src == dst {
            return Err(DbError::Conflict(journal::SAME_PATH));
        }
        subtree(c, ws, &src, base, Some(&dst))
    })
    .await?;
    tracing::info!(workspace.id = ws.0, user.id = user.id.0, seq = done.seq, "moved over HTTP");
    Ok(HttpResponse::Ok().json(ChangedResponse { path: to, version: done.seq, from: Some(from) }))
}

#[derive(Deserialize, ToSchema)]
pub struct MkdirRequest {
    #[schema(min_length = 1, max_length = 4096, example = "docs/drafts")]
    path: String,
}

/// Creates a directory (201), or answers 200 if it is one already.
#[utoipa::path(
    post,
    path = "/workspaces/{id}/mkdir",
    tag = "files",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The workspace", example = 1)),
    request_body = MkdirRequest,
    responses(
        (status = 200, description = "It is a directory already", body = ChangedResponse),
        (status = 201, description = "Created", body = ChangedResponse),
        (status = 403, description = "`forbidden`: viewers may not change files", body = ErrorBody),
        (status = 404, description = "`workspace_not_found`", body = ErrorBody),
        (status = 409, description = "`parent_is_file` or `kind_mismatch` (a file is at the path)", body = ErrorBody),
        (status = 422, description = "`invalid_request` or `invalid_path`", body = ErrorBody),
        AuthErrors,
        JsonBodyErrors,
        ServerErrors,
    )
)]
pub async fn mkdir(
    state: web::Data<AppState>,
    user: AuthUser,
    ws: web::Path<i64>,
    body: web::Json<MkdirRequest>,
) -> ApiResult<HttpResponse> {
    let ws = WorkspaceId(ws.into_inner());
    let path = body.into_inner().path;
    validate::workspace_path(&path)?;
    state.read(move |conn| authorize(conn, user.id, ws, Action::WriteFiles).map(|_| ())).await?;
    let edit = Edit::MakeDir { path: path.clone(), base_version: 0 };
    let done = ingest::commit(&state.db, ws, author(&user), edit).await.map_err(refused)?;
    let status = if done.new_seq {
        announce(&state, ws, done.seq).await;
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(HttpResponse::build(status).json(ChangedResponse { path, version: done.seq, from: None }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ActivityQuery {
    /// Entries older than this seq (the `next_before_seq` of the previous page).
    #[param(minimum = 1)]
    before_seq: Option<i64>,
    /// Entries per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
struct ActivityResponse {
    entries: Vec<ActivityJson>,
    /// Pass as `before_seq` for the next (older) page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_before_seq: Option<i64>,
}

/// The journal, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/activity",
    tag = "files",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The workspace", example = 1), ActivityQuery),
    responses(
        (status = 200, description = "Journal entries, newest first", body = ActivityResponse),
        (status = 404, description = "`workspace_not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_request`, `invalid_limit` or `invalid_before_seq`", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn activity(
    state: web::Data<AppState>,
    user: AuthUser,
    ws: web::Path<i64>,
    query: web::Query<ActivityQuery>,
) -> ApiResult<HttpResponse> {
    let ws = WorkspaceId(ws.into_inner());
    let ActivityQuery { before_seq, limit } = query.into_inner();
    let limit = limit.unwrap_or(DEFAULT_ACTIVITY);
    if !(1..=MAX_ACTIVITY).contains(&limit) {
        return Err(ApiError::invalid("invalid_limit", format!("limit must be 1 to {MAX_ACTIVITY}")));
    }
    if before_seq.is_some_and(|b| b < 1) {
        return Err(ApiError::invalid("invalid_before_seq", "before_seq must be a seq, 1 or more"));
    }
    let (rows, names) = state
        .read(move |conn| {
            authorize(conn, user.id, ws, Action::ReadFiles)?;
            let rows = journal::recent(conn, ws, before_seq, limit)?;
            let names = usernames(conn, rows.iter().map(|r| r.author_id))?;
            Ok((rows, names))
        })
        .await?;
    let next_before_seq = (rows.len() as i64 == limit).then(|| rows.last().map(|r| r.seq)).flatten();
    let entries = rows
        .into_iter()
        .map(|r| {
            let by = names.get(&r.author_id).cloned();
            ActivityJson::new(r, by)
        })
        .collect();
    Ok(HttpResponse::Ok().json(ActivityResponse { entries, next_before_seq }))
}

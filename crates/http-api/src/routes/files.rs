//! The sync journal seen over HTTP: `/workspaces/{id}/files`,
//! `/workspaces/{id}/history`, `/workspaces/{id}/restore` and
//! `/download-workspace`.

use std::collections::{HashMap, HashSet};

use actix_web::http::header::{self, ContentDisposition, DispositionParam, DispositionType, ExtendedValue};
use actix_web::{web, HttpResponse};
use filesync_core::db::journal::{self, Author, Edit};
use filesync_core::db::{accounts, retention, DbConn, DbError};
use filesync_core::events::WorkspaceEvent;
use filesync_core::proto::{Change, EntryKind};
use filesync_core::{UserId, WorkspaceId};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::archive;
use crate::auth::AuthUser;
use crate::authz::{authorize, Action};
use crate::error::{ApiError, ApiResult, ErrorBody, ErrorCode};
use crate::openapi::{AuthErrors, JsonBodyErrors, ServerErrors};
use crate::state::AppState;
use crate::validate;
use crate::wire::{self, FileJson, VersionJson};

/// The device a restore made over HTTP is recorded under in the journal.
pub const HTTP_DEVICE_ID: &str = "http-api";

const PATH_NOT_FOUND: ApiError =
    ApiError::NotFound { code: ErrorCode::PathNotFound, message: "this path never existed in the workspace" };
const VERSION_NOT_FOUND: ApiError =
    ApiError::NotFound { code: ErrorCode::VersionNotFound, message: "this path has no such version" };

/// 410 `version_expired` if version `seq` is gone because retention dropped it (it is at or below
/// the workspace's horizon); `None` if it never existed.
pub(crate) fn expired(conn: &mut DbConn, ws: WorkspaceId, seq: i64) -> ApiResult<Option<ApiError>> {
    Ok(match retention::horizon(conn, ws)? {
        Some(horizon) if seq >= 1 && seq <= horizon => Some(ApiError::Gone {
            code: ErrorCode::VersionExpired,
            message: format!(
                "version {seq} has expired: the workspace's retention dropped it (see its history for the versions kept)"
            ),
        }),
        _ => None,
    })
}

/// The username of each author; an account that no longer exists maps to nothing.
pub(crate) fn usernames(
    conn: &mut DbConn,
    ids: impl Iterator<Item = UserId>,
) -> Result<HashMap<UserId, String>, DbError> {
    let distinct: HashSet<UserId> = ids.collect();
    let mut names = HashMap::with_capacity(distinct.len());
    for id in distinct {
        if let Some(user) = accounts::user_by_id(conn, id)? {
            names.insert(id, user.username);
        }
    }
    Ok(names)
}

#[derive(Serialize, ToSchema)]
struct FilesResponse {
    files: Vec<FileJson>,
}

/// The live heads, ordered by path.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/files",
    tag = "files",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The workspace", example = 1)),
    responses(
        (status = 200, description = "The live files and directories, ordered by path", body = FilesResponse),
        (status = 404, description = "`workspace_not_found` (also for a workspace the caller is not a member of)", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn list_files(state: web::Data<AppState>, user: AuthUser, ws: web::Path<i64>) -> ApiResult<HttpResponse> {
    let ws = WorkspaceId(ws.into_inner());
    let (heads, names) = state
        .read(move |conn| {
            authorize(conn, user.id, ws, Action::ReadFiles)?;
            let heads = journal::live_heads(conn, ws)?;
            let names = usernames(conn, heads.iter().map(|h| h.author_id))?;
            Ok((heads, names))
        })
        .await?;
    let files = heads
        .into_iter()
        .map(|h| {
            let by = names.get(&h.author_id).cloned();
            FileJson::new(h, by)
        })
        .collect();
    Ok(HttpResponse::Ok().json(FilesResponse { files }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// A path in the workspace (`/`-separated, relative).
    #[param(min_length = 1, max_length = 4096, example = "report.txt")]
    path: String,
}

#[derive(Serialize, ToSchema)]
struct HistoryResponse {
    path: String,
    versions: Vec<VersionJson>,
    /// How many older versions of the path retention dropped (they are not listed).
    expired_versions: i64,
}

/// Every journal row that touched the path, newest first.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/history",
    tag = "files",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The workspace", example = 1), HistoryQuery),
    responses(
        (status = 200, description = "Every version of the path the journal keeps, newest first, and how many older ones expired", body = HistoryResponse),
        (status = 404, description = "`workspace_not_found` or `path_not_found` (the path never existed)", body = ErrorBody),
        (status = 422, description = "`invalid_request` (no `path`) or `invalid_path`", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn history(
    state: web::Data<AppState>,
    user: AuthUser,
    ws: web::Path<i64>,
    query: web::Query<HistoryQuery>,
) -> ApiResult<HttpResponse> {
    let ws = WorkspaceId(ws.into_inner());
    let path = query.into_inner().path;
    validate::workspace_path(&path)?;
    let key = path.clone();
    let (rows, names, expired_versions) = state
        .read(move |conn| {
            authorize(conn, user.id, ws, Action::ReadFiles)?;
            let rows = journal::history(conn, ws, &key)?;
            let names = usernames(conn, rows.iter().map(|r| r.author_id))?;
            Ok((rows, names, retention::expired_versions(conn, ws, &key)?))
        })
        .await?;
    if rows.is_empty() {
        return Err(PATH_NOT_FOUND);
    }
    let versions = rows
        .into_iter()
        .rev()
        .map(|r| {
            let by = names.get(&r.author_id).cloned();
            VersionJson::new(r, by)
        })
        .collect();
    Ok(HttpResponse::Ok().json(HistoryResponse { path, versions, expired_versions }))
}

#[derive(Deserialize, ToSchema)]
pub struct RestoreRequest {
    /// A path in the workspace (`/`-separated, relative).
    #[schema(min_length = 1, max_length = 4096, example = "report.txt")]
    path: String,
    /// The version (seq) of `path` to restore; a string of digits is accepted too.
    #[serde(deserialize_with = "wire::id")]
    #[schema(example = 1)]
    version: i64,
}

#[derive(Serialize, ToSchema)]
struct Restored {
    path: String,
    /// The seq of the new head.
    version: i64,
    restored_from: i64,
}

#[derive(Serialize, ToSchema)]
struct RestoreResponse {
    restored: Restored,
}

/// Why the journal may not restore `old` at `path`; `None` if it may.
fn restore_refusal(path: &str, old: Option<&Change>, path_known: bool) -> Option<ApiError> {
    let Some(old) = old.filter(|o| o.path == path) else {
        return Some(if path_known { VERSION_NOT_FOUND } else { PATH_NOT_FOUND });
    };
    if old.deleted {
        return Some(ApiError::invalid(
            ErrorCode::VersionIsDelete,
            format!("version {} deleted the path; restore a version that has content", old.seq),
        ));
    }
    if old.kind != EntryKind::File {
        return Some(ApiError::invalid(ErrorCode::NotAFile, format!("version {} is a directory, not a file", old.seq)));
    }
    None
}

/// Makes the content of an old version the path's new head, then tells the nodes.
#[utoipa::path(
    post,
    path = "/workspaces/{id}/restore",
    tag = "files",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The workspace", example = 1)),
    request_body = RestoreRequest,
    responses(
        (status = 200, description = "The new head", body = RestoreResponse),
        (status = 403, description = "`forbidden`: viewers may not change files", body = ErrorBody),
        (status = 404, description = "`workspace_not_found`, `path_not_found` or `version_not_found`", body = ErrorBody),
        (status = 409, description = "`restore_conflict`: a directory is at the path now, or a parent is a file", body = ErrorBody),
        (status = 410, description = "`version_expired`: retention dropped this version", body = ErrorBody),
        (status = 422, description = "`invalid_request`, `invalid_path`, `version_is_delete` or `not_a_file`", body = ErrorBody),
        AuthErrors,
        JsonBodyErrors,
        ServerErrors,
    )
)]
pub async fn restore(
    state: web::Data<AppState>,
    user: AuthUser,
    ws: web::Path<i64>,
    body: web::Json<RestoreRequest>,
) -> ApiResult<HttpResponse> {
    let ws = WorkspaceId(ws.into_inner());
    let RestoreRequest { path, version } = body.into_inner();
    validate::workspace_path(&path)?;
    let key = path.clone();
    state
        .read(move |conn| {
            authorize(conn, user.id, ws, Action::WriteFiles)?;
            let old = journal::version_at(conn, ws, version)?.map(|(change, _)| change);
            if old.is_none() {
                if let Some(gone) = expired(conn, ws, version)? {
                    return Err(gone);
                }
            }
            let path_known = journal::head_of(conn, ws, &key)?.is_some();
            restore_refusal(&key, old.as_ref(), path_known).map_or(Ok(()), Err)
        })
        .await?;
    let author = Author { user_id: user.id, device_id: HTTP_DEVICE_ID.into(), device_name: "web".into() };
    let edit = Edit::Restore { path: path.clone(), seq: version };
    // Versions never change, so what was checked above still holds; the
    // journal re-checks the head (a directory may have appeared meanwhile).
    let committed =
        state.db.write(move |conn| journal::commit(conn, ws, &author, &edit)).await.map_err(|e| match e {
            DbError::NotFound => VERSION_NOT_FOUND,
            DbError::Refused(refusal) => {
                ApiError::Conflict { code: ErrorCode::RestoreConflict, message: refusal.sentence() }
            }
            other => other.into(),
        })?;
    tracing::info!(workspace.id = ws.0, user.id = user.id.0, seq = committed.seq, from = version, "version restored");
    state.bus.publish_workspace(ws, &WorkspaceEvent::Committed { workspace_id: ws, seq: committed.seq }).await;
    Ok(HttpResponse::Ok().json(RestoreResponse {
        restored: Restored { path: committed.path, version: committed.seq, restored_from: version },
    }))
}

#[derive(Deserialize, ToSchema)]
pub struct DownloadRequest {
    /// A string of digits is accepted too.
    #[serde(deserialize_with = "wire::id")]
    workspace_id: i64,
}

/// The live heads as a zip, streamed; the response starts before the first
/// chunk is read.
#[utoipa::path(
    post,
    path = "/download-workspace",
    tag = "files",
    security(("bearer" = [])),
    request_body = DownloadRequest,
    responses(
        (status = 200, description = "The current head of every live file and directory, as a zip", content_type = "application/zip", body = [u8],
            headers(("Content-Disposition" = String, description = "`attachment` with the workspace's name"))),
        (status = 404, description = "`workspace_not_found` (also for a workspace the caller is not a member of)", body = ErrorBody),
        (status = 422, description = "`invalid_request`", body = ErrorBody),
        AuthErrors,
        JsonBodyErrors,
        ServerErrors,
    )
)]
pub async fn download_workspace(
    state: web::Data<AppState>,
    user: AuthUser,
    body: web::Json<DownloadRequest>,
) -> ApiResult<HttpResponse> {
    let ws = WorkspaceId(body.workspace_id);
    let (workspace, heads) = state
        .read(move |conn| {
            let (workspace, _) = authorize(conn, user.id, ws, Action::ReadFiles)?;
            Ok((workspace, journal::live_heads(conn, ws)?))
        })
        .await?;
    // Paths were checked when committed; a row that fails now is corrupt and
    // must not become a zip entry that climbs out of the extraction directory.
    let heads: Vec<Change> = heads
        .into_iter()
        .filter(|h| {
            let ok = filesync_core::path::validate(&h.path).is_ok();
            if !ok {
                tracing::error!(
                    workspace.id = ws.0,
                    seq = h.seq,
                    "journal head has an invalid path; left out of the zip"
                );
            }
            ok
        })
        .collect();
    tracing::info!(workspace.id = ws.0, user.id = user.id.0, entries = heads.len(), "workspace download started");
    let body = archive::zip_stream(state.db.clone(), state.store.clone(), ws, heads).inspect_err(move |e| {
        tracing::error!(workspace.id = ws.0, error = %e, "workspace download aborted");
    });
    Ok(HttpResponse::Ok()
        .content_type("application/zip")
        .insert_header(attachment(&format!("{}.zip", workspace.name)))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .streaming(body))
}

/// `attachment; filename="<ascii>"; filename*=UTF-8''<file>`: the ASCII fallback has every other
/// character replaced, the extended value carries the real name percent-encoded.
pub(crate) fn attachment(file: &str) -> ContentDisposition {
    let ascii: String =
        file.chars().map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' }).collect();
    ContentDisposition {
        disposition: DispositionType::Attachment,
        parameters: vec![
            DispositionParam::Filename(ascii),
            DispositionParam::FilenameExt(ExtendedValue {
                charset: header::Charset::Ext("UTF-8".into()),
                language_tag: None,
                value: file.as_bytes().to_vec(),
            }),
        ],
    }
}

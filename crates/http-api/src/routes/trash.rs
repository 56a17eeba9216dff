//! The trash: `GET /workspaces/{id}/trash` (deleted files and folders, newest first, who deleted
//! them and when) and `POST /workspaces/{id}/trash/restore` (a path, or a folder with everything
//! under it that is still in the trash), until retention drops them `trash_days` after the delete.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Duration, Utc};
use filesync_core::db::journal::{self, Committed};
use filesync_core::db::{retention, trash, DbError};
use filesync_core::WorkspaceId;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::file::{announce, author};
use super::files::usernames;
use crate::auth::AuthUser;
use crate::authz::{authorize, Action};
use crate::error::{ApiError, ApiResult, ErrorBody, ErrorCode};
use crate::openapi::{AuthErrors, JsonBodyErrors, ServerErrors};
use crate::state::AppState;
use crate::validate;
use crate::wire;

/// Entries per page unless `limit` says otherwise, and the most one page may hold.
const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 500;

const NOT_IN_TRASH: ApiError = ApiError::NotFound {
    code: ErrorCode::NotInTrash,
    message: "nothing at or under this path is in the trash: it was never deleted, is restored already, \
              or stayed longer than the workspace's trash_days and has expired",
};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TrashQuery {
    /// Entries deleted before this seq (the `next_before_seq` of the previous page).
    #[param(minimum = 1)]
    before_seq: Option<i64>,
    /// Entries per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

/// One deleted file or directory.
#[derive(Serialize, ToSchema)]
struct TrashEntryJson {
    path: String,
    #[schema(schema_with = wire::kind_schema)]
    kind: &'static str,
    /// The seq of the delete.
    deleted_version: i64,
    /// Who deleted it (`null` if the account is gone).
    deleted_by: Option<String>,
    deleted_by_id: i64,
    deleted_at: DateTime<Utc>,
    /// When retention drops it (at the first collection after this time).
    expires_at: DateTime<Utc>,
    /// The size of the version a restore brings back (0 for a directory).
    size: u64,
    /// The version a restore brings back (`null` for a directory).
    restores_version: Option<i64>,
}

#[derive(Serialize, ToSchema)]
struct TrashResponse {
    entries: Vec<TrashEntryJson>,
    /// Days a deleted path stays in the trash in this workspace.
    trash_days: u32,
    /// Pass as `before_seq` for the next (older) page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_before_seq: Option<i64>,
}

/// Deleted files and directories, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/trash",
    tag = "files",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The workspace", example = 1), TrashQuery),
    responses(
        (status = 200, description = "Trash entries, the newest deletion first", body = TrashResponse),
        (status = 404, description = "`workspace_not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_request`, `invalid_limit` or `invalid_before_seq`", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn list_trash(
    state: web::Data<AppState>,
    user: AuthUser,
    ws: web::Path<i64>,
    query: web::Query<TrashQuery>,
) -> ApiResult<HttpResponse> {
    let ws = WorkspaceId(ws.into_inner());
    let TrashQuery { before_seq, limit } = query.into_inner();
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid(ErrorCode::InvalidLimit, format!("limit must be 1 to {MAX_PAGE}")));
    }
    if before_seq.is_some_and(|b| b < 1) {
        return Err(ApiError::invalid(ErrorCode::InvalidBeforeSeq, "before_seq must be a seq, 1 or more"));
    }
    let defaults = state.retention;
    let (rows, names, policy) = state
        .read(move |conn| {
            authorize(conn, user.id, ws, Action::ReadFiles)?;
            let rows = trash::list(conn, ws, before_seq, limit)?;
            let names = usernames(conn, rows.iter().map(|r| r.deleted_by))?;
            Ok((rows, names, retention::policy(conn, ws, &defaults)?))
        })
        .await?;
    let next_before_seq = (rows.len() as i64 == limit).then(|| rows.last().map(|r| r.deleted_seq)).flatten();
    let keep = Duration::days(i64::from(policy.trash_days));
    let entries = rows
        .into_iter()
        .map(|e| {
            let deleted_at = e.deleted_at.and_utc();
            TrashEntryJson {
                kind: e.kind.as_str(),
                deleted_version: e.deleted_seq,
                deleted_by: names.get(&e.deleted_by).cloned(),
                deleted_by_id: e.deleted_by.0,
                deleted_at,
                expires_at: deleted_at + keep,
                size: e.size,
                restores_version: e.restores,
                path: e.path,
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(TrashResponse { entries, trash_days: policy.trash_days, next_before_seq }))
}

#[derive(Deserialize, ToSchema)]
pub struct TrashRestoreRequest {
    /// A deleted path, or a folder: everything under it still in the trash is restored.
    #[schema(min_length = 1, max_length = 4096, example = "docs/report.txt")]
    path: String,
}

#[derive(Serialize, ToSchema)]
struct RestoredPath {
    path: String,
    /// The seq of its new head.
    version: i64,
}

#[derive(Serialize, ToSchema)]
struct TrashRestoreResponse {
    /// What came back, parents first.
    restored: Vec<RestoredPath>,
}

/// Restores a deleted path to its last version with content, or a folder with everything under it
/// still in the trash, in one transaction, then tells the nodes (agents receive it like any change).
#[utoipa::path(
    post,
    path = "/workspaces/{id}/trash/restore",
    tag = "files",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The workspace", example = 1)),
    request_body = TrashRestoreRequest,
    responses(
        (status = 200, description = "The restored paths and their new versions", body = TrashRestoreResponse),
        (status = 403, description = "`forbidden`: viewers may not change files", body = ErrorBody),
        (status = 404, description = "`workspace_not_found` or `not_in_trash` (never deleted, restored already, or expired)", body = ErrorBody),
        (status = 409, description = "`restore_conflict`: a directory is at a restored file's path now, or a parent is a file; nothing was restored", body = ErrorBody),
        (status = 422, description = "`invalid_request` or `invalid_path`", body = ErrorBody),
        AuthErrors,
        JsonBodyErrors,
        ServerErrors,
    )
)]
pub async fn restore_from_trash(
    state: web::Data<AppState>,
    user: AuthUser,
    ws: web::Path<i64>,
    body: web::Json<TrashRestoreRequest>,
) -> ApiResult<HttpResponse> {
    let ws = WorkspaceId(ws.into_inner());
    let path = body.into_inner().path;
    validate::workspace_path(&path)?;
    state.read(move |conn| authorize(conn, user.id, ws, Action::WriteFiles).map(|_| ())).await?;
    let by = author(&user);
    let key = path.clone();
    // One transaction: the entries are read and restored under the workspace's lock, all or none.
    let done: Vec<Committed> = state
        .db
        .write(move |c| {
            journal::lock_workspace(c, ws)?;
            let edits = trash::restore_edits(c, ws, &key)?;
            journal::commit_many(c, ws, &by, &edits)?.into_iter().collect()
        })
        .await
        .map_err(|e| match e {
            DbError::NotFound => NOT_IN_TRASH,
            DbError::Refused(refusal) => {
                ApiError::Conflict { code: ErrorCode::RestoreConflict, message: refusal.sentence() }
            }
            other => other.into(),
        })?;
    if let Some(last) = done.iter().filter(|c| c.new_seq).map(|c| c.seq).max() {
        announce(&state, ws, last).await;
    }
    tracing::info!(workspace.id = ws.0, user.id = user.id.0, paths = done.len(), "restored from the trash");
    let restored = done.into_iter().map(|c| RestoredPath { path: c.path, version: c.seq }).collect();
    Ok(HttpResponse::Ok().json(TrashRestoreResponse { restored }))
}

//! `GET /workspaces/{id}/activity`: the journal, newest first, a page at a time.

use actix_web::{web, HttpResponse};
use filesync_core::db::journal;
use filesync_core::WorkspaceId;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::files::usernames;
use crate::auth::AuthUser;
use crate::authz::{authorize, Action};
use crate::error::{ApiError, ApiResult, ErrorBody, ErrorCode};
use crate::openapi::{AuthErrors, ServerErrors};
use crate::state::AppState;
use crate::wire::ActivityJson;

/// Entries per page unless `limit` says otherwise, and the most one page may hold.
const DEFAULT_ACTIVITY: i64 = 50;
const MAX_ACTIVITY: i64 = 500;

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
        return Err(ApiError::invalid(ErrorCode::InvalidLimit, format!("limit must be 1 to {MAX_ACTIVITY}")));
    }
    if before_seq.is_some_and(|b| b < 1) {
        return Err(ApiError::invalid(ErrorCode::InvalidBeforeSeq, "before_seq must be a seq, 1 or more"));
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

//! `GET`/`PUT /workspaces/{id}/retention`: how long a workspace keeps old versions and deleted
//! files. Any member may read it, the owner may change it. The schedule that applies it is
//! `filesync_core::db::retention` (docs/http-api.md, "Retention").

use actix_web::{web, HttpResponse};
use filesync_core::db::retention::{self, Policy, Setting, MAX_DAYS};
use filesync_core::db::DbError;
use filesync_core::WorkspaceId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::AuthUser;
use crate::authz::{authorize, Action};
use crate::error::{ApiError, ApiResult, ErrorBody, ErrorCode};
use crate::openapi::{AuthErrors, JsonBodyErrors, ServerErrors};
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
struct RetentionResponse {
    /// Days every version is kept before it is thinned (0: only the current version of each file).
    keep_days: u32,
    /// Days a deleted file stays in the trash (0: emptied at the next collection).
    trash_days: u32,
    /// True if `keep_days` is the server's default (the workspace has no setting of its own).
    keep_days_is_default: bool,
    /// True if `trash_days` is the server's default.
    trash_days_is_default: bool,
}

impl RetentionResponse {
    fn new(own: Setting, defaults: &Policy) -> RetentionResponse {
        RetentionResponse {
            keep_days: own.keep_days.unwrap_or(defaults.keep_days),
            trash_days: own.trash_days.unwrap_or(defaults.trash_days),
            keep_days_is_default: own.keep_days.is_none(),
            trash_days_is_default: own.trash_days.is_none(),
        }
    }
}

/// The workspace's retention.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/retention",
    tag = "workspaces",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The workspace", example = 1)),
    responses(
        (status = 200, description = "The retention in effect", body = RetentionResponse),
        (status = 404, description = "`workspace_not_found`", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn get_retention(state: web::Data<AppState>, user: AuthUser, ws: web::Path<i64>) -> ApiResult<HttpResponse> {
    let ws = WorkspaceId(ws.into_inner());
    let own = state
        .read(move |conn| {
            authorize(conn, user.id, ws, Action::ReadFiles)?;
            Ok(retention::setting(conn, ws)?)
        })
        .await?;
    Ok(HttpResponse::Ok().json(RetentionResponse::new(own, &state.retention)))
}

#[derive(Deserialize, ToSchema)]
pub struct RetentionRequest {
    /// Days, 0 to 36500; `null` or absent: the server's default.
    #[schema(minimum = 0, maximum = 36500, example = 30)]
    keep_days: Option<i64>,
    /// Days, 0 to 36500; `null` or absent: the server's default.
    #[schema(minimum = 0, maximum = 36500, example = 30)]
    trash_days: Option<i64>,
}

fn days(name: &str, value: Option<i64>) -> ApiResult<Option<u32>> {
    value
        .map(|d| {
            u32::try_from(d).ok().filter(|d| *d <= MAX_DAYS).ok_or_else(|| {
                ApiError::invalid(
                    ErrorCode::InvalidRetention,
                    format!("{name} must be a number of days, 0 to {MAX_DAYS}"),
                )
            })
        })
        .transpose()
}

/// Sets the workspace's retention (owner only). Takes effect at the next collection.
#[utoipa::path(
    put,
    path = "/workspaces/{id}/retention",
    tag = "workspaces",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The workspace", example = 1)),
    request_body = RetentionRequest,
    responses(
        (status = 200, description = "The retention now in effect", body = RetentionResponse),
        (status = 403, description = "`forbidden`: only the owner may change it", body = ErrorBody),
        (status = 404, description = "`workspace_not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_request` or `invalid_retention` (not 0 to 36500)", body = ErrorBody),
        AuthErrors,
        JsonBodyErrors,
        ServerErrors,
    )
)]
pub async fn set_retention(
    state: web::Data<AppState>,
    user: AuthUser,
    ws: web::Path<i64>,
    body: web::Json<RetentionRequest>,
) -> ApiResult<HttpResponse> {
    let ws = WorkspaceId(ws.into_inner());
    let RetentionRequest { keep_days, trash_days } = body.into_inner();
    let setting = Setting { keep_days: days("keep_days", keep_days)?, trash_days: days("trash_days", trash_days)? };
    state.read(move |conn| authorize(conn, user.id, ws, Action::ManageWorkspace).map(|_| ())).await?;
    state.db.write(move |c| retention::set(c, ws, setting)).await.map_err(|e| match e {
        DbError::NotFound => crate::authz::NOT_FOUND,
        other => other.into(),
    })?;
    tracing::info!(
        workspace.id = ws.0,
        user.id = user.id.0,
        keep_days = ?setting.keep_days,
        trash_days = ?setting.trash_days,
        "retention changed"
    );
    Ok(HttpResponse::Ok().json(RetentionResponse::new(setting, &state.retention)))
}

//! `/workspaces/{id}/presence`: the connected devices of the workspace's members.

use std::collections::HashMap;

use actix_web::{web, HttpResponse};
use filesync_core::db::accounts;
use filesync_core::{UserId, WorkspaceId};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::AuthUser;
use crate::authz::{authorize, Action};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::openapi::{AuthErrors, ServerErrors};
use crate::state::AppState;
use crate::wire::DeviceJson;

#[derive(Serialize, ToSchema)]
struct PresenceResponse {
    /// `redis`; `local` for the in-process presence `filesync-server`'s node
    /// shares; `none` when this process can see no node's presence.
    #[schema(value_type = String, example = "redis")]
    source: &'static str,
    devices: Vec<DeviceJson>,
}

#[utoipa::path(
    get,
    path = "/workspaces/{id}/presence",
    tag = "presence",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The workspace", example = 1)),
    responses(
        (status = 200, description = "The members' connected devices", body = PresenceResponse),
        (status = 404, description = "`workspace_not_found` (also for a workspace the caller is not a member of)", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn presence(state: web::Data<AppState>, user: AuthUser, ws: web::Path<i64>) -> ApiResult<HttpResponse> {
    let ws = WorkspaceId(ws.into_inner());
    let members = state
        .read(move |conn| {
            authorize(conn, user.id, ws, Action::ReadFiles)?;
            Ok(accounts::members_of(conn, ws)?)
        })
        .await?;
    if !state.presence_visible {
        return Ok(HttpResponse::Ok().json(PresenceResponse { source: "none", devices: Vec::new() }));
    }
    let presence = state.bus.presence();
    let names: HashMap<UserId, String> = members.into_iter().map(|m| (UserId(m.user_id), m.username)).collect();
    let ids: Vec<UserId> = names.keys().copied().collect();
    let entries = presence.devices_of(&ids).await.map_err(|e| {
        tracing::warn!(workspace.id = ws.0, error = %e, "cannot read presence");
        ApiError::Unavailable
    })?;
    let mut devices: Vec<DeviceJson> = entries
        .into_iter()
        .filter_map(|e| names.get(&e.user_id).cloned().map(|name| DeviceJson::new(e, name)))
        .collect();
    devices.sort_by(|a, b| {
        (&a.username, &a.device_name, a.connected_at).cmp(&(&b.username, &b.device_name, b.connected_at))
    });
    let source = if presence.is_redis() { "redis" } else { "local" };
    Ok(HttpResponse::Ok().json(PresenceResponse { source, devices }))
}

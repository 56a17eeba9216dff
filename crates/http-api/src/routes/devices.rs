//! `GET /devices`, `DELETE /devices/{id}`: the caller's logins, each with its
//! refresh credential, and revoking one (its agent is disconnected at once).

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use filesync_core::db::devices::{self, Device};
use filesync_core::events::Revoked;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult, ErrorBody, ErrorCode};
use crate::openapi::{AuthErrors, ServerErrors};
use crate::state::AppState;

/// A signed-in device of the caller (a login), as `/devices` lists it.
#[derive(Serialize, ToSchema)]
#[schema(as = SignedInDevice)]
struct DeviceJson {
    id: i64,
    name: String,
    created_at: DateTime<Utc>,
    last_used_at: DateTime<Utc>,
    /// The device the request's token was issued to.
    current: bool,
}

impl DeviceJson {
    fn new(d: Device, current: i64) -> DeviceJson {
        DeviceJson {
            current: d.id == current,
            id: d.id,
            name: d.name,
            created_at: d.created_at.and_utc(),
            last_used_at: d.last_used_at.and_utc(),
        }
    }
}

#[derive(Serialize, ToSchema)]
struct DeviceList {
    devices: Vec<DeviceJson>,
}

#[utoipa::path(
    get,
    path = "/devices",
    tag = "accounts",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's devices (logins), most recently used first", body = DeviceList),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn list(state: web::Data<AppState>, user: AuthUser) -> ApiResult<HttpResponse> {
    let id = user.id;
    let rows = state.read(move |conn| Ok(devices::list(conn, id)?)).await?;
    let devices = rows.into_iter().map(|d| DeviceJson::new(d, user.device_id)).collect();
    Ok(HttpResponse::Ok().json(DeviceList { devices }))
}

const NO_SUCH_DEVICE: ApiError =
    ApiError::NotFound { code: ErrorCode::DeviceNotFound, message: "you have no device with this id" };

#[utoipa::path(
    delete,
    path = "/devices/{id}",
    tag = "accounts",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The device id from `GET /devices`")),
    responses(
        (status = 204, description = "Signed out: the device's tokens and refresh credential are refused, its agents disconnected"),
        (status = 404, description = "`device_not_found`: the caller has no such device", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn revoke(state: web::Data<AppState>, user: AuthUser, path: web::Path<String>) -> ApiResult<HttpResponse> {
    let device: i64 = path.into_inner().parse().map_err(|_| NO_SUCH_DEVICE)?;
    let id = user.id;
    if !state.db.write(move |conn| devices::delete(conn, id, device)).await? {
        return Err(NO_SUCH_DEVICE);
    }
    super::accounts::announce_revoked(&state, id, Revoked::Device { device_id: device }).await;
    tracing::info!(user.id = %id, device.id = device, "device revoked");
    Ok(HttpResponse::NoContent().finish())
}

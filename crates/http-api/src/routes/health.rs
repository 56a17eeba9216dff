//! `/healthz`, `/readyz`, `/metrics`: unauthenticated, for orchestrators and Prometheus.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
struct Status {
    /// `ok` (`/healthz`) or `ready` (`/readyz`).
    #[schema(value_type = String, example = "ok")]
    status: &'static str,
}

/// The process is up and serving.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The process serves", body = Status))
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Status { status: "ok" })
}

/// The process can do its work: the database answers.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "The database answers", body = Status),
        (status = 503, description = "`unavailable`: the database does not answer", body = ErrorBody),
    )
)]
pub async fn readyz(state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    if state.db.ping().await {
        Ok(HttpResponse::Ok().json(Status { status: "ready" }))
    } else {
        Err(ApiError::Unavailable)
    }
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String),
        (status = 500, description = "`internal`", body = ErrorBody),
    )
)]
pub async fn metrics(state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let text = state.metrics.render().map_err(ApiError::internal)?
        + &state.db.pool_stats().prometheus_text("filesync_http")
        + &state.store.backend().requests().prometheus_text();
    Ok(HttpResponse::Ok().content_type(prometheus::TEXT_FORMAT).body(text))
}

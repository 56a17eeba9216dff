//! `/healthz`, `/readyz`, `/metrics`: unauthenticated, for orchestrators and Prometheus.

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The process is up and serving.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// The process can do its work: the database answers.
pub async fn readyz(state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    if state.db.ping().await {
        Ok(HttpResponse::Ok().json(json!({"status": "ready"})))
    } else {
        Err(ApiError::Unavailable)
    }
}

pub async fn metrics(state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let text =
        state.metrics.render().map_err(ApiError::internal)? + &state.db.pool_stats().prometheus_text("filesync_http");
    Ok(HttpResponse::Ok().content_type(prometheus::TEXT_FORMAT).body(text))
}

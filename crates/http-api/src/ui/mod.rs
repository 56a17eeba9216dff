//! The web UI: a single page of plain JavaScript and CSS, embedded in the
//! binary and served at `/` (assets under `/ui/`), plus the handlers of the
//! cookie session it logs in with (`/session`, in the API's route table).
//!
//! The page is a client of the JSON API: it calls the same routes the CLI
//! does, authenticated by the session cookie ([`crate::session_cookie`])
//! instead of a Bearer header, so the same `AuthUser` and `authz` decide.
//!
//! **Architecture Invariant:** nothing the UI needs is fetched from anywhere
//! but this server: every asset is compiled in, and UI responses carry a
//! Content-Security-Policy that allows scripts, styles and connections from
//! this origin only (no inline script).

mod assets;
pub(crate) mod events;
pub(crate) mod session;

use actix_web::{web, HttpRequest, HttpResponse};

use crate::error::{method_not_allowed, ApiError, ApiResult, ErrorBody, ErrorCode};

const NO_ASSET: ApiError =
    ApiError::NotFound { code: ErrorCode::AssetNotFound, message: "the web UI has no such file" };

/// The policy of every UI page and asset: this origin only, no inline script.
pub const UI_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                          connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
                          form-action 'self'; frame-ancestors 'none'";

/// The policy of every other response (JSON, file bytes): nothing in it may
/// run or load anything, even if a browser is made to render it.
pub const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'; sandbox";

fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/").route(web::get().to(index))).service(resource("/ui/{name}").route(web::get().to(asset)));
}

#[utoipa::path(
    get,
    path = "/",
    tag = "ui",
    responses(
        (status = 200, description = "The web UI's page (its scripts and styles are under `/ui/`)", content_type = "text/html", body = String),
        (status = 304, description = "The browser's copy is current (`If-None-Match`)"),
    )
)]
pub async fn index(req: HttpRequest) -> ApiResult<HttpResponse> {
    assets::serve(&req, "index.html").ok_or(NO_ASSET)
}

#[utoipa::path(
    get,
    path = "/ui/{name}",
    tag = "ui",
    params(("name" = String, Path, description = "An asset of the page: `app.js`, `app.css`, …")),
    responses(
        (status = 200, description = "The asset", content(
            (String = "text/javascript"), (String = "text/css"), (String = "image/svg+xml"), (String = "text/html"))),
        (status = 304, description = "The browser's copy is current (`If-None-Match`)"),
        (status = 404, description = "`asset_not_found`: no such asset", body = ErrorBody),
    )
)]
pub async fn asset(req: HttpRequest, name: web::Path<String>) -> ApiResult<HttpResponse> {
    assets::serve(&req, &name).ok_or(NO_ASSET)
}

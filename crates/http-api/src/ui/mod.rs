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
pub(crate) mod session;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::error::method_not_allowed;

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
    cfg.service(resource("/").route(web::get().to(index)).route(web::head().to(index)))
        .service(resource("/ui/{name}").route(web::get().to(asset)).route(web::head().to(asset)));
}

async fn index(req: HttpRequest) -> HttpResponse {
    assets::serve(&req, "index.html").unwrap_or_else(|| HttpResponse::NotFound().finish())
}

async fn asset(req: HttpRequest, name: web::Path<String>) -> HttpResponse {
    match assets::serve(&req, &name) {
        Some(res) => res,
        None => HttpResponse::NotFound()
            .insert_header((header::CONTENT_SECURITY_POLICY, UI_CSP))
            .content_type("text/plain; charset=utf-8")
            .body("no such file"),
    }
}

//! `GET /openapi.json`: the OpenAPI 3.1 description of every route, generated
//! from the `#[utoipa::path]` annotation on each handler and the
//! `utoipa::ToSchema` derives on the JSON shapes (`wire` and the request and
//! response structs of `routes`).
//!
//! A handler added to the route table must be annotated and listed in
//! [`ApiDoc`]'s `paths(...)`: `tests/openapi.rs` fails while a route and the
//! document disagree, and `.ci/schemathesis.sh` checks the live server's
//! answers against the document.
//!
//! The error statuses every route of a kind can answer are grouped here
//! ([`AuthErrors`], [`JsonBodyErrors`], [`ServerErrors`]); a route lists its
//! own 403/404/409/422/429 with the codes it uses.

use std::sync::LazyLock;

use actix_web::HttpResponse;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi};

use crate::error::ErrorBody;
use crate::routes::{
    accounts, activity, devices, file, files, health, members, presence, retention, trash, tree, workspaces,
};
use crate::ui::{self, session};

/// The name of the security scheme: `Authorization: Bearer <token>`.
pub const BEARER: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "filesync HTTP API",
        description = "Accounts, login, workspaces and sharing, and the HTTP side of the sync journal. \
            Every error answers `{\"error\": {\"code\", \"message\"}}`; see docs/http-api.md."
    ),
    paths(
        accounts::register,
        accounts::login,
        accounts::check_token,
        session::current,
        session::log_in,
        session::log_out,
        session::refresh,
        session::change_password,
        ui::index,
        ui::events::events,
        ui::asset,
        accounts::refresh,
        accounts::logout,
        accounts::change_password,
        accounts::delete_account,
        devices::list,
        devices::revoke,
        workspaces::create_workspace,
        workspaces::add_user,
        workspaces::shared_workspaces,
        workspaces::shared_users,
        workspaces::all_workspaces,
        members::set_role,
        members::remove_member,
        members::rename_workspace,
        members::delete_workspace,
        members::cancel_invitation,
        files::download_workspace,
        files::list_files,
        files::history,
        files::restore,
        trash::list_trash,
        trash::restore_from_trash,
        retention::get_retention,
        retention::set_retention,
        file::download,
        file::upload,
        tree::delete,
        tree::move_path,
        tree::mkdir,
        activity::activity,
        presence::presence,
        health::healthz,
        health::readyz,
        health::metrics,
        openapi_json,
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth),
    tags(
        (name = "accounts", description = "Registration, login, tokens, devices and the account"),
        (name = "workspaces", description = "Workspaces and their members"),
        (name = "files", description = "The sync journal: files, history, restore, downloads"),
        (name = "presence", description = "Who is connected"),
        (name = "ui", description = "The web UI's page and assets (HTML, JavaScript, CSS; not JSON)"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
    )
)]
pub struct ApiDoc;

/// Declares the `bearer` scheme the authenticated routes name.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("JWT")
            .description(Some("An access token from `POST /login` or `POST /token/refresh`."))
            .build();
        components.add_security_scheme(BEARER, SecurityScheme::Http(scheme));
        // The web UI's device credential, which only `POST /session/refresh` reads.
        components.add_security_scheme(
            "refresh_cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(crate::session_cookie::REFRESH_COOKIE))),
        );
    }
}

/// What a route that takes an `AuthUser` answers without a usable token.
#[derive(IntoResponses)]
#[allow(dead_code)] // a description of responses, never built
pub enum AuthErrors {
    /// `missing_token`, `invalid_token` (malformed, wrong signature, user gone) or `token_expired`.
    #[response(status = 401, headers(("WWW-Authenticate" = String, description = "`Bearer`")))]
    Unauthorized(ErrorBody),
}

/// What a route with a JSON body answers when the body cannot be read.
#[derive(IntoResponses)]
#[allow(dead_code)] // a description of responses, never built
pub enum JsonBodyErrors {
    /// `malformed_json`: the body is not JSON.
    #[response(status = 400)]
    Malformed(ErrorBody),
    /// `payload_too_large`: the body is over 64 KiB.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// `unsupported_media_type`: the body is not sent as `application/json`.
    #[response(status = 415)]
    UnsupportedMediaType(ErrorBody),
}

/// What any route that reads the database may answer.
#[derive(IntoResponses)]
#[allow(dead_code)] // a description of responses, never built
pub enum ServerErrors {
    /// `internal`: the cause is logged, never sent.
    #[response(status = 500)]
    Internal(ErrorBody),
    /// `database_unavailable`: the database cannot be reached (restarting, failing over); `unavailable`: for
    /// presence, Redis does not answer. Retry after `Retry-After` seconds.
    #[response(status = 503, headers(("Retry-After" = u64, description = "Seconds to wait before retrying")))]
    Unavailable(ErrorBody),
}

static DOCUMENT: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(ApiDoc::openapi);

/// The methods the document describes for a route pattern such as
/// `/workspaces/{id}/files`, for the `Allow` header of a 405.
pub fn methods_of(pattern: &str) -> Vec<&'static str> {
    let Some(item) = DOCUMENT.paths.paths.get(pattern) else {
        return Vec::new();
    };
    [
        ("GET", &item.get),
        ("HEAD", &item.head),
        ("POST", &item.post),
        ("PUT", &item.put),
        ("PATCH", &item.patch),
        ("DELETE", &item.delete),
        ("OPTIONS", &item.options),
    ]
    .into_iter()
    .filter_map(|(name, op)| op.as_ref().map(|_| name))
    .collect()
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses(
        (status = 200, description = "The OpenAPI 3.1 description of every route", body = Object),
    )
)]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(&*DOCUMENT)
}

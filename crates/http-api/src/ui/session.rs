//! `/session`: the web UI's login, current session and logout.
//!
//! `POST /session` is `POST /login` (the same handler: the same checks,
//! throttling and token), except that the token goes into the HttpOnly
//! session cookie instead of the body, and the answer names the CSRF token
//! the page must send with every state-changing request.

use actix_web::body::to_bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use utoipa::ToSchema;

use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult, ErrorBody, ErrorCode};
use crate::openapi::{AuthErrors, JsonBodyErrors, ServerErrors};
use crate::routes::accounts;
use crate::session_cookie::{self, cleared_cookies, refresh_cookie, session_cookie};
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct SessionUser {
    id: i64,
    username: String,
    email: String,
}

#[derive(Serialize, ToSchema)]
pub struct SessionResponse {
    user: SessionUser,
    /// Send as `X-CSRF-Token` with every request that is not GET/HEAD.
    /// `null` when the caller authenticated with a Bearer token, not the cookie.
    csrf_token: Option<String>,
    expires_at: chrono::DateTime<chrono::Utc>,
}

/// What the UI needs from `/login`'s answer.
#[derive(Deserialize)]
struct Login {
    token: String,
    expires_at: chrono::DateTime<chrono::Utc>,
    /// The device's long-lived credential, where the server issues one.
    #[serde(default)]
    refresh_token: Option<String>,
    user: LoginUser,
}

#[derive(Deserialize)]
struct LoginUser {
    id: i64,
    username: String,
    email: String,
}

#[utoipa::path(
    get,
    path = "/session",
    tag = "accounts",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller and, for a cookie session, the CSRF token its page must send", body = SessionResponse),
        AuthErrors,
        ServerErrors,
    )
)]
/// `GET /session`: who the cookie (or Bearer token) belongs to, and the CSRF token.
pub async fn current(state: web::Data<AppState>, req: HttpRequest, user: AuthUser) -> HttpResponse {
    // Only a cookie session gets a CSRF token; a Bearer client needs none.
    let csrf_token = match req.headers().get(actix_web::http::header::AUTHORIZATION) {
        Some(_) => None,
        None => session_cookie::cookie_token(&req).map(|t| state.csrf.token_for(&t)),
    };
    HttpResponse::Ok().json(SessionResponse {
        user: SessionUser { id: user.id.0, username: user.username, email: user.email },
        csrf_token,
        expires_at: user.token_expires_at,
    })
}

#[utoipa::path(
    post,
    path = "/session",
    tag = "accounts",
    request_body = accounts::LoginRequest,
    responses(
        (status = 200, description = "Logged in: the `filesync_session` cookie is set (HttpOnly, SameSite=Strict); the token is not in the body", body = SessionResponse,
            headers(("Set-Cookie" = String, description = "`filesync_session=<token>; HttpOnly; SameSite=Strict; Path=/; Max-Age=…`"))),
        (status = 401, description = "`invalid_credentials`: unknown email or wrong password (one answer for both)", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 422, description = "`invalid_request`", body = ErrorBody),
        (status = 429, description = "`too_many_attempts`", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until the next attempt is allowed"))),
        JsonBodyErrors,
        ServerErrors,
    )
)]
/// `POST /session` `{email, password}`: logs in exactly as `POST /login`
/// does and sets the session cookie.
pub async fn log_in(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<accounts::LoginRequest>,
) -> ApiResult<HttpResponse> {
    let res = accounts::login(state.clone(), req.clone(), body).await?;
    let bytes = to_bytes(res.into_body()).await.map_err(|_| ApiError::internal("cannot read the login answer"))?;
    let login: Login = serde_json::from_slice(&bytes).map_err(ApiError::internal)?;
    let csrf_token = Some(state.csrf.token_for(&login.token));
    let mut res = HttpResponse::Ok();
    res.cookie(session_cookie(&req, &login.token, login.expires_at));
    if let Some(credential) = &login.refresh_token {
        res.cookie(refresh_cookie(&req, credential));
    }
    Ok(res.json(SessionResponse {
        user: SessionUser { id: login.user.id, username: login.user.username, email: login.user.email },
        csrf_token,
        expires_at: login.expires_at,
    }))
}

#[utoipa::path(
    delete,
    path = "/session",
    tag = "accounts",
    responses(
        (status = 204, description = "The cookie is cleared", headers(("Set-Cookie" = String, description = "`filesync_session=; Max-Age=0; …`"))),
    )
)]
/// `DELETE /session`: the browser forgets the session cookie. Always 204,
/// whether or not the cookie was still valid.
pub async fn log_out(req: HttpRequest) -> HttpResponse {
    let [session, refresh] = cleared_cookies(&req);
    HttpResponse::NoContent().cookie(session).cookie(refresh).finish()
}

/// What the UI needs from `/token/refresh`'s and `/change-password`'s answers.
#[derive(Deserialize)]
struct Renewed {
    token: String,
    expires_at: chrono::DateTime<chrono::Utc>,
    #[serde(default)]
    refresh_token: Option<String>,
}

async fn renewed_of(res: HttpResponse) -> ApiResult<Renewed> {
    let bytes = to_bytes(res.into_body()).await.map_err(|_| ApiError::internal("cannot read the token answer"))?;
    serde_json::from_slice(&bytes).map_err(ApiError::internal)
}

const NO_REFRESH: ApiError =
    ApiError::Unauthorized { code: ErrorCode::MissingToken, message: "this browser has no session to renew; log in" };

#[utoipa::path(
    post,
    path = "/session/refresh",
    operation_id = "session_refresh",
    tag = "accounts",
    security(("refresh_cookie" = [])),
    responses(
        (status = 200, description = "A new access token in the session cookie, renewed with the browser's device credential (the `filesync_refresh` cookie)", body = SessionResponse),
        (status = 401, description = "`missing_token`: no refresh cookie; `invalid_refresh_token`: it was revoked (logged out, removed, password changed)", body = ErrorBody),
        ServerErrors,
    )
)]
/// `POST /session/refresh`: `POST /token/refresh` with the credential of the
/// refresh cookie; the new access token goes into the session cookie.
pub async fn refresh(state: web::Data<AppState>, req: HttpRequest) -> ApiResult<HttpResponse> {
    let credential = session_cookie::refresh_credential(&req).ok_or(NO_REFRESH)?;
    let body: accounts::RefreshRequest =
        serde_json::from_value(serde_json::json!({ "refresh_token": credential })).map_err(ApiError::internal)?;
    let renewed = renewed_of(accounts::refresh(state.clone(), web::Json(body)).await?).await?;
    let info = state.jwt.verify(&renewed.token).map_err(ApiError::internal)?;
    let user = state
        .read(move |conn| Ok(filesync_core::db::accounts::user_by_id(conn, info.user_id)?))
        .await?
        .ok_or(NO_REFRESH)?;
    Ok(HttpResponse::Ok().cookie(session_cookie(&req, &renewed.token, renewed.expires_at)).json(SessionResponse {
        user: SessionUser { id: user.id, username: user.username, email: user.email },
        csrf_token: Some(state.csrf.token_for(&renewed.token)),
        expires_at: renewed.expires_at,
    }))
}

#[utoipa::path(
    post,
    path = "/session/password",
    operation_id = "session_change_password",
    tag = "accounts",
    security(("bearer" = [])),
    request_body = accounts::ChangePasswordRequest,
    responses(
        (status = 200, description = "The password changed; every earlier token and device is signed out, this browser gets new cookies", body = SessionResponse),
        (status = 403, description = "`forbidden`: the current password is wrong, or the CSRF token is missing", body = ErrorBody),
        (status = 422, description = "`invalid_request` or `invalid_password`", body = ErrorBody),
        (status = 429, description = "`too_many_attempts`", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until the next attempt is allowed"))),
        AuthErrors,
        JsonBodyErrors,
        ServerErrors,
    )
)]
/// `POST /session/password` `{current_password, new_password}`: `POST
/// /change-password` for the browser's session; the new token and device
/// credential go into the cookies.
pub async fn change_password(
    state: web::Data<AppState>,
    req: HttpRequest,
    user: AuthUser,
    body: web::Json<accounts::ChangePasswordRequest>,
) -> ApiResult<HttpResponse> {
    let who = SessionUser { id: user.id.0, username: user.username.clone(), email: user.email.clone() };
    let renewed = renewed_of(accounts::change_password(state.clone(), req.clone(), user, body).await?).await?;
    let mut res = HttpResponse::Ok();
    res.cookie(session_cookie(&req, &renewed.token, renewed.expires_at));
    if let Some(credential) = &renewed.refresh_token {
        res.cookie(refresh_cookie(&req, credential));
    }
    Ok(res.json(SessionResponse {
        user: who,
        csrf_token: Some(state.csrf.token_for(&renewed.token)),
        expires_at: renewed.expires_at,
    }))
}

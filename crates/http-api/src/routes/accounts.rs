//! `/register`, `/login`, `/check-token`.

use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, SecondsFormat, Utc};
use filesync_core::db::accounts::{self, NewUser};
use filesync_core::db::DbError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::openapi::{AuthErrors, JsonBodyErrors, ServerErrors};
use crate::state::AppState;
use crate::validate;
use crate::wire::UserJson;

#[derive(Deserialize, ToSchema)]
pub struct RegisterRequest {
    #[schema(max_length = 255)]
    first_name: String,
    #[schema(max_length = 255)]
    last_name: String,
    #[schema(pattern = "^[A-Za-z0-9_.-]{3,32}$", example = "alice")]
    username: String,
    /// Trimmed and lower-cased; must look like `name@example.com`.
    #[schema(format = Email, max_length = 254, example = "alice@example.com")]
    email: String,
    /// At least 8 characters, at most 72 bytes, no NUL.
    #[schema(min_length = 8, max_length = 72, example = "correct horse battery")]
    password: String,
}

#[derive(Serialize, ToSchema)]
struct UserResponse {
    user: UserJson,
}

#[utoipa::path(
    post,
    path = "/register",
    tag = "accounts",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "The new account", body = UserResponse),
        (status = 409, description = "`email_taken` or `username_taken`", body = ErrorBody),
        (status = 422, description = "`invalid_request`, `invalid_email`, `invalid_password`, `invalid_username` or `invalid_name`", body = ErrorBody),
        JsonBodyErrors,
        ServerErrors,
    )
)]
pub async fn register(state: web::Data<AppState>, body: web::Json<RegisterRequest>) -> ApiResult<HttpResponse> {
    let req = body.into_inner();
    validate::person_name("first_name", &req.first_name)?;
    validate::person_name("last_name", &req.last_name)?;
    validate::username(&req.username)?;
    let email = validate::email(&req.email)?;
    validate::password(&req.password)?;
    let password_hash = state.hash_password(req.password).await?;
    // The unique keys decide between concurrent registrations.
    let user = state
        .db
        .write(move |conn| {
            let new = NewUser {
                first_name: &req.first_name,
                last_name: &req.last_name,
                username: &req.username,
                email: &email,
                password_hash: &password_hash,
            };
            accounts::create_user(conn, &new)
        })
        .await
        .map_err(|e| match e {
            DbError::Conflict("email") => {
                ApiError::Conflict { code: "email_taken", message: "an account with this email already exists" }
            }
            DbError::Conflict(_) => ApiError::Conflict { code: "username_taken", message: "this username is taken" },
            other => other.into(),
        })?;
    tracing::info!(user.id = user.id, "user registered");
    // Pending invitations of this email become memberships (routes/members.rs).
    super::members::accept_invitations(&state, filesync_core::UserId(user.id), &user.email).await;
    Ok(HttpResponse::Created().json(UserResponse { user: user.into() }))
}

#[derive(Deserialize, ToSchema)]
pub struct LoginRequest {
    email: String,
    password: String,
}

#[derive(Serialize, ToSchema)]
struct LoginResponse {
    token: String,
    /// Always `Bearer`.
    #[schema(value_type = String, example = "Bearer")]
    token_type: &'static str,
    /// RFC 3339, UTC, whole seconds.
    #[schema(format = DateTime)]
    expires_at: String,
    user: UserJson,
}

const BAD_CREDENTIALS: ApiError =
    ApiError::Unauthorized { code: "invalid_credentials", message: "email or password is incorrect" };

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[utoipa::path(
    post,
    path = "/login",
    tag = "accounts",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "A token for `Authorization: Bearer <token>`", body = LoginResponse),
        (status = 401, description = "`invalid_credentials`: unknown email or wrong password (one answer for both)", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 422, description = "`invalid_request`", body = ErrorBody),
        (status = 429, description = "`too_many_attempts`", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until the next attempt is allowed"))),
        JsonBodyErrors,
        ServerErrors,
    )
)]
pub async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<LoginRequest>,
) -> ApiResult<HttpResponse> {
    let LoginRequest { email, password } = body.into_inner();
    let email = validate::normalize_email(&email);
    // The TCP peer, not X-Forwarded-For: a client could forge that header.
    let ip = req.peer_addr().map(|a| a.ip()).ok_or_else(|| ApiError::internal("no peer address"))?;
    state.throttle.check(&email, ip, Instant::now()).map_err(|wait| {
        tracing::warn!(peer.addr = %ip, "login throttled");
        ApiError::TooManyAttempts { retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0) }
    })?;
    let lookup = email.clone();
    let user = state.read(move |conn| Ok(accounts::user_by_email(conn, &lookup)?)).await?;
    // Unknown email and wrong password take the same path, time and answer.
    let ok = state.verify_password(password, user.as_ref().map(|u| u.password_hash.clone())).await?;
    let user = match user {
        Some(user) if ok => user,
        _ => {
            state.throttle.record_failure(&email, ip, Instant::now());
            tracing::info!(peer.addr = %ip, "login failed");
            return Err(BAD_CREDENTIALS);
        }
    };
    state.throttle.record_success(&email);
    let (token, expires_at) =
        state.jwt.issue(filesync_core::UserId(user.id), &user.email).map_err(ApiError::internal)?;
    tracing::info!(user.id = user.id, peer.addr = %ip, "login");
    Ok(HttpResponse::Ok().json(LoginResponse {
        token,
        token_type: "Bearer",
        expires_at: rfc3339(expires_at),
        user: user.into(),
    }))
}

#[derive(Serialize, ToSchema)]
struct CheckTokenResponse {
    valid: bool,
    user_id: i64,
    /// RFC 3339, UTC, whole seconds.
    #[schema(format = DateTime)]
    expires_at: String,
}

#[utoipa::path(
    get,
    path = "/check-token",
    tag = "accounts",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The token is valid", body = CheckTokenResponse),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn check_token(user: AuthUser) -> HttpResponse {
    HttpResponse::Ok().json(CheckTokenResponse {
        valid: true,
        user_id: user.id.0,
        expires_at: rfc3339(user.token_expires_at),
    })
}

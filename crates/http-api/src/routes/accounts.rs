//! `/register`, `/login`, `/token/refresh`, `/check-token`, `/logout`,
//! `/change-password`, `DELETE /account`.
//!
//! A login creates a device: a row holding the hash of a long-lived refresh
//! credential, which the client keeps and trades at `/token/refresh` for
//! short-lived access tokens. Every access token names its device and the
//! user's token generation; see [`crate::auth::authenticate`].

use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, SecondsFormat, Utc};
use filesync_core::db::accounts::{self, NewUser, User};
use filesync_core::db::devices::{self, Device};
use filesync_core::db::DbError;
use filesync_core::events::{Revoked, UserEvent};
use filesync_core::jwt::Grant;
use filesync_core::UserId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult, ErrorBody, ErrorCode};
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
                ApiError::Conflict { code: ErrorCode::EmailTaken, message: "an account with this email already exists" }
            }
            DbError::Conflict(_) => {
                ApiError::Conflict { code: ErrorCode::UsernameTaken, message: "this username is taken" }
            }
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
    /// How the device is listed in `GET /devices` (default "unnamed device").
    #[serde(default)]
    device_name: Option<String>,
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
    /// The device's long-lived credential for `/token/refresh`. Shown once; only its hash is kept.
    refresh_token: String,
    device_id: i64,
    user: UserJson,
}

const BAD_CREDENTIALS: ApiError =
    ApiError::Unauthorized { code: ErrorCode::InvalidCredentials, message: "email or password is incorrect" };
const WRONG_PASSWORD: ApiError = ApiError::Forbidden("the password is incorrect");
const BAD_REFRESH: ApiError = ApiError::Unauthorized {
    code: ErrorCode::InvalidRefreshToken,
    message: "this device was signed out (logged out, removed, or the password changed); log in again",
};

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The client's address for throttling: the TCP peer, or what a trusted proxy says.
fn client_ip(state: &AppState, req: &HttpRequest) -> ApiResult<std::net::IpAddr> {
    let peer = req.peer_addr().map(|a| a.ip()).ok_or_else(|| ApiError::internal("no peer address"))?;
    let forwarded = req.headers().get_all("x-forwarded-for").filter_map(|v| v.to_str().ok());
    Ok(crate::throttle::client_addr(peer, forwarded, &state.trusted_proxies))
}

fn throttled(ip: std::net::IpAddr, wait: std::time::Duration) -> ApiError {
    tracing::warn!(peer.addr = %ip, "login throttled");
    ApiError::TooManyAttempts { retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0) }
}

/// Longest device name kept.
const MAX_DEVICE_NAME_CHARS: usize = 64;

fn device_name(raw: Option<String>) -> ApiResult<String> {
    let name = raw.as_deref().map(str::trim).filter(|n| !n.is_empty()).unwrap_or("unnamed device");
    if name.chars().count() > MAX_DEVICE_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            ErrorCode::InvalidDeviceName,
            format!("device_name must be at most {MAX_DEVICE_NAME_CHARS} printable characters"),
        ));
    }
    Ok(name.to_owned())
}

/// A new device for `user` (in the caller's transaction) and its first access token.
fn new_device(
    state: &AppState,
    conn: &mut filesync_core::db::DbConn,
    user: &User,
    generation: i64,
    name: &str,
) -> Result<(LoginResponse, Device), DbError> {
    let secret = devices::new_secret();
    let device = devices::create(conn, UserId(user.id), name, &secret.hash)?;
    let grant = Grant { generation, device: device.id };
    let (token, expires_at) =
        state.jwt.issue(UserId(user.id), &user.email, grant).map_err(|e| DbError::Task(e.to_string()))?;
    let resp = LoginResponse {
        token,
        token_type: "Bearer",
        expires_at: rfc3339(expires_at),
        refresh_token: secret.secret,
        device_id: device.id,
        user: user.clone().into(),
    };
    Ok((resp, device))
}

#[utoipa::path(
    post,
    path = "/login",
    tag = "accounts",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "A new device (login): an access token for `Authorization: Bearer <token>` and the device's refresh credential", body = LoginResponse),
        (status = 401, description = "`invalid_credentials`: unknown email or wrong password (one answer for both)", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 422, description = "`invalid_request` or `invalid_device_name`", body = ErrorBody),
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
    let LoginRequest { email, password, device_name: name } = body.into_inner();
    let email = validate::normalize_email(&email);
    let name = device_name(name)?;
    let ip = client_ip(&state, &req)?;
    state.throttle.check(&email, ip, Instant::now()).map_err(|wait| throttled(ip, wait))?;
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
    state.throttle.record_success(&email, ip);
    let st = state.clone();
    let (resp, device) = state
        .db
        .write(move |conn| {
            let generation = devices::token_state(conn, UserId(user.id))?.ok_or(DbError::NotFound)?.generation;
            new_device(&st, conn, &user, generation, &name)
        })
        .await?;
    tracing::info!(user.id = device.user_id, device.id = device.id, peer.addr = %ip, "login");
    Ok(HttpResponse::Ok().json(resp))
}

#[derive(Deserialize, ToSchema)]
pub struct RefreshRequest {
    refresh_token: String,
}

#[derive(Serialize, ToSchema)]
struct RefreshResponse {
    token: String,
    /// Always `Bearer`.
    #[schema(value_type = String, example = "Bearer")]
    token_type: &'static str,
    /// RFC 3339, UTC, whole seconds.
    #[schema(format = DateTime)]
    expires_at: String,
    device_id: i64,
}

/// `POST /token/refresh {refresh_token}`: a new access token for the device holding the
/// credential. The credential itself stays the same until the device is revoked.
#[utoipa::path(
    post,
    path = "/token/refresh",
    tag = "accounts",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new access token for the device", body = RefreshResponse),
        (status = 401, description = "`invalid_refresh_token`: unknown or revoked credential", body = ErrorBody),
        (status = 422, description = "`invalid_request`", body = ErrorBody),
        JsonBodyErrors,
        ServerErrors,
    )
)]
pub async fn refresh(state: web::Data<AppState>, body: web::Json<RefreshRequest>) -> ApiResult<HttpResponse> {
    let secret = body.into_inner().refresh_token;
    if !secret.starts_with(devices::REFRESH_PREFIX) || secret.len() > 128 {
        return Err(BAD_REFRESH);
    }
    let found = state.db.write(move |conn| devices::use_secret(conn, &secret)).await?;
    let (device, email, generation) = found.ok_or(BAD_REFRESH)?;
    let user = UserId(device.user_id);
    let grant = Grant { generation, device: device.id };
    let (token, expires_at) = state.jwt.issue(user, &email, grant).map_err(ApiError::internal)?;
    tracing::debug!(user.id = %user, device.id = device.id, "access token renewed");
    Ok(HttpResponse::Ok().json(RefreshResponse {
        token,
        token_type: "Bearer",
        expires_at: rfc3339(expires_at),
        device_id: device.id,
    }))
}

/// After a revocation has committed: this process forgets what it cached at once, and the
/// bus tells the nodes (which disconnect the agents concerned) and any other listener.
pub(crate) async fn announce_revoked(state: &AppState, user: UserId, revoked: Revoked) {
    state.known_users.forget(user);
    state.bus.publish_user(user, &UserEvent::TokensRevoked { revoked }).await;
}

/// `POST /logout`: the caller's device is deleted, so this token and its refresh credential
/// are refused from now on.
#[utoipa::path(
    post,
    path = "/logout",
    tag = "accounts",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "This device is signed out: its tokens and refresh credential are refused from now on"),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn logout(state: web::Data<AppState>, user: AuthUser) -> ApiResult<HttpResponse> {
    let (id, device) = (user.id, user.device_id);
    state.db.write(move |conn| devices::delete(conn, id, device)).await?;
    announce_revoked(&state, id, Revoked::Device { device_id: device }).await;
    tracing::info!(user.id = %id, device.id = device, "logout");
    Ok(HttpResponse::NoContent().finish())
}

/// Checks the caller's password for a sensitive change, counted like a login attempt.
async fn confirm_password(state: &AppState, req: &HttpRequest, user: &AuthUser, password: String) -> ApiResult<User> {
    let ip = client_ip(state, req)?;
    state.throttle.check(&user.email, ip, Instant::now()).map_err(|wait| throttled(ip, wait))?;
    let id = user.id;
    let row = state
        .read(move |conn| Ok(accounts::user_by_id(conn, id)?))
        .await?
        .ok_or(ApiError::Unauthorized { code: ErrorCode::InvalidToken, message: "the token is not valid" })?;
    if !state.verify_password(password, Some(row.password_hash.clone())).await? {
        state.throttle.record_failure(&user.email, ip, Instant::now());
        return Err(WRONG_PASSWORD);
    }
    state.throttle.record_success(&user.email, ip);
    Ok(row)
}

#[derive(Deserialize, ToSchema)]
pub struct ChangePasswordRequest {
    current_password: String,
    new_password: String,
}

/// `POST /change-password`: every token and device credential issued before is refused; the
/// answer is a new login (token and refresh credential) for the calling device.
#[utoipa::path(
    post,
    path = "/change-password",
    tag = "accounts",
    security(("bearer" = [])),
    request_body = ChangePasswordRequest,
    responses(
        (status = 200, description = "Changed; every earlier token and device credential is refused. A new login for the calling device", body = LoginResponse),
        (status = 403, description = "`forbidden`: the current password is wrong", body = ErrorBody),
        (status = 422, description = "`invalid_request` or `invalid_password`", body = ErrorBody),
        (status = 429, description = "`too_many_attempts`", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until the next attempt is allowed"))),
        AuthErrors,
        JsonBodyErrors,
        ServerErrors,
    )
)]
pub async fn change_password(
    state: web::Data<AppState>,
    req: HttpRequest,
    user: AuthUser,
    body: web::Json<ChangePasswordRequest>,
) -> ApiResult<HttpResponse> {
    let ChangePasswordRequest { current_password, new_password } = body.into_inner();
    validate::password(&new_password)?;
    let row = confirm_password(&state, &req, &user, current_password).await?;
    let hash = state.hash_password(new_password).await?;
    let (id, device) = (user.id, user.device_id);
    let st = state.clone();
    let (resp, generation) = state
        .db
        .write(move |conn| {
            // The caller's device keeps its name under its new credential.
            let name = devices::list(conn, id)?
                .into_iter()
                .find(|d| d.id == device)
                .map_or_else(|| "unnamed device".to_owned(), |d| d.name);
            let generation = devices::change_password(conn, id, &hash)?;
            let (resp, _) = new_device(&st, conn, &row, generation, &name)?;
            Ok((resp, generation))
        })
        .await?;
    announce_revoked(&state, id, Revoked::Password { generation }).await;
    tracing::info!(user.id = %id, "password changed; earlier tokens revoked");
    Ok(HttpResponse::Ok().json(resp))
}

#[derive(Deserialize, ToSchema)]
pub struct DeleteAccountRequest {
    password: String,
}

#[derive(Serialize, ToSchema)]
struct BlockingWorkspace {
    id: i64,
    name: String,
    other_members: i64,
}

#[derive(Serialize, ToSchema)]
struct BlockedBody {
    error: BlockedDetail,
}

#[derive(Serialize, ToSchema)]
struct BlockedDetail {
    code: ErrorCode,
    message: String,
    workspaces: Vec<BlockingWorkspace>,
}

/// `DELETE /account {password}`: refused (409, listing them) while the caller owns workspaces
/// with other members; otherwise their own workspaces, memberships and devices go with it.
#[utoipa::path(
    delete,
    path = "/account",
    tag = "accounts",
    security(("bearer" = [])),
    request_body = DeleteAccountRequest,
    responses(
        (status = 204, description = "Deleted, with the caller's own workspaces, memberships and devices"),
        (status = 403, description = "`forbidden`: the password is wrong", body = ErrorBody),
        (status = 409, description = "`owns_shared_workspaces`: the caller owns workspaces with other members, listed in `error.workspaces` (`[{id, name, other_members}]`)", body = ErrorBody),
        (status = 422, description = "`invalid_request`", body = ErrorBody),
        (status = 429, description = "`too_many_attempts`", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until the next attempt is allowed"))),
        AuthErrors,
        JsonBodyErrors,
        ServerErrors,
    )
)]
pub async fn delete_account(
    state: web::Data<AppState>,
    req: HttpRequest,
    user: AuthUser,
    body: web::Json<DeleteAccountRequest>,
) -> ApiResult<HttpResponse> {
    confirm_password(&state, &req, &user, body.into_inner().password).await?;
    let id = user.id;
    let outcome = state.db.write(move |conn| devices::delete_account(conn, id)).await?;
    let deleted = match outcome {
        Ok(deleted) => deleted,
        Err(blocking) => {
            let names = blocking.iter().map(|w| format!("{:?}", w.name)).collect::<Vec<_>>().join(", ");
            return Ok(HttpResponse::Conflict().json(BlockedBody {
                error: BlockedDetail {
                    code: ErrorCode::OwnsSharedWorkspaces,
                    message: format!(
                        "you own workspaces that others are members of ({names}); delete them, or remove their \
                         members, first"
                    ),
                    workspaces: blocking
                        .into_iter()
                        .map(|w| BlockingWorkspace { id: w.id.0, name: w.name, other_members: w.others })
                        .collect(),
                },
            }));
        }
    };
    announce_revoked(&state, id, Revoked::Account).await;
    tracing::info!(user.id = %id, workspaces.deleted = deleted.len(), "account deleted");
    Ok(HttpResponse::NoContent().finish())
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

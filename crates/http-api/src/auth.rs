//! Authentication: the [`AuthUser`] extractor is the only code that reads the
//! `Authorization` header (or, without one, the web UI's session cookie
//! through [`crate::session_cookie`]). A handler that takes an `AuthUser` argument is
//! authenticated; one that does not is public. [`authenticate`] is the one
//! token check (signature, expiry, generation, device), for a token from any
//! source.

use std::time::Instant;

use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{web, FromRequest, HttpRequest};
use chrono::{DateTime, Utc};
use filesync_core::db::devices;
use filesync_core::jwt::JwtError;
use filesync_core::UserId;
use futures::future::LocalBoxFuture;

use crate::error::{ApiError, ErrorCode};
use crate::known_users::{judge, Verdict};
use crate::session_cookie;
use crate::state::AppState;

/// The caller, proven by a valid token whose user still exists.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: UserId,
    pub username: String,
    pub email: String,
    /// When the presented token expires.
    pub token_expires_at: DateTime<Utc>,
    /// The device (login) the token was issued to.
    pub device_id: i64,
}

const MISSING: ApiError = ApiError::Unauthorized {
    code: ErrorCode::MissingToken,
    message: "send the token from /login as `Authorization: Bearer <token>`",
};
const INVALID: ApiError = ApiError::Unauthorized { code: ErrorCode::InvalidToken, message: "the token is not valid" };
const EXPIRED: ApiError = ApiError::Unauthorized {
    code: ErrorCode::TokenExpired,
    message: "the token has expired; renew it at /token/refresh or log in again",
};
const REVOKED: ApiError = ApiError::Unauthorized {
    code: ErrorCode::TokenRevoked,
    message: "the token was revoked (logged out, device removed or password changed); log in again",
};

/// The token from `Bearer <token>` or, as the original client sends it, a bare `<token>`.
fn token_of(header: Option<&str>) -> Result<&str, ApiError> {
    let value = header.map(str::trim).filter(|v| !v.is_empty()).ok_or(MISSING)?;
    let token = match value.split_once(char::is_whitespace) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        Some(_) => return Err(INVALID),
        None => value,
    };
    if token.is_empty() || token.eq_ignore_ascii_case("bearer") {
        return Err(MISSING);
    }
    Ok(token)
}

/// Checks a token: signature and expiry, then that its generation is the user's and its
/// device still exists — from [`crate::known_users`] when it is fresh, so a valid token
/// costs no query. The only token check of the API: the extractor and any other source of
/// tokens (a session cookie) go through it.
pub async fn authenticate(state: &AppState, token: &str) -> Result<AuthUser, ApiError> {
    let info = state.jwt.verify(token).map_err(|e| match e {
        JwtError::Expired => EXPIRED,
        _ => INVALID,
    })?;
    let id = info.user_id;
    let verdict = match state.known_users.verdict(id, info.grant, Instant::now()) {
        Verdict::Unknown => {
            // A user deleted (or a database reset) since the token was issued makes it invalid.
            let fresh = state.read(move |conn| Ok(devices::token_state(conn, id)?)).await?.ok_or(INVALID)?;
            let verdict = judge(&fresh, info.grant);
            state.known_users.remember(id, fresh, Instant::now());
            verdict
        }
        cached => cached,
    };
    match verdict {
        Verdict::Valid { username, email } => {
            Ok(AuthUser { id, username, email, token_expires_at: info.expires_at, device_id: info.grant.device })
        }
        // Fresh from the database and still unknown: the device is gone.
        Verdict::Revoked | Verdict::Unknown => Err(REVOKED),
    }
}

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<AuthUser, ApiError>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let header = req.headers().get(AUTHORIZATION).map(|v| v.to_str().map(str::to_owned).map_err(|_| INVALID));
        // Without an Authorization header, the web UI's session cookie (CSRF-checked).
        let cookie = match (&header, &state) {
            (None, Some(state)) => session_cookie::credential(req, &state.csrf),
            _ => Ok(None),
        };
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::internal("AppState missing"))?;
            let header = header.transpose()?;
            let cookie = cookie?;
            let token = match (&header, &cookie) {
                (None, Some(cookie)) => cookie.as_str(),
                _ => token_of(header.as_deref())?,
            };
            authenticate(&state, token).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_or_bare_token() {
        assert_eq!(token_of(Some("Bearer abc.def.ghi")).unwrap(), "abc.def.ghi");
        assert_eq!(token_of(Some("bearer   abc")).unwrap(), "abc");
        assert_eq!(token_of(Some("abc.def.ghi")).unwrap(), "abc.def.ghi");
        assert!(matches!(token_of(None), Err(ApiError::Unauthorized { code: ErrorCode::MissingToken, .. })));
        assert!(matches!(token_of(Some("  ")), Err(ApiError::Unauthorized { code: ErrorCode::MissingToken, .. })));
        assert!(matches!(token_of(Some("Bearer ")), Err(ApiError::Unauthorized { code: ErrorCode::MissingToken, .. })));
        assert!(matches!(
            token_of(Some("Basic dXNlcjpwdw==")),
            Err(ApiError::Unauthorized { code: ErrorCode::InvalidToken, .. })
        ));
    }
}

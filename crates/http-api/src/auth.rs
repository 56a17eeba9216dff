//! Authentication: the [`AuthUser`] extractor is the only code that reads the
//! `Authorization` header (or, without one, the web UI's session cookie
//! through [`crate::session_cookie`]). A handler that takes an `AuthUser` argument is
//! authenticated; one that does not is public.

use std::time::Instant;

use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{web, FromRequest, HttpRequest};
use chrono::{DateTime, Utc};
use filesync_core::db::accounts;
use filesync_core::jwt::JwtError;
use filesync_core::UserId;
use futures::future::LocalBoxFuture;

use crate::error::ApiError;
use crate::known_users::KnownUser;
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
}

const MISSING: ApiError = ApiError::Unauthorized {
    code: "missing_token",
    message: "send the token from /login as `Authorization: Bearer <token>`",
};
const INVALID: ApiError = ApiError::Unauthorized { code: "invalid_token", message: "the token is not valid" };
const EXPIRED: ApiError =
    ApiError::Unauthorized { code: "token_expired", message: "the token has expired; log in again" };

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
            let info = state.jwt.verify(token).map_err(|e| match e {
                JwtError::Expired => EXPIRED,
                _ => INVALID,
            })?;
            // A token outlives nothing: a user deleted (or a database reset)
            // since it was issued makes it invalid (within `known_users::TTL`).
            let id = info.user_id;
            let user = match state.known_users.get(id, Instant::now()) {
                Some(user) => user,
                None => {
                    let row = state.read(move |conn| Ok(accounts::user_by_id(conn, id)?)).await?.ok_or(INVALID)?;
                    let user = KnownUser { username: row.username, email: row.email };
                    state.known_users.remember(id, user.clone(), Instant::now());
                    user
                }
            };
            Ok(AuthUser { id, username: user.username, email: user.email, token_expires_at: info.expires_at })
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
        assert!(matches!(token_of(None), Err(ApiError::Unauthorized { code: "missing_token", .. })));
        assert!(matches!(token_of(Some("  ")), Err(ApiError::Unauthorized { code: "missing_token", .. })));
        assert!(matches!(token_of(Some("Bearer ")), Err(ApiError::Unauthorized { code: "missing_token", .. })));
        assert!(matches!(
            token_of(Some("Basic dXNlcjpwdw==")),
            Err(ApiError::Unauthorized { code: "invalid_token", .. })
        ));
    }
}

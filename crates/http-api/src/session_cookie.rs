//! The web UI's session: the API's own access token, carried in an HttpOnly
//! cookie instead of an `Authorization` header, plus the CSRF rule that comes
//! with any cookie.
//!
//! - The cookie `filesync_session` is `HttpOnly`, `SameSite=Strict`,
//!   `Path=/`, `Secure` when the request came over TLS, and lives exactly as
//!   long as the token in it. Scripts never see the token.
//! - CSRF: a request authenticated by the cookie with any method other than
//!   GET/HEAD/OPTIONS must carry `X-CSRF-Token`, whose value is a keyed
//!   BLAKE3 hash of the session token (key derived from the JWT secret). The
//!   UI reads it from `GET /session`; another site can neither read that
//!   answer (no CORS) nor compute it. A missing or wrong header is a 403
//!   `csrf_failed`, before any handler runs.
//!
//! [`crate::auth::AuthUser`] asks [`credential`] for the token only when the
//! request has no `Authorization` header, so Bearer clients never meet the
//! CSRF rule and the same `authz` decides for both.

use actix_web::cookie::time::Duration as CookieDuration;
use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::Method;
use actix_web::HttpRequest;
use chrono::{DateTime, Utc};

use crate::error::ApiError;

/// The cookie that holds the session's access token.
pub const SESSION_COOKIE: &str = "filesync_session";
/// The cookie that holds the browser's device credential, sent only to `/session` routes.
pub const REFRESH_COOKIE: &str = "filesync_refresh";
/// Where the refresh cookie is sent.
const REFRESH_PATH: &str = "/session";
/// How long the browser keeps the refresh cookie (the credential lives until revoked).
const REFRESH_DAYS: i64 = 30;
/// The header a cookie-authenticated state-changing request must carry.
pub const CSRF_HEADER: &str = "x-csrf-token";

const CSRF_FAILED: ApiError = ApiError::Forbidden(
    "a request authenticated by the session cookie must send the X-CSRF-Token header from GET /session",
);

/// The key CSRF tokens are made with: derived from the JWT secret, so every
/// `filesync-http` behind one load balancer agrees, and it changes with it.
#[derive(Clone)]
pub struct CsrfKey([u8; 32]);

impl std::fmt::Debug for CsrfKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CsrfKey(..)")
    }
}

impl CsrfKey {
    pub fn from_jwt_secret(secret: &str) -> CsrfKey {
        CsrfKey(blake3::derive_key("filesync 2026 web UI CSRF token v1", secret.as_bytes()))
    }

    /// The CSRF token that goes with a session token.
    pub fn token_for(&self, session_token: &str) -> String {
        blake3::keyed_hash(&self.0, session_token.as_bytes()).to_hex().to_string()
    }

    /// Whether `presented` is the CSRF token of `session_token` (constant time).
    fn accepts(&self, session_token: &str, presented: &str) -> bool {
        blake3::Hash::from_hex(presented.trim())
            .is_ok_and(|h| h == blake3::keyed_hash(&self.0, session_token.as_bytes()))
    }
}

/// Methods that change nothing, which need no CSRF token.
fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The session token of the cookie, if the request has one; a state-changing
/// request must also carry the matching CSRF header.
pub fn credential(req: &HttpRequest, key: &CsrfKey) -> Result<Option<String>, ApiError> {
    let Some(cookie) = req.cookie(SESSION_COOKIE) else { return Ok(None) };
    let token = cookie.value().to_owned();
    if token.is_empty() {
        return Ok(None);
    }
    if !is_safe(req.method()) {
        let presented = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !key.accepts(&token, presented) {
            tracing::info!(http.method = %req.method(), http.path = req.path(), "CSRF check failed");
            return Err(CSRF_FAILED);
        }
    }
    Ok(Some(token))
}

/// The raw session token of the cookie, without any CSRF check (for `GET /session`).
pub fn cookie_token(req: &HttpRequest) -> Option<String> {
    req.cookie(SESSION_COOKIE).map(|c| c.value().to_owned()).filter(|t| !t.is_empty())
}

/// Whether the browser reached us over TLS (directly, or through a proxy that says so).
fn over_tls(req: &HttpRequest) -> bool {
    req.app_config().secure() || req.connection_info().scheme() == "https"
}

/// The cookie that carries `token` until `expires_at`.
pub fn session_cookie(req: &HttpRequest, token: &str, expires_at: DateTime<Utc>) -> Cookie<'static> {
    let secs = (expires_at - Utc::now()).num_seconds().max(0);
    Cookie::build(SESSION_COOKIE, token.to_owned())
        .http_only(true)
        .same_site(SameSite::Strict)
        .path("/")
        .secure(over_tls(req))
        .max_age(CookieDuration::seconds(secs))
        .finish()
}

/// The cookie that keeps the browser's device credential, for `POST /session/refresh`.
pub fn refresh_cookie(req: &HttpRequest, credential: &str) -> Cookie<'static> {
    Cookie::build(REFRESH_COOKIE, credential.to_owned())
        .http_only(true)
        .same_site(SameSite::Strict)
        .path(REFRESH_PATH)
        .secure(over_tls(req))
        .max_age(CookieDuration::days(REFRESH_DAYS))
        .finish()
}

/// The device credential of the refresh cookie, if any.
pub fn refresh_credential(req: &HttpRequest) -> Option<String> {
    req.cookie(REFRESH_COOKIE).map(|c| c.value().to_owned()).filter(|t| !t.is_empty())
}

/// The cookies that make the browser forget the session (access token and device credential).
pub fn cleared_cookies(req: &HttpRequest) -> [Cookie<'static>; 2] {
    let clear = |name: &'static str, path: &'static str| {
        let mut cookie = Cookie::build(name, "")
            .http_only(true)
            .same_site(SameSite::Strict)
            .path(path)
            .secure(over_tls(req))
            .finish();
        cookie.make_removal();
        cookie
    };
    [clear(SESSION_COOKIE, "/"), clear(REFRESH_COOKIE, REFRESH_PATH)]
}

#[cfg(test)]
mod tests {
    use actix_web::http::header;
    use actix_web::test::TestRequest;

    use super::*;

    fn key() -> CsrfKey {
        CsrfKey::from_jwt_secret("test-secret-test-secret-test-secret-0123")
    }

    #[test]
    fn csrf_token_is_bound_to_the_session_and_the_secret() {
        let k = key();
        let t = k.token_for("session-a");
        assert!(k.accepts("session-a", &t));
        assert!(!k.accepts("session-b", &t));
        assert!(!CsrfKey::from_jwt_secret("another-secret-another-secret-another").accepts("session-a", &t));
        assert!(!k.accepts("session-a", ""));
        assert!(!k.accepts("session-a", "not hex"));
    }

    #[test]
    fn cookie_requests_that_change_something_need_the_header() {
        let k = key();
        let cookie = Cookie::new(SESSION_COOKIE, "tok");
        let get = TestRequest::get().cookie(cookie.clone()).to_http_request();
        assert_eq!(credential(&get, &k).unwrap().as_deref(), Some("tok"));
        let post = TestRequest::post().cookie(cookie.clone()).to_http_request();
        assert!(matches!(credential(&post, &k), Err(ApiError::Forbidden(_))));
        let wrong = TestRequest::delete().cookie(cookie.clone()).insert_header((CSRF_HEADER, "00")).to_http_request();
        assert!(matches!(credential(&wrong, &k), Err(ApiError::Forbidden(_))));
        let right =
            TestRequest::put().cookie(cookie).insert_header((CSRF_HEADER, k.token_for("tok"))).to_http_request();
        assert_eq!(credential(&right, &k).unwrap().as_deref(), Some("tok"));
        let none = TestRequest::post().insert_header((header::AUTHORIZATION, "Bearer x")).to_http_request();
        assert_eq!(credential(&none, &k).unwrap(), None);
    }

    #[test]
    fn session_cookie_attributes() {
        let req = TestRequest::get().to_http_request();
        let c = session_cookie(&req, "tok", Utc::now() + chrono::Duration::hours(1));
        assert_eq!(c.http_only(), Some(true));
        assert_eq!(c.same_site(), Some(SameSite::Strict));
        assert_eq!(c.path(), Some("/"));
        assert_eq!(c.secure(), Some(false));
        assert!(c.max_age().unwrap().whole_seconds() > 3500);
        let tls = TestRequest::get().insert_header(("x-forwarded-proto", "https")).to_http_request();
        assert_eq!(session_cookie(&tls, "tok", Utc::now()).secure(), Some(true));
    }
}

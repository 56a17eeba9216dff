//! HS256 access tokens. The HTTP API issues them at `/login`; both daemons
//! verify them. The user is always taken from `sub`, never from anything
//! else a client says.

use chrono::{DateTime, TimeZone, Utc};
use jsonwebtoken::{decode, encode, errors::ErrorKind, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::ids::UserId;
use crate::secret::Secret;

/// The claims of a filesync token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id, as a decimal string (JWT subjects are strings).
    pub sub: String,
    pub email: String,
    pub iat: i64,
    pub exp: i64,
    /// Unique token id.
    pub jti: String,
    /// The user's token generation when it was issued: a password change raises it.
    #[serde(rename = "gen")]
    pub generation: i64,
    /// The device (login) it was issued to: a logout or a revoked device deletes it.
    #[serde(rename = "did")]
    pub device: i64,
}

/// What a token is bound to besides its user: checked against the database (or a cache of
/// it) by [`crate::db::devices::check`] and the API's `known_users`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub generation: i64,
    pub device: i64,
}

/// A verified token's facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub user_id: UserId,
    pub email: String,
    pub expires_at: DateTime<Utc>,
    pub grant: Grant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("token has expired")]
    Expired,
    #[error("token is malformed")]
    Malformed,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token could not be issued")]
    Issue,
}

/// Issues and verifies tokens with one secret.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl_secs: i64,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys").field("ttl_secs", &self.ttl_secs).finish_non_exhaustive()
    }
}

impl JwtKeys {
    pub fn new(secret: &Secret, ttl_secs: u64) -> JwtKeys {
        let bytes = secret.expose().as_bytes();
        JwtKeys {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            ttl_secs: i64::try_from(ttl_secs).unwrap_or(i64::MAX / 2),
        }
    }

    /// A new token for `user`, valid for the configured lifetime.
    pub fn issue(&self, user: UserId, email: &str, grant: Grant) -> Result<(String, DateTime<Utc>), JwtError> {
        self.issue_at(user, email, grant, Utc::now().timestamp(), self.ttl_secs)
    }

    /// The configured lifetime of an access token, in seconds.
    pub fn ttl_secs(&self) -> i64 {
        self.ttl_secs
    }

    /// A token issued at `iat` that lives `ttl_secs` (negative: already expired; for tests).
    pub fn issue_at(
        &self,
        user: UserId,
        email: &str,
        grant: Grant,
        iat: i64,
        ttl_secs: i64,
    ) -> Result<(String, DateTime<Utc>), JwtError> {
        let claims = Claims {
            sub: user.0.to_string(),
            email: email.to_owned(),
            iat,
            exp: iat.saturating_add(ttl_secs),
            jti: uuid::Uuid::new_v4().to_string(),
            generation: grant.generation,
            device: grant.device,
        };
        let token = encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(|_| JwtError::Issue)?;
        let expires_at = Utc.timestamp_opt(claims.exp, 0).single().ok_or(JwtError::Issue)?;
        Ok((token, expires_at))
    }

    /// Checks signature, algorithm and expiry.
    pub fn verify(&self, token: &str) -> Result<TokenInfo, JwtError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        // A token without `gen`/`did` (issued before revocation existed) fails to decode: malformed.
        validation.set_required_spec_claims(&["exp", "sub"]);
        let data = decode::<Claims>(token, &self.decoding, &validation).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => JwtError::Expired,
            ErrorKind::InvalidSignature => JwtError::BadSignature,
            _ => JwtError::Malformed,
        })?;
        let user_id = data.claims.sub.parse::<i64>().map_err(|_| JwtError::Malformed)?;
        let expires_at = Utc.timestamp_opt(data.claims.exp, 0).single().ok_or(JwtError::Malformed)?;
        let grant = Grant { generation: data.claims.generation, device: data.claims.device };
        Ok(TokenInfo { user_id: UserId(user_id), email: data.claims.email, expires_at, grant })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: Grant = Grant { generation: 3, device: 9 };

    fn keys(secret: &str) -> JwtKeys {
        JwtKeys::new(&Secret::new(secret), 3600)
    }

    #[test]
    fn issued_token_verifies() {
        let k = keys("0123456789abcdef0123456789abcdef");
        let (tok, exp) = k.issue(UserId(42), "a@b.c", G).unwrap();
        let info = k.verify(&tok).unwrap();
        assert_eq!(info.user_id, UserId(42));
        assert_eq!(info.email, "a@b.c");
        assert_eq!(info.expires_at, exp);
        assert_eq!(info.grant, G);
    }

    #[test]
    fn expired_wrong_key_and_garbage_are_told_apart() {
        let k = keys("0123456789abcdef0123456789abcdef");
        let (old, _) = k.issue_at(UserId(1), "a@b.c", G, Utc::now().timestamp() - 100, 10).unwrap();
        assert_eq!(k.verify(&old), Err(JwtError::Expired));
        let (other, _) = keys("ffffffffffffffffffffffffffffffff").issue(UserId(1), "a@b.c", G).unwrap();
        assert_eq!(k.verify(&other), Err(JwtError::BadSignature));
        assert_eq!(k.verify("not.a.token"), Err(JwtError::Malformed));
        assert_eq!(k.verify(""), Err(JwtError::Malformed));
    }

    #[test]
    fn a_token_without_generation_or_device_is_refused() {
        // As issued before revocable logins: correctly signed, but bound to nothing revocable.
        #[derive(Serialize)]
        struct OldClaims<'a> {
            sub: &'a str,
            email: &'a str,
            iat: i64,
            exp: i64,
            jti: &'a str,
        }
        let secret = "0123456789abcdef0123456789abcdef";
        let now = Utc::now().timestamp();
        let old = OldClaims { sub: "1", email: "a@b.c", iat: now, exp: now + 60, jti: "x" };
        let tok = encode(&Header::new(Algorithm::HS256), &old, &EncodingKey::from_secret(secret.as_bytes())).unwrap();
        assert_eq!(keys(secret).verify(&tok), Err(JwtError::Malformed));
    }

    #[test]
    fn tokens_have_unique_ids() {
        let k = keys("0123456789abcdef0123456789abcdef");
        let (a, _) = k.issue(UserId(1), "a@b.c", G).unwrap();
        let (b, _) = k.issue(UserId(1), "a@b.c", G).unwrap();
        assert_ne!(a, b);
    }
}

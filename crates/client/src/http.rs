//! The HTTP API as the client sees it: typed calls over reqwest (rustls), and
//! one error type whose message is a single line a person can act on.

use std::sync::Arc;
use std::time::Duration;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::home::{Home, SavedToken};

use filesync_core::{Role, WorkspaceId};

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot reach the server at {server}: {reason}")]
    Unreachable { server: String, reason: String },
    /// The server answered with its `{"error": {code, message}}` body (or without one: `code`
    /// is then [`ApiCode::Other`]).
    #[error("{message}")]
    Server { status: u16, code: ApiCode, message: String },
    /// The route is not there: an older server, or a feature it does not offer.
    #[error("the server at {server} does not offer {what}")]
    Unavailable { server: String, what: String },
    #[error("unexpected answer from the server ({0})")]
    Decode(String),
    #[error("invalid server URL {0:?}; expected http://HOST:PORT or https://HOST:PORT")]
    BadUrl(String),
}

/// The HTTP API's error codes (`error.code`) this client acts on, parsed when the answer
/// arrives; every other code is `Other` (the message is what the user sees). Never compared as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiCode {
    /// The access token expired: renew it and send the request again.
    TokenExpired,
    /// No such route: an older server, or a feature it does not offer.
    RouteNotFound,
    #[serde(other)]
    Other,
}

impl HttpError {
    /// The server's error code, if it answered with an error.
    pub fn code(&self) -> Option<ApiCode> {
        match self {
            HttpError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub fn is_unauthorized(&self) -> bool {
        matches!(self, HttpError::Server { status: 401, .. })
    }

    /// The server answered 404 (the workspace or the path is not there).
    pub fn is_not_found(&self) -> bool {
        matches!(self, HttpError::Server { status: 404, .. })
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: ApiCode,
    message: String,
}

/// A user as the API returns it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiUser {
    pub id: i64,
    pub username: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
}

#[derive(Clone, Deserialize)]
pub struct LoginResponse {
    pub token: String,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    pub user: ApiUser,
    /// The device's refresh credential (servers before revocable logins send none).
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub device_id: Option<i64>,
}

impl std::fmt::Debug for LoginResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginResponse").field("user", &self.user).field("device_id", &self.device_id).finish()
    }
}

impl LoginResponse {
    /// What `token.json` keeps of this login to `server`.
    pub fn saved(self, server: &str) -> SavedToken {
        SavedToken {
            server: server.to_owned(),
            token: self.token,
            expires_at: self.expires_at,
            user_id: self.user.id,
            email: self.user.email,
            username: self.user.username,
            refresh_token: self.refresh_token,
            device_id: self.device_id,
        }
    }
}

#[derive(Deserialize)]
struct RefreshResponse {
    token: String,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// One of the account's logins, as `GET /devices` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct ApiDevice {
    pub id: i64,
    pub name: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub last_used_at: chrono::DateTime<chrono::Utc>,
    #[serde(default)]
    pub current: bool,
}

/// Renew an access token that expires sooner than this.
const RENEW_MARGIN: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// A saved login that renews its own short-lived access token with the device's refresh
/// credential: before it expires, and when a server says `token_expired`. Renewed tokens are
/// written back to the home's `token.json`. Clones share one state, so concurrent users
/// renew once.
#[derive(Clone)]
pub struct Credentials {
    inner: Arc<CredInner>,
}

struct CredInner {
    /// The API without credentials, for `/token/refresh`.
    api: Api,
    home: Option<Home>,
    saved: tokio::sync::Mutex<SavedToken>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("server", &self.inner.api.base).finish_non_exhaustive()
    }
}

impl Credentials {
    /// `api` is the server without a token; `home`, if given, keeps renewed tokens.
    pub fn new(api: Api, saved: SavedToken, home: Option<Home>) -> Credentials {
        Credentials { inner: Arc::new(CredInner { api, home, saved: tokio::sync::Mutex::new(saved) }) }
    }

    /// The API at this login's server, authenticated by these credentials.
    pub fn api(&self) -> Api {
        Api { creds: Some(self.clone()), ..self.inner.api.clone() }
    }

    /// The login as saved now.
    pub async fn saved(&self) -> SavedToken {
        self.inner.saved.lock().await.clone()
    }

    /// A current access token: the saved one, or a renewed one if it expires within a minute.
    pub async fn token(&self) -> Result<String, HttpError> {
        let mut saved = self.inner.saved.lock().await;
        let expiring = saved.expires_at.is_some_and(|at| at - chrono::Utc::now() < RENEW_MARGIN);
        if expiring && saved.refresh_token.is_some() {
            self.renew_locked(&mut saved).await?;
        }
        Ok(saved.token.clone())
    }

    /// A new access token after a server refused `stale` as expired (unless another task
    /// renewed it meanwhile).
    pub async fn renew(&self, stale: &str) -> Result<String, HttpError> {
        let mut saved = self.inner.saved.lock().await;
        if saved.token == stale {
            self.renew_locked(&mut saved).await?;
        }
        Ok(saved.token.clone())
    }

    async fn renew_locked(&self, saved: &mut SavedToken) -> Result<(), HttpError> {
        let Some(refresh) = saved.refresh_token.clone() else {
            return Err(HttpError::Server {
                status: 401,
                code: ApiCode::TokenExpired,
                message: "the login has expired and this client has no refresh credential; log in again".into(),
            });
        };
        let body = serde_json::json!({ "refresh_token": refresh });
        let api = &self.inner.api;
        // Without credentials, straight to the server (not through `send`, which renews).
        let resp =
            api.send_once(api.request(reqwest::Method::POST, "/token/refresh").json(&body), "token renewal").await?;
        let fresh: RefreshResponse = resp.json().await.map_err(|e| HttpError::Decode(format!("token renewal: {e}")))?;
        saved.token = fresh.token;
        saved.expires_at = fresh.expires_at;
        if let Some(home) = &self.inner.home {
            if let Err(e) = home.save_token(saved) {
                tracing::warn!(error = %e, "cannot save the renewed token");
            }
        }
        tracing::debug!("access token renewed");
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct TokenCheck {
    #[serde(default)]
    pub user: Option<ApiUser>,
    #[serde(default)]
    pub user_id: Option<i64>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A workspace as one member sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiWorkspace {
    pub id: WorkspaceId,
    pub name: String,
    #[serde(default)]
    pub owner_id: i64,
    pub role: Role,
    #[serde(default)]
    pub owner_username: Option<String>,
    /// What it stores (servers before retention send none).
    #[serde(default)]
    pub usage: Option<ApiUsage>,
}

/// A workspace's logical bytes, from the workspace listing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiUsage {
    pub live_bytes: u64,
    pub history_bytes: u64,
    pub trash_bytes: u64,
}

/// One deleted file or folder, from `/workspaces/{id}/trash`.
#[derive(Debug, Clone, Deserialize)]
pub struct ApiTrashEntry {
    pub path: String,
    pub kind: String,
    pub deleted_version: i64,
    #[serde(default)]
    pub deleted_by: Option<String>,
    pub deleted_at: chrono::DateTime<chrono::Utc>,
    pub expires_at: chrono::DateTime<chrono::Utc>,
    #[serde(default)]
    pub size: u64,
}

/// A page of the trash.
#[derive(Debug, Clone, Deserialize)]
pub struct ApiTrash {
    pub entries: Vec<ApiTrashEntry>,
    pub trash_days: u32,
    #[serde(default)]
    pub next_before_seq: Option<i64>,
}

/// A path a trash restore brought back.
#[derive(Debug, Clone, Deserialize)]
pub struct ApiRestored {
    pub path: String,
    pub version: i64,
}

/// A workspace's retention, from `/workspaces/{id}/retention`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct ApiRetention {
    pub keep_days: u32,
    pub trash_days: u32,
    pub keep_days_is_default: bool,
    pub trash_days_is_default: bool,
}

/// A file's history: the versions kept and how many older ones expired.
#[derive(Debug, Clone, Deserialize)]
pub struct ApiHistory {
    #[serde(alias = "history")]
    pub versions: Vec<ApiVersion>,
    #[serde(default)]
    pub expired_versions: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiMember {
    #[serde(alias = "id")]
    pub user_id: i64,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub email: String,
    pub role: Role,
}

/// A workspace shared with an email that has no account yet.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiInvitation {
    pub id: i64,
    pub email: String,
    pub role: Role,
}

/// What `/add-user` did.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Shared {
    /// The email has an account: a member now.
    Member { member: ApiMember },
    /// No account yet: invited; a member once they register with this email.
    Invited { invitation: ApiInvitation },
}

/// The members of a workspace and its pending invitations (`/view-shared-users`).
#[derive(Debug, Clone, Deserialize)]
pub struct People {
    #[serde(alias = "members")]
    pub users: Vec<ApiMember>,
    #[serde(default)]
    pub invitations: Vec<ApiInvitation>,
}

/// One version of a file, from `/workspaces/{id}/history`.
#[derive(Debug, Clone, Deserialize)]
pub struct ApiVersion {
    #[serde(alias = "seq")]
    pub version: i64,
    #[serde(default)]
    pub op: String,
    #[serde(default)]
    pub size: i64,
    #[serde(default)]
    pub deleted: bool,
    #[serde(default)]
    pub author: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    /// The path after the change (a move's destination).
    #[serde(default)]
    pub path: String,
    /// A move's source.
    #[serde(default)]
    pub from_path: Option<String>,
}

/// One connected device, from `/workspaces/{id}/presence`.
#[derive(Debug, Clone, Deserialize)]
pub struct ApiPresence {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub device_id: String,
    #[serde(default)]
    pub device_name: Option<String>,
    #[serde(default, alias = "node_id")]
    pub node: Option<String>,
    #[serde(default, alias = "connected_at")]
    pub since: Option<String>,
}

/// The HTTP API at one base URL, with or without a token.
#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
    /// Renewing credentials; when set, `token` is unused.
    creds: Option<Credentials>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("base", &self.base)
            .field("authenticated", &(self.token.is_some() || self.creds.is_some()))
            .finish()
    }
}

impl Api {
    pub fn new(base: &str, token: Option<String>) -> Result<Api, HttpError> {
        Api::with_trust(base, token, &crate::tls::Trust::system())
    }

    /// [`Api::new`] trusting `trust`'s extra CAs (`--ca FILE`) besides the system's for `https://`.
    pub fn with_trust(base: &str, token: Option<String>, trust: &crate::tls::Trust) -> Result<Api, HttpError> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) || base.len() <= "https://".len() {
            return Err(HttpError::BadUrl(base));
        }
        let extra = trust.extra_roots().iter().map(|der| reqwest::Certificate::from_der(der.as_ref()));
        let extra = extra
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| HttpError::Unreachable { server: base.clone(), reason: e.to_string() })?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .tls_certs_merge(extra)
            .build()
            .map_err(|e| HttpError::Unreachable { server: base.clone(), reason: e.to_string() })?;
        Ok(Api { base, http, token, creds: None })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{}", self.base, path));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Sends `req` with the credentials' current token; a `token_expired` answer renews the
    /// token and sends the request once more.
    async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> Result<reqwest::Response, HttpError> {
        let Some(creds) = &self.creds else { return self.send_once(req, what).await };
        let retry = req.try_clone();
        let token = creds.token().await?;
        match self.send_once(req.bearer_auth(&token), what).await {
            Err(e) if e.code() == Some(ApiCode::TokenExpired) => match retry {
                Some(retry) => {
                    let token = creds.renew(&token).await?;
                    self.send_once(retry.bearer_auth(token), what).await
                }
                None => Err(e),
            },
            other => other,
        }
    }

    async fn send_once(&self, req: reqwest::RequestBuilder, what: &str) -> Result<reqwest::Response, HttpError> {
        let resp = req
            .send()
            .await
            .map_err(|e| HttpError::Unreachable { server: self.base.clone(), reason: root_cause(&e) })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let bytes = resp.bytes().await.unwrap_or_default();
        let unavailable = || HttpError::Unavailable { server: self.base.clone(), what: what.to_owned() };
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            // The route itself is missing (an older server, or a feature it does not offer).
            Ok(body)
                if body.error.code == ApiCode::RouteNotFound || status == reqwest::StatusCode::METHOD_NOT_ALLOWED =>
            {
                Err(unavailable())
            }
            Ok(body) => {
                Err(HttpError::Server { status: status.as_u16(), code: body.error.code, message: body.error.message })
            }
            Err(_) if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::METHOD_NOT_ALLOWED => {
                Err(unavailable())
            }
            Err(_) => Err(HttpError::Server {
                status: status.as_u16(),
                code: ApiCode::Other,
                message: format!("the server answered {status}"),
            }),
        }
    }

    async fn json<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder, what: &str) -> Result<T, HttpError> {
        let resp = self.send(req, what).await?;
        resp.json::<T>().await.map_err(|e| HttpError::Decode(format!("{what}: {e}")))
    }

    pub async fn register(&self, body: &RegisterRequest<'_>) -> Result<ApiUser, HttpError> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Reg {
            Wrapped { user: ApiUser },
            Plain(ApiUser),
        }
        let reg: Reg = self.json(self.request(reqwest::Method::POST, "/register").json(body), "registration").await?;
        Ok(match reg {
            Reg::Wrapped { user } | Reg::Plain(user) => user,
        })
    }

    pub async fn login(&self, email: &str, password: &str, device_name: &str) -> Result<LoginResponse, HttpError> {
        let body = serde_json::json!({ "email": email, "password": password, "device_name": device_name });
        self.json(self.request(reqwest::Method::POST, "/login").json(&body), "login").await
    }

    /// Signs this login out on the server: its token and refresh credential stop working.
    pub async fn logout(&self) -> Result<(), HttpError> {
        self.send(self.request(reqwest::Method::POST, "/logout"), "logout").await?;
        Ok(())
    }

    /// Changes the password; every other login is signed out. The answer is this device's new login.
    pub async fn change_password(&self, current: &str, new: &str) -> Result<LoginResponse, HttpError> {
        let body = serde_json::json!({ "current_password": current, "new_password": new });
        self.json(self.request(reqwest::Method::POST, "/change-password").json(&body), "password changes").await
    }

    pub async fn devices(&self) -> Result<Vec<ApiDevice>, HttpError> {
        #[derive(Deserialize)]
        struct List {
            devices: Vec<ApiDevice>,
        }
        let list: List = self.json(self.request(reqwest::Method::GET, "/devices"), "device lists").await?;
        Ok(list.devices)
    }

    pub async fn revoke_device(&self, id: i64) -> Result<(), HttpError> {
        self.send(self.request(reqwest::Method::DELETE, &format!("/devices/{id}")), "device revocation").await?;
        Ok(())
    }

    pub async fn check_token(&self) -> Result<TokenCheck, HttpError> {
        self.json(self.request(reqwest::Method::GET, "/check-token"), "token checks").await
    }

    /// The user's workspaces, with what each stores.
    pub async fn workspaces(&self) -> Result<Vec<ApiWorkspace>, HttpError> {
        self.list_workspaces(true).await
    }

    /// The user's workspaces without their usage: what it costs the server does not grow with the
    /// workspaces' journals (the agent's start, resolving a name).
    pub async fn workspace_names(&self) -> Result<Vec<ApiWorkspace>, HttpError> {
        self.list_workspaces(false).await
    }

    async fn list_workspaces(&self, usage: bool) -> Result<Vec<ApiWorkspace>, HttpError> {
        #[derive(Deserialize)]
        struct List {
            workspaces: Vec<ApiWorkspace>,
        }
        let req = self.request(reqwest::Method::GET, "/workspaces").query(&[("usage", usage)]);
        let list: List = self.json(req, "workspace lists").await?;
        Ok(list.workspaces)
    }

    pub async fn create_workspace(&self, name: &str) -> Result<ApiWorkspace, HttpError> {
        #[derive(Deserialize)]
        struct Created {
            workspace: ApiWorkspace,
        }
        let body = serde_json::json!({ "name": name });
        let created: Created =
            self.json(self.request(reqwest::Method::POST, "/create-workspace").json(&body), "workspaces").await?;
        Ok(created.workspace)
    }

    /// Shares `ws` with `email`: a member at once if the email has an account, else a pending
    /// invitation that becomes membership when that email registers.
    pub async fn add_user(&self, ws: WorkspaceId, email: &str, role: Role) -> Result<Shared, HttpError> {
        let body = serde_json::json!({ "workspace_id": ws, "email": email, "role": role });
        self.json(self.request(reqwest::Method::POST, "/add-user").json(&body), "sharing").await
    }

    pub async fn members(&self, ws: WorkspaceId) -> Result<Vec<ApiMember>, HttpError> {
        Ok(self.people(ws).await?.users)
    }

    /// The members of `ws` and its pending invitations.
    pub async fn people(&self, ws: WorkspaceId) -> Result<People, HttpError> {
        let path = format!("/view-shared-users?workspace_id={ws}");
        self.json(self.request(reqwest::Method::GET, &path), "member lists").await
    }

    /// Gives a member another role (owner only).
    pub async fn set_role(&self, ws: WorkspaceId, user_id: i64, role: Role) -> Result<ApiMember, HttpError> {
        #[derive(Deserialize)]
        struct Changed {
            member: ApiMember,
        }
        let body = serde_json::json!({ "role": role });
        let req = self.request(reqwest::Method::PUT, &format!("/workspaces/{ws}/members/{user_id}")).json(&body);
        let changed: Changed = self.json(req, "changing roles").await?;
        Ok(changed.member)
    }

    /// Removes a member (owner), or leaves (`user_id` is the caller's own).
    pub async fn remove_member(&self, ws: WorkspaceId, user_id: i64) -> Result<(), HttpError> {
        let req = self.request(reqwest::Method::DELETE, &format!("/workspaces/{ws}/members/{user_id}"));
        self.send(req, "removing members").await?;
        Ok(())
    }

    pub async fn cancel_invitation(&self, ws: WorkspaceId, invitation_id: i64) -> Result<(), HttpError> {
        let req = self.request(reqwest::Method::DELETE, &format!("/workspaces/{ws}/invitations/{invitation_id}"));
        self.send(req, "cancelling invitations").await?;
        Ok(())
    }

    pub async fn rename_workspace(&self, ws: WorkspaceId, name: &str) -> Result<(), HttpError> {
        let body = serde_json::json!({ "name": name });
        self.send(self.request(reqwest::Method::PATCH, &format!("/workspaces/{ws}")).json(&body), "renaming").await?;
        Ok(())
    }

    pub async fn delete_workspace(&self, ws: WorkspaceId) -> Result<(), HttpError> {
        self.send(self.request(reqwest::Method::DELETE, &format!("/workspaces/{ws}")), "deleting workspaces").await?;
        Ok(())
    }

    pub async fn history(&self, ws: WorkspaceId, path: &str) -> Result<ApiHistory, HttpError> {
        let req = self.request(reqwest::Method::GET, &format!("/workspaces/{ws}/history")).query(&[("path", path)]);
        self.json(req, "file history").await
    }

    /// A page of the trash, newest first, deleted before seq `before`.
    pub async fn trash(&self, ws: WorkspaceId, before: Option<i64>, limit: u32) -> Result<ApiTrash, HttpError> {
        let mut req = self.request(reqwest::Method::GET, &format!("/workspaces/{ws}/trash")).query(&[("limit", limit)]);
        if let Some(before) = before {
            req = req.query(&[("before_seq", before)]);
        }
        self.json(req, "the trash").await
    }

    /// Restores `path` (a folder: everything under it) from the trash.
    pub async fn trash_restore(&self, ws: WorkspaceId, path: &str) -> Result<Vec<ApiRestored>, HttpError> {
        #[derive(Deserialize)]
        struct Done {
            restored: Vec<ApiRestored>,
        }
        let body = serde_json::json!({ "path": path });
        let req = self.request(reqwest::Method::POST, &format!("/workspaces/{ws}/trash/restore")).json(&body);
        let done: Done = self.json(req, "the trash").await?;
        Ok(done.restored)
    }

    pub async fn retention(&self, ws: WorkspaceId) -> Result<ApiRetention, HttpError> {
        self.json(self.request(reqwest::Method::GET, &format!("/workspaces/{ws}/retention")), "retention settings")
            .await
    }

    /// Sets the workspace's retention (owner only); `None` is the server's default.
    pub async fn set_retention(
        &self,
        ws: WorkspaceId,
        keep_days: Option<u32>,
        trash_days: Option<u32>,
    ) -> Result<ApiRetention, HttpError> {
        let body = serde_json::json!({ "keep_days": keep_days, "trash_days": trash_days });
        let req = self.request(reqwest::Method::PUT, &format!("/workspaces/{ws}/retention")).json(&body);
        self.json(req, "retention settings").await
    }

    pub async fn restore(&self, ws: WorkspaceId, path: &str, version: i64) -> Result<serde_json::Value, HttpError> {
        let body = serde_json::json!({ "path": path, "version": version });
        self.json(self.request(reqwest::Method::POST, &format!("/workspaces/{ws}/restore")).json(&body), "restoring")
            .await
    }

    /// The connected devices, or `None` when the server cannot see presence (it runs without Redis).
    pub async fn presence(&self, ws: WorkspaceId) -> Result<Option<Vec<ApiPresence>>, HttpError> {
        #[derive(Deserialize)]
        struct List {
            #[serde(default)]
            source: Option<String>,
            devices: Vec<ApiPresence>,
        }
        let list: List =
            self.json(self.request(reqwest::Method::GET, &format!("/workspaces/{ws}/presence")), "presence").await?;
        Ok((list.source.as_deref() != Some("none")).then_some(list.devices))
    }
}

#[derive(Debug, Serialize)]
pub struct RegisterRequest<'a> {
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub username: &'a str,
    pub email: &'a str,
    pub password: &'a str,
}

/// The innermost cause of a transport error ("Connection refused"), which is what a person needs to read.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    let reason = cur.to_string();
    // rustls's wording for a certificate that did not verify (unknown issuer, wrong name, expired).
    if reason.contains("invalid peer certificate") {
        format!("{reason}; pass --ca FILE if the server's certificate is signed by a private CA")
    } else {
        reason
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_error_codes_arrive_typed() {
        let parse = |code: &str| {
            let body = format!(r#"{{"error": {{"code": "{code}", "message": "m"}}}}"#);
            serde_json::from_str::<ErrorBody>(&body).unwrap().error.code
        };
        assert_eq!(parse("token_expired"), ApiCode::TokenExpired);
        assert_eq!(parse("route_not_found"), ApiCode::RouteNotFound);
        // A code the client does not act on (or a newer server's) still parses; the message is shown.
        assert_eq!(parse("workspace_not_found"), ApiCode::Other);
        assert_eq!(parse("something_new"), ApiCode::Other);
    }
}

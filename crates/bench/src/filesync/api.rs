//! The few HTTP API calls the harness makes to set up users and workspaces.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use reqwest::blocking::Client;
use serde_json::{json, Value};

/// A registered, logged-in user.
#[derive(Debug, Clone)]
pub struct User {
    pub email: String,
    pub password: String,
    pub token: String,
}

pub struct Api {
    base: String,
    http: Client,
}

impl Api {
    pub fn new(base: String) -> Result<Api> {
        // Logins at the production bcrypt cost take a while on a busy machine.
        let http = Client::builder().no_proxy().timeout(Duration::from_secs(120)).build()?;
        Ok(Api { base, http })
    }

    fn post(&self, path: &str, token: Option<&str>, body: Value) -> Result<Value> {
        let mut req = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().with_context(|| format!("POST {path}"))?;
        let status = resp.status();
        let text = resp.text().unwrap_or_default();
        if !status.is_success() {
            bail!("POST {path}: {status}: {text}");
        }
        serde_json::from_str(&text).with_context(|| format!("POST {path}: not JSON: {text}"))
    }

    /// Registers `name@bench.test` and logs in.
    pub fn user(&self, name: &str) -> Result<User> {
        let email = format!("{name}@bench.test");
        let password = format!("bench-{name}-{:016x}", rand::random::<u64>());
        self.post(
            "/register",
            None,
            json!({ "first_name": "Bench", "last_name": "User", "username": name, "email": email, "password": password }),
        )?;
        let token = self.login(&email, &password)?;
        Ok(User { email, password, token })
    }

    pub fn login(&self, email: &str, password: &str) -> Result<String> {
        let v = self.post("/login", None, json!({ "email": email, "password": password }))?;
        Ok(v["token"].as_str().context("no token in /login answer")?.to_owned())
    }

    /// Creates a workspace owned by `owner`; returns its id.
    pub fn workspace(&self, owner: &User, name: &str) -> Result<i64> {
        let v = self.post("/create-workspace", Some(&owner.token), json!({ "name": name }))?;
        v["workspace"]["id"].as_i64().context("no workspace id in /create-workspace answer")
    }

    /// Makes `member` an editor of `workspace`.
    pub fn share(&self, owner: &User, workspace: i64, member: &User) -> Result<()> {
        self.post(
            "/add-user",
            Some(&owner.token),
            json!({ "workspace_id": workspace, "email": member.email, "role": "editor" }),
        )?;
        Ok(())
    }
}

//! Test harness: a real `filesync-http` server through the `run` seam, on
//! 127.0.0.1:0, against its own fresh database (MariaDB or SQLite).

#![allow(dead_code)] // each test file uses a different part

use std::net::IpAddr;
use std::time::Duration;

use filesync_core::config::Config;
use filesync_core::db::Backend;
use filesync_core::secret::Secret;
use filesync_core::testing::TestDb;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const SECRET: &str = "test-secret-test-secret-test-secret-0123";
/// Longest any single test story may take before it counts as hung.
pub const STORY_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Server {
    pub base: String,
    pub backend: Backend,
    pub db: TestDb,
    client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

/// A config for tests: bcrypt cost 4, a fixed secret, the database given.
pub fn test_config(db: &TestDb, dir: &std::path::Path) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        database_url: Some(db.url().to_owned()),
        db_pool_size: 4,
        jwt_secret: Secret::new(SECRET),
        bcrypt_cost: 4,
        ..Config::default()
    }
}

pub fn client_from(ip: Option<IpAddr>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
    if let Some(ip) = ip {
        builder = builder.local_address(ip);
    }
    builder.build().expect("http client")
}

impl Server {
    /// Starts a server on a fresh database of `backend`, config adjusted by `tweak`.
    pub async fn start(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Server {
        let db = tokio::task::spawn_blocking(move || TestDb::new(backend)).await.expect("test db");
        Server::start_on(db, tweak).await
    }

    /// Starts a server on an existing database.
    pub async fn start_on(db: TestDb, tweak: impl FnOnce(&mut Config)) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(&db, dir.path());
        tweak(&mut config);
        // With a certificate configured, talk HTTPS and trust exactly that certificate.
        let (scheme, client) = match &config.tls_cert {
            Some(cert) => {
                let pem = std::fs::read(cert).expect("read test certificate");
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("PEM"))
                    .build()
                    .expect("https client");
                ("https", client)
            }
            None => ("http", client_from(None)),
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("{scheme}://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(filesync_http_api::run(listener, config, async {
            let _ = rx.await;
        }));
        let server =
            Server { base, backend: db.backend(), db, client, shutdown: Some(tx), task: Some(task), _dir: dir };
        server.wait_ready().await;
        server
    }

    /// Waits (bounded) until `/readyz` answers 200; startup includes migrations.
    async fn wait_ready(&self) {
        for _ in 0..300 {
            if let Ok(res) = self.client.get(format!("{}/readyz", self.base)).send().await {
                if res.status() == StatusCode::OK {
                    return;
                }
            }
            if self.task.as_ref().is_some_and(|t| t.is_finished()) {
                panic!("server exited during startup");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("server did not become ready");
    }

    /// Graceful stop; returns what `run` returned.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let task = self.task.take().expect("running");
        tokio::time::timeout(Duration::from_secs(30), task).await.expect("server stops in time").expect("join")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let res = req.send().await.expect("request");
        let status = res.status();
        let text = res.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
        (status, body)
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.post_from(&self.client, path, token, body).await
    }

    pub async fn post_from(
        &self,
        client: &reqwest::Client,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> (StatusCode, Value) {
        let mut req = client.post(self.url(path)).json(&body);
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        self.send(req).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut req = self.client.get(self.url(path));
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        self.send(req).await
    }

    pub fn raw(&self) -> &reqwest::Client {
        &self.client
    }

    /// Registers `username` (email `<username>@example.com`, password
    /// `password-<username>`) and logs in; returns (user id, token).
    pub async fn user(&self, username: &str) -> (i64, String) {
        let email = format!("{username}@example.com");
        let password = format!("password-{username}");
        let (status, body) = self
            .post(
                "/register",
                None,
                json!({"first_name": "First", "last_name": "Last", "username": username, "email": email, "password": password}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, login) = self.post("/login", None, json!({"email": email, "password": password})).await;
        assert_eq!(status, StatusCode::OK, "{login}");
        (body["user"]["id"].as_i64().expect("id"), login["token"].as_str().expect("token").to_owned())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A test that panicked still stops its server.
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Owner alice, editor dave, viewer bob, outsider carol, one workspace.
pub struct People {
    pub alice: String,
    pub dave: String,
    pub bob: String,
    pub carol: String,
    pub ws: i64,
}

pub async fn people(srv: &Server) -> People {
    let alice = srv.user("alice").await.1;
    let bob = srv.user("bob").await.1;
    let carol = srv.user("carol").await.1;
    let dave = srv.user("dave").await.1;
    let (status, body) = srv.post("/create-workspace", Some(&alice), json!({"name": "Team"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let ws = body["workspace"]["id"].as_i64().unwrap();
    for (email, role) in [("bob@example.com", "viewer"), ("dave@example.com", "editor")] {
        let (status, body) =
            srv.post("/add-user", Some(&alice), json!({"workspace_id": ws, "email": email, "role": role})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    People { alice, dave, bob, carol, ws }
}

/// `s` percent-encoded for a query string (`/` kept, as paths read better with it).
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Asserts an error response: status and the stable `code`.
#[track_caller]
pub fn assert_error(res: &(StatusCode, Value), status: u16, code: &str) {
    assert_eq!(res.0.as_u16(), status, "{}", res.1);
    assert_eq!(res.1["error"]["code"], code, "{}", res.1);
    assert!(res.1["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", res.1);
}

/// Runs `story` on SQLite, then on MariaDB, each on a fresh server and database.
pub async fn on_both_backends<F, Fut>(mut story: F)
where
    F: FnMut(Backend) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for backend in [Backend::Sqlite, Backend::Mysql] {
        tokio::time::timeout(STORY_TIMEOUT, story(backend))
            .await
            .unwrap_or_else(|_| panic!("story timed out on {backend:?}"));
    }
}

//! Starting `filesync-server` as a process on free ports, for the tests.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary on free ports; returns it with the two printed addresses.
pub fn start(data: &std::path::Path) -> (Server, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_filesync-server"))
        .arg("--data-dir")
        .arg(data)
        .env("FILESYNC_HTTP_ADDR", "127.0.0.1:0")
        .env("FILESYNC_TCP_ADDR", "127.0.0.1:0")
        .env("FILESYNC_TCP_ADMIN_ADDR", "127.0.0.1:0")
        .env("FILESYNC_BCRYPT_COST", "4")
        .env_remove("FILESYNC_JWT_SECRET")
        .env_remove("FILESYNC_DATABASE_URL")
        .env_remove("FILESYNC_REDIS_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start filesync-server");
    let stdout = child.stdout.take().expect("stdout");
    let server = Server(child);
    let (mut http, mut sync) = (None, None);
    let mut printed = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read stdout");
        printed.push_str(&line);
        printed.push('\n');
        if let Some(rest) = line.trim().strip_prefix("HTTP API:") {
            http = Some(rest.trim().to_owned());
        }
        if let Some(rest) = line.trim().strip_prefix("sync node:") {
            sync = Some(rest.trim().to_owned());
        }
        if line.trim_start().starts_with("filesync ") && line.contains(" sync") && line.trim_end().ends_with("sync") {
            break;
        }
    }
    assert!(printed.contains("register") && printed.contains("workspace create"), "{printed}");
    (server, http.expect("HTTP address printed"), sync.expect("sync address printed"))
}

#[allow(dead_code)] // not every test file uses it
/// Registers `name` (`<name>@example.com`) and logs in; returns the user id and the token.
pub async fn user(web: &reqwest::Client, http: &str, name: &str) -> (i64, String) {
    let email = format!("{name}@example.com");
    let reg = web
        .post(format!("{http}/register"))
        .json(&serde_json::json!({"first_name": name, "last_name": "Test", "username": name, "email": email,
                                  "password": "long enough"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reg.status(), 201);
    let login: serde_json::Value = web
        .post(format!("{http}/login"))
        .json(&serde_json::json!({"email": email, "password": "long enough"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (login["user"]["id"].as_i64().unwrap_or_default(), login["token"].as_str().expect("token").to_owned())
}

#[allow(dead_code)] // not every test file uses it
/// A protocol connection to the node as `device`, handshake done.
pub async fn connect(
    sync: &str,
    token: &str,
    device: &str,
) -> (filesync_proto_client::Client, filesync_proto_client::Events) {
    let options = filesync_proto_client::ConnectOptions::new(token, device, device);
    tokio::time::timeout(std::time::Duration::from_secs(10), filesync_proto_client::Client::connect(sync, options))
        .await
        .expect("connect in time")
        .expect("handshake accepted")
}

#[allow(dead_code)] // not every test file uses it
/// Creates the workspace `name` owned by the token's user; returns its id.
pub async fn create_workspace(
    web: &reqwest::Client,
    http: &str,
    token: &str,
    name: &str,
) -> filesync_core::WorkspaceId {
    let ws: serde_json::Value = web
        .post(format!("{http}/create-workspace"))
        .bearer_auth(token)
        .json(&serde_json::json!({"name": name}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    filesync_core::WorkspaceId(ws["workspace"]["id"].as_i64().expect("workspace id"))
}

//! The README's first command: `filesync-server` from an empty data dir
//! serves the HTTP API and a sync node that accepts the API's tokens, prints
//! both addresses, and stops cleanly on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use filesync_client::{Client, ConnectOptions};
use filesync_core::WorkspaceId;
use serde_json::{json, Value};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary on free ports; returns it with the two printed addresses.
fn start(data: &std::path::Path) -> (Server, String, String) {
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

#[tokio::test(flavor = "multi_thread")]
async fn one_command_serves_api_and_sync_node_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut server, http, sync) = start(&data);
    let web = reqwest::Client::new();

    let ok = web.get(format!("{http}/readyz")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let reg = web
        .post(format!("{http}/register"))
        .json(&json!({"first_name": "Ann", "last_name": "Lee", "username": "ann", "email": "ann@example.com", "password": "long enough"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reg.status(), 201);
    let login: Value = web
        .post(format!("{http}/login"))
        .json(&json!({"email": "ann@example.com", "password": "long enough"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().expect("token").to_owned();
    let ws: Value = web
        .post(format!("{http}/create-workspace"))
        .bearer_auth(&token)
        .json(&json!({"name": "Docs"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ws = WorkspaceId(ws["workspace"]["id"].as_i64().expect("workspace id"));

    // The node accepts the token the API issued: both use the generated secret.
    let (client, _events) = tokio::time::timeout(
        Duration::from_secs(10),
        Client::connect(sync.as_str(), ConnectOptions::new(&token, "d1", "laptop")),
    )
    .await
    .expect("connect in time")
    .expect("handshake accepted");
    let src = dir.path().join("hello.txt");
    std::fs::write(&src, b"hello from the one-command server").unwrap();
    let done = client.put_file(ws, "hello.txt", &src, 0).await.expect("upload");
    let copy = dir.path().join("copy.txt");
    client.download(ws, done.seq, &copy).await.expect("download");
    assert_eq!(std::fs::read(&copy).unwrap(), b"hello from the one-command server");
    // The generated secret is kept for the next start.
    assert!(data.join("jwt_secret").exists());

    // SIGTERM: a clean exit.
    let pid = server.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "filesync-server did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
}

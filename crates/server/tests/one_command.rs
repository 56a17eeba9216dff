//! The README's first command: `filesync-server` from an empty data dir
//! serves the HTTP API and a sync node that accepts the API's tokens, prints
//! both addresses, and stops cleanly on SIGTERM.

use std::process::Command;
use std::time::Duration;

use filesync_proto_client::{Client, ConnectOptions};
use serde_json::{json, Value};
use support::{create_workspace, start};

mod support;

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
    let ws = create_workspace(&web, &http, &token, "Docs").await;

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

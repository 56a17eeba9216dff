//! Credentials across the whole system: the HTTP API, sync nodes and real
//! agents. An agent whose access token expired while it was away renews it by
//! itself; a logout, a password change or a revoked device reaches the nodes
//! at once, and the agents concerned stop with one clear line.

mod support;

use std::time::Duration;

use filesync_core::db::Backend;
use filesync_core::proto::ErrorCode;
use filesync_proto_client::{Client, ConnectOptions, Event};
use serde_json::{json, Value};

use support::{eventually, tree, Stack};

const WAIT: Duration = Duration::from_secs(30);

async fn api_login(stack: &Stack, email: &str, password: &str, device: &str) -> Value {
    let res = reqwest::Client::new()
        .post(format!("{}/login", stack.http.addr))
        .json(&json!({"email": email, "password": password, "device_name": device}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

async fn api_call(stack: &Stack, method: reqwest::Method, path: &str, token: &str, body: Option<Value>) -> u16 {
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", stack.http.addr)).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap().status().as_u16()
}

/// Connects; a refusal is the node's code (`None`: not a refusal, e.g. the I/O failed).
async fn connect(
    stack: &Stack,
    token: &str,
    device: &str,
) -> Result<(Client, filesync_proto_client::Events), Option<ErrorCode>> {
    let opts = ConnectOptions::new(token, device, device);
    match tokio::time::timeout(WAIT, Client::connect_to(&stack.node_addrs()[0], opts)).await.expect("in time") {
        Ok(pair) => Ok(pair),
        Err(e) => Err(e.code()),
    }
}

/// True if the connection still answers (a request the node refuses, but answers).
async fn alive(client: &Client) -> bool {
    let answer = client.subscribe(filesync_core::WorkspaceId(i64::MAX), 0).await;
    matches!(answer, Err(filesync_proto_client::ClientError::Server { .. }))
}

/// Waits for the connection to be closed by the node and returns the code of its last error.
async fn closed(events: &mut filesync_proto_client::Events) -> Option<ErrorCode> {
    tokio::time::timeout(WAIT, async {
        loop {
            match events.next().await {
                Some(Event::Closed { code, .. }) => return code,
                None => return None,
                Some(_) => {}
            }
        }
    })
    .await
    .expect("the node closes the connection")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_renews_an_expired_access_token_by_itself() {
    for backend in [Backend::Sqlite, Backend::Mysql] {
        // Access tokens live two seconds: every reconnect below happens with an expired one.
        let stack = Stack::start_with(backend, 1, |c| c.jwt_ttl_secs = 2).await;
        let alice = stack.cli("alice", &stack.node_addrs());
        alice.register("alice").await;
        let folder = stack.dir.path().join("alice-docs");
        alice.ok(&["workspace", "create", "docs", folder.to_str().unwrap(), "--no-sync"], None).await;
        std::fs::write(folder.join("notes.txt"), b"written while the token expired").unwrap();
        let saved = |cli: &support::Cli| -> Value {
            serde_json::from_slice(&std::fs::read(cli.home.join("token.json")).unwrap()).unwrap()
        };
        let before = saved(&alice);
        assert!(before["refresh_token"].as_str().is_some_and(|r| r.starts_with("fsr1_")), "{before}");
        tokio::time::sleep(Duration::from_secs(3)).await;

        // The agent reconnects with an expired token: it renews and syncs, no `login`.
        alice.ok(&["sync", "--once", "--no-progress", "--no-notify"], None).await;
        let after = saved(&alice);
        assert_ne!(after["token"], before["token"], "the renewed token is saved");
        assert_eq!(after["refresh_token"], before["refresh_token"]);
        // The CLI's HTTP calls renew too, and the server has the file.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let copy = stack.dir.path().join("copy");
        alice.ok(&["workspace", "download", "docs", copy.to_str().unwrap()], None).await;
        assert_eq!(tree(&copy), tree(&folder));
        assert_eq!(std::fs::read(copy.join("notes.txt")).unwrap(), b"written while the token expired");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_tokens_are_refused_by_nodes_and_close_live_connections() {
    for backend in [Backend::Sqlite, Backend::Mysql] {
        let stack = Stack::start(backend, 1).await;
        let alice = stack.cli("alice", &stack.node_addrs());
        alice.register("alice").await;
        let bob = stack.cli("bob", &stack.node_addrs());
        bob.register("bob").await;
        let revoked = Some(ErrorCode::TokenRevoked);

        // A logout: that token's live connection is closed, and it is refused at handshake.
        let x = api_login(&stack, "alice@example.com", "password-alice", "x").await;
        let y = api_login(&stack, "alice@example.com", "password-alice", "y").await;
        let (tx, ty) = (x["token"].as_str().unwrap(), y["token"].as_str().unwrap());
        let (_cx, mut ex) = connect(&stack, tx, "x").await.expect("x connects");
        let (cy, mut ey) = connect(&stack, ty, "y").await.expect("y connects");
        assert_eq!(api_call(&stack, reqwest::Method::POST, "/logout", tx, None).await, 204);
        let last = closed(&mut ex).await;
        assert_eq!(last, revoked);
        assert_eq!(connect(&stack, tx, "x").await.err(), Some(revoked));
        assert_eq!(api_call(&stack, reqwest::Method::GET, "/check-token", tx, None).await, 401);
        // The other login of the same user is untouched.
        assert!(alive(&cy).await, "y is still connected");

        // A password change: every earlier token is closed and refused, on the API and the node.
        let fresh_login = {
            let res = reqwest::Client::new()
                .post(format!("{}/change-password", stack.http.addr))
                .bearer_auth(ty)
                .json(&json!({"current_password": "password-alice", "new_password": "new-password-alice"}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            res.json::<Value>().await.unwrap()
        };
        let last = closed(&mut ey).await;
        assert_eq!(last, revoked);
        assert_eq!(connect(&stack, ty, "y").await.err(), Some(revoked));
        assert_eq!(api_call(&stack, reqwest::Method::GET, "/check-token", ty, None).await, 401);
        // The CLI's saved login (issued before the change) is refused too.
        let out = alice.fails(&["workspace", "list"], None).await;
        assert!(out.contains("log in again"), "{out}");
        let fresh = fresh_login["token"].as_str().unwrap();
        let (cf, _ef) = connect(&stack, fresh, "z").await.expect("the new token connects");
        assert!(alive(&cf).await);

        // A revoked device: bob's running agent is disconnected and stops with one clear line.
        let folder = stack.dir.path().join("bob-docs");
        bob.ok(&["workspace", "create", "bobs", folder.to_str().unwrap(), "--no-sync"], None).await;
        let mut agent = bob.spawn_sync();
        let log = agent.log.clone();
        eventually("bob's agent connects", WAIT, || {
            std::fs::read_to_string(&log).unwrap_or_default().contains("connected")
        })
        .await;
        let saved: Value = serde_json::from_slice(&std::fs::read(bob.home.join("token.json")).unwrap()).unwrap();
        let device = saved["device_id"].as_i64().expect("device id saved");
        let other = api_login(&stack, "bob@example.com", "password-bob", "phone").await;
        let path = format!("/devices/{device}");
        assert_eq!(api_call(&stack, reqwest::Method::DELETE, &path, other["token"].as_str().unwrap(), None).await, 204);
        let status = agent.wait(WAIT).await.expect("the agent stops by itself");
        assert!(!status.success());
        let text = agent.log_text();
        assert_eq!(text.matches("filesync login").count(), 1, "said once: {text}");
        assert!(text.contains("signed out"), "{text}");
    }
}

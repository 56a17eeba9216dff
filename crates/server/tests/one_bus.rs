//! `filesync-server` without Redis: its HTTP API and its node share one bus,
//! so what is done through the API reaches connected clients at once, share
//! notices arrive, and the API sees the node's presence.

use std::time::{Duration, Instant};

use filesync_core::proto::Notice;
use filesync_proto_client::Event;
use serde_json::{json, Value};
use support::{connect, create_workspace, start, user};

mod support;

/// Far below the node's 5 s check of watched heads: only the bus delivers this fast.
const PROMPT: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread")]
async fn api_changes_and_share_notices_reach_agents_at_once_and_presence_is_shared() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, http, sync) = start(&dir.path().join("data"));
    let web = reqwest::Client::new();
    let (_, alice) = user(&web, &http, "alice").await;
    let (_, bob) = user(&web, &http, "bob").await;
    let ws = create_workspace(&web, &http, &alice, "Docs").await;

    // Bob is connected before he is a member: the share notice reaches him live.
    let (_bob_client, mut bob_events) = connect(&sync, &bob, "bob-laptop").await;
    let shared = web
        .post(format!("{http}/add-user"))
        .bearer_auth(&alice)
        .json(&json!({"workspace_id": ws.0, "email": "bob@example.com", "role": "editor"}))
        .send()
        .await
        .unwrap();
    assert_eq!(shared.status(), 201);
    let notice = tokio::time::timeout(PROMPT, async {
        loop {
            match bob_events.next().await {
                Some(Event::Notice(n)) => return n,
                Some(_) => continue,
                None => panic!("connection ended"),
            }
        }
    })
    .await
    .expect("the share notice arrives");
    assert!(
        matches!(&notice, Notice::WorkspaceShared { workspace_id, by_username, .. } if *workspace_id == ws && by_username == "alice"),
        "{notice:?}"
    );

    // Alice's agent writes two versions; Bob's agent follows the workspace.
    let (alice_client, _alice_events) = connect(&sync, &alice, "alice-desktop").await;
    let src = dir.path().join("note.txt");
    std::fs::write(&src, b"first").unwrap();
    let v1 = alice_client.put_file(ws, "note.txt", &src, 0).await.expect("upload v1");
    std::fs::write(&src, b"second").unwrap();
    let v2 = alice_client.put_file(ws, "note.txt", &src, v1.seq).await.expect("upload v2");
    let (bob_client, mut bob_events) = connect(&sync, &bob, "bob-phone").await;
    bob_client.subscribe(ws, v2.seq).await.expect("subscribe");

    // Restores through the HTTP API reach Bob's agent promptly, each of them
    // (several, so that the node's periodic head check cannot pass for the bus).
    let mut version = v1.seq;
    for round in 0..4 {
        let started = Instant::now();
        let restored: Value = web
            .post(format!("{http}/workspaces/{}/restore", ws.0))
            .bearer_auth(&alice)
            .json(&json!({"path": "note.txt", "version": version}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let seq = restored["restored"]["version"].as_i64().expect("restored version");
        let change = tokio::time::timeout(PROMPT, async {
            loop {
                match bob_events.next().await {
                    Some(Event::Change(c)) if c.seq == seq => return c,
                    Some(Event::Change(c)) => panic!("unexpected change {c:?}"),
                    Some(_) => continue,
                    None => panic!("connection ended"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("restore {round} did not reach the agent within {PROMPT:?}"));
        assert_eq!(change.path, "note.txt");
        println!("restore {round}: API request to agent event in {:?}", started.elapsed());
        version = if version == v1.seq { v2.seq } else { v1.seq };
    }

    // The API sees the node's connections.
    let presence: Value = web
        .get(format!("{http}/workspaces/{}/presence", ws.0))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(presence["source"], "local", "{presence}");
    let mut devices: Vec<&str> =
        presence["devices"].as_array().unwrap().iter().map(|d| d["device_name"].as_str().unwrap()).collect();
    devices.sort_unstable();
    assert_eq!(devices, ["alice-desktop", "bob-laptop", "bob-phone"], "{presence}");
}

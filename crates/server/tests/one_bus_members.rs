//! `filesync-server` without Redis: access changes made through its HTTP API
//! reach the subscribed clients of its node at once (one bus), and the node
//! refuses the next request of a member who lost access.

use std::time::{Duration, Instant};

use filesync_core::proto::{ErrorCode, Notice};
use filesync_proto_client::{ClientError, Event, Events};
use serde_json::json;
use support::{connect, create_workspace, start, user};

mod support;

/// Generous for a loaded machine; the contract is "within a second", the elapsed time is printed.
const PROMPT: Duration = Duration::from_secs(5);

/// The next notice on `events`; changes are returned as errors so a test can see one slip through.
async fn next_notice(events: &mut Events) -> Result<Notice, String> {
    tokio::time::timeout(PROMPT, async {
        loop {
            match events.next().await {
                Some(Event::Notice(n)) => return Ok(n),
                Some(Event::Change(c)) => return Err(format!("a change arrived first: {c:?}")),
                Some(_) => continue,
                None => return Err("connection ended".into()),
            }
        }
    })
    .await
    .expect("a notice in time")
}

fn code(r: Result<impl std::fmt::Debug, ClientError>) -> ErrorCode {
    match r {
        Err(ClientError::Server { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_removed_member_and_a_deleted_workspace_lose_access_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, http, sync) = start(&dir.path().join("data"));
    let web = reqwest::Client::new();
    let (_, alice) = user(&web, &http, "alice").await;
    let (bob_id, bob) = user(&web, &http, "bob").await;
    let ws = create_workspace(&web, &http, &alice, "Team").await;
    let shared = web
        .post(format!("{http}/add-user"))
        .bearer_auth(&alice)
        .json(&json!({"workspace_id": ws.0, "email": "bob@example.com", "role": "editor"}))
        .send()
        .await
        .unwrap();
    assert_eq!(shared.status(), 201);

    let (alice_client, mut alice_events) = connect(&sync, &alice, "alice-desktop").await;
    let (bob_client, mut bob_events) = connect(&sync, &bob, "bob-laptop").await;
    alice_client.subscribe(ws, 0).await.expect("alice subscribes");
    bob_client.subscribe(ws, 0).await.expect("bob subscribes");
    let src = dir.path().join("f.txt");
    std::fs::write(&src, b"before").unwrap();
    bob_client.put_file(ws, "by-bob.txt", &src, 0).await.expect("an editor uploads");

    // Alice removes Bob through the API: his subscription ends, he is told, before any later change.
    let started = Instant::now();
    let removed =
        web.delete(format!("{http}/workspaces/{}/members/{bob_id}", ws.0)).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(removed.status(), 204);
    let after = alice_client.put_file(ws, "after.txt", &src, 0).await.expect("alice uploads after the removal");
    let mut notice = next_notice(&mut bob_events).await;
    // Bob's own upload (seq 1) may still be queued ahead of the notice.
    while let Err(e) = &notice {
        assert!(e.contains("by-bob.txt"), "{e}");
        notice = next_notice(&mut bob_events).await;
    }
    assert_eq!(notice, Ok(Notice::MemberRemoved { workspace_id: ws }));
    println!("removal reached the subscribed client in {:?}", started.elapsed());
    assert_eq!(code(bob_client.put_file(ws, "x.txt", &src, 0).await), ErrorCode::WorkspaceNotFound);
    assert_eq!(code(bob_client.subscribe(ws, 0).await), ErrorCode::WorkspaceNotFound);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), async {
            loop {
                match bob_events.next().await {
                    Some(Event::Change(c)) if c.seq == after.seq => return,
                    Some(_) => continue,
                    None => std::future::pending::<()>().await,
                }
            }
        })
        .await
        .is_err(),
        "a change made after the removal reached bob"
    );
    let bob_calls = web.get(format!("{http}/workspaces/{}/files", ws.0)).bearer_auth(&bob).send().await.unwrap();
    assert_eq!(bob_calls.status(), 404);

    // Alice deletes the workspace: her own subscription ends too, with the deletion notice.
    let deleted = web.delete(format!("{http}/workspaces/{}", ws.0)).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    let mut notice = next_notice(&mut alice_events).await;
    while let Err(e) = &notice {
        assert!(e.contains("by-bob.txt") || e.contains("after.txt"), "{e}");
        notice = next_notice(&mut alice_events).await;
    }
    assert_eq!(notice, Ok(Notice::WorkspaceDeleted { workspace_id: ws }));
    assert_eq!(code(alice_client.put_file(ws, "y.txt", &src, 0).await), ErrorCode::WorkspaceNotFound);
}

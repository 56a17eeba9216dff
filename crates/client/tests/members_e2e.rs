//! Managing the people of a workspace with the CLI while their agents run:
//! sharing before the other person has an account, a downgrade to viewer,
//! removing a member, deleting the workspace. Real servers (the HTTP API, a
//! sync node, MariaDB, a Redis of the test's own) and `filesync sync` processes.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use filesync_core::db::Backend;

use support::{eventually, eventually_async, tree, Stack};

/// Longest anything may take before the test fails (not a speed check).
const WAIT: Duration = Duration::from_secs(60);

fn write(root: &Path, rel: &str, data: &[u8]) {
    std::fs::write(root.join(rel), data).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharing_before_registration_then_a_downgrade_a_removal_and_a_deletion() {
    let stack = Stack::start(Backend::Mysql, 1).await;
    let nodes = stack.node_addrs();
    let alice = stack.cli("alice", &nodes);
    let bob = stack.cli("bob", &nodes);
    let a = stack.dir.path().join("alice-folder");
    let b = stack.dir.path().join("bob-folder");

    // The README's order: Alice shares before Bob has an account; Bob registers and links.
    alice.register("alice").await;
    alice.ok(&["workspace", "create", "team", a.to_str().unwrap(), "--no-sync"], None).await;
    let shared = alice.ok(&["workspace", "share", "team", "bob@example.com"], None).await;
    assert!(shared.contains("invited bob@example.com") && shared.contains("filesync register"), "{shared}");
    let members = alice.ok(&["workspace", "members", "team"], None).await;
    assert!(members.contains("bob@example.com") && members.contains("invited"), "{members}");
    bob.register("bob").await;
    let members = alice.ok(&["workspace", "members", "team"], None).await;
    assert!(members.contains("bob ") && !members.contains("invited"), "bob is a member now: {members}");
    bob.ok(&["workspace", "link", "team", b.to_str().unwrap(), "--no-sync"], None).await;

    // A rename by the owner reaches Bob's linked folder when his agent starts.
    let renamed = alice.ok(&["workspace", "rename", "team", "team-2026"], None).await;
    assert!(renamed.contains("renamed team to team-2026"), "{renamed}");
    alice.ok(&["workspace", "rename", "team-2026", "team"], None).await;
    alice.ok(&["workspace", "rename", "team", "crew"], None).await;
    assert!(alice.ok(&["status"], None).await.contains("crew"), "the owner's own link follows at once");
    let agent_a = alice.spawn_sync();
    let agent_b = bob.spawn_sync();
    eventually("bob's agent learns the new name", WAIT, || agent_b.log_text().contains("the workspace was renamed"))
        .await;
    assert!(bob.ok(&["status"], None).await.contains("crew"));
    write(&a, "hello.txt", b"hello bob\n");
    eventually("alice's file reaches bob", WAIT, || tree(&b) == tree(&a) && b.join("hello.txt").exists()).await;
    write(&b, "from-bob.txt", b"an editor's file\n");
    eventually("bob's file reaches alice", WAIT, || a.join("from-bob.txt").exists()).await;

    // Bob becomes a viewer: his agent is told, and his next edit stays on his machine.
    let changed = alice.ok(&["workspace", "role", "crew", "bob@example.com", "viewer"], None).await;
    assert!(changed.contains("bob@example.com is now viewer"), "{changed}");
    eventually("bob's agent hears of the new role", WAIT, || agent_b.log_text().contains("your role changed")).await;
    write(&b, "as-viewer.txt", b"not for the server\n");
    eventually_async("the viewer's edit is kept local", WAIT, || async {
        bob.ok(&["status"], None).await.contains("kept local (viewer): as-viewer.txt")
    })
    .await;
    assert!(!a.join("as-viewer.txt").exists());
    let err = alice.fails(&["workspace", "role", "crew", "alice@example.com", "viewer"], None).await;
    assert!(err.contains("the owner's role cannot change"), "{err}");

    // Bob is removed: his agent stops syncing the folder at once, says so once, keeps the files.
    let removed_at = Instant::now();
    let out = alice.ok(&["workspace", "remove", "crew", "bob@example.com"], None).await;
    assert!(out.contains("removed bob@example.com from crew"), "{out}");
    eventually("bob's agent stops syncing the folder", WAIT, || {
        agent_b.log_text().contains("stopped syncing workspace crew")
    })
    .await;
    eprintln!("removal reached bob's agent {:?} after the command returned", removed_at.elapsed());
    write(&a, "after-removal.txt", b"bob must not get this\n");
    // Alice's agent uploads it (a fresh download shows the server has it) ...
    eventually_async("alice's later file is on the server", WAIT, || async {
        let dir = stack.dir.path().join(format!("server-{}", uuid::Uuid::new_v4().simple()));
        alice.ok(&["workspace", "download", "crew", dir.to_str().unwrap()], None).await;
        dir.join("after-removal.txt").exists()
    })
    .await;
    // ... and it never reaches Bob, whose files stay as they were.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!b.join("after-removal.txt").exists());
    assert_eq!(std::fs::read(b.join("hello.txt")).unwrap(), b"hello bob\n");
    assert!(b.join("as-viewer.txt").exists() && b.join("from-bob.txt").exists());
    let log = agent_b.log_text();
    assert_eq!(log.matches("stopped syncing workspace crew").count(), 1, "said once: {log}");
    assert!(log.contains("you were removed from it") && log.contains("its files are kept"), "{log}");
    // The folder is no longer linked; Bob's HTTP calls no longer see the workspace.
    let status = bob.ok(&["status"], None).await;
    assert!(!status.contains(b.to_str().unwrap()), "{status}");
    let err = bob.fails(&["workspace", "members", "crew"], None).await;
    assert!(err.contains("no workspace \"crew\""), "{err}");
    agent_b.stop().await;

    // Deleting asks for confirmation; with --yes it goes, and Alice's own agent stops that folder too.
    let err = alice.fails(&["workspace", "delete", "crew"], None).await;
    assert!(err.contains("--yes"), "{err}");
    let out = alice.ok(&["workspace", "delete", "crew", "--yes"], None).await;
    assert!(out.contains("deleted crew"), "{out}");
    eventually("alice's agent stops syncing the deleted workspace", WAIT, || {
        agent_a.log_text().contains("stopped syncing workspace crew (its owner deleted it)")
    })
    .await;
    assert!(a.join("hello.txt").exists() && a.join("after-removal.txt").exists(), "the owner's files stay");
    let list = alice.ok(&["workspace", "list"], None).await;
    assert!(!list.contains("crew") && !list.contains("team"), "{list}");
    agent_a.stop().await;
}

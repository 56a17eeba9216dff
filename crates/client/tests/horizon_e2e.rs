//! A folder offline past the horizon: while bob's agent is stopped, alice edits, deletes and
//! adds files, and the server's retention drops the history bob would have caught up from
//! (`keep_days` and `trash_days` 0). Bob's agent restarts, is told `history_expired`,
//! reconciles with the current files and converges: every edit he made offline is kept (a
//! conflict copy where alice changed or deleted the file), nothing of alice's is overwritten,
//! and what alice deleted and bob left alone stays deleted. Real servers, MariaDB and SQLite.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use filesync_core::db::{accounts, horizon, retention, Backend, Db};
use support::{eventually, eventually_async, tree, Cli, Stack};

/// Longest a change may take to reach the other folder before the test fails (not a speed check).
const SYNCED: Duration = Duration::from_secs(60);

fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

fn hash(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

/// What the server holds now, fetched into a new folder with `cli` (itself a catch-up from
/// nothing, past the horizon once it moved).
async fn server_tree(stack: &Stack, cli: &Cli) -> BTreeMap<String, String> {
    let dir = stack.dir.path().join(format!("server-{}", uuid::Uuid::new_v4().simple()));
    cli.ok(&["workspace", "download", "team", dir.to_str().unwrap()], None).await;
    tree(&dir)
}

/// Runs the server's retention on alice's workspace with nothing kept but the heads; returns
/// the horizon it left.
async fn expire_history(stack: &Stack) -> i64 {
    let url = stack.db_url().to_owned();
    tokio::task::spawn_blocking(move || {
        let db = Db::open(&url, 1).unwrap();
        let mut c = db.conn().unwrap();
        let alice = accounts::user_by_email(&mut c, "alice@example.com").unwrap().unwrap();
        let ws = accounts::workspaces_of(&mut c, filesync_core::UserId(alice.id), false).unwrap()[0].workspace.id;
        let ws = filesync_core::WorkspaceId(ws);
        let policy = retention::Policy { keep_days: 0, trash_days: 0 };
        retention::apply(&mut c, ws, &policy, chrono::Utc::now()).unwrap();
        horizon::seqs(&mut c, ws).unwrap().unwrap().horizon
    })
    .await
    .unwrap()
}

async fn offline_past_the_horizon(backend: Backend) {
    let stack = Stack::start(backend, 1).await;
    let nodes = stack.node_addrs();
    let (alice, bob) = (stack.cli("alice", &nodes), stack.cli("bob", &nodes));
    alice.register("alice").await;
    bob.register("bob").await;
    let a: PathBuf = stack.dir.path().join("alice-folder");
    let b: PathBuf = stack.dir.path().join("bob-folder");
    alice.ok(&["workspace", "create", "team", a.to_str().unwrap(), "--no-sync"], None).await;
    alice.ok(&["workspace", "share", "team", "bob@example.com", "--role", "editor"], None).await;
    bob.ok(&["workspace", "link", "team", b.to_str().unwrap(), "--no-sync"], None).await;
    let agent_a = alice.spawn_sync();
    let agent_b = bob.spawn_sync();
    for (rel, data) in [
        ("keep.txt", &b"untouched"[..]),
        ("plan.txt", b"plan v1"),
        ("todo.txt", b"todo v1"),
        ("old/notes.txt", b"old notes"),
        ("bobs-bin.txt", b"bob deletes this"),
    ] {
        write(&a, rel, data);
    }
    let (ta, tb) = (a.clone(), b.clone());
    eventually("the first versions reach bob", SYNCED, || tree(&ta) == tree(&tb) && tree(&tb).len() == 5).await;
    // Every file a few versions deep, so there is history to drop.
    write(&a, "plan.txt", b"plan v2");
    write(&a, "todo.txt", b"todo v2");
    let want = hash(b"todo v2");
    eventually("the second versions reach bob", SYNCED, || tree(&tb).get("todo.txt") == Some(&want)).await;
    agent_b.stop().await;

    // Alice, meanwhile: an edit of a file bob edits too, a delete of a file bob edits, a delete of
    // a file bob leaves alone, a new file.
    write(&a, "plan.txt", b"alice's plan v3");
    std::fs::remove_file(a.join("todo.txt")).unwrap();
    std::fs::remove_dir_all(a.join("old")).unwrap();
    write(&a, "new-from-alice.txt", b"made while bob was away");
    eventually_async("alice's changes reach the server", SYNCED, || async {
        let server = server_tree(&stack, &alice).await;
        server.get("plan.txt") == Some(&hash(b"alice's plan v3"))
            && !server.contains_key("todo.txt")
            && !server.contains_key("old/notes.txt")
            && server.contains_key("new-from-alice.txt")
    })
    .await;
    // Bob, offline.
    write(&b, "plan.txt", b"bob's offline plan");
    write(&b, "todo.txt", b"bob's offline todo");
    std::fs::remove_file(b.join("bobs-bin.txt")).unwrap();
    write(&b, "new-from-bob.txt", b"made offline");
    // The history bob would catch up from goes.
    let horizon = expire_history(&stack).await;
    assert!(horizon > 0, "retention dropped history (horizon {horizon})");

    let agent_b = bob.spawn_sync();
    let log_b = agent_b.log.clone();
    eventually("both folders converge", SYNCED, || tree(&ta) == tree(&tb) && tree(&ta).len() == 6).await;
    let now = tree(&a);
    assert_eq!(server_tree(&stack, &alice).await, now, "the server holds what both folders hold");
    let log = std::fs::read_to_string(&log_b).unwrap_or_default();
    assert!(
        log.contains("the server no longer keeps the history since this folder last synced"),
        "bob's agent was told history_expired: {log}"
    );
    let read = |rel: &str| std::fs::read(a.join(rel)).unwrap();
    let copy = |stem: &str| {
        let found: Vec<&String> = now.keys().filter(|k| k.starts_with(&format!("{stem} (conflict bob "))).collect();
        assert_eq!(found.len(), 1, "one conflict copy of {stem}: {now:?}");
        found[0].clone()
    };
    assert_eq!(read("keep.txt"), b"untouched");
    assert_eq!(read("plan.txt"), b"alice's plan v3", "alice's edit is not overwritten");
    assert_eq!(read(&copy("plan")), b"bob's offline plan", "bob's edit is kept beside it");
    assert!(!now.contains_key("todo.txt"), "not brought back under the name alice deleted: {now:?}");
    assert_eq!(read(&copy("todo")), b"bob's offline todo", "bob's edit of it is kept");
    assert!(!now.contains_key("old/notes.txt"), "deleted there, unchanged here: gone: {now:?}");
    assert!(!now.contains_key("bobs-bin.txt"), "bob's offline delete reached the server: {now:?}");
    assert_eq!(read("new-from-alice.txt"), b"made while bob was away");
    assert_eq!(read("new-from-bob.txt"), b"made offline");
    let status = bob.ok(&["status"], None).await;
    assert!(status.contains("conflict copy: todo (conflict bob"), "{status}");

    // Live sync goes on as usual.
    write(&b, "after.txt", b"after the reconciliation");
    let want = hash(b"after the reconciliation");
    eventually("a live edit after it", SYNCED, || tree(&ta).get("after.txt") == Some(&want)).await;
    agent_a.stop().await;
    agent_b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_past_the_horizon_converges_and_keeps_offline_edits() {
    offline_past_the_horizon(Backend::Mysql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_past_the_horizon_converges_and_keeps_offline_edits_on_sqlite() {
    offline_past_the_horizon(Backend::Sqlite).await;
}

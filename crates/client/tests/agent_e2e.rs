//! Two people share a folder. Real servers (the HTTP API, two sync nodes,
//! MariaDB, a Redis of the test's own), two `filesync sync` processes with
//! separate homes and folders, each on its own node. Every story ends with both
//! folders and the server (a fresh `workspace download`) identical by hash.
//! The everyday story and history/restore also run with the chunks in the
//! tests' S3 bucket (`_on_s3`).

mod support;

use filesync_core::testing::noise;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use filesync_core::db::Backend;

use filesync_testkit::TestS3;
use support::{eventually, eventually_async, tree, Cli, Stack};

/// Longest a change may take to reach the other folder before the test fails (not a speed check).
const SYNCED: Duration = Duration::from_secs(60);

struct Pair {
    stack: Stack,
    alice: Cli,
    bob: Cli,
    a: PathBuf,
    b: PathBuf,
}

/// Alice creates `team` and shares it with bob as `bob_role`; both link a folder. Alice syncs
/// through node 1 then 2, bob through node 2 then 1.
async fn pair(backend: Backend, bob_role: &str) -> Pair {
    pair_on(backend, bob_role, None).await
}

/// [`pair`] with the chunks in `s3` (a prefix of the tests' bucket) when given.
async fn pair_on(backend: Backend, bob_role: &str, s3: Option<TestS3>) -> Pair {
    let stack = Stack::start_with(backend, 2, |c| {
        if let Some(s3) = &s3 {
            s3.configure(c);
        }
    })
    .await;
    let nodes = stack.node_addrs();
    let alice = stack.cli("alice", &[nodes[0].clone(), nodes[1].clone()]);
    let bob = stack.cli("bob", &[nodes[1].clone(), nodes[0].clone()]);
    alice.register("alice").await;
    bob.register("bob").await;
    let a = stack.dir.path().join("alice-folder");
    let b = stack.dir.path().join("bob-folder");
    alice.ok(&["workspace", "create", "team", a.to_str().unwrap(), "--no-sync"], None).await;
    alice.ok(&["workspace", "share", "team", "bob@example.com", "--role", bob_role], None).await;
    bob.ok(&["workspace", "link", "team", b.to_str().unwrap(), "--no-sync"], None).await;
    Pair { stack, alice, bob, a, b }
}

impl Pair {
    /// What the server holds now, fetched into a new folder with alice's CLI.
    async fn server_tree(&self) -> BTreeMap<String, String> {
        let dir = self.stack.dir.path().join(format!("server-{}", uuid::Uuid::new_v4().simple()));
        self.alice.ok(&["workspace", "download", "team", dir.to_str().unwrap()], None).await;
        tree(&dir)
    }

    /// Waits until both folders are identical, then checks the server has the same.
    async fn converge(&self, what: &str) -> BTreeMap<String, String> {
        let (a, b) = (self.a.clone(), self.b.clone());
        eventually(what, SYNCED, || tree(&a) == tree(&b)).await;
        let now = tree(&self.a);
        assert_eq!(self.server_tree().await, now, "server differs after: {what}");
        now
    }
}

fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// The agent's temp files (downloads in progress) under `root`; names only, nothing is read.
fn temp_files(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(path);
            } else if e.file_name().to_string_lossy().starts_with(".filesync-tmp-") {
                found.push(path);
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everyday_changes_reach_the_other_folder_and_the_server() {
    everyday_changes(pair(Backend::Mysql, "editor").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everyday_changes_reach_the_other_folder_and_the_server_on_s3() {
    let Some(s3) = TestS3::fresh() else { return };
    everyday_changes(pair_on(Backend::Mysql, "editor", Some(s3)).await).await;
}

async fn everyday_changes(p: Pair) {
    let agent_a = p.alice.spawn_sync();
    let agent_b = p.bob.spawn_sync();

    write(&p.a, "hello.txt", b"hello from alice\n");
    p.converge("a new file").await;
    assert_eq!(std::fs::read(p.b.join("hello.txt")).unwrap(), b"hello from alice\n");

    write(&p.a, "d1/d2/d3/deep.txt", b"deep");
    write(&p.a, "empty.txt", b"");
    write(&p.a, "bin.dat", &noise(3 * 1024 * 1024 + 7, 1));
    write(&p.a, "run.sh", b"#!/bin/sh\necho hi\n");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p.a.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let now = p.converge("nested directories, an empty file, a binary file").await;
    assert_eq!(now.len(), 5, "{now:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let b = p.b.clone();
        eventually("the mode bits arrive", SYNCED, || {
            std::fs::metadata(b.join("run.sh")).map(|m| m.permissions().mode() & 0o777 == 0o755).unwrap_or(false)
        })
        .await;
    }

    // An edit in the middle of a large file: the other side takes the unchanged chunks from its old copy.
    let mut bin = std::fs::read(p.a.join("bin.dat")).unwrap();
    bin[1_500_000..1_500_100].copy_from_slice(&[0xee; 100]);
    write(&p.a, "bin.dat", &bin);
    p.converge("an edit in the middle of a binary file").await;
    let reused_most = || {
        agent_b.log_text().lines().filter(|l| l.contains("downloaded") && l.contains("\"bin.dat\"")).any(|l| {
            let digits: String =
                l.split("reused_bytes").nth(1).unwrap_or("").chars().filter(char::is_ascii_digit).collect();
            digits.parse::<u64>().is_ok_and(|n| n > 2 * 1024 * 1024)
        })
    };
    eventually("bob's download reuses the unchanged chunks", SYNCED, reused_most).await;

    write(&p.b, "hello.txt", b"bob was here\n");
    p.converge("an edit on the other side").await;
    assert_eq!(std::fs::read(p.a.join("hello.txt")).unwrap(), b"bob was here\n");
    // Echo suppression: what an agent wrote itself is not uploaded again: two edits, two versions.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let history = p.alice.ok(&["history", p.a.join("hello.txt").to_str().unwrap()], None).await;
    assert_eq!(history.lines().skip(1).count(), 2, "a header and two versions: {history}");

    std::fs::remove_file(p.a.join("empty.txt")).unwrap();
    let now = p.converge("a delete").await;
    assert!(!now.contains_key("empty.txt"));
    let log_b = agent_b.log.clone();
    eventually("bob's agent logs the remote delete", SYNCED, || {
        std::fs::read_to_string(&log_b).unwrap_or_default().contains("deleted by another device")
    })
    .await;

    std::fs::rename(p.b.join("bin.dat"), p.b.join("moved.dat")).unwrap();
    let now = p.converge("a rename").await;
    assert!(now.contains_key("moved.dat") && !now.contains_key("bin.dat"), "{now:?}");
    // Bob's agent sends a rename as a move when it sees both names in one batch (usually; under
    // load it may be an upload and a delete). When the server holds a move, alice's agent logs it.
    let moved = p.alice.ok(&["history", p.a.join("moved.dat").to_str().unwrap()], None).await;
    if moved.contains("from bin.dat to moved.dat") {
        let log_a = agent_a.log.clone();
        eventually("alice's agent logs the remote move", SYNCED, || {
            let log = std::fs::read_to_string(&log_a).unwrap_or_default();
            log.lines().any(|l| l.contains("moved by another device") && l.contains("moved.dat"))
        })
        .await;
    }

    std::fs::rename(p.a.join("d1"), p.a.join("top")).unwrap();
    let now = p.converge("a directory rename").await;
    assert!(now.contains_key("top/d2/d3/deep.txt") && !now.keys().any(|k| k.starts_with("d1/")), "{now:?}");
    assert!(!p.b.join("d1").exists(), "the old directory is gone on the other side");

    // Ignore rules: the rules file itself syncs; an ignored file never leaves its machine.
    write(&p.a, ".filesyncignore", b"*.log\n");
    p.converge("the ignore file").await;
    write(&p.a, "secret.log", b"do not share");
    write(&p.a, "after.txt", b"written after the secret");
    let b = p.b.clone();
    eventually("a file written after the ignored one", SYNCED, || b.join("after.txt").exists()).await;
    let mut a_tree = tree(&p.a);
    assert!(a_tree.remove("secret.log").is_some());
    eventually("folders equal apart from the ignored file", SYNCED, || tree(&b) == a_tree).await;
    assert!(!p.server_tree().await.contains_key("secret.log"), "the ignored file reached the server");

    agent_a.stop().await;
    agent_b.stop().await;
    assert!(temp_files(&p.a).is_empty() && temp_files(&p.b).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_on_both_sides_while_one_is_offline_keep_both_versions() {
    let p = pair(Backend::Mysql, "editor").await;
    let agent_a = p.alice.spawn_sync();
    let agent_b = p.bob.spawn_sync();
    write(&p.a, "plan.txt", b"version 1\n");
    write(&p.a, "todo.txt", b"todo 1\n");
    p.converge("the first version").await;

    agent_b.stop().await;
    write(&p.a, "plan.txt", b"alice's version 2\n");
    std::fs::remove_file(p.a.join("todo.txt")).unwrap();
    let alices = blake3::hash(b"alice's version 2\n").to_hex().to_string();
    eventually_async("alice's edit and delete reach the server", SYNCED, || async {
        let server = p.server_tree().await;
        server.get("plan.txt") == Some(&alices) && !server.contains_key("todo.txt")
    })
    .await;
    write(&p.b, "plan.txt", b"bob's offline version 2\n");
    write(&p.b, "todo.txt", b"bob's offline todo\n");
    let agent_b = p.bob.spawn_sync();

    let now = p.converge("a conflict").await;
    // Edited here, deleted there: the edit wins and comes back.
    assert_eq!(std::fs::read(p.a.join("todo.txt")).unwrap(), b"bob's offline todo\n");
    let contents: Vec<Vec<u8>> =
        now.keys().filter(|k| k.starts_with("plan")).map(|k| std::fs::read(p.a.join(k)).unwrap()).collect();
    assert_eq!(now.len(), 3, "the file, one conflict copy and the edited file: {now:?}");
    assert!(contents.contains(&b"alice's version 2\n".to_vec()), "{now:?}");
    assert!(contents.contains(&b"bob's offline version 2\n".to_vec()), "{now:?}");
    let copy = now.keys().find(|k| k.starts_with("plan (")).unwrap();
    assert!(copy.starts_with("plan (conflict bob ") && copy.ends_with(".txt"), "{copy}");
    let status = p.bob.ok(&["status"], None).await;
    assert!(status.contains("conflict copy: plan (conflict bob"), "{status}");
    // Alice, on the other side, is told too: a warning and her status.
    let log_a = agent_a.log.clone();
    eventually("alice's agent warns of the conflict", SYNCED, || {
        std::fs::read_to_string(&log_a).unwrap_or_default().contains("conflicting edits elsewhere")
    })
    .await;
    let status = p.alice.ok(&["status"], None).await;
    assert!(status.contains("conflict copy: plan (conflict bob"), "{status}");
    agent_a.stop().await;
    agent_b.stop().await;
    // A conflict copy dealt with (deleted) is no longer listed.
    std::fs::remove_file(p.a.join(copy)).unwrap();
    let status = p.alice.ok(&["status"], None).await;
    assert!(!status.contains("conflict copy:") && status.contains("0 conflicts"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewers_edit_stays_local() {
    let p = pair(Backend::Mysql, "viewer").await;
    let agent_a = p.alice.spawn_sync();
    let agent_b = p.bob.spawn_sync();
    write(&p.a, "readme.txt", b"from the owner\n");
    p.converge("the owner's file").await;

    write(&p.b, "readme.txt", b"the viewer scribbled here\n");
    write(&p.b, "mine.txt", b"a viewer's new file\n");
    eventually_async("the viewer's edits are reported as kept local", SYNCED, || async {
        let status = p.bob.ok(&["status"], None).await;
        status.contains("kept local (viewer): mine.txt") && status.contains("kept local (viewer): readme.txt")
    })
    .await;
    // The agent keeps working: a later change by the owner still arrives.
    write(&p.a, "later.txt", b"later");
    let b = p.b.clone();
    eventually("the owner's later file", SYNCED, || b.join("later.txt").exists()).await;
    assert_eq!(std::fs::read(p.a.join("readme.txt")).unwrap(), b"from the owner\n");
    assert!(!p.a.join("mine.txt").exists());
    assert_eq!(std::fs::read(p.b.join("readme.txt")).unwrap(), b"the viewer scribbled here\n", "kept locally");
    let server = p.server_tree().await;
    assert_eq!(server, tree(&p.a), "the server has only the owner's files");
    let log = agent_b.log_text();
    assert_eq!(log.matches("you are a viewer here").count(), 2, "reported once per file: {log}");
    agent_a.stop().await;
    agent_b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_survives_a_killed_download_and_a_node_going_away() {
    let mut p = pair(Backend::Mysql, "editor").await;
    let agent_a = p.alice.spawn_sync();
    let agent_b = p.bob.spawn_sync();
    write(&p.a, "small.txt", b"warm-up");
    p.converge("a small file").await;

    // 200 MiB, streamed through every step (scan, upload, download, rename). Its content is a
    // 4 MiB random block repeated, so the node stores and sends each distinct chunk once: this
    // test is about a large file on the client, not about the node's disk speed.
    let block = noise(4 * 1024 * 1024, 7);
    let big: Vec<u8> = block.iter().copied().cycle().take(200 * 1024 * 1024).collect();
    // Written beside the folder and renamed in, so the agent never sees (and uploads) a half-written
    // version: the assertions below compare against the one complete content.
    let staging = p.stack.dir.path().join("big.bin.staging");
    std::fs::write(&staging, &big).unwrap();
    drop(big);
    std::fs::rename(&staging, p.a.join("big.bin")).unwrap();
    // Bob is killed while it downloads (a temp file beside the target), and finishes after a restart.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut caught_mid_download = false;
    loop {
        if !temp_files(&p.b).is_empty() {
            caught_mid_download = true;
            break;
        }
        if p.b.join("big.bin").exists() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "bob never started downloading");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    agent_b.kill().await;
    let want = tree(&p.a)["big.bin"].clone();
    if p.b.join("big.bin").exists() {
        assert_eq!(tree(&p.b)["big.bin"], want, "a file in place is always whole");
    }
    let agent_b = p.bob.spawn_sync();
    let now = p.converge("the large file after a restart").await;
    assert_eq!(now["big.bin"], want);
    assert!(temp_files(&p.b).is_empty(), "the partial download was cleaned up");
    if caught_mid_download {
        assert!(agent_b.log_text().contains("removed partial downloads"), "{}", agent_b.log_text());
    }

    // Bob's node (node 2) goes away: bob moves to node 1 and keeps syncing both ways.
    p.stack.nodes.remove(1).stop().await;
    write(&p.a, "after-failover.txt", b"still syncing");
    write(&p.b, "from-bob.txt", b"bob on the other node");
    let now = p.converge("changes after the node went away").await;
    assert!(now.contains_key("after-failover.txt") && now.contains_key("from-bob.txt"));
    agent_a.stop().await;
    agent_b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_once_on_sqlite_reconciles_and_exits() {
    let p = pair(Backend::Sqlite, "editor").await;
    write(&p.a, "notes/one.txt", b"one");
    let status = p.alice.ok(&["status"], None).await;
    assert!(status.contains("1 pending uploads") && status.contains("pending: notes/one.txt"), "{status}");
    p.alice.ok(&["sync", "--once"], None).await;
    let status = p.alice.ok(&["status"], None).await;
    assert!(status.contains("0 pending uploads") && status.contains("1 files in sync"), "{status}");
    p.bob.ok(&["sync", "--once"], None).await;
    assert_eq!(tree(&p.b), tree(&p.a));
    // A restart re-uploads and re-downloads nothing: the state knows what is in sync.
    let before = p.alice.ok(&["status"], None).await;
    p.alice.ok(&["sync", "--once"], None).await;
    assert_eq!(p.alice.ok(&["status"], None).await, before);
    // Linking an empty folder fills it from the server.
    let c = p.stack.dir.path().join("alice-second-copy");
    p.alice.ok(&["workspace", "unlink", "team"], None).await;
    p.alice.ok(&["workspace", "link", "team", c.to_str().unwrap()], None).await;
    assert_eq!(tree(&c), tree(&p.a));
    // Linking a folder that already has files reconciles: nothing is overwritten or deleted.
    let d = p.stack.dir.path().join("alice-old-copy");
    write(&d, "notes/one.txt", b"an older local text");
    write(&d, "extra.txt", b"only here");
    p.alice.ok(&["workspace", "unlink", "team"], None).await;
    p.alice.ok(&["workspace", "link", "team", d.to_str().unwrap()], None).await;
    let now = tree(&d);
    assert_eq!(std::fs::read(d.join("notes/one.txt")).unwrap(), b"one", "the server's version takes the name");
    let copy = now.keys().find(|k| k.starts_with("notes/one (conflict ")).expect("a conflict copy");
    assert_eq!(std::fs::read(d.join(copy)).unwrap(), b"an older local text");
    assert!(now.contains_key("extra.txt"));
    p.bob.ok(&["sync", "--once"], None).await;
    assert_eq!(tree(&p.b), now, "the other side has all of it");
    // No node reachable: one clear line, non-zero exit.
    let dead = Cli::new(p.alice.home.clone(), &p.alice.server, &["127.0.0.1:9".to_owned()]);
    let err = dead.fails(&["sync", "--once"], None).await;
    assert!(err.contains("cannot reach any sync node"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_restore_and_who() {
    history_restore_who(pair(Backend::Sqlite, "editor").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_restore_and_who_on_s3() {
    let Some(s3) = TestS3::fresh() else { return };
    history_restore_who(pair_on(Backend::Sqlite, "editor", Some(s3)).await).await;
}

async fn history_restore_who(p: Pair) {
    let file = p.a.join("story.txt");
    write(&p.a, "story.txt", b"first draft\n");
    p.alice.ok(&["sync", "--once"], None).await;
    write(&p.a, "story.txt", b"second draft\n");
    p.alice.ok(&["sync", "--once"], None).await;

    let history = p.alice.ok(&["history", file.to_str().unwrap()], None).await;
    assert!(history.starts_with("VERSION"), "a table with a header: {history}");
    let versions: Vec<&str> = history.lines().skip(1).filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(versions.len(), 2, "{history}");
    let first = versions.iter().filter_map(|v| v.parse::<i64>().ok()).min().unwrap();
    p.alice.ok(&["restore", file.to_str().unwrap(), &first.to_string()], None).await;
    p.alice.ok(&["sync", "--once"], None).await;
    assert_eq!(std::fs::read(&file).unwrap(), b"first draft\n", "the restored version comes back");
    p.bob.ok(&["sync", "--once"], None).await;
    assert_eq!(tree(&p.b), tree(&p.a));

    let err = p.alice.fails(&["history", p.stack.dir.path().join("elsewhere.txt").to_str().unwrap()], None).await;
    assert!(err.contains("not inside a linked folder"), "{err}");
    let err = p.alice.fails(&["restore", file.to_str().unwrap(), "999"], None).await;
    assert!(err.contains("cannot restore"), "{err}");

    // A rename reads as a move from one name to the other; a folder and an ignored file get a true answer.
    std::fs::create_dir_all(p.a.join("drafts")).unwrap();
    std::fs::rename(&file, p.a.join("drafts/story.txt")).unwrap();
    write(&p.a, "~$story.docx", b"office lock file\n");
    p.alice.ok(&["sync", "--once"], None).await;
    let moved = p.alice.ok(&["history", p.a.join("drafts/story.txt").to_str().unwrap()], None).await;
    assert!(moved.contains("from story.txt to drafts/story.txt"), "{moved}");
    let folder = p.alice.ok(&["history", p.a.join("drafts").to_str().unwrap()], None).await;
    assert!(!folder.contains("never existed"), "{folder}");
    let lock = p.alice.ok(&["history", p.a.join("~$story.docx").to_str().unwrap()], None).await;
    assert!(lock.contains("is ignored"), "{lock}");
    assert!(!p.server_tree().await.contains_key("~$story.docx"), "office lock files stay local");

    // Bob's agent is online: `who` lists his device.
    let agent_b = p.bob.spawn_sync();
    eventually_async("bob's device is listed as online", SYNCED, || async {
        let who = p.alice.ok(&["who", "team"], None).await;
        who.contains("bob")
    })
    .await;
    agent_b.stop().await;
}

/// `workspace create`, `link` and `unlink` reach a running agent without a restart; once `unlink`
/// has said it is done, nothing more of that folder is uploaded. A wrong sync address at link
/// time says what to fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_agent_follows_the_linked_folders() {
    let p = pair(Backend::Sqlite, "editor").await;
    let agent = p.alice.spawn_sync();
    let log = agent.log.clone();
    eventually("alice's agent connects", SYNCED, || {
        std::fs::read_to_string(&log).unwrap_or_default().contains("connected")
    })
    .await;

    let c = p.stack.dir.path().join("later-folder");
    let out = p.alice.ok(&["workspace", "create", "later", c.to_str().unwrap()], None).await;
    assert!(out.contains("running `filesync sync` is syncing it"), "{out}");
    write(&c, "new.txt", b"picked up live\n");
    let server_has = |name: &'static str| {
        let (alice, dir) = (&p.alice, p.stack.dir.path().to_path_buf());
        async move {
            let into = dir.join(format!("later-{}", uuid::Uuid::new_v4().simple()));
            alice.ok(&["workspace", "download", "later", into.to_str().unwrap()], None).await;
            into.join(name).exists()
        }
    };
    eventually_async("the newly linked folder syncs without a restart", SYNCED, || server_has("new.txt")).await;

    let out = p.alice.ok(&["workspace", "unlink", "later"], None).await;
    assert!(out.contains("unlinked later"), "{out}");
    write(&c, "after-unlink.txt", b"must stay local\n");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!server_has("after-unlink.txt").await, "an unlinked folder is not uploaded");
    assert!(agent.log_text().contains("unlinked: stopping that folder"), "{}", agent.log_text());
    // The first folder is still synced.
    write(&p.a, "still.txt", b"still syncing\n");
    eventually_async("the other folder still syncs", SYNCED, || async {
        p.server_tree().await.contains_key("still.txt")
    })
    .await;
    agent.stop().await;

    let wrong = p.stack.cli("alice", &["127.0.0.1:9".to_owned()]);
    let err = wrong.fails(&["workspace", "link", "later", c.to_str().unwrap()], None).await;
    assert!(err.contains("no sync node answered") && !err.contains("will finish"), "{err}");
}

/// The timestamp (RFC 3339, UTC) of the last line of `log` that contains every one of `parts`.
fn logged_at(log: &str, parts: &[&str]) -> Option<String> {
    log.lines()
        .rev()
        .find(|l| parts.iter().all(|p| l.contains(p)))
        .and_then(|l| l.split_whitespace().next())
        .map(Into::into)
}

/// A measurement's size from the environment, else `default`.
fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Writes `n` small files under `root/dir`, 500 per subdirectory.
fn write_tree(root: &Path, dir: &str, n: usize) {
    for i in 0..n {
        write(root, &format!("{dir}/d{}/f{i:05}.txt", i / 500), format!("file {i} of {dir}\n").as_bytes());
    }
}

/// A restart goes live before the folder is compared with the state: an edit made right after
/// the restart reaches the other side while the comparison is still running (the comparison
/// is slowed to one path per step here), is uploaded once, and a file changed while the agent
/// was off is still found and uploaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_live_edits_sync_while_the_folder_is_still_compared() {
    let p = pair(Backend::Mysql, "editor").await;
    write_tree(&p.a, "tree", 3000);
    // Compared last (paths in order): only a live upload sends it before the comparison ends.
    write(&p.a, "z-live.txt", b"before\n");
    let agent_a = p.alice.spawn_sync();
    let agent_b = p.bob.spawn_sync();
    p.converge("the initial tree").await;
    agent_a.stop().await;
    write(&p.a, "tree/d3/f01600.txt", b"changed while alice's agent was off\n");

    // What alice's agent logs from here on is the second run's.
    let log_a = p.alice.home.join("agent.log");
    let first_run = std::fs::read_to_string(&log_a).unwrap().len();
    let second_run =
        move || std::fs::read_to_string(&log_a).unwrap_or_default().get(first_run..).unwrap_or_default().to_owned();
    let agent_a = p.alice.spawn_sync_with_env(&[("FILESYNC_COMPARE_PAGE", "1")]);
    eventually("alice's agent is live again", SYNCED, || second_run().contains("caught up")).await;
    write(&p.a, "z-live.txt", b"edited right after the restart\n");
    let b = p.b.clone();
    eventually("the live edit reaches bob", SYNCED, || {
        std::fs::read(b.join("z-live.txt")).is_ok_and(|d| d == b"edited right after the restart\n")
    })
    .await;
    eventually("alice's comparison ends", SYNCED, || second_run().contains("folder compared with the state")).await;
    let now = p.converge("the offline change").await;
    assert_eq!(now.len(), 3001);
    assert_eq!(std::fs::read(p.b.join("tree/d3/f01600.txt")).unwrap(), b"changed while alice's agent was off\n");

    // In alice's log of the second run: the edit was uploaded, once, before the comparison ended;
    // in bob's, it arrived before that too.
    let text = second_run();
    let second = text.as_str();
    let compared = logged_at(second, &["folder compared with the state"]).unwrap();
    let uploaded = logged_at(second, &["uploaded", "\"z-live.txt\""]).expect("the edit was uploaded");
    assert!(uploaded < compared, "uploaded at {uploaded}, compared at {compared}");
    assert_eq!(second.lines().filter(|l| l.contains("uploaded") && l.contains("\"z-live.txt\"")).count(), 1);
    let offline = logged_at(second, &["uploaded", "\"tree/d3/f01600.txt\""]).expect("the offline change was uploaded");
    assert!(offline < compared);
    let received = logged_at(&agent_b.log_text(), &["downloaded", "\"z-live.txt\""]).expect("bob downloaded it");
    assert!(received < compared, "bob got it at {received}, alice's comparison ended at {compared}");
    agent_a.stop().await;
    agent_b.stop().await;
}

/// Many files appearing at once while the watcher holds their paths (a long quiet period, files
/// still open) fold into their directories once past the bound, and a directory of many files
/// moved into the folder is walked, not listed into memory: all of it reaches the other side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_move_in_folds_into_directories_and_syncs_whole() {
    let p = pair(Backend::Mysql, "editor").await;
    let bound = 64;
    let agent_a = p
        .alice
        .spawn_sync_with_env(&[("FILESYNC_WATCH_PENDING_MAX", &bound.to_string()), ("FILESYNC_DEBOUNCE_MS", "2000")]);
    let agent_b = p.bob.spawn_sync();
    write(&p.a, "first.txt", b"alice is live\n");
    p.converge("alice is live").await;

    // Open files keep their paths waiting out the quiet period: more than the bound at once.
    let mut open = Vec::new();
    for i in 0..300 {
        use std::io::Write;
        let path = p.a.join(format!("copied/d{}/f{i:03}.txt", i % 6));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(format!("copied {i}\n").as_bytes()).unwrap();
        open.push(f);
    }
    drop(open);
    // A tree made outside the folder and moved in: one event for the directory.
    let outside = p.stack.dir.path().join("outside");
    write_tree(&outside, "moved", 1200);
    std::fs::rename(outside.join("moved"), p.a.join("moved")).unwrap();

    let now = p.converge("the copied and the moved-in trees").await;
    assert_eq!(now.len(), 1 + 300 + 1200);
    let log = agent_a.log_text();
    assert!(log.contains("too many changed paths at once"), "the watcher folded paths: {log}");
    agent_a.stop().await;
    agent_b.stop().await;
}

/// How fast a first sync of many small files goes up: alice's agent starts on a folder of
/// `FILESYNC_INITIAL_FILES` (default 5,000) files of 4 KiB, 1,000 per directory; timed from the
/// start until the node has committed all of them (bob's agent is not running, so it does not
/// compete for the CPU). A measurement, not a check: `FILESYNC_INITIAL_FILES=20000 cargo test -p
/// filesync-client --test agent_e2e initial_sync_rate -- --ignored --nocapture`; with
/// `FILESYNC_TEST_AGENT_BIN=<another build's filesync>` it times that build instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check; run by hand"]
async fn initial_sync_rate() {
    let n = env_count("FILESYNC_INITIAL_FILES", 5000);
    let p = pair(Backend::Mysql, "editor").await;
    for i in 0..n {
        let mut data = noise(4096, i as u64);
        data[..8].copy_from_slice(&(i as u64).to_le_bytes());
        write(&p.a, &format!("d{:03}/f{i:06}.bin", i / 1000), &data);
    }
    let started = std::time::Instant::now();
    let agent_a = p.alice.spawn_sync();
    let log = agent_a.log.clone();
    // One "uploaded" line per file the node committed.
    eventually("every file is committed", Duration::from_secs(3600), || {
        std::fs::read_to_string(&log).unwrap_or_default().matches(" uploaded ").count() >= n
    })
    .await;
    let took = started.elapsed().as_secs_f64();
    println!("initial sync of {n} files of 4 KiB: {took:.1} s, {:.0} files/s", n as f64 / took);
    agent_a.stop().await;
}

/// How long a restart of an agent on an in-sync tree of `FILESYNC_RESTART_FILES` (default 20,000)
/// files keeps an edit from reaching the other side: alice's agent is restarted, the edit is
/// written as soon as it has caught up, and the time from the restart until bob holds the edit
/// is printed, with how long alice's comparison of the folder took. A measurement, not a check:
/// `cargo test -p filesync-client --test agent_e2e restart_to_next_edit -- --ignored --nocapture`
/// (`FILESYNC_TEST_AGENT_BIN` times another build of the agent, for before/after).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check; run by hand"]
async fn restart_to_next_edit() {
    let n = env_count("FILESYNC_RESTART_FILES", 20_000);
    let p = pair(Backend::Mysql, "editor").await;
    for i in 0..n {
        write(&p.a, &format!("d{:03}/f{i:06}.txt", i / 1000), format!("file {i}\n").as_bytes());
    }
    write(&p.a, "edit.txt", b"0\n");
    let mut agent_a = p.alice.spawn_sync();
    let agent_b = p.bob.spawn_sync();
    let b = p.b.clone();
    eventually("the first sync", Duration::from_secs(3600), || {
        std::fs::read(b.join("edit.txt")).is_ok() && tree(&b).len() == n + 1
    })
    .await;
    for round in 1..=3 {
        agent_a.stop().await;
        let log_a = p.alice.home.join("agent.log");
        let from = std::fs::read_to_string(&log_a).unwrap().len();
        let this_run =
            || std::fs::read_to_string(&log_a).unwrap_or_default().get(from..).unwrap_or_default().to_owned();
        let started = std::time::Instant::now();
        let agent = p.alice.spawn_sync();
        eventually("alice caught up", SYNCED, || this_run().contains("caught up")).await;
        let caught_up = started.elapsed();
        let content = format!("{round}\n");
        write(&p.a, "edit.txt", content.as_bytes());
        eventually("the edit reaches bob", SYNCED, || {
            std::fs::read(b.join("edit.txt")).is_ok_and(|d| d == content.as_bytes())
        })
        .await;
        let arrived = started.elapsed();
        eventually("alice's comparison ends", SYNCED, || this_run().contains("folder compared with the state")).await;
        let compared = this_run()
            .lines()
            .find(|l| l.contains("folder compared with the state"))
            .and_then(|l| l.split("total_ms=").nth(1))
            .and_then(|t| t.split_whitespace().next())
            .unwrap_or("?")
            .to_owned();
        println!(
            "{n} files, restart {round}: caught up after {:.2} s, edit on bob after {:.2} s; comparison {compared} ms",
            caught_up.as_secs_f64(),
            arrived.as_secs_f64()
        );
        agent_a = agent;
    }
    agent_a.stop().await;
    agent_b.stop().await;
}

//! A node that lies about paths. The agent must never let a path from the network move, write or
//! delete anything outside its folder: a hostile node (written here with the real frame codec)
//! completes the handshake, then sends changes and upload answers naming `..`, absolute paths,
//! NUL, `\`, over-long components, a conflict copy in another directory and paths through a
//! symlink the user made inside the folder; and the same lies as the current heads after saying
//! the history expired. Afterwards the same agent syncs with a real node.

mod support;

use std::path::Path;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio_util::codec::Framed;

use filesync_core::chunking::{ChunkRef, Hash};
use filesync_core::db::Backend;
use filesync_core::proto::frame::FrameCodec;
use filesync_core::proto::{BatchOutcome, Change, ChangeOp, EntryKind, ErrorCode, Message};
use filesync_core::{UserId, WorkspaceId};

use support::{tree, Stack};

const EVIL: &[u8] = b"evil content\n";

fn change(ws: WorkspaceId, seq: i64, op: ChangeOp, kind: EntryKind, path: &str, from: Option<&str>) -> Change {
    let hash: Hash = *blake3::hash(EVIL).as_bytes();
    Change {
        workspace_id: ws,
        seq,
        op,
        kind,
        path: path.to_owned(),
        from_path: from.map(str::to_owned),
        size: EVIL.len() as u64,
        mtime_ms: 1_700_000_000_000,
        mode: 0o644,
        content_hash: hash,
        deleted: op == ChangeOp::Delete,
        author_id: UserId(999),
        device_id: "hostile".into(),
        committed_at_ms: 1_700_000_000_000,
    }
}

/// The changes the hostile node sends after a subscribe from seq 0.
fn hostile_changes(ws: WorkspaceId) -> Vec<Change> {
    let long = "x".repeat(300);
    let put = |seq, p: &str| change(ws, seq, ChangeOp::Put, EntryKind::File, p, None);
    vec![
        put(1, "../outside/evil.txt"),
        put(2, "/tmp/evil-absolute.txt"),
        put(3, "nul\0evil.txt"),
        put(4, "..\\outside\\evil.txt"),
        put(5, &format!("{long}/evil.txt")),
        // Valid paths, but through the link to the sibling directory.
        put(6, "link/evil.txt"),
        put(7, "link/evil2.txt"),
        change(ws, 8, ChangeOp::Delete, EntryKind::File, "link/victim.txt", None),
        change(ws, 9, ChangeOp::Move, EntryKind::File, "../moved.txt", Some("keep.txt")),
        change(ws, 10, ChangeOp::Move, EntryKind::File, "stolen.txt", Some("../outside/victim.txt")),
        change(ws, 11, ChangeOp::Move, EntryKind::File, "link/keep.txt", Some("keep.txt")),
        change(ws, 12, ChangeOp::Put, EntryKind::Dir, "link/newdir", None),
        change(ws, 13, ChangeOp::Put, EntryKind::Dir, "../outside-dir", None),
    ]
}

/// A bad conflict copy name for the upload of `path`, a different kind each time.
fn hostile_copy(path: &str, n: usize) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    match n % 5 {
        0 => format!("../../{name}"),
        1 => format!("/tmp/{name}"),
        2 => format!("elsewhere/{name}"),
        3 => format!("link/{name}"),
        _ => format!("{name}\0x"),
    }
}

/// The hostile changes as a page of heads (live, each a put at its path), for a node that says the
/// history expired.
fn hostile_heads(ws: WorkspaceId) -> Vec<Change> {
    hostile_changes(ws)
        .into_iter()
        .filter(|c| !c.deleted)
        .map(|c| Change { op: ChangeOp::Put, from_path: None, ..c })
        .collect()
}

/// Serves one connection: handshake, the hostile changes (or, `past_horizon`, `history_expired`
/// and the hostile changes as heads), hostile answers to uploads.
async fn serve_hostile(stream: tokio::net::TcpStream, past_horizon: bool) {
    let mut framed = Framed::new(stream, FrameCodec::default());
    let mut copies = 0usize;
    let mut seq = 100i64;
    while let Some(Ok(msg)) = framed.next().await {
        let reply: Vec<Message> = match msg {
            Message::Hello { .. } => vec![Message::Welcome {
                user_id: UserId(1),
                node_id: "hostile".into(),
                session_id: "s".into(),
                max_frame_bytes: 16 << 20,
                heartbeat_secs: 15,
            }],
            Message::Ping { nonce } => vec![Message::Pong { nonce }],
            Message::Subscribe { request_id, workspace_id, since_seq } => {
                let changes = hostile_changes(workspace_id);
                let head = changes.last().map(|c| c.seq).unwrap_or(0);
                let mut out: Vec<Message> =
                    changes.into_iter().filter(|c| c.seq > since_seq).map(Message::Change).collect();
                out.push(Message::Subscribed { request_id, workspace_id, head_seq: head });
                out
            }
            Message::GetChanges { request_id, after_seq, .. } if past_horizon && after_seq < 13 => {
                vec![Message::error(request_id, ErrorCode::HistoryExpired, "hostile: history kept after seq 13 only")]
            }
            Message::GetHeads { request_id, workspace_id, .. } => {
                vec![Message::Heads {
                    request_id,
                    workspace_id,
                    head_seq: 13,
                    entries: hostile_heads(workspace_id),
                    next: None,
                }]
            }
            Message::GetChanges { request_id, workspace_id, after_seq, limit } => {
                let changes = hostile_changes(workspace_id);
                let head_seq = changes.last().map(|c| c.seq).unwrap_or(0);
                let changes = changes.into_iter().filter(|c| c.seq > after_seq).take(limit as usize).collect();
                vec![Message::Changes { request_id, workspace_id, head_seq, changes }]
            }
            Message::GetChunks { request_id, hashes, .. } => hashes
                .into_iter()
                .map(|hash| Message::Chunk { request_id, hash, format: 0, payload: EVIL.to_vec() })
                .collect(),
            Message::GetManifest { request_id, workspace_id, seq } => {
                let hash: Hash = *blake3::hash(EVIL).as_bytes();
                vec![Message::Manifest {
                    request_id,
                    workspace_id,
                    seq,
                    path: "link/evil.txt".into(),
                    size: EVIL.len() as u64,
                    mtime_ms: 1_700_000_000_000,
                    content_hash: hash,
                    chunks: vec![ChunkRef { hash, len: EVIL.len() as u32 }],
                }]
            }
            Message::PutFile(put) => {
                seq += 1;
                copies += 1;
                vec![
                    Message::NeedChunks { request_id: put.request_id, hashes: Vec::new() },
                    Message::Committed {
                        request_id: put.request_id,
                        workspace_id: put.workspace_id,
                        version: seq,
                        seq,
                        path: put.file.path.clone(),
                        conflict_path: Some(hostile_copy(&put.file.path, copies)),
                    },
                ]
            }
            Message::PutFiles { request_id, workspace_id, files } => {
                let results = files
                    .iter()
                    .map(|f| {
                        seq += 1;
                        copies += 1;
                        let copy = hostile_copy(&f.path, copies);
                        BatchOutcome::Committed { seq, path: copy.clone(), conflict_path: Some(copy) }
                    })
                    .collect();
                vec![
                    Message::NeedChunks { request_id, hashes: Vec::new() },
                    Message::CommittedMany { request_id, workspace_id, results },
                ]
            }
            other => match other.request_id() {
                Some(request_id) => {
                    vec![Message::error(request_id, ErrorCode::NotFound, "hostile")]
                }
                None => Vec::new(),
            },
        };
        for m in reply {
            if framed.send(m).await.is_err() {
                return;
            }
        }
    }
}

/// Everything under `dir`, links included, by relative path (a link's entry is `-> target`).
fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                dirs.push(p);
                out.push(format!("{rel}/"));
            } else if ft.is_symlink() {
                out.push(format!("{rel} -> {}", std::fs::read_link(&p).unwrap().display()));
            } else {
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_node_cannot_make_the_agent_touch_anything_outside_the_folder() {
    let log = hostile_round(false).await;
    // Each bad path is reported, naming the folder.
    for bad in
        ["../outside/evil.txt", "/tmp/evil-absolute.txt", "..\\\\outside", "../moved.txt", "../outside/victim.txt"]
    {
        assert!(log.contains(bad), "no warning about {bad:?}:\n{log}");
    }
}

/// The same lies as heads, after the node said the history expired: the reconciliation with the
/// current heads checks every path the same way.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_node_past_the_horizon_cannot_either() {
    let log = hostile_round(true).await;
    assert!(log.contains("reconciling with its current files"), "the agent reconciled with the heads:\n{log}");
    for bad in ["../outside/evil.txt", "/tmp/evil-absolute.txt", "..\\\\outside", "../moved.txt"] {
        assert!(log.contains(bad), "no warning about {bad:?}:\n{log}");
    }
}

/// One round of `sync --once` against the hostile node, then one against a real node; returns the
/// hostile round's log.
async fn hostile_round(past_horizon: bool) -> String {
    let stack = Stack::start(Backend::Sqlite, 1).await;
    let hostile = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hostile_addr = hostile.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((stream, _)) = hostile.accept().await {
            tokio::spawn(serve_hostile(stream, past_horizon));
        }
    });

    let real = stack.cli("alice", &stack.node_addrs());
    real.register("alice").await;
    let base = stack.dir.path().join("space");
    let (folder, outside) = (base.join("folder"), base.join("outside"));
    real.ok(&["workspace", "create", "team", folder.to_str().unwrap(), "--no-sync"], None).await;
    std::fs::create_dir_all(folder.join("sub")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("victim.txt"), b"not yours\n").unwrap();
    std::fs::write(folder.join("keep.txt"), b"the user's file\n").unwrap();
    std::fs::write(folder.join("sub/doc.txt"), b"a document\n").unwrap();
    for i in 0..5 {
        std::fs::write(folder.join(format!("c{i}.txt")), format!("upload {i}\n")).unwrap();
    }
    std::os::unix::fs::symlink(&outside, folder.join("link")).unwrap();
    let folder_before = listing(&folder);
    let around_before = listing(&base);
    let outside_before = tree(&outside);

    // One round against the hostile node: catch-up (the bad changes), then uploads (bad answers).
    let liar = support::Cli::new(real.home.clone(), &real.server, &[hostile_addr]);
    let out = liar.run(&["sync", "--once", "--no-notify", "--no-progress"], None).await;
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!log.contains("panicked"), "the agent panicked: {log}");
    assert!(out.status.success(), "the agent finished its round: {log}");

    assert_eq!(tree(&outside), outside_before, "nothing outside changed:\n{log}");
    let offered = |mut l: Vec<String>, prefix: &str| {
        if past_horizon {
            // As a head, the move's destination is a file the node offers (its own bytes, not the
            // victim's): downloaded like any.
            assert_eq!(std::fs::read(folder.join("stolen.txt")).unwrap(), EVIL, "{log}");
            l.retain(|p| *p != format!("{prefix}stolen.txt"));
        }
        l
    };
    assert_eq!(
        offered(listing(&base), "folder/"),
        around_before,
        "nothing appeared, moved or vanished around the folder:\n{log}"
    );
    assert_eq!(offered(listing(&folder), ""), folder_before, "the folder is as the user left it:\n{log}");
    assert_eq!(std::fs::read(folder.join("keep.txt")).unwrap(), b"the user's file\n");
    assert!(!Path::new("/tmp/evil-absolute.txt").exists());
    assert!(log.contains("the node sent a change with an invalid path") && log.contains("folder=team"), "{log}");
    assert!(log.contains("outside the file's directory"), "a conflict copy elsewhere is reported:\n{log}");
    assert!(log.contains("symbolic link"), "a path through the link is refused:\n{log}");

    // The same agent then syncs with a real node: every file of the folder reaches the server.
    real.ok(&["sync", "--once", "--no-notify", "--no-progress"], None).await;
    let copy = base.join("from-server");
    real.ok(&["workspace", "download", "team", copy.to_str().unwrap()], None).await;
    let mut want = tree(&folder);
    assert!(want.contains_key("keep.txt") && want.contains_key("c4.txt") && want.contains_key("sub/doc.txt"));
    // (`stolen.txt`, past the horizon: the lying node's own file, recorded as in sync with it.)
    want.retain(|k, _| !k.starts_with("link") && k != "stolen.txt");
    assert_eq!(tree(&copy), want, "the real node holds the folder");
    assert_eq!(tree(&outside), outside_before);
    log
}

/// The text of the one file the lying node below offers: compressible, so chunks travel as zstd.
fn offered_text() -> Vec<u8> {
    b"fn main() { println!(\"hello\"); }\n".repeat(2000)
}

/// A node that offers one file (`doc.rs`, one chunk) and answers `GetChunks` with a compressed
/// chunk that must not be accepted: `lie` 0 a zstd bomb (16 MiB of zeros in a few hundred bytes),
/// 1 valid zstd of other bytes (wrong hash), 2 a payload that is not zstd, 3 an unknown format.
async fn serve_bad_chunks(stream: tokio::net::TcpStream, lie: usize) {
    use filesync_core::encoding::{Encoded, FORMAT_ZSTD};
    let text = offered_text();
    let hash: Hash = *blake3::hash(&text).as_bytes();
    let mut framed = Framed::new(stream, FrameCodec::default());
    while let Some(Ok(msg)) = framed.next().await {
        let reply: Vec<Message> = match msg {
            Message::Hello { .. } => vec![Message::Welcome {
                user_id: UserId(1),
                node_id: "liar".into(),
                session_id: "s".into(),
                max_frame_bytes: 16 << 20,
                heartbeat_secs: 15,
            }],
            Message::Ping { nonce } => vec![Message::Pong { nonce }],
            Message::Subscribe { request_id, workspace_id, .. } => {
                let mut c = change(workspace_id, 1, ChangeOp::Put, EntryKind::File, "doc.rs", None);
                c.size = text.len() as u64;
                c.content_hash = hash;
                vec![Message::Change(c), Message::Subscribed { request_id, workspace_id, head_seq: 1 }]
            }
            Message::GetChanges { request_id, workspace_id, after_seq, .. } => {
                let mut c = change(workspace_id, 1, ChangeOp::Put, EntryKind::File, "doc.rs", None);
                c.size = text.len() as u64;
                c.content_hash = hash;
                let changes = if after_seq < 1 { vec![c] } else { Vec::new() };
                vec![Message::Changes { request_id, workspace_id, head_seq: 1, changes }]
            }
            Message::GetManifest { request_id, workspace_id, seq } => vec![Message::Manifest {
                request_id,
                workspace_id,
                seq,
                path: "doc.rs".into(),
                size: text.len() as u64,
                mtime_ms: 1_700_000_000_000,
                content_hash: hash,
                chunks: vec![ChunkRef { hash, len: text.len() as u32 }],
            }],
            Message::GetChunks { request_id, hashes, .. } => {
                let (format, payload) = match lie {
                    0 => (FORMAT_ZSTD, Encoded::of(vec![0u8; 16 << 20]).payload),
                    1 => (FORMAT_ZSTD, Encoded::of(b"fn evil() {}\n".repeat(5000)).payload),
                    2 => (FORMAT_ZSTD, b"not a zstd frame at all".to_vec()),
                    _ => (9, Encoded::of(text.clone()).payload),
                };
                hashes
                    .into_iter()
                    .map(|hash| Message::Chunk { request_id, hash, format, payload: payload.clone() })
                    .collect()
            }
            other => match other.request_id() {
                Some(request_id) => vec![Message::error(request_id, ErrorCode::NotFound, "liar")],
                None => Vec::new(),
            },
        };
        for m in reply {
            if framed.send(m).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_compressed_chunks_from_a_node_are_refused() {
    let stack = Stack::start(Backend::Sqlite, 1).await;
    let real = stack.cli("alice", &stack.node_addrs());
    real.register("alice").await;
    let folder = stack.dir.path().join("code");
    real.ok(&["workspace", "create", "code", folder.to_str().unwrap(), "--no-sync"], None).await;
    std::fs::write(folder.join("mine.txt"), b"the user's file\n").unwrap();
    let before = listing(&folder);

    for lie in 0..4 {
        let liar = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = liar.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((stream, _)) = liar.accept().await {
                tokio::spawn(serve_bad_chunks(stream, lie));
            }
        });
        // The agent refuses the chunk and retries later (a node that sends a bad chunk is treated like a
        // broken connection): it never writes the file, and stops cleanly when asked.
        let cli = support::Cli::new(real.home.clone(), &real.server, &[addr]);
        let logged = std::fs::read_to_string(real.home.join("agent.log")).map(|l| l.len()).unwrap_or(0);
        let agent = cli.spawn_sync();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let log = loop {
            let log = agent.log_text().get(logged..).unwrap_or_default().to_owned();
            if log.contains("the node sent a bad chunk") {
                break log;
            }
            assert!(tokio::time::Instant::now() < deadline, "lie {lie}: no refusal in the log: {log}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(!log.contains("panicked"), "lie {lie}: the agent panicked: {log}");
        agent.stop().await;
        // Nothing appeared: no doc.rs, no temp file beside it; the user's file is untouched.
        assert_eq!(listing(&folder), before, "lie {lie}: {log}");
        assert_eq!(std::fs::read(folder.join("mine.txt")).unwrap(), b"the user's file\n");
    }
}

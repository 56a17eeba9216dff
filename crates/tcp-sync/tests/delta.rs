//! Manifests as deltas: an edit in a large file sends and receives the changed
//! chunks and a few bytes of runs, not the whole chunk list; a delta that
//! does not rebuild what its hash says is refused and nothing is committed.
//! Also: an upload from a scan the caller made (`put_file_scanned`).

mod common;

use std::collections::HashSet;

use common::*;
use filesync_core::chunking::{scan, ChunkRef};
use filesync_core::db::Backend;
use filesync_core::proto::delta::{self, Run};
use filesync_core::proto::frame::{encode_frame, FrameCodec};
use filesync_core::proto::{ErrorCode, Message, PutDelta, PROTOCOL_VERSION};
use filesync_core::Role;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;

/// 24 MiB: ~380 chunks, a full manifest of ~13 KB.
const BIG: usize = 24 * 1024 * 1024;

fn refs(data: &[u8]) -> Vec<ChunkRef> {
    scan(data).unwrap().refs()
}

/// Bytes of the chunks of `new` that `old` does not have.
fn changed_bytes(old: &[ChunkRef], new: &[ChunkRef]) -> u64 {
    let had: HashSet<_> = old.iter().map(|c| c.hash).collect();
    new.iter().filter(|c| !had.contains(&c.hash)).map(|c| u64::from(c.len)).sum()
}

async fn edit_travels_as_a_delta(cluster: &Cluster) {
    let n = cluster.node().await;
    let (alice, ta) = cluster.user("alice");
    let (bob, tb) = cluster.user("bob");
    let ws = cluster.workspace(alice, "Big");
    cluster.share(ws, bob, Role::Editor, alice);
    let local = tempfile::tempdir().unwrap();
    let (a, _ae) = connect(n.addr, &ta, "a").await;
    let (b, mut be) = connect(n.addr, &tb, "b").await;
    within("subscribe", b.subscribe(ws, 0)).await.unwrap();

    let mut big = noise(BIG, 7);
    let src = write_file(local.path(), "big.bin", &big);
    let v1 = within("upload", a.put_file(ws, "big.bin", &src, 0)).await.unwrap();
    let copy = local.path().join("b-big.bin");
    let ev = next_change(&mut be, "the upload").await;
    within("download", b.download(ws, ev.seq, &copy)).await.unwrap();
    let old = refs(&big);
    let full_manifest = (old.len() * 33) as u64;

    let mid = BIG / 2 + 1234;
    big[mid..mid + 4096].copy_from_slice(&noise(4096, 8));
    std::fs::write(&src, &big).unwrap();
    let new = refs(&big);
    let changed = changed_bytes(&old, &new);
    assert!(changed > 0 && changed < 600_000, "the edit changes {changed} bytes of chunks");

    let sent = a.bytes_sent();
    let v2 = within("upload edit", a.put_file(ws, "big.bin", &src, v1.seq)).await.unwrap();
    let sent = a.bytes_sent() - sent;
    assert_eq!(v2.conflict_path, None);
    // Chunk bytes, their frames, and runs: far below what the full list alone (~13 KB) would add.
    assert!(sent < changed + 2_000, "the edit sent {sent} bytes for {changed} changed ({full_manifest} B of manifest)");

    let ev = next_change(&mut be, "the edit").await;
    let received = b.bytes_received();
    within("download edit", b.download_reusing(ws, ev.seq, &copy, Some(&copy))).await.unwrap();
    let received = b.bytes_received() - received;
    assert!(received < changed + 2_000, "the edit took {received} bytes to download for {changed} changed");
    assert_eq!(std::fs::read(&copy).unwrap(), big);

    // A client that never saw the file gets the full list, and the same file.
    let (c, _ce) = connect(n.addr, &tb, "c").await;
    let fresh = local.path().join("c-big.bin");
    let m = within("download fresh", c.download(ws, v2.seq, &fresh)).await.unwrap();
    assert_eq!(m.chunks, new);
    assert_eq!(std::fs::read(&fresh).unwrap(), big);
    n.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn edit_travels_as_a_delta_mariadb() {
    edit_travels_as_a_delta(&Cluster::new(Backend::Mysql, true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn edit_travels_as_a_delta_sqlite() {
    edit_travels_as_a_delta(&Cluster::new(Backend::Sqlite, false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inconsistent_deltas_are_refused_and_nothing_is_committed() {
    let cluster = Cluster::new(Backend::Sqlite, false);
    let n = cluster.node().await;
    let (alice, ta) = cluster.user("alice");
    let ws = cluster.workspace(alice, "Big");
    let local = tempfile::tempdir().unwrap();
    let data = noise(8 * 1024 * 1024, 9);
    let (a, _ae) = connect(n.addr, &ta, "a").await;
    let v1 = within("upload", a.put_file(ws, "f.bin", &write_file(local.path(), "f.bin", &data), 0)).await.unwrap();
    let base = refs(&data);
    let head = cluster.head_seq(ws);

    let put = |request_id, base_seq, runs: Vec<Run>, manifest_hash| {
        Message::PutDelta(PutDelta {
            request_id,
            workspace_id: ws,
            path: "f.bin".into(),
            base_version: v1.seq,
            size: data.len() as u64,
            mtime_ms: 0,
            mode: 0o644,
            content_hash: filesync_core::chunking::hash(&data),
            base_seq,
            runs,
            manifest_hash,
        })
    };
    let whole = delta::manifest_hash(&base);
    let all = Run::Copy { start: 0, count: base.len() as u32 };
    let requests = [
        // Rebuilds fine but is not what the hash says (a chunk dropped).
        put(1, v1.seq, vec![Run::Copy { start: 0, count: base.len() as u32 - 1 }], whole),
        // Copies past the end of the base.
        put(2, v1.seq, vec![Run::Copy { start: 1, count: base.len() as u32 }], whole),
        // A base that does not exist.
        put(3, v1.seq + 100, vec![all], whole),
        // Expands to more chunks than any file may have.
        put(4, v1.seq, vec![all; 1 << 16], whole),
    ];
    let mut s = TcpStream::connect(n.addr).await.unwrap();
    let hello = Message::Hello {
        protocol_version: PROTOCOL_VERSION,
        token: ta.clone(),
        device_id: "raw".into(),
        device_name: "raw".into(),
    };
    for m in std::iter::once(&hello).chain(&requests).chain([&Message::Ping { nonce: 5 }]) {
        s.write_all(&encode_frame(m, usize::MAX).unwrap()).await.unwrap();
    }
    let mut frames = FramedRead::new(s, FrameCodec::new(64 * 1024 * 1024));
    let mut errors = Vec::new();
    within("answers up to the pong", async {
        while let Some(Ok(m)) = frames.next().await {
            match m {
                Message::Error { request_id, code, .. } => errors.push((request_id, code)),
                Message::Pong { .. } => break,
                Message::Welcome { .. } => {}
                other => panic!("unexpected answer {other:?}"),
            }
        }
    })
    .await;
    let bad = ErrorCode::BadRequest.as_str().to_owned();
    assert_eq!(errors, vec![(1, bad.clone()), (2, bad.clone()), (3, ErrorCode::NotFound.as_str().into()), (4, bad)]);
    assert_eq!(cluster.head_seq(ws), head);

    // The same delta, correct, commits: the refusals were about the deltas, not the node.
    let mut edited = data.clone();
    edited[100..200].fill(0);
    let new = refs(&edited);
    let src = write_file(local.path(), "f.bin", &edited);
    let v2 = within("good delta", a.put_file(ws, "f.bin", &src, v1.seq)).await.unwrap();
    assert_eq!(v2.seq, head + 1);
    let m = a.manifest(ws, v2.seq).await.unwrap();
    assert_eq!(m.chunks, new);
    n.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scan_made_by_the_caller_is_used_and_a_change_since_is_noticed() {
    let cluster = Cluster::new(Backend::Sqlite, false);
    let n = cluster.node().await;
    let (alice, ta) = cluster.user("alice");
    let ws = cluster.workspace(alice, "Scanned");
    let local = tempfile::tempdir().unwrap();
    let (a, _ae) = connect(n.addr, &ta, "a").await;
    let data = noise(2 * 1024 * 1024, 11);
    let src = write_file(local.path(), "s.bin", &data);
    let scanned = scan(&data[..]).unwrap();
    let v1 = within("scanned upload", a.put_file_scanned(ws, "s.bin", &src, 0, &scanned)).await.unwrap();
    assert_eq!(a.manifest(ws, v1.seq).await.unwrap().chunks, scanned.refs());

    // The file changes between the caller's scan and the upload: the chunks the node asks for are
    // not what was scanned, so nothing is sent as if it were, and nothing is committed.
    let other = noise(2 * 1024 * 1024, 12);
    let scanned = scan(&other[..]).unwrap();
    let src = write_file(local.path(), "other.bin", &other);
    std::fs::write(&src, noise(2 * 1024 * 1024, 13)).unwrap();
    let head = cluster.head_seq(ws);
    let stale = within("stale upload", a.put_file_scanned(ws, "other.bin", &src, 0, &scanned)).await;
    assert!(matches!(stale, Err(filesync_proto_client::ClientError::FileChanged)), "got {stale:?}");
    assert_eq!(cluster.head_seq(ws), head);
    n.shutdown().await.unwrap();
}

//! Streaming a large upload: the workspace's other subscribers hear of it when it starts and
//! can read its chunks as they become durable, before the commit; an abandoned upload is
//! announced and commits nothing; a non-member hears nothing. Only uploads of mostly new content
//! are announced: a small edit of a large file is not.

mod common;

use std::time::Duration;

use common::*;
use filesync_core::chunking::{self, scan, Hash};
use filesync_core::db::Backend;
use filesync_core::proto::frame::{encode_frame, FrameCodec};
use filesync_core::proto::{FileUpload, Message, Notice, PutFile, PROTOCOL_VERSION};
use filesync_core::{Role, WorkspaceId};
use filesync_proto_client::{Event, Events};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;

/// 40 MiB of noise: more than two packs, so batches become durable while the upload goes on.
const BIG: usize = 40 * 1024 * 1024;

/// The next upload notice, skipping other events.
async fn next_upload_notice(events: &mut Events, what: &str) -> Notice {
    within(what, async {
        loop {
            match events.next().await {
                Some(Event::Notice(n)) if n.upload_workspace().is_some() => return n,
                Some(Event::Closed { error, .. }) => panic!("closed ({error:?}) while waiting for {what}"),
                None => panic!("events ended while waiting for {what}"),
                Some(_) => continue,
            }
        }
    })
    .await
}

async fn send(w: &mut OwnedWriteHalf, m: &Message) {
    w.write_all(&encode_frame(m, usize::MAX).unwrap()).await.unwrap();
}

/// A raw connection (so the test decides when each chunk goes), after `Welcome`.
async fn raw(
    addr: std::net::SocketAddr,
    token: &str,
) -> (FramedRead<tokio::net::tcp::OwnedReadHalf, FrameCodec>, OwnedWriteHalf) {
    let s = TcpStream::connect(addr).await.unwrap();
    let (r, mut w) = s.into_split();
    let hello = Message::Hello {
        protocol_version: PROTOCOL_VERSION,
        token: token.to_owned(),
        device_id: "a-raw".into(),
        device_name: "a raw".into(),
    };
    send(&mut w, &hello).await;
    let mut frames = FramedRead::new(r, FrameCodec::new(64 * 1024 * 1024));
    assert!(matches!(within("welcome", frames.next()).await, Some(Ok(Message::Welcome { .. }))));
    (frames, w)
}

fn put(request_id: u64, ws: WorkspaceId, path: &str, data: &[u8]) -> Message {
    Message::PutFile(PutFile {
        request_id,
        workspace_id: ws,
        file: FileUpload {
            path: path.into(),
            base_version: 0,
            size: data.len() as u64,
            mtime_ms: 0,
            mode: 0o644,
            content_hash: chunking::hash(data),
            chunks: scan(data).unwrap().refs(),
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_large_upload_is_readable_before_its_commit_and_an_abandoned_one_commits_nothing() {
    let cluster = Cluster::new(Backend::Sqlite, false);
    let n = cluster.node().await;
    let (alice, ta) = cluster.user("alice");
    let (bob, tb) = cluster.user("bob");
    let (_carol, tc) = cluster.user("carol");
    let ws = cluster.workspace(alice, "Big");
    cluster.share(ws, bob, Role::Viewer, alice);
    let (b, mut be) = connect(n.addr, &tb, "b").await;
    within("subscribe", b.subscribe(ws, 0)).await.unwrap();
    let (_c, mut ce) = connect(n.addr, &tc, "c").await;
    let head = cluster.head_seq(ws);

    let data = noise(BIG, 21);
    let refs = scan(&data[..]).unwrap().refs();
    let (mut ar, mut aw) = raw(n.addr, &ta).await;
    send(&mut aw, &put(1, ws, "big.bin", &data)).await;
    let needed: Vec<Hash> = match within("NeedChunks", ar.next()).await {
        Some(Ok(Message::NeedChunks { hashes, .. })) => hashes,
        other => panic!("expected NeedChunks, got {other:?}"),
    };
    assert_eq!(needed, refs.iter().map(|c| c.hash).collect::<Vec<_>>(), "asked for in file order");

    match next_upload_notice(&mut be, "the announcement").await {
        Notice::UploadStarted { workspace_id, path, size, content_hash, device_id, chunks } => {
            assert_eq!((workspace_id, path.as_str(), size, device_id.as_str()), (ws, "big.bin", BIG as u64, "a-raw"));
            assert_eq!((content_hash, chunks), (chunking::hash(&data), refs.clone()));
        }
        other => panic!("expected UploadStarted, got {other:?}"),
    }

    // Everything but the last chunk: B can read a durable prefix while A holds the rest back.
    let mut at = 0usize;
    for c in &refs[..refs.len() - 1] {
        let chunk = data[at..at + c.len as usize].to_vec();
        send(&mut aw, &Message::Chunk { request_id: 1, hash: c.hash, format: 0, payload: chunk }).await;
        at += c.len as usize;
    }
    let durable = match next_upload_notice(&mut be, "progress").await {
        Notice::UploadProgress { workspace_id, content_hash, durable } => {
            assert_eq!((workspace_id, content_hash), (ws, chunking::hash(&data)));
            durable as usize
        }
        other => panic!("expected UploadProgress, got {other:?}"),
    };
    assert!(durable > 0 && durable < refs.len(), "durable prefix {durable} of {}", refs.len());
    let prefix: Vec<Hash> = refs[..durable].iter().map(|c| c.hash).collect();
    let got = within("chunks before the commit", b.chunks(ws, prefix)).await.unwrap();
    let fetched: Vec<u8> = got.concat();
    assert_eq!(fetched[..], data[..fetched.len()], "the durable prefix is the file's beginning");
    assert_eq!(cluster.head_seq(ws), head, "nothing is committed yet");

    // The last chunk: committed, and the Change names the same content.
    let last = refs.last().unwrap();
    send(&mut aw, &Message::Chunk { request_id: 1, hash: last.hash, format: 0, payload: data[at..].to_vec() }).await;
    let seq = loop {
        match within("Committed", ar.next()).await {
            Some(Ok(Message::Committed { seq, .. })) => break seq,
            Some(Ok(_)) => continue,
            other => panic!("expected Committed, got {other:?}"),
        }
    };
    let change = next_change(&mut be, "the commit").await;
    assert_eq!((change.seq, change.content_hash), (seq, chunking::hash(&data)));
    let rest: Vec<Hash> = refs[durable..].iter().map(|c| c.hash).collect();
    let mut whole = fetched;
    whole.extend(within("the rest", b.chunks(ws, rest)).await.unwrap().concat());
    assert_eq!(chunking::hash(&whole), chunking::hash(&data));

    // An abandoned upload: announced, then abandoned; nothing committed.
    let other = noise(8 * 1024 * 1024, 22);
    let other_refs = scan(&other[..]).unwrap().refs();
    send(&mut aw, &put(2, ws, "gone.bin", &other)).await;
    match next_upload_notice(&mut be, "the second announcement").await {
        Notice::UploadStarted { path, .. } => assert_eq!(path, "gone.bin"),
        other => panic!("expected UploadStarted, got {other:?}"),
    }
    let first = &other_refs[0];
    send(
        &mut aw,
        &Message::Chunk { request_id: 2, hash: first.hash, format: 0, payload: other[..first.len as usize].to_vec() },
    )
    .await;
    send(&mut aw, &Message::Cancel { request_id: 2 }).await;
    loop {
        match next_upload_notice(&mut be, "the abandonment").await {
            Notice::UploadAbandoned { workspace_id, content_hash } => {
                assert_eq!((workspace_id, content_hash), (ws, chunking::hash(&other)));
                break;
            }
            Notice::UploadProgress { .. } => continue,
            other => panic!("expected UploadAbandoned, got {other:?}"),
        }
    }
    assert_eq!(cluster.head_seq(ws), seq, "the abandoned upload committed nothing");

    // Carol is no member: she heard none of it.
    while let Some(ev) = ce.next_within(Duration::from_millis(200)).await {
        assert!(!matches!(ev, Event::Notice(_)), "a non-member got {ev:?}");
    }
    drop((ar, aw));
    n.shutdown().await.unwrap();
}

/// The upload notices B hears until the `Change` of `seq`.
async fn notices_until(events: &mut Events, seq: i64) -> Vec<Notice> {
    let mut notices = Vec::new();
    within("the change", async {
        loop {
            match events.next().await {
                Some(Event::Notice(n)) if n.upload_workspace().is_some() => notices.push(n),
                Some(Event::Change(c)) if c.seq == seq => break,
                Some(Event::Closed { error, .. }) => panic!("closed ({error:?}) while waiting for seq {seq}"),
                None => panic!("events ended while waiting for seq {seq}"),
                Some(_) => continue,
            }
        }
    })
    .await;
    notices
}

/// A new large file is announced to B (on another node when there are two, through the bus); a
/// 4 KiB edit of it is not: B hears only the edit's `Change`, and receives a fraction of what
/// the announcement's chunk list alone would weigh.
async fn only_an_upload_of_mostly_new_content_is_announced(cluster: &Cluster, two_nodes: bool) {
    let na = cluster.node().await;
    let nb = if two_nodes { Some(cluster.node().await) } else { None };
    let (alice, ta) = cluster.user("alice");
    let (bob, tb) = cluster.user("bob");
    let ws = cluster.workspace(alice, "Big");
    cluster.share(ws, bob, Role::Viewer, alice);
    let (a, _ae) = connect(na.addr, &ta, "a").await;
    let (b, mut be) = connect(nb.as_ref().map_or(na.addr, |n| n.addr), &tb, "b").await;
    within("subscribe", b.subscribe(ws, 0)).await.unwrap();
    let local = tempfile::tempdir().unwrap();

    let mut data = noise(BIG, 23);
    let src = write_file(local.path(), "big.bin", &data);
    let v1 = within("upload", a.put_file(ws, "big.bin", &src, 0)).await.unwrap();
    let notices = notices_until(&mut be, v1.seq).await;
    let list = scan(&data[..]).unwrap().refs();
    assert!(
        notices.iter().any(|n| matches!(n, Notice::UploadStarted { chunks, .. } if *chunks == list)),
        "a new file is announced with its chunk list: {notices:?}"
    );

    let mid = BIG / 2 + 777;
    data[mid..mid + 4096].copy_from_slice(&noise(4096, 24));
    std::fs::write(&src, &data).unwrap();
    let received = b.bytes_received();
    let v2 = within("upload the edit", a.put_file(ws, "big.bin", &src, v1.seq)).await.unwrap();
    let notices = notices_until(&mut be, v2.seq).await;
    let received = b.bytes_received() - received;
    assert!(notices.is_empty(), "an edit is not announced: {notices:?}");
    let list_bytes = (list.len() * 33) as u64;
    assert!(
        received > 0 && received < list_bytes / 4,
        "B received {received} bytes for the edit's change (its list: {list_bytes})"
    );
    if let Some(nb) = nb {
        nb.shutdown().await.unwrap();
    }
    na.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_an_upload_of_mostly_new_content_is_announced_sqlite() {
    only_an_upload_of_mostly_new_content_is_announced(&Cluster::new(Backend::Sqlite, false), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_an_upload_of_mostly_new_content_is_announced_mariadb_two_nodes() {
    only_an_upload_of_mostly_new_content_is_announced(&Cluster::new(Backend::Mysql, true), true).await;
}

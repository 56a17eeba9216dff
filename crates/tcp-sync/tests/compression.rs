//! Chunks on the wire in their stored form (protocol 5): a compressible file costs fewer bytes
//! than its size both ways, an incompressible one travels raw; a compressed chunk that does not
//! decode within its length or to its hash is refused and nothing of it is stored or committed;
//! a protocol 4 client is told clearly that the node speaks 5.

mod common;

use common::*;
use filesync_core::chunking::{hash, ChunkRef};
use filesync_core::db::Backend;
use filesync_core::encoding::{Encoded, FORMAT_RAW, FORMAT_ZSTD};
use filesync_core::proto::frame::{encode_frame, FrameCodec};
use filesync_core::proto::{ErrorCode, FileUpload, Message, PutFile, PROTOCOL_VERSION};
use filesync_core::testing::text;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;

/// 6 MiB of source-like text: ~100 chunks.
const SIZE: usize = 6 * 1024 * 1024;

async fn compressible_files_travel_compressed(cluster: &Cluster) {
    let n = cluster.node().await;
    let (alice, ta) = cluster.user("alice");
    let ws = cluster.workspace(alice, "Code");
    let local = tempfile::tempdir().unwrap();
    let (a, _ae) = connect(n.addr, &ta, "a").await;
    let (b, mut be) = connect(n.addr, &ta, "b").await;
    within("subscribe", b.subscribe(ws, 0)).await.unwrap();

    let source = text(SIZE, 1);
    let src = write_file(local.path(), "src.rs", &source);
    let sent = a.bytes_sent();
    within("upload text", a.put_file(ws, "src.rs", &src, 0)).await.unwrap();
    let sent = a.bytes_sent() - sent;
    // Source text compresses 3-4x; well under half is what a user sees on the wire.
    assert!(sent < SIZE as u64 / 2, "uploading {SIZE} bytes of text sent {sent} bytes");

    let ev = next_change(&mut be, "the text upload").await;
    let copy = local.path().join("copy.rs");
    let received = b.bytes_received();
    within("download text", b.download(ws, ev.seq, &copy)).await.unwrap();
    let received = b.bytes_received() - received;
    assert!(received < SIZE as u64 / 2, "downloading {SIZE} bytes of text took {received} bytes");
    assert_eq!(std::fs::read(&copy).unwrap(), source);
    // The node sent the chunks as stored (compressed), not decompressed and compressed again.
    let m = n.node.metrics().render();
    let payload = metric(&m, "filesync_tcp_chunk_bytes_sent_total");
    assert!(payload > 0.0 && payload < SIZE as f64 / 2.0, "chunk payload sent {payload}");

    // Random bytes do not compress: they travel raw, a few bytes of framing per chunk more.
    let random = noise(SIZE, 2);
    let src = write_file(local.path(), "blob.bin", &random);
    let sent = a.bytes_sent();
    within("upload noise", a.put_file(ws, "blob.bin", &src, 0)).await.unwrap();
    let sent = a.bytes_sent() - sent;
    assert!(sent > SIZE as u64 && sent < SIZE as u64 + 20_000, "uploading {SIZE} random bytes sent {sent}");
    let ev = next_change(&mut be, "the noise upload").await;
    let copy = local.path().join("copy.bin");
    within("download noise", b.download(ws, ev.seq, &copy)).await.unwrap();
    assert_eq!(std::fs::read(&copy).unwrap(), random);
    n.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compressible_files_travel_compressed_sqlite() {
    compressible_files_travel_compressed(&Cluster::new(Backend::Sqlite, false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compressible_files_travel_compressed_mariadb() {
    compressible_files_travel_compressed(&Cluster::new(Backend::Mysql, true)).await;
}

/// Sends `frames` on a raw connection after `Hello`, then a `Ping`; returns every answer up to the `Pong`.
async fn raw_session(addr: std::net::SocketAddr, token: &str, frames: &[Message]) -> Vec<Message> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let hello = Message::Hello {
        protocol_version: PROTOCOL_VERSION,
        token: token.into(),
        device_id: "raw".into(),
        device_name: "raw".into(),
    };
    for m in std::iter::once(&hello).chain(frames).chain([&Message::Ping { nonce: 5 }]) {
        s.write_all(&encode_frame(m, usize::MAX).unwrap()).await.unwrap();
    }
    let mut answers = Vec::new();
    let mut read = FramedRead::new(s, FrameCodec::new(64 * 1024 * 1024));
    within("answers up to the pong", async {
        while let Some(Ok(m)) = read.next().await {
            match m {
                Message::Pong { .. } => break,
                Message::Welcome { .. } => {}
                other => answers.push(other),
            }
        }
    })
    .await;
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_compressed_chunks_are_refused_and_nothing_is_stored() {
    let cluster = Cluster::new(Backend::Sqlite, false);
    let n = cluster.node().await;
    let (alice, ta) = cluster.user("alice");
    let ws = cluster.workspace(alice, "Code");
    // One chunk of 100,000 bytes of text.
    let data = text(100_000, 3);
    let h = hash(&data);
    let put = |request_id| {
        Message::PutFile(PutFile {
            request_id,
            workspace_id: ws,
            file: FileUpload {
                path: "a.rs".into(),
                base_version: 0,
                size: data.len() as u64,
                mtime_ms: 0,
                mode: 0o644,
                content_hash: h,
                chunks: vec![ChunkRef { hash: h, len: data.len() as u32 }],
            },
        })
    };
    let chunk = |request_id, format, payload: Vec<u8>| Message::Chunk { request_id, hash: h, format, payload };
    // 16 MiB of zeros in a few hundred bytes: it would decode far past the chunk's 100,000.
    let bomb = Encoded::of(vec![0u8; 16 << 20]);
    assert!(bomb.format == FORMAT_ZSTD && bomb.payload.len() < 4096);
    // The chunk's text and 100 more bytes: decodes past the chunk's length, its bound.
    let longer = Encoded::of([&data[..], &[b'x'; 100][..]].concat());
    // Valid zstd of other text of the same length: the hash does not match.
    let other = Encoded::of(text(100_000, 4));
    assert_eq!(other.format, FORMAT_ZSTD);
    let good = Encoded::of(data.clone());
    assert_eq!(good.format, FORMAT_ZSTD);
    let mut flipped = good.payload.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x55;
    let frames = vec![
        put(1),
        chunk(1, FORMAT_ZSTD, bomb.payload),
        put(2),
        chunk(2, FORMAT_ZSTD, longer.payload),
        put(3),
        chunk(3, FORMAT_ZSTD, other.payload),
        put(4),
        chunk(4, FORMAT_ZSTD, flipped),
        put(5),
        chunk(5, FORMAT_ZSTD, b"not a zstd frame".to_vec()),
        put(6),
        chunk(6, 7, good.payload.clone()),
        // Raw, but not the chunk's length.
        put(7),
        chunk(7, FORMAT_RAW, data[1..].to_vec()),
    ];
    let answers = raw_session(n.addr, &ta, &frames).await;
    let mut refused = Vec::new();
    for m in answers {
        match m {
            Message::NeedChunks { hashes, .. } => assert_eq!(hashes, vec![h]),
            Message::Error { request_id, code, message } => refused.push((request_id, code, message)),
            other => panic!("unexpected answer {other:?}"),
        }
    }
    let codes: Vec<(u64, &str)> = refused.iter().map(|(r, c, _)| (*r, c.as_str())).collect();
    let mismatch = ErrorCode::ChunkMismatch.as_str();
    assert_eq!(codes, (1..=7).map(|r| (r, mismatch)).collect::<Vec<_>>(), "{refused:?}");
    assert!(refused[0].2.contains("zstd"), "the bomb is refused as undecodable: {refused:?}");
    assert!(refused[2].2.contains("hash"), "the wrong text is refused by its hash: {refused:?}");
    assert_eq!(cluster.stored_chunks(), 0, "nothing of a refused chunk is stored");
    let head = filesync_core::db::journal::head_seq(&mut cluster.db.conn().unwrap(), ws).unwrap();
    assert_eq!(head.unwrap_or(0), 0, "nothing is committed");

    // The good compressed chunk is stored as it came, and the file reads back whole.
    let answers = raw_session(n.addr, &ta, &[put(8), chunk(8, good.format, good.payload.clone())]).await;
    assert!(matches!(answers.last(), Some(Message::Committed { request_id: 8, .. })), "{answers:?}");
    assert_eq!(cluster.stored_chunks(), 1);
    let (b, _be) = connect(n.addr, &ta, "b").await;
    let local = tempfile::tempdir().unwrap();
    let copy = local.path().join("a.rs");
    within("download", b.download(ws, cluster.head_seq(ws), &copy)).await.unwrap();
    assert_eq!(std::fs::read(&copy).unwrap(), data);
    n.shutdown().await.unwrap();
}

/// A client of the previous protocol cannot decode version 5 chunks: it is refused at once, and
/// told which version the node speaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_protocol_4_client_is_told_to_upgrade() {
    let cluster = Cluster::new(Backend::Sqlite, false);
    let n = cluster.node().await;
    let (_alice, ta) = cluster.user("alice");
    let mut s = TcpStream::connect(n.addr).await.unwrap();
    let hello = Message::Hello { protocol_version: 4, token: ta, device_id: "old".into(), device_name: "old".into() };
    s.write_all(&encode_frame(&hello, usize::MAX).unwrap()).await.unwrap();
    let mut read = FramedRead::new(s, FrameCodec::default());
    let first = within("the refusal", read.next()).await.expect("an answer").expect("a frame");
    match first {
        Message::Error { request_id: 0, code, message } => {
            assert_eq!(code, ErrorCode::VersionMismatch.as_str());
            assert_eq!(message, "this node speaks protocol version 5, not 4");
        }
        other => panic!("expected version_mismatch, got {other:?}"),
    }
    assert!(within("the close", read.next()).await.is_none(), "the connection is closed");
    n.shutdown().await.unwrap();
}

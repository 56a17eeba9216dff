//! An upload whose commit the node answers `chunks_released` — garbage collection released a chunk
//! the node had said the workspace held; nothing was committed — is sent again, and the node's
//! second `NeedChunks` (now naming the released chunk) is answered with it.
//! The node here is a script written with the real frame codec.

use std::sync::{Arc, Mutex};

use futures::{SinkExt, StreamExt};
use tokio_util::codec::Framed;

use filesync_core::chunking::Hash;
use filesync_core::proto::frame::FrameCodec;
use filesync_core::proto::{ErrorCode, Message};
use filesync_core::{UserId, WorkspaceId};
use filesync_proto_client::{Client, ConnectOptions};

/// What the scripted node saw: the uploads asked for, and the chunks received.
#[derive(Default)]
struct Seen {
    puts: usize,
    chunks: Vec<Hash>,
}

/// First upload: "you hold everything" then, at commit, `chunks_released`. Second: the chunk is needed.
async fn serve(stream: tokio::net::TcpStream, seen: Arc<Mutex<Seen>>) {
    let mut framed = Framed::new(stream, FrameCodec::default());
    let mut pending = None;
    while let Some(Ok(msg)) = framed.next().await {
        let reply: Vec<Message> = match msg {
            Message::Hello { .. } => vec![Message::Welcome {
                user_id: UserId(1),
                node_id: "script".into(),
                session_id: "s".into(),
                max_frame_bytes: 16 << 20,
                heartbeat_secs: 15,
            }],
            Message::Ping { nonce } => vec![Message::Pong { nonce }],
            Message::PutFile(put) => {
                let n = {
                    let mut s = seen.lock().unwrap();
                    s.puts += 1;
                    s.puts
                };
                if n == 1 {
                    vec![
                        Message::NeedChunks { request_id: put.request_id, hashes: Vec::new() },
                        Message::error(
                            put.request_id,
                            ErrorCode::ChunksReleased,
                            "chunks were collected; send it again",
                        ),
                    ]
                } else {
                    let hashes: Vec<Hash> = put.file.chunks.iter().map(|c| c.hash).collect();
                    pending = Some((put, hashes.len()));
                    vec![Message::NeedChunks { request_id: pending.as_ref().unwrap().0.request_id, hashes }]
                }
            }
            Message::Chunk { hash, .. } => {
                seen.lock().unwrap().chunks.push(hash);
                match &mut pending {
                    Some((put, left)) => {
                        *left -= 1;
                        if *left == 0 {
                            vec![Message::Committed {
                                request_id: put.request_id,
                                workspace_id: put.workspace_id,
                                version: 7,
                                seq: 7,
                                path: put.file.path.clone(),
                                conflict_path: None,
                            }]
                        } else {
                            Vec::new()
                        }
                    }
                    None => Vec::new(),
                }
            }
            _ => Vec::new(),
        };
        for m in reply {
            if framed.send(m).await.is_err() {
                return;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_refused_as_unavailable_is_sent_again_with_the_missing_chunks() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        serve(stream, s).await;
    });
    let (client, _events) = Client::connect(addr, ConnectOptions::new("token", "dev", "dev name")).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("f");
    std::fs::write(&local, b"content whose chunk garbage collection released").unwrap();
    let done = client.put_file(WorkspaceId(1), "f", &local, 0).await.unwrap();
    assert_eq!((done.seq, done.path.as_str()), (7, "f"));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.puts, 2, "sent again once");
    assert_eq!(seen.chunks, vec![*blake3::hash(b"content whose chunk garbage collection released").as_bytes()]);
}

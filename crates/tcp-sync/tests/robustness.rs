//! Misbehaving peers, a Redis restart, slow consumers, the connection cap,
//! shutdown and the admin endpoint. Raw sockets speak bytes here, so that
//! what the node does with input the client library would never send is tested.

mod common;

use std::time::Duration;

use common::*;
use filesync_core::db::Backend;
use filesync_core::proto::frame::{encode_frame, FrameCodec};
use filesync_core::proto::{ErrorCode, Message, PROTOCOL_VERSION};
use filesync_core::{Role, UserId};
use filesync_proto_client::Event;
use filesync_tcp_sync::Tuning;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;

fn hello(token: &str) -> Message {
    Message::Hello {
        protocol_version: PROTOCOL_VERSION,
        token: token.into(),
        device_id: "raw".into(),
        device_name: "raw socket".into(),
    }
}

fn frame(msg: &Message) -> Vec<u8> {
    encode_frame(msg, usize::MAX).unwrap()
}

/// Sends `bytes`, then reads every frame until the node closes: returns them.
async fn send_and_collect(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<Message> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut frames = FramedRead::new(s, FrameCodec::default());
    let mut got = Vec::new();
    within("the node to answer and close", async {
        while let Some(f) = frames.next().await {
            match f {
                Ok(m) => got.push(m),
                Err(_) => break,
            }
        }
    })
    .await;
    got
}

fn error_code(frames: &[Message]) -> String {
    match frames.last() {
        Some(Message::Error { request_id: 0, code, .. }) => code.clone(),
        other => panic!("expected a connection error frame last, got {other:?} in {frames:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_frames_are_answered_and_closed_while_others_keep_syncing() {
    let cluster = Cluster::new(Backend::Mysql, true);
    let tuning = Tuning {
        handshake_timeout: Duration::from_secs(1),
        // The good client pings every second, so only the silent raw socket hits the idle timeout.
        heartbeat: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(3),
        ..Tuning::default()
    };
    let n = cluster.node_with(cluster.config(), tuning).await;
    let (alice, ta) = cluster.user("alice");
    let ws = cluster.workspace(alice, "Docs");
    let local = tempfile::tempdir().unwrap();
    let (a, mut ae) = connect(n.addr, &ta, "good").await;
    a.subscribe(ws, 0).await.unwrap();
    let grant = cluster.grant(alice);
    let expired =
        cluster.jwt.issue_at(alice, "alice@example.com", grant, chrono::Utc::now().timestamp() - 100, 10).unwrap().0;
    let wrong_key =
        filesync_core::jwt::JwtKeys::new(&filesync_core::Secret::new("another-secret-another-secret-0123456"), 60)
            .issue(alice, "alice@example.com", grant)
            .unwrap()
            .0;
    let mut wrong_version = frame(&Message::Hello {
        protocol_version: PROTOCOL_VERSION + 1,
        token: ta.clone(),
        device_id: "d".into(),
        device_name: "n".into(),
    });
    let mut after_welcome = frame(&hello(&ta));
    after_welcome.extend([0, 0, 0, 3, 0xff, 0xff, 0xff]);
    let cases: Vec<(&str, Vec<u8>, ErrorCode)> = vec![
        ("garbage", vec![0, 0, 0, 5, 0xde, 0xad, 0xbe, 0xef, 0xff], ErrorCode::BadFrame),
        ("http request", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), ErrorCode::FrameTooLarge),
        // The body of this frame never comes: the node must answer from the prefix alone.
        ("huge length prefix", vec![0x7f, 0xff, 0xff, 0xff, 1, 2, 3], ErrorCode::FrameTooLarge),
        ("empty frame", vec![0, 0, 0, 0], ErrorCode::BadFrame),
        ("frame before Hello", frame(&Message::Ping { nonce: 1 }), ErrorCode::HelloRequired),
        ("wrong token", frame(&hello("not-a-jwt")), ErrorCode::Unauthorized),
        ("token signed with another key", frame(&hello(&wrong_key)), ErrorCode::Unauthorized),
        ("expired token", frame(&hello(&expired)), ErrorCode::TokenExpired),
        ("other protocol version", std::mem::take(&mut wrong_version), ErrorCode::VersionMismatch),
        ("silence", Vec::new(), ErrorCode::HandshakeTimeout),
        ("garbage after Welcome", after_welcome, ErrorCode::BadFrame),
        ("silence after Welcome", frame(&hello(&ta)), ErrorCode::IdleTimeout),
    ];
    for (i, (what, bytes, want)) in cases.into_iter().enumerate() {
        let frames = send_and_collect(n.addr, &bytes).await;
        assert_eq!(error_code(&frames), want.as_str(), "{what}");
        // The good client on the same node keeps syncing.
        let f = write_file(local.path(), &format!("f{i}"), what.as_bytes());
        let c = match a.put_file(ws, &format!("after-{i}.txt"), &f, 0).await {
            Ok(c) => c,
            Err(e) => panic!("{what}: {e}; last event {:?}", ae.next_within(Duration::from_secs(1)).await),
        };
        assert_eq!(next_change(&mut ae, what).await.seq, c.seq, "{what}");
    }
    let failures = n.node.metrics().render();
    assert!(failures.contains("filesync_tcp_handshake_failures_total{code=\"unauthorized\"} 2"), "{failures}");
    n.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_restart_mid_stream_both_nodes_recover() {
    let mut cluster = Cluster::new(Backend::Mysql, true);
    // Only the bus can deliver here: the periodic head check is pushed out of the test's reach.
    let tuning = Tuning { head_check_interval: Duration::from_secs(3600), ..Tuning::default() };
    let n1 = cluster.node_with(cluster.config(), tuning.clone()).await;
    let n2 = cluster.node_with(cluster.config(), tuning).await;
    let (alice, ta) = cluster.user("alice");
    let (bob, tb) = cluster.user("bob");
    let ws = cluster.workspace(alice, "Docs");
    cluster.share(ws, bob, Role::Editor, alice);
    let local = tempfile::tempdir().unwrap();
    let (a, _ae) = connect(n1.addr, &ta, "a").await;
    let (b, mut be) = connect(n2.addr, &tb, "b").await;
    b.subscribe(ws, 0).await.unwrap();
    let f = write_file(local.path(), "f", b"one");
    let c1 = a.put_file(ws, "one.txt", &f, 0).await.unwrap();
    assert_eq!(next_change(&mut be, "before the restart").await.seq, c1.seq);

    cluster.redis.as_mut().unwrap().kill();
    // Commits do not need Redis.
    let c2 = within("commit without redis", a.put_file(ws, "two.txt", &f, 0)).await.unwrap();
    cluster.redis.as_mut().unwrap().restart();
    // The change made while Redis was away arrives once both nodes are back on the bus...
    assert_eq!(next_change(&mut be, "the change made during the outage").await.seq, c2.seq);
    // ...and live changes flow again, without duplicates.
    let c3 = a.put_file(ws, "three.txt", &f, 0).await.unwrap();
    assert_eq!(next_change(&mut be, "a change after the restart").await.seq, c3.seq);
    let mut bus_reconnects = 0.0;
    for line in n2.node.metrics().render().lines() {
        if let Some(v) = line.strip_prefix("filesync_bus_reconnects_total ") {
            bus_reconnects = v.parse().unwrap();
        }
    }
    assert!(bus_reconnects >= 1.0);
    let download = local.path().join("two");
    b.download(ws, c2.seq, &download).await.unwrap();
    assert_eq!(std::fs::read(download).unwrap(), b"one");
    n1.shutdown().await.unwrap();
    n2.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_consumer_is_disconnected_and_others_are_not() {
    let cluster = Cluster::new(Backend::Sqlite, false);
    let tuning = Tuning { event_queue: 4, response_queue: 2, ..Tuning::default() };
    let n = cluster.node_with(cluster.config(), tuning).await;
    let (alice, ta) = cluster.user("alice");
    let ws = cluster.workspace(alice, "Docs");
    let local = tempfile::tempdir().unwrap();
    let (a, mut ae) = connect(n.addr, &ta, "fast").await;
    a.subscribe(ws, 0).await.unwrap();
    let big = write_file(local.path(), "big", &noise(4 * 1024 * 1024, 5));
    let c = a.put_file(ws, "big.bin", &big, 0).await.unwrap();
    next_change(&mut ae, "the big file").await;
    let manifest = a.manifest(ws, c.seq).await.unwrap();

    // A client that subscribes, asks for 40 MiB and never reads.
    let mut raw = TcpStream::connect(n.addr).await.unwrap();
    let mut out = frame(&hello(&ta));
    out.extend(frame(&Message::Subscribe { request_id: 1, workspace_id: ws, since_seq: c.seq }));
    for i in 0..10 {
        let hashes = manifest.chunks.iter().map(|c| c.hash).collect();
        out.extend(frame(&Message::GetChunks { request_id: 2 + i, workspace_id: ws, hashes }));
    }
    raw.write_all(&out).await.unwrap();
    // Live events pile up behind the stalled downloads until its queue overflows.
    for i in 0..20 {
        let f = write_file(local.path(), &format!("s{i}"), format!("small {i}").as_bytes());
        let done = a.put_file(ws, &format!("small-{i}.txt"), &f, 0).await.unwrap();
        assert_eq!(next_change(&mut ae, "the fast client's change").await.seq, done.seq);
    }
    within("the slow consumer to be dropped", async {
        while n.node.metrics().slow_consumers_dropped.get() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // Its socket ends after whatever was already in flight.
    within("the slow socket to close", async {
        let mut buf = vec![0u8; 1 << 20];
        while raw.read(&mut buf).await.map(|n| n > 0).unwrap_or(false) {}
    })
    .await;
    n.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connection_cap_shutdown_goodbye_and_admin_endpoint() {
    let cluster = Cluster::new(Backend::Sqlite, false);
    let config = filesync_core::config::Config { max_connections: 1, ..cluster.config() };
    let n = cluster.node_with(config, Tuning::default()).await;
    let (_alice, ta) = cluster.user("alice");
    let (a, mut ae) = connect(n.addr, &ta, "first").await;
    assert_eq!(a.welcome().user_id, UserId(1));
    let refused = send_and_collect(n.addr, &frame(&hello(&ta))).await;
    assert_eq!(error_code(&refused), "busy");
    assert_eq!(n.node.local_presence().len(), 1);

    // The admin endpoint.
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let admin_task = tokio::spawn(filesync_tcp_sync::run_admin(admin, n.node.clone(), stop.clone().cancelled_owned()));
    let get = |path: &'static str| async move {
        let mut s = TcpStream::connect(admin_addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).await.unwrap();
        body
    };
    assert!(get("/healthz").await.starts_with("HTTP/1.0 200"));
    assert!(get("/readyz").await.starts_with("HTTP/1.0 200"));
    let metrics = get("/metrics").await;
    assert!(metrics.contains("filesync_tcp_connections_active 1"), "{metrics}");
    assert!(metrics.contains("filesync_tcp_connections_refused_busy_total 1"), "{metrics}");
    assert!(get("/nope").await.starts_with("HTTP/1.0 404"));

    // Shutdown: the client is told to go elsewhere, and serve returns.
    let node = n.node.clone();
    n.shutdown().await.unwrap();
    let goodbye = within("goodbye", ae.next()).await;
    assert!(matches!(goodbye, Some(Event::Goodbye { .. })), "{goodbye:?}");
    assert!(matches!(within("close", ae.next()).await, Some(Event::Closed { .. })));
    assert!(!node.ready().await);
    assert!(get("/readyz").await.starts_with("HTTP/1.0 503"));
    stop.cancel();
    admin_task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn presence_is_recorded_in_redis_with_a_ttl_and_removed_on_close() {
    use filesync_core::proto::presence::{conn_key_of_member, user_key, PresenceEntry};
    use redis::AsyncCommands;

    let cluster = Cluster::new(Backend::Sqlite, true);
    let n = cluster.node().await;
    let (alice, ta) = cluster.user("alice");
    let (a, _ae) = connect(n.addr, &ta, "alice-laptop").await;
    let mut r = redis::Client::open(cluster.redis.as_ref().unwrap().url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let members: Vec<String> = r.zrange(user_key(alice), 0, -1).await.unwrap();
    assert_eq!(members.len(), 1);
    let key = conn_key_of_member(&members[0]);
    let fields: std::collections::HashMap<String, String> = r.hgetall(&key).await.unwrap();
    let entry = PresenceEntry::from_fields(&fields).expect("a complete presence entry");
    assert_eq!(
        (entry.user_id, entry.device_id.as_str(), entry.node_id.as_str()),
        (alice, "alice-laptop", n.node.node_id())
    );
    assert_eq!(entry.session_id, a.welcome().session_id);
    let ttl: i64 = r.ttl(&key).await.unwrap();
    assert!(ttl > 0 && ttl <= 90, "ttl {ttl}");

    drop(a);
    within("presence to be removed", async {
        loop {
            let exists: bool = r.exists(&key).await.unwrap();
            let left: Vec<String> = r.zrange(user_key(alice), 0, -1).await.unwrap();
            if !exists && left.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    n.shutdown().await.unwrap();
}

//! What an operator relies on: TLS on the sync port (certificates made at
//! test time), refusing to start on a bad certificate, and the figures on
//! `/metrics` after real traffic.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use filesync_core::db::Backend;
use filesync_core::Role;
use filesync_proto_client::{Client, ClientError, ConnectOptions};
use filesync_tcp_sync::{Node, Tuning};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

/// The admin endpoint of `node` on a fresh port; stops when the token is cancelled (or dropped with the runtime).
async fn start_admin(node: &Node) -> (SocketAddr, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(filesync_tcp_sync::run_admin(listener, node.clone(), stop.clone().cancelled_owned()));
    (addr, stop)
}

/// Polls `/metrics` until `name` reaches `at_least`; returns the exposition.
async fn metrics_reaching(admin: SocketAddr, name: &str, at_least: f64) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = admin_get(admin, "/metrics").await;
        if metric(&text, name) >= at_least {
            return text;
        }
        assert!(tokio::time::Instant::now() < deadline, "{name} never reached {at_least}:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tls_node_syncs_trusting_clients_and_refuses_the_others_cleanly() {
    let certs = TestCerts::new();
    let cluster = Cluster::new(Backend::Sqlite, false);
    let n = cluster.node_with(certs.serve(cluster.config()), Tuning::default()).await;
    let (admin, _admin_stop) = start_admin(&n.node).await;
    let (alice, ta) = cluster.user("alice");
    let (bob, tb) = cluster.user("bob");
    let ws = cluster.workspace(alice, "Shared");
    cluster.share(ws, bob, Role::Editor, alice);
    let local = tempfile::tempdir().unwrap();

    // With the CA: upload on one connection, event and verified download on the other.
    let (a, _ae) = connect_tls(n.addr, &certs, &ta, "alice-laptop").await;
    let (b, mut be) = connect_tls(n.addr, &certs, &tb, "bob-desk").await;
    within("subscribe", b.subscribe(ws, 0)).await.unwrap();
    let report = noise(600_000, 7);
    let src = write_file(local.path(), "report.bin", &report);
    within("upload over TLS", a.put_file(ws, "report.bin", &src, 0)).await.unwrap();
    let ev = next_change(&mut be, "the upload over TLS").await;
    let got = local.path().join("got.bin");
    within("download over TLS", b.download(ws, ev.seq, &got)).await.unwrap();
    assert_eq!(std::fs::read(&got).unwrap(), report);

    // Without the CA: one clear line that says what to do.
    let url = format!("tls://localhost:{}", n.addr.port());
    let err = within("untrusted", Client::connect_to(&url, ConnectOptions::new(&ta, "stranger", "stranger")))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Untrusted(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("TLS certificate is not trusted") && msg.contains("pass --ca FILE"), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");

    // Plain TCP to the TLS port: refused at once, not left hanging.
    let plain = within("plain TCP", Client::connect(n.addr, ConnectOptions::new(&ta, "plain", "plain"))).await;
    let err = plain.expect_err("a plain client got in");
    assert!(err.to_string().contains("use tls://HOST:PORT"), "{err}");
    metrics_reaching(admin, "filesync_tcp_handshake_failures_total{code=\"tls\"}", 2.0).await;

    // The TLS clients on the same node were not disturbed.
    let second = noise(5_000, 8);
    let src = write_file(local.path(), "second.bin", &second);
    within("second upload", a.put_file(ws, "second.bin", &src, 0)).await.unwrap();
    let ev = next_change(&mut be, "the upload after the refusals").await;
    assert_eq!(ev.path, "second.bin");
    let text = admin_get(admin, "/metrics").await;
    assert_eq!(metric(&text, "filesync_tcp_connections_active"), 2.0, "{text}");

    // TLS to a plain node: a clear error too.
    let plain_node = cluster.node().await;
    let url = format!("tls://localhost:{}", plain_node.addr.port());
    let err = within("TLS to plain", Client::connect_to(&url, certs.trusting(&ta, "confused"))).await.unwrap_err();
    assert!(matches!(err, ClientError::Tls(_)), "{err:?}");
    assert!(err.to_string().contains("without tls://"), "{err}");
    n.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_handshake_counts_toward_the_hello_deadline() {
    let certs = TestCerts::new();
    let cluster = Cluster::new(Backend::Sqlite, false);
    let tuning = Tuning { handshake_timeout: Duration::from_secs(1), ..Tuning::default() };
    let n = cluster.node_with(certs.serve(cluster.config()), tuning).await;
    let (admin, _stop) = start_admin(&n.node).await;
    // Connects and says nothing at all: the node hangs up at the deadline.
    let mut silent = tokio::net::TcpStream::connect(n.addr).await.unwrap();
    let mut buf = Vec::new();
    let read = within("the node hangs up", silent.read_to_end(&mut buf)).await;
    assert!(read.is_ok() || buf.is_empty(), "{read:?}");
    metrics_reaching(admin, "filesync_tcp_handshake_failures_total{code=\"handshake_timeout\"}", 1.0).await;
}

#[tokio::test]
async fn a_node_refuses_to_start_on_a_bad_certificate_or_key() {
    let certs = TestCerts::new();
    let other = TestCerts::new();
    let cluster = Cluster::new(Backend::Sqlite, false);
    let start = |cert: std::path::PathBuf, key: std::path::PathBuf| {
        let config = filesync_core::config::Config { tls_cert: Some(cert), tls_key: Some(key), ..cluster.config() };
        async move { format!("{:#}", Node::start(config).await.expect_err("the node must not start")) }
    };
    let missing = certs.dir.path().join("missing.pem");
    let err = start(missing.clone(), certs.key.clone()).await;
    assert!(err.contains("cannot read the certificate chain") && err.contains("FILESYNC_TLS_CERT"), "{err}");
    let err = start(certs.cert.clone(), missing).await;
    assert!(err.contains("cannot read the private key") && err.contains("FILESYNC_TLS_KEY"), "{err}");
    let empty = certs.dir.path().join("empty.pem");
    std::fs::write(&empty, "no certificate here\n").unwrap();
    let err = start(empty, certs.key.clone()).await;
    assert!(err.contains("holds no certificate"), "{err}");
    let err = start(certs.cert.clone(), other.key.clone()).await;
    assert!(err.contains("do not fit together"), "{err}");
    let half = filesync_core::config::Config { tls_cert: Some(certs.cert.clone()), ..cluster.config() };
    assert!(Node::start(half).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_show_connections_traffic_commits_storage_and_the_bus() {
    let cluster = Cluster::new(Backend::Mysql, true);
    let n1 = cluster.node().await;
    let n2 = cluster.node().await;
    let (admin1, _s1) = start_admin(&n1.node).await;
    let (admin2, _s2) = start_admin(&n2.node).await;
    let (alice, ta) = cluster.user("alice");
    let (bob, tb) = cluster.user("bob");
    let ws = cluster.workspace(alice, "Shared");
    cluster.share(ws, bob, Role::Editor, alice);
    let local = tempfile::tempdir().unwrap();

    let (a, _ae) = connect(n1.addr, &ta, "alice-laptop").await;
    let (b, mut be) = connect(n2.addr, &tb, "bob-desk").await;
    within("subscribe", b.subscribe(ws, 0)).await.unwrap();
    let data = noise(400_000, 11);
    let src = write_file(local.path(), "plan.bin", &data);
    within("upload", a.put_file(ws, "plan.bin", &src, 0)).await.unwrap();
    next_change(&mut be, "the upload, across the bus").await;
    // Node 2's Redis subscription is surely in place now (the first change may have come by the head check).
    let src = write_file(local.path(), "notes.txt", b"agenda");
    within("second upload", a.put_file(ws, "notes.txt", &src, 0)).await.unwrap();
    next_change(&mut be, "the second upload").await;
    // Bob edits from the old base: a conflict copy on node 2.
    let src = write_file(local.path(), "plan-bob.bin", &noise(1_000, 12));
    let c = within("conflicting upload", b.put_file(ws, "plan.bin", &src, 0)).await.unwrap();
    assert!(c.conflict_path.is_some());
    // A bad token: a handshake failure with its code.
    let bad = within("bad token", Client::connect(n1.addr, ConnectOptions::new("not-a-token", "x", "x"))).await;
    assert!(bad.is_err());

    let m1 = metrics_reaching(admin1, "filesync_tcp_handshake_failures_total{code=\"unauthorized\"}", 1.0).await;
    let m2 = metrics_reaching(admin2, "filesync_tcp_bus_lag_seconds_count", 1.0).await;
    let at_least = |text: &str, name: &str, min: f64| {
        let v = metric(text, name);
        assert!(v >= min, "{name} = {v}, expected at least {min}:\n{text}");
    };
    at_least(&m1, "filesync_tcp_connections_active", 1.0);
    at_least(&m1, "filesync_tcp_connections_total", 2.0);
    at_least(&m2, "filesync_tcp_subscriptions_active", 1.0);
    at_least(&m1, "filesync_tcp_frames_in_total", 3.0);
    at_least(&m1, "filesync_tcp_frames_out_total", 2.0);
    at_least(&m1, "filesync_tcp_bytes_in_total", data.len() as f64);
    at_least(&m2, "filesync_tcp_bytes_out_total", 200.0);
    at_least(&m1, "filesync_tcp_commits_total{op=\"put\"}", 1.0);
    at_least(&m2, "filesync_tcp_conflict_copies_total", 1.0);
    at_least(&m1, "filesync_tcp_chunk_store_chunks_written_total", 1.0);
    // Noise does not compress: what is at rest is about what was sent.
    at_least(&m1, "filesync_tcp_chunk_store_bytes_written_total", data.len() as f64);
    // The chunk store's backend: node 1 sealed a pack per upload (a directory: fsync + rename).
    at_least(&m1, "filesync_storage_requests_total{op=\"put\"}", 2.0);
    at_least(&m1, "filesync_storage_bytes_total{direction=\"written\"}", data.len() as f64);
    assert_eq!(metric(&m1, "filesync_storage_requests_total{op=\"multipart\"}"), 0.0, "{m1}");
    at_least(&m1, "filesync_bus_messages_published_total", 1.0);
    at_least(&m2, "filesync_bus_messages_received_total", 1.0);
    assert!(metric(&m2, "filesync_tcp_bus_lag_seconds_sum") < 60.0, "{m2}");
    at_least(&m1, "filesync_tcp_db_pool_checkouts_total", 2.0);
    at_least(&m1, "filesync_tcp_db_pool_connections", 1.0);
    assert_eq!(metric(&m1, "filesync_tcp_db_pool_timeouts_total"), 0.0, "{m1}");
    assert_eq!(metric(&m1, "filesync_tcp_conflict_copies_total"), 0.0, "{m1}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_clears_the_presence_its_killed_run_left() {
    use filesync_core::proto::presence::{conn_key, member, user_key};
    use redis::AsyncCommands;

    let cluster = Cluster::new(Backend::Sqlite, true);
    let mut r = redis::Client::open(cluster.redis.as_ref().unwrap().url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // What a SIGKILLed "node-a" leaves behind, and a live entry of another node.
    for (node, session) in [("node-a", "s1"), ("node-a", "s2"), ("node-ab", "s3")] {
        let _: () = r.hset(conn_key(node, session), "node_id", node).await.unwrap();
        let _: () = r.zadd(user_key(filesync_core::UserId(1)), member(node, session), i64::MAX).await.unwrap();
    }
    let config = filesync_core::config::Config { node_id: Some("node-a".into()), ..cluster.config() };
    let n = cluster.node_with(config, Tuning::default()).await;
    let left: Vec<String> = r.keys("filesync:presence:conn:*").await.unwrap();
    assert_eq!(left, vec![conn_key("node-ab", "s3")]);
    n.shutdown().await.unwrap();
}

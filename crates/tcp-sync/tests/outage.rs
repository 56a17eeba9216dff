//! MariaDB goes away for 5 s under a node (a proxy cuts every connection and
//! refuses new ones; the shared MariaDB keeps serving other tests): an upload
//! meanwhile is answered with the retryable `unavailable` code and commits
//! nothing; once the database is back, a retried upload commits within 5 s.
//! The object store goes away under uploads in the same way (below).

mod common;

use std::time::{Duration, Instant};

use common::*;
use filesync_core::db::Backend;
use filesync_core::proto::ErrorCode;
use filesync_core::storage::backend::REQUEST_TIMEOUT;
use filesync_proto_client::ClientError;
use filesync_tcp_sync::Tuning;
use filesync_testkit::via_proxy;

const OUTAGE: Duration = Duration::from_secs(5);
const RECOVERY: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_during_a_database_outage_gets_a_retryable_error_and_a_retry_commits_after_it() {
    let cluster = Cluster::new(Backend::Mysql, false);
    let (proxy, url) = via_proxy(cluster.tdb.url()).await;
    let config = filesync_core::config::Config { database_url: Some(url), ..cluster.config() };
    let n = cluster.node_with(config, Tuning::default()).await;
    let (alice, token) = cluster.user("alice");
    let ws = cluster.workspace(alice, "Docs");
    let local = tempfile::tempdir().unwrap();
    let (a, _events) = connect(n.addr, &token, "laptop").await;
    let one = a.put_file(ws, "one.txt", &write_file(local.path(), "one", b"before"), 0).await.unwrap();
    let two = write_file(local.path(), "two", &noise(300_000, 7));

    proxy.cut();
    let down = Instant::now();
    let mut refused = 0;
    while down.elapsed() < OUTAGE {
        match within("an answer during the outage", a.put_file(ws, "two.txt", &two, 0)).await {
            Err(ClientError::Server { code, .. }) => {
                assert_eq!(code, ErrorCode::Unavailable);
                assert!(code.is_retryable());
                refused += 1;
            }
            other => panic!("expected a retryable refusal during the outage, got {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(refused > 0);
    proxy.restore();
    let back = Instant::now();

    let committed = loop {
        assert!(back.elapsed() < RECOVERY, "the node still refuses {:?} after the database returned", back.elapsed());
        match a.put_file(ws, "two.txt", &two, 0).await {
            Ok(done) => break done,
            Err(ClientError::Server { code: ErrorCode::Unavailable, .. }) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("unexpected failure after recovery: {e:?}"),
        }
    };
    println!(
        "{refused} uploads refused during the outage; a retry committed {:?} after the database returned",
        back.elapsed()
    );
    // Nothing half-written: the retried upload took the very next seq, and reads back whole.
    assert_eq!(committed.seq, one.seq + 1);
    assert_eq!(cluster.head_seq(ws), committed.seq);
    let copy = local.path().join("copy");
    a.download(ws, committed.seq, &copy).await.unwrap();
    assert_eq!(std::fs::read(copy).unwrap(), std::fs::read(&two).unwrap());
    n.shutdown().await.unwrap();
}

/// Longer than the chunk store's own retries (`storage::backend::RETRY_TIMEOUT`, 15 s), so uploads meanwhile
/// are answered, not only delayed.
const S3_OUTAGE: Duration = Duration::from_secs(20);
/// Uploaders running when the object store goes away.
const UPLOADERS: usize = 3;
/// How long one upload's answer may take while the store is away: a request the store accepted
/// and then left hanging (SeaweedFS does this now and then when connections are cut under it) is
/// given up after `REQUEST_TIMEOUT`, then answered `unavailable`.
const ANSWER_DURING_OUTAGE: Duration = Duration::from_secs(REQUEST_TIMEOUT.as_secs() + 30);

/// The object store goes away in the middle of uploads (a proxy in front of
/// SeaweedFS's S3 port cuts every connection and refuses new ones for 20 s):
/// every upload either commits or is answered with the retryable
/// `unavailable`; retried after the store returns, each commits; and no
/// committed version refers to a chunk the store does not hold: every version
/// committed before, during and after the outage downloads whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_during_an_object_store_outage_get_a_retryable_error_and_nothing_committed_is_missing() {
    let Some(cluster) = Cluster::on_s3(Backend::Mysql, false) else { return };
    let (proxy, through) = cluster.s3.as_ref().expect("on S3").via_proxy().await;
    let mut config = cluster.config();
    through.configure(&mut config);
    let n = cluster.node_with(config, Tuning::default()).await;
    let (alice, token) = cluster.user("alice");
    let ws = cluster.workspace(alice, "Docs");
    let local = tempfile::tempdir().unwrap();

    let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut uploaders = Vec::new();
    for u in 0..UPLOADERS {
        let (client, events) = connect(n.addr, &token, &format!("device-{u}")).await;
        let dir = local.path().join(format!("u{u}"));
        std::fs::create_dir_all(&dir).unwrap();
        let running = running.clone();
        uploaders.push(tokio::spawn(async move {
            let _events = events;
            // (seq, path, bytes) of every commit; how many uploads were refused as retryable.
            let (mut committed, mut refused) = (Vec::new(), 0usize);
            let mut k = 0u64;
            while running.load(std::sync::atomic::Ordering::SeqCst) {
                let path = format!("u{u}/file-{k}.bin");
                let bytes = noise(2 * 1024 * 1024 + (k as usize) * 4099, (u as u64) << 32 | k);
                let src = write_file(&dir, &format!("file-{k}"), &bytes);
                // Retried until it commits, as the agent does.
                loop {
                    let answer = tokio::time::timeout(ANSWER_DURING_OUTAGE, client.put_file(ws, &path, &src, 0));
                    match answer.await.expect("an upload's answer in time") {
                        Ok(c) => {
                            committed.push((c.seq, path.clone(), bytes.clone()));
                            break;
                        }
                        Err(ClientError::Server { code, .. }) => {
                            assert_eq!(code, ErrorCode::Unavailable, "uploading {path}");
                            assert!(code.is_retryable());
                            refused += 1;
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(e) => panic!("uploading {path}: {e:?}"),
                    }
                }
                k += 1;
            }
            (committed, refused)
        }));
    }

    // Let the uploads get going, then take the store away under them.
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.cut();
    tokio::time::sleep(S3_OUTAGE).await;
    proxy.restore();
    let back = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    running.store(false, std::sync::atomic::Ordering::SeqCst);

    let (mut all, mut refused) = (Vec::new(), 0);
    for u in uploaders {
        let (committed, r) = tokio::time::timeout(ANSWER_DURING_OUTAGE + Duration::from_secs(30), u)
            .await
            .expect("the uploaders finish once the store is back")
            .expect("an uploader panicked");
        all.extend(committed);
        refused += r;
    }
    println!("{} uploads committed, {refused} refused as retryable during the outage", all.len());
    assert!(refused > 0, "no upload was refused during a {S3_OUTAGE:?} outage");
    assert!(back.elapsed() < ANSWER_DURING_OUTAGE + Duration::from_secs(30));

    // Every committed version reads back whole from the store: the head of every path, and every version.
    let (reader, _events) = connect(n.addr, &token, "checker").await;
    let copy = local.path().join("copy");
    for (seq, path, bytes) in &all {
        within("download", reader.download(ws, *seq, &copy))
            .await
            .unwrap_or_else(|e| panic!("version {seq} of {path} does not download: {e:?}"));
        assert!(std::fs::read(&copy).unwrap() == *bytes, "version {seq} of {path} reads back different bytes");
    }
    assert_eq!(cluster.head_seq(ws) as usize, all.len(), "a refused upload committed something");
    n.shutdown().await.unwrap();
}

/// The object store accepts requests and then never answers. The node gives the upload up after
/// `REQUEST_TIMEOUT` and answers the retryable `unavailable`; meanwhile it keeps answering the
/// client's pings (a heartbeat of 1 s: a client hears nothing for 3 s and gives the connection
/// up), so the connection survives and the retry commits once the store answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_object_store_gets_an_upload_a_retryable_answer_and_the_connection_stays_up() {
    let Some(cluster) = Cluster::on_s3(Backend::Mysql, false) else { return };
    let (proxy, through) = cluster.s3.as_ref().expect("on S3").via_proxy().await;
    let mut config = cluster.config();
    through.configure(&mut config);
    let tuning =
        Tuning { heartbeat: Duration::from_secs(1), idle_timeout: Duration::from_secs(3), ..Tuning::default() };
    let n = cluster.node_with(config, tuning).await;
    let (alice, token) = cluster.user("alice");
    let ws = cluster.workspace(alice, "Docs");
    let local = tempfile::tempdir().unwrap();
    let (a, _events) = connect(n.addr, &token, "laptop").await;
    let bytes = noise(1024 * 1024, 11);
    let src = write_file(local.path(), "big", &bytes);

    proxy.stall();
    let stalled = Instant::now();
    let answer = tokio::time::timeout(ANSWER_DURING_OUTAGE, a.put_file(ws, "big.bin", &src, 0))
        .await
        .expect("the upload is answered once the store request times out");
    assert_eq!(code(answer), ErrorCode::Unavailable, "the upload is refused as retryable, the connection is up");
    assert!(stalled.elapsed() >= REQUEST_TIMEOUT, "answered before the store request could time out");
    assert_eq!(cluster.head_seq(ws), 0, "nothing committed");

    proxy.restore();
    let done = within("the retry commits", a.put_file(ws, "big.bin", &src, 0)).await.expect("the retry commits");
    let copy = local.path().join("copy");
    within("download", a.download(ws, done.seq, &copy)).await.unwrap();
    assert!(std::fs::read(&copy).unwrap() == bytes);
    n.shutdown().await.unwrap();
}

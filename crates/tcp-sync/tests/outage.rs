//! MariaDB goes away for 5 s under a node (a proxy cuts every connection and
//! refuses new ones; the shared MariaDB keeps serving other tests): an upload
//! meanwhile is answered with the retryable `unavailable` code and commits
//! nothing; once the database is back, a retried upload commits within 5 s.

mod common;

use std::time::{Duration, Instant};

use common::*;
use filesync_core::db::Backend;
use filesync_core::proto::ErrorCode;
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

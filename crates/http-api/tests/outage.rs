//! MariaDB goes away for 5 s while requests run (a proxy between the API and
//! the shared MariaDB cuts every connection and refuses new ones, so other
//! tests keep their database): the API answers 503 `database_unavailable`
//! with `Retry-After` meanwhile, never a 500, serves again within 5 s of the
//! database's return, and the journal holds no half-written version.

mod common;

use std::time::{Duration, Instant};

use common::Server;
use filesync_core::db::Backend;
use filesync_core::testing::TestDb;
use filesync_testkit::via_proxy;
use futures::StreamExt;
use reqwest::{header, StatusCode};
use serde_json::{json, Value};

const OUTAGE: Duration = Duration::from_secs(5);
const RECOVERY: Duration = Duration::from_secs(5);

/// A request's status, `Retry-After` and JSON body.
async fn call(req: reqwest::RequestBuilder) -> (StatusCode, Option<String>, Value) {
    let res = req.send().await.expect("the API answers");
    let status = res.status();
    let retry = res.headers().get(header::RETRY_AFTER).map(|v| v.to_str().unwrap().to_owned());
    let body = res.json().await.unwrap_or(Value::Null);
    (status, retry, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_a_503_with_retry_after_and_the_api_serves_again_after_it() {
    let db = tokio::task::spawn_blocking(|| TestDb::new(Backend::Mysql)).await.unwrap();
    let (proxy, url) = via_proxy(db.url()).await;
    let srv = Server::start_on(db, |c| c.database_url = Some(url)).await;
    let (_, token) = srv.user("alice").await;
    let (status, body) = srv.post("/create-workspace", Some(&token), json!({"name": "Docs"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let ws = body["workspace"]["id"].as_i64().unwrap();
    let file = srv.url(&format!("/workspaces/{ws}/file?path=notes.txt"));
    let put = |content: &'static [u8]| srv.raw().put(&file).bearer_auth(&token).body(content);
    let (status, _, v1) = call(put(b"first")).await;
    assert_eq!(status, StatusCode::CREATED, "{v1}");
    let (status, _, v2) = call(put(b"second")).await;
    assert_eq!(status, StatusCode::OK, "{v2}");
    let workspaces = || srv.raw().get(srv.url("/workspaces")).bearer_auth(&token);
    let restore = || {
        srv.raw()
            .post(srv.url(&format!("/workspaces/{ws}/restore")))
            .bearer_auth(&token)
            .json(&json!({"path": "notes.txt", "version": v1["version"]}))
    };

    proxy.cut();
    let down = Instant::now();
    let mut refused = 0;
    while down.elapsed() < OUTAGE {
        for (what, req) in [("list", workspaces()), ("restore", restore()), ("upload", put(b"lost"))] {
            let (status, retry, body) = call(req).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{what} during the outage: {body}");
            assert_eq!(body["error"]["code"], "database_unavailable", "{body}");
            assert!(retry.is_some_and(|s| s.parse::<u64>().is_ok_and(|s| s > 0)), "{what}: Retry-After");
            refused += 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, _, _) = call(srv.raw().get(srv.url("/readyz"))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "/readyz during the outage");
    proxy.restore();
    let back = Instant::now();

    // Serving again within 5 s: every connection of the pool, not just one.
    let mut in_a_row = 0;
    while in_a_row < 10 {
        assert!(back.elapsed() < RECOVERY, "still failing {:?} after the database returned", back.elapsed());
        let (status, _, body) = call(workspaces()).await;
        assert!(status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE, "{status} {body}");
        in_a_row = if status == StatusCode::OK { in_a_row + 1 } else { 0 };
        if in_a_row == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    println!("{refused} requests refused during the outage; serving {:?} after the database returned", back.elapsed());
    let (status, _, body) = call(restore()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let restored = body["restored"]["version"].as_i64().unwrap();

    // Nothing the outage refused was written: the journal is v1, v2, the restore, in order.
    let (status, history) = srv.get(&format!("/workspaces/{ws}/history?path=notes.txt"), Some(&token)).await;
    assert_eq!(status, StatusCode::OK, "{history}");
    let versions: Vec<i64> =
        history["versions"].as_array().unwrap().iter().map(|v| v["version"].as_i64().unwrap()).collect();
    let (first, second) = (v1["version"].as_i64().unwrap(), v2["version"].as_i64().unwrap());
    assert_eq!(versions, [restored, second, first], "{history}");
    assert_eq!(restored, second + 1, "no seq was taken by a refused write");
    let content = srv.raw().get(&file).bearer_auth(&token).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(&content[..], b"first");
}

/// The object store goes away in the middle of a streamed upload (a proxy in front of the S3
/// endpoint cuts every connection and refuses new ones): the upload is answered 503
/// `storage_unavailable` with `Retry-After`, commits nothing, and the same upload retried after
/// the store returns commits and downloads byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_store_outage_during_an_upload_is_a_503_and_commits_nothing() {
    const MIB: usize = 1024 * 1024;
    common::on_both_backends(|backend| async move {
        let Some(s3) = filesync_testkit::TestS3::fresh() else { return };
        let (proxy, through) = s3.via_proxy().await;
        let proxy = std::sync::Arc::new(proxy);
        let srv = Server::start(backend, move |c| through.configure(c)).await;
        let (_, token) = srv.user("alice").await;
        let (status, body) = srv.post("/create-workspace", Some(&token), json!({"name": "Docs"})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let ws = body["workspace"]["id"].as_i64().unwrap();
        let url = |path: &str| srv.url(&format!("/workspaces/{ws}/file?path={path}"));
        let (status, _, body) = call(srv.raw().put(url("before.txt")).bearer_auth(&token).body("before")).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");

        // 40 MiB sent 1 MiB at a time; the store is cut once 8 MiB have been handed to the
        // connection, before the first pack (16 MiB) is sealed.
        let content = std::sync::Arc::new(filesync_core::testing::noise(40 * MIB, 9));
        let upload = |cut: Option<std::sync::Arc<filesync_testkit::CutProxy>>| {
            let content = content.clone();
            let parts = futures::stream::iter(0..40).map(move |i| {
                if i == 8 {
                    if let Some(proxy) = &cut {
                        proxy.cut();
                    }
                }
                Ok::<_, std::io::Error>(content[i * MIB..(i + 1) * MIB].to_vec())
            });
            srv.raw().put(url("big.bin")).bearer_auth(&token).body(reqwest::Body::wrap_stream(parts))
        };
        let (status, retry, body) = call(upload(Some(proxy.clone()))).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["error"]["code"], "storage_unavailable", "{body}");
        assert!(retry.is_some_and(|s| s.parse::<u64>().is_ok_and(|s| s > 0)), "Retry-After");
        let (_, files) = srv.get(&format!("/workspaces/{ws}/files"), Some(&token)).await;
        let paths: Vec<&str> = files["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
        assert_eq!(paths, ["before.txt"], "nothing of the refused upload is committed");
        let (_, activity) = srv.get(&format!("/workspaces/{ws}/activity"), Some(&token)).await;
        assert_eq!(activity["entries"].as_array().unwrap().len(), 1, "{activity}");

        proxy.restore();
        let (status, _, body) = call(upload(None)).await;
        assert_eq!(status, StatusCode::CREATED, "the retry after the store returned: {body}");
        let got = srv.raw().get(url("big.bin")).bearer_auth(&token).send().await.unwrap().bytes().await.unwrap();
        assert!(got[..] == content[..], "the retried upload downloads identical");
        let got = srv.raw().get(url("before.txt")).bearer_auth(&token).send().await.unwrap().bytes().await.unwrap();
        assert_eq!(&got[..], b"before");
        srv.stop().await.expect("clean shutdown");
    })
    .await;
}

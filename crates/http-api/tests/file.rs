//! One file over HTTP: download (ranges, ETag), upload (conflict copies),
//! delete, move, mkdir and the activity feed, on SQLite and on MariaDB, with
//! real Redis for the announcements.

mod common;

use std::time::Duration;

use common::{assert_error, on_both_backends, people, urlencode as enc, Server};
use filesync_core::testing::noise;
use futures::StreamExt;
use reqwest::{header, Method, StatusCode};
use serde_json::{json, Value};

const REDIS: &str = "redis://127.0.0.1:6379";

fn file_url(srv: &Server, ws: i64, path: &str) -> String {
    srv.url(&format!("/workspaces/{ws}/file?path={}", enc(path)))
}

async fn put(
    srv: &Server,
    token: &str,
    ws: i64,
    path: &str,
    body: &[u8],
    if_match: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = srv.raw().put(file_url(srv, ws, path)).bearer_auth(token).body(body.to_vec());
    if let Some(v) = if_match {
        req = req.header(header::IF_MATCH, v);
    }
    srv.send(req).await
}

async fn get(srv: &Server, token: &str, url: String, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = srv.raw().get(url).bearer_auth(token);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.expect("request")
}

async fn bytes_of(srv: &Server, token: &str, ws: i64, path: &str) -> Vec<u8> {
    let res = get(srv, token, file_url(srv, ws, path), &[]).await;
    assert_eq!(res.status(), StatusCode::OK, "{path}");
    res.bytes().await.expect("body").to_vec()
}

async fn error_of(res: reqwest::Response) -> (StatusCode, Value) {
    let status = res.status();
    (status, res.json().await.expect("JSON error"))
}

async fn delete(srv: &Server, token: &str, ws: i64, path: &str, if_match: Option<&str>) -> (StatusCode, Value) {
    let mut req = srv.raw().request(Method::DELETE, file_url(srv, ws, path)).bearer_auth(token);
    if let Some(v) = if_match {
        req = req.header(header::IF_MATCH, v);
    }
    srv.send(req).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_upload_and_conflict_copies() {
    on_both_backends(|backend| async move {
        let storage = tempfile::tempdir().unwrap();
        let dir = storage.path().to_path_buf();
        let srv = Server::start(backend, move |c| {
            c.storage = Some(dir.display().to_string());
            c.redis_url = Some(REDIS.into());
        })
        .await;
        let p = people(&srv).await;
        let ws = p.ws;
        let client = redis::Client::open(REDIS).unwrap();
        let mut pubsub = client.get_async_pubsub().await.expect("Redis reachable");
        pubsub.subscribe(format!("filesync:ws:{ws}")).await.unwrap();
        let mut events = pubsub.on_message();

        // A new file: 201, announced to the nodes.
        let report = noise(1_000_003, 5);
        let (status, body) = put(&srv, &p.dave, ws, "docs/Rapport été.pdf", &report, None).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let v1 = body["version"].as_i64().unwrap();
        assert_eq!(body, json!({"path": "docs/Rapport été.pdf", "version": v1}));
        let want = json!({"type": "committed", "workspace_id": ws, "seq": v1});
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let msg = events.next().await.expect("subscription open");
                let payload: String = msg.get_payload().unwrap();
                if serde_json::from_str::<Value>(&payload).unwrap() == want {
                    return;
                }
            }
        })
        .await
        .expect("the upload is announced");
        drop(events);

        // The download: bytes, type, name, ETag; any member may.
        let res = get(&srv, &p.bob, file_url(&srv, ws, "docs/Rapport été.pdf"), &[]).await;
        assert_eq!(res.status(), StatusCode::OK);
        let h = res.headers().clone();
        assert_eq!(h[header::CONTENT_TYPE], "application/pdf");
        assert_eq!(h[header::CONTENT_LENGTH], report.len().to_string().as_str());
        assert_eq!(h[header::ETAG], format!("\"{v1}\"").as_str());
        assert_eq!(h[header::ACCEPT_RANGES], "bytes");
        let disposition = h[header::CONTENT_DISPOSITION].to_str().unwrap();
        assert!(disposition.starts_with("attachment"), "{disposition}");
        assert!(disposition.contains("filename*=UTF-8''Rapport%20%C3%A9t%C3%A9.pdf"), "{disposition}");
        assert!(res.bytes().await.unwrap() == report, "the download differs");

        // Ranges, across chunk boundaries; a suffix; an open end; beyond the end is a 416.
        let url = file_url(&srv, ws, "docs/Rapport été.pdf");
        for (range, from, to) in [
            ("bytes=0-0", 0, 1),
            ("bytes=60000-300000", 60_000, 300_001),
            ("bytes=-10", report.len() - 10, report.len()),
            ("bytes=999990-", 999_990, report.len()),
            ("bytes=999990-5000000", 999_990, report.len()),
        ] {
            let res = get(&srv, &p.bob, url.clone(), &[("Range", range)]).await;
            assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT, "{range}");
            let want_range = format!("bytes {from}-{}/{}", to - 1, report.len());
            assert_eq!(res.headers()[header::CONTENT_RANGE], want_range.as_str());
            assert!(res.bytes().await.unwrap() == report[from..to], "{range}: wrong bytes");
        }
        let res = get(&srv, &p.bob, url.clone(), &[("Range", "bytes=1000003-")]).await;
        assert_eq!(res.headers()[header::CONTENT_RANGE], "bytes */1000003");
        assert_error(&error_of(res).await, 416, "range_not_satisfiable");
        // A range that does not parse is ignored: the whole file.
        let res = get(&srv, &p.bob, url.clone(), &[("Range", "pages=1-2")]).await;
        assert_eq!(res.status(), StatusCode::OK);
        let res = get(&srv, &p.bob, url.clone(), &[("If-None-Match", &format!("\"{v1}\""))]).await;
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED);

        // An update without If-Match replaces the head: 200; the old version stays downloadable.
        let (status, body) = put(&srv, &p.alice, ws, "docs/Rapport été.pdf", b"second", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let v2 = body["version"].as_i64().unwrap();
        assert!(v2 > v1 && body.get("conflict_path").is_none(), "{body}");
        assert_eq!(bytes_of(&srv, &p.bob, ws, "docs/Rapport été.pdf").await, b"second");
        let old = get(&srv, &p.bob, format!("{url}&version={v1}"), &[]).await;
        assert!(old.bytes().await.unwrap() == report);

        // If-Match the current version: an ordinary update.
        let (status, body) =
            put(&srv, &p.alice, ws, "docs/Rapport été.pdf", b"third", Some(&format!("\"{v2}\""))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let v3 = body["version"].as_i64().unwrap();
        // A stale If-Match: a conflict copy beside the file, exactly as for an agent.
        let (status, body) =
            put(&srv, &p.dave, ws, "docs/Rapport été.pdf", b"dave's edit", Some(&v2.to_string())).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let copy = body["conflict_path"].as_str().expect("a conflict copy").to_owned();
        assert_eq!(body["path"], copy.as_str());
        assert!(copy.starts_with("docs/Rapport été") && copy.contains("dave") && copy.ends_with(".pdf"), "{copy}");
        assert_eq!(bytes_of(&srv, &p.bob, ws, "docs/Rapport été.pdf").await, b"third");
        assert_eq!(bytes_of(&srv, &p.bob, ws, &copy).await, b"dave's edit");
        let (_, listed) = srv.get(&format!("/workspaces/{ws}/files"), Some(&p.bob)).await;
        let head = listed["files"].as_array().unwrap().iter().find(|f| f["path"] == "docs/Rapport été.pdf").cloned();
        assert_eq!(head.unwrap()["version"].as_i64(), Some(v3));

        // An empty file.
        let (status, _) = put(&srv, &p.alice, ws, "empty.txt", b"", None).await;
        assert_eq!(status, StatusCode::CREATED);
        let res = get(&srv, &p.bob, file_url(&srv, ws, "empty.txt"), &[]).await;
        assert_eq!(
            (res.status(), res.headers()[header::CONTENT_TYPE].to_str().unwrap()),
            (StatusCode::OK, "text/plain")
        );
        assert!(res.bytes().await.unwrap().is_empty());

        // Refusals change nothing.
        let before = srv.get(&format!("/workspaces/{ws}/files"), Some(&p.alice)).await.1;
        assert_error(&put(&srv, &p.bob, ws, "viewer.txt", b"x", None).await, 403, "forbidden");
        assert_error(&put(&srv, &p.carol, ws, "outsider.txt", b"x", None).await, 404, "workspace_not_found");
        assert_error(&put(&srv, &p.alice, 999_999, "x.txt", b"x", None).await, 404, "workspace_not_found");
        for bad in ["../x", "/abs", "a//b", "a/./b", ""] {
            assert_error(&put(&srv, &p.alice, ws, bad, b"x", None).await, 422, "invalid_path");
        }
        assert_error(&put(&srv, &p.alice, ws, "x.txt", b"x", Some("abc")).await, 422, "invalid_if_match");
        assert_error(&put(&srv, &p.alice, ws, "docs/Rapport été.pdf/inside", b"x", None).await, 409, "parent_is_file");
        assert_error(&put(&srv, &p.alice, ws, "docs", b"x", None).await, 409, "kind_mismatch");
        let no_path = srv.raw().put(srv.url(&format!("/workspaces/{ws}/file"))).bearer_auth(&p.alice).body("x");
        assert_error(&srv.send(no_path).await, 422, "invalid_request");
        let anonymous = srv.raw().put(file_url(&srv, ws, "x.txt")).body("x");
        assert_error(&srv.send(anonymous).await, 401, "missing_token");
        assert_eq!(srv.get(&format!("/workspaces/{ws}/files"), Some(&p.alice)).await.1, before);

        let missing = |path: &str| get(&srv, &p.bob, file_url(&srv, ws, path), &[]);
        assert_error(&error_of(missing("nope.txt").await).await, 404, "file_not_found");
        assert_error(&error_of(missing("docs").await).await, 404, "file_not_found");
        assert_error(&error_of(missing("../etc/passwd").await).await, 422, "invalid_path");
        let other_version = get(&srv, &p.bob, format!("{}&version={v1}", file_url(&srv, ws, "empty.txt")), &[]).await;
        assert_error(&error_of(other_version).await, 404, "version_not_found");
        let res = get(&srv, &p.carol, file_url(&srv, ws, "empty.txt"), &[]).await;
        assert_error(&error_of(res).await, 404, "workspace_not_found");
        srv.stop().await.expect("clean shutdown");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_move_mkdir_and_activity() {
    on_both_backends(|backend| async move {
        let storage = tempfile::tempdir().unwrap();
        let dir = storage.path().to_path_buf();
        let srv = Server::start(backend, move |c| c.storage = Some(dir.display().to_string())).await;
        let p = people(&srv).await;
        let ws = p.ws;
        let post = |path: &'static str, token: String, body: Value| {
            let srv = &srv;
            async move { srv.post(&format!("/workspaces/{ws}/{path}"), Some(&token), body).await }
        };

        // mkdir: 201, then 200 for a directory that exists.
        let (status, body) = post("mkdir", p.alice.clone(), json!({"path": "projects/2026"})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["path"], "projects/2026");
        let (status, again) = post("mkdir", p.dave.clone(), json!({"path": "projects/2026"})).await;
        assert_eq!((status, &again["version"]), (StatusCode::OK, &body["version"]));
        put(&srv, &p.alice, ws, "projects/2026/plan.md", b"# plan", None).await;
        let (_, put_notes) = put(&srv, &p.dave, ws, "projects/2026/notes/a.txt", b"a", None).await;
        put(&srv, &p.alice, ws, "top.txt", b"top", None).await;
        assert_error(&post("mkdir", p.alice.clone(), json!({"path": "top.txt/sub"})).await, 409, "parent_is_file");
        assert_error(&post("mkdir", p.alice.clone(), json!({"path": "top.txt"})).await, 409, "kind_mismatch");
        assert_error(&post("mkdir", p.bob.clone(), json!({"path": "viewer"})).await, 403, "forbidden");
        assert_error(&post("mkdir", p.carol.clone(), json!({"path": "outsider"})).await, 404, "workspace_not_found");
        assert_error(&post("mkdir", p.alice.clone(), json!({"path": "../up"})).await, 422, "invalid_path");
        assert_error(&post("mkdir", p.alice.clone(), json!({})).await, 422, "invalid_request");

        // Move a file, then a directory with everything under it.
        let (status, body) = post("move", p.dave.clone(), json!({"from": "top.txt", "to": "projects/top.txt"})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!((body["path"].as_str(), body["from"].as_str()), (Some("projects/top.txt"), Some("top.txt")));
        let (status, body) = post("move", p.alice.clone(), json!({"from": "projects", "to": "archive/old"})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (_, files) = srv.get(&format!("/workspaces/{ws}/files"), Some(&p.bob)).await;
        let paths: Vec<&str> = files["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
        assert_eq!(
            paths,
            vec!["archive/old/2026", "archive/old/2026/notes/a.txt", "archive/old/2026/plan.md", "archive/old/top.txt"]
        );
        assert_eq!(bytes_of(&srv, &p.bob, ws, "archive/old/2026/plan.md").await, b"# plan");
        assert_error(&post("move", p.alice.clone(), json!({"from": "nope", "to": "x"})).await, 404, "path_not_found");
        put(&srv, &p.alice, ws, "other.txt", b"o", None).await;
        assert_error(
            &post("move", p.alice.clone(), json!({"from": "other.txt", "to": "archive/old/top.txt"})).await,
            409,
            "destination_exists",
        );
        assert_error(
            &post("move", p.alice.clone(), json!({"from": "other.txt", "to": "other.txt"})).await,
            422,
            "same_path",
        );
        assert_error(
            &post("move", p.alice.clone(), json!({"from": "archive", "to": "archive/inner"})).await,
            422,
            "move_into_itself",
        );
        let stale = put_notes["version"].as_i64().unwrap();
        assert_error(
            &post("move", p.alice.clone(), json!({"from": "other.txt", "to": "o2.txt", "base_version": stale})).await,
            409,
            "stale_base",
        );
        assert_error(&post("move", p.bob.clone(), json!({"from": "other.txt", "to": "b.txt"})).await, 403, "forbidden");
        assert_error(
            &post("move", p.alice.clone(), json!({"from": "other.txt", "to": "/b"})).await,
            422,
            "invalid_path",
        );

        // Delete: a file (If-Match checked), then a directory with what is under it.
        assert_error(&delete(&srv, &p.alice, ws, "other.txt", Some(&stale.to_string())).await, 409, "stale_base");
        assert_error(&delete(&srv, &p.bob, ws, "other.txt", None).await, 403, "forbidden");
        assert_error(&delete(&srv, &p.carol, ws, "other.txt", None).await, 404, "workspace_not_found");
        assert_error(&delete(&srv, &p.alice, ws, "nope.txt", None).await, 404, "path_not_found");
        assert_error(&delete(&srv, &p.alice, ws, "a/../b", None).await, 422, "invalid_path");
        let (status, body) = delete(&srv, &p.dave, ws, "other.txt", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_error(&delete(&srv, &p.alice, ws, "other.txt", None).await, 404, "path_not_found");
        let (status, body) = delete(&srv, &p.alice, ws, "archive", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let last = body["version"].as_i64().unwrap();
        let (_, files) = srv.get(&format!("/workspaces/{ws}/files"), Some(&p.bob)).await;
        assert_eq!(files["files"], json!([]));

        // Activity: newest first, with who and from where, a page at a time.
        let url = |q: &str| format!("/workspaces/{ws}/activity{q}");
        let (status, body) = srv.get(&url(""), Some(&p.bob)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let entries = body["entries"].as_array().unwrap();
        assert_eq!(entries.len() as i64, last);
        let seqs: Vec<i64> = entries.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
        assert_eq!(seqs, (1..=last).rev().collect::<Vec<_>>());
        assert!(body.get("next_before_seq").is_none());
        let first = entries.last().unwrap();
        assert_eq!(
            (first["op"].as_str(), first["kind"].as_str(), first["path"].as_str(), first["author"].as_str()),
            (Some("put"), Some("dir"), Some("projects/2026"), Some("alice"))
        );
        assert_eq!(first["device_id"], "http-api");
        let _: chrono::DateTime<chrono::Utc> = first["time"].as_str().unwrap().parse().expect("RFC 3339");
        let moved = entries.iter().find(|e| e["op"] == "move" && e["from_path"] == "top.txt").unwrap();
        assert_eq!((moved["from_path"].as_str(), moved["author"].as_str()), (Some("top.txt"), Some("dave")));
        assert_eq!((entries[0]["op"].as_str(), entries[0]["deleted"].as_bool()), (Some("delete"), Some(true)));

        let (_, page1) = srv.get(&url("?limit=3"), Some(&p.bob)).await;
        let next = page1["next_before_seq"].as_i64().expect("more pages");
        assert_eq!(next, last - 2);
        let (_, page2) = srv.get(&url(&format!("?limit=3&before_seq={next}")), Some(&p.bob)).await;
        let got: Vec<i64> = page2["entries"].as_array().unwrap().iter().map(|e| e["seq"].as_i64().unwrap()).collect();
        assert_eq!(got, vec![next - 1, next - 2, next - 3]);
        assert_error(&srv.get(&url("?limit=0"), Some(&p.bob)).await, 422, "invalid_limit");
        assert_error(&srv.get(&url("?limit=501"), Some(&p.bob)).await, 422, "invalid_limit");
        assert_error(&srv.get(&url("?before_seq=0"), Some(&p.bob)).await, 422, "invalid_before_seq");
        assert_error(&srv.get(&url("?limit=x"), Some(&p.bob)).await, 422, "invalid_request");
        assert_error(&srv.get(&url(""), Some(&p.carol)).await, 404, "workspace_not_found");
        assert_error(&srv.get(&url(""), None).await, 401, "missing_token");
        srv.stop().await.expect("clean shutdown");
    })
    .await;
}

/// A client that goes away in the middle of its body commits nothing; the
/// next upload of the same path is an ordinary new file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_upload_commits_nothing() {
    on_both_backends(|backend| async move {
        let storage = tempfile::tempdir().unwrap();
        let dir = storage.path().to_path_buf();
        let srv = Server::start(backend, move |c| c.storage = Some(dir.display().to_string())).await;
        let p = people(&srv).await;
        let ws = p.ws;
        let body = futures::stream::iter(0..8u64).map(|i| {
            if i < 5 {
                Ok(noise(1024 * 1024, i))
            } else {
                Err(std::io::Error::other("the client gave up"))
            }
        });
        let res = srv
            .raw()
            .put(file_url(&srv, ws, "half.bin"))
            .bearer_auth(&p.alice)
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await;
        assert!(res.as_ref().map_or(true, |r| !r.status().is_success()), "{res:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (_, files) = srv.get(&format!("/workspaces/{ws}/files"), Some(&p.bob)).await;
        assert_eq!(files["files"], json!([]));
        let (_, activity) = srv.get(&format!("/workspaces/{ws}/activity"), Some(&p.bob)).await;
        assert_eq!(activity["entries"], json!([]));
        let (status, body) = put(&srv, &p.alice, ws, "half.bin", b"whole", None).await;
        assert_eq!((status, body["version"].as_i64()), (StatusCode::CREATED, Some(1)), "{body}");
        assert_eq!(bytes_of(&srv, &p.bob, ws, "half.bin").await, b"whole");
        srv.stop().await.expect("clean shutdown");
    })
    .await;
}

/// Files in `dir` and below.
fn files_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| if e.path().is_dir() { files_under(&e.path()) } else { 1 })
        .sum()
}

/// A large upload streamed over HTTP (several packs, many index lookups, repeated runs inside it)
/// downloads byte-identical, whole and in ranges across pack boundaries, from a directory store
/// and from the S3 bucket; the same content uploaded again under another name stores nothing new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_streamed_upload_downloads_identical() {
    const MIB: usize = 1024 * 1024;
    // 40 MiB: noise, a 3 MiB run repeated, zeros, more noise.
    let mut content = noise(17 * MIB + 12_345, 41);
    let repeated = content[5 * MIB..8 * MIB].to_vec();
    content.extend_from_slice(&repeated);
    content.extend(std::iter::repeat_n(0u8, 2 * MIB));
    content.extend(noise(40 * MIB - content.len() - 777, 42));
    let content = std::sync::Arc::new(content);
    on_both_backends(|backend| {
        let content = content.clone();
        async move {
            for on_s3 in [false, true] {
                let s3 = if on_s3 {
                    match filesync_testkit::TestS3::fresh() {
                        Some(s3) => Some(s3),
                        None => continue,
                    }
                } else {
                    None
                };
                let storage = tempfile::tempdir().unwrap();
                let dir = storage.path().to_path_buf();
                let srv = Server::start(backend, move |c| match &s3 {
                    Some(s3) => s3.configure(c),
                    None => c.storage = Some(dir.display().to_string()),
                })
                .await;
                let p = people(&srv).await;
                let upload = |path: &str| {
                    let body = content.clone();
                    let parts = futures::stream::iter(0..body.len().div_ceil(MIB))
                        .map(move |i| Ok::<_, std::io::Error>(body[i * MIB..((i + 1) * MIB).min(body.len())].to_vec()));
                    srv.raw()
                        .put(file_url(&srv, p.ws, path))
                        .bearer_auth(&p.alice)
                        .body(reqwest::Body::wrap_stream(parts))
                        .send()
                };
                let res = upload("big/first.bin").await.expect("upload");
                assert_eq!(res.status(), StatusCode::CREATED, "on s3: {on_s3}");
                assert!(bytes_of(&srv, &p.bob, p.ws, "big/first.bin").await == *content, "the download differs");
                let url = file_url(&srv, p.ws, "big/first.bin");
                for (from, to) in
                    [(16 * MIB - 100, 16 * MIB + 100), (17 * MIB, 23 * MIB), (40 * MIB - 900, 40 * MIB - 777)]
                {
                    let range = format!("bytes={from}-{}", to - 1);
                    let res = get(&srv, &p.bob, url.clone(), &[("Range", &range)]).await;
                    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT, "{range}");
                    assert!(res.bytes().await.unwrap() == content[from..to], "{range}: wrong bytes");
                }
                let packs_before = files_under(storage.path());
                let res = upload("big/again.bin").await.expect("upload");
                assert_eq!(res.status(), StatusCode::CREATED);
                assert!(bytes_of(&srv, &p.bob, p.ws, "big/again.bin").await == *content, "the second download differs");
                if !on_s3 {
                    assert_eq!(files_under(storage.path()), packs_before, "known chunks were stored again");
                }
                srv.stop().await.expect("clean shutdown");
            }
        }
    })
    .await;
}

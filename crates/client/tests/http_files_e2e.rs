//! Files changed over HTTP reach a running agent: real servers (the HTTP API
//! and a sync node in this process, MariaDB, a Redis of the test's own) and a
//! real `filesync sync` process. A 200 MiB upload is sent as a generated
//! stream (never held whole by the test) and the server's peak memory is
//! watched while it is chunked, stored, synced to the agent and downloaded
//! back.

mod support;

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use filesync_core::db::Backend;
use filesync_core::testing::noise;
use futures::StreamExt;
use serde_json::{json, Value};
use support::{eventually, Stack};

/// Longest a change may take to reach the agent before the test fails (not a speed check).
const SYNCED: Duration = Duration::from_secs(240);
const BLOCK: usize = 1024 * 1024;
const BLOCKS: u64 = 200;

/// Block `i` of the big file: the same bytes every time it is generated.
fn block(i: u64) -> Vec<u8> {
    noise(BLOCK, 1000 + i)
}

/// BLAKE3 of the big file, generated block by block.
fn big_hash() -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    for i in 0..BLOCKS {
        h.update(&block(i));
    }
    h.finalize()
}

/// A field of `/proc/self/status` in KiB (Linux).
fn status_kib(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resets this process's peak RSS to its current RSS (Linux ≥ 4.0); false if it cannot.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn file_hash(path: &Path) -> Option<blake3::Hash> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; BLOCK];
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            return Some(h.finalize());
        }
        h.update(&buf[..n]);
    }
}

struct Api {
    base: String,
    token: String,
    ws: i64,
    http: reqwest::Client,
}

impl Api {
    fn file(&self, path: &str) -> String {
        format!("{}/workspaces/{}/file?path={path}", self.base, self.ws)
    }

    async fn post(&self, route: &str, body: Value) -> (u16, Value) {
        let res = self
            .http
            .post(format!("{}/workspaces/{}/{route}", self.base, self.ws))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("request");
        (res.status().as_u16(), res.json().await.expect("JSON"))
    }
}

/// On SQLite and MariaDB, one after the other (in one test, so that no other test's memory
/// shows in this process's peak).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_uploads_moves_and_deletes_reach_a_running_agent() {
    for backend in [Backend::Sqlite, Backend::Mysql] {
        story(backend).await;
    }
}

async fn story(backend: Backend) {
    let stack = Stack::start(backend, 1).await;
    let alice = stack.cli("alice", &stack.node_addrs());
    alice.register("alice").await;
    let folder = stack.dir.path().join("alice-folder");
    alice.ok(&["workspace", "create", "team", folder.to_str().unwrap(), "--no-sync"], None).await;
    let agent = alice.spawn_sync();

    let http = reqwest::Client::builder().timeout(Duration::from_secs(600)).build().unwrap();
    let base = stack.http.addr.clone();
    let login: Value = http
        .post(format!("{base}/login"))
        .json(&json!({"email": "alice@example.com", "password": "password-alice"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().expect("token").to_owned();
    let all: Value =
        http.get(format!("{base}/workspaces")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    let ws = all["workspaces"][0]["id"].as_i64().expect("the workspace");
    let api = Api { base, token, ws, http };

    // A small file first: it reaches the folder like an agent's change.
    let res = api.http.put(api.file("notes/hello.txt")).bearer_auth(&api.token).body("hello over HTTP").send().await;
    assert_eq!(res.unwrap().status().as_u16(), 201);
    let hello = folder.join("notes/hello.txt");
    eventually("the HTTP upload appears in the agent's folder", SYNCED, || {
        std::fs::read(&hello).is_ok_and(|b| b == b"hello over HTTP")
    })
    .await;

    // 200 MiB, generated as the body is sent; the server must not hold it.
    let want = big_hash();
    let measured = reset_peak();
    let rss_before = status_kib("VmRSS:").unwrap_or(0);
    let body = futures::stream::iter(0..BLOCKS).map(|i| Ok::<_, std::io::Error>(block(i)));
    let res = api
        .http
        .put(api.file("big.bin"))
        .bearer_auth(&api.token)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .expect("upload");
    assert_eq!(res.status().as_u16(), 201);
    let put: Value = res.json().await.unwrap();
    let version = put["version"].as_i64().expect("version");

    let big = folder.join("big.bin");
    eventually("the 200 MiB upload appears in the agent's folder", SYNCED, || big.exists()).await;
    assert_eq!(std::fs::metadata(&big).unwrap().len(), BLOCKS * BLOCK as u64);
    assert_eq!(file_hash(&big), Some(want), "the agent's copy differs");

    // And back over HTTP, streamed and hashed as it arrives.
    let res = api.http.get(api.file("big.bin")).bearer_auth(&api.token).send().await.expect("download");
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.headers()["etag"], format!("\"{version}\"").as_str());
    let mut stream = res.bytes_stream();
    let mut h = blake3::Hasher::new();
    let mut size = 0u64;
    while let Some(part) = stream.next().await {
        let part = part.expect("body");
        size += part.len() as u64;
        h.update(&part);
    }
    assert_eq!((size, h.finalize()), (BLOCKS * BLOCK as u64, want), "the download differs");

    // The HTTP API and the node ran in this process: the upload, the agent's
    // download from the node and the HTTP download together must not have
    // grown its peak memory by anything near the file's size.
    if measured {
        let peak = status_kib("VmHWM:").expect("VmHWM");
        let growth_mib = peak.saturating_sub(rss_before) / 1024;
        eprintln!("{backend:?}: peak RSS growth over a 200 MiB upload, sync and download: {growth_mib} MiB");
        assert!(growth_mib < 80, "{backend:?}: server memory grew by {growth_mib} MiB for a 200 MiB file");
    }

    // A move and a delete over HTTP reach the folder too.
    let (status, body) = api.post("move", json!({"from": "big.bin", "to": "archive/big.bin"})).await;
    assert_eq!(status, 200, "{body}");
    let moved = folder.join("archive/big.bin");
    eventually("the move reaches the agent", SYNCED, || moved.exists() && !big.exists()).await;
    let res = api.http.delete(api.file("notes")).bearer_auth(&api.token).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    eventually("the delete reaches the agent", SYNCED, || !hello.exists()).await;
    assert!(moved.exists(), "only the deleted directory went");
    agent.stop().await;
}

//! What an HTTP transfer costs the database (docs/BENCHMARKS.md, "HTTP transfers"): a 256 MiB
//! upload and its download, and the zip of a 1,000-file workspace, on SQLite and MariaDB, with the
//! chunks in a directory and in the tests' S3 bucket. Counts every SQL statement the process runs
//! (diesel's instrumentation) and those that read the chunk index, and prints wall times. A
//! measurement, not a check of speed: run by hand.
//!
//! `cargo test -p filesync-http-api --test transfer_cost -- --ignored --nocapture`
//! (`FILESYNC_TRANSFER_MIB` sets the upload's size, `FILESYNC_TRANSFER_FILES` the workspace's files.)

mod common;

use std::io::{Cursor, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use common::Server;
use diesel::connection::{set_default_instrumentation, Instrumentation, InstrumentationEvent};
use filesync_core::db::Backend;
use filesync_core::testing::noise;
use filesync_testkit::TestS3;
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::json;

static STATEMENTS: AtomicU64 = AtomicU64::new(0);
static INDEX_READS: AtomicU64 = AtomicU64::new(0);

fn counting() -> Option<Box<dyn Instrumentation>> {
    Some(Box::new(|event: InstrumentationEvent<'_>| {
        if let InstrumentationEvent::StartQuery { query, .. } = event {
            let sql = query.to_string();
            STATEMENTS.fetch_add(1, Ordering::Relaxed);
            let from_chunks = sql.contains("FROM `chunks`") || sql.contains("FROM \"chunks\"");
            if sql.trim_start().starts_with("SELECT") && from_chunks {
                INDEX_READS.fetch_add(1, Ordering::Relaxed);
            }
        }
    }))
}

/// Statements and chunk-index reads since the last call, and the time.
struct Meter(u64, u64, Instant);

impl Meter {
    fn start() -> Meter {
        Meter(STATEMENTS.load(Ordering::Relaxed), INDEX_READS.load(Ordering::Relaxed), Instant::now())
    }

    fn report(&self, what: &str, leg: &str) {
        let (all, index) = (STATEMENTS.load(Ordering::Relaxed) - self.0, INDEX_READS.load(Ordering::Relaxed) - self.1);
        println!(
            "{leg:>16} | {what:<28} | {:>8.2} s | {all:>6} statements | {index:>6} chunk-index reads",
            self.2.elapsed().as_secs_f64()
        );
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by hand"]
async fn http_transfer_cost() {
    set_default_instrumentation(counting).expect("instrumentation");
    let mib = env_usize("FILESYNC_TRANSFER_MIB", 256);
    let files = env_usize("FILESYNC_TRANSFER_FILES", 1000);
    for backend in [Backend::Sqlite, Backend::Mysql] {
        for on_s3 in [false, true] {
            let s3 = if on_s3 {
                match TestS3::fresh() {
                    Some(s3) => Some(s3),
                    None => continue,
                }
            } else {
                None
            };
            let leg = format!("{backend:?}/{}", if on_s3 { "s3" } else { "dir" });
            let storage = tempfile::tempdir().unwrap();
            let dir = storage.path().to_path_buf();
            let srv = Server::start(backend, move |c| match &s3 {
                Some(s3) => s3.configure(c),
                None => c.storage = Some(dir.display().to_string()),
            })
            .await;
            let (_, token) = srv.user("alice").await;
            let (status, body) = srv.post("/create-workspace", Some(&token), json!({"name": "Bench"})).await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            let ws = body["workspace"]["id"].as_i64().unwrap();

            // The upload: generated 1 MiB at a time while it is sent.
            let part = |i: u64| noise(1 << 20, 1000 + i);
            let mut sent = blake3::Hasher::new();
            for i in 0..mib as u64 {
                sent.update(&part(i));
            }
            let body = futures::stream::iter(0..mib as u64).map(move |i| Ok::<_, std::io::Error>(part(i)));
            let url = srv.url(&format!("/workspaces/{ws}/file?path=big.bin"));
            let meter = Meter::start();
            let res = srv
                .raw()
                .put(&url)
                .bearer_auth(&token)
                .timeout(std::time::Duration::from_secs(1800))
                .body(reqwest::Body::wrap_stream(body))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::CREATED);
            meter.report(&format!("upload {mib} MiB"), &leg);

            let meter = Meter::start();
            let res = srv
                .raw()
                .get(&url)
                .bearer_auth(&token)
                .timeout(std::time::Duration::from_secs(1800))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            let mut got = blake3::Hasher::new();
            let mut stream = res.bytes_stream();
            while let Some(part) = stream.next().await {
                got.update(&part.unwrap());
            }
            meter.report(&format!("download {mib} MiB"), &leg);
            assert_eq!(got.finalize(), sent.finalize(), "the download equals the upload");

            // A workspace of many small files (1 to 3 chunks each), then its zip.
            let ws2 = {
                let (_, body) = srv.post("/create-workspace", Some(&token), json!({"name": "Many"})).await;
                body["workspace"]["id"].as_i64().unwrap()
            };
            let mut want = std::collections::BTreeMap::new();
            let meter = Meter::start();
            for i in 0..files {
                let data = noise(2_000 + (i * 7_919) % 150_000, i as u64);
                let path = format!("d{}/f{i}.bin", i % 10);
                let res = srv
                    .raw()
                    .put(srv.url(&format!("/workspaces/{ws2}/file?path={path}")))
                    .bearer_auth(&token)
                    .body(data.clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), StatusCode::CREATED);
                want.insert(path, data);
            }
            meter.report(&format!("{files} small uploads"), &leg);
            let meter = Meter::start();
            let res = srv
                .raw()
                .post(srv.url("/download-workspace"))
                .bearer_auth(&token)
                .json(&json!({"workspace_id": ws2}))
                .timeout(std::time::Duration::from_secs(1800))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            let zip = res.bytes().await.unwrap();
            meter.report(&format!("zip of {files} files"), &leg);
            let mut archive = zip::ZipArchive::new(Cursor::new(&zip[..])).unwrap();
            let mut seen = 0;
            for i in 0..archive.len() {
                let mut entry = archive.by_index(i).unwrap();
                if entry.is_dir() {
                    continue;
                }
                let name = entry.name().unwrap().to_string();
                let mut data = Vec::new();
                entry.read_to_end(&mut data).unwrap();
                assert!(want.get(&name) == Some(&data), "{name}");
                seen += 1;
            }
            assert_eq!(seen, files);
            srv.stop().await.unwrap();
        }
    }
}

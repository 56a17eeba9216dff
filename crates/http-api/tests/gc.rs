//! Garbage collection from the outside: `filesync-http gc` as a subprocess on the daemon's settings
//! (a dry run changes nothing; a run killed with SIGKILL at any point is finished by the next; what
//! it prints adds up to what left the store), on SQLite and MariaDB, a directory store and S3; and
//! the daemon's own schedule with its metrics.

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use common::{Server, STORY_TIMEOUT};
use diesel::prelude::*;
use filesync_core::config::Config;
use filesync_core::db::schema::{chunks, file_heads, file_versions, packs};
use filesync_core::db::{Backend, Db};
use filesync_core::storage;
use filesync_testkit::TestS3;
use reqwest::StatusCode;
use serde_json::json;

use filesync_core::testing::noise;

/// Where the test's chunks are.
#[derive(Clone)]
enum Store {
    Dir(std::path::PathBuf),
    S3(TestS3),
}

impl Store {
    fn configure(&self, config: &mut Config) {
        match self {
            Store::Dir(dir) => config.storage = Some(dir.display().to_string()),
            Store::S3(s3) => s3.configure(config),
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        match self {
            Store::Dir(dir) => vec![("FILESYNC_STORAGE", dir.display().to_string())],
            Store::S3(s3) => s3.env(),
        }
    }
}

struct Story {
    srv: Server,
    store: Store,
    token: String,
    ws: i64,
    data_dir: tempfile::TempDir,
}

impl Story {
    async fn start(backend: Backend, store: Store, tweak: impl FnOnce(&mut Config)) -> Story {
        let s = store.clone();
        let srv = Server::start(backend, move |c| {
            s.configure(c);
            c.gc_interval_secs = 0;
            tweak(c);
        })
        .await;
        let token = srv.user("alice").await.1;
        let (status, body) = srv.post("/create-workspace", Some(&token), json!({"name": "Team"})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let ws = body["workspace"]["id"].as_i64().unwrap();
        Story { srv, store, token, ws, data_dir: tempfile::tempdir().unwrap() }
    }

    async fn put(&self, path: &str, body: Vec<u8>) {
        let url = self.srv.url(&format!("/workspaces/{}/file?path={path}", self.ws));
        let (status, answer) = self.srv.send(self.srv.raw().put(url).bearer_auth(&self.token).body(body)).await;
        assert!(status.is_success(), "{status} {answer}");
    }

    async fn get(&self, path: &str) -> Vec<u8> {
        let url = self.srv.url(&format!("/workspaces/{}/file?path={path}", self.ws));
        let res = self.srv.raw().get(url).bearer_auth(&self.token).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        res.bytes().await.unwrap().to_vec()
    }

    fn db(&self) -> Db {
        Db::open(self.srv.db.url(), 2).unwrap()
    }

    /// What retention would do: every version that is not a head goes. How many went.
    fn drop_old_versions(&self) -> usize {
        self.db()
            .write_blocking(|c| {
                let heads: Vec<i64> = file_heads::table.select(file_heads::seq).load(c)?;
                Ok(diesel::delete(file_versions::table.filter(file_versions::seq.ne_all(heads))).execute(c)?)
            })
            .unwrap()
    }

    fn config(&self) -> Config {
        let mut c = Config { database_url: Some(self.srv.db.url().to_owned()), ..Config::default() };
        self.store.configure(&mut c);
        c
    }

    /// Rows of chunks and packs, and the packs' objects with their bytes.
    async fn census(&self) -> (i64, i64, u64, u64) {
        let (chunk_rows, pack_rows) = self
            .db()
            .run(|c| Ok((chunks::table.count().get_result::<i64>(c)?, packs::table.count().get_result::<i64>(c)?)))
            .await
            .unwrap();
        let config = self.config();
        let backend =
            tokio::task::spawn_blocking(move || storage::Backend::from_config(&config)).await.unwrap().unwrap();
        let objects: Vec<_> = backend
            .list(Some("packs"))
            .await
            .unwrap()
            .into_iter()
            .filter(|o| filesync_core::gc::orphans::pack_of_key(&o.key).is_some())
            .collect();
        (chunk_rows, pack_rows, objects.len() as u64, objects.iter().map(|o| o.size).sum())
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_filesync-http"));
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("FILESYNC_DATA_DIR", self.data_dir.path())
            .env("FILESYNC_DATABASE_URL", self.srv.db.url())
            .env("FILESYNC_GC_GRACE_SECS", "0")
            .env("FILESYNC_LOG_FORMAT", "json")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in self.store.env() {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `filesync-http gc ARGS` to the end: its report (the JSON line it prints).
    async fn gc(&self, args: &[&str]) -> BTreeMap<String, u64> {
        let out = self.command(&[&["gc"], args].concat()).output().await.unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "gc failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        // The report is the JSON line that is not a log line.
        let line = stdout
            .lines()
            .find(|l| l.starts_with("{\"workspaces\""))
            .unwrap_or_else(|| panic!("no report in {stdout}"));
        serde_json::from_str(line).unwrap()
    }
}

/// Timestamps are whole seconds: after this, everything written so far is older than a grace of 0.
async fn tick() {
    tokio::time::sleep(Duration::from_millis(1100)).await;
}

const FILES: u64 = 8;
const SIZE: usize = 300_000;

fn content(i: u64, round: u64) -> Vec<u8> {
    noise(SIZE, round * 1000 + i)
}

async fn killed_and_finished(backend: Backend, store: Store) {
    let story = Story::start(backend, store, |_| {}).await;
    for round in 0..3 {
        for i in 0..FILES {
            story.put(&format!("f{i}"), content(i, round)).await;
        }
    }
    tick().await;
    let before = story.census().await;
    assert_eq!(before.1 as u64, before.2, "a pack row per object");
    assert_eq!(story.drop_old_versions(), 2 * FILES as usize);

    // A dry run reports what a pass would do now and changes nothing.
    let dry = story.gc(&["--dry-run"]).await;
    assert!(dry["holds_released"] >= 2 * FILES, "every old version's chunks: {dry:?}");
    assert_eq!(story.census().await, before);

    // SIGKILL at different points of passes; after each, every head still reads back.
    for delay_ms in [40u64, 120, 250, 400, 700] {
        let mut child = story.command(&["gc"]).spawn().unwrap();
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let _ = child.start_kill();
        let _ = child.wait().await;
        for i in 0..FILES {
            assert_eq!(story.get(&format!("f{i}")).await, content(i, 2), "f{i} after a kill at {delay_ms} ms");
        }
        tick().await;
    }
    // Passes to the end: release, condemn; delete rows, retire; delete objects.
    let mut reclaimed = 0;
    for _ in 0..3 {
        let report = story.gc(&[]).await;
        reclaimed += report["bytes_reclaimed"];
        tick().await;
    }
    let last = story.gc(&[]).await;
    assert_eq!((last["objects_deleted"], last["holds_released"]), (0, 0), "nothing left: {last:?}");
    let after = story.census().await;
    assert_eq!(after.1 as u64, after.2, "a pack row per object, no orphan");
    // What is left is the heads (incompressible noise, stored as it is plus 37 bytes per entry and
    // 8 per pack): the rest left the store.
    let heads = FILES * SIZE as u64;
    assert!(after.3 >= heads && after.3 < heads + heads / 50, "{before:?} -> {after:?}");
    assert!(reclaimed <= before.3 - after.3, "the uninterrupted passes reclaimed part of it: {reclaimed}");
    for i in 0..FILES {
        assert_eq!(story.get(&format!("f{i}")).await, content(i, 2));
    }
    story.srv.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_killed_mid_run_is_finished_by_the_next_dir() {
    for backend in [Backend::Sqlite, Backend::Mysql] {
        let dir = tempfile::tempdir().unwrap();
        tokio::time::timeout(STORY_TIMEOUT, killed_and_finished(backend, Store::Dir(dir.path().to_path_buf())))
            .await
            .unwrap_or_else(|_| panic!("timed out on {backend:?}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_killed_mid_run_is_finished_by_the_next_s3() {
    let Some(s3) = TestS3::fresh() else { return };
    tokio::time::timeout(STORY_TIMEOUT, killed_and_finished(Backend::Mysql, Store::S3(s3))).await.expect("timed out");
}

/// The daemon collects on its schedule — retention, then the sweep — and says so on /metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_collects_on_a_schedule_with_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let story = Story::start(Backend::Sqlite, Store::Dir(dir.path().to_path_buf()), |c| {
        c.gc_interval_secs = 1;
        c.gc_grace_secs = 0;
        // Retention keeps only the heads: the pass drops the old version itself.
        c.keep_days = 0;
    })
    .await;
    story.put("a", noise(SIZE, 1)).await;
    story.put("a", noise(SIZE, 2)).await;
    let metric = |text: &str, name: &str| -> f64 {
        text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok()).unwrap_or(0.0)
    };
    let mut text = String::new();
    for _ in 0..200 {
        text = story.srv.raw().get(story.srv.url("/metrics")).send().await.unwrap().text().await.unwrap();
        if metric(&text, "filesync_http_gc_objects_reclaimed_total") >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(metric(&text, "filesync_http_gc_objects_reclaimed_total") >= 1.0, "{text}");
    assert!(metric(&text, "filesync_http_gc_bytes_reclaimed_total") >= SIZE as f64, "{text}");
    assert!(metric(&text, "filesync_http_gc_last_run_timestamp_seconds") > 1.7e9, "{text}");
    assert!(metric(&text, "filesync_http_gc_versions_dropped_total") >= 1.0, "{text}");
    assert!(text.contains("filesync_storage_requests_total{op=\"delete\"}"), "{text}");
    assert_eq!(story.get("a").await, noise(SIZE, 2));
    story.srv.stop().await.unwrap();
}

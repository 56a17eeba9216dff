//! The sync journal over HTTP: file lists, history, restore, zip downloads
//! and presence, on SQLite and on MariaDB, with real Redis. The workspace's
//! content is made the way a node makes it: stored through core's `ingest`
//! into the pack store the server reads, committed through the journal.

mod common;

use filesync_core::testing::noise;
use std::collections::BTreeMap;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use common::{assert_error, on_both_backends, urlencode, Server};
use filesync_core::chunking::{self, hex};
use filesync_core::db::journal::{self, Author, Content, Edit, NewChunk};
use filesync_core::db::{packs, Backend, Db};
use filesync_core::ingest;
use filesync_core::proto::presence::{conn_key, member, user_key, PresenceEntry};
use filesync_core::storage::pack::pack_key;
use filesync_core::storage::{legacy, migrate};
use filesync_core::storage::{Backend as StoreBackend, ChunkStore};
use filesync_core::{UserId, WorkspaceId};
use filesync_testkit::TestS3;
use futures::StreamExt;
use redis::AsyncCommands;
use reqwest::StatusCode;
use serde_json::{json, Value};

const REDIS: &str = "redis://127.0.0.1:6379";
const BIG: usize = 20 * 1024 * 1024;

/// What a node would have: the database and the chunk store.
struct Journal {
    db: Db,
    store: ChunkStore,
    ws: WorkspaceId,
    author: Author,
}

impl Journal {
    async fn open(srv: &Server, storage: &Path, ws: i64, user: i64) -> Journal {
        let url = srv.db.url().to_owned();
        let db = tokio::task::spawn_blocking(move || Db::open(&url, 2)).await.unwrap().expect("test db");
        let store = ChunkStore::new(db.clone(), StoreBackend::dir(storage).expect("store"));
        let author = Author { user_id: UserId(user), device_id: "dev-laptop".into(), device_name: "laptop".into() };
        Journal { db, store, ws: WorkspaceId(ws), author }
    }

    async fn commit(&self, edit: Edit) -> i64 {
        let (db, ws, author) = (self.db.clone(), self.ws, self.author.clone());
        let done = tokio::task::spawn_blocking(move || db.write_blocking(|c| journal::commit(c, ws, &author, &edit)))
            .await
            .unwrap()
            .expect("commit");
        assert!(done.new_seq && done.conflict_path.is_none(), "{done:?}");
        done.seq
    }

    /// Chunks `bytes` as a node does, stores and records the chunks, commits a put.
    async fn put(&self, path: &str, base: i64, bytes: &[u8]) -> i64 {
        let streamed = ingest::store_stream(&self.db, self.store.clone(), self.ws, bytes).await.expect("store chunks");
        assert_eq!(streamed.chunks, chunking::scan(bytes).unwrap().refs());
        let content = Content {
            size: bytes.len() as u64,
            mtime_ms: 1_700_000_000_000,
            mode: 0o640,
            content_hash: chunking::hash(bytes),
            chunks: streamed.chunks,
        };
        self.commit(Edit::Put { path: path.into(), base_version: base, content }).await
    }

    /// Stores and commits `bytes` the way releases before packs did: one file per chunk under
    /// `root` and `chunks` rows without a pack.
    async fn put_loose(&self, root: &Path, path: &str, bytes: &[u8]) -> i64 {
        let mut refs = Vec::new();
        for item in chunking::chunks(bytes) {
            let (scanned, data) = item.expect("chunk");
            let hash = scanned.chunk.hash;
            let stored_size = legacy::write_loose(root, &hash, data).expect("loose chunk");
            let row = NewChunk { hash, size: scanned.chunk.len, stored_size, at: None };
            let (db, ws) = (self.db.clone(), self.ws);
            db.write(move |c| journal::record_chunk(c, ws, &row)).await.expect("record chunk");
            refs.push(scanned.chunk);
        }
        let content = Content {
            size: bytes.len() as u64,
            mtime_ms: 1_700_000_000_000,
            mode: 0o640,
            content_hash: chunking::hash(bytes),
            chunks: refs,
        };
        self.commit(Edit::Put { path: path.into(), base_version: 0, content }).await
    }

    /// The file of the pack that holds `hash`.
    async fn pack_file(&self, root: &Path, hash: chunking::Hash) -> PathBuf {
        let found = self.db.run(move |c| packs::locate(c, &[hash])).await.expect("locate");
        let Some(packs::Location::Packed { at, .. }) = found.get(&hash) else { panic!("{} is not packed", hex(&hash)) };
        root.join(pack_key(&at.pack).as_ref())
    }
}

/// Owner alice, viewer bob, outsider carol, and one workspace; returns their tokens and ids.
struct People {
    alice: (i64, String),
    bob: (i64, String),
    carol: (i64, String),
    ws: i64,
}

async fn people(srv: &Server, name: &str) -> People {
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let carol = srv.user("carol").await;
    let (status, body) = srv.post("/create-workspace", Some(&alice.1), json!({"name": name})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let ws = body["workspace"]["id"].as_i64().unwrap();
    let (status, body) = srv
        .post("/add-user", Some(&alice.1), json!({"workspace_id": ws, "email": "bob@example.com", "role": "viewer"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    People { alice, bob, carol, ws }
}

async fn start(backend: Backend, storage: &Path, redis: Option<&str>) -> Server {
    let storage = storage.to_path_buf();
    let redis = redis.map(str::to_owned);
    Server::start(backend, move |c| {
        c.storage = Some(storage.display().to_string());
        c.redis_url = redis;
    })
    .await
}

/// POST /workspaces/{ws}/restore.
async fn restore(srv: &Server, token: &str, ws: i64, path: &str, version: i64) -> (StatusCode, Value) {
    srv.post(&format!("/workspaces/{ws}/restore"), Some(token), json!({"path": path, "version": version})).await
}

/// POST /download-workspace; the whole body (the test holds it to compare).
async fn download(srv: &Server, token: &str, ws: i64) -> reqwest::Response {
    srv.raw()
        .post(srv.url("/download-workspace"))
        .bearer_auth(token)
        .json(&json!({"workspace_id": ws}))
        .send()
        .await
        .expect("request")
}

/// Every entry of a zip: name → bytes (directories map to `None`).
fn unzip(bytes: &[u8]) -> BTreeMap<String, Option<Vec<u8>>> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).expect("a valid zip");
    let mut out = BTreeMap::new();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).expect("entry");
        let name = entry.name().expect("UTF-8 entry name").to_string();
        if entry.is_dir() {
            out.insert(name, None);
        } else {
            let mut data = Vec::new();
            entry.read_to_end(&mut data).expect("entry bytes (CRC checked)");
            out.insert(name, Some(data));
        }
    }
    out
}

async fn zip_of(srv: &Server, token: &str, ws: i64) -> BTreeMap<String, Option<Vec<u8>>> {
    let res = download(srv, token, ws).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "application/zip");
    let disposition = res.headers()["content-disposition"].to_str().unwrap().to_owned();
    assert!(disposition.starts_with("attachment") && disposition.contains(".zip"), "{disposition}");
    unzip(&res.bytes().await.expect("whole body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_history_download_and_restore() {
    on_both_backends(|backend| async move {
        let storage = tempfile::tempdir().unwrap();
        let srv = start(backend, storage.path(), None).await;
        let p = people(&srv, "Team Ünïcødé \"docs\"").await;
        let (alice, bob, carol) = (&p.alice.1, &p.bob.1, &p.carol.1);
        let j = Journal::open(&srv, storage.path(), p.ws, p.alice.0).await;

        let big = noise(BIG, 7);
        let v1 = j.put("docs/a.txt", 0, b"hello").await;
        let v2 = j.put("docs/a.txt", v1, b"hello world").await;
        let big_seq = j.put("photos/big.bin", 0, &big).await;
        let uni = j.put("Ünïcødé/文件 one.md", 0, "# titre ✓".as_bytes()).await;
        let empty = j.put("empty.txt", 0, b"").await;
        let dir = j.commit(Edit::MakeDir { path: "empty/dir".into(), base_version: 0 }).await;
        let gone = j.put("old.txt", 0, b"old").await;
        let deleted = j.commit(Edit::Delete { path: "old.txt".into(), base_version: gone }).await;
        let from = j.put("from.txt", 0, b"moving").await;
        let moved =
            j.commit(Edit::Move { from: "from.txt".into(), to: "moved/to.txt".into(), base_version: from }).await;

        // The list: live heads only, by path, with who and when.
        let files_url = format!("/workspaces/{}/files", p.ws);
        let (status, body) = srv.get(&files_url, Some(bob)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let files = body["files"].as_array().unwrap();
        let paths: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
        assert_eq!(
            paths,
            vec!["docs/a.txt", "empty.txt", "empty/dir", "moved/to.txt", "photos/big.bin", "Ünïcødé/文件 one.md"]
        );
        let a = &files[0];
        assert_eq!((a["version"].as_i64(), a["seq"].as_i64(), a["size"].as_u64()), (Some(v2), Some(v2), Some(11)));
        assert_eq!(a["hash"], hex(&chunking::hash(b"hello world")));
        assert_eq!((a["kind"].as_str(), a["modified_by"].as_str()), (Some("file"), Some("alice")));
        let at: chrono::DateTime<Utc> = a["modified_at"].as_str().unwrap().parse().expect("RFC 3339");
        assert!((Utc::now() - at).num_minutes().abs() < 10, "{at}");
        assert_eq!((files[2]["kind"].as_str(), files[2]["version"].as_i64()), (Some("dir"), Some(dir)));
        assert_eq!(files[2]["hash"], Value::Null);
        assert_eq!((files[3]["version"].as_i64(), files[4]["size"].as_u64()), (Some(moved), Some(BIG as u64)));
        assert_eq!((files[4]["version"].as_i64(), files[5]["version"].as_i64()), (Some(big_seq), Some(uni)));
        assert_eq!(files[1]["version"].as_i64(), Some(empty));

        // History: newest first, deletes and moves included.
        let hist = |path: &str| format!("/workspaces/{}/history?path={}", p.ws, urlencode(path));
        let (status, body) = srv.get(&hist("docs/a.txt"), Some(bob)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let seqs: Vec<i64> =
            body["versions"].as_array().unwrap().iter().map(|v| v["version"].as_i64().unwrap()).collect();
        assert_eq!(seqs, vec![v2, v1]);
        let newest = &body["versions"][0];
        assert_eq!((newest["op"].as_str(), newest["device_id"].as_str()), (Some("put"), Some("dev-laptop")));
        assert_eq!((newest["author"].as_str(), newest["author_id"].as_i64()), (Some("alice"), Some(p.alice.0)));
        let at: chrono::DateTime<Utc> = newest["created_at"].as_str().unwrap().parse().expect("RFC 3339");
        assert!((Utc::now() - at).num_minutes().abs() < 10, "{at}");
        let (_, body) = srv.get(&hist("old.txt"), Some(alice)).await;
        let ops: Vec<(&str, bool)> = body["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v["op"].as_str().unwrap(), v["deleted"].as_bool().unwrap()))
            .collect();
        assert_eq!(ops, vec![("delete", true), ("put", false)]);
        assert_eq!(body["versions"][0]["hash"], Value::Null);
        let (_, body) = srv.get(&hist("from.txt"), Some(alice)).await;
        assert_eq!(body["versions"][0]["op"], "move");
        assert_eq!(body["versions"][0]["from_path"], "from.txt");
        assert_eq!(body["versions"][0]["path"], "moved/to.txt");
        assert_error(&srv.get(&hist("never/there.txt"), Some(alice)).await, 404, "path_not_found");
        for bad in ["../etc/passwd", "/abs", "a//b", "a\\b"] {
            assert_error(&srv.get(&hist(bad), Some(alice)).await, 422, "invalid_path");
        }
        assert_error(&srv.get(&format!("/workspaces/{}/history", p.ws), Some(alice)).await, 422, "invalid_request");

        // Outsiders and unknown workspaces look the same.
        assert_error(&srv.get(&files_url, Some(carol)).await, 404, "workspace_not_found");
        assert_error(&srv.get(&hist("docs/a.txt"), Some(carol)).await, 404, "workspace_not_found");
        assert_error(&srv.get("/workspaces/999999/files", Some(alice)).await, 404, "workspace_not_found");
        assert_error(&srv.get("/workspaces/abc/files", Some(alice)).await, 404, "workspace_not_found");
        assert_error(&srv.get(&files_url, None).await, 401, "missing_token");

        // The zip: exactly the live heads, byte for byte, the 20 MiB file included.
        let entries = zip_of(&srv, bob, p.ws).await;
        let names: Vec<&str> = entries.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            vec!["docs/a.txt", "empty.txt", "empty/dir/", "moved/to.txt", "photos/big.bin", "Ünïcødé/文件 one.md"]
        );
        assert_eq!(entries["docs/a.txt"].as_deref(), Some(&b"hello world"[..]));
        assert_eq!(entries["empty.txt"].as_deref(), Some(&b""[..]));
        assert_eq!(entries["empty/dir/"], None);
        assert_eq!(entries["moved/to.txt"].as_deref(), Some(&b"moving"[..]));
        assert_eq!(entries["Ünïcødé/文件 one.md"].as_deref(), Some("# titre ✓".as_bytes()));
        let got = entries["photos/big.bin"].as_deref().unwrap();
        assert!(got.len() == BIG && got == big.as_slice(), "the big file differs");
        let status = |res: reqwest::Response| res.status();
        assert_eq!(status(download(&srv, carol, p.ws).await), StatusCode::NOT_FOUND);
        assert_eq!(status(download(&srv, alice, 999_999).await), StatusCode::NOT_FOUND);
        let anonymous = srv.raw().post(srv.url("/download-workspace")).json(&json!({"workspace_id": p.ws}));
        assert_error(&srv.send(anonymous).await, 401, "missing_token");
        assert_error(&srv.post("/download-workspace", Some(alice), json!({})).await, 422, "invalid_request");

        // Restore: editors and owners only; the old bytes become the head.
        let (_, before) = srv.get(&files_url, Some(alice)).await;
        assert_error(&restore(&srv, bob, p.ws, "docs/a.txt", v1).await, 403, "forbidden");
        assert_error(&restore(&srv, carol, p.ws, "docs/a.txt", v1).await, 404, "workspace_not_found");
        assert_error(&restore(&srv, alice, p.ws, "docs/a.txt", 999_999).await, 404, "version_not_found");
        assert_error(&restore(&srv, alice, p.ws, "docs/a.txt", big_seq).await, 404, "version_not_found");
        assert_error(&restore(&srv, alice, p.ws, "never/there.txt", v1).await, 404, "path_not_found");
        assert_error(&restore(&srv, alice, p.ws, "old.txt", deleted).await, 422, "version_is_delete");
        assert_error(&restore(&srv, alice, p.ws, "empty/dir", dir).await, 422, "not_a_file");
        assert_error(&restore(&srv, alice, p.ws, "../docs/a.txt", v1).await, 422, "invalid_path");
        assert_eq!(srv.get(&files_url, Some(alice)).await.1, before, "refused restores change nothing");

        let (status, body) = restore(&srv, alice, p.ws, "docs/a.txt", v1).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let new_seq = moved + 1;
        assert_eq!(body, json!({"restored": {"path": "docs/a.txt", "version": new_seq, "restored_from": v1}}));
        let (_, body) = srv.get(&files_url, Some(bob)).await;
        assert_eq!(body["files"][0]["version"].as_i64(), Some(new_seq));
        assert_eq!(body["files"][0]["hash"], hex(&chunking::hash(b"hello")));
        let (_, body) = srv.get(&hist("docs/a.txt"), Some(bob)).await;
        assert_eq!(
            (body["versions"][0]["op"].as_str(), body["versions"][0]["version"].as_i64()),
            (Some("restore"), Some(new_seq))
        );
        assert_eq!(body["versions"][0]["device_id"], "http-api");
        // A deleted path comes back from an old version too.
        let (status, body) = restore(&srv, alice, p.ws, "old.txt", gone).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let entries = zip_of(&srv, alice, p.ws).await;
        assert_eq!(entries["docs/a.txt"].as_deref(), Some(&b"hello"[..]));
        assert_eq!(entries["old.txt"].as_deref(), Some(&b"old"[..]));

        // Without Redis nobody can be seen from here, and the answer says so.
        let (status, body) = srv.get(&format!("/workspaces/{}/presence", p.ws), Some(bob)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, json!({"source": "none", "devices": []}));
        srv.stop().await.expect("clean shutdown");
    })
    .await;
}

/// An empty workspace is an empty zip; a chunk gone from the store aborts
/// the download (the client sees an error, never a wrong file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_workspace_and_missing_chunk() {
    on_both_backends(|backend| async move {
        let storage = tempfile::tempdir().unwrap();
        let srv = start(backend, storage.path(), None).await;
        let p = people(&srv, "Docs").await;
        assert!(zip_of(&srv, &p.alice.1, p.ws).await.is_empty());

        let j = Journal::open(&srv, storage.path(), p.ws, p.alice.0).await;
        let data = noise(1024 * 1024, 3);
        j.put("first.bin", 0, b"intact").await;
        j.put("second.bin", 0, &data).await;
        let victim = chunking::scan(&data[..]).unwrap().chunks[1].chunk.hash;
        std::fs::remove_file(j.pack_file(storage.path(), victim).await).expect("pack file");
        // The headers usually go out before the missing chunk is read, and the chunked body then
        // ends without its terminator; when the read fails first (a loaded machine), the connection
        // closes before the head. Either way the client gets an error, never a short zip.
        let res = srv
            .raw()
            .post(srv.url("/download-workspace"))
            .bearer_auth(&p.alice.1)
            .json(&json!({"workspace_id": p.ws}))
            .send()
            .await;
        if let Ok(res) = res {
            assert_eq!(res.status(), StatusCode::OK, "the failure is found while streaming, after the head");
            assert!(res.bytes().await.is_err(), "the download must fail");
        }
        // The server is fine afterwards.
        let (status, _) = srv.get(&format!("/workspaces/{}/files", p.ws), Some(&p.bob.1)).await;
        assert_eq!(status, StatusCode::OK);
        srv.stop().await.expect("clean shutdown");
    })
    .await;
}

/// A store written by the release before packs (one file per chunk, `chunks` rows without a pack)
/// is served in place by this one, then `storage migrate` packs it: every file downloads
/// byte-identical before and after, no loose file is left, and running it again does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_of_the_previous_release_upgrades_without_losing_a_byte() {
    on_both_backends(|backend| async move {
        let storage = tempfile::tempdir().unwrap();
        let srv = start(backend, storage.path(), None).await;
        let p = people(&srv, "Old").await;
        let j = Journal::open(&srv, storage.path(), p.ws, p.alice.0).await;
        let big = noise(3 * 1024 * 1024 + 17, 11);
        let mut shared = big[..1024 * 1024].to_vec();
        shared.extend_from_slice(b"a different tail");
        let text = "la la la\n".repeat(20_000).into_bytes();
        let files: Vec<(&str, Vec<u8>)> = vec![
            ("big.bin", big),
            ("shares chunks with big.bin", shared),
            ("docs/notes.txt", text),
            ("tiny", b"x".to_vec()),
            ("empty", Vec::new()),
        ];
        for (path, bytes) in &files {
            j.put_loose(storage.path(), path, bytes).await;
        }
        let expected: BTreeMap<String, Option<Vec<u8>>> =
            files.iter().map(|(path, bytes)| (path.to_string(), Some(bytes.clone()))).collect();
        let expected_zip = |mut z: BTreeMap<String, Option<Vec<u8>>>| {
            z.remove("docs/");
            z
        };
        assert_eq!(expected_zip(zip_of(&srv, &p.alice.1, p.ws).await), expected, "read in place");

        let done = migrate::migrate(&j.store, None).await.expect("migrate");
        assert!(done.chunks_packed > 40 && done.packs_written >= 1 && done.unreadable.is_empty(), "{done:?}");
        let loose_left: Vec<_> = std::fs::read_dir(storage.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name() != "packs")
            .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().filter_map(Result::ok))
            .map(|e| e.path())
            .collect();
        assert!(loose_left.is_empty(), "loose files left: {loose_left:?}");
        assert_eq!(expected_zip(zip_of(&srv, &p.alice.1, p.ws).await), expected, "read from packs");
        for (path, bytes) in &files {
            let res = srv
                .raw()
                .get(srv.url(&format!("/workspaces/{}/file?path={}", p.ws, urlencode(path))))
                .bearer_auth(&p.bob.1)
                .send()
                .await
                .expect("request");
            assert_eq!(res.status(), StatusCode::OK);
            assert_eq!(&res.bytes().await.expect("body")[..], &bytes[..], "{path}");
        }
        let again = migrate::migrate(&j.store, None).await.expect("migrate again");
        assert_eq!(again, migrate::Migrated::default());

        // Then the directory moves to S3 (`storage migrate --from DIR`): every file reads back from
        // the bucket; an object store that cannot be reached is a retryable error, not a panic.
        if let Some(s3) = TestS3::fresh() {
            let mut config = filesync_core::config::Config::default();
            s3.configure(&mut config);
            let remote = ChunkStore::new(j.db.clone(), StoreBackend::from_config(&config).expect("s3 backend"));
            let moved = migrate::migrate(&remote, Some(j.store.backend())).await.expect("move to s3");
            assert_eq!((moved.packs_copied, moved.chunks_packed), (done.packs_written, 0), "{moved:?}");
            for (path, bytes) in &files {
                let chunks = chunking::scan(&bytes[..]).unwrap().refs();
                let mut reads = remote.read_many(chunks.iter().map(|c| c.hash).collect(), 4);
                let mut back = Vec::new();
                while let Some(got) = reads.next().await {
                    back.extend(got.expect("chunk from s3").1);
                }
                assert_eq!(&back, bytes, "{path} from s3");
            }
            let (proxy, through) = s3.via_proxy().await;
            let mut config = filesync_core::config::Config::default();
            through.configure(&mut config);
            let cut = ChunkStore::new(j.db.clone(), StoreBackend::from_config(&config).expect("s3 backend"));
            proxy.cut();
            let hash = chunking::scan(&files[0].1[..]).unwrap().refs()[0].hash;
            let err = cut.get(&hash).await.expect_err("the store is away");
            assert!(err.is_unavailable(), "{err:?}");
            proxy.restore();
            assert_eq!(
                cut.get(&hash).await.expect("back").len(),
                chunking::scan(&files[0].1[..]).unwrap().refs()[0].len as usize
            );
        }
        srv.stop().await.expect("clean shutdown");
    })
    .await;
}

/// A name no other test run uses at the same time.
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

fn entry(node: &str, session: &str, user: i64, device: &str) -> PresenceEntry {
    PresenceEntry {
        node_id: node.into(),
        session_id: session.into(),
        user_id: UserId(user),
        device_id: format!("id-{device}"),
        device_name: device.into(),
        peer_addr: "127.0.0.1:40000".into(),
        connected_at: chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z").unwrap().with_timezone(&Utc),
    }
}

/// Writes `e` as a node does; `expires_ms` is its score in the user's set.
async fn record(conn: &mut redis::aio::MultiplexedConnection, e: &PresenceEntry, expires_ms: i64, with_hash: bool) {
    let key = conn_key(&e.node_id, &e.session_id);
    if with_hash {
        let _: () = conn.hset_multiple(&key, &e.to_fields()).await.unwrap();
        let _: () = conn.expire(&key, 120).await.unwrap();
    }
    let ukey = user_key(e.user_id);
    let _: () = conn.zadd(&ukey, member(&e.node_id, &e.session_id), expires_ms).await.unwrap();
    let _: () = conn.expire(&ukey, 120).await.unwrap();
}

async fn forget(conn: &mut redis::aio::MultiplexedConnection, e: &PresenceEntry) {
    let _: () = conn.del(conn_key(&e.node_id, &e.session_id)).await.unwrap();
    let _: () = conn.zrem(user_key(e.user_id), member(&e.node_id, &e.session_id)).await.unwrap();
}

/// A workspace whose `notes.txt` has versions `first` (returned) and `second`.
async fn notes_in_two_versions(srv: &Server, storage: &Path) -> (People, i64) {
    let p = people(srv, "Shared").await;
    let j = Journal::open(srv, storage, p.ws, p.alice.0).await;
    let v1 = j.put("notes.txt", 0, b"first").await;
    j.put("notes.txt", v1, b"second").await;
    (p, v1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_is_announced_and_presence_comes_from_redis() {
    on_both_backends(|backend| async move {
        let storage = tempfile::tempdir().unwrap();
        let srv = start(backend, storage.path(), Some(REDIS)).await;
        let (p, v1) = notes_in_two_versions(&srv, storage.path()).await;

        let client = redis::Client::open(REDIS).unwrap();
        let mut pubsub = client.get_async_pubsub().await.expect("Redis reachable");
        pubsub.subscribe(format!("filesync:ws:{}", p.ws)).await.unwrap();
        let mut messages = pubsub.on_message();
        let (status, body) = restore(&srv, &p.alice.1, p.ws, "notes.txt", v1).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let seq = body["restored"]["version"].as_i64().unwrap();
        let want = json!({"type": "committed", "workspace_id": p.ws, "seq": seq});
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let msg = messages.next().await.expect("subscription open");
                let payload: String = msg.get_payload().expect("text payload");
                // Other tests use the same workspace ids on their own databases.
                if serde_json::from_str::<Value>(&payload).expect("JSON event") == want {
                    return;
                }
            }
        })
        .await
        .expect("committed event published within 10 s");
        drop(messages);
        assert_eq!(zip_of(&srv, &p.bob.1, p.ws).await["notes.txt"].as_deref(), Some(&b"first"[..]));

        // Presence in the nodes' layout: live entries listed, an expired one,
        // one whose hash is gone and a non-member's are not.
        let node = unique("node");
        let mut conn = client.get_multiplexed_async_connection().await.expect("Redis reachable");
        let now = Utc::now().timestamp_millis();
        let laptop = entry(&node, "s1", p.alice.0, "laptop");
        let phone = entry(&node, "s2", p.bob.0, "phone");
        let stale = entry(&node, "s3", p.bob.0, "stale-desktop");
        let ended = entry(&node, "s4", p.alice.0, "ended-tablet");
        let outsider = entry(&node, "s5", p.carol.0, "carols-pc");
        record(&mut conn, &laptop, now + 60_000, true).await;
        record(&mut conn, &phone, now + 60_000, true).await;
        record(&mut conn, &stale, now - 1_000, true).await;
        record(&mut conn, &ended, now + 60_000, false).await;
        record(&mut conn, &outsider, now + 60_000, true).await;
        let presence_url = format!("/workspaces/{}/presence", p.ws);
        let (status, body) = srv.get(&presence_url, Some(&p.bob.1)).await;
        for e in [&laptop, &phone, &stale, &ended, &outsider] {
            forget(&mut conn, e).await;
        }
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["source"], "redis");
        // Entries of other test runs (same user ids, other databases) are not ours to check.
        let ours: Vec<&Value> = body["devices"].as_array().unwrap().iter().filter(|d| d["node_id"] == node).collect();
        assert_eq!(
            ours,
            vec![
                &json!({"user_id": p.alice.0, "username": "alice", "device_id": "id-laptop", "device_name": "laptop",
                        "node_id": node, "peer_addr": "127.0.0.1:40000", "connected_at": "2026-01-02T03:04:05Z"}),
                &json!({"user_id": p.bob.0, "username": "bob", "device_id": "id-phone", "device_name": "phone",
                        "node_id": node, "peer_addr": "127.0.0.1:40000", "connected_at": "2026-01-02T03:04:05Z"}),
            ]
        );
        assert_error(&srv.get(&presence_url, Some(&p.carol.1)).await, 404, "workspace_not_found");
        srv.stop().await.expect("clean shutdown");

        // Redis down: a restore still commits (the journal is the truth); presence says it cannot tell.
        let srv = start(backend, storage.path(), Some("redis://127.0.0.1:1")).await;
        let (p, v1) = notes_in_two_versions(&srv, storage.path()).await;
        let (status, body) = restore(&srv, &p.alice.1, p.ws, "notes.txt", v1).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(zip_of(&srv, &p.alice.1, p.ws).await["notes.txt"].as_deref(), Some(&b"first"[..]));
        assert_error(&srv.get(&format!("/workspaces/{}/presence", p.ws), Some(&p.alice.1)).await, 503, "unavailable");
        srv.stop().await.expect("clean shutdown");
    })
    .await;
}

/// A workspace of many files (more than one batch of the zip's manifest reads), uploaded over HTTP
/// into the S3 bucket, downloads as a zip whose every entry equals the file's current content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zip_of_many_files_on_s3_equals_their_content() {
    const FILES: usize = 300;
    on_both_backends(|backend| async move {
        let Some(s3) = TestS3::fresh() else { return };
        let srv = Server::start(backend, move |c| s3.configure(c)).await;
        let p = people(&srv, "Many").await;
        let token = &p.alice.1;
        let put = |path: String, bytes: Vec<u8>| {
            let url = srv.url(&format!("/workspaces/{}/file?path={}", p.ws, urlencode(&path)));
            let req = srv.raw().put(url).bearer_auth(token).body(bytes);
            async move {
                let res = req.send().await.expect("request");
                assert!(res.status().is_success(), "{path}: {}", res.status());
            }
        };
        let mut expected = BTreeMap::new();
        for i in 0..FILES {
            // 0 to ~300 KiB: empty files, one chunk, several chunks.
            let bytes = noise((i * 7_919) % 300_000, i as u64);
            let path = format!("dir{}/sub{}/file {i}.bin", i % 7, i % 3);
            put(path.clone(), bytes.clone()).await;
            expected.insert(path, Some(bytes));
        }
        // A file changed after it was written: the zip has its head.
        put("dir0/sub0/file 0.bin".into(), b"second version".to_vec()).await;
        expected.insert("dir0/sub0/file 0.bin".into(), Some(b"second version".to_vec()));
        let (status, body) =
            srv.post(&format!("/workspaces/{}/mkdir", p.ws), Some(token), json!({"path": "empty/folder"})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        expected.insert("empty/folder/".into(), None);
        let got = zip_of(&srv, &p.bob.1, p.ws).await;
        let files: BTreeMap<_, _> =
            got.iter().filter(|(_, v)| v.is_some()).map(|(k, v)| (k.clone(), v.clone())).collect();
        let want: BTreeMap<_, _> =
            expected.iter().filter(|(_, v)| v.is_some()).map(|(k, v)| (k.clone(), v.clone())).collect();
        assert_eq!(files.len(), FILES);
        assert!(files == want, "a zip entry differs from its file");
        assert_eq!(got.get("empty/folder/"), Some(&None), "the empty folder is in the zip");
        srv.stop().await.expect("clean shutdown");
    })
    .await;
}

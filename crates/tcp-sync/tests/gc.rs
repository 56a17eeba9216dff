//! Garbage collection under load: two clients upload and edit continuously (some edits bring back
//! content whose chunks were just collected, so commits meet released holds and are sent again),
//! a third downloads, "retention" drops every version that is not a head, and the collector runs
//! over and over with a grace period of a second. Afterwards every head downloads and verifies,
//! and the store holds exactly what was written minus what the collector says it reclaimed.
//! `FILESYNC_GC_LOAD_SECS` sets how long the load runs (default 20; the full test: 60).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{connect, metric, noise, Cluster};
use diesel::prelude::*;
use filesync_core::db::schema::{chunks, file_heads, file_versions, packs, workspaces};
use filesync_core::db::{Backend, Db};
use filesync_core::gc::{self, Report, Settings};
use filesync_core::storage::ChunkStore;
use filesync_core::{Role, WorkspaceId};
use filesync_proto_client::Client;

const FILES_EACH: u64 = 4;

/// The content of `path`'s `version`-th edit: a stable prefix (chunks shared across versions), a
/// tail of its own; every fifth edit repeats the content of two edits before (whose chunks the
/// collector may have released meanwhile).
fn content(path: &str, version: u64) -> Vec<u8> {
    let seed = path.bytes().fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let v = if version % 5 == 4 { version - 2 } else { version };
    let mut data = noise(120_000, seed);
    data.extend(noise(60_000 + (v as usize % 3) * 40_000, seed ^ ((v + 1) * 0x9e37_79b9)));
    data
}

/// What a writer knows of its files: path -> (seq, content hash) of its last commit.
type Written = Arc<Mutex<HashMap<String, (i64, [u8; 32])>>>;

async fn writer(
    client: Client,
    ws: WorkspaceId,
    who: &str,
    dir: std::path::PathBuf,
    stop: Arc<AtomicBool>,
    written: Written,
) -> u64 {
    let mut version: HashMap<String, (u64, i64)> = HashMap::new();
    let mut commits = 0u64;
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let path = format!("{who}{}", i % FILES_EACH);
        i += 1;
        let (v, base) = version.get(&path).copied().unwrap_or((0, 0));
        let data = content(&path, v);
        let local = dir.join(&path);
        std::fs::write(&local, &data).unwrap();
        let done = client.put_file(ws, &path, &local, base).await.unwrap_or_else(|e| panic!("{path} v{v}: {e}"));
        assert_eq!(done.conflict_path, None, "each writer edits its own files");
        version.insert(path.clone(), (v + 1, done.seq));
        written.lock().unwrap().insert(path, (done.seq, *blake3::hash(&data).as_bytes()));
        commits += 1;
    }
    commits
}

/// What retention with `keep_days = 0` does: every version that is not a head goes.
fn drop_old_versions(db: &Db, ws: WorkspaceId) -> usize {
    db.write_blocking(|c| {
        // Locked as a commit locks it: no head moves while we read them.
        diesel::update(workspaces::table.find(ws.0)).set(workspaces::head_seq.eq(workspaces::head_seq)).execute(c)?;
        let heads: Vec<i64> =
            file_heads::table.filter(file_heads::workspace_id.eq(ws.0)).select(file_heads::seq).load(c)?;
        Ok(diesel::delete(
            file_versions::table.filter(file_versions::workspace_id.eq(ws.0)).filter(file_versions::seq.ne_all(heads)),
        )
        .execute(c)?)
    })
    .unwrap()
}

fn add(total: &mut Report, r: &Report) {
    total.holds_released += r.holds_released;
    total.chunks_deleted += r.chunks_deleted;
    total.packs_rewritten += r.packs_rewritten;
    total.packs_retired += r.packs_retired;
    total.objects_deleted += r.objects_deleted;
    total.bytes_reclaimed += r.bytes_reclaimed;
    total.bytes_written += r.bytes_written;
}

async fn under_load(cluster: Cluster) {
    let secs: u64 = std::env::var("FILESYNC_GC_LOAD_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let node = cluster.node().await;
    let (alice, alice_token) = cluster.user("alice");
    let (bob, bob_token) = cluster.user("bob");
    let (carol, carol_token) = cluster.user("carol");
    let ws = cluster.workspace(alice, "team");
    cluster.share(ws, bob, Role::Editor, alice);
    cluster.share(ws, carol, Role::Viewer, alice);
    let (a, _ea) = connect(node.addr, &alice_token, "a").await;
    let (b, _eb) = connect(node.addr, &bob_token, "b").await;
    let (c, _ec) = connect(node.addr, &carol_token, "c").await;
    let stop = Arc::new(AtomicBool::new(false));
    let written: Written = Arc::default();
    let local = tempfile::tempdir().unwrap();
    for d in ["a", "b", "c"] {
        std::fs::create_dir_all(local.path().join(d)).unwrap();
    }
    let writers = [("a", a), ("b", b)].map(|(who, client)| {
        tokio::spawn(writer(client, ws, who, local.path().join(who), stop.clone(), written.clone()))
    });

    // The reader: downloads whatever the heads are, verified against the journal's content hash.
    let downloads = Arc::new(AtomicU64::new(0));
    let reader = {
        let (db, stop, downloads, dest) = (cluster.db.clone(), stop.clone(), downloads.clone(), local.path().join("c"));
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let heads = db.run(move |x| filesync_core::db::journal::live_heads(x, ws)).await.unwrap();
                for head in heads {
                    let target = dest.join(&head.path);
                    match c.download(ws, head.seq, &target).await {
                        Ok(_) => {
                            let data = std::fs::read(&target).unwrap();
                            assert_eq!(
                                *blake3::hash(&data).as_bytes(),
                                head.content_hash,
                                "{}@{}",
                                head.path,
                                head.seq
                            );
                            downloads.fetch_add(1, Ordering::Relaxed);
                        }
                        // Superseded and dropped by "retention" meanwhile: a newer head exists.
                        Err(e) => {
                            let seq = head.seq;
                            let path = head.path.clone();
                            let now = db.run(move |x| filesync_core::db::journal::head_of(x, ws, &path)).await.unwrap();
                            assert!(
                                now.is_some_and(|h| h.seq > seq),
                                "the head {}@{seq} failed to download: {e}",
                                head.path
                            );
                        }
                    }
                }
            }
        })
    };

    // The collector and "retention", over and over.
    let store =
        ChunkStore::new(cluster.db.clone(), filesync_core::storage::Backend::from_config(&cluster.config()).unwrap());
    let settings = Settings::new(Duration::from_secs(1));
    let holder = filesync_core::db::lease::holder_name();
    let mut total = Report::default();
    let mut passes = 0;
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_secs(secs) {
        let db = cluster.db.clone();
        tokio::task::spawn_blocking(move || drop_old_versions(&db, ws)).await.unwrap();
        let r = gc::run(&cluster.db, &store, &settings, &holder).await.unwrap();
        add(&mut total, &r);
        passes += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut commits = 0;
    for w in writers {
        commits += w.await.unwrap();
    }
    reader.await.unwrap();
    assert!(commits > 20 && downloads.load(Ordering::Relaxed) > 5, "{commits} commits, {downloads:?} downloads");
    assert!(total.holds_released > 0 && total.objects_deleted > 0, "the collector collected under load: {total:?}");

    // Quiet now: the last versions go, and passes a grace period apart finish the work.
    drop_old_versions(&cluster.db, ws);
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let r = gc::run(&cluster.db, &store, &settings, &holder).await.unwrap();
        add(&mut total, &r);
    }
    let last = gc::run(&cluster.db, &store, &settings, &holder).await.unwrap();
    assert_eq!((last.holds_released, last.chunks_condemned, last.objects_deleted), (0, 0, 0), "{last}");

    // Every head downloads and is what its writer wrote.
    let (d, _ed) = connect(node.addr, &carol_token, "d").await;
    let heads: Vec<(String, (i64, [u8; 32]))> = written.lock().unwrap().clone().into_iter().collect();
    assert_eq!(heads.len() as u64, 2 * FILES_EACH);
    for (path, (seq, hash)) in heads {
        let target = local.path().join("final").join(&path);
        d.download(ws, seq, &target).await.unwrap_or_else(|e| panic!("{path}@{seq}: {e}"));
        assert_eq!(*blake3::hash(&std::fs::read(&target).unwrap()).as_bytes(), hash, "{path}");
    }

    // The store holds what was written minus what the collector reclaimed, to the byte; one row per
    // object; no chunk row that no version names; and every pack at least REWRITE_BELOW live.
    let objects: Vec<_> = store
        .backend()
        .list(Some("packs"))
        .await
        .unwrap()
        .into_iter()
        .filter(|o| gc::orphans::pack_of_key(&o.key).is_some())
        .collect();
    let in_store: u64 = objects.iter().map(|o| o.size).sum();
    let uploaded = metric(&node.node.metrics_text(), "filesync_storage_bytes_total{direction=\"written\"}") as u64;
    assert_eq!(in_store, uploaded + total.bytes_written - total.bytes_reclaimed, "{total:?}");
    let (pack_rows, pack_bytes, live, chunk_rows): (i64, i64, i64, i64) = cluster
        .db
        .run(|x| {
            let sizes: Vec<i64> = packs::table.select(packs::size).load(x)?;
            let stored: Vec<i32> = chunks::table.select(chunks::stored_size).load(x)?;
            Ok((
                sizes.len() as i64,
                sizes.iter().sum(),
                stored.iter().map(|s| i64::from(*s)).sum(),
                stored.len() as i64,
            ))
        })
        .await
        .unwrap();
    assert_eq!((pack_rows as usize, pack_bytes as u64), (objects.len(), in_store));
    let mut named = std::collections::HashSet::new();
    let versions = cluster.db.run(move |x| filesync_core::db::journal::live_heads(x, ws)).await.unwrap();
    for v in &versions {
        let seq = v.seq;
        let (_, refs) =
            cluster.db.run(move |x| filesync_core::db::journal::version_at(x, ws, seq)).await.unwrap().unwrap();
        named.extend(refs.into_iter().map(|r| r.hash));
    }
    assert_eq!(chunk_rows as usize, named.len(), "chunk rows are exactly the chunks the heads name");
    assert!(live as f64 >= gc::REWRITE_BELOW * in_store as f64 * 0.9, "{live} live of {in_store}");
    eprintln!(
        "gc under load ({secs} s, {passes} passes): {commits} commits, {} downloads; uploaded {uploaded} B, \
         reclaimed {} B in {} objects, {} packs rewritten ({} B written), {} holds released; {in_store} B left, \
         {live} B live",
        downloads.load(Ordering::Relaxed),
        total.bytes_reclaimed,
        total.objects_deleted,
        total.packs_rewritten,
        total.bytes_written,
        total.holds_released,
    );
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_under_load_mariadb_dir() {
    under_load(Cluster::new(Backend::Mysql, false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_under_load_sqlite_dir() {
    under_load(Cluster::new(Backend::Sqlite, false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_under_load_mariadb_s3() {
    let Some(cluster) = Cluster::on_s3(Backend::Mysql, false) else { return };
    under_load(cluster).await;
}

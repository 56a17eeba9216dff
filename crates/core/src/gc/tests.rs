//! The collector's story on both database backends with a directory store: what goes, what stays,
//! and that nothing a retained version names is ever lost. (The S3 store, the command, SIGKILL and
//! the collector under load are tested from filesync-http and filesync-tcp.)

use std::collections::HashSet;
use std::time::Duration;

use diesel::prelude::*;

use super::*;
use crate::chunking::Hash;
use crate::db::accounts::{self, NewUser};
use crate::db::journal::{self, Author, Content, Edit, Refusal};
use crate::db::schema::{chunks, file_heads, file_versions, packs, workspace_chunks};
use crate::ingest::{self, Base, NewPut};
use crate::storage::{Backend, ChunkStore};
use crate::testing::{for_each_backend, noise, TestDb};
use crate::{UserId, WorkspaceId};

struct World {
    db: Db,
    store: ChunkStore,
    ws: WorkspaceId,
    author: Author,
    dir: tempfile::TempDir,
}

fn world(tdb: &TestDb) -> World {
    let db = Db::open(tdb.url(), 4).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::new(db.clone(), Backend::dir(dir.path()).unwrap());
    let (user, ws) = db
        .write_blocking(|c| {
            let new = NewUser {
                first_name: "A",
                last_name: "B",
                username: "gc",
                email: "gc@example.com",
                password_hash: "x",
            };
            let user = accounts::create_user(c, &new)?;
            let ws = accounts::create_workspace(c, UserId(user.id), "team")?;
            Ok((UserId(user.id), WorkspaceId(ws.id)))
        })
        .unwrap();
    World { db, store, ws, author: Author { user_id: user, device_id: "t".into(), device_name: "t".into() }, dir }
}

impl World {
    async fn put(&self, path: &str, data: &[u8]) -> (i64, Vec<Hash>) {
        let streamed = ingest::store_stream(&self.db, self.store.clone(), self.ws, data).await.unwrap();
        let hashes = streamed.chunks.iter().map(|c| c.hash).collect();
        let put = NewPut { path: path.into(), base: Base::Current, mtime_ms: 0, mode: None };
        let done = ingest::commit_put(&self.db, self.ws, self.author.clone(), put, streamed).await.unwrap();
        (done.committed.seq, hashes)
    }

    /// What retention would do: every version of the workspace that is not a head goes.
    fn drop_old_versions(&self) -> usize {
        let ws = self.ws.0;
        self.db
            .write_blocking(move |c| {
                let heads: Vec<i64> =
                    file_heads::table.filter(file_heads::workspace_id.eq(ws)).select(file_heads::seq).load(c)?;
                Ok(diesel::delete(
                    file_versions::table
                        .filter(file_versions::workspace_id.eq(ws))
                        .filter(file_versions::seq.ne_all(heads)),
                )
                .execute(c)?)
            })
            .unwrap()
    }

    /// Every head's content, read back and verified.
    async fn read_heads(&self) -> usize {
        let ws = self.ws;
        let heads = self.db.run(move |c| journal::live_heads(c, ws)).await.unwrap();
        for head in &heads {
            let seq = head.seq;
            let (_, refs) = self.db.run(move |c| journal::version_at(c, ws, seq)).await.unwrap().unwrap();
            let mut data = Vec::new();
            let mut read = self.store.read_many(refs.iter().map(|r| r.hash).collect(), 4);
            while let Some(chunk) = futures::StreamExt::next(&mut read).await {
                data.extend(chunk.unwrap().1);
            }
            assert_eq!(*blake3::hash(&data).as_bytes(), head.content_hash, "{} reads back", head.path);
        }
        heads.len()
    }

    /// Rows of chunks, holds and packs, and the objects in the store with their bytes.
    async fn census(&self) -> Census {
        let (chunk_rows, holds, pack_rows) = self
            .db
            .run(|c| {
                Ok((
                    chunks::table.count().get_result::<i64>(c)?,
                    workspace_chunks::table.count().get_result::<i64>(c)?,
                    packs::table.count().get_result::<i64>(c)?,
                ))
            })
            .await
            .unwrap();
        let objects = self.store.backend().list(Some("packs")).await.unwrap();
        let objects: Vec<_> = objects.into_iter().filter(|o| orphans::pack_of_key(&o.key).is_some()).collect();
        Census {
            chunk_rows,
            holds,
            pack_rows,
            objects: objects.len() as u64,
            bytes: objects.iter().map(|o| o.size).sum(),
        }
    }

    async fn pass(&self, grace: Duration, dry_run: bool) -> Report {
        let settings = Settings { dry_run, ..Settings::new(grace) };
        run(&self.db, &self.store, &settings, &crate::db::lease::holder_name()).await.unwrap()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Census {
    chunk_rows: i64,
    holds: i64,
    pack_rows: i64,
    objects: u64,
    bytes: u64,
}

/// Timestamps are whole seconds: waiting this long makes everything written so far older than a
/// grace period of 0.
async fn tick() {
    tokio::time::sleep(Duration::from_millis(1100)).await;
}

#[test]
fn collection_story_on_both_backends() {
    for_each_backend(|tdb| {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(story(tdb));
    });
}

async fn story(tdb: &TestDb) {
    let w = world(tdb);
    // Ten files of about 1 MiB each, each written three times: two thirds of the bytes become
    // garbage once the old versions go. One small file shares its chunks with nothing.
    for round in 0..3u64 {
        for i in 0..10u64 {
            w.put(&format!("f{i}"), &noise(1 << 20, round * 100 + i)).await;
        }
    }
    let (_, kept) = w.put("same", &noise(300_000, 9999)).await;
    // One upload whose pack becomes three quarters dead: rewritten.
    let (a, b, c) = (noise(250_000, 5001), noise(750_000, 5002), noise(750_000, 5003));
    w.put("mix", &[a.clone(), b].concat()).await;
    w.put("mix", &[a, c].concat()).await;
    tick().await;
    let before = w.census().await;
    assert_eq!(before.objects as i64, before.pack_rows);

    // Nothing is unreferenced yet: a pass changes nothing.
    let idle = w.pass(Duration::ZERO, false).await;
    assert_eq!((idle.holds_released, idle.chunks_deleted, idle.objects_deleted), (0, 0, 0), "{idle}");
    assert_eq!(w.census().await, before);

    assert_eq!(w.drop_old_versions(), 21);
    // A dry run reports and changes nothing.
    let dry = w.pass(Duration::ZERO, true).await;
    assert!(dry.holds_released > 0, "{dry}");
    assert_eq!(w.census().await, before);

    // A grace period longer than the test: nothing is released.
    let young = w.pass(Duration::from_secs(3600), false).await;
    assert_eq!(young.holds_released, 0, "{young}");

    // Pass 1 releases the holds and condemns the chunks; pass 2 deletes their rows (condemned a
    // grace period ago) and retires or rewrites the packs; pass 3 deletes the retired objects.
    let first = w.pass(Duration::ZERO, false).await;
    assert_eq!(first.holds_released, dry.holds_released, "{first}");
    assert_eq!(first.chunks_condemned, first.holds_released, "{first}");
    assert_eq!(first.chunks_deleted, 0, "{first}");
    tick().await;
    let second = w.pass(Duration::ZERO, false).await;
    assert_eq!(second.chunks_deleted, first.chunks_condemned, "{second}");
    assert_eq!(second.packs_retired, 20, "{second}");
    assert_eq!(second.packs_rewritten, 1, "{second}");
    tick().await;
    let third = w.pass(Duration::ZERO, false).await;
    assert!(third.objects_deleted > 0, "{third}");
    let after = w.census().await;
    // The store shrank by exactly what the passes say they reclaimed, and holds only what the
    // heads name.
    let reclaimed = second.bytes_reclaimed + third.bytes_reclaimed;
    assert_eq!(before.bytes + second.bytes_written - after.bytes, reclaimed, "{second} / {third}");
    assert_eq!(third.objects_deleted, second.packs_retired + second.packs_rewritten, "{third}");
    assert_eq!(after.objects as i64, after.pack_rows, "no object without a row, no row without an object");
    // The heads: ten files of 1 MiB, 300,000 bytes, 1,000,000 bytes (incompressible noise, so
    // stored as they are, plus 37 bytes per entry and 8 per pack).
    let heads = 10 * (1u64 << 20) + 300_000 + 1_000_000;
    assert!(after.bytes >= heads && after.bytes < heads + heads / 50, "{before:?} -> {after:?}");
    assert_eq!(w.read_heads().await, 12);
    let ws = w.ws.0;
    let held: HashSet<Vec<u8>> =
        w.db.run(move |c| {
            Ok(workspace_chunks::table
                .filter(workspace_chunks::workspace_id.eq(ws))
                .select(workspace_chunks::hash)
                .load(c)?
                .into_iter()
                .collect())
        })
        .await
        .unwrap();
    assert!(kept.iter().all(|h| held.contains(h.as_slice())));
    assert_eq!(after.chunk_rows, after.holds, "one workspace: every chunk row is held once");

    // A commit naming a chunk whose hold was released is refused (the client sends it again).
    let gone = w.drop_old_versions();
    assert_eq!(gone, 0);
    let (seq, hashes) = w.put("victim", &noise(100_000, 4242)).await;
    let victim = hashes[0];
    w.db.write_blocking(move |c| {
        diesel::delete(
            file_versions::table.filter(file_versions::workspace_id.eq(ws)).filter(file_versions::seq.eq(seq)),
        )
        .execute(c)?;
        diesel::delete(file_heads::table.filter(file_heads::workspace_id.eq(ws)).filter(file_heads::seq.eq(seq)))
            .execute(c)?;
        Ok(())
    })
    .unwrap();
    tick().await;
    let released = w.pass(Duration::ZERO, false).await;
    assert!(released.holds_released >= hashes.len() as u64, "{released}");
    let edit = Edit::Put {
        path: "again".into(),
        base_version: 0,
        content: Content {
            size: 0,
            mtime_ms: 0,
            mode: 0,
            content_hash: [0; 32],
            chunks: vec![crate::chunking::ChunkRef { hash: victim, len: 1 }],
        },
    };
    let author = w.author.clone();
    let wsid = w.ws;
    let refused = w.db.write(move |c| journal::commit(c, wsid, &author, &edit)).await.unwrap_err();
    assert!(matches!(refused, DbError::Refused(Refusal::ChunksNotHeld)), "{refused}");
    // Condemned, an upload does not deduplicate against it: it stores it again.
    let recorded = w.db.run(move |c| crate::db::packs::recorded(c, &[victim])).await.unwrap();
    assert!(recorded.is_empty());

    // Orphans: an object with no row older than the grace period goes, a young one stays.
    let orphan = |name: u8| w.dir.path().join(format!("packs/{name:02x}/{}.pack", format!("{name:02x}").repeat(16)));
    for (name, age) in [(0xaa, 7200), (0xbb, 0)] {
        let path = orphan(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"FSPK\x01\x00\x00\x00garbage").unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(std::time::SystemTime::now() - Duration::from_secs(age)).unwrap();
    }
    let sweep = w.pass(Duration::from_secs(3600), false).await;
    assert_eq!(sweep.orphans_deleted, 1, "{sweep}");
    assert!(!orphan(0xaa).exists() && orphan(0xbb).exists());
    assert_eq!(w.read_heads().await, 12);
}

/// One runner at a time: a second one is told who holds the lease; a runner of this host whose
/// process is gone is taken over at once; an expired lease is free.
#[test]
fn the_lease_admits_one_runner() {
    for_each_backend(|tdb| {
        let db = Db::open(tdb.url(), 2).unwrap();
        let now = chrono::Utc::now();
        let ttl = chrono::Duration::seconds(60);
        let acquire = |who: &str, at| db.write_blocking(|c| lease::acquire(c, lease::GC, who, at, ttl)).unwrap();
        let me = lease::holder_name();
        assert_eq!(acquire(&me, now).holder, me);
        let host = me.split(':').next().unwrap().to_owned();
        let other = format!("{host}:{}:beef", std::process::id());
        assert_eq!(acquire(&other, now).holder, me, "a live holder keeps it");
        assert_eq!(acquire(&other, now + chrono::Duration::seconds(61)).holder, other, "expired");
        // A holder of this host whose process is gone (pid 0x7fffffff never runs).
        let dead = format!("{host}:{}:dead", i32::MAX);
        db.write_blocking(|c| {
            diesel::update(crate::db::schema::gc_leases::table)
                .set(crate::db::schema::gc_leases::holder.eq(&dead))
                .execute(c)?;
            Ok(())
        })
        .unwrap();
        assert_eq!(acquire(&me, now).holder, me, "a dead holder's lease is taken over");
        db.write_blocking(|c| lease::release(c, lease::GC, &me)).unwrap();
        assert_eq!(acquire(&other, now).holder, other, "released");
    });
}

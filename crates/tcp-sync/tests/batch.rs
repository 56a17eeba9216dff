//! `PutFiles`: many small files in one request and one transaction, as an
//! agent's initial sync sends them.

mod common;

use common::*;
use filesync_core::chunking::{self, FileScan};
use filesync_core::db::Backend;
use filesync_core::proto::{ErrorCode, MAX_BATCH_CHUNKS, MAX_BATCH_FILES};
use filesync_core::Role;
use filesync_proto_client::{BatchUpload, ClientError};

fn scan(path: &std::path::Path) -> FileScan {
    chunking::scan(std::io::BufReader::new(std::fs::File::open(path).unwrap())).unwrap()
}

async fn batch_story(cluster: &Cluster) {
    let n = cluster.node().await;
    let (alice, ta) = cluster.user("alice");
    let (bob, tb) = cluster.user("bob");
    let (carol, tc) = cluster.user("carol");
    let ws = cluster.workspace(alice, "Photos");
    cluster.share(ws, bob, Role::Editor, alice);
    cluster.share(ws, carol, Role::Viewer, alice);
    let dir = tempfile::tempdir().unwrap();
    let (a, _ae) = connect(n.addr, &ta, "alice-laptop").await;
    let (b, mut be) = connect(n.addr, &tb, "bob-desk").await;
    within("subscribe", b.subscribe(ws, 0)).await.unwrap();

    // Bob has already put one of the paths there: Alice's batch says "new", so hers becomes a conflict copy.
    let bobs = write_file(dir.path(), "bobs.txt", b"bob was first");
    within("bob's upload", b.put_file(ws, "d2/f103.txt", &bobs, 0)).await.unwrap();
    assert_eq!(next_change(&mut be, "bob's own change").await.seq, 1);

    // 300 files over three directories; two of them share their content.
    let mut locals = Vec::new();
    for i in 0..300 {
        let data = if i == 7 { noise(4096, 6) } else { noise(4096, i) };
        locals.push((format!("d{}/f{i:03}.txt", i / 100 + 1), write_file(dir.path(), &format!("l{i}"), &data)));
    }
    let scans: Vec<FileScan> = locals.iter().map(|(_, p)| scan(p)).collect();
    let uploads: Vec<BatchUpload> = locals
        .iter()
        .zip(&scans)
        .map(|((path, local), scan)| BatchUpload { path, local, base_version: 0, scan })
        .collect();
    let chunks_before = cluster.stored_chunks();
    let results = within("the batch", a.put_files_scanned(ws, &uploads)).await.unwrap();
    assert_eq!(results.len(), 300);
    let seqs: Vec<i64> = results.iter().map(|r| r.as_ref().unwrap().seq).collect();
    assert_eq!(seqs, (2..302).collect::<Vec<_>>(), "one seq per file, consecutive, in the order sent");
    let conflict = results[103].as_ref().unwrap();
    let copy = conflict.conflict_path.clone().expect("a stale base gives a conflict copy");
    assert!(copy.starts_with("d2/f103 (conflict alice "), "{copy}");
    assert!(results.iter().enumerate().all(|(i, r)| i == 103 || r.as_ref().unwrap().conflict_path.is_none()));
    assert_eq!(cluster.head_seq(ws), 301);
    // Identical content is stored once.
    assert_eq!(cluster.stored_chunks() - chunks_before, 299);

    // Bob sees every file, in order, and can fetch any of them.
    let mut last = None;
    for _ in 0..300 {
        last = Some(next_change(&mut be, "the batch's changes").await);
    }
    let last = last.unwrap();
    assert_eq!((last.seq, last.path.as_str()), (301, "d3/f299.txt"));
    let got = dir.path().join("got");
    within("download", b.download(ws, last.seq, &got)).await.unwrap();
    assert_eq!(std::fs::read(&got).unwrap(), std::fs::read(&locals[299].1).unwrap());

    // The whole batch the way the agent applies one (the library's one download path): fetched
    // ahead, staged, made durable with one barrier per file system, renamed; a refused version
    // fails only itself. Every other destination is on another file system (`/dev/shm`, a tmpfs,
    // as when a directory of a folder is a mount): each is written beside its destination.
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let many = |i: usize| if i.is_multiple_of(2) { dir.path().join("many") } else { shm.path().join("many") };
    let mut wanted: Vec<(i64, std::path::PathBuf)> =
        locals.iter().zip(&seqs).enumerate().map(|(i, ((path, _), &seq))| (seq, many(i).join(path))).collect();
    wanted.push((10_000, dir.path().join("many/none")));
    let got = within("the batch downloaded at once", b.download_many(ws, &wanted)).await;
    assert!(matches!(got.last(), Some(Err(ClientError::Server { code: ErrorCode::NotFound, .. }))), "{:?}", got.last());
    for (((seq, dest), answer), (_, local)) in wanted.iter().zip(&got).zip(&locals) {
        assert_eq!(answer.as_ref().unwrap().seq, *seq);
        assert_eq!(std::fs::read(dest).unwrap(), std::fs::read(local).unwrap(), "{dest:?}");
    }
    for many in [many(0), many(1)] {
        let leftovers = walk_names(&many);
        assert!(leftovers.iter().all(|n| !n.starts_with(".filesync-tmp-")), "temp files left: {leftovers:?}");
    }

    // Many manifest requests in flight at once on one connection (the node serves them concurrently):
    // every answer reaches its own request, and a refused one does not disturb the others.
    let asks = seqs.iter().map(|&seq| b.manifest(ws, seq)).chain([b.manifest(ws, 10_000)]);
    let answers = within("300 manifests at once", futures::future::join_all(asks)).await;
    for ((answer, &seq), (path, _)) in answers.iter().zip(&seqs).zip(&locals) {
        let m = answer.as_ref().unwrap();
        assert_eq!(m.seq, seq);
        assert_eq!(m.path, if seq == 105 { copy.clone() } else { path.clone() });
    }
    assert_eq!(code(answers.into_iter().last().unwrap()), ErrorCode::NotFound);

    // Sending the same batch again (a retry after a lost answer) changes nothing: each path already
    // has that content, so no new seq and no conflict copy.
    let again: Vec<BatchUpload> = uploads.iter().filter(|u| u.path != "d2/f103.txt").copied().collect();
    let results = within("the same batch again", a.put_files_scanned(ws, &again)).await.unwrap();
    assert!(results.iter().all(|r| r.is_ok()));
    assert_eq!(cluster.head_seq(ws), 301);

    // Refused as a whole, nothing committed, the connection keeps working.
    let one = &scans[0];
    let bad = |path: &'static str| BatchUpload { path, local: &locals[0].1, base_version: 0, scan: one };
    let refused = [
        (vec![bad("ok/1"), bad("../outside")], ErrorCode::InvalidPath),
        (vec![bad("ok/1"), bad("ok/1")], ErrorCode::BadRequest),
        (vec![], ErrorCode::BadRequest),
        (vec![bad("ok/1"); MAX_BATCH_FILES + 1], ErrorCode::BadRequest),
    ];
    // More chunk references than a batch may carry (each file's list adds up on its own).
    const { assert!(2 * 8193 > MAX_BATCH_CHUNKS) };
    let chunk = chunking::ScannedChunk { chunk: chunking::ChunkRef { hash: [5; 32], len: 1 }, offset: 0 };
    let huge = FileScan { size: 8193, content_hash: [5; 32], chunks: vec![chunk; 8193] };
    let wide = |path: &'static str| BatchUpload { path, local: &locals[0].1, base_version: 0, scan: &huge };
    let refused: Vec<(Vec<BatchUpload>, ErrorCode)> =
        refused.into_iter().chain([(vec![wide("w/1"), wide("w/2")], ErrorCode::BadRequest)]).collect();
    for (files, want) in refused {
        let err = within("a bad batch", a.put_files_scanned(ws, &files)).await.unwrap_err();
        assert!(matches!(&err, ClientError::Server { code, .. } if *code == want), "{err:?}");
    }
    let (c, _ce) = connect(n.addr, &tc, "carol-phone").await;
    let err = within("a viewer's batch", c.put_files_scanned(ws, &[bad("viewer.txt")])).await.unwrap_err();
    assert!(matches!(&err, ClientError::Server { code: ErrorCode::Forbidden, .. }), "{err:?}");
    assert_eq!(cluster.head_seq(ws), 301);
    let fine = within("a good batch after the bad ones", a.put_files_scanned(ws, &[bad("ok/1")])).await.unwrap();
    assert_eq!(fine[0].as_ref().unwrap().seq, 302);

    // A file changed after its scan: the batch is abandoned before anything is committed.
    std::fs::write(&locals[1].1, b"changed meanwhile").unwrap();
    let stale = [BatchUpload { path: "late/x", local: &locals[1].1, base_version: 0, scan: &scans[1] }];
    let fresh_ws = cluster.workspace(alice, "Fresh");
    let err = within("a changed file", a.put_files_scanned(fresh_ws, &stale)).await.unwrap_err();
    assert!(matches!(err, ClientError::FileChanged), "{err:?}");
    assert_eq!(cluster.head_seq(fresh_ws), 0);
    n.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_commits_many_files_at_once_on_mariadb() {
    batch_story(&Cluster::new(Backend::Mysql, true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_commits_many_files_at_once_on_sqlite() {
    batch_story(&Cluster::new(Backend::Sqlite, false)).await;
}

/// Every file name under `dir`, recursively.
fn walk_names(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk_names(&e.path()));
        } else {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out
}

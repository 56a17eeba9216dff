//! Deletes and moves pipelined by a client: committed together (one transaction for the frames
//! that queued behind one another) and answered one by one, as if each had come alone.

mod common;

use common::*;
use filesync_core::db::Backend;
use filesync_core::proto::{ErrorCode, MAX_BATCH_FILES};
use filesync_core::Role;
use filesync_proto_client::BatchUpload;
use futures::future::join_all;

async fn pipelined_edits(cluster: &Cluster) {
    let n = cluster.node().await;
    let (alice, ta) = cluster.user("alice");
    let (bob, tb) = cluster.user("bob");
    let (carol, tc) = cluster.user("carol");
    let ws = cluster.workspace(alice, "Archive");
    cluster.share(ws, bob, Role::Editor, alice);
    cluster.share(ws, carol, Role::Viewer, alice);
    let dir = tempfile::tempdir().unwrap();
    let (a, _ae) = connect(n.addr, &ta, "alice-laptop").await;
    let (b, mut be) = connect(n.addr, &tb, "bob-desk").await;
    let (c, _ce) = connect(n.addr, &tc, "carol-phone").await;

    // 400 files and keep.txt: seqs 1..=401.
    let files = 401;
    let locals: Vec<(String, std::path::PathBuf)> = (0..files)
        .map(|i| {
            let path = if i == 400 { "keep.txt".to_owned() } else { format!("old/f{i:03}.txt") };
            (path, write_file(dir.path(), &format!("l{i}"), format!("file {i}").as_bytes()))
        })
        .collect();
    let scans: Vec<_> =
        locals.iter().map(|(_, p)| filesync_core::chunking::scan_small(&std::fs::read(p).unwrap()).unwrap()).collect();
    let uploads: Vec<BatchUpload> = locals
        .iter()
        .zip(&scans)
        .map(|((path, local), scan)| BatchUpload { path, local, base_version: 0, scan })
        .collect();
    let put = within("the files", a.put_files_scanned(ws, &uploads)).await.unwrap();
    assert!(put.iter().all(|r| r.is_ok()));
    assert_eq!(cluster.head_seq(ws), files);
    within("subscribe", b.subscribe(ws, files)).await.unwrap();
    let transactions = n.node.metrics().edit_transactions.get();

    // All at once: 300 moves, 100 deletes, and among them a path that breaks the rules, a
    // stale base and a path that does not exist, each refused alone.
    let moves = join_all((0..300).map(|i| {
        let (a, from, to) = (&a, format!("old/f{i:03}.txt"), format!("new/f{i:03}.txt"));
        async move { a.move_path(ws, &from, &to, i + 1).await }
    }));
    let deletes = join_all((300..400).map(|i| {
        let (a, path) = (&a, format!("old/f{i:03}.txt"));
        async move { a.delete(ws, &path, i + 1).await }
    }));
    let odd = async {
        tokio::join!(a.delete(ws, "../outside", 1), a.delete(ws, "keep.txt", 1), a.delete(ws, "never/there.txt", 1))
    };
    let (moved, deleted, odd) = within("the pipelined edits", async { tokio::join!(moves, deletes, odd) }).await;
    let mut seqs: Vec<i64> = moved.into_iter().chain(deleted).map(|r| r.unwrap().seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (402..=801).collect::<Vec<_>>(), "one seq each, consecutive");
    assert_eq!(code(odd.0), ErrorCode::InvalidPath);
    assert_eq!(code(odd.1), ErrorCode::Conflict, "a stale base");
    assert_eq!(code(odd.2), ErrorCode::NotFound);
    assert_eq!(cluster.head_seq(ws), 801);
    let used = n.node.metrics().edit_transactions.get() - transactions;
    assert!(used > 0 && used < 100, "403 pipelined edits committed in {used} transactions");

    // Bob sees every change, in order.
    for seq in 402..=801 {
        assert_eq!(next_change(&mut be, "a pipelined edit").await.seq, seq);
    }

    // A viewer's pipelined edits are each refused; nothing is committed.
    let refused = join_all((0..20).map(|i| {
        let (c, path) = (&c, format!("new/f{i:03}.txt"));
        async move { c.delete(ws, &path, 402 + i).await }
    }))
    .await;
    assert!(refused.into_iter().all(|r| code(r) == ErrorCode::Forbidden));
    assert_eq!(cluster.head_seq(ws), 801);

    // More than a batch's worth queued is still every one committed.
    let many = MAX_BATCH_FILES as i64 + 10;
    let dirs = join_all((0..many).map(|i| {
        let (a, path) = (&a, format!("dirs/d{i:04}"));
        async move { a.make_dir(ws, &path, 0).await }
    }))
    .await;
    let mut seqs: Vec<i64> = dirs.into_iter().map(|r| r.unwrap().seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (802..802 + many).collect::<Vec<_>>());
    n.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pipelined_edits_commit_together_on_mariadb() {
    pipelined_edits(&Cluster::new(Backend::Mysql, true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pipelined_edits_commit_together_on_sqlite() {
    pipelined_edits(&Cluster::new(Backend::Sqlite, false)).await;
}

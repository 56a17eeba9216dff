//! Catch-up past the horizon: once retention dropped the journal up to a seq, a catch-up from
//! before it (`GetChanges`, `Subscribe`) is answered `history_expired`, never with gaps, and
//! the live heads can be listed a page at a time (`GetHeads`) to reconcile with instead. On
//! MariaDB and SQLite.

mod common;

use std::collections::BTreeMap;

use common::*;
use diesel::prelude::*;
use filesync_core::db::journal::{self, Author, Edit};
use filesync_core::db::schema::{file_versions, workspaces};
use filesync_core::db::Backend;
use filesync_core::proto::{ChangeOp, EntryKind, ErrorCode};
use filesync_core::testing::noise;
use filesync_core::{Role, WorkspaceId};

/// What retention leaves behind: every change up to `seq` may be gone from the journal.
fn raise_horizon(cluster: &Cluster, ws: WorkspaceId, seq: i64) {
    let mut c = cluster.db.conn().unwrap();
    diesel::update(workspaces::table.find(ws.0)).set(workspaces::horizon_seq.eq(seq)).execute(&mut c).unwrap();
}

async fn past_the_horizon(cluster: &Cluster) {
    let n = cluster.node().await;
    let (alice, ta) = cluster.user("alice");
    let (bob, tb) = cluster.user("bob");
    let (_eve, te) = cluster.user("eve");
    let ws = cluster.workspace(alice, "Shared");
    cluster.share(ws, bob, Role::Viewer, alice);
    let local = tempfile::tempdir().unwrap();
    let (a, _ae) = connect(n.addr, &ta, "alice-laptop").await;
    let file = |name: &str, seed: u64| write_file(local.path(), name, &noise(20_000, seed));
    let one = a.put_file(ws, "a.txt", &file("a1", 1), 0).await.unwrap();
    let b = a.put_file(ws, "b.txt", &file("b", 2), 0).await.unwrap();
    let edit = a.put_file(ws, "a.txt", &file("a2", 3), one.seq).await.unwrap();
    let moved = a.move_path(ws, "b.txt", "dir/c.txt", b.seq).await.unwrap();
    let gone = a.put_file(ws, "gone.txt", &file("g", 4), 0).await.unwrap();
    let deleted = a.delete(ws, "gone.txt", gone.seq).await.unwrap();
    let dir = a.make_dir(ws, "empty", 0).await.unwrap();
    assert_eq!(dir.seq, 7);

    // Nothing dropped yet: every catch-up works, from anywhere.
    let (v, _ve) = connect(n.addr, &tb, "bob-desk").await;
    assert_eq!(v.changes(ws, -1, 10).await.unwrap().changes.len(), 7);
    raise_horizon(cluster, ws, moved.seq);

    // From before the horizon: refused, typed, by both paths, for a viewer as for anyone.
    for after in [-1, 0, one.seq, edit.seq] {
        assert_eq!(code(v.changes(ws, after, 10).await), ErrorCode::HistoryExpired, "GetChanges after {after}");
        assert_eq!(code(v.subscribe(ws, after).await), ErrorCode::HistoryExpired, "Subscribe since {after}");
    }
    let Err(filesync_proto_client::ClientError::Server { message, .. }) = v.changes(ws, 0, 10).await else {
        panic!("refused")
    };
    assert!(message.contains("after seq 4"), "{message}");
    // From the horizon on: the journal, complete.
    let page = v.changes(ws, moved.seq, 10).await.unwrap();
    assert_eq!(page.changes.iter().map(|c| c.seq).collect::<Vec<_>>(), [gone.seq, deleted.seq, dir.seq]);
    assert_eq!(v.subscribe(ws, moved.seq).await.unwrap(), dir.seq);
    // Someone outside the workspace learns nothing, not even that history expired.
    let (e, _ee) = connect(n.addr, &te, "eve").await;
    assert_eq!(code(e.changes(ws, 0, 10).await), ErrorCode::WorkspaceNotFound);
    assert_eq!(code(e.heads(ws, None, 10).await), ErrorCode::WorkspaceNotFound);

    // The live heads, two at a time: the edited file, the moved one (a put at its new name), the
    // directory; not the deleted file nor the move's source.
    let mut listed = BTreeMap::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let page = v.heads(ws, after, 2).await.unwrap();
        pages += 1;
        assert!(page.entries.len() <= 2);
        assert_eq!(page.head_seq, dir.seq);
        for c in page.entries {
            assert_eq!((c.op, c.from_path.as_deref(), c.deleted), (ChangeOp::Put, None, false), "{c:?}");
            listed.insert(c.path.clone(), (c.seq, c.kind));
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 2);
    let want: BTreeMap<String, (i64, EntryKind)> = [
        ("a.txt".to_owned(), (edit.seq, EntryKind::File)),
        ("dir/c.txt".to_owned(), (moved.seq, EntryKind::File)),
        ("empty".to_owned(), (dir.seq, EntryKind::Dir)),
    ]
    .into();
    assert_eq!(listed, want);
    // Every listed file's version still downloads.
    let out = local.path().join("out");
    v.download(ws, moved.seq, &out).await.unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), noise(20_000, 2));
    for limit in [0, filesync_proto_client::MAX_HEADS_PAGE + 1] {
        assert_eq!(code(v.heads(ws, None, limit).await), ErrorCode::BadRequest, "limit {limit}");
    }
    // An empty workspace lists nothing, in one page.
    let empty = cluster.workspace(alice, "Empty");
    let page = a.heads(empty, None, 10).await.unwrap();
    assert!(page.entries.is_empty() && page.next.is_none(), "{page:?}");
}

/// Retention drops a change a live subscriber has not got yet (it may, with `keep_days` 0): the
/// node does not forward across the gap; it closes the subscriber's connection, whose
/// resubscription is then answered `history_expired`.
async fn a_subscriber_passed_by_retention(cluster: &Cluster) {
    let n = cluster.node().await;
    let (alice, ta) = cluster.user("alice");
    let (bob, tb) = cluster.user("bob");
    let ws = cluster.workspace(alice, "Shared");
    cluster.share(ws, bob, Role::Editor, alice);
    let (a, _ae) = connect(n.addr, &ta, "alice").await;
    let first = a.make_dir(ws, "one", 0).await.unwrap();
    let (b, mut be) = connect(n.addr, &tb, "bob").await;
    assert_eq!(b.subscribe(ws, first.seq).await.unwrap(), first.seq);
    // Two commits the node does not hear of, the first of them then dropped by retention.
    let mut c = cluster.db.conn().unwrap();
    let author = Author { user_id: alice, device_id: "elsewhere".into(), device_name: "elsewhere".into() };
    let mkdir = |path: &str| Edit::MakeDir { path: path.into(), base_version: 0 };
    let two = journal::commit(&mut c, ws, &author, &mkdir("two")).unwrap();
    journal::commit(&mut c, ws, &author, &mkdir("three")).unwrap();
    diesel::delete(
        file_versions::table.filter(file_versions::workspace_id.eq(ws.0)).filter(file_versions::seq.eq(two.seq)),
    )
    .execute(&mut c)
    .unwrap();
    raise_horizon(cluster, ws, two.seq);
    // The next commit the node hears of wakes it up: bob cannot be served past the gap.
    a.make_dir(ws, "four", 0).await.unwrap();
    loop {
        match within("bob's connection closes", be.next()).await {
            Some(filesync_proto_client::Event::Change(c)) => panic!("forwarded across the gap: {c:?}"),
            Some(filesync_proto_client::Event::Closed { .. }) | None => break,
            Some(_) => {}
        }
    }
    drop(b);
    let (b, _be) = connect(n.addr, &tb, "bob").await;
    assert_eq!(code(b.subscribe(ws, first.seq).await), ErrorCode::HistoryExpired);
    assert_eq!(code(b.changes(ws, first.seq, 10).await), ErrorCode::HistoryExpired);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscriber_passed_by_retention_mariadb() {
    a_subscriber_passed_by_retention(&Cluster::new(Backend::Mysql, true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscriber_passed_by_retention_sqlite() {
    a_subscriber_passed_by_retention(&Cluster::new(Backend::Sqlite, false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn past_the_horizon_mariadb() {
    past_the_horizon(&Cluster::new(Backend::Mysql, true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn past_the_horizon_sqlite() {
    past_the_horizon(&Cluster::new(Backend::Sqlite, false)).await;
}

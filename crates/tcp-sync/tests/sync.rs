//! The sync stories, on MariaDB with two nodes and Redis, and on SQLite with
//! one node and the in-process bus; chunks in a directory, and (`_on_s3`) in
//! the tests' S3 bucket, so two nodes share nothing but MariaDB, Redis and
//! the bucket.

mod common;

use common::*;
use diesel::prelude::*;
use filesync_core::chunking::MAX_CHUNK;
use filesync_core::db::Backend;
use filesync_core::events::UserEvent;
use filesync_core::proto::{ChangeOp, ErrorCode, Notice};
use filesync_core::{Role, WorkspaceId};
use filesync_proto_client::Event;

/// Upload on one node, event and identical download on the other; a 4 KiB
/// edit in the middle of a large file moves only the changed chunks; an
/// offline member catches up with exactly what it missed.
async fn upload_edit_catch_up(cluster: &Cluster, two_nodes: bool) {
    let n1 = cluster.node().await;
    let n2 = if two_nodes { Some(cluster.node().await) } else { None };
    let addr2 = n2.as_ref().map_or(n1.addr, |n| n.addr);
    let (alice, ta) = cluster.user("alice");
    let (bob, tb) = cluster.user("bob");
    let ws = cluster.workspace(alice, "Shared");
    cluster.share(ws, bob, Role::Editor, alice);
    let local = tempfile::tempdir().unwrap();

    let (a, _a_events) = connect(n1.addr, &ta, "alice-laptop").await;
    let (b, mut b_events) = connect(addr2, &tb, "bob-desk").await;
    assert_eq!(a.welcome().user_id, alice);
    assert_eq!(within("subscribe", b.subscribe(ws, 0)).await.unwrap(), 0);

    // A small file, from node 1 to node 2.
    let small = noise(300_000, 1);
    let src = write_file(local.path(), "small.bin", &small);
    let c1 = within("upload", a.put_file(ws, "docs/small.bin", &src, 0)).await.unwrap();
    assert_eq!((c1.seq, c1.version, c1.path.as_str(), c1.conflict_path.clone()), (1, 1, "docs/small.bin", None));
    let ev = next_change(&mut b_events, "the first upload").await;
    assert_eq!(
        (ev.seq, ev.op, ev.path.as_str(), ev.size, ev.author_id),
        (1, ChangeOp::Put, "docs/small.bin", 300_000, alice)
    );
    let got = local.path().join("b-small.bin");
    within("download", b.download(ws, ev.seq, &got)).await.unwrap();
    assert_eq!(std::fs::read(&got).unwrap(), small);

    // A large file, then a 4 KiB edit in its middle.
    let mut big = noise(8 * 1024 * 1024, 2);
    let src = write_file(local.path(), "big.bin", &big);
    let c2 = within("upload big", a.put_file(ws, "big.bin", &src, 0)).await.unwrap();
    let ev = next_change(&mut b_events, "the big upload").await;
    assert_eq!(ev.seq, c2.seq);
    let b_copy = local.path().join("b-big.bin");
    within("download big", b.download(ws, ev.seq, &b_copy)).await.unwrap();
    assert_eq!(std::fs::read(&b_copy).unwrap(), big);

    let mid = big.len() / 2;
    big[mid..mid + 4096].copy_from_slice(&noise(4096, 3));
    std::fs::write(&src, &big).unwrap();
    let sent_before = a.bytes_sent();
    let c3 = within("upload edit", a.put_file(ws, "big.bin", &src, c2.seq)).await.unwrap();
    let edit_sent = a.bytes_sent() - sent_before;
    assert_eq!(c3.conflict_path, None);
    // Only the chunks around the edit travel (plus the manifest), not the 8 MiB file.
    assert!(edit_sent <= 2 * u64::from(MAX_CHUNK) + 20_000, "an edit of 4 KiB sent {edit_sent} bytes");
    let ev = next_change(&mut b_events, "the edit").await;
    assert_eq!(ev.seq, c3.seq);
    let recv_before = b.bytes_received();
    within("download edit", b.download_reusing(ws, ev.seq, &b_copy, Some(&b_copy))).await.unwrap();
    let edit_received = b.bytes_received() - recv_before;
    assert!(edit_received <= 2 * u64::from(MAX_CHUNK) + 20_000, "downloading the edit took {edit_received} bytes");
    assert_eq!(std::fs::read(&b_copy).unwrap(), big);

    // Bob goes offline; Alice changes three things.
    let last_seen = ev.seq;
    drop((b, b_events));
    let src = write_file(local.path(), "new.txt", b"new while bob was away");
    let p = a.put_file(ws, "notes/new.txt", &src, 0).await.unwrap();
    let m = a.move_path(ws, "docs/small.bin", "archive/small.bin", c1.seq).await.unwrap();
    let d = a.delete(ws, "notes/new.txt", p.seq).await.unwrap();
    assert_eq!((p.seq, m.seq, d.seq), (last_seen + 1, last_seen + 2, last_seen + 3));

    // Bob comes back on the other node with his last seq: exactly the three missed changes, in order.
    let (b, mut b_events) = connect(n1.addr, &tb, "bob-desk").await;
    let head = within("resubscribe", b.subscribe(ws, last_seen)).await.unwrap();
    assert_eq!(head, d.seq);
    let missed: Vec<_> = [
        next_change(&mut b_events, "missed 1").await,
        next_change(&mut b_events, "missed 2").await,
        next_change(&mut b_events, "missed 3").await,
    ]
    .into_iter()
    .map(|c| (c.seq, c.op, c.path, c.from_path, c.deleted))
    .collect();
    assert_eq!(
        missed,
        vec![
            (p.seq, ChangeOp::Put, "notes/new.txt".to_owned(), None, false),
            (m.seq, ChangeOp::Move, "archive/small.bin".to_owned(), Some("docs/small.bin".to_owned()), false),
            (d.seq, ChangeOp::Delete, "notes/new.txt".to_owned(), None, true),
        ]
    );
    // The same, read a page at a time (no subscription): a full page, the rest up to the head,
    // then nothing; a page size out of range is refused.
    let page = within("a page", b.changes(ws, last_seen, 2)).await.unwrap();
    assert_eq!(page.head_seq, d.seq);
    assert_eq!(
        page.changes.iter().map(|c| (c.seq, c.op)).collect::<Vec<_>>(),
        [(p.seq, ChangeOp::Put), (m.seq, ChangeOp::Move)]
    );
    let rest = within("the last page", b.changes(ws, m.seq, 2)).await.unwrap();
    assert_eq!(rest.changes.iter().map(|c| c.seq).collect::<Vec<_>>(), [d.seq]);
    assert!(within("past the head", b.changes(ws, d.seq, 2)).await.unwrap().changes.is_empty());
    for limit in [0, filesync_proto_client::MAX_CHANGES_PAGE + 1] {
        assert_eq!(code(b.changes(ws, 0, limit).await), ErrorCode::BadRequest, "limit {limit}");
    }
    // Then live again, with no duplicate of the catch-up.
    let dir = a.make_dir(ws, "empty/folder", 0).await.unwrap();
    let live = next_change(&mut b_events, "a live change after catch-up").await;
    assert_eq!(live.seq, dir.seq);
    // The moved file downloads under its new name.
    let moved = local.path().join("moved.bin");
    b.download(ws, m.seq, &moved).await.unwrap();
    assert_eq!(std::fs::read(&moved).unwrap(), small);
    // Each distinct chunk is stored once, however often it was uploaded or moved.
    let distinct: std::collections::HashSet<_> = [&small[..], &noise(8 * 1024 * 1024, 2)[..], &big[..]]
        .iter()
        .flat_map(|d| filesync_core::chunking::scan(*d).unwrap().chunks.into_iter().map(|c| c.chunk.hash))
        .chain([filesync_core::chunking::hash(b"new while bob was away")])
        .collect();
    assert_eq!(cluster.stored_chunks(), distinct.len());

    n1.shutdown().await.unwrap();
    if let Some(n2) = n2 {
        n2.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_two_nodes_and_redis() {
    let cluster = Cluster::new(Backend::Mysql, true);
    upload_edit_catch_up(&cluster, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_two_nodes_and_redis_on_s3() {
    let Some(cluster) = Cluster::on_s3(Backend::Mysql, true) else { return };
    upload_edit_catch_up(&cluster, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_single_node_in_process_bus() {
    let cluster = Cluster::new(Backend::Sqlite, false);
    upload_edit_catch_up(&cluster, false).await;
}

/// Two edits from the same base: one head, one conflict copy, both kept and broadcast.
async fn conflicts(cluster: &Cluster) {
    let n1 = cluster.node().await;
    let n2 = cluster.node().await;
    let (alice, ta) = cluster.user("alice");
    let (bob, tb) = cluster.user("bob");
    let ws = cluster.workspace(alice, "Team");
    cluster.share(ws, bob, Role::Editor, alice);
    let local = tempfile::tempdir().unwrap();
    let (a, mut a_events) = connect(n1.addr, &ta, "alice-laptop").await;
    let (b, _b_events) = connect(n2.addr, &tb, "bob-desk").await;
    a.subscribe(ws, 0).await.unwrap();

    let base = a.put_file(ws, "plan.txt", &write_file(local.path(), "v0", b"version 0"), 0).await.unwrap();
    let fa = write_file(local.path(), "va", b"alice's edit");
    let fb = write_file(local.path(), "vb", b"bob's edit");
    let (ra, rb) = tokio::join!(a.put_file(ws, "plan.txt", &fa, base.seq), b.put_file(ws, "plan.txt", &fb, base.seq));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    let (winner, loser, loser_bytes, loser_user) = match (&ra.conflict_path, &rb.conflict_path) {
        (None, Some(_)) => (&ra, &rb, &b"bob's edit"[..], "bob"),
        (Some(_), None) => (&rb, &ra, &b"alice's edit"[..], "alice"),
        other => panic!("expected exactly one conflict copy, got {other:?}"),
    };
    assert_eq!(winner.path, "plan.txt");
    let copy = loser.conflict_path.clone().unwrap();
    assert_eq!(loser.path, copy);
    assert!(copy.starts_with(&format!("plan (conflict {loser_user} ")) && copy.ends_with(").txt"), "{copy}");
    // Both are broadcast, and both contents are kept.
    let mut seen = vec![next_change(&mut a_events, "base").await.seq];
    seen.push(next_change(&mut a_events, "first edit").await.seq);
    seen.push(next_change(&mut a_events, "second edit").await.seq);
    assert_eq!(seen, vec![1, 2, 3]);
    let out = local.path().join("check");
    a.download(ws, loser.seq, &out).await.unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), loser_bytes);

    // A delete against a stale base is refused; nothing is lost.
    assert_eq!(code(b.delete(ws, "plan.txt", base.seq).await), ErrorCode::Conflict);
    // An edit against a delete wins over the delete.
    let del = a.delete(ws, "plan.txt", winner.seq).await.unwrap();
    let revived = b.put_file(ws, "plan.txt", &fb, winner.seq).await.unwrap();
    assert_eq!((revived.path.as_str(), revived.conflict_path.clone(), revived.seq), ("plan.txt", None, del.seq + 1));
    // A move needs the current base, and a free destination.
    assert_eq!(code(a.move_path(ws, "plan.txt", "other.txt", winner.seq).await), ErrorCode::Conflict);
    assert_eq!(code(a.move_path(ws, "plan.txt", &copy, revived.seq).await), ErrorCode::Conflict);
    assert_eq!(code(a.delete(ws, "nothing-here", 0).await), ErrorCode::NotFound);
    n1.shutdown().await.unwrap();
    n2.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_edits_make_a_conflict_copy_mariadb() {
    conflicts(&Cluster::new(Backend::Mysql, true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_edits_make_a_conflict_copy_on_s3() {
    let Some(cluster) = Cluster::on_s3(Backend::Mysql, true) else { return };
    conflicts(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_edits_make_a_conflict_copy_sqlite() {
    conflicts(&Cluster::new(Backend::Sqlite, false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn viewers_and_outsiders_are_refused() {
    let cluster = Cluster::new(Backend::Mysql, true);
    let n = cluster.node().await;
    let (alice, ta) = cluster.user("alice");
    let (vic, tv) = cluster.user("vic");
    let (_eve, te) = cluster.user("eve");
    let ws = cluster.workspace(alice, "Docs");
    cluster.share(ws, vic, Role::Viewer, alice);
    let local = tempfile::tempdir().unwrap();
    let (a, _ae) = connect(n.addr, &ta, "a").await;
    let file = write_file(local.path(), "f", &noise(100_000, 9));
    let c = a.put_file(ws, "f.bin", &file, 0).await.unwrap();
    let chunks_before = cluster.stored_chunks();

    let (v, mut v_events) = connect(n.addr, &tv, "v").await;
    let other = write_file(local.path(), "g", &noise(50_000, 10));
    assert_eq!(code(v.put_file(ws, "g.bin", &other, 0).await), ErrorCode::Forbidden);
    assert_eq!(code(v.put_file(ws, "f.bin", &other, c.seq).await), ErrorCode::Forbidden);
    assert_eq!(code(v.delete(ws, "f.bin", c.seq).await), ErrorCode::Forbidden);
    assert_eq!(code(v.move_path(ws, "f.bin", "h.bin", c.seq).await), ErrorCode::Forbidden);
    assert_eq!(code(v.make_dir(ws, "d", 0).await), ErrorCode::Forbidden);
    assert_eq!(cluster.head_seq(ws), c.seq);
    assert_eq!(cluster.stored_chunks(), chunks_before);
    // A viewer may read.
    assert_eq!(v.subscribe(ws, 0).await.unwrap(), c.seq);
    assert_eq!(next_change(&mut v_events, "catch-up").await.seq, c.seq);
    let out = local.path().join("out");
    v.download(ws, c.seq, &out).await.unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&file).unwrap());

    // Someone outside the workspace can neither read nor learn anything, even with a valid hash:
    // the answer is the one for a workspace that does not exist.
    let (e, _ee) = connect(n.addr, &te, "e").await;
    assert_eq!(code(e.subscribe(ws, 0).await), ErrorCode::WorkspaceNotFound);
    assert_eq!(code(e.changes(ws, 0, 10).await), ErrorCode::WorkspaceNotFound);
    assert_eq!(v.changes(ws, 0, 10).await.unwrap().changes.len(), 1, "a viewer reads the journal");
    assert_eq!(code(e.manifest(ws, c.seq).await), ErrorCode::WorkspaceNotFound);
    assert_eq!(code(e.download(ws, c.seq, &local.path().join("x")).await), ErrorCode::WorkspaceNotFound);
    assert_eq!(code(e.put_file(ws, "x", &other, 0).await), ErrorCode::WorkspaceNotFound);
    assert_eq!(code(e.subscribe(WorkspaceId(ws.0 + 999), 0).await), ErrorCode::WorkspaceNotFound);
    // Uploading into one's own workspace a hash known from elsewhere still requires the bytes.
    let (zed, tz) = cluster.user("zed");
    let own = cluster.workspace(zed, "Own");
    let (z, _ze) = connect(n.addr, &tz, "z").await;
    let before = z.bytes_sent();
    z.put_file(own, "copy.bin", &file, 0).await.unwrap();
    assert!(z.bytes_sent() - before >= 100_000, "the bytes of a chunk held by another workspace must be uploaded");
    n.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_paths_are_refused_and_nothing_is_written() {
    let cluster = Cluster::new(Backend::Sqlite, false);
    let n = cluster.node().await;
    let (alice, ta) = cluster.user("alice");
    let ws = cluster.workspace(alice, "Docs");
    let local = tempfile::tempdir().unwrap();
    let (a, _ae) = connect(n.addr, &ta, "a").await;
    let file = write_file(local.path(), "f", &noise(70_000, 4));
    let long = vec!["d".repeat(255); 17].join("/");
    let wide = "w".repeat(256);
    let bad = [
        "",
        "/etc/passwd",
        "a//b",
        "a/",
        ".",
        "..",
        "../escape",
        "a/../../b",
        "a/./b",
        "nul\0byte",
        "back\\slash",
        &long,
        &wide,
    ];
    for p in bad {
        assert_eq!(code(a.put_file(ws, p, &file, 0).await), ErrorCode::InvalidPath, "{p:?}");
        assert_eq!(code(a.delete(ws, p, 1).await), ErrorCode::InvalidPath, "{p:?}");
        assert_eq!(code(a.make_dir(ws, p, 0).await), ErrorCode::InvalidPath, "{p:?}");
        assert_eq!(code(a.move_path(ws, "ok.txt", p, 1).await), ErrorCode::InvalidPath, "{p:?}");
    }
    assert_eq!(cluster.head_seq(ws), 0);
    assert_eq!(cluster.stored_chunks(), 0, "nothing may be stored for a refused path");
    // The connection is still fine.
    assert_eq!(a.put_file(ws, "fine/name.bin", &file, 0).await.unwrap().seq, 1);
    // A file cannot be a parent directory.
    assert_eq!(code(a.put_file(ws, "fine/name.bin/inner", &file, 0).await), ErrorCode::Conflict);
    n.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_member_loses_its_subscription_at_once() {
    let cluster = Cluster::new(Backend::Mysql, true);
    let n = cluster.node().await;
    let (alice, ta) = cluster.user("alice");
    let (bob, tb) = cluster.user("bob");
    let ws = cluster.workspace(alice, "Private");
    let ws2 = cluster.workspace(alice, "Still shared");
    cluster.share(ws, bob, Role::Editor, alice);
    cluster.share(ws2, bob, Role::Viewer, alice);
    let local = tempfile::tempdir().unwrap();
    let (a, _ae) = connect(n.addr, &ta, "a").await;
    let (b, mut be) = connect(n.addr, &tb, "b").await;
    b.subscribe(ws, 0).await.unwrap();
    b.subscribe(ws2, 0).await.unwrap();

    // The HTTP API removes the membership and announces it on the bus.
    {
        use filesync_core::db::schema::workspace_members::dsl::*;
        let mut c = cluster.db.conn().unwrap();
        diesel::delete(workspace_members.filter(workspace_id.eq(ws.0)).filter(user_id.eq(bob.0)))
            .execute(&mut *c)
            .unwrap();
    }
    assert!(n.node.publish_user_event(bob, &UserEvent::MemberRemoved { workspace_id: ws }).await);
    let notice = match within("the notice", be.next()).await {
        Some(Event::Notice(n)) => n,
        other => panic!("expected the notice, got {other:?}"),
    };
    assert_eq!(notice, Notice::MemberRemoved { workspace_id: ws });
    // A change in the removed workspace does not reach Bob; one in the other workspace does, and comes first.
    let f = write_file(local.path(), "f", b"secret");
    a.put_file(ws, "secret.txt", &f, 0).await.unwrap();
    let visible = a.put_file(ws2, "public.txt", &f, 0).await.unwrap();
    let next = next_change(&mut be, "the change in the still-shared workspace").await;
    assert_eq!((next.workspace_id, next.seq), (ws2, visible.seq));
    assert_eq!(code(b.subscribe(ws, 0).await), ErrorCode::WorkspaceNotFound);
    assert_eq!(code(b.put_file(ws, "x", &f, 0).await), ErrorCode::WorkspaceNotFound);
    n.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_downgrade_and_a_deleted_workspace_take_effect_at_once() {
    let cluster = Cluster::new(Backend::Sqlite, false);
    let n = cluster.node().await;
    let (alice, ta) = cluster.user("alice");
    let (bob, tb) = cluster.user("bob");
    let ws = cluster.workspace(alice, "Team");
    cluster.share(ws, bob, Role::Editor, alice);
    let local = tempfile::tempdir().unwrap();
    let f = write_file(local.path(), "f", b"draft");
    let (a, mut ae) = connect(n.addr, &ta, "a").await;
    let (b, mut be) = connect(n.addr, &tb, "b").await;
    a.subscribe(ws, 0).await.unwrap();
    b.subscribe(ws, 0).await.unwrap();
    b.put_file(ws, "by-bob.txt", &f, 0).await.unwrap();
    next_change(&mut be, "bob's own upload").await;
    next_change(&mut ae, "bob's upload at alice").await;

    // Bob becomes a viewer (as the HTTP API does it: the row, then the announcement).
    {
        use filesync_core::db::membership;
        let mut c = cluster.db.conn().unwrap();
        assert!(membership::set_role(&mut c, ws, bob, Role::Viewer).unwrap());
    }
    let changed = UserEvent::RoleChanged { workspace_id: ws, role: Role::Viewer };
    assert!(n.node.publish_user_event(bob, &changed).await);
    match within("the role notice", be.next()).await {
        Some(Event::Notice(notice)) => assert_eq!(notice, Notice::RoleChanged { workspace_id: ws, role: Role::Viewer }),
        other => panic!("expected the notice, got {other:?}"),
    }
    assert_eq!(code(b.put_file(ws, "later.txt", &f, 0).await), ErrorCode::Forbidden);
    // Still a reader: Alice's next change reaches Bob.
    let seq = a.put_file(ws, "by-alice.txt", &f, 0).await.unwrap().seq;
    assert_eq!(next_change(&mut be, "alice's change at the viewer").await.seq, seq);
    next_change(&mut ae, "alice's own change").await;

    // Alice deletes the workspace: every member's subscription ends and each is told.
    let members = {
        use filesync_core::db::membership;
        let mut c = cluster.db.conn().unwrap();
        membership::delete_workspace(&mut c, ws).unwrap()
    };
    assert_eq!(members.len(), 2);
    for user in members {
        assert!(n.node.publish_user_event(user, &UserEvent::WorkspaceDeleted { workspace_id: ws }).await);
    }
    for events in [&mut ae, &mut be] {
        match within("the deletion notice", events.next()).await {
            Some(Event::Notice(notice)) => assert_eq!(notice, Notice::WorkspaceDeleted { workspace_id: ws }),
            other => panic!("expected the notice, got {other:?}"),
        }
    }
    for client in [&a, &b] {
        assert_eq!(code(client.subscribe(ws, 0).await), ErrorCode::WorkspaceNotFound);
        assert_eq!(code(client.put_file(ws, "x", &f, 0).await), ErrorCode::WorkspaceNotFound);
    }
    n.shutdown().await.unwrap();
}

/// A client that does not read its events for a while neither stalls its connection nor holds
/// what it missed: its answers still arrive, the changes beyond its queue come as one `Missed`
/// (read again with `GetChanges`), and live changes follow as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_that_falls_behind_gets_a_missed_run_not_a_stall() {
    let cluster = Cluster::new(Backend::Sqlite, false);
    let n = cluster.node().await;
    let (alice, ta) = cluster.user("alice");
    let (bob, tb) = cluster.user("bob");
    let ws = cluster.workspace(alice, "Many");
    cluster.share(ws, bob, Role::Viewer, alice);
    let dir = tempfile::tempdir().unwrap();
    let (a, _ae) = connect(n.addr, &ta, "a").await;
    let (b, mut be) = connect(n.addr, &tb, "b").await;
    within("subscribe", b.subscribe(ws, 0)).await.unwrap();

    let local = write_file(dir.path(), "same", b"the same small content");
    let scan = filesync_core::chunking::scan(&b"the same small content"[..]).unwrap();
    let paths: Vec<String> = (0..5 * 1024).map(|i| format!("d{}/f{i:05}.txt", i / 1024)).collect();
    // Batches of 256, as the agent sends them (a batch's changes reach the node's queue at once).
    for part in paths.chunks(256) {
        let uploads: Vec<filesync_proto_client::BatchUpload> = part
            .iter()
            .map(|path| filesync_proto_client::BatchUpload { path, local: &local, base_version: 0, scan: &scan })
            .collect();
        within("a batch", a.put_files_scanned(ws, &uploads)).await.unwrap();
    }
    let head = cluster.head_seq(ws);
    assert_eq!(head, 5 * 1024);
    // Bob has read nothing yet; his requests are answered all the same.
    let page = within("a page while behind", b.changes(ws, 0, 3)).await.unwrap();
    assert_eq!(page.changes.len(), 3);
    let mut seqs = Vec::new();
    let missed = loop {
        match within("an event", be.next()).await {
            Some(Event::Change(c)) => seqs.push(c.seq),
            Some(Event::Missed { workspace_id, after_seq, up_to_seq }) => break (workspace_id, after_seq, up_to_seq),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(!seqs.is_empty() && seqs.len() < paths.len(), "{} changes queued", seqs.len());
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "the queued ones in order");
    assert_eq!(missed, (ws, seqs.len() as i64, head), "the rest as one run");
    // Live again: the next change arrives as itself.
    let more = write_file(dir.path(), "more", b"one more");
    let c = within("one more", a.put_file(ws, "more.txt", &more, 0)).await.unwrap();
    assert_eq!(next_change(&mut be, "the live change").await.seq, c.seq);
    n.shutdown().await.unwrap();
}

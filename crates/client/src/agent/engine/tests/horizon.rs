//! Catch-up past the horizon ([`super::super::horizon`]): the journal no longer reaches back to
//! the folder's `last_seq`, so the folder is reconciled with the server's current heads.

use super::*;

/// The current head of `path` on the fake node, as `GetHeads` lists it.
fn head(c: &Change) -> Change {
    Change { op: ChangeOp::Put, from_path: None, deleted: false, ..c.clone() }
}

#[tokio::test]
async fn offline_past_the_horizon_keeps_every_local_edit_and_follows_the_server() {
    let mut s = Setup::new(Role::Editor);
    s.sync.catch_up_page = 2; // the heads come in pages
    for (path, data) in [
        ("keep.txt", &b"kept as it is"[..]),
        ("edited-here.txt", b"v1"),
        ("deleted-there.txt", b"soon gone there"),
        ("edited-here-deleted-there.txt", b"v1"),
        ("edited-both.txt", b"v1"),
        ("deleted-here.txt", b"soon gone here"),
        ("same-both.txt", b"v1"),
    ] {
        s.synced(path, data).await;
    }
    let version = |s: &Setup, p: &str| s.sync.store.get(p).unwrap().version;
    let (edited_here, deleted_here) = (version(&s, "edited-here.txt"), version(&s, "deleted-here.txt"));
    s.sync.store.advance(s.node.seq);
    // The server's current files: some unchanged, one edited, two deleted (gone from the
    // journal with everything up to the horizon), one new, one edited to what we wrote too.
    let mut heads: Vec<Change> = Vec::new();
    for p in ["keep.txt", "edited-here.txt", "deleted-here.txt"] {
        let e = s.sync.store.get(p).unwrap();
        heads.push(change(e.version, ChangeOp::Put, p, None, e.hash, e.size));
    }
    let theirs = s.node.publish("edited-both.txt", b"their offline edit");
    heads.push(head(&theirs));
    heads.push(head(&s.node.publish("new-there.txt", b"made while we were away")));
    heads.push(head(&s.node.publish("same-both.txt", b"the same edit on both sides")));
    s.node.heads = heads;
    s.node.horizon = s.node.seq;
    s.node.own_in_journal = true;
    // Meanwhile, here:
    s.write("edited-here.txt", b"our offline edit");
    s.write("edited-here-deleted-there.txt", b"our offline edit of a file deleted there");
    s.write("edited-both.txt", b"our offline edit of a file edited there");
    std::fs::remove_file(s.root().join("deleted-here.txt")).unwrap();
    s.write("new-here.txt", b"made here while away");
    s.write("same-both.txt", b"the same edit on both sides");

    s.sync.catch_up(&mut s.node).await.unwrap();

    // The node was asked for its heads, page by page, after refusing the journal.
    assert_eq!(s.node.heads_pages.len(), 3, "{:?}", s.node.heads_pages);
    assert!(s.sync.store.last_seq() >= s.node.horizon);
    assert_eq!(s.read("keep.txt").as_deref(), Some(&b"kept as it is"[..]));
    assert_eq!(s.read("new-there.txt").as_deref(), Some(&b"made while we were away"[..]));
    assert_eq!(s.read("same-both.txt").as_deref(), Some(&b"the same edit on both sides"[..]));
    assert!(s.read("deleted-there.txt").is_none(), "unchanged here, deleted there: removed");
    assert!(s.read("deleted-here.txt").is_none(), "not brought back");
    assert_eq!(s.read("edited-both.txt").as_deref(), Some(&b"their offline edit"[..]));
    // The edits made here: uploaded, or kept as conflict copies beside the server's state.
    assert_eq!(s.read("edited-here.txt").as_deref(), Some(&b"our offline edit"[..]));
    assert!(s.read("edited-here-deleted-there.txt").is_none(), "not silently brought back under its name");
    let copies: Vec<String> = s.state().conflicts.into_iter().collect();
    assert_eq!(copies.len(), 2, "{copies:?}");
    let copy_of = |stem: &str| copies.iter().find(|c| c.starts_with(&format!("{stem} (conflict bob laptop "))).cloned();
    let deleted_there = copy_of("edited-here-deleted-there").expect("a copy of the edit of a file deleted there");
    let both = copy_of("edited-both").expect("a copy of our side of the edit on both sides");
    assert_eq!(s.read(&deleted_there).as_deref(), Some(&b"our offline edit of a file deleted there"[..]));
    assert_eq!(s.read(&both).as_deref(), Some(&b"our offline edit of a file edited there"[..]));
    let calls = &s.node.calls;
    for want in [
        format!("put {deleted_there} base 0"),
        format!("put {both} base 0"),
        format!("put edited-here.txt base {edited_here}"),
        format!("delete deleted-here.txt base {deleted_here}"),
        "put new-here.txt base 0".to_owned(),
    ] {
        assert!(calls.contains(&want), "{want} in {calls:?}");
    }
    assert!(!calls.iter().any(|c| c.contains("same-both.txt") || c.contains("keep.txt")), "{calls:?}");
    assert_eq!(calls.iter().filter(|c| c.starts_with("put") || c.starts_with("delete")).count(), 5, "{calls:?}");
    assert!(s.temps().is_empty());
}

#[tokio::test]
async fn a_first_sync_past_the_horizon_adopts_equal_files_and_keeps_different_ones() {
    let mut s = Setup::new(Role::Editor);
    let same = s.node.publish("same.txt", b"equal on both sides");
    let other = s.node.publish("other.txt", b"the server's");
    s.node.heads = vec![head(&same), head(&other)];
    s.node.horizon = s.node.seq;
    s.node.own_in_journal = true;
    s.write("same.txt", b"equal on both sides");
    s.write("other.txt", b"ours, before the first sync");

    s.sync.catch_up(&mut s.node).await.unwrap();

    assert_eq!(s.sync.store.get("same.txt").unwrap().version, same.seq, "adopted");
    assert_eq!(s.read("other.txt").as_deref(), Some(&b"the server's"[..]));
    let copies: Vec<String> = s.state().conflicts.into_iter().collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(s.read(&copies[0]).as_deref(), Some(&b"ours, before the first sync"[..]));
    let puts: Vec<&String> = s.node.calls.iter().filter(|c| c.starts_with("put")).collect();
    assert_eq!(puts, [&format!("put {} base 0", copies[0])], "only the copy is uploaded");
    // A second catch-up starts from the head: the journal again, no listing.
    s.node.heads_pages.clear();
    s.sync.catch_up(&mut s.node).await.unwrap();
    assert!(s.node.heads_pages.is_empty());
}

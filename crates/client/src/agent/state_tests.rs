use super::*;

fn entry(v: i64) -> Entry {
    Entry { version: v, hash: [v as u8; 32], size: 3, mtime_ms: 1, mode: 0o644 }
}

fn one_chunk(e: &Entry) -> Vec<ChunkRef> {
    vec![ChunkRef { hash: e.hash, len: e.size as u32 }]
}

#[test]
fn state_survives_a_restart_and_unsaved_writes_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/ws-1.db");
    let root = Path::new("/r");
    let mut s = StateStore::load(&path, WorkspaceId(1), root).unwrap();
    s.set("a.txt", &entry(3), &one_chunk(&entry(3)));
    s.add_conflict("a (conflict).txt");
    s.advance(7);
    s.advance(5);
    s.save().unwrap();
    // Written but never saved: gone after a crash, as if never recorded.
    s.set("b.txt", &entry(4), &one_chunk(&entry(4)));
    s.advance(9);
    drop(s);
    let again = StateStore::load(&path, WorkspaceId(1), root).unwrap();
    assert_eq!(again.last_seq(), 7);
    assert_eq!(again.get("a.txt"), Some(entry(3)));
    assert_eq!(again.get("b.txt"), None);
    drop(again);
    let seen = StateStore::peek(&path).unwrap().unwrap();
    assert_eq!((seen.last_seq, seen.files), (7, 1));
    assert!(seen.conflicts.contains("a (conflict).txt"));
    // Another workspace's or another folder's state is not reused.
    assert_eq!(StateStore::load(&path, WorkspaceId(2), root).unwrap().totals(), (0, 0));
    let other = StateStore::load(&path, WorkspaceId(2), Path::new("/other")).unwrap();
    assert_eq!((other.totals(), other.last_seq()), ((0, 0), 0));
}

#[test]
fn a_damaged_state_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ws-1.db");
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    let e = StateStore::load(&path, WorkspaceId(1), Path::new("/r")).unwrap_err();
    assert!(matches!(e, HomeError::Corrupt { .. }), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), vec![0x5a; 8192], "left as it was");
    // An earlier release's state that cannot be read is not thrown away either.
    let path = dir.path().join("ws-2.db");
    std::fs::write(dir.path().join("ws-2.json"), b"{\"last_seq\": \"x\"").unwrap();
    assert!(matches!(StateStore::load(&path, WorkspaceId(2), Path::new("/r")), Err(HomeError::Corrupt { .. })));
    assert!(dir.path().join("ws-2.json").exists());
}

#[test]
fn a_directory_is_what_sorts_under_it_and_nothing_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = StateStore::load(&dir.path().join("s.db"), WorkspaceId(1), dir.path()).unwrap();
    for p in ["a/x", "a/y/z", "a-b", "a.txt", "ab/c", "a", "a0"] {
        s.set(p, &entry(1), &[]);
    }
    let set_aside_under = |s: &mut StateStore, dir: &str| {
        let set = s.new_vanished();
        s.add_vanished_under(set, dir);
        s.vanished_page(set, None, 100).into_iter().map(|(p, _)| p).collect::<Vec<_>>()
    };
    assert_eq!(set_aside_under(&mut s, "a"), vec!["a/x", "a/y/z"], "under a/, not a itself nor its neighbours");
    assert_eq!(set_aside_under(&mut s, "a/y"), vec!["a/y/z"]);
    let paged: Vec<String> = s.page(Some("a/x"), 3).into_iter().map(|(p, _)| p).collect();
    assert_eq!(paged, vec!["a/y/z", "a0", "ab/c"]);
    let under = |after: Option<&str>, n| s.under_page("a", after, n).into_iter().map(|(p, _)| p).collect::<Vec<_>>();
    assert_eq!(under(None, 2), vec!["a", "a/x"]);
    assert_eq!(under(Some("a/x"), 2), vec!["a/y/z"]);
    assert!(under(Some("a/y/z"), 2).is_empty());
}

#[test]
fn chunk_lists_are_kept_apart_and_found_by_hash() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = StateStore::load(&dir.path().join("s.db"), WorkspaceId(1), dir.path()).unwrap();
    let big = Entry { version: 2, hash: [7; 32], size: 30, mtime_ms: 5, mode: 0o600 };
    let chunks = vec![ChunkRef { hash: [1; 32], len: 10 }, ChunkRef { hash: [2; 32], len: 20 }];
    s.set("big.bin", &big, &chunks);
    let small = entry(3);
    s.set("small.txt", &small, &one_chunk(&small));
    assert_eq!(s.chunks("big.bin"), chunks);
    assert_eq!(s.chunks("small.txt"), one_chunk(&small));
    assert_eq!(s.chunk_location(&chunks[1]), Some(("big.bin".into(), 10)));
    assert_eq!(s.chunk_location(&one_chunk(&small)[0]), Some(("small.txt".into(), 0)));
    // A move takes the chunks along; a removal forgets them.
    s.rename("big.bin", "moved.bin", 9, Some(6));
    assert_eq!(s.get("moved.bin").map(|e| (e.version, e.mtime_ms)), Some((9, 6)));
    assert_eq!(s.chunk_location(&chunks[1]), Some(("moved.bin".into(), 10)));
    assert_eq!(s.get("big.bin"), None);
    s.remove("moved.bin");
    assert_eq!(s.chunk_location(&chunks[0]), None);
    s.save().unwrap();
}

/// An edit of a large file rewrites only the locations that changed; every chunk of the new list
/// is found where it is now, and a chunk the edit dropped is no longer placed in this file.
#[test]
fn an_edited_chunk_list_moves_only_its_changed_locations() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = StateStore::load(&dir.path().join("s.db"), WorkspaceId(1), dir.path()).unwrap();
    let c = |b: u8, len: u32| ChunkRef { hash: [b; 32], len };
    let big = |v: i64| Entry { version: v, hash: [v as u8; 32], size: 0, mtime_ms: 5, mode: 0o600 };
    // Chunk 9 twice: its last place counts, as before.
    s.set("big.bin", &big(1), &[c(1, 10), c(2, 20), c(9, 5), c(3, 30), c(9, 5)]);
    assert_eq!(s.chunk_location(&c(9, 5)), Some(("big.bin".into(), 65)));
    // Another file claims chunk 3 meanwhile.
    s.set("other.bin", &big(2), &[c(3, 30), c(8, 1)]);
    // The edit replaces chunk 2 by a shorter 4 and so moves everything after it.
    s.set("big.bin", &big(3), &[c(1, 10), c(4, 15), c(9, 5), c(3, 30), c(9, 5)]);
    assert_eq!(s.chunk_location(&c(1, 10)), Some(("big.bin".into(), 0)));
    assert_eq!(s.chunk_location(&c(4, 15)), Some(("big.bin".into(), 10)));
    assert_eq!(s.chunk_location(&c(3, 30)), Some(("big.bin".into(), 30)), "moved, so written again");
    assert_eq!(s.chunk_location(&c(9, 5)), Some(("big.bin".into(), 60)));
    assert_eq!(s.chunk_location(&c(2, 20)), None, "dropped by the edit");
    // An edit that keeps every place leaves another file's claim alone and still finds its own.
    s.set("other.bin", &big(4), &[c(8, 1), c(3, 30)]);
    s.set("big.bin", &big(5), &[c(1, 10), c(4, 15), c(9, 5), c(3, 30), c(9, 5)]);
    assert_eq!(s.chunk_location(&c(3, 30)), Some(("other.bin".into(), 1)));
    assert_eq!(s.chunks("big.bin").len(), 5);
    s.remove("other.bin");
    assert_eq!(s.chunk_location(&c(8, 1)), None);
    s.save().unwrap();
}

#[test]
fn marks_follow_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = StateStore::load(&dir.path().join("s.db"), WorkspaceId(1), dir.path()).unwrap();
    assert!(s.keep_local("v.txt"));
    assert!(!s.keep_local("v.txt"), "reported once");
    s.mark_pending("p.txt", true);
    s.set("p.txt", &entry(1), &[]);
    s.save().unwrap();
    let seen = StateStore::peek(&dir.path().join("s.db")).unwrap().unwrap();
    assert!(seen.pending.is_empty());
    assert_eq!(seen.local_only.into_iter().collect::<Vec<_>>(), vec!["v.txt"]);
}

/// The JSON state the previous release wrote (`tests/fixtures/state-v1.json`, made by its agent
/// for a folder that was then at `root`).
pub(crate) fn fixture_json(root: &Path) -> String {
    let raw = include_str!("../../tests/fixtures/state-v1.json");
    let mut json: serde_json::Value = serde_json::from_str(raw).unwrap();
    json["root"] = serde_json::Value::String(root.to_str().unwrap().to_owned());
    serde_json::to_string_pretty(&json).unwrap()
}

#[test]
fn a_json_state_of_the_previous_release_is_imported_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new("/home/u/team");
    let path = dir.path().join("state/ws-1.db");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path.with_extension("json"), fixture_json(root)).unwrap();
    // `status` before the agent ran again reads it as it is.
    let peeked = StateStore::peek(&path).unwrap().unwrap();
    assert_eq!((peeked.last_seq, peeked.files), (22, 22));
    let s = StateStore::load(&path, WorkspaceId(1), root).unwrap();
    assert!(!path.with_extension("json").exists(), "replaced by the database");
    assert_eq!(s.last_seq(), 22);
    assert_eq!(s.totals(), (22, peeked.bytes));
    let big = s.chunks("big/large.bin");
    assert_eq!(big.len(), 10);
    assert_eq!(big.iter().map(|c| u64::from(c.len)).sum::<u64>(), 700_000);
    assert_eq!(s.chunk_location(&big[3]).map(|(p, _)| p).as_deref(), Some("big/large.bin"));
    let small = s.get("top.txt").unwrap();
    assert_eq!(s.chunks("top.txt"), one_chunk(&small));
    drop(s);
    let state = StateStore::peek(&path).unwrap().unwrap();
    assert_eq!(state, FolderState { workspace_id: Some(WorkspaceId(1)), root: Some(root.into()), ..peeked });
    assert!(state.conflicts.contains("docs/d0/f00.txt.conflict"));
    assert!(state.local_only.contains("viewer-edit.txt"));
    assert!(state.pending.contains("docs/d1/f01.txt"));
}

/// The cost of one edit's state update (one entry written and committed) with `N` entries
/// already in the state, and the state's size on disk: the agent side of `docs/BENCHMARKS.md`.
/// `cargo test -p filesync-client --release --lib state_update_cost -- --ignored --nocapture`
#[test]
#[ignore = "a measurement, not a check; run by hand"]
fn state_update_cost() {
    fn rss_kib() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        statm.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()).unwrap_or(0) * 4
    }
    for n in [0usize, 20_000, 100_000] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ws-1.db");
        let mut s = StateStore::load(&path, WorkspaceId(1), dir.path()).unwrap();
        let e = |i: usize| Entry {
            version: i as i64 + 1,
            hash: *blake3::hash(&i.to_le_bytes()).as_bytes(),
            size: 4096,
            mtime_ms: 1_700_000_000_000 + i as i64,
            mode: 0o644,
        };
        for i in 0..n {
            let entry = e(i);
            s.set(&format!("d{:04}/f{:06}.bin", i / 1000, i), &entry, &[ChunkRef { hash: entry.hash, len: 4096 }]);
        }
        s.advance(n as i64);
        s.save().unwrap();
        drop(s);
        let rss_before = rss_kib();
        let mut s = StateStore::load(&path, WorkspaceId(1), dir.path()).unwrap();
        let mut times = Vec::new();
        for k in 0..200 {
            let i = (k * 7919) % n.max(1);
            let started = std::time::Instant::now();
            let mut entry = e(i);
            entry.version = (n + k) as i64 + 1;
            s.set(&format!("d{:04}/f{:06}.bin", i / 1000, i), &entry, &[ChunkRef { hash: entry.hash, len: 4096 }]);
            s.advance(entry.version);
            s.save().unwrap();
            times.push(started.elapsed());
        }
        times.sort();
        let size: u64 = std::fs::read_dir(dir.path()).unwrap().flatten().map(|f| f.metadata().unwrap().len()).sum();
        println!(
            "entries {n:>7}: edit p50 {:>9.3} ms, p99 {:>9.3} ms; state on disk {:>6.1} MB; rss +{} KiB",
            times[100].as_secs_f64() * 1e3,
            times[198].as_secs_f64() * 1e3,
            size as f64 / 1e6,
            rss_kib().saturating_sub(rss_before)
        );
    }
}

/// Vanished files are set aside in the state, not in memory: found by content once each, only
/// while their entry still has that content, per set, and gone with their set.
#[test]
fn vanished_files_are_found_by_content_once_and_only_in_their_set() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = StateStore::load(&dir.path().join("s.db"), WorkspaceId(1), dir.path()).unwrap();
    let (one, two) = (entry(1), Entry { hash: [7; 32], size: 9, ..entry(2) });
    for p in ["d/a", "d/b", "d/sub/c"] {
        s.set(p, &one, &[]);
    }
    s.set("e", &two, &[]);
    let set = s.new_vanished();
    let other = s.new_vanished();
    assert_eq!(s.take_vanished(set, "x", &one.hash, one.size), None, "an empty set offers nothing");
    s.add_vanished_under(set, "d");
    s.add_vanished(set, "e");
    s.add_vanished(set, "not-known");
    s.add_vanished(other, "d/a");
    let left = |s: &StateStore, set| s.vanished_page(set, None, 10).into_iter().map(|(p, _)| p).collect::<Vec<_>>();
    assert_eq!(left(&s, set), vec!["d/a", "d/b", "d/sub/c", "e"], "an unknown path is not set aside");
    assert_eq!(s.take_vanished(set, "x", &two.hash, two.size), Some(("e".to_owned(), two.clone())));
    assert_eq!(s.take_vanished(set, "x", &two.hash, two.size), None, "offered once");
    assert_eq!(s.take_vanished(set, "x", &one.hash, one.size + 1), None, "the size is part of the content");
    // An entry that changed since it was set aside is no longer a source of its old content.
    s.set("d/a", &Entry { hash: [9; 32], ..one.clone() }, &[]);
    assert_eq!(s.take_vanished(set, "x", &one.hash, one.size).map(|(p, _)| p).as_deref(), Some("d/b"));
    s.remove("d/sub/c");
    assert_eq!(s.take_vanished(set, "x", &one.hash, one.size), None, "nor is a path the state forgot");
    assert_eq!(left(&s, set), vec!["d/a"]);
    assert_eq!(left(&s, other), vec!["d/a"], "sets are apart");
    s.drop_vanished(set);
    assert!(left(&s, set).is_empty());
    assert_eq!(left(&s, other), vec!["d/a"]);
    s.save().unwrap();
    s.clear_vanished();
    assert!(left(&s, other).is_empty());
    s.save().unwrap();
}

/// Of vanished files with equal content, a new file is paired with the one it was most likely
/// moved from: the same last two path components, else the same name, else any.
#[test]
fn equal_vanished_files_pair_by_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = StateStore::load(&dir.path().join("s.db"), WorkspaceId(1), dir.path()).unwrap();
    let e = entry(1);
    for p in ["old/a/LICENSE", "old/b/LICENSE", "old/b/COPYING", "old/c/d/LICENSE", "LICENSE"] {
        s.set(p, &e, &[]);
    }
    let set = s.new_vanished();
    s.add_vanished_under(set, "old");
    s.add_vanished(set, "LICENSE");
    let mut take = |to: &str| s.take_vanished(set, to, &e.hash, e.size).map(|(p, _)| p);
    assert_eq!(take("new/b/LICENSE").as_deref(), Some("old/b/LICENSE"));
    assert_eq!(take("new/c/d/LICENSE").as_deref(), Some("old/c/d/LICENSE"), "deeper, the same");
    assert_eq!(take("top/LICENSE").as_deref(), Some("LICENSE"), "the same name, first in path order");
    assert_eq!(take("new/LICENSE").as_deref(), Some("old/a/LICENSE"), "the same name");
    assert_eq!(take("new/README").as_deref(), Some("old/b/COPYING"), "else any");
    assert_eq!(take("new/b/COPYING"), None);
}

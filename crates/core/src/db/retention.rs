//! Retention: which versions and which deleted files the journal keeps.
//!
//! The schedule (per workspace, `keep_days` and `trash_days` from [`policy`]):
//! - every version younger than `keep_days` is kept;
//! - from `keep_days` to `3 × keep_days` old, the newest version of each path in each 7-day window
//!   (counted from the Unix epoch, UTC) is kept, the others are dropped;
//! - versions older than `3 × keep_days` are dropped;
//! - never dropped: the current version of a live path, and while a deleted file is in the trash,
//!   its delete and its last version with content (what a trash restore brings back);
//! - a path deleted (a `delete` is its head) more than `trash_days` ago leaves the trash: its head
//!   and every version of it are dropped.
//!
//! `keep_days = 0` keeps only the heads (and the trash); `trash_days = 0` empties the trash at the
//! next collection. A kept version stays kept at the next run (the newest of its window stays the
//! newest as older ones go), so applying the same policy twice drops nothing more.
//!
//! Retention deletes journal rows only (`file_versions`, and `file_heads` of expired deleted
//! paths); chunks are garbage collection's business. Each batch of at most [`BATCH`] rows is one
//! short transaction that first locks the workspace row exactly as a commit does, and raises
//! `workspaces.horizon_seq` to the largest seq it dropped: every seq above the horizon is still in
//! the journal, a seq at or below it may be gone.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use diesel::prelude::*;

use super::journal::lock_workspace;
use super::schema::{file_heads, file_versions, workspaces};
use super::trash::trashed;
use super::{Db, DbConn, DbError};
use crate::config::Config;
use crate::ids::WorkspaceId;

/// Rows decided and deleted per transaction.
const BATCH: usize = 500;
/// Rows read per query while looking for what to thin.
const SCAN: i64 = 2000;
/// The thinning window: one version per path and window is kept.
const WINDOW_SECS: i64 = 7 * 86_400;
/// Versions older than this many times `keep_days` are dropped.
const THIN_FACTOR: i64 = 3;
/// The longest period a workspace may set, in days (100 years).
pub const MAX_DAYS: u32 = 36_500;

/// How long a workspace keeps versions and deleted files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Days every version is kept before it is thinned.
    pub keep_days: u32,
    /// Days a deleted path stays in the trash.
    pub trash_days: u32,
}

impl Policy {
    /// The server's defaults (`keep_days`, `trash_days`).
    pub fn defaults(config: &Config) -> Policy {
        Policy { keep_days: config.keep_days, trash_days: config.trash_days }
    }
}

/// What one [`apply`] dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Journal rows (versions) deleted, those of expired trash included.
    pub versions: u64,
    /// Deleted paths that left the trash.
    pub trash_paths: u64,
    /// Sum of the logical sizes of the versions deleted.
    pub bytes: u64,
}

/// A workspace's own setting (`None`: the server's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub keep_days: Option<u32>,
    pub trash_days: Option<u32>,
}

fn days(v: Option<i32>) -> Option<u32> {
    v.and_then(|d| u32::try_from(d).ok())
}

/// The workspace's own setting; `NotFound` if there is no such workspace.
pub fn setting(conn: &mut DbConn, ws: WorkspaceId) -> Result<Setting, DbError> {
    let (keep, trash): (Option<i32>, Option<i32>) = workspaces::table
        .find(ws.0)
        .select((workspaces::keep_days, workspaces::trash_days))
        .first(conn)
        .optional()?
        .ok_or(DbError::NotFound)?;
    Ok(Setting { keep_days: days(keep), trash_days: days(trash) })
}

/// Stores the workspace's own setting (each `None` falls back to the server's default).
pub fn set(conn: &mut DbConn, ws: WorkspaceId, setting: Setting) -> Result<(), DbError> {
    if !exists(conn, ws)? {
        return Err(DbError::NotFound);
    }
    let as_int = |d: Option<u32>| d.map(|d| i32::try_from(d.min(MAX_DAYS)).unwrap_or(i32::MAX));
    diesel::update(workspaces::table.find(ws.0))
        .set((
            workspaces::keep_days.eq(as_int(setting.keep_days)),
            workspaces::trash_days.eq(as_int(setting.trash_days)),
        ))
        .execute(conn)?;
    Ok(())
}

fn exists(conn: &mut DbConn, ws: WorkspaceId) -> Result<bool, DbError> {
    Ok(workspaces::table.find(ws.0).select(workspaces::id).first::<i64>(conn).optional()?.is_some())
}

/// The policy in effect for the workspace: its own setting, else `defaults`.
pub fn policy(conn: &mut DbConn, ws: WorkspaceId, defaults: &Policy) -> Result<Policy, DbError> {
    let own = setting(conn, ws)?;
    Ok(Policy {
        keep_days: own.keep_days.unwrap_or(defaults.keep_days),
        trash_days: own.trash_days.unwrap_or(defaults.trash_days),
    })
}

/// How many versions of `path` retention dropped (0 for a path without a head).
pub fn expired_versions(conn: &mut DbConn, ws: WorkspaceId, path: &str) -> Result<i64, DbError> {
    Ok(file_heads::table
        .filter(file_heads::workspace_id.eq(ws.0))
        .filter(file_heads::path_hash.eq(crate::path::path_hash(path).to_vec()))
        .select(file_heads::expired_versions)
        .first(conn)
        .optional()?
        .unwrap_or(0))
}

/// The workspace's horizon: changes with a seq at or below it may be gone from the journal.
pub fn horizon(conn: &mut DbConn, ws: WorkspaceId) -> Result<Option<i64>, DbError> {
    Ok(workspaces::table.find(ws.0).select(workspaces::horizon_seq).first(conn).optional()?)
}

/// Applies `policy` to the workspace as of `now` (see the module's schedule): first the expired
/// trash, then the thinning, each in short transactions. Safe beside commits; running it again
/// with the same `now` drops nothing more. In a process whose other writers go through a [`Db`]
/// on SQLite, use [`apply_db`]: its transactions also take that pool's in-process writer lock.
pub fn apply(conn: &mut DbConn, ws: WorkspaceId, policy: &Policy, now: DateTime<Utc>) -> Result<Pruned, DbError> {
    run(conn, ws, policy, now)
}

/// [`apply`] through the pool: each batch is a [`Db::write_blocking`] transaction (on SQLite it
/// waits for, and holds off, the process's other writers), each scan a [`Db::run_blocking`] read.
/// Blocking: call it from a blocking thread.
pub fn apply_db(db: &Db, ws: WorkspaceId, policy: &Policy, now: DateTime<Utc>) -> Result<Pruned, DbError> {
    run(&mut OnPool(db), ws, policy, now)
}

/// Where retention's reads and short write transactions run.
trait Runner {
    fn read<T>(&mut self, f: impl FnOnce(&mut DbConn) -> Result<T, DbError>) -> Result<T, DbError>;
    fn write<T>(&mut self, f: impl FnOnce(&mut DbConn) -> Result<T, DbError>) -> Result<T, DbError>;
}

impl Runner for DbConn {
    fn read<T>(&mut self, f: impl FnOnce(&mut DbConn) -> Result<T, DbError>) -> Result<T, DbError> {
        f(self)
    }

    fn write<T>(&mut self, f: impl FnOnce(&mut DbConn) -> Result<T, DbError>) -> Result<T, DbError> {
        self.transaction(f)
    }
}

struct OnPool<'a>(&'a Db);

impl Runner for OnPool<'_> {
    fn read<T>(&mut self, f: impl FnOnce(&mut DbConn) -> Result<T, DbError>) -> Result<T, DbError> {
        self.0.run_blocking(f)
    }

    fn write<T>(&mut self, f: impl FnOnce(&mut DbConn) -> Result<T, DbError>) -> Result<T, DbError> {
        self.0.write_blocking(f)
    }
}

fn run(r: &mut impl Runner, ws: WorkspaceId, policy: &Policy, now: DateTime<Utc>) -> Result<Pruned, DbError> {
    let mut pruned = Pruned::default();
    let trash_cut = (now - Duration::days(i64::from(policy.trash_days))).naive_utc();
    loop {
        let expired = r.write(|c| expire_trash(c, ws, trash_cut, &mut pruned))?;
        if expired < BATCH {
            break;
        }
    }
    thin(r, ws, policy, now, &mut pruned)?;
    if pruned.versions > 0 {
        tracing::info!(
            workspace.id = ws.0,
            versions = pruned.versions,
            trash_paths = pruned.trash_paths,
            bytes = pruned.bytes,
            "retention applied"
        );
    }
    Ok(pruned)
}

/// Drops up to [`BATCH`] paths deleted at or before `cut`, with their whole history. Returns how
/// many paths it dropped.
fn expire_trash(c: &mut DbConn, ws: WorkspaceId, cut: NaiveDateTime, pruned: &mut Pruned) -> Result<usize, DbError> {
    lock_workspace(c, ws)?;
    let hashes: Vec<Vec<u8>> = trashed(ws.0)
        .filter(file_versions::created_at.le(cut))
        .order(file_heads::seq.asc())
        .limit(BATCH as i64)
        .select(file_heads::path_hash)
        .load(c)?;
    if hashes.is_empty() {
        return Ok(0);
    }
    let rows: Vec<(i64, i64)> = file_versions::table
        .filter(file_versions::workspace_id.eq(ws.0))
        .filter(file_versions::path_hash.eq_any(&hashes))
        .select((file_versions::seq, file_versions::size))
        .load(c)?;
    diesel::delete(
        file_versions::table
            .filter(file_versions::workspace_id.eq(ws.0))
            .filter(file_versions::path_hash.eq_any(&hashes)),
    )
    .execute(c)?;
    diesel::delete(
        file_heads::table
            .filter(file_heads::workspace_id.eq(ws.0))
            .filter(file_heads::deleted.eq(true))
            .filter(file_heads::path_hash.eq_any(&hashes)),
    )
    .execute(c)?;
    let seqs: Vec<i64> = rows.iter().map(|(seq, _)| *seq).collect();
    dropped(c, ws, &seqs, rows.iter().map(|(_, size)| *size), pruned)?;
    pruned.trash_paths += hashes.len() as u64;
    Ok(hashes.len())
}

/// The bookkeeping after `seqs` were deleted: deleted heads that pointed at them (the source of a
/// move) go too, the horizon rises, the counts grow.
fn dropped(
    c: &mut DbConn,
    ws: WorkspaceId,
    seqs: &[i64],
    sizes: impl Iterator<Item = i64>,
    pruned: &mut Pruned,
) -> Result<(), DbError> {
    let Some(&top) = seqs.iter().max() else { return Ok(()) };
    for part in seqs.chunks(BATCH) {
        diesel::delete(
            file_heads::table
                .filter(file_heads::workspace_id.eq(ws.0))
                .filter(file_heads::deleted.eq(true))
                .filter(file_heads::seq.eq_any(part)),
        )
        .execute(c)?;
    }
    diesel::update(workspaces::table.find(ws.0).filter(workspaces::horizon_seq.lt(top)))
        .set(workspaces::horizon_seq.eq(top))
        .execute(c)?;
    pruned.versions += seqs.len() as u64;
    pruned.bytes += sizes.map(|s| u64::try_from(s).unwrap_or(0)).sum::<u64>();
    Ok(())
}

/// A version that may have to go: its seq, path hash and size.
type Candidate = (i64, Vec<u8>, i64);

/// Walks the versions older than `keep_days` in seq order and drops what the schedule does not keep.
fn thin(
    r: &mut impl Runner,
    ws: WorkspaceId,
    policy: &Policy,
    now: DateTime<Utc>,
    pruned: &mut Pruned,
) -> Result<(), DbError> {
    let keep_days = i64::from(policy.keep_days);
    let keep_cut = (now - Duration::days(keep_days)).naive_utc();
    let thin_cut = (now - Duration::days(keep_days * THIN_FACTOR)).naive_utc();
    // The newest version seen so far of each path still inside the thinning period, with its window.
    let mut newest: HashMap<Vec<u8>, (i64, Candidate)> = HashMap::new();
    let mut doomed: Vec<Candidate> = Vec::new();
    let mut cursor = 0;
    loop {
        let rows: Vec<(i64, Vec<u8>, NaiveDateTime, i64)> = r.read(|c| {
            Ok(file_versions::table
                .filter(file_versions::workspace_id.eq(ws.0))
                .filter(file_versions::seq.gt(cursor))
                .filter(file_versions::created_at.lt(keep_cut))
                .order(file_versions::seq.asc())
                .limit(SCAN)
                .select((file_versions::seq, file_versions::path_hash, file_versions::created_at, file_versions::size))
                .load(c)?)
        })?;
        let last_page = (rows.len() as i64) < SCAN;
        for (seq, hash, at, size) in rows {
            cursor = seq;
            if at < thin_cut {
                doomed.push((seq, hash, size));
            } else {
                let window = at.and_utc().timestamp().div_euclid(WINDOW_SECS);
                if let Some((prev_window, prev)) = newest.insert(hash.clone(), (window, (seq, hash, size))) {
                    if prev_window == window {
                        doomed.push(prev);
                    }
                }
            }
            if doomed.len() >= BATCH {
                let batch = std::mem::take(&mut doomed);
                r.write(|c| drop_versions(c, ws, batch, pruned))?;
            }
        }
        if last_page {
            break;
        }
    }
    if !doomed.is_empty() {
        r.write(|c| drop_versions(c, ws, doomed, pruned))?;
    }
    Ok(())
}

/// Deletes the candidates the workspace does not protect (checked under the workspace lock, so a
/// commit meanwhile is seen): the head of a live path, a trash entry's delete and its last
/// version with content.
fn drop_versions(c: &mut DbConn, ws: WorkspaceId, batch: Vec<Candidate>, pruned: &mut Pruned) -> Result<(), DbError> {
    lock_workspace(c, ws)?;
    let seqs: Vec<i64> = batch.iter().map(|(seq, _, _)| *seq).collect();
    let hashes: Vec<Vec<u8>> = batch.iter().map(|(_, h, _)| h.clone()).collect::<HashSet<_>>().into_iter().collect();
    let mut protected: HashSet<i64> = file_heads::table
        .filter(file_heads::workspace_id.eq(ws.0))
        .filter(file_heads::deleted.eq(false))
        .filter(file_heads::seq.eq_any(&seqs))
        .select(file_heads::seq)
        .load::<i64>(c)?
        .into_iter()
        .collect();
    let trash: Vec<(Vec<u8>, i64)> = trashed(ws.0)
        .filter(file_heads::path_hash.eq_any(&hashes))
        .select((file_heads::path_hash, file_heads::seq))
        .load(c)?;
    if !trash.is_empty() {
        protected.extend(trash.iter().map(|(_, seq)| *seq));
        let in_trash: Vec<Vec<u8>> = trash.into_iter().map(|(h, _)| h).collect();
        protected.extend(last_live(c, ws, &in_trash)?.into_values());
    }
    let victims: Vec<&Candidate> = batch.iter().filter(|(seq, _, _)| !protected.contains(seq)).collect();
    if victims.is_empty() {
        return Ok(());
    }
    let gone: Vec<i64> = victims.iter().map(|(seq, _, _)| *seq).collect();
    diesel::delete(
        file_versions::table.filter(file_versions::workspace_id.eq(ws.0)).filter(file_versions::seq.eq_any(&gone)),
    )
    .execute(c)?;
    // Count them on their paths' heads (history reports it), grouped by count: one statement per count.
    let mut per_path: HashMap<&[u8], i64> = HashMap::new();
    for (_, h, _) in &victims {
        *per_path.entry(h.as_slice()).or_default() += 1;
    }
    let mut by_count: HashMap<i64, Vec<Vec<u8>>> = HashMap::new();
    for (h, n) in per_path {
        by_count.entry(n).or_default().push(h.to_vec());
    }
    for (n, paths) in by_count {
        diesel::update(
            file_heads::table.filter(file_heads::workspace_id.eq(ws.0)).filter(file_heads::path_hash.eq_any(paths)),
        )
        .set(file_heads::expired_versions.eq(file_heads::expired_versions + n))
        .execute(c)?;
    }
    dropped(c, ws, &gone, victims.iter().map(|(_, _, size)| *size), pruned)
}

/// The newest version with content (not a delete) of each of the paths `hashes`.
pub fn last_live(c: &mut DbConn, ws: WorkspaceId, hashes: &[Vec<u8>]) -> Result<HashMap<Vec<u8>, i64>, DbError> {
    let mut out = HashMap::with_capacity(hashes.len());
    for part in hashes.chunks(BATCH) {
        let rows: Vec<(Vec<u8>, Option<i64>)> = file_versions::table
            .filter(file_versions::workspace_id.eq(ws.0))
            .filter(file_versions::path_hash.eq_any(part))
            .filter(file_versions::deleted.eq(false))
            .group_by(file_versions::path_hash)
            .select((file_versions::path_hash, diesel::dsl::max(file_versions::seq)))
            .load(c)?;
        out.extend(rows.into_iter().filter_map(|(h, seq)| Some((h, seq?))));
    }
    Ok(out)
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    use super::*;
    use crate::db::accounts::{self, NewUser};
    use crate::db::journal::{self, commit, Author, Edit};
    use crate::db::Db;
    use crate::ids::UserId;
    use crate::testing::{for_each_backend, held_content as content};

    /// Alice and her workspace.
    fn workspace(c: &mut DbConn) -> (UserId, WorkspaceId) {
        let user = accounts::create_user(
            c,
            &NewUser { first_name: "A", last_name: "B", username: "alice", email: "a@example.com", password_hash: "h" },
        )
        .unwrap();
        (UserId(user.id), WorkspaceId(accounts::create_workspace(c, UserId(user.id), "Docs").unwrap().id))
    }

    fn seqs(c: &mut DbConn, ws: WorkspaceId, path: &str) -> Vec<i64> {
        journal::history(c, ws, path).unwrap().iter().map(|v| v.seq).collect()
    }

    #[test]
    fn the_schedule_keeps_recent_versions_heads_and_the_trash() {
        for_each_backend(|tdb| {
            let db = Db::open(tdb.url(), 2).unwrap();
            let c = &mut *db.conn().unwrap();
            let (alice, ws) = workspace(c);
            let author = Author { user_id: alice, device_id: "d".into(), device_name: "laptop".into() };
            let now = Utc::now();
            // Commits `edit`, then dates it `at`.
            let edit = |c: &mut DbConn, edit: Edit, at: DateTime<Utc>| -> i64 {
                let seq = db.write_blocking(|c| commit(c, ws, &author, &edit)).unwrap().seq;
                diesel::update(
                    file_versions::table
                        .filter(file_versions::workspace_id.eq(ws.0))
                        .filter(file_versions::seq.eq(seq)),
                )
                .set(file_versions::created_at.eq(at.naive_utc()))
                .execute(c)
                .unwrap();
                seq
            };
            let ago = |d: i64| now - Duration::days(d);
            let put = |c: &mut DbConn, path: &str, base: i64, text: &str| Edit::Put {
                path: path.into(),
                base_version: base,
                content: content(c, ws, text),
            };
            // Two versions in one 7-day window between 20 and 27 days old.
            let window = (ago(20).timestamp().div_euclid(WINDOW_SECS)) * WINDOW_SECS;
            let in_window = |h: i64| DateTime::<Utc>::from_timestamp(window + h * 3600, 0).unwrap();

            let e = put(c, "a", 0, "a1");
            let a1 = edit(c, e, ago(40));
            let e = put(c, "a", a1, "a2");
            let a2 = edit(c, e, in_window(1));
            let e = put(c, "a", a2, "a3");
            let a3 = edit(c, e, in_window(2));
            let e = put(c, "a", a3, "a4");
            let a4 = edit(c, e, ago(5));
            let e = put(c, "b", 0, "b1");
            let b1 = edit(c, e, ago(100));
            let e = put(c, "trash.txt", 0, "t1");
            let t1 = edit(c, e, ago(50));
            let e = put(c, "trash.txt", t1, "t2");
            let t2 = edit(c, e, ago(45));
            let t3 = edit(c, Edit::Delete { path: "trash.txt".into(), base_version: t2 }, ago(2));
            let e = put(c, "old-trash.txt", 0, "o1");
            let o1 = edit(c, e, ago(20));
            edit(c, Edit::Delete { path: "old-trash.txt".into(), base_version: o1 }, ago(6));
            let e = put(c, "m1", 0, "m");
            let m1 = edit(c, e, ago(40));
            let m2 = edit(c, Edit::Move { from: "m1".into(), to: "m2".into(), base_version: m1 }, ago(40));
            let e = put(c, "a", a4, "a5");
            let a5 = edit(c, e, now);
            let live = |c: &mut DbConn| -> Vec<(String, i64)> {
                journal::live_heads(c, ws).unwrap().into_iter().map(|h| (h.path, h.seq)).collect()
            };
            let before = live(c);

            let policy = Policy { keep_days: 10, trash_days: 5 };
            let pruned = apply(c, ws, &policy, now).unwrap();
            // a1 (too old), a2 (not the newest of its window), t1 (not the last content of a
            // trashed file), old-trash.txt's two versions (expired from the trash), m1's put.
            assert_eq!(pruned, Pruned { versions: 6, trash_paths: 1, bytes: 2 + 2 + 2 + 2 + 1 });
            assert_eq!(seqs(c, ws, "a"), vec![a3, a4, a5]);
            assert_eq!(expired_versions(c, ws, "a").unwrap(), 2);
            assert_eq!(seqs(c, ws, "b"), vec![b1], "the head of a live file stays, however old");
            assert_eq!(seqs(c, ws, "trash.txt"), vec![t2, t3], "a trashed file keeps what restores it");
            assert!(seqs(c, ws, "old-trash.txt").is_empty());
            assert_eq!(journal::head_of(c, ws, "old-trash.txt").unwrap(), None);
            assert_eq!(seqs(c, ws, "m2"), vec![m2]);
            assert_eq!(live(c), before);
            assert_eq!(horizon(c, ws).unwrap(), Some(m1));
            // Kept stays kept.
            assert_eq!(apply(c, ws, &policy, now).unwrap(), Pruned::default());

            // 0 and 0: only the heads, and the trash emptied.
            // ... through the pool this time, as a daemon runs it beside its other writers.
            let pruned = apply_db(&db, ws, &Policy { keep_days: 0, trash_days: 0 }, now).unwrap();
            assert_eq!((pruned.versions, pruned.trash_paths), (4, 1));
            assert_eq!(seqs(c, ws, "a"), vec![a5]);
            assert!(seqs(c, ws, "trash.txt").is_empty());
            assert_eq!(live(c), before);
            assert_eq!(horizon(c, ws).unwrap(), Some(m1), "the horizon never goes down");
            // The journal goes on after its horizon.
            let e = put(c, "a", a5, "a6");
            assert_eq!(db.write_blocking(|c| commit(c, ws, &author, &e)).unwrap().seq, a5 + 1);
            assert_eq!(expired_versions(c, ws, "a").unwrap(), 4, "an edit keeps the count of what expired");
        });
    }

    #[test]
    fn the_policy_is_the_workspace_setting_or_the_default() {
        for_each_backend(|tdb| {
            let db = Db::open(tdb.url(), 2).unwrap();
            let c = &mut *db.conn().unwrap();
            let (_, ws) = workspace(c);
            let defaults = Policy::defaults(&Config::default());
            assert_eq!(defaults, Policy { keep_days: 30, trash_days: 30 });
            assert_eq!(policy(c, ws, &defaults).unwrap(), defaults);
            set(c, ws, Setting { keep_days: Some(0), trash_days: None }).unwrap();
            set(c, ws, Setting { keep_days: Some(0), trash_days: None }).unwrap();
            assert_eq!(policy(c, ws, &defaults).unwrap(), Policy { keep_days: 0, trash_days: 30 });
            assert_eq!(setting(c, ws).unwrap(), Setting { keep_days: Some(0), trash_days: None });
            assert!(matches!(policy(c, WorkspaceId(999), &defaults), Err(DbError::NotFound)));
            assert!(matches!(
                set(c, WorkspaceId(999), Setting { keep_days: None, trash_days: None }),
                Err(DbError::NotFound)
            ));
        });
    }

    /// How long retention takes on a large journal: 100,000 versions of 10,000 files, all 100 days
    /// old, thinned to the heads, and 1,000 of the files deleted, their trash expired. A measurement, run by hand:
    /// `cargo test -p filesync-core --features testing --lib -- --ignored --nocapture retention_of_a_large_journal`.
    #[test]
    #[ignore = "a measurement, run by hand"]
    fn retention_of_a_large_journal() {
        for_each_backend(|tdb| {
            let db = Db::open(tdb.url(), 2).unwrap();
            let c = &mut *db.conn().unwrap();
            let (alice, ws) = workspace(c);
            let author = Author { user_id: alice, device_id: "d".into(), device_name: "laptop".into() };
            let content = content(c, ws, "x");
            let started = std::time::Instant::now();
            for round in 0..10 {
                for part in 0..10 {
                    let edits: Vec<Edit> = (0..1000)
                        .map(|i| Edit::Put {
                            path: format!("d{part}/f{i:04}"),
                            base_version: if round == 0 { 0 } else { (round - 1) * 10_000 + part * 1000 + i + 1 },
                            content: content.clone(),
                        })
                        .collect();
                    db.write_blocking(|c| journal::commit_many(c, ws, &author, &edits)).unwrap();
                }
            }
            // The last thousand files are deleted: the trash expires with their ten versions each.
            let deletes: Vec<Edit> = (0..1000)
                .map(|i| Edit::Delete { path: format!("d9/f{i:04}"), base_version: 90_000 + 9000 + i + 1 })
                .collect();
            db.write_blocking(|c| journal::commit_many(c, ws, &author, &deletes)).unwrap();
            let old = (Utc::now() - Duration::days(100)).naive_utc();
            diesel::update(file_versions::table.filter(file_versions::workspace_id.eq(ws.0)))
                .set(file_versions::created_at.eq(old))
                .execute(c)
                .unwrap();
            let filled = started.elapsed();
            let started = std::time::Instant::now();
            let used = crate::db::usage::of(c, &[ws]).unwrap()[&ws];
            let usage_took = started.elapsed();
            assert_eq!((used.live, used.trash, used.history), (9000, 10_000, 81_000));
            let started = std::time::Instant::now();
            let pruned = apply_db(&db, ws, &Policy { keep_days: 30, trash_days: 30 }, Utc::now()).unwrap();
            let took = started.elapsed();
            assert_eq!((pruned.versions, pruned.trash_paths), (9 * 9000 + 1000 * 11, 1000));
            assert_eq!(journal::live_heads(c, ws).unwrap().len(), 9000);
            println!(
                "{:?}: filled in {filled:.1?}; usage of 101,000 versions in {usage_took:.1?}; retention dropped {} \
                 versions ({} paths from the trash) in {took:.1?}",
                tdb.backend(),
                pruned.versions,
                pruned.trash_paths
            );
        });
    }
}

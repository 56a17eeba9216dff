//! What the agent knows about one linked folder, kept across restarts: for
//! every path in sync, the server version it matches and what the local file
//! looked like then (hash, size, mtime, mode); and the last journal seq applied.
//!
//! A path whose file still has the recorded size and mtime is not read again;
//! one whose hash still matches is in sync. So a restart re-uploads and
//! re-downloads nothing that was already in sync.
//!
//! The state is an SQLite database (`state/ws-<id>.db`, WAL), one row per
//! path: a change writes its own rows, never the whole state, and nothing of
//! the tree is held in memory. Writes go into one open transaction that
//! [`StateStore::save`] commits: the engine saves after every change it
//! applies and every upload batch, so each is one transaction. A chunk list is
//! stored apart (`chunk_lists`, `chunk_at`) only for a file of more than one
//! chunk, and read only when needed; a file of one chunk is its own chunk.
//! A folder state written by an earlier release (`ws-<id>.json`) is imported
//! into a new database on first start, in one transaction, then removed.
//!
//! **Invariant:** an entry is written only after the local file and the server
//! agree on it (after a download is renamed into place, or an upload is
//! committed), and `last_seq` only moves forward after every change up to it
//! has been applied. A crash in between makes the agent redo work, never skip it.
//! A damaged store is an error ([`HomeError::Corrupt`]), never a silent reset; a
//! write that fails is rolled back and fails the next [`StateStore::save`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde::Deserialize;

use filesync_core::chunking::{ChunkRef, Hash};
use filesync_core::WorkspaceId;

use crate::home::{read_json, HomeError};

/// One file as last agreed with the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The server's version of the path (the seq that made it).
    pub version: i64,
    pub hash: Hash,
    pub size: u64,
    /// Local modification time, milliseconds since the epoch, as last seen on disk.
    pub mtime_ms: i64,
    pub mode: u32,
}

/// A summary of a folder's state for `filesync status`: counted in SQL, never loaded whole (the
/// entries are walked a page at a time with [`StateStore::page`]); the marks are few.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FolderState {
    pub workspace_id: Option<WorkspaceId>,
    /// The folder this state describes; a state never carries over to another folder.
    pub root: Option<PathBuf>,
    /// Every journal change up to this seq has been applied here.
    pub last_seq: i64,
    /// Files in sync, and their bytes.
    pub files: usize,
    pub bytes: u64,
    /// Conflict copies this agent created or received.
    pub conflicts: BTreeSet<String>,
    /// Local edits not uploaded because the role is viewer; each is reported once.
    pub local_only: BTreeSet<String>,
    /// Paths changed locally and not yet accepted by the server.
    pub pending: BTreeSet<String>,
}

/// Per-path marks kept beside the entries.
#[derive(Debug, Clone, Copy)]
enum Mark {
    Pending = 0,
    Conflict = 1,
    LocalOnly = 2,
}

/// The layout, version 1. Paths are workspace paths (`/`-separated), compared bytewise.
const SCHEMA: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value ANY) WITHOUT ROWID;
CREATE TABLE files (
    path TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    hash BLOB NOT NULL,
    size INTEGER NOT NULL,
    mtime_ms INTEGER NOT NULL,
    mode INTEGER NOT NULL,
    chunked INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX files_by_hash ON files (hash);
CREATE TABLE chunk_lists (path TEXT PRIMARY KEY, list BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE chunk_at (hash BLOB PRIMARY KEY, path TEXT NOT NULL, offset INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX chunk_at_by_path ON chunk_at (path);
CREATE TABLE marks (kind INTEGER NOT NULL, path TEXT NOT NULL, PRIMARY KEY (kind, path)) WITHOUT ROWID;
PRAGMA user_version = 1;
";
const SCHEMA_VERSION: i64 = 1;

/// Known files that vanished, set aside by content while a push looks for where they went
/// ([`VanishedSet`]): a table of this connection only (SQLite's `temp` schema, spilled to disk
/// when large), never saved with the state. `hash` and `size` are the entry's when it was set
/// aside; a source is only offered while the entry still has them. `name` (the last component)
/// and `tail` (the last two) pair files of the same content the way they were moved: in a renamed
/// tree of many equal files (licences, empty `__init__.py`), `new/pkg/LICENSE` is the move of
/// `old/pkg/LICENSE`, not of another package's.
const VANISHED_SCHEMA: &str = "
CREATE TEMP TABLE vanished (
    push INTEGER NOT NULL,
    path TEXT NOT NULL,
    hash BLOB NOT NULL,
    size INTEGER NOT NULL,
    name TEXT NOT NULL,
    tail TEXT NOT NULL,
    PRIMARY KEY (push, path)
) WITHOUT ROWID;
CREATE INDEX temp.vanished_by_tail ON vanished (push, hash, size, tail);
CREATE INDEX temp.vanished_by_name ON vanished (push, hash, size, name);
";

/// The columns of a `vanished` row from the `files` row it sets aside: SQL's own split of a path
/// (`rtrim(p, <every character of p but '/'>)` is `p` up to its last `/`), so a whole directory
/// is set aside in one statement.
const VANISHED_FROM_FILES: &str = "
SELECT ?1, path, hash, size,
       substr(path, length(rtrim(path, replace(path, '/', ''))) + 1),
       substr(path, length(rtrim(rtrim(rtrim(path, replace(path, '/', '')), '/'),
                                 replace(rtrim(rtrim(path, replace(path, '/', '')), '/'), '/', ''))) + 1)
FROM files";

/// The last component of a workspace path and its last two, as [`VANISHED_FROM_FILES`] splits them.
fn name_and_tail(path: &str) -> (&str, &str) {
    let name = path.rsplit('/').next().unwrap_or(path);
    let parent = &path[..path.len() - name.len()];
    let parent = parent.strip_suffix('/').unwrap_or(parent);
    let tail = match parent.rfind('/') {
        Some(i) => &path[i + 1..],
        None => path,
    };
    (name, tail)
}

/// One push's set of vanished known files ([`StateStore::new_vanished`]), kept in the state's
/// temporary table rather than in memory: a directory of a million files moved inside the folder
/// is matched for moves at the cost of a lookup per new file, not a million entries held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VanishedSet(i64);

struct Inner {
    conn: Connection,
    /// A write transaction is open (committed by `save`).
    in_tx: bool,
    /// The first write that failed since the last save; that save fails with it.
    failed: Option<rusqlite::Error>,
}

/// The state of one folder, open.
pub struct StateStore {
    path: PathBuf,
    /// The mutex only makes the store shareable across awaits; one task uses it.
    inner: Mutex<Inner>,
    last_seq: i64,
    /// The last [`VanishedSet`] handed out.
    last_set: i64,
    /// The sets anything was added to since they were handed out: a lookup in another one is
    /// answered without a query (most pushes set nothing aside).
    filled: BTreeSet<i64>,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore").field("path", &self.path).field("last_seq", &self.last_seq).finish_non_exhaustive()
    }
}

fn state_error(path: &Path, e: rusqlite::Error) -> HomeError {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    match e.sqlite_error_code() {
        Some(DatabaseCorrupt | NotADatabase) => HomeError::Corrupt { path: path.to_path_buf(), message: e.to_string() },
        _ => HomeError::Io { path: path.to_path_buf(), source: std::io::Error::other(e) },
    }
}

/// The JSON state of an earlier release (`ws-<id>.json`).
mod legacy {
    use super::*;

    #[derive(Deserialize)]
    pub struct Json {
        pub workspace_id: Option<WorkspaceId>,
        #[serde(default)]
        pub root: Option<PathBuf>,
        pub last_seq: i64,
        pub files: BTreeMap<String, JsonEntry>,
        #[serde(default)]
        pub conflicts: BTreeSet<String>,
        #[serde(default)]
        pub local_only: BTreeSet<String>,
        #[serde(default)]
        pub pending: BTreeSet<String>,
    }

    #[derive(Deserialize)]
    pub struct JsonEntry {
        pub version: i64,
        #[serde(with = "hex_hash")]
        pub hash: Hash,
        pub size: u64,
        pub mtime_ms: i64,
        pub mode: u32,
        #[serde(default, with = "chunk_list")]
        pub chunks: Vec<ChunkRef>,
    }

    mod hex_hash {
        use serde::{Deserialize, Deserializer};

        use filesync_core::chunking::Hash;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Hash, D::Error> {
            let s = String::deserialize(d)?;
            super::super::parse_hex(&s).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
        }
    }

    /// Chunk lists were stored as `"<hex hash>:<len>"` strings.
    mod chunk_list {
        use serde::{Deserialize, Deserializer};

        use filesync_core::chunking::ChunkRef;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ChunkRef>, D::Error> {
            let raw = Vec::<String>::deserialize(d)?;
            raw.iter()
                .map(|r| {
                    let (h, l) = r.split_once(':')?;
                    Some(ChunkRef { hash: super::super::parse_hex(h)?, len: l.parse().ok()? })
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| serde::de::Error::custom("expected \"<hash>:<len>\" chunk records"))
        }
    }
}

/// Where an earlier release kept the state that `db` replaces.
fn json_path(db: &Path) -> PathBuf {
    db.with_extension("json")
}

/// Removes a folder's state (database, its WAL files, and a not yet imported JSON state).
pub fn remove(db: &Path) {
    for suffix in ["-wal", "-shm"] {
        let mut side = db.as_os_str().to_owned();
        side.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(side));
    }
    let _ = std::fs::remove_file(json_path(db));
    let _ = std::fs::remove_file(db);
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // WAL: a commit appends, readers (`filesync status`) do not block the agent. NORMAL: a
    // commit is not flushed to disk at once; a power cut may lose the last commits (the agent
    // then redoes that work, as after a crash before a save), never the database's consistency.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "cache_size", -16_384)?; // KiB: 16 MiB of pages at most
    Ok(())
}

/// A chunk list as stored: 32 hash bytes and 4 little-endian length bytes per chunk.
fn encode_chunks(chunks: &[ChunkRef]) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunks.len() * 36);
    for c in chunks {
        out.extend_from_slice(&c.hash);
        out.extend_from_slice(&c.len.to_le_bytes());
    }
    out
}

fn decode_chunks(blob: &[u8]) -> Option<Vec<ChunkRef>> {
    if !blob.len().is_multiple_of(36) {
        return None;
    }
    blob.chunks_exact(36)
        .map(|r| {
            let hash: Hash = r[..32].try_into().ok()?;
            let len = u32::from_le_bytes(r[32..].try_into().ok()?);
            Some(ChunkRef { hash, len })
        })
        .collect()
}

/// The chunk list of a file that is a single chunk (or empty): it follows from the entry.
fn implied_chunks(e: &Entry) -> Option<Vec<ChunkRef>> {
    match u32::try_from(e.size) {
        Ok(0) => Some(Vec::new()),
        Ok(len) => Some(vec![ChunkRef { hash: e.hash, len }]),
        Err(_) => None,
    }
}

fn read_entry(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Entry> {
    let hash: Vec<u8> = row.get(first + 1)?;
    let hash: Hash = hash.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(first + 1, rusqlite::types::Type::Blob, "hash is not 32 bytes".into())
    })?;
    Ok(Entry {
        version: row.get(first)?,
        hash,
        size: row.get(first + 2)?,
        mtime_ms: row.get(first + 3)?,
        mode: row.get(first + 4)?,
    })
}

const ENTRY_COLUMNS: &str = "version, hash, size, mtime_ms, mode";
/// [`ENTRY_COLUMNS`] of `files` aliased `f` in a join.
const FILES_ENTRY_COLUMNS: &str = "f.version, f.hash, f.size, f.mtime_ms, f.mode";

fn put_entry(conn: &Connection, path: &str, e: &Entry, chunks: &[ChunkRef]) -> rusqlite::Result<()> {
    let chunked = implied_chunks(e).is_none_or(|implied| implied != chunks);
    conn.prepare_cached(
        "INSERT INTO files (path, version, hash, size, mtime_ms, mode, chunked) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (path) DO UPDATE SET version = ?2, hash = ?3, size = ?4, mtime_ms = ?5, mode = ?6, chunked = ?7",
    )?
    .execute(params![path, e.version, &e.hash[..], e.size, e.mtime_ms, e.mode, chunked])?;
    if !chunked {
        drop_chunks(conn, path)?;
        return unmark(conn, path);
    }
    // Only the chunk locations that differ from the previous list are written: a small edit of
    // a large file touches a few rows, not one per chunk.
    let before = conn
        .prepare_cached("SELECT list FROM chunk_lists WHERE path = ?1")?
        .query_row([path], |r| r.get::<_, Vec<u8>>(0))
        .optional()?
        .and_then(|b| decode_chunks(&b));
    let before = match before {
        Some(list) => chunk_locations(&list),
        None => {
            conn.prepare_cached("DELETE FROM chunk_at WHERE path = ?1")?.execute([path])?;
            HashMap::new()
        }
    };
    let after = chunk_locations(chunks);
    conn.prepare_cached("INSERT OR REPLACE INTO chunk_lists (path, list) VALUES (?1, ?2)")?
        .execute(params![path, encode_chunks(chunks)])?;
    let mut gone = conn.prepare_cached("DELETE FROM chunk_at WHERE hash = ?1 AND path = ?2")?;
    for (hash, offset) in &before {
        if after.get(hash) != Some(offset) {
            gone.execute(params![&hash[..], path])?;
        }
    }
    let mut at = conn.prepare_cached("INSERT OR REPLACE INTO chunk_at (hash, path, offset) VALUES (?1, ?2, ?3)")?;
    for (hash, offset) in &after {
        if before.get(hash) != Some(offset) {
            at.execute(params![&hash[..], path, offset])?;
        }
    }
    unmark(conn, path)
}

/// Where each chunk of a file's list starts (a chunk listed twice: its last place).
fn chunk_locations(chunks: &[ChunkRef]) -> HashMap<Hash, u64> {
    let mut out = HashMap::with_capacity(chunks.len());
    let mut offset = 0u64;
    for c in chunks {
        out.insert(c.hash, offset);
        offset += u64::from(c.len);
    }
    out
}

fn drop_chunks(conn: &Connection, path: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM chunk_lists WHERE path = ?1")?.execute([path])?;
    conn.prepare_cached("DELETE FROM chunk_at WHERE path = ?1")?.execute([path])?;
    Ok(())
}

/// An entry written or removed is no longer pending nor kept local.
fn unmark(conn: &Connection, path: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM marks WHERE kind IN (?1, ?2) AND path = ?3")?.execute(params![
        Mark::Pending as i64,
        Mark::LocalOnly as i64,
        path
    ])?;
    Ok(())
}

fn set_meta(conn: &Connection, key: &str, value: impl rusqlite::ToSql) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?.execute(params![key, value])?;
    Ok(())
}

fn get_meta<T: rusqlite::types::FromSql>(conn: &Connection, key: &str) -> rusqlite::Result<Option<T>> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()
}

/// Writes a JSON state of an earlier release into an empty database (inside the caller's transaction).
fn import(conn: &Connection, json: &legacy::Json) -> rusqlite::Result<()> {
    for (path, e) in &json.files {
        let entry = Entry { version: e.version, hash: e.hash, size: e.size, mtime_ms: e.mtime_ms, mode: e.mode };
        // A state written before chunk lists were kept has none: the file is taken as one chunk
        // only if it is one; otherwise its list stays unknown (it is relearned on the next change).
        let chunks = if e.chunks.is_empty() { implied_chunks(&entry).unwrap_or_default() } else { e.chunks.clone() };
        put_entry(conn, path, &entry, &chunks)?;
    }
    let mut mark = conn.prepare_cached("INSERT OR IGNORE INTO marks (kind, path) VALUES (?1, ?2)")?;
    for (kind, paths) in
        [(Mark::Pending, &json.pending), (Mark::Conflict, &json.conflicts), (Mark::LocalOnly, &json.local_only)]
    {
        for p in paths {
            mark.execute(params![kind as i64, p])?;
        }
    }
    set_meta(conn, "last_seq", json.last_seq)
}

impl StateStore {
    /// Opens the state of `ws`'s folder at `root`, creating it (from an earlier release's JSON
    /// state when there is one) if missing. A damaged store is an error, never silently reset:
    /// starting over would turn every local file into an upload and every deletion into a download.
    pub fn load(path: &Path, ws: WorkspaceId, root: &Path) -> Result<StateStore, HomeError> {
        let err = |e| state_error(path, e);
        if let Some(dir) = path.parent() {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder.create(dir).map_err(|source| HomeError::Io { path: dir.to_path_buf(), source })?;
        }
        let json = json_path(path);
        let mut conn = Connection::open(path).map_err(err)?;
        configure(&conn).map_err(err)?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(err)?;
        if version > SCHEMA_VERSION {
            return Err(HomeError::Corrupt {
                path: path.to_path_buf(),
                message: format!("written by a newer filesync (layout {version})"),
            });
        }
        if version == 0 {
            // New (or its creation never committed): made in one transaction, with the JSON state
            // of an earlier release when there is one for this folder.
            let legacy: Option<legacy::Json> = read_json(&json)?;
            let tx = conn.transaction().map_err(err)?;
            tx.execute_batch(SCHEMA).map_err(err)?;
            set_meta(&tx, "workspace_id", ws.0).map_err(err)?;
            set_meta(&tx, "root", root.to_string_lossy().as_ref()).map_err(err)?;
            set_meta(&tx, "last_seq", 0).map_err(err)?;
            let migrated = legacy.filter(|j| j.workspace_id == Some(ws) && j.root.as_deref() == Some(root));
            if let Some(j) = &migrated {
                import(&tx, j).map_err(err)?;
            }
            tx.commit().map_err(err)?;
            if migrated.is_some() {
                // Flushed before the JSON it replaces goes.
                conn.pragma_update(None, "wal_checkpoint", "FULL").map_err(err)?;
                tracing::info!(workspace.id = %ws, state = %path.display(), "imported the folder state of an earlier release");
            }
        }
        // The database is the state now; a JSON state beside it was imported (or is another
        // folder's, which would not be reused anyway).
        let _ = std::fs::remove_file(&json);
        let same_ws = get_meta::<i64>(&conn, "workspace_id").map_err(err)? == Some(ws.0);
        let same_root = get_meta::<String>(&conn, "root").map_err(err)?.as_deref() == root.to_str();
        if !same_ws || !same_root {
            // A state for another workspace or folder (the link changed): start over. Reusing it
            // would make every file it lists look deleted here.
            let tx = conn.transaction().map_err(err)?;
            tx.execute_batch("DELETE FROM files; DELETE FROM chunk_lists; DELETE FROM chunk_at; DELETE FROM marks;")
                .map_err(err)?;
            set_meta(&tx, "workspace_id", ws.0).map_err(err)?;
            set_meta(&tx, "root", root.to_string_lossy().as_ref()).map_err(err)?;
            set_meta(&tx, "last_seq", 0).map_err(err)?;
            tx.commit().map_err(err)?;
        }
        let last_seq = get_meta::<i64>(&conn, "last_seq").map_err(err)?.unwrap_or(0);
        conn.execute_batch(VANISHED_SCHEMA).map_err(err)?;
        Ok(StateStore {
            path: path.to_path_buf(),
            inner: Mutex::new(Inner { conn, in_tx: false, failed: None }),
            last_seq,
            last_set: 0,
            filled: BTreeSet::new(),
        })
    }

    /// Reads the state without creating or changing anything (for `status`). A JSON state not yet
    /// imported is read as it is.
    pub fn peek(path: &Path) -> Result<Option<FolderState>, HomeError> {
        StateStore::open_read_only(path)?.map(|s| s.summary()).transpose()
    }

    /// Opens the state read-only, creating and changing nothing (for `status`): `None` if there is
    /// none. A JSON state of an earlier release not yet imported is read into memory as it is.
    pub fn open_read_only(path: &Path) -> Result<Option<StateStore>, HomeError> {
        let err = |e| state_error(path, e);
        let conn = if path.exists() {
            let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(err)?;
            conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(err)?;
            let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(err)?;
            if version == 0 {
                return Ok(None);
            }
            conn
        } else {
            let Some(j) = read_json::<legacy::Json>(&json_path(path))? else { return Ok(None) };
            let conn = Connection::open_in_memory().map_err(err)?;
            conn.execute_batch(SCHEMA).map_err(err)?;
            import(&conn, &j).map_err(err)?;
            if let Some(ws) = j.workspace_id {
                set_meta(&conn, "workspace_id", ws.0).map_err(err)?;
            }
            if let Some(root) = &j.root {
                set_meta(&conn, "root", root.to_string_lossy().as_ref()).map_err(err)?;
            }
            conn
        };
        let last_seq = get_meta::<i64>(&conn, "last_seq").map_err(err)?.unwrap_or(0);
        Ok(Some(StateStore {
            path: path.to_path_buf(),
            inner: Mutex::new(Inner { conn, in_tx: false, failed: None }),
            last_seq,
            last_set: 0,
            filled: BTreeSet::new(),
        }))
    }

    /// The state in figures, and its marks (for `status`): one aggregate query, not the entries.
    pub fn summary(&self) -> Result<FolderState, HomeError> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        summary(&inner.conn).map_err(|e| state_error(&self.path, e))
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Option<T> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match f(&inner.conn) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::error!(state = %self.path.display(), error = %e, "cannot read the folder state");
                inner.failed.get_or_insert(e);
                None
            }
        }
    }

    /// Runs a write inside the open transaction (begun if needed). A failure is kept for `save`.
    fn write(&mut self, f: impl FnOnce(&Connection) -> rusqlite::Result<()>) {
        let inner = self.inner.get_mut().unwrap_or_else(|p| p.into_inner());
        if inner.failed.is_some() {
            return; // the transaction is rolled back at the next save: nothing more goes in
        }
        let result = (|| {
            if !inner.in_tx {
                inner.conn.execute_batch("BEGIN IMMEDIATE")?;
                inner.in_tx = true;
            }
            f(&inner.conn)
        })();
        if let Err(e) = result {
            tracing::error!(state = %self.path.display(), error = %e, "cannot write the folder state");
            inner.failed = Some(e);
        }
    }

    /// The entry of `path`. (A read that fails answers `None` and fails the next save: the path
    /// then looks new, which uploads or keeps a copy, never overwrites.)
    pub fn get(&self, path: &str) -> Option<Entry> {
        self.with(|c| {
            c.prepare_cached(&format!("SELECT {ENTRY_COLUMNS} FROM files WHERE path = ?1"))?
                .query_row([path], |r| read_entry(r, 0))
                .optional()
        })
        .flatten()
    }

    /// The chunks of `path`'s content, read only when needed (downloads reuse them).
    pub fn chunks(&self, path: &str) -> Vec<ChunkRef> {
        self.with(|c| {
            let row = c
                .prepare_cached(&format!("SELECT {ENTRY_COLUMNS}, chunked FROM files WHERE path = ?1"))?
                .query_row([path], |r| Ok((read_entry(r, 0)?, r.get::<_, bool>(5)?)))
                .optional()?;
            Ok(match row {
                None => Vec::new(),
                Some((e, false)) => implied_chunks(&e).unwrap_or_default(),
                Some((_, true)) => {
                    let blob: Option<Vec<u8>> = c
                        .prepare_cached("SELECT list FROM chunk_lists WHERE path = ?1")?
                        .query_row([path], |r| r.get(0))
                        .optional()?;
                    blob.and_then(|b| decode_chunks(&b)).unwrap_or_default()
                }
            })
        })
        .unwrap_or_default()
    }

    /// Where a local file held the chunk `want` when it was recorded: its path and offset.
    /// May be stale; every read is checked against the hash.
    pub fn chunk_location(&self, want: &ChunkRef) -> Option<(String, u64)> {
        self.with(|c| {
            let at = c
                .prepare_cached("SELECT path, offset FROM chunk_at WHERE hash = ?1")?
                .query_row([&want.hash[..]], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            if at.is_some() {
                return Ok(at);
            }
            // A file of one chunk is that chunk.
            c.prepare_cached("SELECT path FROM files WHERE hash = ?1 AND size = ?2 AND chunked = 0 LIMIT 1")?
                .query_row(params![&want.hash[..], want.len], |r| Ok((r.get(0)?, 0)))
                .optional()
        })
        .flatten()
    }

    /// Records `path` as `entry` with content `chunks`; it is no longer pending nor kept local.
    pub fn set(&mut self, path: &str, entry: &Entry, chunks: &[ChunkRef]) {
        self.write(|c| put_entry(c, path, entry, chunks));
    }

    /// The file at `path` was touched, not changed: its new mtime and mode.
    pub fn touch(&mut self, path: &str, mtime_ms: i64, mode: u32) {
        self.write(|c| {
            c.prepare_cached("UPDATE files SET mtime_ms = ?2, mode = ?3 WHERE path = ?1")?
                .execute(params![path, mtime_ms, mode])?;
            Ok(())
        });
    }

    /// `from` became `to` at `version` (a move): the entry and its chunks go along.
    pub fn rename(&mut self, from: &str, to: &str, version: i64, mtime_ms: Option<i64>) {
        let Some(mut e) = self.get(from) else { return };
        let chunks = self.chunks(from);
        e.version = version;
        if let Some(m) = mtime_ms {
            e.mtime_ms = m;
        }
        self.remove(from);
        self.set(to, &e, &chunks);
    }

    pub fn remove(&mut self, path: &str) {
        self.write(|c| {
            c.prepare_cached("DELETE FROM files WHERE path = ?1")?.execute([path])?;
            drop_chunks(c, path)?;
            unmark(c, path)
        });
    }

    /// The paths among `paths` that the state does not know (one statement for the lot).
    pub fn unknown(&self, paths: Vec<String>) -> Vec<String> {
        self.with(|c| {
            let mut known = c.prepare_cached("SELECT 1 FROM files WHERE path = ?1")?;
            let mut out = Vec::new();
            for p in paths {
                if !known.exists([&p])? {
                    out.push(p);
                }
            }
            Ok(out)
        })
        .unwrap_or_default()
    }

    /// Up to `limit` entries equal to `dir` or under `dir/`, after `after` (from the start with
    /// `None`), in path order: the known files of a directory, a page at a time.
    pub fn under_page(&self, dir: &str, after: Option<&str>, limit: usize) -> Vec<(String, Entry)> {
        let (lo, hi) = (format!("{dir}/"), format!("{dir}0"));
        self.with(|c| {
            c.prepare_cached(&format!(
                "SELECT path, {ENTRY_COLUMNS} FROM files WHERE (path = ?1 OR (path > ?2 AND path < ?3)) \
                 AND (?4 IS NULL OR path > ?4) ORDER BY path LIMIT ?5"
            ))?
            .query_map(params![dir, lo, hi, after, limit], |r| Ok((r.get(0)?, read_entry(r, 1)?)))?
            .collect()
        })
        .unwrap_or_default()
    }

    /// Up to `limit` entries after `after` (all from the start with `None`), in path order: the
    /// state is walked a page at a time, never loaded whole.
    pub fn page(&self, after: Option<&str>, limit: usize) -> Vec<(String, Entry)> {
        self.with(|c| {
            c.prepare_cached(&format!(
                "SELECT path, {ENTRY_COLUMNS} FROM files WHERE ?1 IS NULL OR path > ?1 ORDER BY path LIMIT ?2"
            ))?
            .query_map(params![after, limit], |r| Ok((r.get(0)?, read_entry(r, 1)?)))?
            .collect()
        })
        .unwrap_or_default()
    }

    /// Starts a listing of the server's heads ([`StateStore::list`]): a table of this connection
    /// only (SQLite's `temp` schema, spilled to disk when large), never saved with the state, so
    /// an interrupted reconciliation starts over.
    pub fn begin_listing(&mut self) {
        self.write(|c| {
            c.execute_batch(
                "CREATE TEMP TABLE IF NOT EXISTS listed (path TEXT PRIMARY KEY) WITHOUT ROWID; DELETE FROM temp.listed;",
            )
        });
    }

    /// The server has a live head at `path`.
    pub fn list(&mut self, path: &str) {
        self.write(|c| {
            c.prepare_cached("INSERT OR IGNORE INTO temp.listed (path) VALUES (?1)")?.execute([path])?;
            Ok(())
        });
    }

    /// [`StateStore::page`] of the entries whose path was not listed since
    /// [`StateStore::begin_listing`]: what the server no longer has.
    pub fn unlisted_page(&self, after: Option<&str>, limit: usize) -> Vec<(String, Entry)> {
        self.with(|c| {
            c.prepare_cached(&format!(
                "SELECT path, {ENTRY_COLUMNS} FROM files WHERE (?1 IS NULL OR path > ?1) \
                 AND path NOT IN (SELECT path FROM temp.listed) ORDER BY path LIMIT ?2"
            ))?
            .query_map(params![after, limit], |r| Ok((r.get(0)?, read_entry(r, 1)?)))?
            .collect()
        })
        .unwrap_or_default()
    }

    /// Ends the listing.
    pub fn end_listing(&mut self) {
        self.write(|c| c.execute_batch("DROP TABLE IF EXISTS temp.listed"));
    }

    /// A new, empty set of vanished files. Sets live in the open transaction like every write
    /// (a failed save rolls them back with the rest) and are dropped with
    /// [`StateStore::drop_vanished`] or [`StateStore::clear_vanished`].
    pub fn new_vanished(&mut self) -> VanishedSet {
        self.last_set += 1;
        VanishedSet(self.last_set)
    }

    /// Sets the known file `path` aside in `set` (nothing if the state does not know it).
    pub fn add_vanished(&mut self, set: VanishedSet, path: &str) {
        self.filled.insert(set.0);
        self.write(|c| {
            c.prepare_cached(&format!(
                "INSERT OR IGNORE INTO temp.vanished (push, path, hash, size, name, tail) {VANISHED_FROM_FILES} \
                 WHERE path = ?2"
            ))?
            .execute(params![set.0, path])?;
            Ok(())
        });
    }

    /// Sets every known file under `dir/` aside in `set` (not `dir` itself), in one statement:
    /// nothing of them passes through memory.
    pub fn add_vanished_under(&mut self, set: VanishedSet, dir: &str) {
        let (lo, hi) = (format!("{dir}/"), format!("{dir}0"));
        self.filled.insert(set.0);
        self.write(|c| {
            c.prepare_cached(&format!(
                "INSERT OR IGNORE INTO temp.vanished (push, path, hash, size, name, tail) {VANISHED_FROM_FILES} \
                 WHERE path > ?2 AND path < ?3"
            ))?
            .execute(params![set.0, lo, hi])?;
            Ok(())
        });
    }

    /// A file of `set` whose entry still has content `hash` and `size`, with its entry, taken out
    /// of the set (so it is offered once): for a new file at `to`, one with the same last two
    /// path components if there is one, else the same name, else any.
    pub fn take_vanished(&mut self, set: VanishedSet, to: &str, hash: &Hash, size: u64) -> Option<(String, Entry)> {
        if !self.filled.contains(&set.0) {
            return None;
        }
        let (name, tail) = name_and_tail(to);
        let mut found = None;
        self.write(|c| {
            let pick = |extra: &str, key: Option<&str>| -> rusqlite::Result<Option<(String, Entry)>> {
                c.prepare_cached(&format!(
                    "SELECT f.path, {FILES_ENTRY_COLUMNS} FROM temp.vanished v JOIN files f ON f.path = v.path \
                     WHERE v.push = ?1 AND v.hash = ?2 AND v.size = ?3 AND f.hash = v.hash AND f.size = v.size \
                     AND (?4 IS NULL OR {extra} = ?4) ORDER BY v.path LIMIT 1"
                ))?
                .query_row(params![set.0, &hash[..], size, key], |r| Ok((r.get::<_, String>(0)?, read_entry(r, 1)?)))
                .optional()
            };
            // Most new files have no source at all: one lookup tells.
            let mut row = pick("v.tail", None)?;
            if row.is_some() {
                row = match pick("v.tail", Some(tail))? {
                    Some(r) => Some(r),
                    None => pick("v.name", Some(name))?.or(row),
                };
            }
            if let Some((path, _)) = &row {
                c.prepare_cached("DELETE FROM temp.vanished WHERE push = ?1 AND path = ?2")?
                    .execute(params![set.0, path])?;
            }
            found = row;
            Ok(())
        });
        found
    }

    /// Takes `path` out of `set` (it is back on disk: not a source, not to be deleted).
    pub fn keep_vanished(&mut self, set: VanishedSet, path: &str) {
        self.write(|c| {
            c.prepare_cached("DELETE FROM temp.vanished WHERE push = ?1 AND path = ?2")?
                .execute(params![set.0, path])?;
            Ok(())
        });
    }

    /// [`StateStore::page`] of the files left in `set` that the state still knows.
    pub fn vanished_page(&self, set: VanishedSet, after: Option<&str>, limit: usize) -> Vec<(String, Entry)> {
        if !self.filled.contains(&set.0) {
            return Vec::new();
        }
        self.with(|c| {
            c.prepare_cached(&format!(
                "SELECT f.path, {FILES_ENTRY_COLUMNS} FROM temp.vanished v JOIN files f ON f.path = v.path \
                 WHERE v.push = ?1 AND (?2 IS NULL OR v.path > ?2) ORDER BY v.path LIMIT ?3"
            ))?
            .query_map(params![set.0, after, limit], |r| Ok((r.get(0)?, read_entry(r, 1)?)))?
            .collect()
        })
        .unwrap_or_default()
    }

    /// Drops `set`.
    pub fn drop_vanished(&mut self, set: VanishedSet) {
        if !self.filled.remove(&set.0) {
            return;
        }
        self.write(|c| {
            c.prepare_cached("DELETE FROM temp.vanished WHERE push = ?1")?.execute([set.0])?;
            Ok(())
        });
    }

    /// Drops every set (what a push that failed half-way left).
    pub fn clear_vanished(&mut self) {
        self.filled.clear();
        self.write(|c| c.execute_batch("DELETE FROM temp.vanished"));
    }

    /// How many files are in sync, and their bytes.
    pub fn totals(&self) -> (usize, u64) {
        self.with(|c| {
            c.query_row("SELECT count(*), coalesce(sum(size), 0) FROM files", [], |r| Ok((r.get(0)?, r.get(1)?)))
        })
        .unwrap_or((0, 0))
    }

    pub fn last_seq(&self) -> i64 {
        self.last_seq
    }

    pub fn advance(&mut self, seq: i64) {
        if seq > self.last_seq {
            self.last_seq = seq;
            self.write(|c| set_meta(c, "last_seq", seq));
        }
    }

    /// Moves `last_seq` to our own commit `seq` if it directly follows: nothing can have been missed.
    pub fn advance_past_own(&mut self, seq: i64) {
        if seq == self.last_seq + 1 {
            self.advance(seq);
        }
    }

    fn mark(&mut self, kind: Mark, path: &str, on: bool) -> bool {
        let mut changed = false;
        self.write(|c| {
            let sql = if on {
                "INSERT OR IGNORE INTO marks (kind, path) VALUES (?1, ?2)"
            } else {
                "DELETE FROM marks WHERE kind = ?1 AND path = ?2"
            };
            changed = c.prepare_cached(sql)?.execute(params![kind as i64, path])? > 0;
            Ok(())
        });
        changed
    }

    pub fn mark_pending(&mut self, path: &str, pending: bool) {
        self.mark(Mark::Pending, path, pending);
    }

    pub fn add_conflict(&mut self, path: &str) {
        self.mark(Mark::Conflict, path, true);
    }

    /// Records a viewer's local edit; `true` the first time (report it then only).
    pub fn keep_local(&mut self, path: &str) -> bool {
        self.mark(Mark::LocalOnly, path, true)
    }

    /// Commits what changed since the last save, in one transaction. A write that failed since
    /// then rolls all of it back and is the error.
    pub fn save(&mut self) -> Result<(), HomeError> {
        let inner = self.inner.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = inner.failed.take() {
            if inner.in_tx {
                let _ = inner.conn.execute_batch("ROLLBACK");
                inner.in_tx = false;
            }
            return Err(state_error(&self.path, e));
        }
        if inner.in_tx {
            let committed = inner.conn.execute_batch("COMMIT");
            inner.in_tx = false;
            if let Err(e) = committed {
                let _ = inner.conn.execute_batch("ROLLBACK");
                return Err(state_error(&self.path, e));
            }
        }
        Ok(())
    }
}

/// A state's figures, marks and identity, for `status`.
fn summary(conn: &Connection) -> rusqlite::Result<FolderState> {
    let (files, bytes): (i64, i64) =
        conn.query_row("SELECT count(*), coalesce(sum(size), 0) FROM files", [], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let mut state = FolderState {
        workspace_id: get_meta::<i64>(conn, "workspace_id")?.map(WorkspaceId),
        root: get_meta::<String>(conn, "root")?.map(PathBuf::from),
        last_seq: get_meta(conn, "last_seq")?.unwrap_or(0),
        files: usize::try_from(files).unwrap_or(0),
        bytes: u64::try_from(bytes).unwrap_or(0),
        ..FolderState::default()
    };
    let mut marks = conn.prepare("SELECT kind, path FROM marks")?;
    for row in marks.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))? {
        let (kind, p) = row?;
        match kind {
            k if k == Mark::Pending as i64 => state.pending.insert(p),
            k if k == Mark::Conflict as i64 => state.conflicts.insert(p),
            _ => state.local_only.insert(p),
        };
    }
    Ok(state)
}

pub fn parse_hex(s: &str) -> Option<Hash> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
#[path = "state_tests.rs"]
pub(crate) mod tests;

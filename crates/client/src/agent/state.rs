//! What the agent knows about one linked folder, kept across restarts: for
//! every path in sync, the server version it matches and what the local file
//! looked like then (hash, size, mtime, mode); and the last journal seq applied.
//!
//! A path whose file still has the recorded size and mtime is not read again;
//! one whose hash still matches is in sync. So a restart re-uploads and
//! re-downloads nothing that was already in sync.
//!
//! **Invariant:** an entry is written only after the local file and the server
//! agree on it (after a download is renamed into place, or an upload is
//! committed), and `last_seq` only moves forward after every change up to it
//! has been applied. A crash in between makes the agent redo work, never skip it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use filesync_core::chunking::{ChunkRef, Hash};
use filesync_core::WorkspaceId;

use crate::home::{read_json, write_json, HomeError};

/// One file as last agreed with the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The server's version of the path (the seq that made it).
    pub version: i64,
    #[serde(with = "hex_hash")]
    pub hash: Hash,
    pub size: u64,
    /// Local modification time, milliseconds since the epoch, as last seen on disk.
    pub mtime_ms: i64,
    pub mode: u32,
    /// The chunks of the content, so downloads can reuse them (offsets follow from the lengths).
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "chunk_list")]
    pub chunks: Vec<ChunkRef>,
}

/// The whole state of a linked folder.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderState {
    pub workspace_id: Option<WorkspaceId>,
    /// The folder this state describes; a state never carries over to another folder.
    #[serde(default)]
    pub root: Option<PathBuf>,
    /// Every journal change up to this seq has been applied here.
    pub last_seq: i64,
    pub files: BTreeMap<String, Entry>,
    /// Conflict copies this agent created or received, for `filesync status`.
    #[serde(default)]
    pub conflicts: BTreeSet<String>,
    /// Local edits not uploaded because the role is viewer; each is reported once.
    #[serde(default)]
    pub local_only: BTreeSet<String>,
    /// Paths changed locally and not yet accepted by the server (for `status`).
    #[serde(default)]
    pub pending: BTreeSet<String>,
}

/// The state of one folder and the file that keeps it.
#[derive(Debug)]
pub struct StateStore {
    path: PathBuf,
    pub state: FolderState,
    dirty: bool,
}

impl StateStore {
    /// Loads the state, or starts empty. A damaged file is an error, never silently reset:
    /// starting over would turn every local file into an upload and every deletion into a download.
    pub fn load(path: &Path, ws: WorkspaceId, root: &Path) -> Result<StateStore, HomeError> {
        let mut state: FolderState = read_json(path)?.unwrap_or_default();
        if state.workspace_id != Some(ws) || state.root.as_deref() != Some(root) {
            // A state for another workspace or folder (the link changed): start over. Reusing it
            // would make every file it lists look deleted here.
            state = FolderState { workspace_id: Some(ws), root: Some(root.to_path_buf()), ..FolderState::default() };
        }
        Ok(StateStore { path: path.to_path_buf(), state, dirty: false })
    }

    /// Reads the state without creating anything (for `status`).
    pub fn peek(path: &Path) -> Result<Option<FolderState>, HomeError> {
        read_json(path)
    }

    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.state.files.get(path)
    }

    pub fn set(&mut self, path: &str, entry: Entry) {
        self.state.pending.remove(path);
        self.state.local_only.remove(path);
        self.state.files.insert(path.to_owned(), entry);
        self.dirty = true;
    }

    pub fn remove(&mut self, path: &str) -> Option<Entry> {
        self.state.pending.remove(path);
        self.state.local_only.remove(path);
        self.dirty = true;
        self.state.files.remove(path)
    }

    /// Paths equal to `dir` or under `dir/`.
    pub fn under(&self, dir: &str) -> Vec<String> {
        let prefix = format!("{dir}/");
        let exact = self.state.files.contains_key(dir).then(|| dir.to_owned());
        let inside = self.state.files.range(prefix.clone()..).take_while(|(p, _)| p.starts_with(&prefix));
        exact.into_iter().chain(inside.map(|(p, _)| p.clone())).collect()
    }

    pub fn advance(&mut self, seq: i64) {
        if seq > self.state.last_seq {
            self.state.last_seq = seq;
            self.dirty = true;
        }
    }

    /// Moves `last_seq` to our own commit `seq` if it directly follows: nothing can have been missed.
    pub fn advance_past_own(&mut self, seq: i64) {
        if seq == self.state.last_seq + 1 {
            self.advance(seq);
        }
    }

    pub fn mark_pending(&mut self, path: &str, pending: bool) {
        let changed =
            if pending { self.state.pending.insert(path.to_owned()) } else { self.state.pending.remove(path) };
        self.dirty |= changed;
    }

    pub fn add_conflict(&mut self, path: &str) {
        self.dirty |= self.state.conflicts.insert(path.to_owned());
    }

    /// Records a viewer's local edit; `true` the first time (report it then only).
    pub fn keep_local(&mut self, path: &str) -> bool {
        let first = self.state.local_only.insert(path.to_owned());
        self.dirty |= first;
        first
    }

    /// Writes the state if it changed since the last save.
    pub fn save(&mut self) -> Result<(), HomeError> {
        if self.dirty {
            write_json(&self.path, &self.state, false)?;
            self.dirty = false;
        }
        Ok(())
    }
}

mod hex_hash {
    use serde::{Deserialize, Deserializer, Serializer};

    use filesync_core::chunking::{hex, Hash};

    pub fn serialize<S: Serializer>(h: &Hash, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex(h))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Hash, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_hex(&s).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}

/// Chunk lists are stored as `"<hex hash>:<len>"` strings: compact and readable.
mod chunk_list {
    use serde::{Deserialize, Deserializer, Serializer};

    use filesync_core::chunking::{hex, ChunkRef};

    pub fn serialize<S: Serializer>(chunks: &[ChunkRef], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(chunks.iter().map(|c| format!("{}:{}", hex(&c.hash), c.len)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ChunkRef>, D::Error> {
        let raw = Vec::<String>::deserialize(d)?;
        raw.iter()
            .map(|r| {
                let (h, l) = r.split_once(':')?;
                Some(ChunkRef { hash: super::parse_hex(h)?, len: l.parse().ok()? })
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| serde::de::Error::custom("expected \"<hash>:<len>\" chunk records"))
    }
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
mod tests {
    use super::*;

    fn entry(v: i64) -> Entry {
        Entry {
            version: v,
            hash: [v as u8; 32],
            size: 3,
            mtime_ms: 1,
            mode: 0o644,
            chunks: vec![ChunkRef { hash: [9; 32], len: 3 }],
        }
    }

    #[test]
    fn state_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/ws-1.json");
        let root = Path::new("/r");
        let mut s = StateStore::load(&path, WorkspaceId(1), root).unwrap();
        s.set("a.txt", entry(3));
        s.advance(7);
        s.advance(5);
        s.save().unwrap();
        let again = StateStore::load(&path, WorkspaceId(1), root).unwrap();
        assert_eq!(again.state.last_seq, 7);
        assert_eq!(again.get("a.txt"), Some(&entry(3)));
        // Another workspace's or another folder's state is not reused.
        assert!(StateStore::load(&path, WorkspaceId(2), root).unwrap().state.files.is_empty());
        assert!(StateStore::load(&path, WorkspaceId(1), Path::new("/other")).unwrap().state.files.is_empty());
    }

    #[test]
    fn a_damaged_state_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ws-1.json");
        std::fs::write(&path, b"{\"last_seq\": \"x\"").unwrap();
        assert!(StateStore::load(&path, WorkspaceId(1), Path::new("/r")).is_err());
    }

    #[test]
    fn under_lists_a_directory_and_nothing_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = StateStore::load(&dir.path().join("s.json"), WorkspaceId(1), dir.path()).unwrap();
        for p in ["a/x", "a/y/z", "a-b", "a.txt", "ab/c", "a"] {
            s.set(p, entry(1));
        }
        assert_eq!(s.under("a"), vec!["a", "a/x", "a/y/z"]);
        assert_eq!(s.under("a/y"), vec!["a/y/z"]);
    }
}

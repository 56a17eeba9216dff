//! `storage migrate`: upgrades a store written one file per chunk to packs, and
//! moves a store to another backend (a directory to S3, say).
//!
//! 1. Every pack the index records is copied from the source backend unless the
//!    target has it (a move; nothing to do in place). Pack ids are global, so
//!    the index stays valid as it is.
//! 2. Loose chunks (index rows without a pack) are read from the source
//!    directory, verified, appended to new packs in the target, and each pack
//!    is sealed, then recorded together with the new locations of its chunks in
//!    one transaction. A loose file is deleted only after that commit, and only
//!    when upgrading in place. Running it again continues where it stopped;
//!    daemons may keep serving meanwhile (a chunk is readable at its old place
//!    until its new one is committed).

use std::path::PathBuf;

use super::{legacy, Backend, ChunkStore, StorageError};
use crate::chunking::{hex, Hash};
use crate::db::journal::NewChunk;
use crate::db::packs;

/// Loose chunks read per step (one index query).
const STEP: i64 = 256;

/// What [`migrate`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// Packs copied from the source backend.
    pub packs_copied: u64,
    /// Loose chunks moved into packs, and the packs written for them.
    pub chunks_packed: u64,
    pub packs_written: u64,
    /// Loose chunks the index names whose file is missing or corrupt (left as they are).
    pub unreadable: Vec<String>,
}

/// Migrates into `to`. `from` is where the store is now (`None`: `to` itself, an in-place upgrade
/// of a directory store).
pub async fn migrate(to: &ChunkStore, from: Option<&Backend>) -> Result<Migrated, StorageError> {
    let mut done = Migrated::default();
    if let Some(from) = from {
        let ids = to.db.run(packs::all_packs).await?;
        for id in ids {
            if to.backend.copy_pack_from(from, &id).await? {
                done.packs_copied += 1;
            }
        }
    }
    let in_place = from.is_none();
    let loose_root: Option<PathBuf> = from.unwrap_or(&to.backend).loose_root().map(|p| p.to_path_buf());
    let mut after: Option<Hash> = None;
    loop {
        let cursor = after;
        let step = to.db.run(move |c| packs::loose_chunks(c, cursor.as_ref(), STEP)).await?;
        let Some(last) = step.last() else { break };
        after = Some(last.0);
        let Some(root) = loose_root.clone() else {
            return Err(StorageError::Config(
                "the index names chunks stored one file per chunk, but the source is not a directory".into(),
            ));
        };
        let writer = std::sync::Arc::new(to.writer());
        let (moved, unreadable) = {
            let writer = writer.clone();
            let root = root.clone();
            tokio::task::spawn_blocking(move || pack_step(&root, &writer, step)).await??
        };
        done.unreadable.extend(unreadable);
        if moved.is_empty() {
            continue;
        }
        // One pack per step: ~16 MiB at the average chunk size (PACK_TARGET), at most STEP × MAX_CHUNK.
        let Some(pack) = writer.take() else { continue };
        let sealed = to.seal(pack).await?;
        let rows = moved.clone();
        to.db
            .write(move |c| {
                packs::record_pack(c, sealed.id, sealed.size)?;
                packs::move_into_pack(c, &rows)
            })
            .await?;
        done.packs_written += 1;
        done.chunks_packed += moved.len() as u64;
        if in_place {
            let hashes: Vec<Hash> = moved.iter().map(|c| c.hash).collect();
            tokio::task::spawn_blocking(move || hashes.iter().try_for_each(|h| legacy::remove_loose(&root, h)))
                .await??;
        }
    }
    Ok(done)
}

/// Reads and appends one step's loose chunks. Blocking.
fn pack_step(
    root: &std::path::Path,
    writer: &super::PackWriter,
    step: Vec<(Hash, u32)>,
) -> Result<(Vec<NewChunk>, Vec<String>), StorageError> {
    let mut moved = Vec::with_capacity(step.len());
    let mut unreadable = Vec::new();
    for (hash, size) in step {
        let data = match legacy::read_loose(root, &hash) {
            Ok(data) => data,
            Err(StorageError::NotFound(_) | StorageError::Corrupt(_)) => {
                unreadable.push(hex(&hash));
                continue;
            }
            Err(e) => return Err(e),
        };
        let appended = writer.append(&hash, data)?;
        moved.push(NewChunk { hash, size, stored_size: u64::from(appended.stored_size), at: Some(appended.at) });
    }
    Ok((moved, unreadable))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use object_store::memory::InMemory;

    use super::*;
    use crate::chunking::hash;
    use crate::db::accounts::{self, NewUser};
    use crate::db::journal;
    use crate::db::packs::Location;
    use crate::db::Db;
    use crate::{UserId, WorkspaceId};

    fn setup(dir: &std::path::Path) -> (Db, WorkspaceId) {
        let db = Db::open(&format!("sqlite://{}", dir.join("db.sqlite").display()), 2).unwrap();
        let ws = db
            .write_blocking(|c| {
                let new = NewUser {
                    first_name: "A",
                    last_name: "B",
                    username: "a",
                    email: "a@example.com",
                    password_hash: "x",
                };
                let user = accounts::create_user(c, &new)?;
                Ok(WorkspaceId(accounts::create_workspace(c, UserId(user.id), "w")?.id))
            })
            .unwrap();
        (db, ws)
    }

    fn chunk(i: u32) -> Vec<u8> {
        format!("chunk {i} ").repeat(100 + i as usize).into_bytes()
    }

    /// A directory store holding loose chunks (an earlier release's) and one pack moves to an
    /// object store: packs copied, loose chunks packed, every chunk readable there; the source keeps
    /// its files. Then the directory upgrades in place: loose files gone, every chunk packed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_directory_moves_to_an_object_store_and_upgrades_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let (db, ws) = setup(dir.path());
        let root = dir.path().join("chunks");
        let local = ChunkStore::new(db.clone(), Backend::dir(&root).unwrap());
        let loose: Vec<Vec<u8>> = (0..300).map(chunk).collect();
        for data in &loose {
            let h = hash(data);
            let stored_size = legacy::write_loose(&root, &h, data.clone()).unwrap();
            let row = NewChunk { hash: h, size: data.len() as u32, stored_size, at: None };
            db.write_blocking(|c| journal::record_chunk(c, ws, &row)).unwrap();
        }
        let packed = chunk(1000);
        let writer = local.writer();
        let appended = writer.append(&hash(&packed), packed.clone()).unwrap();
        let sealed = local.seal(writer.take().unwrap()).await.unwrap();
        let row = NewChunk {
            hash: hash(&packed),
            size: packed.len() as u32,
            stored_size: appended.stored_size.into(),
            at: Some(appended.at),
        };
        db.write_blocking(|c| {
            packs::record_pack(c, sealed.id, sealed.size)?;
            journal::record_chunks(c, ws, &[row])
        })
        .unwrap();
        let all: Vec<Vec<u8>> = loose.iter().chain([&packed]).cloned().collect();
        for data in &all {
            assert_eq!(&local.get(&hash(data)).await.unwrap(), data, "read in place");
        }

        let remote = ChunkStore::new(db.clone(), Backend::objects(Arc::new(InMemory::new()), "memory"));
        let moved = migrate(&remote, Some(local.backend())).await.unwrap();
        assert_eq!((moved.packs_copied, moved.chunks_packed, moved.packs_written), (1, 300, 2));
        assert!(moved.unreadable.is_empty());
        for data in &all {
            assert_eq!(&remote.get(&hash(data)).await.unwrap(), data, "read from the object store");
        }
        assert!(legacy::loose_path(&root, &hash(&loose[0])).exists(), "a move leaves the source alone");
        let again = migrate(&remote, Some(local.backend())).await.unwrap();
        assert_eq!(again, Migrated::default());

        // In place: a fresh index as the old release left it, then the upgrade.
        let dir2 = tempfile::tempdir().unwrap();
        let (db2, ws2) = setup(dir2.path());
        let store = ChunkStore::new(db2.clone(), Backend::dir(&root).unwrap());
        for data in &loose {
            let row = NewChunk { hash: hash(data), size: data.len() as u32, stored_size: 1, at: None };
            db2.write_blocking(|c| journal::record_chunk(c, ws2, &row)).unwrap();
        }
        std::fs::write(legacy::loose_path(&root, &hash(&loose[7])), b"\x00torn").unwrap();
        let upgraded = migrate(&store, None).await.unwrap();
        assert_eq!((upgraded.chunks_packed, upgraded.unreadable.len()), (299, 1));
        let hashes: Vec<_> = loose.iter().map(|d| hash(d)).collect();
        let located = db2.run(move |c| packs::locate(c, &hashes)).await.unwrap();
        for (i, data) in loose.iter().enumerate() {
            let h = hash(data);
            if i == 7 {
                assert_eq!(located[&h], Location::Loose);
                continue;
            }
            assert!(matches!(located[&h], Location::Packed { .. }));
            assert!(!legacy::loose_path(&root, &h).exists());
            assert_eq!(&store.get(&h).await.unwrap(), data);
        }
    }
}

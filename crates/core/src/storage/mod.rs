//! Chunk storage: content-addressed, verified, in pack files on a local
//! directory or an S3-compatible object store, indexed in the database
//! (`docs/storage.md`).
//!
//! - [`encoding`] (`crate::encoding`, re-exported): a chunk's stored form (raw or zstd), verified
//!   both ways, the same at rest and on the wire;
//! - [`pack`]: the pack byte layout and the [`PackWriter`] that spools an
//!   upload's chunks into packs;
//! - [`backend`]: where packs live (directory or `object_store`), built from
//!   the configuration, sealing (fsync + rename / PUT) and ranged reads;
//! - [`legacy`]: loose chunks, one file per chunk, as earlier releases stored
//!   them, read in place until [`migrate`] packs them;
//! - the index is `db::packs`.
//!
//! **Architecture Invariant:** nothing is stored unless its bytes hash to the
//! name it is stored under, and nothing is returned decoded unless it still
//! does; [`ChunkStore::read_many_stored`] hands out stored forms undecoded
//! (header checked against the index) only for a peer that decodes and
//! verifies them itself (the node's clients).
//! A pack is durable (fsynced and renamed into place, or its PUT
//! acknowledged) before the transaction that records it and the chunks in it
//! commits; the database, not the store, decides which chunks exist, so
//! correctness never rests on a conditional PUT: pack keys are random and
//! never reused, a chunk stored twice leaves dead bytes in one pack, and its
//! index row is insert-if-absent.
//!
//! The API is async (object_store is): reads and seals await; CPU and file
//! work (encoding, appending, decoding) runs on the blocking pool.

pub mod backend;
mod error;
pub mod legacy;
pub mod migrate;
pub mod pack;
pub mod requests;

use std::collections::HashMap;
use std::sync::Arc;

use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryStreamExt};

pub use crate::encoding;
pub use backend::Backend;
pub use error::StorageError;
pub use pack::{OpenPack, PackWriter, PACK_TARGET};
pub use requests::StorageRequests;

use crate::chunking::{hex, Hash, MAX_CHUNK};
use crate::config::Config;
use crate::db::packs::{self, Location, PackId};
use crate::db::Db;
use crate::encoding::Encoded;

/// Hashes located with one index query when many chunks are read in order.
const LOCATE_BATCH: usize = 256;

/// What storing one chunk did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// Bytes the chunk takes at rest (its pack entry).
    pub stored_size: u64,
    /// False if the chunk was already stored and left untouched.
    pub written: bool,
}

/// A pack made durable by [`ChunkStore::seal`], ready to be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedPack {
    pub id: PackId,
    pub size: u64,
}

/// The chunk store: packs in a [`Backend`], their index in the database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ChunkStore {
    db: Db,
    backend: Arc<Backend>,
}

/// The configured chunk store, built once per process (`Deps` calls this).
pub async fn open(config: &Config, db: Db) -> Result<ChunkStore, StorageError> {
    let config = config.clone();
    let backend = tokio::task::spawn_blocking(move || Backend::from_config(&config)).await??;
    Ok(ChunkStore::new(db, backend))
}

impl ChunkStore {
    pub fn new(db: Db, backend: Backend) -> ChunkStore {
        ChunkStore { db, backend: Arc::new(backend) }
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// A writer for one upload's chunks.
    pub fn writer(&self) -> PackWriter {
        PackWriter::new(self.backend.spool_dir())
    }

    /// Makes `pack` durable under its key. Record it (`db::packs::record_pack`) only after this.
    pub async fn seal(&self, pack: OpenPack) -> Result<SealedPack, StorageError> {
        let id = pack.id;
        let size = self.backend.seal(pack).await?;
        Ok(SealedPack { id, size })
    }

    /// The chunk's bytes, verified: one index lookup and one ranged read.
    pub async fn get(&self, hash: &Hash) -> Result<Vec<u8>, StorageError> {
        let wanted = [*hash];
        let mut found = self.db.run(move |c| packs::locate(c, &wanted)).await?;
        self.read_located(*hash, found.remove(hash)).await
    }

    /// The chunks `hashes`, in order, verified; `ahead` reads in flight, one index query per
    /// [`LOCATE_BATCH`] chunks. The stream ends after the first error.
    pub fn read_many(
        &self,
        hashes: Vec<Hash>,
        ahead: usize,
    ) -> BoxStream<'static, Result<(Hash, Vec<u8>), StorageError>> {
        self.read_stream(hashes, ahead, |store, hash, location| async move { store.read_located(hash, location).await })
    }

    /// The stored forms of the chunks `hashes`, in order, as [`ChunkStore::read_many`] reads them
    /// but not decoded: each entry's header is checked against the index, its payload is not
    /// decompressed nor hashed here. For a peer that decodes and verifies every chunk itself (the
    /// node sends these to clients, protocol 5), so the node spends no CPU on them.
    pub fn read_many_stored(
        &self,
        hashes: Vec<Hash>,
        ahead: usize,
    ) -> BoxStream<'static, Result<(Hash, Encoded), StorageError>> {
        self.read_stream(hashes, ahead, |store, hash, location| async move {
            store.read_located_stored(hash, location).await
        })
    }

    fn read_stream<T, F, Fut>(
        &self,
        hashes: Vec<Hash>,
        ahead: usize,
        read: F,
    ) -> BoxStream<'static, Result<(Hash, T), StorageError>>
    where
        T: Send + 'static,
        F: Fn(ChunkStore, Hash, Option<Location>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, StorageError>> + Send + 'static,
    {
        let batches: Vec<Vec<Hash>> = hashes.chunks(LOCATE_BATCH).map(<[Hash]>::to_vec).collect();
        let locator = self.clone();
        let reader = self.clone();
        let mut failed = false;
        stream::iter(batches)
            .then(move |batch| {
                let db = locator.db.clone();
                async move {
                    let wanted = batch.clone();
                    let found: HashMap<Hash, Location> = db.run(move |c| packs::locate(c, &wanted)).await?;
                    // A hash may repeat (a run of zeros is one chunk many times): look up, never take.
                    Ok::<_, StorageError>(
                        batch.into_iter().map(move |h| (h, found.get(&h).copied())).collect::<Vec<_>>(),
                    )
                }
            })
            .map_ok(|located| stream::iter(located.into_iter().map(Ok::<_, StorageError>)))
            .try_flatten()
            .map(move |item| {
                let read = item.map(|(hash, location)| (hash, read(reader.clone(), hash, location)));
                async move {
                    let (hash, read) = read?;
                    read.await.map(|data| (hash, data))
                }
            })
            .buffered(ahead.max(1))
            .take_while(move |r| {
                let go = !failed;
                failed |= r.is_err();
                futures::future::ready(go)
            })
            .boxed()
    }

    async fn read_located(&self, hash: Hash, location: Option<Location>) -> Result<Vec<u8>, StorageError> {
        let stored = self.read_located_stored(hash, location).await?;
        tokio::task::spawn_blocking(move || {
            encoding::decode(&hash, stored.format, &stored.payload, MAX_CHUNK)
                .map_err(|_| StorageError::Corrupt(hex(&hash)))
        })
        .await?
    }

    async fn read_located_stored(&self, hash: Hash, location: Option<Location>) -> Result<Encoded, StorageError> {
        match location {
            None => Err(StorageError::NotFound(hex(&hash))),
            Some(Location::Packed { at, stored_size }) => {
                let entry = self.backend.read(&at.pack, at.offset..at.offset + u64::from(stored_size)).await?;
                pack::read_entry_stored(&hash, &at, &entry)
            }
            Some(Location::Loose) => match self.backend.loose_root() {
                Some(root) => {
                    let root = root.to_path_buf();
                    tokio::task::spawn_blocking(move || legacy::read_loose_stored(&root, &hash)).await?
                }
                // Loose chunks exist only in a directory; `storage migrate` packs them before a move.
                None => Err(StorageError::NotFound(hex(&hash))),
            },
        }
    }
}

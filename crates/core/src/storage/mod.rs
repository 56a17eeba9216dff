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
pub mod coalesce;
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

    /// Makes `pack` durable under its key, its row reserved first (`db::packs::reserve_pack`: no
    /// object without a row, garbage collection's orphans are only crashes' leftovers). Record it
    /// (`db::packs::record_pack`) only after this.
    pub async fn seal(&self, pack: OpenPack) -> Result<SealedPack, StorageError> {
        let id = pack.id;
        self.db.write(move |c| packs::reserve_pack(c, id)).await?;
        let size = self.backend.seal(pack).await?;
        Ok(SealedPack { id, size })
    }

    /// The chunk's bytes, verified: one index lookup and one ranged read.
    pub async fn get(&self, hash: &Hash) -> Result<Vec<u8>, StorageError> {
        let wanted = [*hash];
        let mut found = self.db.run(move |c| packs::locate(c, &wanted)).await?;
        self.read_located(*hash, found.remove(hash)).await
    }

    /// The chunks `hashes`, in order, verified, read as [`ChunkStore::read_many_stored`] reads
    /// them and decoded `ahead` at a time on the blocking pool. The stream ends after the first
    /// error.
    pub fn read_many(
        &self,
        hashes: Vec<Hash>,
        ahead: usize,
    ) -> BoxStream<'static, Result<(Hash, Vec<u8>), StorageError>> {
        let decoded = self.read_many_stored(hashes, ahead).map(|item| async move {
            let (hash, stored) = item?;
            tokio::task::spawn_blocking(move || decode(hash, stored)).await?.map(|data| (hash, data))
        });
        until_error(decoded.buffered(ahead.max(1)))
    }

    /// The stored forms of the chunks `hashes`, in order, not decoded: each entry's header is
    /// checked against the index, its payload is not decompressed nor hashed here. For a peer that
    /// decodes and verifies every chunk itself (the node sends these to clients, protocol 5), so
    /// the node spends no CPU on them. One index query per [`LOCATE_BATCH`] chunks; chunks that
    /// lie together in a pack are fetched with one ranged read ([`coalesce`]: at most
    /// [`coalesce::MAX_SPAN`] bytes each), `ahead` reads in flight. The stream ends after the
    /// first error.
    pub fn read_many_stored(
        &self,
        hashes: Vec<Hash>,
        ahead: usize,
    ) -> BoxStream<'static, Result<(Hash, Encoded), StorageError>> {
        let batches: Vec<Vec<Hash>> = hashes.chunks(LOCATE_BATCH).map(<[Hash]>::to_vec).collect();
        let locator = self.clone();
        let reader = self.clone();
        let located = stream::iter(batches)
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
            .try_flatten();
        // Group the located chunks into reads; `None` marks the end, where the open read is done.
        let reads = located
            .map(Some)
            .chain(stream::once(async { None }))
            .scan(coalesce::Coalescer::default(), |coalescer, item| {
                let reads: Vec<Result<coalesce::Read, StorageError>> = match item {
                    Some(Ok((hash, location))) => coalescer.push(hash, location).into_iter().map(Ok).collect(),
                    Some(Err(e)) => coalescer.finish().into_iter().map(Ok).chain([Err(e)]).collect(),
                    None => coalescer.finish().into_iter().map(Ok).collect(),
                };
                futures::future::ready(Some(stream::iter(reads)))
            })
            .flatten();
        let chunks = reads
            .map(move |read| {
                let store = reader.clone();
                async move {
                    match read {
                        Ok(read) => store.read_coalesced(read).await,
                        Err(e) => vec![Err(e)],
                    }
                }
            })
            .buffered(ahead.max(1))
            .flat_map(stream::iter);
        until_error(chunks)
    }

    /// The chunks of one read, in order: one ranged read for a span, split and checked entry by entry.
    async fn read_coalesced(&self, read: coalesce::Read) -> Vec<Result<(Hash, Encoded), StorageError>> {
        match read {
            coalesce::Read::Span { pack, start, end, entries } => match self.backend.read(&pack, start..end).await {
                Ok(bytes) => coalesce::Read::split(start, entries, &bytes),
                Err(e) => vec![Err(e)],
            },
            coalesce::Read::One(hash, location) => {
                vec![self.read_located_stored(hash, location).await.map(|stored| (hash, stored))]
            }
        }
    }

    async fn read_located(&self, hash: Hash, location: Option<Location>) -> Result<Vec<u8>, StorageError> {
        let stored = self.read_located_stored(hash, location).await?;
        tokio::task::spawn_blocking(move || decode(hash, stored)).await?
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

/// A stored chunk's bytes, verified against its name. Blocking.
fn decode(hash: Hash, stored: Encoded) -> Result<Vec<u8>, StorageError> {
    encoding::decode(&hash, stored.format, &stored.payload, MAX_CHUNK).map_err(|_| StorageError::Corrupt(hex(&hash)))
}

/// `items` up to and including the first error.
fn until_error<T: Send + 'static>(
    items: impl futures::Stream<Item = Result<T, StorageError>> + Send + 'static,
) -> BoxStream<'static, Result<T, StorageError>> {
    let mut failed = false;
    items
        .take_while(move |r| {
            let go = !failed;
            failed |= r.is_err();
            futures::future::ready(go)
        })
        .boxed()
}

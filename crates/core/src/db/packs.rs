//! The pack index (`docs/storage.md`): which pack objects exist and where in
//! them each chunk is. The database decides what exists: a pack is recorded
//! (`packs`) in the same transaction as the chunks that point into it, after
//! its object is durable; the first location recorded for a hash wins.

use std::collections::{HashMap, HashSet};

use diesel::prelude::*;

use super::journal::NewChunk;
use super::schema::{chunks, packs};
use super::{now, DbConn, DbError};
use crate::chunking::Hash;

/// Hashes per `IN (...)` list, well under every backend's parameter limit.
const IN_BATCH: usize = 500;

/// A pack's name: 128 random bits, so no two writers (nodes, uploads) ever pick the same object key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackId(pub [u8; 16]);

impl PackId {
    pub fn random() -> PackId {
        PackId(rand::random())
    }

    /// Lower-case hex, the pack's object name.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Where a chunk's entry is in a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedAt {
    pub pack: PackId,
    /// Offset of the entry (its header) in the pack.
    pub offset: u64,
    /// The payload's format byte (raw or zstd).
    pub format: u8,
}

/// Where the bytes of a recorded chunk are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// An entry of `stored_size` bytes (header and payload) in a pack.
    Packed { at: PackedAt, stored_size: u32 },
    /// One file per chunk, as releases before packs stored it.
    Loose,
}

/// Reserves the row of a pack about to be sealed (size 0: not recorded yet), in its own
/// transaction before the object is written, so that every pack object the store holds has a row:
/// garbage collection deletes an object without a row as an orphan, and a reservation only once it
/// is older than its grace period (the writer crashed), after which [`record_pack`] refuses.
pub fn reserve_pack(conn: &mut DbConn, id: PackId) -> Result<(), DbError> {
    diesel::insert_into(packs::table)
        .values((packs::id.eq(id.0.to_vec()), packs::size.eq(0i64), packs::created_at.eq(now())))
        .execute(conn)?;
    Ok(())
}

/// Records a pack whose object is durable (reserved by [`reserve_pack`] before it was sealed). Run
/// in the transaction that records its chunks. A reservation garbage collection deleted (a writer
/// slower than the grace period) is [`DbError::Unavailable`]: nothing is recorded, the upload is
/// sent again.
pub fn record_pack(conn: &mut DbConn, id: PackId, size: u64) -> Result<(), DbError> {
    let recorded = diesel::update(packs::table.filter(packs::id.eq(id.0.to_vec())).filter(packs::size.eq(0i64)))
        .set((packs::size.eq(i64::try_from(size).unwrap_or(i64::MAX)), packs::created_at.eq(now())))
        .execute(conn)?;
    if recorded != 1 {
        return Err(DbError::Unavailable(format!(
            "pack {} was collected before it was recorded; send the upload again",
            id.hex()
        )));
    }
    Ok(())
}

type LocationRow = (Vec<u8>, i32, Option<Vec<u8>>, Option<i64>, Option<i16>);

fn location_of(row: LocationRow) -> Result<(Hash, Location), DbError> {
    let bad = || DbError::Task("chunks row has an invalid pack location".into());
    let (hash, stored_size, pack, offset, format) = row;
    let hash: Hash = hash.as_slice().try_into().map_err(|_| bad())?;
    let location = match (pack, offset, format) {
        (None, _, _) => Location::Loose,
        (Some(pack), Some(offset), Some(format)) => Location::Packed {
            at: PackedAt {
                pack: PackId(pack.as_slice().try_into().map_err(|_| bad())?),
                offset: u64::try_from(offset).map_err(|_| bad())?,
                format: u8::try_from(format).map_err(|_| bad())?,
            },
            stored_size: u32::try_from(stored_size).map_err(|_| bad())?,
        },
        _ => return Err(bad()),
    };
    Ok((hash, location))
}

/// Where each of `hashes` that is recorded is; a hash never recorded is absent from the map.
pub fn locate(conn: &mut DbConn, hashes: &[Hash]) -> Result<HashMap<Hash, Location>, DbError> {
    let mut found = HashMap::with_capacity(hashes.len());
    for part in hashes.chunks(IN_BATCH) {
        let raw: Vec<Vec<u8>> = part.iter().map(|h| h.to_vec()).collect();
        let rows: Vec<LocationRow> = chunks::table
            .filter(chunks::hash.eq_any(raw))
            .select((chunks::hash, chunks::stored_size, chunks::pack_id, chunks::pack_offset, chunks::format))
            .load(conn)?;
        for row in rows {
            let (hash, location) = location_of(row)?;
            found.insert(hash, location);
        }
    }
    Ok(found)
}

/// Which of `hashes` are recorded (stored durably by someone, in a pack or loose) and not condemned
/// by garbage collection: one query per 500 hashes. An upload stores the others itself; a
/// condemned chunk may lose its row once its grace period is over (`crate::gc`).
pub fn recorded(conn: &mut DbConn, hashes: &[Hash]) -> Result<HashSet<Hash>, DbError> {
    let mut found = HashSet::with_capacity(hashes.len());
    for part in hashes.chunks(IN_BATCH) {
        let raw: Vec<Vec<u8>> = part.iter().map(|h| h.to_vec()).collect();
        let rows: Vec<Vec<u8>> = chunks::table
            .filter(chunks::hash.eq_any(raw))
            .filter(chunks::condemned_at.is_null())
            .select(chunks::hash)
            .load(conn)?;
        for row in rows {
            found
                .insert(row.as_slice().try_into().map_err(|_| DbError::Task("chunks row has an invalid hash".into()))?);
        }
    }
    Ok(found)
}

/// Up to `limit` chunks stored one file per chunk, in hash order after `after`: (hash, length).
pub fn loose_chunks(conn: &mut DbConn, after: Option<&Hash>, limit: i64) -> Result<Vec<(Hash, u32)>, DbError> {
    let mut query = chunks::table.filter(chunks::pack_id.is_null()).into_boxed();
    if let Some(after) = after {
        query = query.filter(chunks::hash.gt(after.to_vec()));
    }
    let rows: Vec<(Vec<u8>, i32)> =
        query.order(chunks::hash.asc()).limit(limit).select((chunks::hash, chunks::size)).load(conn)?;
    rows.into_iter()
        .map(|(h, size)| {
            let hash: Hash =
                h.as_slice().try_into().map_err(|_| DbError::Task("chunks row has an invalid hash".into()))?;
            Ok((hash, u32::try_from(size).unwrap_or(0)))
        })
        .collect()
}

/// Points loose chunks at their new pack entries (run in the transaction that records the pack).
/// A row that has a pack already is left alone.
pub fn move_into_pack(conn: &mut DbConn, moved: &[NewChunk]) -> Result<(), DbError> {
    for c in moved {
        let Some(at) = c.at else { continue };
        diesel::update(chunks::table.filter(chunks::hash.eq(c.hash.to_vec())).filter(chunks::pack_id.is_null()))
            .set((
                chunks::pack_id.eq(Some(at.pack.0.to_vec())),
                chunks::pack_offset.eq(Some(i64::try_from(at.offset).unwrap_or(i64::MAX))),
                chunks::format.eq(Some(i16::from(at.format))),
                chunks::stored_size.eq(i32::try_from(c.stored_size).unwrap_or(i32::MAX)),
            ))
            .execute(conn)?;
    }
    Ok(())
}

/// Every recorded pack id (for copying a store to another backend).
pub fn all_packs(conn: &mut DbConn) -> Result<Vec<PackId>, DbError> {
    let rows: Vec<Vec<u8>> = packs::table.select(packs::id).order(packs::id.asc()).load(conn)?;
    rows.into_iter()
        .map(|r| r.as_slice().try_into().map(PackId).map_err(|_| DbError::Task("packs row has an invalid id".into())))
        .collect()
}

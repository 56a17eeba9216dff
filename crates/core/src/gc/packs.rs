//! Packs: retiring the ones no chunk row points into, rewriting the mostly dead ones, deleting
//! retired ones a grace period after they retired (a reader that located a chunk in one just
//! before keeps working meanwhile).

use std::collections::HashMap;

use diesel::dsl::{exists, not};
use diesel::prelude::*;
use futures::StreamExt;

use super::{GcError, Pass, IN_BATCH};
use crate::chunking::Hash;
use crate::db::packs::{record_pack, PackId};
use crate::db::schema::{chunks, packs};
use crate::db::{DbConn, DbError};
use crate::storage::{pack::Appended, PACK_TARGET};

/// Chunk rows read per query while adding up the live bytes of each pack.
const LIVE_PAGE: i64 = 10_000;

fn pack_id(raw: &[u8]) -> Result<PackId, DbError> {
    raw.try_into().map(PackId).map_err(|_| DbError::Task("a stored pack id is not 16 bytes".into()))
}

/// Recorded packs no chunk row points into, created before the cutoff and not retired yet.
fn empty_packs(conn: &mut DbConn, cutoff: chrono::NaiveDateTime) -> Result<Vec<Vec<u8>>, DbError> {
    Ok(packs::table
        .filter(packs::retired_at.is_null())
        // A reservation (size 0) is not recorded yet: see `delete_abandoned`.
        .filter(packs::size.gt(0i64))
        .filter(packs::created_at.lt(cutoff))
        .filter(not(exists(chunks::table.filter(chunks::pack_id.eq(packs::id.nullable())))))
        .select(packs::id)
        .load(conn)?)
}

/// Retires the packs no chunk row points into (created before the cutoff: an upload records a
/// chunk appended late into the pack it sealed just before, `core::ingest`), and brings back any
/// retired pack a row points into again. How many were retired (dry: would be). Found by plain
/// reads, changed by primary key with the conditions checked again.
pub async fn retire_empty(pass: &Pass) -> Result<u64, GcError> {
    let (cutoff, now) = (pass.cutoff, super::whole_seconds(pass.now));
    let (empty, revived): (Vec<Vec<u8>>, Vec<Vec<u8>>) = pass
        .db
        .run(move |c| {
            let revived = packs::table
                .filter(packs::retired_at.is_not_null())
                .filter(exists(chunks::table.filter(chunks::pack_id.eq(packs::id.nullable()))))
                .select(packs::id)
                .load(c)?;
            Ok((empty_packs(c, cutoff)?, revived))
        })
        .await?;
    if pass.settings.dry_run {
        return Ok(empty.len() as u64);
    }
    pass.check()?;
    let retired = pass
        .db
        .write_read_committed(move |c| {
            for part in revived.chunks(IN_BATCH) {
                diesel::update(packs::table.filter(packs::id.eq_any(part.to_vec())))
                    .set(packs::retired_at.eq(None::<chrono::NaiveDateTime>))
                    .execute(c)?;
            }
            retire_unreferenced(c, &empty, now)
        })
        .await?;
    Ok(retired as u64)
}

/// Live bytes and chunk rows per pack, added up a page of chunk rows at a time.
fn live_bytes(conn: &mut DbConn) -> Result<HashMap<PackId, u64>, DbError> {
    let mut live: HashMap<PackId, u64> = HashMap::new();
    let mut after: Vec<u8> = Vec::new();
    loop {
        let rows: Vec<(Vec<u8>, Option<Vec<u8>>, i32)> = chunks::table
            .filter(chunks::hash.gt(after.clone()))
            .filter(chunks::pack_id.is_not_null())
            .order(chunks::hash.asc())
            .limit(LIVE_PAGE)
            .select((chunks::hash, chunks::pack_id, chunks::stored_size))
            .load(conn)?;
        let Some((last, _, _)) = rows.last() else { return Ok(live) };
        after = last.clone();
        for (_, pack, stored) in rows {
            if let Some(pack) = pack {
                *live.entry(pack_id(&pack)?).or_default() += u64::try_from(stored).unwrap_or(0);
            }
        }
    }
}

/// The packs to rewrite: not retired, older than the cutoff, live bytes under the threshold.
/// (id, size, live bytes), most dead first.
fn victims(conn: &mut DbConn, cutoff: chrono::NaiveDateTime, below: f64) -> Result<Vec<(PackId, u64, u64)>, DbError> {
    let live = live_bytes(conn)?;
    let rows: Vec<(Vec<u8>, i64)> = packs::table
        .filter(packs::retired_at.is_null())
        .filter(packs::created_at.lt(cutoff))
        .select((packs::id, packs::size))
        .load(conn)?;
    let mut out = Vec::new();
    for (id, size) in rows {
        let id = pack_id(&id)?;
        let size = u64::try_from(size).unwrap_or(0);
        let live = live.get(&id).copied().unwrap_or(0);
        // A pack with nothing live is retired, not rewritten.
        if live > 0 && (live as f64) < below * size as f64 {
            out.push((id, size, live));
        }
    }
    out.sort_by_key(|&(_, size, live)| std::cmp::Reverse(size - live.min(size)));
    Ok(out)
}

/// A live chunk of a pack being rewritten: hash, length, and its new entry once copied.
struct Moving {
    hash: Hash,
    from: PackId,
    appended: Appended,
}

/// Rewrites the packs whose live bytes fell below the threshold: their live entries are read
/// (coalesced), verified and appended to new packs of up to [`PACK_TARGET`]; each new pack is
/// sealed, then one transaction records it, points the rows at it and retires the old packs that
/// no row points into any more. Returns the packs rewritten, the live bytes copied and the bytes of
/// the new packs (dry: would be).
pub async fn rewrite(pass: &Pass) -> Result<(u64, u64, u64), GcError> {
    let (cutoff, below) = (pass.cutoff, pass.settings.rewrite_below);
    let victims = pass.db.run(move |c| victims(c, cutoff, below)).await?;
    if pass.settings.dry_run {
        let live: u64 = victims.iter().map(|v| v.2).sum();
        return Ok((victims.len() as u64, live, live));
    }
    let (mut rewritten, mut copied, mut written) = (0u64, 0u64, 0u64);
    let mut group: Vec<PackId> = Vec::new();
    let mut moving: Vec<Moving> = Vec::new();
    let mut filled = 0u64;
    let writer = std::sync::Arc::new(pass.store.writer());
    for (i, &(old, _, live)) in victims.iter().enumerate() {
        pass.check()?;
        let rows: Vec<(Vec<u8>, i32)> = pass
            .db
            .run(move |c| {
                Ok(chunks::table
                    .filter(chunks::pack_id.eq(Some(old.0.to_vec())))
                    .order(chunks::pack_offset.asc())
                    .select((chunks::hash, chunks::size))
                    .load(c)?)
            })
            .await?;
        let mut lens: HashMap<Hash, u32> = HashMap::new();
        for (h, size) in rows {
            let hash: Hash =
                h.as_slice().try_into().map_err(|_| DbError::Task("a stored hash is not 32 bytes".into()))?;
            lens.insert(hash, u32::try_from(size).unwrap_or(0));
        }
        let hashes: Vec<Hash> = lens.keys().copied().collect();
        let mut read = pass.store.read_many_stored(hashes, 4);
        while let Some(item) = read.next().await {
            let (hash, encoded) = item?;
            let len = lens[&hash];
            let w = writer.clone();
            // Verified in full (decoded and hashed) before it is written again.
            let appended = tokio::task::spawn_blocking(move || w.append_encoded(&hash, len, &encoded))
                .await
                .map_err(crate::storage::StorageError::from)??;
            filled += u64::from(appended.stored_size);
            moving.push(Moving { hash, from: old, appended });
        }
        group.push(old);
        copied += live;
        if filled >= PACK_TARGET || i + 1 == victims.len() {
            let (retired, size) =
                seal_and_move(pass, &writer, std::mem::take(&mut group), std::mem::take(&mut moving)).await?;
            rewritten += retired;
            written += size;
            filled = 0;
        }
    }
    Ok((rewritten, copied, written))
}

/// Seals the writer's open pack and moves the rows of `moving` into it; retires `group`.
async fn seal_and_move(
    pass: &Pass,
    writer: &crate::storage::PackWriter,
    group: Vec<PackId>,
    moving: Vec<Moving>,
) -> Result<(u64, u64), GcError> {
    let Some(open) = writer.take() else { return Ok((0, 0)) };
    pass.check()?;
    let sealed = pass.store.seal(open).await?;
    let now = super::whole_seconds(pass.now);
    let retired = pass
        .db
        .write_read_committed(move |c| {
            record_pack(c, sealed.id, sealed.size)?;
            for m in &moving {
                diesel::update(
                    chunks::table
                        .filter(chunks::hash.eq(m.hash.to_vec()))
                        .filter(chunks::pack_id.eq(Some(m.from.0.to_vec()))),
                )
                .set((
                    chunks::pack_id.eq(Some(m.appended.at.pack.0.to_vec())),
                    chunks::pack_offset.eq(Some(i64::try_from(m.appended.at.offset).unwrap_or(i64::MAX))),
                    chunks::format.eq(Some(i16::from(m.appended.at.format))),
                    chunks::stored_size.eq(i32::try_from(m.appended.stored_size).unwrap_or(i32::MAX)),
                ))
                .execute(c)?;
            }
            let ids: Vec<Vec<u8>> = group.iter().map(|p| p.0.to_vec()).collect();
            Ok(retire_unreferenced(c, &ids, now)? as u64)
        })
        .await?;
    tracing::info!(pack = %sealed.id.hex(), size = sealed.size, retired, "rewrote mostly dead packs");
    Ok((retired, sealed.size))
}

/// Deletes the packs retired for a full grace period: the row (only while no chunk row points into
/// it), then the object. A crash between leaves an object without a row, an orphan the next pass
/// deletes. Objects and bytes deleted (dry: due).
pub async fn delete_retired(pass: &Pass) -> Result<(u64, u64), GcError> {
    let cutoff = pass.cutoff;
    let due: Vec<(Vec<u8>, i64)> = pass
        .db
        .run(move |c| {
            Ok(packs::table
                .filter(packs::retired_at.lt(cutoff))
                .order(packs::retired_at.asc())
                .select((packs::id, packs::size))
                .load(c)?)
        })
        .await?;
    if pass.settings.dry_run {
        return Ok((due.len() as u64, due.iter().map(|d| u64::try_from(d.1).unwrap_or(0)).sum()));
    }
    let (mut objects, mut bytes) = (0u64, 0u64);
    for (id, size) in due {
        pass.check()?;
        let raw = id.clone();
        let gone = pass
            .db
            .write_read_committed(move |c| {
                Ok(diesel::delete(
                    packs::table
                        .filter(packs::id.eq(raw))
                        .filter(packs::retired_at.lt(cutoff))
                        .filter(not(exists(chunks::table.filter(chunks::pack_id.eq(packs::id.nullable()))))),
                )
                .execute(c)?)
            })
            .await?;
        if gone == 1 {
            pass.store.backend().delete_pack(&pack_id(&id)?).await?;
            objects += 1;
            bytes += u64::try_from(size).unwrap_or(0);
        }
    }
    Ok((objects, bytes))
}

/// Deletes the reservations (`db::packs::reserve_pack`, size 0) older than the grace period —
/// a writer that crashed or failed between reserving and recording its pack — and their objects
/// if they were written. Objects and bytes deleted (dry: reservations due, bytes unknown).
pub async fn delete_abandoned(pass: &Pass) -> Result<(u64, u64), GcError> {
    let cutoff = pass.cutoff;
    let due: Vec<Vec<u8>> = pass
        .db
        .run(move |c| {
            Ok(packs::table
                .filter(packs::size.eq(0i64))
                .filter(packs::created_at.lt(cutoff))
                .select(packs::id)
                .load(c)?)
        })
        .await?;
    if pass.settings.dry_run {
        return Ok((due.len() as u64, 0));
    }
    let (mut objects, mut bytes) = (0u64, 0u64);
    for raw in due {
        pass.check()?;
        let id = pack_id(&raw)?;
        let gone = pass
            .db
            .write_read_committed(move |c| {
                Ok(diesel::delete(
                    packs::table
                        .filter(packs::id.eq(raw))
                        .filter(packs::size.eq(0i64))
                        .filter(not(exists(chunks::table.filter(chunks::pack_id.eq(packs::id.nullable()))))),
                )
                .execute(c)?)
            })
            .await?;
        if gone == 1 {
            if let Some(size) = pass.store.backend().pack_size(&id).await? {
                pass.store.backend().delete_pack(&id).await?;
                objects += 1;
                bytes += size;
            }
        }
    }
    Ok((objects, bytes))
}

/// Retires those of `ids` no chunk row points into any more (and not retired yet); how many.
fn retire_unreferenced(c: &mut DbConn, ids: &[Vec<u8>], now: chrono::NaiveDateTime) -> Result<usize, DbError> {
    let mut retired = 0;
    for part in ids.chunks(IN_BATCH) {
        retired += diesel::update(
            packs::table
                .filter(packs::id.eq_any(part.to_vec()))
                .filter(packs::retired_at.is_null())
                .filter(not(exists(chunks::table.filter(chunks::pack_id.eq(packs::id.nullable()))))),
        )
        .set(packs::retired_at.eq(Some(now)))
        .execute(c)?;
    }
    Ok(retired)
}

//! Chunks no workspace holds: condemned first, deleted from the index a grace period later.
//!
//! Condemning tells uploads to stop deduplicating against the chunk (`db::packs::recorded` leaves
//! it out, so an upload stores its own copy). An upload that looked the chunk up just before still
//! adds its hold (`journal::record_chunks` holds only chunks still recorded), and a held chunk is
//! never deleted: the delete re-checks that no hold exists, and the foreign key from
//! `workspace_chunks` refuses it if one appeared meanwhile.

use diesel::dsl::{exists, not};
use diesel::prelude::*;

use super::{GcError, Pass};
use crate::chunking::Hash;
use crate::db::schema::{chunks, workspace_chunks};
use crate::db::{DbConn, DbError};

/// Chunk rows deleted per transaction.
const DELETE_PAGE: i64 = 500;

/// Chunks marked or unmarked per transaction.
const MARK_PAGE: i64 = 1000;

/// Clears the mark of condemned chunks that are held again, then condemns the chunks no workspace
/// holds that are older than the grace period. How many were condemned (dry: are unheld now).
///
/// Candidates are found by plain reads, a page at a time, and each page is marked by primary key
/// with the conditions checked again: no statement scans and locks the whole table while uploads
/// record chunks.
pub async fn condemn(pass: &Pass) -> Result<u64, GcError> {
    let (cutoff, now, dry) = (pass.cutoff, super::whole_seconds(pass.now), pass.settings.dry_run);
    if !dry {
        // Held again: unmarked.
        let mut after: Vec<u8> = Vec::new();
        loop {
            let from = after.clone();
            let page: Vec<Vec<u8>> = pass
                .db
                .run(move |c| {
                    Ok(chunks::table
                        .filter(chunks::condemned_at.is_not_null())
                        .filter(chunks::hash.gt(from))
                        .filter(exists(workspace_chunks::table.filter(workspace_chunks::hash.eq(chunks::hash))))
                        .order(chunks::hash.asc())
                        .limit(MARK_PAGE)
                        .select(chunks::hash)
                        .load(c)?)
                })
                .await?;
            let Some(last) = page.last().cloned() else { break };
            after = last;
            pass.check()?;
            pass.db
                .write_read_committed(move |c| {
                    diesel::update(
                        chunks::table.filter(chunks::hash.eq_any(page)).filter(chunks::condemned_at.is_not_null()),
                    )
                    .set(chunks::condemned_at.eq(None::<chrono::NaiveDateTime>))
                    .execute(c)
                    .map_err(DbError::from)
                })
                .await?;
        }
    }
    let mut after: Vec<u8> = Vec::new();
    let mut condemned = 0u64;
    loop {
        let from = after.clone();
        let page: Vec<Vec<u8>> = pass
            .db
            .run(move |c| {
                Ok(chunks::table
                    .filter(chunks::condemned_at.is_null())
                    .filter(chunks::created_at.lt(cutoff))
                    .filter(chunks::hash.gt(from))
                    .filter(not(exists(workspace_chunks::table.filter(workspace_chunks::hash.eq(chunks::hash)))))
                    .order(chunks::hash.asc())
                    .limit(MARK_PAGE)
                    .select(chunks::hash)
                    .load(c)?)
            })
            .await?;
        let Some(last) = page.last().cloned() else { break };
        after = last;
        if dry {
            condemned += page.len() as u64;
            continue;
        }
        pass.check()?;
        condemned +=
            pass.db
                .write_read_committed(move |c| {
                    diesel::update(
                        chunks::table.filter(chunks::hash.eq_any(page)).filter(chunks::condemned_at.is_null()).filter(
                            not(exists(workspace_chunks::table.filter(workspace_chunks::hash.eq(chunks::hash)))),
                        ),
                    )
                    .set(chunks::condemned_at.eq(Some(now)))
                    .execute(c)
                    .map_err(DbError::from)
                })
                .await? as u64;
    }
    Ok(condemned)
}

/// A chunk row found deletable: its hash, and whether it is a loose file (no pack).
type Doomed = (Vec<u8>, Option<Vec<u8>>);

/// Up to a page of chunks condemned before the cutoff and still unheld, after `after`.
fn doomed_page(conn: &mut DbConn, cutoff: chrono::NaiveDateTime, after: &[u8]) -> Result<Vec<Doomed>, DbError> {
    Ok(chunks::table
        .filter(chunks::condemned_at.lt(cutoff))
        .filter(chunks::hash.gt(after.to_vec()))
        .filter(not(exists(workspace_chunks::table.filter(workspace_chunks::hash.eq(chunks::hash)))))
        .order(chunks::hash.asc())
        .limit(DELETE_PAGE)
        .select((chunks::hash, chunks::pack_id))
        .load(conn)?)
}

/// Deletes `hashes` that are still condemned before `cutoff` and unheld; how many went. A batch the
/// foreign key refuses (a hold appeared after the check) is retried row by row, the held one kept.
fn delete_unheld(
    conn: &mut DbConn,
    cutoff: chrono::NaiveDateTime,
    hashes: &[Vec<u8>],
) -> Result<Vec<Vec<u8>>, DbError> {
    let one = |c: &mut DbConn, part: &[Vec<u8>]| -> Result<usize, DbError> {
        let target = chunks::table
            .filter(chunks::hash.eq_any(part.to_vec()))
            .filter(chunks::condemned_at.lt(cutoff))
            .filter(not(exists(workspace_chunks::table.filter(workspace_chunks::hash.eq(chunks::hash)))));
        Ok(diesel::delete(target).execute(c)?)
    };
    let still = |c: &mut DbConn, part: &[Vec<u8>]| -> Result<Vec<Vec<u8>>, DbError> {
        let left: Vec<Vec<u8>> =
            chunks::table.filter(chunks::hash.eq_any(part.to_vec())).select(chunks::hash).load(c)?;
        Ok(part.iter().filter(|h| !left.contains(h)).cloned().collect())
    };
    match conn.transaction(|c| one(c, hashes)) {
        Ok(_) => still(conn, hashes),
        Err(e) if is_fk_violation(&e) => {
            let mut gone = Vec::new();
            for h in hashes {
                match conn.transaction(|c| one(c, std::slice::from_ref(h))) {
                    Ok(_) => gone.extend(still(conn, std::slice::from_ref(h))?),
                    Err(e) if is_fk_violation(&e) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(gone)
        }
        Err(e) => Err(e),
    }
}

fn is_fk_violation(e: &DbError) -> bool {
    matches!(
        e,
        DbError::Query(diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::ForeignKeyViolation, _))
    )
}

/// Deletes the rows of chunks condemned for a full grace period and still unheld. Returns how
/// many went and the loose ones among them (their files are deleted next).
pub async fn delete_condemned(pass: &Pass) -> Result<(u64, Vec<Hash>), GcError> {
    let cutoff = pass.cutoff;
    let mut after: Vec<u8> = Vec::new();
    let (mut deleted, mut loose) = (0u64, Vec::new());
    loop {
        let from = after.clone();
        let page = pass.db.run(move |c| doomed_page(c, cutoff, &from)).await?;
        let Some((last, _)) = page.last() else { break };
        after = last.clone();
        if pass.settings.dry_run {
            deleted += page.len() as u64;
            continue;
        }
        pass.check()?;
        let hashes: Vec<Vec<u8>> = page.iter().map(|(h, _)| h.clone()).collect();
        let gone = pass.db.write_read_committed(move |c| delete_unheld(c, cutoff, &hashes)).await?;
        deleted += gone.len() as u64;
        for (h, pack) in page {
            if pack.is_none() && gone.contains(&h) {
                loose.push(h.as_slice().try_into().map_err(|_| DbError::Task("a stored hash is not 32 bytes".into()))?);
            }
        }
    }
    Ok((deleted, loose))
}

/// Deletes the files of loose chunks whose rows went (a directory store): objects and bytes.
pub async fn remove_loose(pass: &Pass, loose: Vec<Hash>) -> Result<(u64, u64), GcError> {
    let Some(root) = pass.store.backend().loose_root().map(|r| r.to_path_buf()) else { return Ok((0, 0)) };
    let (mut objects, mut bytes) = (0u64, 0u64);
    for hash in loose {
        let path = crate::storage::legacy::loose_path(&root, &hash);
        let size = tokio::fs::metadata(&path).await.map(|m| m.len()).ok();
        let key = path.strip_prefix(&root).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        pass.store.backend().delete_key(&key).await?;
        if let Some(size) = size {
            objects += 1;
            bytes += size;
        }
    }
    Ok((objects, bytes))
}

//! Releasing a workspace's holds on chunks none of its versions references any more.
//!
//! Mark, outside any lock: the chunks named by every version up to the head seq `S` read first,
//! and the holds older than the grace period (younger ones may belong to an upload whose version
//! is not committed yet). Then one short transaction that first locks the workspace row exactly as
//! a commit does (`journal::commit_many`): the versions committed since (seq in `(S, head]`) are
//! scanned too, and the remaining holds are deleted. A commit that comes after sees them gone and is
//! refused `ChunksNotHeld`; its client asks again which chunks are missing and sends them.

use std::collections::HashSet;

use diesel::prelude::*;

use super::{GcError, Pass, IN_BATCH};
use crate::chunking::{decode_manifest, Hash};
use crate::db::schema::{chunks, file_versions, workspace_chunks, workspaces};
use crate::db::{DbConn, DbError};
use crate::WorkspaceId;

/// Versions whose manifests are read per query.
const VERSIONS_PAGE: i64 = 1000;
/// Holds read per query.
const HOLDS_PAGE: i64 = 5000;

/// Every workspace, by id.
pub fn workspaces(conn: &mut DbConn) -> Result<Vec<WorkspaceId>, DbError> {
    let ids: Vec<i64> = workspaces::table.select(workspaces::id).order(workspaces::id.asc()).load(conn)?;
    Ok(ids.into_iter().map(WorkspaceId).collect())
}

fn to_hash(raw: &[u8]) -> Result<Hash, DbError> {
    raw.try_into().map_err(|_| DbError::Task("a stored hash is not 32 bytes".into()))
}

/// Adds the chunks named by the versions of `ws` with `after < seq <= upto` to `into`.
pub(crate) fn referenced(
    conn: &mut DbConn,
    ws: WorkspaceId,
    after: i64,
    upto: i64,
    into: &mut HashSet<Hash>,
) -> Result<(), DbError> {
    let mut from = after;
    loop {
        let rows: Vec<(i64, Vec<u8>)> = file_versions::table
            .filter(file_versions::workspace_id.eq(ws.0))
            .filter(file_versions::seq.gt(from))
            .filter(file_versions::seq.le(upto))
            .order(file_versions::seq.asc())
            .limit(VERSIONS_PAGE)
            .select((file_versions::seq, file_versions::manifest))
            .load(conn)?;
        let Some(&(last, _)) = rows.last() else { return Ok(()) };
        for (_, manifest) in &rows {
            let refs = decode_manifest(manifest).map_err(|e| DbError::Task(format!("a stored manifest: {e}")))?;
            into.extend(refs.into_iter().map(|r| r.hash));
        }
        from = last;
    }
}

/// Every hold of `ws`: its chunk and whether it is older than `cutoff`.
fn holds(conn: &mut DbConn, ws: WorkspaceId, cutoff: chrono::NaiveDateTime) -> Result<Vec<(Hash, bool)>, DbError> {
    let mut out = Vec::new();
    let mut after: Vec<u8> = Vec::new();
    loop {
        let rows: Vec<(Vec<u8>, chrono::NaiveDateTime)> = workspace_chunks::table
            .filter(workspace_chunks::workspace_id.eq(ws.0))
            .filter(workspace_chunks::hash.gt(after.clone()))
            .order(workspace_chunks::hash.asc())
            .limit(HOLDS_PAGE)
            .select((workspace_chunks::hash, workspace_chunks::held_at))
            .load(conn)?;
        let Some((last, _)) = rows.last().cloned() else { return Ok(out) };
        for (raw, held_at) in rows {
            out.push((to_hash(&raw)?, held_at < cutoff));
        }
        after = last;
    }
}

/// What the mark found for one workspace.
struct Marked {
    /// The head seq the versions were read up to.
    seq: i64,
    /// Old holds no version up to `seq` references.
    unreferenced: Vec<Hash>,
    /// Chunks versions reference that the workspace does not hold (should never happen; a commit
    /// that read its holds from a snapshot older than a release would leave one): held again.
    unheld: Vec<Hash>,
}

fn mark(conn: &mut DbConn, ws: WorkspaceId, cutoff: chrono::NaiveDateTime) -> Result<Marked, DbError> {
    let Some(seq) = crate::db::journal::head_seq(conn, ws)? else {
        return Ok(Marked { seq: 0, unreferenced: Vec::new(), unheld: Vec::new() });
    };
    let mut used = HashSet::new();
    referenced(conn, ws, 0, seq, &mut used)?;
    let holds = holds(conn, ws, cutoff)?;
    let unreferenced = holds.iter().filter(|(h, old)| *old && !used.contains(h)).map(|(h, _)| *h).collect();
    for (h, _) in &holds {
        used.remove(h);
    }
    Ok(Marked { seq, unreferenced, unheld: used.into_iter().collect() })
}

/// Releases the unreferenced holds of `ws` (see the module doc); how many went (dry: would go).
pub async fn release(pass: &Pass, ws: WorkspaceId) -> Result<u64, GcError> {
    let cutoff = pass.cutoff;
    let Marked { seq: mark_seq, unreferenced: candidates, unheld } = pass.db.run(move |c| mark(c, ws, cutoff)).await?;
    if (candidates.is_empty() && unheld.is_empty()) || pass.settings.dry_run {
        return Ok(candidates.len() as u64);
    }
    pass.check()?;
    let now = super::whole_seconds(pass.now);
    let (released, reheld) = pass
        .db
        .write_read_committed(move |c| {
            // The commit's lock (journal::commit_many): commits of this workspace wait for us, and
            // we for any commit in progress.
            let locked = diesel::update(workspaces::table.find(ws.0))
                .set(workspaces::head_seq.eq(workspaces::head_seq))
                .execute(c)?;
            if locked == 0 {
                return Ok((0, 0)); // the workspace was deleted meanwhile (its holds with it)
            }
            let head = crate::db::journal::head_seq(c, ws)?.unwrap_or(mark_seq);
            let mut since = HashSet::new();
            referenced(c, ws, mark_seq, head, &mut since)?;
            let mut released = 0u64;
            let gone: Vec<Vec<u8>> = candidates.iter().filter(|h| !since.contains(*h)).map(|h| h.to_vec()).collect();
            for part in gone.chunks(IN_BATCH) {
                released += diesel::delete(
                    workspace_chunks::table
                        .filter(workspace_chunks::workspace_id.eq(ws.0))
                        .filter(workspace_chunks::hash.eq_any(part))
                        // A hold renewed since the mark belongs to an upload about to commit.
                        .filter(workspace_chunks::held_at.lt(cutoff)),
                )
                .execute(c)? as u64;
            }
            let missing: Vec<Vec<u8>> = unheld.iter().map(|h| h.to_vec()).collect();
            let mut reheld = 0u64;
            for part in missing.chunks(IN_BATCH) {
                reheld += hold_again(c, ws, part, now)? as u64;
            }
            Ok((released, reheld))
        })
        .await?;
    if reheld > 0 {
        tracing::warn!(workspace = ws.0, reheld, "versions referenced chunks the workspace did not hold; held again");
    }
    if released > 0 {
        tracing::info!(workspace = ws.0, released, "released holds no version references");
    }
    Ok(released)
}

/// Holds `hashes` for `ws` again where their chunk rows still exist.
fn hold_again(
    conn: &mut DbConn,
    ws: WorkspaceId,
    hashes: &[Vec<u8>],
    now: chrono::NaiveDateTime,
) -> Result<usize, DbError> {
    use diesel::sql_types::{BigInt, Timestamp};
    let query = diesel::insert_or_ignore_into(workspace_chunks::table)
        .values(chunks::table.filter(chunks::hash.eq_any(hashes.to_vec())).select((
            ws.0.into_sql::<BigInt>(),
            chunks::hash,
            now.into_sql::<Timestamp>(),
        )))
        .into_columns((workspace_chunks::workspace_id, workspace_chunks::hash, workspace_chunks::held_at));
    Ok(match conn {
        #[cfg(feature = "mysql")]
        DbConn::Mysql(c) => query.execute(c)?,
        DbConn::Sqlite(c) => query.execute(c)?,
    })
}

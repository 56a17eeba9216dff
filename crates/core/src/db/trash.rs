//! The trash: paths whose current head is a delete (a move's source is not in it: its content
//! lives on at the destination). Each entry can be restored to its last version with content
//! until retention drops it, `trash_days` after the delete (see [`super::retention`]).

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::journal::Edit;
use super::retention::last_live;
use super::schema::{file_heads, file_versions};
use super::{DbConn, DbError};
use crate::ids::{UserId, WorkspaceId};
use crate::proto::EntryKind;

/// One deleted path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrashEntry {
    pub path: String,
    pub kind: EntryKind,
    /// The seq of the delete: the entry's id, and the order of the listing.
    pub deleted_seq: i64,
    pub deleted_at: NaiveDateTime,
    pub deleted_by: UserId,
    /// The seq of the version a restore brings back (`None` for a directory).
    pub restores: Option<i64>,
    /// The size of that version.
    pub size: u64,
}

type Row = (String, Vec<u8>, String, i64, NaiveDateTime, i64);

/// The trash of workspace `ws` as a query to refine: its deleted heads joined with their head row,
/// which is a delete of the path itself (a moved-away path's head row is the move, elsewhere).
#[diesel::dsl::auto_type(no_type_alias)]
pub(crate) fn trashed(ws: i64) -> _ {
    file_heads::table
        .inner_join(
            file_versions::table.on(file_versions::workspace_id
                .eq(file_heads::workspace_id)
                .and(file_versions::seq.eq(file_heads::seq))),
        )
        .filter(file_heads::workspace_id.eq(ws))
        .filter(file_heads::deleted.eq(true))
        .filter(file_versions::op.eq("delete"))
}

/// The deleted heads (all, or those at `path` or under it), newest first, below seq `before`.
fn deleted_heads(
    c: &mut DbConn,
    ws: WorkspaceId,
    at: Option<&str>,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<Row>, DbError> {
    let mut query = trashed(ws.0).filter(file_heads::seq.lt(before.unwrap_or(i64::MAX))).into_boxed();
    if let Some(path) = at {
        // The byte-wise range of `journal::live_under`: `path` itself and everything under `path/`.
        let (low, high) = (format!("{path}/"), format!("{path}0"));
        query = query
            .filter(file_heads::path.eq(path.to_owned()).or(file_heads::path.ge(low).and(file_heads::path.lt(high))));
    }
    Ok(query
        .order(file_heads::seq.desc())
        .limit(limit)
        .select((
            file_heads::path,
            file_heads::path_hash,
            file_versions::kind,
            file_heads::seq,
            file_versions::created_at,
            file_versions::author_id,
        ))
        .load(c)?)
}

/// The entries for `rows`: each with the version a restore brings back (two queries in all).
fn entries(c: &mut DbConn, ws: WorkspaceId, rows: Vec<Row>) -> Result<Vec<TrashEntry>, DbError> {
    let hashes: Vec<Vec<u8>> = rows.iter().map(|r| r.1.clone()).collect();
    let last = last_live(c, ws, &hashes)?;
    let seqs: Vec<i64> = last.values().copied().collect();
    let mut sizes = std::collections::HashMap::with_capacity(seqs.len());
    for part in seqs.chunks(500) {
        let found: Vec<(i64, i64)> = file_versions::table
            .filter(file_versions::workspace_id.eq(ws.0))
            .filter(file_versions::seq.eq_any(part))
            .select((file_versions::seq, file_versions::size))
            .load(c)?;
        sizes.extend(found);
    }
    rows.into_iter()
        .map(|(path, hash, kind, seq, at, author)| {
            let kind =
                EntryKind::parse(&kind).ok_or_else(|| DbError::Task("journal row has an invalid kind".into()))?;
            let restores = if kind == EntryKind::File { last.get(&hash).copied() } else { None };
            let size = restores.and_then(|s| sizes.get(&s)).map_or(0, |s| u64::try_from(*s).unwrap_or(0));
            Ok(TrashEntry { path, kind, deleted_seq: seq, deleted_at: at, deleted_by: UserId(author), restores, size })
        })
        .collect()
}

/// Up to `limit` entries deleted before seq `before` (from the newest if `None`), newest first.
pub fn list(c: &mut DbConn, ws: WorkspaceId, before: Option<i64>, limit: i64) -> Result<Vec<TrashEntry>, DbError> {
    let rows = deleted_heads(c, ws, None, before, limit)?;
    entries(c, ws, rows)
}

/// The edits that restore `path` from the trash: the path itself if it is in the trash, and every
/// entry under it (a folder as a whole), parents first. `NotFound` if nothing there is in the trash.
/// Commit them with `journal::commit_many`, like any change: a restore over a path that exists
/// again follows the rules of `Edit::Restore`.
pub fn restore_edits(c: &mut DbConn, ws: WorkspaceId, path: &str) -> Result<Vec<Edit>, DbError> {
    let rows = deleted_heads(c, ws, Some(path), None, i64::MAX)?;
    if rows.is_empty() {
        return Err(DbError::NotFound);
    }
    let mut found = entries(c, ws, rows)?;
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found
        .into_iter()
        .filter_map(|e| match (e.kind, e.restores) {
            (EntryKind::Dir, _) => Some(Edit::MakeDir { path: e.path, base_version: 0 }),
            (EntryKind::File, Some(seq)) => Some(Edit::Restore { path: e.path, seq }),
            (EntryKind::File, None) => None,
        })
        .collect())
}

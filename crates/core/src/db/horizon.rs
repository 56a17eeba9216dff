//! The history horizon: what a client that was away longer than the journal's history needs.
//!
//! Retention ([`super::retention`]) drops old versions and raises `workspaces.horizon_seq` to
//! the largest seq it dropped, in the transaction that drops them, so every change with a seq
//! above the horizon is still in the journal and a catch-up from `after >= horizon_seq` is
//! complete ([`Seqs::can_catch_up_from`]; a catch-up reads its changes first and the horizon,
//! [`super::retention::horizon`], afterwards). A client whose last seq is below it is answered
//! `history_expired` and reads the live heads instead ([`live_heads_page`]), a page at a time,
//! to reconcile its folder with them.

use diesel::prelude::*;

use super::journal::VersionRow;
use super::schema::{file_heads, file_versions, workspaces};
use super::{DbConn, DbError};
use crate::chunking::Hash;
use crate::ids::WorkspaceId;
use crate::proto::{Change, ChangeOp};

/// A workspace's newest seq and its horizon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seqs {
    pub head: i64,
    /// Every change with a seq at or below it may be gone from the journal.
    pub horizon: i64,
}

impl Seqs {
    /// Whether the journal still holds every change after `after` (a client's last seq).
    pub fn can_catch_up_from(self, after: i64) -> bool {
        after.max(0) >= self.horizon
    }
}

/// The newest seq and the horizon of `ws` (`None`: no such workspace), in one read: where a
/// subscription's catch-up starts and whether it can.
pub fn seqs(conn: &mut DbConn, ws: WorkspaceId) -> Result<Option<Seqs>, DbError> {
    let row: Option<(i64, i64)> =
        workspaces::table.find(ws.0).select((workspaces::head_seq, workspaces::horizon_seq)).first(conn).optional()?;
    Ok(row.map(|(head, horizon)| Seqs { head, horizon }))
}

/// Up to `limit` live heads (files and directories) of `ws` whose path hash follows `after`
/// (from the first with `None`), in path-hash order (the heads' primary key: no sort of the
/// workspace's paths, no collation), each as the change that made it, normalized as a put of its
/// content at its version ([`Change::seq`]). With the path hash of each, the next page's cursor.
pub fn live_heads_page(
    conn: &mut DbConn,
    ws: WorkspaceId,
    after: Option<Hash>,
    limit: i64,
) -> Result<Vec<(Hash, Change)>, DbError> {
    let mut query =
        file_heads::table
            .inner_join(file_versions::table.on(
                file_versions::workspace_id.eq(file_heads::workspace_id).and(file_versions::seq.eq(file_heads::seq)),
            ))
            .filter(file_heads::workspace_id.eq(ws.0))
            .filter(file_heads::deleted.eq(false))
            .into_boxed();
    if let Some(after) = after {
        query = query.filter(file_heads::path_hash.gt(after.to_vec()));
    }
    let rows: Vec<(Vec<u8>, VersionRow)> = query
        .order(file_heads::path_hash.asc())
        .limit(limit)
        .select((file_heads::path_hash, VersionRow::as_select()))
        .load(conn)?;
    rows.into_iter()
        .map(|(hash, row)| {
            let hash: Hash = hash.try_into().map_err(|_| DbError::Task("a head has an invalid path hash".into()))?;
            // The head of a moved file is the move's row, named by its destination.
            let mut change = row.to_change()?;
            change.op = ChangeOp::Put;
            change.from_path = None;
            change.deleted = false;
            Ok((hash, change))
        })
        .collect()
}

//! What each workspace stores, in logical bytes (the sizes of the versions the journal keeps, not
//! what chunks take at rest after deduplication and compression).

use std::collections::HashMap;

use diesel::dsl::case_when;
use diesel::prelude::*;
use diesel::sql_types::BigInt;

use super::schema::{file_heads, file_versions};
use super::{DbConn, DbError};
use crate::ids::WorkspaceId;

#[diesel::declare_sql_function]
extern "SQL" {
    /// `SUM` of a BIGINT read as one: diesel's own `sum` types it NUMERIC, which would need a
    /// decimal crate; MySQL's DECIMAL answer (scale 0) is read as an integer by diesel's MySQL reader.
    #[aggregate]
    #[sql_name = "SUM"]
    fn sum_bytes(x: BigInt) -> Nullable<BigInt>;
}

/// A workspace and its sums of sizes: every version, the live heads, the trash.
type Sums = (i64, Option<i64>, Option<i64>, Option<i64>);

/// Bytes of one workspace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// The current version of every live file.
    pub live: u64,
    /// Every version of a path in the trash (what emptying the trash would release).
    pub trash: u64,
    /// Every other version kept: older versions of live files, of paths moved away.
    pub history: u64,
}

/// The usage of each of `ids` (one query per 500 workspaces); a workspace without versions is absent.
pub fn of(conn: &mut DbConn, ids: &[WorkspaceId]) -> Result<HashMap<WorkspaceId, Usage>, DbError> {
    // The head row of each version's path, and the row that head points at (a delete of the path
    // itself: the path is in the trash; a move elsewhere: it moved away).
    let head_row = diesel::alias!(file_versions as head_row);
    let mut out = HashMap::with_capacity(ids.len());
    for part in ids.chunks(500) {
        let raw: Vec<i64> = part.iter().map(|w| w.0).collect();
        let live =
            file_heads::deleted.nullable().eq(false).and(file_heads::seq.nullable().eq(file_versions::seq.nullable()));
        let trashed =
            file_heads::deleted.nullable().eq(true).and(head_row.field(file_versions::op).nullable().eq("delete"));
        let rows: Vec<Sums> = file_versions::table
            .left_join(
                file_heads::table.on(file_heads::workspace_id
                    .eq(file_versions::workspace_id)
                    .and(file_heads::path_hash.eq(file_versions::path_hash))),
            )
            .left_join(
                head_row.on(head_row
                    .field(file_versions::workspace_id)
                    .eq(file_versions::workspace_id)
                    .and(head_row.field(file_versions::seq).nullable().eq(file_heads::seq.nullable()))),
            )
            .filter(file_versions::workspace_id.eq_any(raw))
            .group_by(file_versions::workspace_id)
            .select((
                file_versions::workspace_id,
                sum_bytes(file_versions::size),
                sum_bytes(case_when(live, file_versions::size).otherwise(0i64)),
                sum_bytes(case_when(trashed, file_versions::size).otherwise(0i64)),
            ))
            .load(conn)?;
        for (ws, total, live, trash) in rows {
            let bytes = |v: Option<i64>| u64::try_from(v.unwrap_or(0)).unwrap_or(0);
            let (total, live, trash) = (bytes(total), bytes(live), bytes(trash));
            out.insert(WorkspaceId(ws), Usage { live, trash, history: total.saturating_sub(live + trash) });
        }
    }
    Ok(out)
}

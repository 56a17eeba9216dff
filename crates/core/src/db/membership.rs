//! Managing the people of a workspace after it was created: a member's role,
//! removing a member (or leaving), renaming and deleting the workspace.
//! Who may do this is decided by the daemons ([`crate::access`]); these are
//! the statements, each atomic on its own. The owner's membership row is
//! never changed or removed here: only deleting the workspace ends it.

use diesel::prelude::*;

use super::accounts::{conflict_of, parse_role, Member};
use super::schema::{users, workspace_members, workspaces};
use super::{now, DbConn, DbError};
use crate::ids::{Role, UserId, WorkspaceId};

/// One member of the workspace, or `None` if `user` is not one.
pub fn member(conn: &mut DbConn, ws: WorkspaceId, user: UserId) -> Result<Option<Member>, DbError> {
    let row: Option<(i64, String, String, String)> = workspace_members::table
        .inner_join(users::table)
        .filter(workspace_members::workspace_id.eq(ws.0))
        .filter(workspace_members::user_id.eq(user.0))
        .select((users::id, users::username, users::email, workspace_members::role))
        .first(conn)
        .optional()?;
    row.map(|(user_id, username, email, role)| Ok(Member { user_id, username, email, role: parse_role(&role)? }))
        .transpose()
}

/// Gives `user` the role `role` (editor or viewer). False if `user` is not a member, or is the
/// owner (whose role never changes).
pub fn set_role(conn: &mut DbConn, ws: WorkspaceId, user: UserId, role: Role) -> Result<bool, DbError> {
    if role == Role::Owner {
        return Err(DbError::Task("ownership cannot be given".into()));
    }
    let changed = diesel::update(
        workspace_members::table
            .filter(workspace_members::workspace_id.eq(ws.0))
            .filter(workspace_members::user_id.eq(user.0))
            .filter(workspace_members::role.ne(Role::Owner.as_str())),
    )
    .set(workspace_members::role.eq(role.as_str()))
    .execute(conn)?;
    Ok(changed > 0)
}

/// Ends `user`'s membership. False if `user` is not a member, or is the owner (who cannot leave).
pub fn remove_member(conn: &mut DbConn, ws: WorkspaceId, user: UserId) -> Result<bool, DbError> {
    let removed = diesel::delete(
        workspace_members::table
            .filter(workspace_members::workspace_id.eq(ws.0))
            .filter(workspace_members::user_id.eq(user.0))
            .filter(workspace_members::role.ne(Role::Owner.as_str())),
    )
    .execute(conn)?;
    Ok(removed > 0)
}

/// Renames the workspace. The owner already having a workspace of that name is
/// `Conflict("workspace")` (the unique key decides, also between racing renames);
/// no such workspace is `NotFound`.
pub fn rename_workspace(conn: &mut DbConn, ws: WorkspaceId, name: &str) -> Result<(), DbError> {
    let changed = diesel::update(workspaces::table.find(ws.0))
        .set((workspaces::name.eq(name), workspaces::updated_at.eq(now())))
        .execute(conn)
        .map_err(|e| conflict_of(e, &[], "workspace"))?;
    // MySQL counts only changed rows: renaming to the same name changes none.
    if changed == 0 && !diesel::select(diesel::dsl::exists(workspaces::table.find(ws.0))).get_result::<bool>(conn)? {
        return Err(DbError::NotFound);
    }
    Ok(())
}

/// Deletes the workspace with its journal, heads, chunk references, memberships and
/// invitations (foreign keys cascade), in one transaction. Returns who were members, so each
/// can be told; no such workspace is `NotFound`. Chunk files stay in the store.
pub fn delete_workspace(conn: &mut DbConn, ws: WorkspaceId) -> Result<Vec<UserId>, DbError> {
    conn.transaction(|conn| {
        let members: Vec<i64> = workspace_members::table
            .filter(workspace_members::workspace_id.eq(ws.0))
            .select(workspace_members::user_id)
            .load(conn)?;
        let deleted = diesel::delete(workspaces::table.find(ws.0)).execute(conn)?;
        if deleted == 0 {
            return Err(DbError::NotFound);
        }
        Ok(members.into_iter().map(UserId).collect())
    })
}

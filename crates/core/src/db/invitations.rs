//! Pending invitations: a workspace shared with an email that has no account
//! yet. [`accept_all`] turns a new account's invitations into memberships;
//! the owner lists ([`invitations_of`]) and cancels ([`cancel`]) them.
//! Emails are stored normalized (lower case), like `users.email`.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::accounts::{conflict_of, parse_role};
use super::schema::{invitations, users, workspace_members};
use super::{now, DbConn, DbError};
use crate::ids::{Role, UserId, WorkspaceId};

/// A pending invitation, with the inviter's username.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    pub id: i64,
    pub workspace_id: WorkspaceId,
    pub email: String,
    pub role: Role,
    pub invited_by: UserId,
    pub invited_by_username: String,
    pub created_at: NaiveDateTime,
}

/// A membership made from an invitation at registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    pub workspace_id: WorkspaceId,
    pub role: Role,
    pub invited_by: UserId,
}

type Row = (i64, i64, String, String, i64, String, NaiveDateTime);

fn from_row((id, ws, email, role, by, by_name, created_at): Row) -> Result<Invitation, DbError> {
    Ok(Invitation {
        id,
        workspace_id: WorkspaceId(ws),
        email,
        role: parse_role(&role)?,
        invited_by: UserId(by),
        invited_by_username: by_name,
        created_at,
    })
}

/// Invitations with their inviter's username, selected as a [`Row`].
macro_rules! query {
    () => {
        invitations::table.inner_join(users::table).select((
            invitations::id,
            invitations::workspace_id,
            invitations::email,
            invitations::role,
            invitations::invited_by,
            users::username,
            invitations::created_at,
        ))
    };
}

/// Invites `email` (normalized) to `ws` as `role` (editor or viewer). The email already
/// invited there is `Conflict("invitation")`.
pub fn invite(conn: &mut DbConn, ws: WorkspaceId, email: &str, role: Role, by: UserId) -> Result<Invitation, DbError> {
    if role == Role::Owner {
        return Err(DbError::Task("ownership cannot be given".into()));
    }
    conn.transaction(|conn| {
        diesel::insert_into(invitations::table)
            .values((
                invitations::workspace_id.eq(ws.0),
                invitations::email.eq(email),
                invitations::role.eq(role.as_str()),
                invitations::invited_by.eq(by.0),
                invitations::created_at.eq(now()),
            ))
            .execute(conn)
            .map_err(|e| conflict_of(e, &[], "invitation"))?;
        let row: Row =
            query!().filter(invitations::workspace_id.eq(ws.0)).filter(invitations::email.eq(email)).first(conn)?;
        from_row(row)
    })
}

/// The workspace's pending invitations, oldest first.
pub fn invitations_of(conn: &mut DbConn, ws: WorkspaceId) -> Result<Vec<Invitation>, DbError> {
    let rows: Vec<Row> = query!().filter(invitations::workspace_id.eq(ws.0)).order(invitations::id.asc()).load(conn)?;
    rows.into_iter().map(from_row).collect()
}

/// Cancels invitation `id` of `ws`; false if there is none (or it was accepted meanwhile).
pub fn cancel(conn: &mut DbConn, ws: WorkspaceId, id: i64) -> Result<bool, DbError> {
    let n =
        diesel::delete(invitations::table.filter(invitations::id.eq(id)).filter(invitations::workspace_id.eq(ws.0)))
            .execute(conn)?;
    Ok(n > 0)
}

/// Turns every invitation of `email` into a membership of `user`, and deletes them, in one
/// transaction. A workspace `user` already belongs to keeps the existing role.
pub fn accept_all(conn: &mut DbConn, user: UserId, email: &str) -> Result<Vec<Accepted>, DbError> {
    conn.transaction(|conn| {
        let pending: Vec<(i64, i64, String, i64)> = invitations::table
            .filter(invitations::email.eq(email))
            .select((invitations::id, invitations::workspace_id, invitations::role, invitations::invited_by))
            .order(invitations::id.asc())
            .load(conn)?;
        let mut accepted = Vec::with_capacity(pending.len());
        for (id, ws, role, by) in pending {
            let already: bool = diesel::select(diesel::dsl::exists(
                workspace_members::table
                    .filter(workspace_members::workspace_id.eq(ws))
                    .filter(workspace_members::user_id.eq(user.0)),
            ))
            .get_result(conn)?;
            if !already {
                diesel::insert_into(workspace_members::table)
                    .values((
                        workspace_members::workspace_id.eq(ws),
                        workspace_members::user_id.eq(user.0),
                        workspace_members::role.eq(&role),
                        workspace_members::added_by.eq(by),
                        workspace_members::created_at.eq(now()),
                    ))
                    .execute(conn)?;
                accepted.push(Accepted {
                    workspace_id: WorkspaceId(ws),
                    role: parse_role(&role)?,
                    invited_by: UserId(by),
                });
            }
            diesel::delete(invitations::table.find(id)).execute(conn)?;
        }
        Ok(accepted)
    })
}

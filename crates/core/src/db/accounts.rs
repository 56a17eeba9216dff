//! Users, workspaces and membership: the queries both daemons share.
//! Authorization decisions are made by the daemons from [`role_of`].

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use super::schema::{users, workspace_members, workspaces};
use super::{now, DbConn, DbError};
use crate::ids::{Role, UserId, WorkspaceId};

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = users)]
pub struct User {
    pub id: i64,
    pub first_name: String,
    pub last_name: String,
    pub username: String,
    pub email: String,
    pub password_hash: String,
    pub created_at: chrono::NaiveDateTime,
    pub updated_at: chrono::NaiveDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = workspaces)]
pub struct Workspace {
    pub id: i64,
    pub name: String,
    pub owner_id: i64,
    pub head_seq: i64,
    pub created_at: chrono::NaiveDateTime,
    pub updated_at: chrono::NaiveDateTime,
}

/// What registration stores. The email must already be normalized (lower case).
#[derive(Debug, Clone)]
pub struct NewUser<'a> {
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub username: &'a str,
    pub email: &'a str,
    pub password_hash: &'a str,
}

/// A workspace as one member sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberWorkspace {
    pub workspace: Workspace,
    pub owner_username: String,
    pub role: Role,
}

/// A member as listed for a workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub user_id: i64,
    pub username: String,
    pub email: String,
    pub role: Role,
}

pub(crate) fn parse_role(s: &str) -> Result<Role, DbError> {
    s.parse().map_err(|e: crate::ids::UnknownRole| DbError::Task(e.to_string()))
}

/// Names which unique key a violation hit, from the backend's message
/// (MySQL: `... for key 'users_email_key'`; SQLite: `UNIQUE constraint failed: users.email`).
pub(crate) fn conflict_of(err: DieselError, candidates: &[(&str, &'static str)], fallback: &'static str) -> DbError {
    if let DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info) = &err {
        let msg = info.message();
        for (needle, what) in candidates {
            if msg.contains(needle) {
                return DbError::Conflict(what);
            }
        }
        return DbError::Conflict(fallback);
    }
    DbError::Query(err)
}

/// Inserts a user. A taken email or username is `Conflict("email")` / `Conflict("username")`,
/// also when two registrations race (the unique keys decide).
pub fn create_user(conn: &mut DbConn, new: &NewUser<'_>) -> Result<User, DbError> {
    conn.transaction(|conn| {
        let ts = now();
        diesel::insert_into(users::table)
            .values((
                users::first_name.eq(new.first_name),
                users::last_name.eq(new.last_name),
                users::username.eq(new.username),
                users::email.eq(new.email),
                users::password_hash.eq(new.password_hash),
                users::created_at.eq(ts),
                users::updated_at.eq(ts),
            ))
            .execute(conn)
            .map_err(|e| conflict_of(e, &[("email", "email"), ("username", "username")], "user"))?;
        users::table.filter(users::email.eq(new.email)).select(User::as_select()).first(conn).map_err(DbError::from)
    })
}

pub fn user_by_email(conn: &mut DbConn, email: &str) -> Result<Option<User>, DbError> {
    Ok(users::table.filter(users::email.eq(email)).select(User::as_select()).first(conn).optional()?)
}

pub fn user_by_id(conn: &mut DbConn, id: UserId) -> Result<Option<User>, DbError> {
    Ok(users::table.find(id.0).select(User::as_select()).first(conn).optional()?)
}

pub fn workspace_by_id(conn: &mut DbConn, id: WorkspaceId) -> Result<Option<Workspace>, DbError> {
    Ok(workspaces::table.find(id.0).select(Workspace::as_select()).first(conn).optional()?)
}

/// Creates a workspace and its owner's membership row in one transaction.
/// The same owner using the same name again is `Conflict("workspace")`.
pub fn create_workspace(conn: &mut DbConn, owner: UserId, name: &str) -> Result<Workspace, DbError> {
    conn.transaction(|conn| {
        let ts = now();
        diesel::insert_into(workspaces::table)
            .values((
                workspaces::name.eq(name),
                workspaces::owner_id.eq(owner.0),
                workspaces::head_seq.eq(0i64),
                workspaces::created_at.eq(ts),
                workspaces::updated_at.eq(ts),
            ))
            .execute(conn)
            .map_err(|e| conflict_of(e, &[], "workspace"))?;
        let ws: Workspace = workspaces::table
            .filter(workspaces::owner_id.eq(owner.0))
            .filter(workspaces::name.eq(name))
            .select(Workspace::as_select())
            .first(conn)?;
        diesel::insert_into(workspace_members::table)
            .values((
                workspace_members::workspace_id.eq(ws.id),
                workspace_members::user_id.eq(owner.0),
                workspace_members::role.eq(Role::Owner.as_str()),
                workspace_members::added_by.eq(owner.0),
                workspace_members::created_at.eq(ts),
            ))
            .execute(conn)?;
        Ok(ws)
    })
}

/// The user's role in the workspace, or `None` if not a member (or no such workspace).
pub fn role_of(conn: &mut DbConn, ws: WorkspaceId, user: UserId) -> Result<Option<Role>, DbError> {
    let role: Option<String> = workspace_members::table
        .filter(workspace_members::workspace_id.eq(ws.0))
        .filter(workspace_members::user_id.eq(user.0))
        .select(workspace_members::role)
        .first(conn)
        .optional()?;
    role.as_deref().map(parse_role).transpose()
}

/// Adds `user` with `role`. Already a member is `Conflict("member")`.
pub fn add_member(
    conn: &mut DbConn,
    ws: WorkspaceId,
    user: UserId,
    role: Role,
    added_by: UserId,
) -> Result<(), DbError> {
    diesel::insert_into(workspace_members::table)
        .values((
            workspace_members::workspace_id.eq(ws.0),
            workspace_members::user_id.eq(user.0),
            workspace_members::role.eq(role.as_str()),
            workspace_members::added_by.eq(added_by.0),
            workspace_members::created_at.eq(now()),
        ))
        .execute(conn)
        .map_err(|e| conflict_of(e, &[], "member"))?;
    Ok(())
}

/// Every workspace the user belongs to, with its owner's username and the user's role,
/// ordered by name. `shared_only` leaves out the ones the user owns.
pub fn workspaces_of(conn: &mut DbConn, user: UserId, shared_only: bool) -> Result<Vec<MemberWorkspace>, DbError> {
    let mut query = workspace_members::table
        .inner_join(workspaces::table.inner_join(users::table))
        .filter(workspace_members::user_id.eq(user.0))
        .select((Workspace::as_select(), users::username, workspace_members::role))
        .order((workspaces::name.asc(), workspaces::id.asc()))
        .into_boxed();
    if shared_only {
        query = query.filter(workspaces::owner_id.ne(user.0));
    }
    let rows: Vec<(Workspace, String, String)> = query.load(conn)?;
    rows.into_iter()
        .map(|(workspace, owner_username, role)| {
            Ok(MemberWorkspace { workspace, owner_username, role: parse_role(&role)? })
        })
        .collect()
}

/// Every member of the workspace, the owner first, then by username.
pub fn members_of(conn: &mut DbConn, ws: WorkspaceId) -> Result<Vec<Member>, DbError> {
    let rows: Vec<(i64, String, String, String)> = workspace_members::table
        .inner_join(users::table)
        .filter(workspace_members::workspace_id.eq(ws.0))
        .select((users::id, users::username, users::email, workspace_members::role))
        .order(users::username.asc())
        .load(conn)?;
    let mut members = rows
        .into_iter()
        .map(|(user_id, username, email, role)| Ok(Member { user_id, username, email, role: parse_role(&role)? }))
        .collect::<Result<Vec<_>, DbError>>()?;
    members.sort_by_key(|m| m.role != Role::Owner);
    Ok(members)
}

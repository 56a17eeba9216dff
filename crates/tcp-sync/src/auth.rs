//! Authorization, in one place: every request that touches a workspace asks
//! [`authorize`] first (or [`check`] on the role read in the same database
//! call as its own read, before answering anything), with the user from the
//! handshake's JWT.
//!
//! **Architecture Invariant:** the role is read from the database on every
//! request, so a removed member or a downgraded editor loses access with the
//! very next request, on every node.

use filesync_core::db::{accounts, Db};
use filesync_core::proto::ErrorCode;
use filesync_core::{Role, UserId, WorkspaceId};

use crate::error::ReqError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Subscribe, list, download.
    Read,
    /// Upload, delete, move, make a directory.
    Write,
}

pub async fn authorize(db: &Db, user: UserId, ws: WorkspaceId, access: Access) -> Result<Role, ReqError> {
    let role = db.run(move |c| accounts::role_of(c, ws, user)).await?;
    check(role, ws, access)
}

/// The decision on a role read by the caller ([`accounts::role_of`], in the same database call as
/// the request's own read: one round trip less on the download path). Nothing read may be
/// answered before this says yes.
pub fn check(role: Option<Role>, ws: WorkspaceId, access: Access) -> Result<Role, ReqError> {
    match role {
        None => Err(ReqError::new(ErrorCode::Forbidden, format!("you are not a member of workspace {ws}"))),
        Some(role) if access == Access::Write && !role.can_write() => Err(ReqError::new(
            ErrorCode::Forbidden,
            format!("your role in workspace {ws} is {role}; only owners and editors may change files"),
        )),
        Some(role) => Ok(role),
    }
}

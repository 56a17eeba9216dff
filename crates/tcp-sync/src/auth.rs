//! Authorization, in one place: every request that touches a workspace asks
//! [`authorize`] first (or [`check`] on the role read in the same database
//! call as its own read, before answering anything), with the user from the
//! handshake's JWT. The rules are core's [`filesync_core::access`] policy,
//! the same the HTTP API applies; a non-member is told `workspace_not_found`,
//! exactly as for a workspace that does not exist.
//!
//! **Architecture Invariant:** the role is read from the database on every
//! request, so a removed member or a downgraded editor loses access with the
//! very next request, on every node.

use filesync_core::access::{self, Denied};
use filesync_core::db::{accounts, Db};
use filesync_core::proto::ErrorCode;
use filesync_core::{Role, UserId, WorkspaceId};

pub use filesync_core::access::Action;

use crate::error::ReqError;

pub async fn authorize(db: &Db, user: UserId, ws: WorkspaceId, action: Action) -> Result<Role, ReqError> {
    let role = db.run(move |c| accounts::role_of(c, ws, user)).await?;
    check(role, ws, action)
}

/// The decision on a role read by the caller ([`accounts::role_of`], in the same database call as
/// the request's own read: one round trip less on the download path). Nothing read may be
/// answered before this says yes.
pub fn check(role: Option<Role>, ws: WorkspaceId, action: Action) -> Result<Role, ReqError> {
    access::decide(role, action).map_err(|denied| match denied {
        Denied::NoSuchWorkspace => ReqError::new(ErrorCode::WorkspaceNotFound, format!("no workspace {ws}")),
        Denied::Role { role, .. } => {
            ReqError::new(ErrorCode::Forbidden, format!("your role in workspace {ws} is {role}: {}", denied.message()))
        }
    })
}

//! Authorization: the one place in the HTTP API that decides what a member
//! may do with a workspace. Handlers ask [`authorize`] and never read roles
//! themselves; the rules are core's [`filesync_core::access`] policy, the
//! same the sync node applies.
//!
//! A workspace the caller is not a member of answers exactly like one that
//! does not exist (404), so ids cannot be probed.

use filesync_core::access::{self, Denied};
use filesync_core::db::accounts::{self, Workspace};
use filesync_core::db::DbConn;
use filesync_core::{Role, UserId, WorkspaceId};

pub use filesync_core::access::Action;

use crate::error::{ApiError, ApiResult, ErrorCode};

pub const NOT_FOUND: ApiError = ApiError::NotFound { code: ErrorCode::WorkspaceNotFound, message: "no such workspace" };

impl From<Denied> for ApiError {
    fn from(denied: Denied) -> ApiError {
        match denied {
            Denied::NoSuchWorkspace => NOT_FOUND,
            Denied::Role { .. } => ApiError::Forbidden(denied.message()),
        }
    }
}

/// The workspace and the caller's role in it, if the caller may do `action`.
pub fn authorize(conn: &mut DbConn, user: UserId, ws: WorkspaceId, action: Action) -> ApiResult<(Workspace, Role)> {
    let role = access::decide(accounts::role_of(conn, ws, user)?, action)?;
    let workspace = accounts::workspace_by_id(conn, ws)?.ok_or(NOT_FOUND)?;
    Ok((workspace, role))
}

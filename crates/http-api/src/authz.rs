//! Authorization: the one place that decides what a member may do with a
//! workspace. Handlers ask [`authorize`] and never read roles themselves.
//!
//! A workspace the caller is not a member of answers exactly like one that
//! does not exist (404), so ids cannot be probed.

use filesync_core::db::accounts::{self, Workspace};
use filesync_core::db::DbConn;
use filesync_core::{Role, UserId, WorkspaceId};

use crate::error::{ApiError, ApiResult};

/// What the caller wants to do with a workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// List the members: any member.
    ViewMembers,
    /// Add members: the owner only.
    ManageMembers,
    /// List, download and read the history of files, see who is connected: any member.
    ReadFiles,
    /// Change files (restore a version): the owner and editors.
    WriteFiles,
}

const NOT_FOUND: ApiError = ApiError::NotFound { code: "workspace_not_found", message: "no such workspace" };

/// The workspace and the caller's role in it, if the caller may do `action`.
pub fn authorize(conn: &mut DbConn, user: UserId, ws: WorkspaceId, action: Action) -> ApiResult<(Workspace, Role)> {
    let role = accounts::role_of(conn, ws, user)?.ok_or(NOT_FOUND)?;
    let allowed = match action {
        Action::ViewMembers | Action::ReadFiles => true,
        Action::ManageMembers => role == Role::Owner,
        Action::WriteFiles => matches!(role, Role::Owner | Role::Editor),
    };
    if !allowed {
        return Err(ApiError::Forbidden(match action {
            Action::WriteFiles => "viewers may not change files",
            _ => "only the workspace's owner may do this",
        }));
    }
    let workspace = accounts::workspace_by_id(conn, ws)?.ok_or(NOT_FOUND)?;
    Ok((workspace, role))
}

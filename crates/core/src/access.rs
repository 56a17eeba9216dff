//! The access policy: who may do what with a workspace, decided from the
//! caller's role in it. Both daemons ask [`decide`] (the HTTP API from
//! `http-api/src/authz.rs`, the sync node from `tcp-sync/src/auth.rs`) and
//! only turn its answer into their wire form, so the rules exist once.
//!
//! A caller who is not a member learns nothing: the answer is
//! [`Denied::NoSuchWorkspace`], exactly as for a workspace that does not
//! exist (HTTP 404 `workspace_not_found`, protocol error `workspace_not_found`),
//! so workspace ids cannot be probed.

use crate::ids::Role;

/// What a member wants to do with a workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// List the members and pending invitations: any member.
    ViewMembers,
    /// Add or remove members, change their roles, invite, cancel invitations: the owner.
    ManageMembers,
    /// Leave the workspace: any member (the owner is then refused by a rule of its own, not by role).
    Leave,
    /// Rename or delete the workspace: the owner.
    ManageWorkspace,
    /// List, subscribe, download, read history, see who is connected: any member.
    ReadFiles,
    /// Upload, delete, move, make a directory, restore: the owner and editors.
    WriteFiles,
}

/// Why an action was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// Not a member, or no such workspace: indistinguishable on purpose.
    #[error("no such workspace")]
    NoSuchWorkspace,
    /// A member whose role does not allow the action.
    #[error("your role ({role}) does not allow this")]
    Role { role: Role, action: Action },
}

impl Denied {
    /// One line for the person refused.
    pub fn message(self) -> &'static str {
        match self {
            Denied::NoSuchWorkspace => "no such workspace",
            Denied::Role { action: Action::WriteFiles, .. } => "viewers may not change files",
            Denied::Role { .. } => "only the workspace's owner may do this",
        }
    }
}

impl Role {
    /// Whether a member with this role may do `action`.
    pub fn may(self, action: Action) -> bool {
        match action {
            Action::ViewMembers | Action::ReadFiles | Action::Leave => true,
            Action::ManageMembers | Action::ManageWorkspace => self == Role::Owner,
            Action::WriteFiles => matches!(self, Role::Owner | Role::Editor),
        }
    }

    /// Owners and editors may upload, delete, move and restore.
    pub fn can_write(self) -> bool {
        self.may(Action::WriteFiles)
    }
}

/// The decision for a caller whose role in the workspace is `role` (`None`: not a member, or no
/// such workspace). `Ok` carries the role back.
pub fn decide(role: Option<Role>, action: Action) -> Result<Role, Denied> {
    match role {
        None => Err(Denied::NoSuchWorkspace),
        Some(role) if role.may(action) => Ok(role),
        Some(role) => Err(Denied::Role { role, action }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_table() {
        use Action::*;
        let all = [ViewMembers, ManageMembers, Leave, ManageWorkspace, ReadFiles, WriteFiles];
        for action in all {
            assert_eq!(decide(None, action), Err(Denied::NoSuchWorkspace), "{action:?}");
            assert_eq!(decide(Some(Role::Owner), action), Ok(Role::Owner), "{action:?}");
        }
        let editor = [ViewMembers, Leave, ReadFiles, WriteFiles];
        let viewer = [ViewMembers, Leave, ReadFiles];
        for action in all {
            assert_eq!(decide(Some(Role::Editor), action).is_ok(), editor.contains(&action), "editor {action:?}");
            assert_eq!(decide(Some(Role::Viewer), action).is_ok(), viewer.contains(&action), "viewer {action:?}");
        }
        assert_eq!(decide(Some(Role::Viewer), WriteFiles).unwrap_err().message(), "viewers may not change files");
        assert!(!Role::Viewer.can_write() && Role::Editor.can_write() && Role::Owner.can_write());
    }
}

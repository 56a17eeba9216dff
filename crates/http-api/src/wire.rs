//! The JSON shapes of the public API. Database rows are converted to these by
//! hand, so a schema change can never leak a column (such as a password
//! hash) into a response.

use chrono::{DateTime, Utc};
use filesync_core::chunking::hex;
use filesync_core::db::accounts::{Member, MemberWorkspace, User};
use filesync_core::db::invitations::Invitation;
use filesync_core::db::usage::Usage;
use filesync_core::proto::presence::PresenceEntry;
use filesync_core::proto::{Change, ChangeOp, EntryKind};
use filesync_core::Role;
use serde::de::{self, Deserializer, Visitor};
use serde::Serialize;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct UserJson {
    pub id: i64,
    pub username: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
}

impl From<User> for UserJson {
    fn from(u: User) -> UserJson {
        UserJson { id: u.id, username: u.username, email: u.email, first_name: u.first_name, last_name: u.last_name }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OwnerJson {
    pub id: i64,
    pub username: String,
}

/// A workspace as listed for one member.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkspaceItem {
    pub id: i64,
    pub name: String,
    pub owner: OwnerJson,
    #[schema(schema_with = role_schema)]
    pub role: Role,
    /// Absent when the listing was asked for with `usage=false`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageJson>,
}

/// What a workspace stores, in logical bytes (file sizes; chunks shared between versions and
/// compression make the space taken at rest smaller).
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct UsageJson {
    /// The current version of every live file.
    pub live_bytes: u64,
    /// Older versions kept by the workspace's retention.
    pub history_bytes: u64,
    /// Deleted files in the trash, with their versions.
    pub trash_bytes: u64,
}

impl From<Usage> for UsageJson {
    fn from(u: Usage) -> UsageJson {
        UsageJson { live_bytes: u.live, history_bytes: u.history, trash_bytes: u.trash }
    }
}

impl WorkspaceItem {
    pub fn new(m: MemberWorkspace, usage: Option<Usage>) -> WorkspaceItem {
        WorkspaceItem {
            id: m.workspace.id,
            name: m.workspace.name,
            owner: OwnerJson { id: m.workspace.owner_id, username: m.owner_username },
            role: m.role,
            usage: usage.map(UsageJson::from),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberJson {
    pub user_id: i64,
    pub username: String,
    pub email: String,
    #[schema(schema_with = role_schema)]
    pub role: Role,
}

impl From<Member> for MemberJson {
    fn from(m: Member) -> MemberJson {
        MemberJson { user_id: m.user_id, username: m.username, email: m.email, role: m.role }
    }
}

/// A pending invitation: a workspace shared with an email that has no account yet.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvitationJson {
    pub id: i64,
    pub workspace_id: i64,
    pub email: String,
    #[schema(schema_with = role_schema)]
    pub role: Role,
    /// Always `pending`: an accepted invitation is a member, a cancelled one is gone.
    #[schema(schema_with = pending_schema)]
    pub status: &'static str,
    pub invited_by: OwnerJson,
    pub created_at: DateTime<Utc>,
}

impl From<Invitation> for InvitationJson {
    fn from(i: Invitation) -> InvitationJson {
        InvitationJson {
            id: i.id,
            workspace_id: i.workspace_id.0,
            email: i.email,
            role: i.role,
            status: "pending",
            invited_by: OwnerJson { id: i.invited_by.0, username: i.invited_by_username },
            created_at: i.created_at.and_utc(),
        }
    }
}

/// The current head of a path, as `/workspaces/{id}/files` lists it.
#[derive(Debug, Serialize, ToSchema)]
pub struct FileJson {
    pub path: String,
    /// `file` or `dir`.
    #[schema(schema_with = kind_schema)]
    pub kind: &'static str,
    /// The seq of the journal row that made this head (`version` and `seq` are the same number).
    pub version: i64,
    pub seq: i64,
    pub size: u64,
    /// BLAKE3 of the content, hex; `null` for a directory.
    pub hash: Option<String>,
    pub modified_by: Option<String>,
    pub modified_at: DateTime<Utc>,
}

impl FileJson {
    pub fn new(c: Change, modified_by: Option<String>) -> FileJson {
        FileJson {
            kind: c.kind.as_str(),
            version: c.seq,
            seq: c.seq,
            size: c.size,
            hash: content_hash(&c),
            modified_by,
            modified_at: committed_at(&c),
            path: c.path,
        }
    }
}

/// One journal row touching a path, as `/workspaces/{id}/history` lists it.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionJson {
    /// The seq of the journal row.
    pub version: i64,
    /// `put`, `delete`, `move` or `restore`.
    #[schema(schema_with = op_schema)]
    pub op: &'static str,
    #[schema(schema_with = kind_schema)]
    pub kind: &'static str,
    /// The path after the change (a move's destination).
    pub path: String,
    /// A move's source.
    pub from_path: Option<String>,
    /// True if `path` did not exist after this change.
    pub deleted: bool,
    pub size: u64,
    pub hash: Option<String>,
    /// The author's username (`null` if the account is gone).
    pub author: Option<String>,
    pub author_id: i64,
    pub device_id: String,
    /// When the version was committed.
    pub created_at: DateTime<Utc>,
}

impl VersionJson {
    pub fn new(c: Change, author: Option<String>) -> VersionJson {
        VersionJson {
            version: c.seq,
            op: c.op.as_str(),
            kind: c.kind.as_str(),
            deleted: c.deleted,
            size: c.size,
            hash: content_hash(&c),
            author,
            author_id: c.author_id.0,
            created_at: committed_at(&c),
            path: c.path,
            from_path: c.from_path,
            device_id: c.device_id,
        }
    }
}

/// A directory or a deletion has no content, hence no hash.
/// One journal entry in `/workspaces/{id}/activity`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActivityJson {
    pub seq: i64,
    /// `put`, `delete`, `move` or `restore` (a new directory is a `put` of kind `dir`).
    #[schema(schema_with = op_schema)]
    pub op: &'static str,
    #[schema(schema_with = kind_schema)]
    pub kind: &'static str,
    pub path: String,
    pub from_path: Option<String>,
    pub deleted: bool,
    /// The author's username; `None` if the account is gone.
    pub author: Option<String>,
    pub author_id: i64,
    /// The device that made the change (`http-api` for the API and the web UI).
    pub device_id: String,
    pub time: DateTime<Utc>,
}

impl ActivityJson {
    pub fn new(c: Change, author: Option<String>) -> ActivityJson {
        ActivityJson {
            seq: c.seq,
            op: c.op.as_str(),
            kind: c.kind.as_str(),
            deleted: c.deleted,
            author,
            author_id: c.author_id.0,
            time: committed_at(&c),
            path: c.path,
            from_path: c.from_path,
            device_id: c.device_id,
        }
    }
}

fn content_hash(c: &Change) -> Option<String> {
    (c.kind == EntryKind::File && !c.deleted).then(|| hex(&c.content_hash))
}

fn committed_at(c: &Change) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(c.committed_at_ms).unwrap_or_default()
}

/// One connected device, as `/workspaces/{id}/presence` lists it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ConnectedDevice)]
pub struct DeviceJson {
    pub user_id: i64,
    pub username: String,
    pub device_id: String,
    pub device_name: String,
    pub node_id: String,
    pub peer_addr: String,
    pub connected_at: DateTime<Utc>,
}

impl DeviceJson {
    pub fn new(e: PresenceEntry, username: String) -> DeviceJson {
        DeviceJson {
            user_id: e.user_id.0,
            username,
            device_id: e.device_id,
            device_name: e.device_name,
            node_id: e.node_id,
            peer_addr: e.peer_addr,
            connected_at: e.connected_at,
        }
    }
}

/// A string schema that allows exactly `names`.
fn one_of(names: impl IntoIterator<Item = &'static str>) -> utoipa::openapi::Object {
    ObjectBuilder::new().schema_type(Type::String).enum_values(Some(names)).build()
}

/// A member's role as the API writes it: `owner`, `editor` or `viewer`.
pub fn role_schema() -> utoipa::openapi::Object {
    // The match fails to compile when a role is added, so the list cannot fall behind.
    let _every_role_listed = |r: Role| match r {
        Role::Owner | Role::Editor | Role::Viewer => (),
    };
    one_of([Role::Owner, Role::Editor, Role::Viewer].map(Role::as_str))
}

/// A role that can be given to a member: `editor` or `viewer`.
pub fn given_role_schema() -> utoipa::openapi::Object {
    one_of([Role::Editor, Role::Viewer].map(Role::as_str))
}

/// An invitation's status: always `pending`.
pub fn pending_schema() -> utoipa::openapi::Object {
    one_of(["pending"])
}

/// An entry's kind: `file` or `dir`.
pub fn kind_schema() -> utoipa::openapi::Object {
    let _every_kind_listed = |k: EntryKind| match k {
        EntryKind::File | EntryKind::Dir => (),
    };
    one_of([EntryKind::File, EntryKind::Dir].map(EntryKind::as_str))
}

/// A journal operation: `put`, `delete`, `move` or `restore`.
pub fn op_schema() -> utoipa::openapi::Object {
    let _every_op_listed = |op: ChangeOp| match op {
        ChangeOp::Put | ChangeOp::Delete | ChangeOp::Move | ChangeOp::Restore => (),
    };
    one_of([ChangeOp::Put, ChangeOp::Delete, ChangeOp::Move, ChangeOp::Restore].map(ChangeOp::as_str))
}

/// An id given as a JSON number or, as the original client sends every
/// value, a string of digits.
pub fn id<'de, D: Deserializer<'de>>(de: D) -> Result<i64, D::Error> {
    struct IdVisitor;

    impl Visitor<'_> for IdVisitor {
        type Value = i64;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an id (a whole number)")
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::custom("id is too large"))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<i64, E> {
            v.trim().parse().map_err(|_| E::custom(format!("expected an id (a whole number), got {v:?}")))
        }
    }

    de.deserialize_any(IdVisitor)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Req {
        #[serde(deserialize_with = "super::id")]
        workspace_id: i64,
    }

    #[test]
    fn ids_from_numbers_and_digit_strings() {
        let parse = |s: &str| serde_json::from_str::<Req>(s).map(|r| r.workspace_id);
        assert_eq!(parse(r#"{"workspace_id": 7}"#).unwrap(), 7);
        assert_eq!(parse(r#"{"workspace_id": "7"}"#).unwrap(), 7);
        assert!(parse(r#"{"workspace_id": "7; DROP TABLE x"}"#).is_err());
        assert!(parse(r#"{"workspace_id": 1.5}"#).is_err());
        assert!(parse(r#"{"workspace_id": 18446744073709551615}"#).is_err());
        assert!(parse(r#"{}"#).is_err());
    }
}

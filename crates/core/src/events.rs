//! Events carried on the Redis bus (or the in-process bus of a single node),
//! as JSON. The journal in the database is the truth; these only wake the
//! nodes up, so a lost event costs latency, never data.
//!
//! | channel | payload |
//! |---|---|
//! | `filesync:user:<user_id>` | [`UserEvent`]: something about the user's memberships changed |
//! | `filesync:ws:<workspace_id>` | [`WorkspaceEvent`]: a change was committed, or membership changed |

use serde::{Deserialize, Serialize};

use crate::ids::{Role, UserId, WorkspaceId};
use crate::proto::Notice;

pub fn user_channel(user: UserId) -> String {
    format!("filesync:user:{user}")
}

pub fn workspace_channel(ws: WorkspaceId) -> String {
    format!("filesync:ws:{ws}")
}

/// Published on `filesync:user:<user_id>`, delivered to that user's connections as notifications.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum UserEvent {
    /// The user was added to a workspace.
    WorkspaceShared {
        workspace_id: WorkspaceId,
        workspace_name: String,
        role: Role,
        by_user_id: UserId,
        by_username: String,
    },
    /// The user was removed from a workspace: its subscriptions end at once.
    MemberRemoved { workspace_id: WorkspaceId },
    /// The user's role in a workspace changed.
    RoleChanged { workspace_id: WorkspaceId, role: Role },
    /// The workspace was deleted by its owner: like `MemberRemoved` for every member.
    WorkspaceDeleted { workspace_id: WorkspaceId },
    /// Credentials were revoked: every daemon forgets what it cached about the user's tokens,
    /// and nodes disconnect the connections whose token is no longer valid (see [`Revoked`]).
    TokensRevoked { revoked: Revoked },
}

impl UserEvent {
    /// The workspace this event takes away from the user, if it does.
    pub fn ends_access_to(&self) -> Option<WorkspaceId> {
        match self {
            UserEvent::MemberRemoved { workspace_id } | UserEvent::WorkspaceDeleted { workspace_id } => {
                Some(*workspace_id)
            }
            UserEvent::WorkspaceShared { .. } | UserEvent::RoleChanged { .. } | UserEvent::TokensRevoked { .. } => None,
        }
    }
}

/// Which of a user's tokens a [`UserEvent::TokensRevoked`] ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "what", rename_all = "snake_case")]
pub enum Revoked {
    /// One device (a logout, or `DELETE /devices/{id}`): the tokens issued to it.
    Device { device_id: i64 },
    /// The password changed: every token of a generation below `generation`.
    Password { generation: i64 },
    /// The account was deleted: every token.
    Account,
}

impl Revoked {
    /// Whether a token with this generation, issued to this device, is ended by the event.
    pub fn ends(self, generation: i64, device: i64) -> bool {
        match self {
            Revoked::Device { device_id } => device == device_id,
            Revoked::Password { generation: current } => generation < current,
            Revoked::Account => true,
        }
    }

    /// One line for the person whose device was signed out.
    pub fn reason(self) -> &'static str {
        match self {
            Revoked::Device { .. } => "this device was signed out (logged out or removed from the account's devices)",
            Revoked::Password { .. } => "the account's password was changed",
            Revoked::Account => "the account was deleted",
        }
    }
}

/// Published on `filesync:ws:<workspace_id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkspaceEvent {
    /// Change `seq` was committed to the journal; nodes read it (and any before it they missed) from the database.
    Committed { workspace_id: WorkspaceId, seq: i64 },
    /// A large upload's progress ([`Notice::upload_workspace`] is `workspace_id`): nodes pass it
    /// to the workspace's subscribers as a notification. Losing one costs only streaming. The
    /// notice travels compact ([`compact_notice`]).
    Upload {
        workspace_id: WorkspaceId,
        #[serde(with = "compact_notice")]
        notice: Notice,
    },
}

/// A notice on the bus as a JSON string: its postcard encoding (the bytes of a sync
/// `Notification` frame's body), in standard base64. An `UploadStarted` carries the whole chunk
/// list: ~47 bytes a chunk this way (~0.75 MB per GiB), against ~135 as a JSON object of byte
/// arrays. The object form (what nodes before it published) is still read.
pub mod compact_notice {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{de, ser, Deserialize, Deserializer, Serializer};

    use crate::proto::Notice;

    pub fn serialize<S: Serializer>(notice: &Notice, s: S) -> Result<S::Ok, S::Error> {
        let bytes = postcard::to_allocvec(notice).map_err(ser::Error::custom)?;
        s.serialize_str(&STANDARD.encode(bytes))
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        Compact(String),
        Object(Notice),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Notice, D::Error> {
        match Form::deserialize(d)? {
            Form::Compact(text) => {
                let bytes = STANDARD.decode(text).map_err(de::Error::custom)?;
                postcard::from_bytes(&bytes).map_err(de::Error::custom)
            }
            Form::Object(notice) => Ok(notice),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upload notice on the bus is its postcard bytes in base64: a 1 GiB file's announcement
    /// (16,384 chunks) weighs a third of the JSON object it was; the object form is still read.
    #[test]
    fn upload_notices_travel_compact_and_the_object_form_is_still_read() {
        let ws = WorkspaceId(7);
        let gone = Notice::UploadAbandoned { workspace_id: ws, content_hash: [1; 32] };
        let gone = WorkspaceEvent::Upload { workspace_id: ws, notice: gone };
        let json = serde_json::to_string(&gone).unwrap();
        // Variant 6 (`UploadAbandoned`), workspace 7 (zigzag varint 14), the 32-byte hash.
        assert_eq!(
            json,
            r#"{"type":"upload","workspace_id":7,"notice":"Bg4BAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQ=="}"#
        );
        assert_eq!(serde_json::from_str::<WorkspaceEvent>(&json).unwrap(), gone);
        let chunks = (0..16_384u32)
            .map(|i| crate::chunking::ChunkRef { hash: *blake3::hash(&i.to_le_bytes()).as_bytes(), len: 65_536 })
            .collect();
        let notice = Notice::UploadStarted {
            workspace_id: ws,
            path: "video/big.mkv".into(),
            size: 1 << 30,
            content_hash: [2; 32],
            device_id: "laptop-1".into(),
            chunks,
        };
        let started = WorkspaceEvent::Upload { workspace_id: ws, notice: notice.clone() };
        let compact = serde_json::to_string(&started).unwrap();
        let object = serde_json::json!({"type": "upload", "workspace_id": 7, "notice": notice}).to_string();
        assert!(compact.len() < 800_000 && object.len() > 2 * compact.len(), "{} vs {}", compact.len(), object.len());
        assert_eq!(serde_json::from_str::<WorkspaceEvent>(&compact).unwrap(), started);
        assert_eq!(serde_json::from_str::<WorkspaceEvent>(&object).unwrap(), started, "the object form is read");
        let garbled = r#"{"type":"upload","workspace_id":7,"notice":"Bg4BAQ=="}"#;
        assert!(serde_json::from_str::<WorkspaceEvent>(garbled).is_err(), "a short notice is refused");
    }

    #[test]
    fn revocations_end_the_tokens_they_name() {
        assert!(Revoked::Device { device_id: 4 }.ends(0, 4));
        assert!(!Revoked::Device { device_id: 4 }.ends(0, 5));
        assert!(Revoked::Password { generation: 2 }.ends(1, 9));
        assert!(!Revoked::Password { generation: 2 }.ends(2, 9));
        assert!(Revoked::Account.ends(7, 7));
    }

    #[test]
    fn user_event_json_is_stable() {
        let ev = UserEvent::WorkspaceShared {
            workspace_id: WorkspaceId(7),
            workspace_name: "Docs".into(),
            role: Role::Editor,
            by_user_id: UserId(1),
            by_username: "alice".into(),
        };
        let json = serde_json::to_value(&ev).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "workspace_shared", "workspace_id": 7, "workspace_name": "Docs",
                               "role": "editor", "by_user_id": 1, "by_username": "alice"})
        );
        assert_eq!(user_channel(UserId(3)), "filesync:user:3");
        let gone = UserEvent::WorkspaceDeleted { workspace_id: WorkspaceId(7) };
        assert_eq!(
            serde_json::to_value(&gone).unwrap(),
            serde_json::json!({"type": "workspace_deleted", "workspace_id": 7})
        );
        assert_eq!(gone.ends_access_to(), Some(WorkspaceId(7)));
        assert_eq!(UserEvent::MemberRemoved { workspace_id: WorkspaceId(8) }.ends_access_to(), Some(WorkspaceId(8)));
        assert_eq!(UserEvent::RoleChanged { workspace_id: WorkspaceId(8), role: Role::Viewer }.ends_access_to(), None);
        let ev = UserEvent::TokensRevoked { revoked: Revoked::Device { device_id: 4 } };
        assert_eq!(
            serde_json::to_value(&ev).unwrap(),
            serde_json::json!({"type": "tokens_revoked", "revoked": {"what": "device", "device_id": 4}})
        );
        assert_eq!(workspace_channel(WorkspaceId(9)), "filesync:ws:9");
    }
}

//! Presence: who is connected to which node, right now.
//!
//! A node records every connection that passed the handshake in Redis, and
//! keeps it alive with each heartbeat; a node that dies simply stops
//! refreshing, and its entries expire after [`PRESENCE_TTL_SECS`].
//!
//! Every key starts with the deployment's prefix (`FILESYNC_REDIS_PREFIX`,
//! default `filesync`, shown here).
//!
//! | key | type | content |
//! |---|---|---|
//! | `filesync:presence:conn:<node_id>:<session_id>` | hash, TTL [`PRESENCE_TTL_SECS`] | the fields of [`PresenceEntry`] |
//! | `filesync:presence:user:<user_id>` | sorted set, TTL [`PRESENCE_TTL_SECS`] | member `<node_id>:<session_id>`, score = expiry (Unix ms) |
//!
//! To list a user's devices: `ZREMRANGEBYSCORE user-key -inf <now_ms>`, then
//! `ZRANGE user-key 0 -1`, then `HGETALL` each conn key (a missing hash means
//! the connection just ended). Both keys are deleted when a connection closes.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::UserId;

/// Lifetime of a presence entry without a refresh.
pub const PRESENCE_TTL_SECS: u64 = 90;

/// The default key prefix (`FILESYNC_REDIS_PREFIX`); the `*_in` functions take another.
pub const DEFAULT_PREFIX: &str = "filesync";

pub fn conn_key(node_id: &str, session_id: &str) -> String {
    conn_key_in(DEFAULT_PREFIX, node_id, session_id)
}

pub fn conn_key_in(prefix: &str, node_id: &str, session_id: &str) -> String {
    format!("{prefix}:presence:conn:{node_id}:{session_id}")
}

pub fn user_key(user: UserId) -> String {
    user_key_in(DEFAULT_PREFIX, user)
}

pub fn user_key_in(prefix: &str, user: UserId) -> String {
    format!("{prefix}:presence:user:{user}")
}

/// The member of a user's sorted set that names a connection.
pub fn member(node_id: &str, session_id: &str) -> String {
    format!("{node_id}:{session_id}")
}

/// The conn key of a member of a user's sorted set.
pub fn conn_key_of_member(member: &str) -> String {
    conn_key_of_member_in(DEFAULT_PREFIX, member)
}

pub fn conn_key_of_member_in(prefix: &str, member: &str) -> String {
    format!("{prefix}:presence:conn:{member}")
}

/// One connected device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceEntry {
    pub node_id: String,
    pub session_id: String,
    pub user_id: UserId,
    pub device_id: String,
    pub device_name: String,
    pub peer_addr: String,
    pub connected_at: DateTime<Utc>,
}

impl PresenceEntry {
    /// The hash fields (connected_at as RFC 3339).
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("node_id", self.node_id.clone()),
            ("session_id", self.session_id.clone()),
            ("user_id", self.user_id.to_string()),
            ("device_id", self.device_id.clone()),
            ("device_name", self.device_name.clone()),
            ("peer_addr", self.peer_addr.clone()),
            ("connected_at", self.connected_at.to_rfc3339()),
        ]
    }

    /// Reads a hash back; `None` if a field is missing or unreadable.
    pub fn from_fields(fields: &HashMap<String, String>) -> Option<PresenceEntry> {
        let get = |k: &str| fields.get(k).cloned();
        Some(PresenceEntry {
            node_id: get("node_id")?,
            session_id: get("session_id")?,
            user_id: get("user_id")?.parse().ok()?,
            device_id: get("device_id")?,
            device_name: get("device_name")?,
            peer_addr: get("peer_addr")?,
            connected_at: DateTime::parse_from_rfc3339(&get("connected_at")?).ok()?.with_timezone(&Utc),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_and_keys_are_namespaced() {
        let e = PresenceEntry {
            node_id: "n1".into(),
            session_id: "s1".into(),
            user_id: UserId(5),
            device_id: "dev".into(),
            device_name: "Laptop".into(),
            peer_addr: "127.0.0.1:5000".into(),
            connected_at: DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z").unwrap().with_timezone(&Utc),
        };
        let map: HashMap<String, String> = e.to_fields().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        assert_eq!(PresenceEntry::from_fields(&map), Some(e));
        assert_eq!(conn_key("n1", "s1"), conn_key_of_member(&member("n1", "s1")));
        assert_eq!(user_key(UserId(5)), "filesync:presence:user:5");
        assert!(PresenceEntry::from_fields(&HashMap::new()).is_none());
    }
}

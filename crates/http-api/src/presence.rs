//! Who is connected now, read from the Redis layout the sync nodes write
//! (`filesync_core::proto::presence`).
//!
//! Read-only: an entry whose expiry has passed is skipped, never removed
//! here; cleaning up belongs to the nodes that own the entries. A node
//! without Redis keeps its presence in its own memory, which this process
//! cannot see.

use std::collections::HashMap;

use chrono::Utc;
use filesync_core::proto::presence::{conn_key_of_member, user_key, PresenceEntry};
use filesync_core::UserId;
use redis::aio::ConnectionManager;
use redis::RedisError;

/// The live connections of `users`, in two round trips whatever their number.
pub async fn devices_of(conn: &mut ConnectionManager, users: &[UserId]) -> Result<Vec<PresenceEntry>, RedisError> {
    if users.is_empty() {
        return Ok(Vec::new());
    }
    let now_ms = Utc::now().timestamp_millis();
    let mut pipe = redis::pipe();
    for user in users {
        pipe.zrangebyscore(user_key(*user), now_ms, "+inf");
    }
    let members: Vec<Vec<String>> = pipe.query_async(conn).await?;
    let mut pipe = redis::pipe();
    let mut owners = Vec::new();
    for (user, members) in users.iter().zip(members) {
        for member in members {
            pipe.hgetall(conn_key_of_member(&member));
            owners.push(*user);
        }
    }
    if owners.is_empty() {
        return Ok(Vec::new());
    }
    let hashes: Vec<HashMap<String, String>> = pipe.query_async(conn).await?;
    // A missing hash is a connection that just ended; a hash naming another
    // user than the set it was listed in is not trusted.
    Ok(hashes
        .iter()
        .zip(owners)
        .filter_map(|(fields, owner)| PresenceEntry::from_fields(fields).filter(|e| e.user_id == owner))
        .collect())
}

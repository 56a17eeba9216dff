//! Who is connected: written by the sync nodes, read by the HTTP API.
//!
//! On Redis the entries have TTLs (layout in `filesync_core::proto::presence`)
//! and every process of the deployment sees them; on the in-process bus they
//! are a map in memory shared by whatever holds the same [`Bus`](crate::Bus)
//! (`filesync-server`'s API and node). Writes are logged and ignored on
//! failure: presence is informative, never a reason to drop a sync connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use filesync_core::proto::presence::{
    conn_key_in, conn_key_of_member_in, member, user_key_in, PresenceEntry, PRESENCE_TTL_SECS,
};
use filesync_core::UserId;
use redis::aio::ConnectionManager;

use crate::REDIS_TIMEOUT;

/// Why presence could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("Redis did not answer in time")]
    Timeout,
}

/// Presence; cheap to clone (clones share the entries).
#[derive(Clone)]
pub struct Presence {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Local(Arc<Mutex<HashMap<String, PresenceEntry>>>),
    /// The connection, and the deployment's key prefix.
    Redis(ConnectionManager, Arc<str>),
}

impl std::fmt::Debug for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            Kind::Local(_) => f.write_str("Presence::Local"),
            Kind::Redis(..) => f.write_str("Presence::Redis"),
        }
    }
}

fn expiry_ms() -> i64 {
    Utc::now().timestamp_millis() + (PRESENCE_TTL_SECS as i64) * 1000
}

impl Presence {
    pub(crate) fn local() -> Presence {
        Presence { kind: Kind::Local(Arc::default()) }
    }

    pub(crate) fn redis(conn: ConnectionManager, prefix: &str) -> Presence {
        Presence { kind: Kind::Redis(conn, prefix.into()) }
    }

    /// True when entries live in Redis (visible to every process of the deployment).
    pub fn is_redis(&self) -> bool {
        matches!(self.kind, Kind::Redis(..))
    }

    /// Records a new connection.
    pub async fn add(&self, e: &PresenceEntry) {
        match &self.kind {
            Kind::Local(map) => {
                map.lock().unwrap_or_else(|p| p.into_inner()).insert(e.session_id.clone(), e.clone());
            }
            Kind::Redis(conn, prefix) => {
                let key = conn_key_in(prefix, &e.node_id, &e.session_id);
                let mut pipe = redis::pipe();
                pipe.atomic().hset_multiple(&key, &e.to_fields()).ignore();
                add_refresh(&mut pipe, prefix, e);
                run(conn, pipe, "add").await;
            }
        }
    }

    /// Extends the entry's life (on heartbeat).
    pub async fn refresh(&self, e: &PresenceEntry) {
        if let Kind::Redis(conn, prefix) = &self.kind {
            let mut pipe = redis::pipe();
            pipe.atomic();
            add_refresh(&mut pipe, prefix, e);
            run(conn, pipe, "refresh").await;
        }
    }

    /// The connection ended.
    pub async fn remove(&self, e: &PresenceEntry) {
        match &self.kind {
            Kind::Local(map) => {
                map.lock().unwrap_or_else(|p| p.into_inner()).remove(&e.session_id);
            }
            Kind::Redis(conn, prefix) => {
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .del(conn_key_in(prefix, &e.node_id, &e.session_id))
                    .ignore()
                    .zrem(user_key_in(prefix, e.user_id), member(&e.node_id, &e.session_id))
                    .ignore();
                run(conn, pipe, "remove").await;
            }
        }
    }

    /// Deletes the entries a previous run of `node_id` left behind (it was killed, so nothing removed them),
    /// instead of showing its old connections for up to a TTL. Only for a configured node id: node ids must
    /// be unique, or one node would erase another's entries.
    pub async fn purge_node(&self, node_id: &str) {
        let Kind::Redis(conn, prefix) = &self.kind else { return };
        let pattern = format!("{}*", conn_key_in(&glob_escape(prefix), &glob_escape(node_id), ""));
        let mut conn = conn.clone();
        let purge = async {
            let keys: Vec<String> = {
                use futures::TryStreamExt;
                let iter = redis::AsyncCommands::scan_match::<_, String>(&mut conn, &pattern).await?;
                iter.try_collect().await?
            };
            for batch in keys.chunks(500) {
                redis::AsyncCommands::del::<_, ()>(&mut conn, batch).await?;
            }
            Ok::<usize, redis::RedisError>(keys.len())
        };
        match tokio::time::timeout(REDIS_TIMEOUT * 5, purge).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => {
                tracing::info!(node.id = %node_id, entries = n, "removed presence left by this node's last run")
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot clear this node's old presence entries"),
            Err(_) => tracing::warn!("clearing this node's old presence entries timed out"),
        }
    }

    /// The entries kept in this process's memory (none on Redis).
    pub fn local_entries(&self) -> Vec<PresenceEntry> {
        match &self.kind {
            Kind::Local(map) => map.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect(),
            Kind::Redis(..) => Vec::new(),
        }
    }

    /// The live connections of `users` (on Redis in two round trips whatever
    /// their number; an expired entry is skipped, never removed here: cleaning
    /// up belongs to the nodes that own the entries).
    pub async fn devices_of(&self, users: &[UserId]) -> Result<Vec<PresenceEntry>, PresenceError> {
        match &self.kind {
            Kind::Local(map) => {
                let map = map.lock().unwrap_or_else(|p| p.into_inner());
                Ok(map.values().filter(|e| users.contains(&e.user_id)).cloned().collect())
            }
            Kind::Redis(conn, prefix) => {
                let mut conn = conn.clone();
                tokio::time::timeout(REDIS_TIMEOUT, redis_devices_of(&mut conn, prefix, users))
                    .await
                    .map_err(|_| PresenceError::Timeout)?
                    .map_err(PresenceError::from)
            }
        }
    }
}

async fn redis_devices_of(
    conn: &mut ConnectionManager,
    prefix: &str,
    users: &[UserId],
) -> Result<Vec<PresenceEntry>, redis::RedisError> {
    if users.is_empty() {
        return Ok(Vec::new());
    }
    let now_ms = Utc::now().timestamp_millis();
    let mut pipe = redis::pipe();
    for user in users {
        pipe.zrangebyscore(user_key_in(prefix, *user), now_ms, "+inf");
    }
    let members: Vec<Vec<String>> = pipe.query_async(conn).await?;
    let mut pipe = redis::pipe();
    let mut owners = Vec::new();
    for (user, members) in users.iter().zip(members) {
        for member in members {
            pipe.hgetall(conn_key_of_member_in(prefix, &member));
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

/// `s` matched literally in a Redis glob pattern.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn add_refresh(pipe: &mut redis::Pipeline, prefix: &str, e: &PresenceEntry) {
    let ttl = PRESENCE_TTL_SECS as i64;
    let ukey = user_key_in(prefix, e.user_id);
    pipe.expire(conn_key_in(prefix, &e.node_id, &e.session_id), ttl)
        .ignore()
        .zadd(&ukey, member(&e.node_id, &e.session_id), expiry_ms())
        .ignore()
        .expire(&ukey, ttl)
        .ignore();
}

async fn run(conn: &ConnectionManager, pipe: redis::Pipeline, what: &str) {
    let mut conn = conn.clone();
    match tokio::time::timeout(REDIS_TIMEOUT, pipe.query_async::<()>(&mut conn)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, op = what, "presence update failed"),
        Err(_) => tracing::warn!(op = what, "presence update timed out"),
    }
}

//! Recording who is connected: Redis with TTLs (layout in
//! `filesync_core::proto::presence`), or an in-process map on a single node.
//! Failures are logged and ignored: presence is informative, never a reason
//! to drop a sync connection.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use filesync_core::proto::presence::{conn_key, member, user_key, PresenceEntry, PRESENCE_TTL_SECS};
use redis::aio::ConnectionManager;

const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

pub enum Presence {
    Local(Mutex<HashMap<String, PresenceEntry>>),
    Redis(ConnectionManager),
}

impl std::fmt::Debug for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Presence::Local(_) => f.write_str("Presence::Local"),
            Presence::Redis(_) => f.write_str("Presence::Redis"),
        }
    }
}

fn expiry_ms() -> i64 {
    chrono::Utc::now().timestamp_millis() + (PRESENCE_TTL_SECS as i64) * 1000
}

impl Presence {
    /// Records a new connection.
    pub async fn add(&self, e: &PresenceEntry) {
        match self {
            Presence::Local(map) => {
                map.lock().unwrap_or_else(|p| p.into_inner()).insert(e.session_id.clone(), e.clone());
            }
            Presence::Redis(conn) => {
                let key = conn_key(&e.node_id, &e.session_id);
                let mut pipe = redis::pipe();
                pipe.atomic().hset_multiple(&key, &e.to_fields()).ignore();
                add_refresh(&mut pipe, e);
                run(conn, pipe, "add").await;
            }
        }
    }

    /// Extends the entry's life (on heartbeat).
    pub async fn refresh(&self, e: &PresenceEntry) {
        if let Presence::Redis(conn) = self {
            let mut pipe = redis::pipe();
            pipe.atomic();
            add_refresh(&mut pipe, e);
            run(conn, pipe, "refresh").await;
        }
    }

    pub async fn remove(&self, e: &PresenceEntry) {
        match self {
            Presence::Local(map) => {
                map.lock().unwrap_or_else(|p| p.into_inner()).remove(&e.session_id);
            }
            Presence::Redis(conn) => {
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .del(conn_key(&e.node_id, &e.session_id))
                    .ignore()
                    .zrem(user_key(e.user_id), member(&e.node_id, &e.session_id))
                    .ignore();
                run(conn, pipe, "remove").await;
            }
        }
    }

    /// Deletes the entries a previous run of `node_id` left behind (it was killed, so nothing removed them),
    /// instead of showing its old connections for up to a TTL. Only for a configured node id: node ids must
    /// be unique, or one node would erase another's entries.
    pub async fn purge_node(&self, node_id: &str) {
        let Presence::Redis(conn) = self else { return };
        let pattern = format!("{}*", conn_key(&glob_escape(node_id), ""));
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

    /// This node's connections (single-node mode only; with Redis, read Redis).
    pub fn local_entries(&self) -> Vec<PresenceEntry> {
        match self {
            Presence::Local(map) => map.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect(),
            Presence::Redis(_) => Vec::new(),
        }
    }
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

fn add_refresh(pipe: &mut redis::Pipeline, e: &PresenceEntry) {
    let ttl = PRESENCE_TTL_SECS as i64;
    let ukey = user_key(e.user_id);
    pipe.expire(conn_key(&e.node_id, &e.session_id), ttl)
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

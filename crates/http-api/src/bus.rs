//! Announcements to the sync layer over Redis pub/sub: shares on the user's
//! channel, restores on the workspace's. The database is the truth and has
//! already committed when an event is published, so a Redis outage only
//! delays notifications: it is logged and never fails a request. The same
//! connection serves presence reads ([`crate::presence`]).

use std::time::Duration;

use filesync_core::events::{user_channel, workspace_channel, UserEvent, WorkspaceEvent};
use filesync_core::secret::redact_url;
use filesync_core::{UserId, WorkspaceId};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;
use serde::Serialize;

/// Longest a request waits on Redis before giving up on an announcement or a read.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct Bus {
    conn: ConnectionManager,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").finish_non_exhaustive()
    }
}

impl Bus {
    /// Checks the URL now; connects on first use (and reconnects after an
    /// outage) so the API starts and serves while Redis is down.
    /// Must be called inside a tokio runtime, which then drives the connection.
    pub fn new(url: &str) -> Result<Bus, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        tracing::info!(redis.url = %redact_url(url), "publishing bus events to Redis");
        Ok(Bus { conn })
    }

    /// Publishes `event` on the user's channel; failures are logged, not returned.
    pub async fn publish_user(&self, user: UserId, event: &UserEvent) {
        self.publish(user_channel(user), event).await;
    }

    /// Publishes `event` on the workspace's channel, which the sync nodes
    /// watch; failures are logged, not returned.
    pub async fn publish_workspace(&self, ws: WorkspaceId, event: &WorkspaceEvent) {
        self.publish(workspace_channel(ws), event).await;
    }

    async fn publish(&self, channel: String, event: &impl Serialize) {
        let payload = match serde_json::to_string(event) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode bus event");
                return;
            }
        };
        let mut conn = self.conn.clone();
        match tokio::time::timeout(REDIS_TIMEOUT, conn.publish::<_, _, i64>(&channel, payload)).await {
            Ok(Ok(receivers)) => tracing::debug!(bus.channel = %channel, bus.receivers = receivers, "event published"),
            Ok(Err(e)) => tracing::warn!(bus.channel = %channel, error = %e, "Redis publish failed; event dropped"),
            Err(_) => tracing::warn!(bus.channel = %channel, "Redis publish timed out; event dropped"),
        }
    }

    /// The shared connection, for reads such as presence.
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }
}

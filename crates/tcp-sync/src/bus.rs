//! The bus between nodes: Redis pub/sub, or an in-process stand-in on a
//! single node. It only wakes nodes up; the journal is the truth.
//!
//! A node watches `filesync:ws:<id>` for each workspace its clients
//! subscribe to and `filesync:user:<id>` for each user connected to it.
//! Everything received goes to one channel of [`BusInput`]s that the hub
//! reads. After every (re)connection to Redis the bus first resubscribes,
//! then sends [`BusInput::Resync`]: whatever was published while it was away
//! is then read from the journal, so a lost message costs latency, not data.

use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// The field a node adds to the workspace events it publishes: when the change was committed (Unix ms).
/// Others ignore it; a node that receives it measures the bus lag. The HTTP API's events carry none.
const COMMITTED_AT: &str = "committed_at_ms";

/// `event` as JSON with the commit time added.
pub fn stamped(event: &filesync_core::events::WorkspaceEvent) -> Option<String> {
    let mut value = serde_json::to_value(event).ok()?;
    value.as_object_mut()?.insert(COMMITTED_AT.to_owned(), chrono::Utc::now().timestamp_millis().into());
    serde_json::to_string(&value).ok()
}

/// The commit time of a [`stamped`] event, if it has one.
pub fn committed_at(payload: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let value: serde_json::Value = serde_json::from_str(payload).ok()?;
    chrono::DateTime::from_timestamp_millis(value.get(COMMITTED_AT)?.as_i64()?)
}

/// What the bus hands to the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusInput {
    Message {
        channel: String,
        payload: String,
    },
    /// The bus may have missed messages: re-read every watched workspace's journal.
    Resync,
}

/// Publishing and channel interest. Implementations never fail loudly: a
/// lost publication is recovered by the journal.
pub trait Bus: Send + Sync + Debug + 'static {
    /// Publishes; false if it could not be sent.
    fn publish(&self, channel: String, payload: String) -> BoxFuture<'static, bool>;
    /// Starts receiving `channel` (idempotent).
    fn watch(&self, channel: &str);
    /// Stops receiving `channel`.
    fn unwatch(&self, channel: &str);
    /// True if the bus answers now (readiness).
    fn healthy(&self) -> BoxFuture<'static, bool>;
}

/// The single-node bus: a publication reaches this node's hub if it watches the channel.
#[derive(Debug)]
pub struct LocalBus {
    watched: Mutex<HashSet<String>>,
    out: mpsc::UnboundedSender<BusInput>,
}

impl LocalBus {
    pub fn new(out: mpsc::UnboundedSender<BusInput>) -> LocalBus {
        LocalBus { watched: Mutex::new(HashSet::new()), out }
    }
}

impl Bus for LocalBus {
    fn publish(&self, channel: String, payload: String) -> BoxFuture<'static, bool> {
        let watched = self.watched.lock().unwrap_or_else(|p| p.into_inner()).contains(&channel);
        let sent = !watched || self.out.send(BusInput::Message { channel, payload }).is_ok();
        futures::future::ready(sent).boxed()
    }

    fn watch(&self, channel: &str) {
        self.watched.lock().unwrap_or_else(|p| p.into_inner()).insert(channel.to_owned());
    }

    fn unwatch(&self, channel: &str) {
        self.watched.lock().unwrap_or_else(|p| p.into_inner()).remove(channel);
    }

    fn healthy(&self) -> BoxFuture<'static, bool> {
        futures::future::ready(true).boxed()
    }
}

enum Ctl {
    Watch(String),
    Unwatch(String),
}

/// Redis pub/sub: a connection manager for publishing, and one dedicated
/// subscriber connection driven by a background task that reconnects.
pub struct RedisBus {
    publisher: ConnectionManager,
    ctl: mpsc::UnboundedSender<Ctl>,
    metrics: Metrics,
}

impl Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus").finish_non_exhaustive()
    }
}

const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

impl RedisBus {
    /// Does not connect yet: a node starts (and serves single-node traffic) while Redis is down.
    pub fn start(
        url: &str,
        out: mpsc::UnboundedSender<BusInput>,
        metrics: Metrics,
        stop: CancellationToken,
    ) -> anyhow::Result<Arc<RedisBus>> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(MAX_BACKOFF);
        let publisher = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        let (ctl, ctl_rx) = mpsc::unbounded_channel();
        tokio::spawn(subscriber_loop(client, ctl_rx, out, metrics.clone(), stop));
        Ok(Arc::new(RedisBus { publisher, ctl, metrics }))
    }

    /// A connection for other Redis work (presence), sharing the publisher's manager.
    pub fn connection(&self) -> ConnectionManager {
        self.publisher.clone()
    }
}

impl Bus for RedisBus {
    fn publish(&self, channel: String, payload: String) -> BoxFuture<'static, bool> {
        let mut conn = self.publisher.clone();
        let metrics = self.metrics.clone();
        async move {
            let sent = tokio::time::timeout(REDIS_TIMEOUT, conn.publish::<_, _, usize>(&channel, payload)).await;
            let ok = matches!(sent, Ok(Ok(_)));
            if ok {
                metrics.bus_messages_published.inc();
            } else {
                metrics.bus_publish_failures.inc();
                tracing::warn!(%channel, "bus publication failed; nodes will catch up from the journal");
            }
            ok
        }
        .boxed()
    }

    fn watch(&self, channel: &str) {
        let _ = self.ctl.send(Ctl::Watch(channel.to_owned()));
    }

    fn unwatch(&self, channel: &str) {
        let _ = self.ctl.send(Ctl::Unwatch(channel.to_owned()));
    }

    fn healthy(&self) -> BoxFuture<'static, bool> {
        let mut conn = self.publisher.clone();
        async move {
            matches!(
                tokio::time::timeout(REDIS_TIMEOUT, redis::cmd("PING").query_async::<String>(&mut conn)).await,
                Ok(Ok(_))
            )
        }
        .boxed()
    }
}

/// Keeps one subscriber connection alive and subscribed to the wanted channels.
async fn subscriber_loop(
    client: redis::Client,
    mut ctl: mpsc::UnboundedReceiver<Ctl>,
    out: mpsc::UnboundedSender<BusInput>,
    metrics: Metrics,
    stop: CancellationToken,
) {
    let mut wanted: HashSet<String> = HashSet::new();
    let mut backoff = Duration::from_millis(50);
    let mut first = true;
    loop {
        if stop.is_cancelled() {
            return;
        }
        let connected = tokio::time::timeout(REDIS_TIMEOUT, client.get_async_pubsub()).await;
        let (mut sink, mut stream) = match connected {
            Ok(Ok(pubsub)) => pubsub.split(),
            _ => {
                // Keep track of interest changes while Redis is away.
                let wait = tokio::time::sleep(backoff);
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        () = &mut wait => break,
                        () = stop.cancelled() => return,
                        cmd = ctl.recv() => match cmd {
                            None => return,
                            Some(Ctl::Watch(ch)) => { wanted.insert(ch); }
                            Some(Ctl::Unwatch(ch)) => { wanted.remove(&ch); }
                        },
                    }
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let mut ok = true;
        for ch in &wanted {
            if !matches!(tokio::time::timeout(REDIS_TIMEOUT, sink.subscribe(ch)).await, Ok(Ok(()))) {
                ok = false;
                break;
            }
        }
        if !ok {
            continue;
        }
        if !first {
            metrics.bus_reconnects.inc();
            tracing::info!("reconnected to the Redis bus");
        }
        first = false;
        backoff = Duration::from_millis(50);
        // Subscribed again: anything published meanwhile is in the journal.
        if out.send(BusInput::Resync).is_err() {
            return;
        }
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                cmd = ctl.recv() => {
                    let result = match cmd {
                        None => return,
                        Some(Ctl::Watch(ch)) => if wanted.insert(ch.clone()) {
                            tokio::time::timeout(REDIS_TIMEOUT, sink.subscribe(ch)).await
                        } else { Ok(Ok(())) },
                        Some(Ctl::Unwatch(ch)) => if wanted.remove(&ch) {
                            tokio::time::timeout(REDIS_TIMEOUT, sink.unsubscribe(ch)).await
                        } else { Ok(Ok(())) },
                    };
                    if !matches!(result, Ok(Ok(()))) {
                        tracing::warn!("lost the Redis bus while changing subscriptions; reconnecting");
                        break;
                    }
                }
                msg = stream.next() => match msg {
                    Some(msg) => {
                        let Ok(payload) = msg.get_payload::<String>() else { continue };
                        let channel = msg.get_channel_name().to_owned();
                        metrics.bus_messages_received.inc();
                        if out.send(BusInput::Message { channel, payload }).is_err() {
                            return;
                        }
                    }
                    None => {
                        tracing::warn!("lost the Redis bus; reconnecting");
                        break;
                    }
                },
            }
        }
    }
}

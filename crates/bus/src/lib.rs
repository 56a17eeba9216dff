//! What the filesync daemons share at run time: the **bus** that carries
//! "workspace W committed seq N" and "something changed for user U" between
//! everything that serves clients, **presence** (who is connected), and the
//! built dependencies a daemon runs on ([`Deps`], [`Services`]).
//!
//! One [`Bus`] serves the HTTP API and the sync node alike. It is either
//! - **Redis** pub/sub (`FILESYNC_REDIS_URL`): every process of a deployment
//!   sees every publication; presence lives in Redis with TTLs; or
//! - **in-process**: publications reach the subscribers of this process only,
//!   and presence is a map in memory. `filesync-server` builds one such bus and
//!   hands it to both its API and its node, so a restore made over HTTP reaches
//!   the node's subscribers at once, share notices arrive, and the API reads
//!   the node's presence.
//!
//! The journal in the database is the truth: the bus only wakes subscribers.
//! A lost publication costs latency, never data; whenever the bus may have
//! lost something (a Redis reconnection, a subscriber that fell behind) the
//! subscriber receives [`BusMessage::Resync`] and re-reads what it watches.
//!
//! # Subscribing
//! ```no_run
//! # async fn demo(bus: filesync_bus::Bus) {
//! use filesync_bus::{BusMessage, Topic};
//! use filesync_core::{UserId, WorkspaceId};
//! let mut sub = bus.subscribe_to(&[Topic::Workspace(WorkspaceId(7)), Topic::User(UserId(3))]);
//! while let Some(msg) = sub.recv().await {
//!     match msg {
//!         BusMessage::Workspace { workspace_id, event, .. } => { /* read the journal after your seq */ }
//!         BusMessage::User { user_id, event } => { /* a share, a removal, a role change */ }
//!         BusMessage::Revoked { user_id } => { /* only on Topic::Revocations: forget cached tokens */ }
//!         BusMessage::Resync => { /* something may be missed: re-read everything watched */ }
//!     }
//! }
//! # }
//! ```
//! A [`Subscription`] can change what it watches ([`Subscription::watch`],
//! [`Subscription::unwatch`]); dropping it ends its interest. Its queue is
//! bounded: a subscriber that does not keep up loses messages and is told so
//! by a `Resync`, publishers never wait for it.
//!
//! **Architecture Invariant:** publishing never fails a caller's operation and
//! never waits on a subscriber; a publication happens after the database commit
//! it announces.

mod deps;
pub mod presence;
mod redis_backend;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use filesync_core::events::{UserEvent, WorkspaceEvent};
use filesync_core::{UserId, WorkspaceId};
use futures::future::BoxFuture;
use futures::FutureExt;
use prometheus::IntCounter;
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;

pub use deps::{Deps, Services};
pub use presence::{Presence, PresenceError};

/// Longest a publication, a presence update or read waits on Redis.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait between two attempts to reach Redis again.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// The default first segment of every Redis key and channel (`FILESYNC_REDIS_PREFIX`).
pub const DEFAULT_PREFIX: &str = filesync_core::proto::presence::DEFAULT_PREFIX;
/// Queue length of [`Bus::subscribe_to`] subscriptions.
pub const DEFAULT_QUEUE: usize = 256;

/// The field added to published workspace events: when the change was committed (Unix ms).
const COMMITTED_AT: &str = "committed_at_ms";

/// Why a bus could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("invalid FILESYNC_REDIS_URL: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("invalid FILESYNC_REDIS_PREFIX {0:?}: it must be non-empty, without spaces")]
    Prefix(String),
}

/// What a subscriber can watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Commits in a workspace ([`WorkspaceEvent`]).
    Workspace(WorkspaceId),
    /// A user's membership changes ([`UserEvent`]).
    User(UserId),
    /// Every user's revoked tokens, for processes that cache token checks
    /// (every `filesync-http`): [`BusMessage::Revoked`]. Published by
    /// [`Bus::publish_user`] beside each `UserEvent::TokensRevoked`.
    Revocations,
}

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusMessage {
    Workspace {
        workspace_id: WorkspaceId,
        event: WorkspaceEvent,
        /// When the publisher committed the change, if it said so (for lag metrics).
        committed_at: Option<DateTime<Utc>>,
    },
    User {
        user_id: UserId,
        event: UserEvent,
    },
    /// Some of the user's tokens were revoked: forget what is cached about them.
    Revoked {
        user_id: UserId,
    },
    /// Messages may have been missed: re-read everything watched from the database.
    Resync,
}

/// Counters of one bus, registered into a daemon's Prometheus registry with
/// [`Bus::register_metrics`].
#[derive(Clone)]
struct BusMetrics {
    published: IntCounter,
    publish_failures: IntCounter,
    received: IntCounter,
    reconnects: IntCounter,
}

impl BusMetrics {
    fn new() -> BusMetrics {
        let c = |name: &str, help: &str| IntCounter::new(name, help).expect("valid metric name");
        BusMetrics {
            published: c("filesync_bus_messages_published_total", "Messages published on the bus"),
            publish_failures: c("filesync_bus_publish_failures_total", "Bus publications that failed"),
            received: c("filesync_bus_messages_received_total", "Messages received from Redis"),
            reconnects: c("filesync_bus_reconnects_total", "Reconnections to the Redis bus"),
        }
    }
}

/// Who watches what, shared by the bus handles and the Redis subscriber task.
struct Registry {
    prefix: String,
    state: Mutex<RegState>,
    metrics: BusMetrics,
}

#[derive(Default)]
struct RegState {
    next_id: u64,
    subs: HashMap<u64, SubEntry>,
    channels: HashMap<String, HashSet<u64>>,
}

struct SubEntry {
    tx: mpsc::Sender<BusMessage>,
    lagged: Arc<AtomicBool>,
    channels: HashSet<String>,
}

impl Registry {
    fn state(&self) -> std::sync::MutexGuard<'_, RegState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn channel(&self, topic: Topic) -> String {
        match topic {
            Topic::Workspace(ws) => format!("{}:ws:{ws}", self.prefix),
            Topic::User(user) => format!("{}:user:{user}", self.prefix),
            Topic::Revocations => format!("{}:revocations", self.prefix),
        }
    }

    /// Decodes a publication; `None` (logged) for a channel or payload this bus does not know.
    fn decode(&self, channel: &str, payload: &str) -> Option<BusMessage> {
        let rest = channel.strip_prefix(self.prefix.as_str())?.strip_prefix(':')?;
        if let Some(id) = rest.strip_prefix("ws:") {
            let workspace_id = id.parse::<i64>().ok().map(WorkspaceId)?;
            match serde_json::from_str::<WorkspaceEvent>(payload) {
                Ok(event) => {
                    return Some(BusMessage::Workspace { workspace_id, event, committed_at: committed_at(payload) })
                }
                Err(e) => tracing::warn!(%channel, error = %e, "unreadable workspace event"),
            }
        } else if rest == "revocations" {
            match payload.parse::<UserId>() {
                Ok(user_id) => return Some(BusMessage::Revoked { user_id }),
                Err(_) => tracing::warn!(%channel, "unreadable revocation"),
            }
        } else if let Some(id) = rest.strip_prefix("user:") {
            let user_id = id.parse::<UserId>().ok()?;
            match serde_json::from_str::<UserEvent>(payload) {
                Ok(event) => return Some(BusMessage::User { user_id, event }),
                Err(e) => tracing::warn!(%channel, error = %e, "unreadable user event"),
            }
        }
        None
    }

    /// Hands a publication to every local subscriber of `channel`, never waiting.
    fn dispatch(&self, channel: &str, payload: &str) {
        let st = self.state();
        let Some(ids) = st.channels.get(channel) else { return };
        if ids.is_empty() {
            return;
        }
        let Some(msg) = self.decode(channel, payload) else { return };
        for id in ids {
            if let Some(sub) = st.subs.get(id) {
                offer(sub, msg.clone());
            }
        }
    }

    /// Tells every subscriber that it may have missed messages.
    fn resync_all(&self) {
        let st = self.state();
        for sub in st.subs.values() {
            offer(sub, BusMessage::Resync);
        }
    }

    /// Every channel someone watches (what a fresh Redis connection subscribes to).
    fn wanted(&self) -> Vec<String> {
        self.state().channels.keys().cloned().collect()
    }
}

/// Queues without waiting; a full queue marks the subscriber as lagged (it gets a `Resync`).
fn offer(sub: &SubEntry, msg: BusMessage) {
    if let Err(mpsc::error::TrySendError::Full(_)) = sub.tx.try_send(msg) {
        sub.lagged.store(true, Ordering::Release);
    }
}

enum Backend {
    Local,
    Redis {
        publisher: ConnectionManager,
        /// Channels to (un)subscribe on the Redis subscriber connection.
        ctl: mpsc::UnboundedSender<redis_backend::Ctl>,
    },
}

struct Inner {
    registry: Arc<Registry>,
    backend: Backend,
    presence: Presence,
}

/// The bus. Cheap to clone; every clone is the same bus.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.inner.backend {
            Backend::Local => "local",
            Backend::Redis { .. } => "redis",
        };
        f.debug_struct("Bus").field("kind", &kind).field("prefix", &self.inner.registry.prefix).finish_non_exhaustive()
    }
}

impl Bus {
    /// The in-process bus: publications reach this process's subscribers; presence is kept in memory.
    pub fn local() -> Bus {
        Bus::with_backend(Backend::Local, DEFAULT_PREFIX, Presence::local())
    }

    /// Redis pub/sub and presence, every key and channel starting with `prefix`.
    /// Checks the URL now but connects on first use (and again after an outage),
    /// so a daemon starts and serves while Redis is down. Must be called inside a
    /// tokio runtime: it starts the subscriber task, which ends when the last
    /// clone of the bus is dropped.
    pub fn redis(url: &str, prefix: &str) -> Result<Bus, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(MAX_BACKOFF);
        let publisher = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        let (ctl, ctl_rx) = mpsc::unbounded_channel();
        let presence = Presence::redis(publisher.clone(), prefix);
        let bus = Bus::with_backend(Backend::Redis { publisher, ctl }, prefix, presence);
        tokio::spawn(redis_backend::subscriber_loop(client, ctl_rx, bus.inner.registry.clone()));
        tracing::info!(redis.url = %filesync_core::secret::redact_url(url), redis.prefix = prefix, "bus on Redis");
        Ok(bus)
    }

    /// Redis when `config.redis_url` is set (keys and channels under
    /// `config.redis_prefix`), the in-process bus otherwise.
    pub fn from_config(config: &filesync_core::config::Config) -> Result<Bus, BusError> {
        let Some(url) = &config.redis_url else { return Ok(Bus::local()) };
        let prefix = config.redis_prefix.as_str();
        if prefix.is_empty() || prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(BusError::Prefix(prefix.to_owned()));
        }
        Ok(Bus::redis(url, prefix)?)
    }

    fn with_backend(backend: Backend, prefix: &str, presence: Presence) -> Bus {
        let registry =
            Arc::new(Registry { prefix: prefix.to_owned(), state: Mutex::default(), metrics: BusMetrics::new() });
        Bus { inner: Arc::new(Inner { registry, backend, presence }) }
    }

    /// True on Redis: publications reach every process of the deployment.
    pub fn is_redis(&self) -> bool {
        matches!(self.inner.backend, Backend::Redis { .. })
    }

    /// Who is connected (in Redis, or in this process's memory).
    pub fn presence(&self) -> &Presence {
        &self.inner.presence
    }

    /// Adds the bus counters (`filesync_bus_*`) to `registry`.
    pub fn register_metrics(&self, registry: &prometheus::Registry) {
        let m = &self.inner.registry.metrics;
        for c in [&m.published, &m.publish_failures, &m.received, &m.reconnects] {
            if let Err(e) = registry.register(Box::new(c.clone())) {
                tracing::debug!(error = %e, "bus metric already registered");
            }
        }
    }

    /// Publishes a membership event on the user's topic. Resolves to false if
    /// it could not be sent (logged); it never fails the caller's operation.
    /// The returned future owns what it needs, so it can be spawned.
    pub fn publish_user(&self, user: UserId, event: &UserEvent) -> BoxFuture<'static, bool> {
        match serde_json::to_string(event) {
            Ok(payload) if matches!(event, UserEvent::TokensRevoked { .. }) => {
                // Nodes act on the user's topic (they close the connections it ends); every
                // process that caches token checks learns it from the one revocations topic.
                let to_user = self.publish(self.inner.registry.channel(Topic::User(user)), payload);
                let to_all = self.publish(self.inner.registry.channel(Topic::Revocations), user.to_string());
                async move { to_user.await & to_all.await }.boxed()
            }
            Ok(payload) => self.publish(self.inner.registry.channel(Topic::User(user)), payload),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a user event");
                futures::future::ready(false).boxed()
            }
        }
    }

    /// Publishes a workspace event, after the commit it announces. Like [`Bus::publish_user`].
    pub fn publish_workspace(&self, ws: WorkspaceId, event: &WorkspaceEvent) -> BoxFuture<'static, bool> {
        match serde_json::to_string(event) {
            Ok(payload) => self.publish(self.inner.registry.channel(Topic::Workspace(ws)), payload),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a workspace event");
                futures::future::ready(false).boxed()
            }
        }
    }

    /// [`Bus::publish_workspace`] with the current time as the commit time
    /// (`committed_at_ms`), so that receivers can measure the bus lag.
    pub fn publish_workspace_stamped(&self, ws: WorkspaceId, event: &WorkspaceEvent) -> BoxFuture<'static, bool> {
        match stamped(event) {
            Some(payload) => self.publish(self.inner.registry.channel(Topic::Workspace(ws)), payload),
            None => {
                tracing::error!("cannot encode a workspace event");
                futures::future::ready(false).boxed()
            }
        }
    }

    fn publish(&self, channel: String, payload: String) -> BoxFuture<'static, bool> {
        let metrics = self.inner.registry.metrics.clone();
        match &self.inner.backend {
            Backend::Local => {
                self.inner.registry.dispatch(&channel, &payload);
                metrics.published.inc();
                futures::future::ready(true).boxed()
            }
            Backend::Redis { publisher, .. } => {
                let mut conn = publisher.clone();
                async move {
                    let sent = tokio::time::timeout(
                        REDIS_TIMEOUT,
                        redis::AsyncCommands::publish::<_, _, i64>(&mut conn, &channel, payload),
                    )
                    .await;
                    match sent {
                        Ok(Ok(receivers)) => {
                            metrics.published.inc();
                            tracing::debug!(bus.channel = %channel, bus.receivers = receivers, "event published");
                            true
                        }
                        Ok(Err(e)) => {
                            metrics.publish_failures.inc();
                            tracing::warn!(bus.channel = %channel, error = %e, "Redis publish failed; subscribers catch up from the journal");
                            false
                        }
                        Err(_) => {
                            metrics.publish_failures.inc();
                            tracing::warn!(bus.channel = %channel, "Redis publish timed out; subscribers catch up from the journal");
                            false
                        }
                    }
                }
                .boxed()
            }
        }
    }

    /// A subscription watching nothing yet, with a queue of `capacity` messages.
    pub fn subscribe(&self, capacity: usize) -> Subscription {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let lagged = Arc::new(AtomicBool::new(false));
        let id = {
            let mut st = self.inner.registry.state();
            st.next_id += 1;
            let id = st.next_id;
            st.subs.insert(id, SubEntry { tx, lagged: lagged.clone(), channels: HashSet::new() });
            id
        };
        Subscription { interest: Interest { id, bus: self.clone() }, events: Receiver { rx, lagged } }
    }

    /// A subscription to `topics` ([`DEFAULT_QUEUE`] messages of queue): e.g.
    /// for server-sent events, one workspace and the signed-in user.
    pub fn subscribe_to(&self, topics: &[Topic]) -> Subscription {
        let sub = self.subscribe(DEFAULT_QUEUE);
        for topic in topics {
            sub.watch(*topic);
        }
        sub
    }

    /// True if the bus answers now (readiness): always for the in-process bus, a `PING` on Redis.
    pub fn healthy(&self) -> BoxFuture<'static, bool> {
        match &self.inner.backend {
            Backend::Local => futures::future::ready(true).boxed(),
            Backend::Redis { publisher, .. } => {
                let mut conn = publisher.clone();
                async move {
                    matches!(
                        tokio::time::timeout(REDIS_TIMEOUT, redis::cmd("PING").query_async::<String>(&mut conn)).await,
                        Ok(Ok(_))
                    )
                }
                .boxed()
            }
        }
    }

    fn watch(&self, id: u64, topic: Topic) {
        let channel = self.inner.registry.channel(topic);
        let mut st = self.inner.registry.state();
        let Some(sub) = st.subs.get_mut(&id) else { return };
        if !sub.channels.insert(channel.clone()) {
            return;
        }
        let ids = st.channels.entry(channel.clone()).or_default();
        ids.insert(id);
        if ids.len() == 1 {
            self.backend_watch(channel, true);
        }
    }

    fn unwatch(&self, id: u64, topic: Topic) {
        let channel = self.inner.registry.channel(topic);
        let mut st = self.inner.registry.state();
        let Some(sub) = st.subs.get_mut(&id) else { return };
        if sub.channels.remove(&channel) {
            Self::forget_channel(&mut st, id, &channel, |ch| self.backend_watch(ch, false));
        }
    }

    fn forget_channel(st: &mut RegState, id: u64, channel: &str, on_last: impl FnOnce(String)) {
        if let Some(ids) = st.channels.get_mut(channel) {
            ids.remove(&id);
            if ids.is_empty() {
                st.channels.remove(channel);
                on_last(channel.to_owned());
            }
        }
    }

    fn drop_subscriber(&self, id: u64) {
        let mut st = self.inner.registry.state();
        let Some(sub) = st.subs.remove(&id) else { return };
        for channel in sub.channels {
            Self::forget_channel(&mut st, id, &channel, |ch| self.backend_watch(ch, false));
        }
    }

    /// The first watcher of a channel arrived (`on`) or the last one left.
    fn backend_watch(&self, channel: String, on: bool) {
        if let Backend::Redis { ctl, .. } = &self.inner.backend {
            let _ =
                ctl.send(if on { redis_backend::Ctl::Watch(channel) } else { redis_backend::Ctl::Unwatch(channel) });
        }
    }
}

/// What a subscription watches; dropping it ends the subscription.
pub struct Interest {
    id: u64,
    bus: Bus,
}

impl std::fmt::Debug for Interest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interest").field("id", &self.id).finish_non_exhaustive()
    }
}

impl Interest {
    /// Starts receiving `topic` (idempotent).
    pub fn watch(&self, topic: Topic) {
        self.bus.watch(self.id, topic);
    }

    /// Stops receiving `topic`.
    pub fn unwatch(&self, topic: Topic) {
        self.bus.unwatch(self.id, topic);
    }
}

impl Drop for Interest {
    fn drop(&mut self) {
        self.bus.drop_subscriber(self.id);
    }
}

/// The receiving half of a subscription.
#[derive(Debug)]
pub struct Receiver {
    rx: mpsc::Receiver<BusMessage>,
    lagged: Arc<AtomicBool>,
}

impl Receiver {
    /// The next message; `None` once the subscription's [`Interest`] is dropped.
    /// After messages were lost to a full queue, the next answer is [`BusMessage::Resync`].
    pub async fn recv(&mut self) -> Option<BusMessage> {
        if self.lagged.swap(false, Ordering::AcqRel) {
            return Some(BusMessage::Resync);
        }
        let msg = self.rx.recv().await;
        if msg.is_some() && self.lagged.swap(false, Ordering::AcqRel) {
            // Lost something after this one was queued: say so right after it.
            self.lagged.store(true, Ordering::Release);
        }
        msg
    }
}

/// A subscription: what it watches and the queue of what arrived.
#[derive(Debug)]
pub struct Subscription {
    interest: Interest,
    events: Receiver,
}

impl Subscription {
    /// Starts receiving `topic` (idempotent).
    pub fn watch(&self, topic: Topic) {
        self.interest.watch(topic);
    }

    /// Stops receiving `topic`.
    pub fn unwatch(&self, topic: Topic) {
        self.interest.unwatch(topic);
    }

    /// The next message (see [`Receiver::recv`]).
    pub async fn recv(&mut self) -> Option<BusMessage> {
        self.events.recv().await
    }

    /// The messages as a stream (e.g. to feed server-sent events); ends with the bus.
    pub fn into_stream(self) -> impl futures::Stream<Item = BusMessage> + Send + 'static {
        futures::stream::unfold(self, |mut sub| async move { sub.recv().await.map(|m| (m, sub)) })
    }

    /// Separates the two halves: one to change interest from shared code, one to read in a task.
    pub fn split(self) -> (Interest, Receiver) {
        (self.interest, self.events)
    }
}

/// `event` as JSON with the commit time added.
fn stamped(event: &WorkspaceEvent) -> Option<String> {
    let mut value = serde_json::to_value(event).ok()?;
    value.as_object_mut()?.insert(COMMITTED_AT.to_owned(), Utc::now().timestamp_millis().into());
    serde_json::to_string(&value).ok()
}

/// The commit time of a stamped event, if it has one.
fn committed_at(payload: &str) -> Option<DateTime<Utc>> {
    let value: serde_json::Value = serde_json::from_str(payload).ok()?;
    DateTime::from_timestamp_millis(value.get(COMMITTED_AT)?.as_i64()?)
}

/// Waits for the next message that `pick` accepts, at most `within`; for tests and tools.
pub async fn next_matching<T>(
    sub: &mut Subscription,
    within: Duration,
    mut pick: impl FnMut(BusMessage) -> Option<T>,
) -> Option<T> {
    let wait = async {
        while let Some(msg) = sub.recv().await {
            if let Some(found) = pick(msg) {
                return Some(found);
            }
        }
        None
    };
    tokio::time::timeout(within, wait).await.ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use filesync_core::Role;

    fn committed(ws: i64, seq: i64) -> WorkspaceEvent {
        WorkspaceEvent::Committed { workspace_id: WorkspaceId(ws), seq }
    }

    #[tokio::test]
    async fn a_subscriber_gets_what_it_watches_and_nothing_else() {
        let bus = Bus::local();
        let mut sub = bus.subscribe_to(&[Topic::Workspace(WorkspaceId(1)), Topic::User(UserId(5))]);
        assert!(bus.publish_workspace(WorkspaceId(2), &committed(2, 1)).await);
        assert!(bus.publish_workspace_stamped(WorkspaceId(1), &committed(1, 4)).await);
        let shared = UserEvent::WorkspaceShared {
            workspace_id: WorkspaceId(1),
            workspace_name: "Docs".into(),
            role: Role::Viewer,
            by_user_id: UserId(9),
            by_username: "ann".into(),
        };
        bus.publish_user(UserId(6), &UserEvent::MemberRemoved { workspace_id: WorkspaceId(1) }).await;
        bus.publish_user(UserId(5), &shared).await;
        match sub.recv().await {
            Some(BusMessage::Workspace { workspace_id, event, committed_at }) => {
                assert_eq!((workspace_id, event), (WorkspaceId(1), committed(1, 4)));
                assert!(committed_at.is_some());
            }
            other => panic!("expected the commit, got {other:?}"),
        }
        assert_eq!(sub.recv().await, Some(BusMessage::User { user_id: UserId(5), event: shared }));
        // Unwatched: nothing more arrives.
        sub.unwatch(Topic::Workspace(WorkspaceId(1)));
        bus.publish_workspace(WorkspaceId(1), &committed(1, 5)).await;
        assert!(tokio::time::timeout(Duration::from_millis(50), sub.recv()).await.is_err());
    }

    #[tokio::test]
    async fn every_subscriber_of_a_topic_gets_it_and_a_dropped_one_is_forgotten() {
        let bus = Bus::local();
        let mut a = bus.subscribe_to(&[Topic::Workspace(WorkspaceId(1))]);
        let b = bus.subscribe_to(&[Topic::Workspace(WorkspaceId(1))]);
        drop(b);
        bus.publish_workspace(WorkspaceId(1), &committed(1, 1)).await;
        assert!(matches!(a.recv().await, Some(BusMessage::Workspace { .. })));
        let st = bus.inner.registry.state();
        assert_eq!(st.subs.len(), 1);
        assert_eq!(st.channels.get("filesync:ws:1").map(HashSet::len), Some(1));
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_to_resync_and_publishers_never_wait() {
        let bus = Bus::local();
        let mut sub = bus.subscribe(2);
        sub.watch(Topic::Workspace(WorkspaceId(1)));
        for seq in 1..=10 {
            assert!(bus.publish_workspace(WorkspaceId(1), &committed(1, seq)).await);
        }
        let mut got = Vec::new();
        while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(50), sub.recv()).await {
            got.push(msg);
        }
        // What fitted in the queue, and one Resync for what did not.
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got.iter().filter(|m| **m == BusMessage::Resync).count(), 1, "{got:?}");
    }

    #[tokio::test]
    async fn a_subscription_reads_as_a_stream() {
        use futures::StreamExt;
        let bus = Bus::local();
        let stream = bus.subscribe_to(&[Topic::User(UserId(1))]).into_stream();
        tokio::pin!(stream);
        bus.publish_user(UserId(1), &UserEvent::MemberRemoved { workspace_id: WorkspaceId(3) }).await;
        assert_eq!(
            stream.next().await,
            Some(BusMessage::User {
                user_id: UserId(1),
                event: UserEvent::MemberRemoved { workspace_id: WorkspaceId(3) }
            })
        );
    }
}

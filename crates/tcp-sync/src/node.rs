//! A node: what its connections share, and the accept loop.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use filesync_bus::{Bus, Deps, Presence, Services};
use filesync_core::config::Config;
use filesync_core::db::Db;
use filesync_core::events::{UserEvent, WorkspaceEvent};
use filesync_core::jwt::JwtKeys;
use filesync_core::proto::presence::PresenceEntry;
use filesync_core::proto::Notice;
use filesync_core::storage::ChunkStore;
use filesync_core::{UserId, WorkspaceId};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::hub::Hub;
use crate::metrics::Metrics;

/// Queue of the hub's bus subscription; a burst beyond it costs a resync, not memory.
const HUB_BUS_QUEUE: usize = 4096;

/// Timings and queue sizes. The defaults are for production; tests shorten them.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// A connection must send `Hello` within this.
    pub handshake_timeout: Duration,
    /// Announced in `Welcome`: clients ping at least this often.
    pub heartbeat: Duration,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// Bounded live-event queue per connection; overflowing it closes the connection.
    pub event_queue: usize,
    /// Bounded answer queue per connection (downloads wait for room).
    pub response_queue: usize,
    /// How often the node checks the heads of watched workspaces, in case the bus lost a message.
    pub head_check_interval: Duration,
    /// Sent in `Goodbye`.
    pub goodbye_retry_after: Duration,
    /// How long shutdown waits for connections to finish.
    pub drain_timeout: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            handshake_timeout: Duration::from_secs(10),
            heartbeat: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(45),
            event_queue: 1024,
            response_queue: 32,
            head_check_interval: Duration::from_secs(5),
            goodbye_retry_after: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// What every connection of a node shares.
pub struct Shared {
    pub config: Config,
    pub tuning: Tuning,
    pub node_id: String,
    pub db: Db,
    pub store: ChunkStore,
    pub jwt: JwtKeys,
    /// Shared with the HTTP API in `filesync-server`.
    pub bus: Bus,
    pub hub: Arc<Hub>,
    pub presence: Presence,
    pub metrics: Metrics,
    /// Set when the sync port serves TLS.
    pub tls: Option<TlsAcceptor>,
    /// Cancelled when the node stops accepting: connections say Goodbye.
    pub shutdown: CancellationToken,
    /// Cancelled when the node is gone: background tasks stop.
    stop: CancellationToken,
    next_conn: AtomicU64,
}

impl Shared {
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// A change was committed: forward it to local subscribers now and wake the other nodes.
    pub async fn announce(&self, ws: WorkspaceId, seq: i64) {
        self.hub.poke(ws, seq).await;
        tokio::spawn(self.bus.publish_workspace_stamped(ws, &WorkspaceEvent::Committed { workspace_id: ws, seq }));
    }

    /// Tells every node's subscribers of `ws` about a large upload in progress (through the bus,
    /// which delivers to this node's own subscribers too).
    pub fn announce_upload(&self, ws: WorkspaceId, notice: Notice) {
        tokio::spawn(self.bus.publish_workspace(ws, &WorkspaceEvent::Upload { workspace_id: ws, notice }));
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A running node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("node_id", &self.shared.node_id).finish_non_exhaustive()
    }
}

impl Node {
    /// `deps` is a `Config` (the database is opened and migrated, the chunk
    /// store opened and the bus started from it) or [`Services`] built once and
    /// shared with the HTTP API, as `filesync-server` does.
    pub async fn start(deps: impl Into<Deps>) -> anyhow::Result<Node> {
        Node::start_with(deps, Tuning::default()).await
    }

    pub async fn start_with(deps: impl Into<Deps>, tuning: Tuning) -> anyhow::Result<Node> {
        let mut deps = deps.into();
        deps.config.prepare_for_serving()?;
        let tls = crate::tls::acceptor(&deps.config)?;
        let Services { config, db, store, bus } = deps.open().await?;
        let jwt = JwtKeys::new(&config.jwt_secret, config.jwt_ttl_secs);
        let node_id = config
            .node_id
            .clone()
            .unwrap_or_else(|| format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]));
        let metrics = Metrics::new();
        bus.register_metrics(metrics.registry());
        let stop = CancellationToken::new();
        let presence = bus.presence().clone();
        if config.node_id.is_some() {
            presence.purge_node(&node_id).await;
        }
        let (interest, mut bus_rx) = bus.subscribe(HUB_BUS_QUEUE).split();
        let hub = Arc::new(Hub::new(db.clone(), interest, metrics.clone()));
        let (hub_bg, stop_bg, every) = (hub.clone(), stop.clone(), tuning.head_check_interval);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop_bg.cancelled() => return,
                    input = bus_rx.recv() => match input {
                        Some(input) => hub_bg.on_bus(input).await,
                        None => return,
                    },
                    _ = tick.tick() => hub_bg.check_heads().await,
                }
            }
        });
        tracing::info!(node.id = %node_id, redis = bus.is_redis(), tls = tls.is_some(), "node started");
        let shared = Arc::new(Shared {
            config,
            tuning,
            node_id,
            db,
            store,
            jwt,
            bus,
            hub,
            presence,
            metrics,
            tls,
            shutdown: CancellationToken::new(),
            stop,
            next_conn: AtomicU64::new(0),
        });
        Ok(Node { shared })
    }

    pub fn node_id(&self) -> &str {
        &self.shared.node_id
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The `/metrics` text: the node's counters, its database pool and its chunk store's requests.
    pub fn metrics_text(&self) -> String {
        self.shared.metrics.render()
            + &self.shared.db.pool_stats().prometheus_text("filesync_tcp")
            + &self.shared.store.backend().requests().prometheus_text()
    }

    /// True once `serve` has begun its shutdown (Goodbye sent, listener closed).
    pub fn shutting_down(&self) -> bool {
        self.shared.shutdown.is_cancelled()
    }

    /// True while the node accepts work: not shutting down, the database answers, and the bus (if any) answers.
    pub async fn ready(&self) -> bool {
        !self.shared.shutdown.is_cancelled() && self.shared.db.ping().await && self.shared.bus.healthy().await
    }

    /// The connections in this process's presence, without Redis (with Redis, presence lives in Redis).
    pub fn local_presence(&self) -> Vec<PresenceEntry> {
        self.shared.presence.local_entries()
    }

    /// Publishes a membership event as the HTTP API does (on this node's bus).
    pub async fn publish_user_event(&self, user: UserId, event: &UserEvent) -> bool {
        self.shared.bus.publish_user(user, event).await
    }

    /// The bus this node publishes on and listens to.
    pub fn bus(&self) -> &Bus {
        &self.shared.bus
    }

    /// Accepts connections until `shutdown` resolves, then says Goodbye to
    /// every connection, lets in-flight commits finish and returns.
    pub async fn serve(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let shared = &self.shared;
        let slots = Arc::new(Semaphore::new(shared.config.max_connections.max(1)));
        let tracker = TaskTracker::new();
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(addr = %addr, node.id = %shared.node_id, "accepting sync connections");
        }
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        shared.metrics.connections_total.inc();
                        let permit = slots.clone().try_acquire_owned().ok();
                        if permit.is_none() {
                            shared.metrics.connections_refused_busy.inc();
                        }
                        tracker.spawn(crate::conn::serve(shared.clone(), stream, peer, permit));
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        drop(listener);
        tracing::info!("shutting down: saying goodbye to every connection");
        shared.shutdown.cancel();
        tracker.close();
        if tokio::time::timeout(shared.tuning.drain_timeout, tracker.wait()).await.is_err() {
            tracing::warn!("some connections did not finish in time");
        }
        shared.stop.cancel();
        Ok(())
    }
}

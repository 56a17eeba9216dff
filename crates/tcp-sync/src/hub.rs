//! Fan-out on one node: which local connections watch which workspace, and
//! delivering each journal entry to each of them exactly once, in seq order.
//!
//! Per watched workspace the hub remembers the last seq it forwarded. Any
//! wake-up — a local commit, a bus message, a bus reconnection, the periodic
//! head check — makes it read the journal after that seq (one query per
//! wake-up per node, not per client) and queue the rows to every subscriber
//! whose cursor is behind.
//!
//! **Architecture Invariant:** a subscriber gets every change after its
//! `since_seq` exactly once and in order: it catches up from the journal
//! first, then joins the live list under the workspace's lock at the seq the
//! hub has forwarded up to, and each subscriber keeps its own cursor.
//!
//! **Architecture Invariant:** a connection's event queue is bounded; a live
//! event that does not fit closes that connection (it reconnects and catches
//! up by seq) instead of growing memory or slowing everyone else down.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use filesync_bus::{BusMessage, Interest, Topic};
use filesync_core::db::{horizon, journal, retention, Db};
use filesync_core::events::{UserEvent, WorkspaceEvent};
use filesync_core::jwt::Grant;
use filesync_core::proto::{ErrorCode, Message, Notice, RequestId};
use filesync_core::{UserId, WorkspaceId};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::sync::CancellationToken;

use crate::error::ReqError;
use crate::metrics::Metrics;

/// Journal rows read per query.
const PAGE: i64 = 500;

/// How the hub reaches one connection.
#[derive(Debug, Clone)]
pub struct ConnHandle {
    pub conn_id: u64,
    pub user: UserId,
    /// The connection's bounded event queue.
    pub events: mpsc::Sender<Message>,
    /// Cancelling closes the connection.
    pub kill: CancellationToken,
    /// What the connection's token is bound to.
    pub grant: Grant,
    /// Cancelled when the token is revoked: the connection says why ([`ConnHandle::revoked_reason`]) and closes.
    pub revoked: CancellationToken,
    reason: Arc<std::sync::OnceLock<&'static str>>,
}

impl ConnHandle {
    pub fn new(
        conn_id: u64,
        user: UserId,
        grant: Grant,
        events: mpsc::Sender<Message>,
        kill: CancellationToken,
    ) -> ConnHandle {
        ConnHandle {
            conn_id,
            user,
            events,
            kill,
            grant,
            revoked: CancellationToken::new(),
            reason: Arc::new(std::sync::OnceLock::new()),
        }
    }

    /// Why the token was revoked, once [`ConnHandle::revoked`] is cancelled.
    pub fn revoked_reason(&self) -> &'static str {
        self.reason.get().copied().unwrap_or("the token was revoked")
    }

    fn revoke(&self, reason: &'static str) {
        let _ = self.reason.set(reason);
        self.revoked.cancel();
    }
}

struct Sub {
    conn: ConnHandle,
    /// Last seq queued to this subscriber.
    cursor: i64,
}

#[derive(Default)]
struct WatchInner {
    /// Last seq fanned out; `None` until the first subscriber joins.
    forwarded: Option<i64>,
    subs: Vec<Sub>,
    /// Removed from the hub; a subscriber that finds this must look the workspace up again.
    closed: bool,
}

struct Watch {
    inner: tokio::sync::Mutex<WatchInner>,
}

#[derive(Default)]
struct State {
    watches: HashMap<WorkspaceId, Arc<Watch>>,
    users: HashMap<UserId, Vec<ConnHandle>>,
}

pub struct Hub {
    db: Db,
    /// What this node's bus subscription watches: the workspaces and users of its connections.
    bus: Interest,
    metrics: Metrics,
    state: Mutex<State>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

/// Queues a live frame; false (and the connection is closed) if its queue is full or gone.
fn offer(metrics: &Metrics, conn: &ConnHandle, msg: Message) -> bool {
    match conn.events.try_send(msg) {
        Ok(()) => true,
        Err(TrySendError::Full(_)) => {
            metrics.slow_consumers_dropped.inc();
            tracing::warn!(conn.id = conn.conn_id, user.id = %conn.user, "event queue full; closing a slow connection");
            conn.kill.cancel();
            false
        }
        Err(TrySendError::Closed(_)) => false,
    }
}

fn gone() -> ReqError {
    ReqError::new(ErrorCode::Internal, "connection closing")
}

impl Hub {
    pub fn new(db: Db, bus: Interest, metrics: Metrics) -> Hub {
        Hub { db, bus, metrics, state: Mutex::new(State::default()) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection passed the handshake: it receives its user's notifications.
    pub fn add_conn(&self, conn: ConnHandle) {
        let mut st = self.state();
        let list = st.users.entry(conn.user).or_default();
        if list.is_empty() {
            self.bus.watch(Topic::User(conn.user));
        }
        list.push(conn);
    }

    /// A connection ended: drop its subscriptions and its notification interest.
    pub async fn remove_conn(&self, conn_id: u64, user: UserId) {
        let watched: Vec<WorkspaceId> = self.state().watches.keys().copied().collect();
        for ws in watched {
            self.unsubscribe(ws, conn_id).await;
        }
        let mut st = self.state();
        if let Some(list) = st.users.get_mut(&user) {
            list.retain(|c| c.conn_id != conn_id);
            if list.is_empty() {
                st.users.remove(&user);
                self.bus.unwatch(Topic::User(user));
            }
        }
    }

    fn watch_for(&self, ws: WorkspaceId) -> Arc<Watch> {
        let mut st = self.state();
        st.watches
            .entry(ws)
            .or_insert_with(|| {
                self.bus.watch(Topic::Workspace(ws));
                Arc::new(Watch { inner: tokio::sync::Mutex::new(WatchInner::default()) })
            })
            .clone()
    }

    fn existing_watch(&self, ws: WorkspaceId) -> Option<Arc<Watch>> {
        self.state().watches.get(&ws).cloned()
    }

    /// Must be called with the watch's lock held and no subscribers left.
    fn close_watch(&self, ws: WorkspaceId, inner: &mut WatchInner) {
        inner.closed = true;
        self.state().watches.remove(&ws);
        self.bus.unwatch(Topic::Workspace(ws));
    }

    /// Queues (waiting for room) every change in `(from, to]`; returns `to`. The journal has no
    /// gap above the horizon: one here means retention dropped changes the subscriber needs
    /// (`history_expired`: it must reconcile instead).
    async fn catch_up(
        &self,
        events: &mpsc::Sender<Message>,
        ws: WorkspaceId,
        from: i64,
        to: i64,
    ) -> Result<i64, ReqError> {
        let mut cursor = from;
        while cursor < to {
            let after = cursor;
            let page = self.db.run(move |c| journal::changes_between(c, ws, after, to, PAGE)).await?;
            if page.first().is_none_or(|c| c.seq != cursor + 1) {
                return Err(ReqError::history_expired(ws, from, page.first().map_or(to, |c| c.seq - 1)));
            }
            for change in page {
                if change.seq != cursor + 1 {
                    return Err(ReqError::history_expired(ws, from, change.seq - 1));
                }
                cursor = change.seq;
                events.send(Message::Change(change)).await.map_err(|_| gone())?;
            }
        }
        Ok(to)
    }

    /// Subscribes `conn` to `ws` from `since_seq` (membership already checked).
    /// Queues the missed changes, then `Subscribed`, then live changes follow.
    pub async fn subscribe(
        &self,
        conn: &ConnHandle,
        request_id: RequestId,
        ws: WorkspaceId,
        since_seq: i64,
    ) -> Result<(), ReqError> {
        'fresh: loop {
            let watch = self.watch_for(ws);
            let seqs = self.db.run(move |c| horizon::seqs(c, ws)).await?.ok_or(filesync_core::db::DbError::NotFound)?;
            if !seqs.can_catch_up_from(since_seq) {
                return Err(ReqError::history_expired(ws, since_seq, seqs.horizon));
            }
            let head = seqs.head;
            // A since_seq beyond the head (a reset server) is answered from the head, so the client sees it.
            let mut cursor = self.catch_up(&conn.events, ws, since_seq.clamp(0, head), head).await?;
            // Retention may have raised the horizon past `since_seq` while the catch-up was read,
            // leaving gaps in it: then the client must reconcile instead (on a new connection,
            // which drops what was queued).
            if since_seq.max(0) < head {
                let horizon = self.db.run(move |c| retention::horizon(c, ws)).await?.unwrap_or(0);
                if since_seq.max(0) < horizon {
                    return Err(ReqError::history_expired(ws, since_seq, horizon));
                }
            }
            loop {
                let mut inner = watch.inner.lock().await;
                if inner.closed {
                    continue 'fresh;
                }
                let forwarded = match inner.forwarded {
                    Some(f) => f,
                    None => {
                        let now = self.db.run(move |c| journal::head_seq(c, ws)).await?.unwrap_or(head);
                        inner.forwarded = Some(now);
                        now
                    }
                };
                if forwarded > cursor {
                    let remainder = usize::try_from(forwarded - cursor).unwrap_or(usize::MAX);
                    if remainder.saturating_add(1) > conn.events.capacity() || remainder > PAGE as usize {
                        // Too many to queue without waiting (or to read in one page): wait outside
                        // the lock, then try again.
                        drop(inner);
                        cursor = self.catch_up(&conn.events, ws, cursor, forwarded).await?;
                        continue;
                    }
                    let after = cursor;
                    let rows = self.db.run(move |c| journal::changes_between(c, ws, after, forwarded, PAGE)).await?;
                    let gapless = rows.len() as i64 == forwarded - after
                        && rows.iter().enumerate().all(|(i, c)| c.seq == after + 1 + i as i64);
                    if !gapless {
                        return Err(ReqError::history_expired(ws, since_seq, forwarded));
                    }
                    for change in rows {
                        if !offer(&self.metrics, conn, Message::Change(change)) {
                            return Err(gone());
                        }
                    }
                    cursor = forwarded;
                }
                let before = inner.subs.len();
                inner.subs.retain(|s| s.conn.conn_id != conn.conn_id);
                if inner.subs.len() == before {
                    self.metrics.subscriptions_active.inc();
                }
                inner.subs.push(Sub { conn: conn.clone(), cursor });
                let done = Message::Subscribed { request_id, workspace_id: ws, head_seq: cursor };
                if !offer(&self.metrics, conn, done) {
                    return Err(gone());
                }
                return Ok(());
            }
        }
    }

    /// Ends `conn_id`'s subscription to `ws`; true if there was one.
    pub async fn unsubscribe(&self, ws: WorkspaceId, conn_id: u64) -> bool {
        let Some(watch) = self.existing_watch(ws) else { return false };
        let mut inner = watch.inner.lock().await;
        let before = inner.subs.len();
        inner.subs.retain(|s| s.conn.conn_id != conn_id);
        let removed = inner.subs.len() < before;
        if removed {
            self.metrics.subscriptions_active.dec();
        }
        if inner.subs.is_empty() && !inner.closed {
            self.close_watch(ws, &mut inner);
        }
        removed
    }

    /// Something up to `seq` may have been committed in `ws`: forward what is new.
    pub async fn poke(&self, ws: WorkspaceId, seq: i64) {
        let Some(watch) = self.existing_watch(ws) else { return };
        let mut inner = watch.inner.lock().await;
        let Some(mut forwarded) = inner.forwarded else { return };
        if seq <= forwarded || inner.closed {
            return;
        }
        loop {
            let after = forwarded;
            let page = match self.db.run(move |c| journal::changes_between(c, ws, after, i64::MAX, PAGE)).await {
                Ok(p) => p,
                Err(e) => {
                    // The next wake-up (at worst the periodic check) tries again.
                    tracing::warn!(workspace.id = %ws, error = %e, "cannot read the journal for fan-out");
                    return;
                }
            };
            let Some(last) = page.last().map(|c| c.seq) else { break };
            let mut dropped = 0;
            for change in &page {
                inner.subs.retain_mut(|sub| {
                    if change.seq <= sub.cursor {
                        return true;
                    }
                    if change.seq > sub.cursor + 1 {
                        // Retention dropped changes this subscriber had not got yet (the journal
                        // has no gap above the horizon): it must not go on without them. Its
                        // client reconnects, is told `history_expired` and reconciles.
                        tracing::warn!(workspace.id = %ws, conn.id = sub.conn.conn_id, cursor = sub.cursor, next = change.seq, "the journal lost changes a subscriber had not got; closing its connection");
                        sub.conn.kill.cancel();
                        dropped += 1;
                        return false;
                    }
                    if offer(&self.metrics, &sub.conn, Message::Change(change.clone())) {
                        self.metrics.events_forwarded.inc();
                        sub.cursor = change.seq;
                        true
                    } else {
                        dropped += 1;
                        false
                    }
                });
            }
            self.metrics.subscriptions_active.sub(dropped);
            forwarded = last;
            inner.forwarded = Some(last);
            if (page.len() as i64) < PAGE {
                break;
            }
        }
        if inner.subs.is_empty() {
            self.close_watch(ws, &mut inner);
        }
    }

    /// Re-reads every watched workspace's journal (after a bus outage).
    pub async fn resync_all(self: &Arc<Self>) {
        let watched: Vec<WorkspaceId> = self.state().watches.keys().copied().collect();
        for ws in watched {
            let hub = self.clone();
            tokio::spawn(async move { hub.poke(ws, i64::MAX).await });
        }
    }

    /// One query for the heads of every watched workspace; forwards what the bus did not announce.
    pub async fn check_heads(self: &Arc<Self>) {
        let watched: Vec<WorkspaceId> = self.state().watches.keys().copied().collect();
        if watched.is_empty() {
            return;
        }
        match self.db.run(move |c| journal::head_seqs(c, &watched)).await {
            Ok(heads) => {
                for (ws, head) in heads {
                    self.poke(ws, head).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read workspace heads"),
        }
    }

    /// Handles one bus message.
    pub async fn on_bus(self: &Arc<Self>, input: BusMessage) {
        match input {
            BusMessage::Resync => self.resync_all().await,
            BusMessage::Workspace { event: WorkspaceEvent::Committed { workspace_id, seq }, committed_at, .. } => {
                let hub = self.clone();
                tokio::spawn(async move {
                    hub.poke(workspace_id, seq).await;
                    if let Some(lag) = committed_at.and_then(|at| (chrono::Utc::now() - at).to_std().ok()) {
                        hub.metrics.bus_lag.observe(lag.as_secs_f64());
                    }
                });
            }
            BusMessage::Workspace { workspace_id, event: WorkspaceEvent::Upload { notice, .. }, .. } => {
                self.upload_notice(workspace_id, notice).await;
            }
            BusMessage::User { user_id, event } => self.user_event(user_id, event).await,
            // Nodes act on the user's own topic (see `user_event`); they do not watch this one.
            BusMessage::Revoked { .. } => {}
        }
    }

    /// Passes a large upload's announcement to the workspace's subscribers on this node (members,
    /// checked when they subscribed; removed members were unsubscribed). A notice about another
    /// workspace than its channel's is dropped. A full queue skips the notice instead of closing
    /// the connection: a missed announcement costs streaming, never a change.
    pub async fn upload_notice(&self, ws: WorkspaceId, notice: Notice) {
        if notice.upload_workspace() != Some(ws) {
            tracing::warn!(workspace.id = %ws, "an upload notice about another workspace; dropped");
            return;
        }
        let Some(watch) = self.existing_watch(ws) else { return };
        let inner = watch.inner.lock().await;
        for sub in &inner.subs {
            let _ = sub.conn.events.try_send(Message::Notification(notice.clone()));
        }
    }

    /// A membership change for `user`: drop the subscriptions it ends (removed from the workspace, or
    /// the workspace deleted), then tell every connection of the user. A revocation closes the
    /// connections whose token it ends, with a `token_revoked` error.
    pub async fn user_event(&self, user: UserId, event: UserEvent) {
        let conns: Vec<ConnHandle> = self.state().users.get(&user).cloned().unwrap_or_default();
        if let UserEvent::TokensRevoked { revoked } = event {
            for c in conns.iter().filter(|c| revoked.ends(c.grant.generation, c.grant.device)) {
                tracing::info!(conn.id = c.conn_id, user.id = %user, "token revoked; closing the connection");
                c.revoke(revoked.reason());
            }
            return;
        }
        if let Some(workspace_id) = event.ends_access_to() {
            for c in &conns {
                self.unsubscribe(workspace_id, c.conn_id).await;
            }
        }
        let Some(notice) = Notice::of(event) else { return };
        for c in &conns {
            offer(&self.metrics, c, Message::Notification(notice.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_closes_the_connection_instead_of_waiting() {
        let metrics = Metrics::new();
        let (tx, _rx) = mpsc::channel(1);
        let grant = Grant { generation: 0, device: 1 };
        let conn = ConnHandle::new(1, UserId(1), grant, tx, CancellationToken::new());
        assert!(offer(&metrics, &conn, Message::Ping { nonce: 1 }));
        assert!(!conn.kill.is_cancelled());
        assert!(!offer(&metrics, &conn, Message::Ping { nonce: 2 }));
        assert!(conn.kill.is_cancelled());
        assert_eq!(metrics.slow_consumers_dropped.get(), 1);
    }
}

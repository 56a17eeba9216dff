//! One connection: handshake, then a reader loop that handles requests in
//! order, and a writer task that sends answers and events.
//!
//! Two bounded queues feed the writer: answers (the request handler waits for
//! room, so a client that does not read its downloads slows only itself) and
//! events (live fan-out never waits: a full queue closes the connection).
//!
//! **Architecture Invariant:** a connection task touches only its own state;
//! whatever it does wrong (an error, a panic) ends that connection alone.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use filesync_core::proto::frame::{FrameCodec, FrameError};
use filesync_core::proto::presence::PresenceEntry;
use filesync_core::proto::{ErrorCode, Message};
use futures::SinkExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::error::ReqError;
use crate::handshake::{frame_error, handshake, Identity};
use crate::hub::ConnHandle;
use crate::metered::Metered;
use crate::node::Shared;
use crate::session::Session;

/// How long the last frames (an error, `Goodbye`) may take to leave.
const FINAL_FLUSH: Duration = Duration::from_secs(5);

/// The two halves of a connection, plain or TLS: everything past the
/// transport is the same code.
pub type Reader = FramedRead<Box<dyn AsyncRead + Send + Unpin>, FrameCodec>;
pub type Writer = FramedWrite<Box<dyn AsyncWrite + Send + Unpin>, FrameCodec>;

/// Serves one accepted socket until it ends. `permit` is `None` when the node is at its connection cap:
/// the peer is then told `busy` (over TLS if the port serves TLS) and the socket closed.
pub async fn serve(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr, permit: Option<OwnedSemaphorePermit>) {
    let span = tracing::info_span!("conn", peer.addr = %peer, user.id = tracing::field::Empty, conn.id = tracing::field::Empty);
    async move {
        // The TLS handshake and Hello share one deadline, so a peer cannot hold a slot longer by being slow at TLS.
        let deadline = tokio::time::Instant::now() + shared.tuning.handshake_timeout;
        let _ = stream.set_nodelay(true);
        let stream = Metered::new(stream, shared.metrics.bytes_in.clone(), shared.metrics.bytes_out.clone());
        let Some(tls) = shared.tls.clone() else {
            return serve_transport(shared, stream, peer, permit, deadline).await;
        };
        match tokio::time::timeout_at(deadline, tls.accept(stream)).await {
            Ok(Ok(stream)) => serve_transport(shared, stream, peer, permit, deadline).await,
            Ok(Err(e)) => {
                shared.metrics.handshake_failures.with_label_values(&["tls"]).inc();
                tracing::info!(error = %e, "TLS handshake failed (a plain TCP client, or one that rejected the certificate)");
            }
            Err(_) => {
                shared.metrics.handshake_failures.with_label_values(&[ErrorCode::HandshakeTimeout.as_str()]).inc();
                tracing::info!("no TLS handshake within the Hello deadline");
            }
        }
    }
    .instrument(span)
    .await
}

async fn serve_transport<S>(
    shared: Arc<Shared>,
    stream: S,
    peer: SocketAddr,
    permit: Option<OwnedSemaphorePermit>,
    deadline: tokio::time::Instant,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (rd, wr) = tokio::io::split(stream);
    let max = shared.config.max_frame_bytes;
    // Small buffers to start with (they grow with the frames): most connections sit idle, and the
    // codec's default 8 KiB each way would be half of an idle connection's memory.
    let reader: Reader = FramedRead::with_capacity(Box::new(rd), FrameCodec::new(max), IDLE_BUFFER);
    let mut writer: Writer = FramedWrite::with_capacity(Box::new(wr), FrameCodec::new(max), IDLE_BUFFER);
    match permit {
        Some(permit) => serve_session(shared, reader, writer, peer, permit, deadline).await,
        None => {
            tracing::info!("refused: at the connection cap");
            let busy = Message::error(0, ErrorCode::Busy, "this node is at its connection limit; try another node");
            send_last(&mut writer, busy).await;
        }
    }
}

async fn serve_session(
    shared: Arc<Shared>,
    mut reader: Reader,
    mut writer: Writer,
    peer: SocketAddr,
    _permit: OwnedSemaphorePermit,
    deadline: tokio::time::Instant,
) {
    let max = shared.config.max_frame_bytes;
    let identity = match handshake(&shared, &mut reader, deadline).await {
        Ok(id) => id,
        Err(refusal) => {
            if let Some(err) = refusal {
                shared.metrics.handshake_failures.with_label_values(&[err.code.as_str()]).inc();
                tracing::info!(code = %err.code, "handshake refused");
                send_last(&mut writer, err.into_message(0)).await;
            }
            return;
        }
    };
    let conn_id = shared.next_conn_id();
    tracing::Span::current().record("user.id", identity.user.0).record("conn.id", conn_id);
    let session_id = uuid::Uuid::new_v4().simple().to_string();
    let welcome = Message::Welcome {
        user_id: identity.user,
        node_id: shared.node_id.clone(),
        session_id: session_id.clone(),
        max_frame_bytes: u32::try_from(max).unwrap_or(u32::MAX),
        heartbeat_secs: u32::try_from(shared.tuning.heartbeat.as_secs()).unwrap_or(u32::MAX).max(1),
    };
    let (resp_tx, resp_rx) = mpsc::channel(shared.tuning.response_queue);
    let (event_tx, event_rx) = mpsc::channel(shared.tuning.event_queue);
    let kill = CancellationToken::new();
    let done = CancellationToken::new();
    let handle = ConnHandle::new(conn_id, identity.user, identity.grant, event_tx, kill.clone());
    let entry = PresenceEntry {
        node_id: shared.node_id.clone(),
        session_id,
        user_id: identity.user,
        device_id: identity.device_id.clone(),
        device_name: identity.device_name.clone(),
        peer_addr: peer.to_string(),
        connected_at: chrono::Utc::now(),
    };
    // Undoes the registration below however this task ends, a panic included.
    let cleanup = Cleanup { shared: shared.clone(), conn_id, identity: identity.clone(), entry: Some(entry.clone()) };
    // Registered before Welcome, so that a client that saw Welcome is visible in presence.
    shared.hub.add_conn(handle.clone());
    shared.presence.add(&entry).await;
    shared.metrics.connections_active.inc();
    if !matches!(tokio::time::timeout(FINAL_FLUSH, writer.send(welcome)).await, Ok(Ok(()))) {
        cleanup.run().await;
        return;
    }
    tracing::info!(device.id = %identity.device_id, "connected");

    let writer_task = tokio::spawn(
        write_loop(writer, resp_rx, event_rx, done.clone(), kill.clone(), shared.clone()).in_current_span(),
    );
    let mut session = Session::new(shared.clone(), identity, handle, resp_tx, entry);
    session.run(&mut reader).await;
    session.finish();
    drop(session);
    done.cancel();
    if kill.is_cancelled() {
        writer_task.abort();
    } else if tokio::time::timeout(FINAL_FLUSH, writer_task).await.is_err() {
        tracing::debug!("peer did not take the last frames");
    }
    cleanup.run().await;
    tracing::info!("disconnected");
}

/// Sends one last frame and closes, without waiting long for a peer that does not read.
async fn send_last(writer: &mut Writer, msg: Message) {
    let _ = tokio::time::timeout(FINAL_FLUSH, async {
        let _ = writer.send(msg).await;
        let _ = writer.close().await;
    })
    .await;
}

async fn write_loop(
    mut writer: Writer,
    mut resp: mpsc::Receiver<Message>,
    mut events: mpsc::Receiver<Message>,
    done: CancellationToken,
    kill: CancellationToken,
    shared: Arc<Shared>,
) {
    writer.set_backpressure_boundary(WRITE_BUFFER);
    loop {
        let msg = tokio::select! {
            biased;
            () = kill.cancelled() => return,
            Some(m) = resp.recv() => m,
            Some(m) = events.recv() => m,
            () = done.cancelled() => break,
        };
        // Frames already queued go out with this one in one write (the queues are bounded, and the
        // codec flushes on its own past WRITE_BUFFER): a burst of changes costs a few syscalls.
        let mut next = Some(msg);
        while let Some(msg) = next {
            if !write_one(&mut writer, msg, &shared).await {
                kill.cancel();
                return;
            }
            next = resp.try_recv().or_else(|_| events.try_recv()).ok();
        }
        if writer.flush().await.is_err() {
            kill.cancel();
            return;
        }
    }
    // The reader is done: flush the answers it queued last (an error, Goodbye), then close.
    while let Ok(m) = resp.try_recv() {
        if !write_one(&mut writer, m, &shared).await {
            return;
        }
    }
    let _ = writer.close().await;
}

/// Bytes of frames gathered before they are written out.
const WRITE_BUFFER: usize = 32 * 1024;
/// First capacity of a connection's read and write buffers.
const IDLE_BUFFER: usize = 1024;

/// Queues one frame in the writer's buffer (written out by the next flush, or once it is full).
async fn write_one(writer: &mut Writer, msg: Message, shared: &Shared) -> bool {
    if let Message::Chunk { payload, .. } = &msg {
        shared.metrics.chunks_sent.inc();
        shared.metrics.chunk_bytes_sent.inc_by(payload.len() as u64);
    }
    match writer.feed(msg).await {
        Ok(()) => {
            shared.metrics.frames_out.inc();
            true
        }
        Err(FrameError::TooLarge { len, max }) => {
            tracing::error!(len, max, "an answer does not fit in a frame");
            false
        }
        Err(e) => {
            tracing::debug!(error = %e, "write failed");
            false
        }
    }
}

/// Removes the connection from the hub and presence; also on panic (then from a spawned task).
struct Cleanup {
    shared: Arc<Shared>,
    conn_id: u64,
    identity: Identity,
    entry: Option<PresenceEntry>,
}

impl Cleanup {
    async fn run(mut self) {
        if let Some(entry) = self.entry.take() {
            undo(&self.shared, self.conn_id, &self.identity, &entry).await;
        }
    }
}

async fn undo(shared: &Shared, conn_id: u64, identity: &Identity, entry: &PresenceEntry) {
    shared.hub.remove_conn(conn_id, identity.user).await;
    shared.presence.remove(entry).await;
    shared.metrics.connections_active.dec();
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            let (shared, conn_id, identity) = (self.shared.clone(), self.conn_id, self.identity.clone());
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { undo(&shared, conn_id, &identity, &entry).await });
            }
        }
    }
}

/// What ends the reader loop, and the frame (if any) that tells the peer why.
pub enum End {
    PeerClosed,
    Killed,
    Say(Message),
}

impl End {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> End {
        End::Say(Message::error(0, code, message))
    }

    pub fn from_frame(e: &FrameError) -> End {
        match frame_error(e) {
            Some(err) => End::Say(ReqError::into_message(err, 0)),
            None => End::PeerClosed,
        }
    }
}

/// Tracks when presence was last refreshed, so a chatty client does not hammer Redis.
#[derive(Debug)]
pub struct Refresh {
    last: Instant,
    every: Duration,
}

impl Refresh {
    pub fn new(every: Duration) -> Refresh {
        Refresh { last: Instant::now(), every }
    }

    pub fn due(&mut self) -> bool {
        if self.last.elapsed() >= self.every {
            self.last = Instant::now();
            true
        } else {
            false
        }
    }
}

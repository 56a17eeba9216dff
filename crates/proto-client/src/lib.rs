//! A client of the filesync sync protocol (`docs/protocol.md`): what a sync
//! agent, the CLI and the tests use to talk to a `filesync-tcp` node.
//!
//! ```no_run
//! # async fn demo() -> Result<(), filesync_proto_client::ClientError> {
//! use filesync_proto_client::{Client, ConnectOptions, Event};
//! use filesync_core::WorkspaceId;
//! // "tls://sync.example.com:7443" for a node that serves TLS.
//! let (client, mut events) = Client::connect_to("127.0.0.1:7070", ConnectOptions::new("<jwt>", "dev-1", "laptop")).await?;
//! let ws = WorkspaceId(1);
//! let head = client.subscribe(ws, 0).await?; // changes 1..=head are already in `events`
//! let done = client.put_file(ws, "notes/todo.txt", std::path::Path::new("/tmp/todo.txt"), 0).await?;
//! while let Some(Event::Change(change)) = events.next().await {
//!     if !change.deleted { client.download(ws, change.seq, std::path::Path::new("/tmp/copy")).await?; }
//! }
//! # let _ = (head, done); Ok(()) }
//! ```
//!
//! - One TCP connection (TLS for `tls://` addresses, see [`tls`]), requests pipelined: every call may run concurrently
//!   from clones of the [`Client`]; answers are matched by request id.
//! - Uploads chunk the local file while streaming it (FastCDC, BLAKE3) and
//!   send only the chunks the node asks for; downloads go to a temporary file
//!   beside the destination, every chunk and the whole content are verified,
//!   then it is renamed into place. No call holds a whole file in memory.
//! - Changes of subscribed workspaces, membership notices and `Goodbye`
//!   arrive on the [`Events`] stream, which must be drained.
//! - Heartbeats are sent automatically; [`Client::bytes_sent`] and
//!   [`Client::bytes_received`] count every byte on the wire.

mod counted;
pub mod download;
pub mod folder;
mod manifest_cache;
pub mod tls;
mod transfer;
pub use transfer::BatchUpload;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use filesync_core::chunking::{ChunkRef, Hash};
use filesync_core::proto::delta;
use filesync_core::proto::frame::{FrameCodec, FrameError, DEFAULT_MAX_FRAME_BYTES};
use filesync_core::proto::{Change, ErrorCode, Message, Notice, RequestId, PROTOCOL_VERSION};
use filesync_core::{UserId, WorkspaceId};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::counted::Counted;
use crate::manifest_cache::ManifestCache;
use crate::tls::{Endpoint, Trust};

/// Longest chunk list a delta may expand to (the node's limit too).
const MAX_DELTA_CHUNKS: usize = 1 << 20;
/// Frames queued for sending; bounds the memory of an upload in flight.
const OUT_QUEUE: usize = 16;
/// Answers buffered per request.
const ANSWER_QUEUE: usize = 64;
/// Events buffered before the reader waits for the application.
const EVENT_QUEUE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The node answered `Error` with a code of this protocol version.
    #[error("node refused ({code}): {message}")]
    Server { code: ErrorCode, message: String },
    /// The node answered `Error` with a code this client does not know (a newer node); treated
    /// as a refusal of this request, never compared as text.
    #[error("node refused ({code}, a code this client does not know): {message}")]
    UnknownCode { code: String, message: String },
    #[error("the connection is closed")]
    Closed,
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("the local file changed while it was being uploaded")]
    FileChanged,
    #[error("downloaded data failed verification: {0}")]
    Verify(String),
    #[error("timed out: {0}")]
    Timeout(&'static str),
    #[error("{0}")]
    BadAddress(String),
    /// The node's certificate did not verify: a configuration problem, retrying cannot help.
    #[error("the sync node's TLS certificate is not trusted ({0}); pass --ca FILE if it is signed by a private CA")]
    Untrusted(String),
    #[error("TLS with the sync node failed: {0}")]
    Tls(String),
}

impl ClientError {
    /// The node's error code, if the node refused with one this client knows.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The node's `Error` frame (its `code` text and `message`), typed.
    pub(crate) fn refused(code: String, message: String) -> ClientError {
        match ErrorCode::parse(&code) {
            Some(code) => ClientError::Server { code, message },
            None => ClientError::UnknownCode { code, message },
        }
    }

    /// True if the node refused this request (known code or not); the connection is fine.
    pub fn is_refusal(&self) -> bool {
        matches!(self, ClientError::Server { .. } | ClientError::UnknownCode { .. })
    }
}

impl From<FrameError> for ClientError {
    fn from(e: FrameError) -> ClientError {
        match e {
            FrameError::Io(io) => ClientError::Io(io),
            other => ClientError::Protocol(other.to_string()),
        }
    }
}

/// How to introduce ourselves.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub token: String,
    pub device_id: String,
    pub device_name: String,
    /// Largest frame accepted from the node before `Welcome` says otherwise.
    pub max_frame_bytes: usize,
    /// For the TLS handshake and for `Welcome`, each.
    pub handshake_timeout: Duration,
    /// What a `tls://` node's certificate is checked against.
    pub trust: Trust,
}

impl ConnectOptions {
    pub fn new(token: impl Into<String>, device_id: impl Into<String>, device_name: impl Into<String>) -> Self {
        ConnectOptions {
            token: token.into(),
            device_id: device_id.into(),
            device_name: device_name.into(),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            handshake_timeout: Duration::from_secs(10),
            trust: Trust::system(),
        }
    }
}

/// What the node said in `Welcome`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    pub user_id: UserId,
    pub node_id: String,
    pub session_id: String,
    pub max_frame_bytes: u32,
    pub heartbeat_secs: u32,
}

/// Something the node sent that no request asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A journal entry of a subscribed workspace (catch-up first, then live).
    Change(Change),
    /// A membership change of this user.
    Notice(Notice),
    /// The node is going away: reconnect (to another node) after `retry_after`.
    Goodbye { reason: String, retry_after: Duration },
    /// The connection ended; `error` is the node's last `Error` frame or the I/O failure, if any,
    /// and `code` that frame's code (e.g. [`ErrorCode::TokenRevoked`]) when this client knows it.
    Closed { error: Option<String>, code: Option<ErrorCode> },
}

/// The stream of [`Event`]s of one connection.
#[derive(Debug)]
pub struct Events(mpsc::Receiver<Event>);

impl Events {
    /// The next event; `None` after `Closed` was delivered.
    pub async fn next(&mut self) -> Option<Event> {
        self.0.recv().await
    }

    /// The next event within `timeout`.
    pub async fn next_within(&mut self, timeout: Duration) -> Option<Event> {
        tokio::time::timeout(timeout, self.0.recv()).await.ok().flatten()
    }
}

/// The outcome of a change request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub workspace_id: WorkspaceId,
    pub seq: i64,
    pub version: i64,
    /// Where the change landed: the requested path, or the conflict copy.
    pub path: String,
    pub conflict_path: Option<String>,
}

/// A version's content description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub workspace_id: WorkspaceId,
    pub seq: i64,
    pub path: String,
    pub size: u64,
    pub mtime_ms: i64,
    pub content_hash: Hash,
    pub chunks: Vec<ChunkRef>,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    received: AtomicU64,
}

struct Inner {
    out: mpsc::Sender<Message>,
    /// Open requests; `None` once the connection has ended (no new request may wait forever).
    pending: Mutex<Option<HashMap<RequestId, mpsc::Sender<Message>>>>,
    next_id: AtomicU64,
    welcome: Welcome,
    counters: Arc<Counters>,
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    manifests: Mutex<ManifestCache>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            t.abort();
        }
    }
}

/// A connection to a node. Clones share it; it closes when the last clone is dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("welcome", &self.inner.welcome).finish_non_exhaustive()
    }
}

/// An open request: its answers, and its slot in the pending map until dropped.
struct Pending {
    id: RequestId,
    rx: mpsc::Receiver<Message>,
    client: Client,
}

impl Pending {
    /// The next answer; an `Error` frame becomes `ClientError::Server` (or `UnknownCode`).
    async fn recv(&mut self) -> Result<Message, ClientError> {
        match self.rx.recv().await {
            Some(Message::Error { code, message, .. }) => Err(ClientError::refused(code, message)),
            Some(m) => Ok(m),
            None => Err(ClientError::Closed),
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(map) = self.client.inner.pending.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            map.remove(&self.id);
        }
    }
}

fn unexpected(what: &str, got: &Message) -> ClientError {
    ClientError::Protocol(format!("expected {what}, got {}", got.kind()))
}

impl Client {
    /// Connects over plain TCP, says `Hello` and waits for `Welcome`.
    pub async fn connect(addr: impl ToSocketAddrs, opts: ConnectOptions) -> Result<(Client, Events), ClientError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Client::start(stream, opts).await
    }

    /// Connects to an address as the user writes it: `HOST:PORT` (plain TCP) or `tls://HOST:PORT`
    /// (TLS, verified against `opts.trust`), then as [`Client::connect`].
    pub async fn connect_to(addr: &str, opts: ConnectOptions) -> Result<(Client, Events), ClientError> {
        match Endpoint::parse(addr).map_err(ClientError::BadAddress)? {
            Endpoint::Plain(addr) => Client::connect(addr.as_str(), opts).await,
            Endpoint::Tls { host, port } => {
                let config = opts.trust.client_config().map_err(|e| ClientError::Tls(e.to_string()))?;
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|_| ClientError::BadAddress(format!("{host:?} is not a valid TLS server name")))?;
                let stream = TcpStream::connect((host.as_str(), port)).await?;
                stream.set_nodelay(true)?;
                let handshake = tokio_rustls::TlsConnector::from(config).connect(name, stream);
                let stream = tokio::time::timeout(opts.handshake_timeout, handshake)
                    .await
                    .map_err(|_| ClientError::Timeout("the TLS handshake"))?
                    .map_err(|e| tls::handshake_failure(&e))?;
                Client::start(stream, opts).await
            }
        }
    }

    /// Says `Hello` on an open transport and waits for `Welcome`.
    async fn start<S>(stream: S, opts: ConnectOptions) -> Result<(Client, Events), ClientError>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let counters = Arc::new(Counters::default());
        let (rd, wr) = tokio::io::split(stream);
        let (rd, wr): (BoxRead, BoxWrite) = (Box::new(rd), Box::new(wr));
        let mut reader =
            FramedRead::new(Counted::new(rd, counters.clone(), true), FrameCodec::new(opts.max_frame_bytes));
        let mut writer =
            FramedWrite::new(Counted::new(wr, counters.clone(), false), FrameCodec::new(opts.max_frame_bytes));
        writer
            .send(Message::Hello {
                protocol_version: PROTOCOL_VERSION,
                token: opts.token.clone(),
                device_id: opts.device_id.clone(),
                device_name: opts.device_name.clone(),
            })
            .await?;
        let first = tokio::time::timeout(opts.handshake_timeout, reader.next())
            .await
            .map_err(|_| ClientError::Timeout("waiting for Welcome"))?;
        let welcome = match first {
            Some(Ok(Message::Welcome { user_id, node_id, session_id, max_frame_bytes, heartbeat_secs })) => {
                Welcome { user_id, node_id, session_id, max_frame_bytes, heartbeat_secs }
            }
            Some(Ok(Message::Error { code, message, .. })) => return Err(ClientError::refused(code, message)),
            Some(Ok(other)) => return Err(unexpected("Welcome", &other)),
            // What a TLS record header looks like when read as a frame length.
            Some(Err(FrameError::TooLarge { .. })) => {
                return Err(ClientError::Protocol(
                    "the node's answer is not a filesync frame; if the node serves TLS, use tls://HOST:PORT".into(),
                ))
            }
            Some(Err(e)) => return Err(e.into()),
            None => return Err(ClientError::Closed),
        };
        // Frames we send must fit the node's limit.
        *writer.encoder_mut() = FrameCodec::new(welcome.max_frame_bytes as usize);

        let (out_tx, out_rx) = mpsc::channel(OUT_QUEUE);
        let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
        let heartbeat = Duration::from_secs(u64::from(welcome.heartbeat_secs.max(1)));
        let writer_task = tokio::spawn(write_loop(writer, out_rx));
        let ping_task = tokio::spawn(heartbeat_loop(out_tx.clone(), heartbeat));
        let inner_tasks = vec![writer_task.abort_handle(), ping_task.abort_handle()];
        let client = Client {
            inner: Arc::new(Inner {
                out: out_tx,
                pending: Mutex::new(Some(HashMap::new())),
                next_id: AtomicU64::new(1),
                welcome,
                counters,
                tasks: Mutex::new(inner_tasks),
                manifests: Mutex::new(ManifestCache::default()),
            }),
        };
        // The reader holds only a weak link so that dropping every Client closes the connection.
        let weak = Arc::downgrade(&client.inner);
        let reader_task = tokio::spawn(read_loop(reader, weak, ev_tx, heartbeat * 3));
        client.inner.tasks.lock().unwrap_or_else(|p| p.into_inner()).push(reader_task.abort_handle());
        Ok((client, Events(ev_rx)))
    }

    pub fn welcome(&self) -> &Welcome {
        &self.inner.welcome
    }

    /// Bytes written to the socket so far (frames and prefixes).
    pub fn bytes_sent(&self) -> u64 {
        self.inner.counters.sent.load(Ordering::Relaxed)
    }

    /// Bytes read from the socket so far.
    pub fn bytes_received(&self) -> u64 {
        self.inner.counters.received.load(Ordering::Relaxed)
    }

    async fn send(&self, msg: Message) -> Result<(), ClientError> {
        self.inner.out.send(msg).await.map_err(|_| ClientError::Closed)
    }

    /// Registers a request id, then sends the frame built with it.
    async fn request(&self, build: impl FnOnce(RequestId) -> Message) -> Result<Pending, ClientError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(ANSWER_QUEUE);
        match self.inner.pending.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            Some(map) => map.insert(id, tx),
            None => return Err(ClientError::Closed),
        };
        let pending = Pending { id, rx, client: self.clone() };
        self.send(build(id)).await?;
        Ok(pending)
    }

    /// Sends a change request and waits for `Committed`.
    async fn change(&self, build: impl FnOnce(RequestId) -> Message) -> Result<Committed, ClientError> {
        let mut p = self.request(build).await?;
        committed(p.recv().await?)
    }

    /// Deletes `path`, which must be at `base_version`.
    pub async fn delete(&self, ws: WorkspaceId, path: &str, base_version: i64) -> Result<Committed, ClientError> {
        let path = path.to_owned();
        self.change(|request_id| Message::Delete { request_id, workspace_id: ws, path, base_version }).await
    }

    /// Moves `from` (at `base_version`) to `to`, which must not exist.
    pub async fn move_path(
        &self,
        ws: WorkspaceId,
        from: &str,
        to: &str,
        base_version: i64,
    ) -> Result<Committed, ClientError> {
        let (from, to) = (from.to_owned(), to.to_owned());
        self.change(|request_id| Message::Move { request_id, workspace_id: ws, from, to, base_version }).await
    }

    /// Creates an (empty) directory entry.
    pub async fn make_dir(&self, ws: WorkspaceId, path: &str, base_version: i64) -> Result<Committed, ClientError> {
        let path = path.to_owned();
        self.change(|request_id| Message::MakeDir { request_id, workspace_id: ws, path, base_version }).await
    }

    /// The content description of the version made by `seq`. When this
    /// connection saw an earlier version of the same large file, only the
    /// difference travels (`ManifestDelta`), and the rebuilt list is verified.
    pub async fn manifest(&self, ws: WorkspaceId, seq: i64) -> Result<Manifest, ClientError> {
        let offered = self.manifests().offered(ws);
        let manifest = if offered.is_empty() {
            let mut p = self.request(|request_id| Message::GetManifest { request_id, workspace_id: ws, seq }).await?;
            match p.recv().await? {
                Message::Manifest { workspace_id, seq, path, size, mtime_ms, content_hash, chunks, .. } => {
                    Manifest { workspace_id, seq, path, size, mtime_ms, content_hash, chunks }
                }
                other => return Err(unexpected("Manifest", &other)),
            }
        } else {
            let bases = offered.iter().map(|(s, _)| *s).collect();
            let mut p = self
                .request(|request_id| Message::GetManifestDelta { request_id, workspace_id: ws, seq, bases })
                .await?;
            match p.recv().await? {
                Message::ManifestDelta {
                    workspace_id,
                    seq,
                    path,
                    size,
                    mtime_ms,
                    content_hash,
                    base_seq,
                    runs,
                    manifest_hash,
                    ..
                } => {
                    let empty = Vec::new();
                    let base = match offered.iter().find(|(s, _)| *s == base_seq) {
                        Some((_, list)) => &list[..],
                        None if base_seq == 0 => &empty[..],
                        None => {
                            return Err(ClientError::Protocol(format!(
                                "the node based a delta on seq {base_seq}, which was not offered"
                            )))
                        }
                    };
                    let chunks = delta::apply(base, &runs, MAX_DELTA_CHUNKS, &manifest_hash)
                        .map_err(|e| ClientError::Verify(format!("the manifest delta of seq {seq}: {e}")))?;
                    Manifest { workspace_id, seq, path, size, mtime_ms, content_hash, chunks }
                }
                other => return Err(unexpected("ManifestDelta", &other)),
            }
        };
        self.remember(ws, manifest.seq, &manifest.path, &manifest.chunks);
        Ok(manifest)
    }

    fn manifests(&self) -> std::sync::MutexGuard<'_, ManifestCache> {
        self.inner.manifests.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps a large version's chunk list as the base of the next delta.
    fn remember(&self, ws: WorkspaceId, seq: i64, path: &str, chunks: &[ChunkRef]) {
        if chunks.len() >= manifest_cache::MIN_CACHED_CHUNKS {
            self.manifests().insert(ws, seq, path, Arc::new(chunks.to_vec()));
        }
    }

    /// Subscribes from `since_seq`. When this returns, every change up to the
    /// returned head seq is already queued on [`Events`]; live ones follow.
    pub async fn subscribe(&self, ws: WorkspaceId, since_seq: i64) -> Result<i64, ClientError> {
        let mut p = self.request(|request_id| Message::Subscribe { request_id, workspace_id: ws, since_seq }).await?;
        match p.recv().await? {
            Message::Subscribed { head_seq, .. } => Ok(head_seq),
            other => Err(unexpected("Subscribed", &other)),
        }
    }

    pub async fn unsubscribe(&self, ws: WorkspaceId) -> Result<(), ClientError> {
        let mut p = self.request(|request_id| Message::Unsubscribe { request_id, workspace_id: ws }).await?;
        match p.recv().await? {
            Message::Ack { .. } => Ok(()),
            other => Err(unexpected("Ack", &other)),
        }
    }
}

fn committed(msg: Message) -> Result<Committed, ClientError> {
    match msg {
        Message::Committed { workspace_id, version, seq, path, conflict_path, .. } => {
            Ok(Committed { workspace_id, seq, version, path, conflict_path })
        }
        other => Err(unexpected("Committed", &other)),
    }
}

type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;
type Writer = FramedWrite<Counted<BoxWrite>, FrameCodec>;
type Reader = FramedRead<Counted<BoxRead>, FrameCodec>;

/// Sends queued frames. Frames already waiting go out together with one flush (many small
/// requests cost one write, not one each); the codec still flushes on its own past 64 KiB.
async fn write_loop(mut writer: Writer, mut out: mpsc::Receiver<Message>) {
    writer.set_backpressure_boundary(WRITE_BUFFER);
    while let Some(msg) = out.recv().await {
        let mut next = Some(msg);
        while let Some(msg) = next {
            if let Err(e) = writer.feed(msg).await {
                tracing::debug!(error = %e, "send failed");
                return;
            }
            next = out.try_recv().ok();
        }
        if let Err(e) = writer.flush().await {
            tracing::debug!(error = %e, "send failed");
            return;
        }
    }
    let _ = writer.close().await;
}

/// Bytes of frames gathered before they are written out.
const WRITE_BUFFER: usize = 64 * 1024;

async fn heartbeat_loop(out: mpsc::Sender<Message>, every: Duration) {
    let mut nonce = 0u64;
    loop {
        tokio::time::sleep(every).await;
        nonce += 1;
        if out.send(Message::Ping { nonce }).await.is_err() {
            return;
        }
    }
}

async fn read_loop(mut reader: Reader, client: std::sync::Weak<Inner>, events: mpsc::Sender<Event>, silence: Duration) {
    let mut closed_with = None;
    let error = loop {
        let next = match tokio::time::timeout(silence, reader.next()).await {
            Err(_) => break Some("the node sent nothing for three heartbeats".to_owned()),
            Ok(None) => break None,
            Ok(Some(Err(e))) => break Some(e.to_string()),
            Ok(Some(Ok(m))) => m,
        };
        let Some(inner) = client.upgrade() else { return };
        match next {
            Message::Change(c) => {
                if events.send(Event::Change(c)).await.is_err() {
                    tracing::debug!("events dropped by the application");
                }
            }
            Message::Notification(n) => {
                let _ = events.send(Event::Notice(n)).await;
            }
            Message::Goodbye { reason, retry_after_ms } => {
                let _ =
                    events.send(Event::Goodbye { reason, retry_after: Duration::from_millis(retry_after_ms) }).await;
            }
            Message::Ping { nonce } => {
                let _ = inner.out.send(Message::Pong { nonce }).await;
            }
            Message::Pong { .. } => {}
            Message::Error { request_id: 0, code, message } => {
                closed_with = ErrorCode::parse(&code);
                break Some(format!("{code}: {message}"));
            }
            other => {
                let Some(id) = other.request_id() else { continue };
                let tx =
                    inner.pending.lock().unwrap_or_else(|p| p.into_inner()).as_ref().and_then(|m| m.get(&id).cloned());
                // An answer to a request nobody waits for any more is dropped.
                if let Some(tx) = tx {
                    let _ = tx.send(other).await;
                }
            }
        }
    };
    if let Some(inner) = client.upgrade() {
        // Waiting requests see their answer channel close; new ones are refused.
        inner.pending.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
    let _ = events.send(Event::Closed { error, code: closed_with }).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_arrive_typed() {
        for code in ErrorCode::ALL {
            let e = ClientError::refused(code.as_str().to_owned(), "no".into());
            assert_eq!(e.code(), Some(code));
            assert!(e.is_refusal());
        }
        // A newer node's code is still a refusal of the request, with its text kept for the user.
        let newer = ClientError::refused("quota_exceeded".into(), "over quota".into());
        assert!(matches!(&newer, ClientError::UnknownCode { .. }) && newer.is_refusal() && newer.code().is_none());
        assert!(newer.to_string().contains("quota_exceeded"), "{newer}");
        assert!(!ClientError::Closed.is_refusal());
    }
}

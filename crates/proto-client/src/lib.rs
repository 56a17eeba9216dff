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
pub use filesync_core::proto::{MAX_CHANGES_PAGE, MAX_HEADS_PAGE};
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
/// Events buffered for the application; changes beyond that become [`Event::Missed`].
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
    /// The changes `after_seq + 1 ..= up_to_seq` of a subscribed workspace arrived while the
    /// queue was full and were not kept: read them with [`Client::changes`] before the events
    /// that follow. So a reader that falls behind costs a page request, never unbounded memory
    /// nor a stalled connection.
    Missed { workspace_id: WorkspaceId, after_seq: i64, up_to_seq: i64 },
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

    /// An event that has already arrived: `Ok(None)` if none has yet, `Err(())` once the
    /// stream has ended.
    #[allow(clippy::result_unit_err)]
    pub fn try_next(&mut self) -> Result<Option<Event>, ()> {
        match self.0.try_recv() {
            Ok(ev) => Ok(Some(ev)),
            Err(mpsc::error::TryRecvError::Empty) => Ok(None),
            Err(mpsc::error::TryRecvError::Disconnected) => Err(()),
        }
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

/// A page of a workspace's journal ([`Client::changes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangePage {
    /// The workspace's newest seq when the page was read.
    pub head_seq: i64,
    /// Consecutive changes in seq order, from the one after the asked seq; empty only at the head.
    pub changes: Vec<Change>,
}

/// A page of a workspace's live heads ([`Client::heads`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadsPage {
    /// The workspace's newest seq when the page was read.
    pub head_seq: i64,
    /// Live files and directories, each as the change that made it (a put of its content at its
    /// version), in the node's order.
    pub entries: Vec<Change>,
    /// Where the next page starts (pass it to [`Client::heads`]); `None` on the last page.
    pub next: Option<Hash>,
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
    /// returned head seq is already queued on [`Events`] (as itself, or within an
    /// [`Event::Missed`] if the queue was full); live ones follow.
    pub async fn subscribe(&self, ws: WorkspaceId, since_seq: i64) -> Result<i64, ClientError> {
        let mut p = self.request(|request_id| Message::Subscribe { request_id, workspace_id: ws, since_seq }).await?;
        match p.recv().await? {
            Message::Subscribed { head_seq, .. } => Ok(head_seq),
            other => Err(unexpected("Subscribed", &other)),
        }
    }

    /// Up to `limit` (at most [`MAX_CHANGES_PAGE`]) journal changes after `after_seq`, in one
    /// answer, without subscribing: a catch-up read a page at a time, so that a client far behind
    /// holds one page, not everything it missed. Checked on arrival: the changes must be this
    /// workspace's, consecutive from `after_seq + 1`, no more than asked and not past the head, and
    /// a page is empty only when `after_seq` is at the head.
    pub async fn changes(&self, ws: WorkspaceId, after_seq: i64, limit: u32) -> Result<ChangePage, ClientError> {
        let mut p =
            self.request(|request_id| Message::GetChanges { request_id, workspace_id: ws, after_seq, limit }).await?;
        match p.recv().await? {
            Message::Changes { workspace_id, head_seq, changes, .. } => {
                check_page(ws, after_seq, limit, workspace_id, head_seq, &changes).map_err(ClientError::Protocol)?;
                Ok(ChangePage { head_seq, changes })
            }
            other => Err(unexpected("Changes", &other)),
        }
    }

    /// Up to `limit` (at most [`MAX_HEADS_PAGE`]) live heads of the workspace after the cursor
    /// `after` (`None`: the first page): what a client answered `history_expired` reconciles
    /// with, a page at a time. Checked on arrival: this workspace's, live, no more than asked,
    /// none past the head, and a next page only after a non-empty one.
    pub async fn heads(&self, ws: WorkspaceId, after: Option<Hash>, limit: u32) -> Result<HeadsPage, ClientError> {
        let mut p = self.request(|request_id| Message::GetHeads { request_id, workspace_id: ws, after, limit }).await?;
        match p.recv().await? {
            Message::Heads { workspace_id, head_seq, entries, next, .. } => {
                check_heads(ws, limit, workspace_id, head_seq, &entries, next.is_some())
                    .map_err(ClientError::Protocol)?;
                Ok(HeadsPage { head_seq, entries, next })
            }
            other => Err(unexpected("Heads", &other)),
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

/// Why a `Changes` answer to `GetChanges{ws, after_seq, limit}` cannot be right, if it cannot.
fn check_page(
    ws: WorkspaceId,
    after_seq: i64,
    limit: u32,
    workspace_id: WorkspaceId,
    head_seq: i64,
    changes: &[Change],
) -> Result<(), String> {
    if workspace_id != ws {
        return Err(format!("asked for changes of workspace {ws}, got workspace {workspace_id}'s"));
    }
    if changes.len() > limit as usize {
        return Err(format!("asked for {limit} changes, got {}", changes.len()));
    }
    if changes.is_empty() && head_seq > after_seq.max(0) {
        return Err(format!("no changes after seq {after_seq}, yet the head is {head_seq}"));
    }
    for (i, c) in changes.iter().enumerate() {
        let want = after_seq.max(0) + 1 + i as i64;
        if c.workspace_id != ws || c.seq != want || c.seq > head_seq {
            return Err(format!(
                "change {i} of a page after seq {after_seq} (head {head_seq}) is seq {} of workspace {}",
                c.seq, c.workspace_id
            ));
        }
    }
    Ok(())
}

/// Why a `Heads` answer to `GetHeads{ws, after, limit}` cannot be right, if it cannot.
fn check_heads(
    ws: WorkspaceId,
    limit: u32,
    workspace_id: WorkspaceId,
    head_seq: i64,
    entries: &[Change],
    more: bool,
) -> Result<(), String> {
    if workspace_id != ws {
        return Err(format!("asked for the heads of workspace {ws}, got workspace {workspace_id}'s"));
    }
    if entries.len() > limit as usize {
        return Err(format!("asked for {limit} heads, got {}", entries.len()));
    }
    if entries.is_empty() && more {
        return Err("an empty page of heads with a next page".into());
    }
    for (i, c) in entries.iter().enumerate() {
        if c.workspace_id != ws || c.deleted || c.seq < 1 || c.seq > head_seq {
            return Err(format!(
                "head {i} (seq {}, workspace {}, deleted {}) does not fit a page of live heads at seq {head_seq}",
                c.seq, c.workspace_id, c.deleted
            ));
        }
    }
    Ok(())
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
    // Events that did not fit the application's queue, in order, until it has room again.
    let mut held = Held::default();
    let error = loop {
        let next = tokio::select! {
            biased;
            room = events.reserve(), if !held.0.is_empty() => {
                match (room, held.0.pop_front()) {
                    (Ok(room), Some(ev)) => room.send(ev),
                    // The application dropped its events: nothing more to hold.
                    _ => held.0.clear(),
                }
                continue;
            }
            // Cancel-safe: a frame read in part stays in the reader's buffer.
            read = tokio::time::timeout(silence, reader.next()) => match read {
                Err(_) => break Some("the node sent nothing for three heartbeats".to_owned()),
                Ok(None) => break None,
                Ok(Some(Err(e))) => break Some(e.to_string()),
                Ok(Some(Ok(m))) => m,
            },
        };
        let Some(inner) = client.upgrade() else { return };
        match next {
            Message::Change(c) => held.offer(&events, Event::Change(c)),
            Message::Notification(n) => held.offer(&events, Event::Notice(n)),
            Message::Goodbye { reason, retry_after_ms } => {
                held.offer(&events, Event::Goodbye { reason, retry_after: Duration::from_millis(retry_after_ms) });
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
    for ev in held.0 {
        let _ = events.send(ev).await;
    }
    let _ = events.send(Event::Closed { error, code: closed_with }).await;
}

/// Events that arrived while the application's queue was full. Changes are not kept: a run of
/// them is one [`Event::Missed`] (read again by the application with [`Client::changes`]); an
/// upload announcement is dropped (it only saves time, as the node drops one for a full queue);
/// the rare others (membership notices, `Goodbye`) are kept in order.
#[derive(Debug, Default)]
struct Held(std::collections::VecDeque<Event>);

impl Held {
    /// Queues `ev` for the application, or holds it (in its place) if the queue is full or
    /// events are already held: the reader never waits for the application.
    fn offer(&mut self, events: &mpsc::Sender<Event>, ev: Event) {
        if self.0.is_empty() {
            match events.try_send(ev) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => return,
                Err(mpsc::error::TrySendError::Full(ev)) => return self.hold(ev),
            }
        }
        self.hold(ev);
    }

    fn hold(&mut self, ev: Event) {
        match ev {
            Event::Change(c) => {
                // The workspace's latest `Missed` since the last other event takes it in.
                let run =
                    self.0.iter_mut().rev().take_while(|e| matches!(e, Event::Missed { .. })).find_map(|e| match e {
                        Event::Missed { workspace_id, up_to_seq, .. } if *workspace_id == c.workspace_id => {
                            Some(up_to_seq)
                        }
                        _ => None,
                    });
                match run {
                    Some(up_to) => *up_to = (*up_to).max(c.seq),
                    None => self.0.push_back(Event::Missed {
                        workspace_id: c.workspace_id,
                        after_seq: c.seq - 1,
                        up_to_seq: c.seq,
                    }),
                }
            }
            Event::Notice(n) if n.upload_workspace().is_some() => {}
            other => self.0.push_back(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(ws: i64, seq: i64) -> Change {
        Change {
            workspace_id: WorkspaceId(ws),
            seq,
            op: filesync_core::proto::ChangeOp::Put,
            kind: filesync_core::proto::EntryKind::File,
            path: format!("f{seq}"),
            from_path: None,
            size: 1,
            mtime_ms: 0,
            mode: 0o644,
            content_hash: [0; 32],
            deleted: false,
            author_id: UserId(1),
            device_id: "d".into(),
            committed_at_ms: 0,
        }
    }

    /// A page of changes is taken only if it can be right: a client that applies pages and moves its
    /// last seq to each page's end must never skip, repeat or wait forever on a node's mistake.
    #[test]
    fn a_page_of_changes_is_checked_on_arrival() {
        let ws = WorkspaceId(1);
        let page = |v: &[(i64, i64)]| v.iter().map(|&(w, s)| change(w, s)).collect::<Vec<_>>();
        assert_eq!(check_page(ws, 4, 3, ws, 9, &page(&[(1, 5), (1, 6), (1, 7)])), Ok(()));
        assert_eq!(check_page(ws, 9, 3, ws, 9, &[]), Ok(()), "at the head");
        assert_eq!(
            check_page(ws, 12, 3, ws, 9, &[]),
            Ok(()),
            "past the head (a reset server): the caller sees the head"
        );
        assert_eq!(check_page(ws, -1, 1, ws, 5, &page(&[(1, 1)])), Ok(()), "a negative seq is read as 0");
        let bad: [(&str, Result<(), String>); 7] = [
            ("other workspace", check_page(ws, 0, 3, WorkspaceId(2), 9, &[])),
            ("a change of another workspace", check_page(ws, 0, 3, ws, 9, &page(&[(1, 1), (2, 2)]))),
            ("more than asked", check_page(ws, 0, 2, ws, 9, &page(&[(1, 1), (1, 2), (1, 3)]))),
            ("a gap", check_page(ws, 0, 3, ws, 9, &page(&[(1, 1), (1, 3)]))),
            ("not from after_seq + 1", check_page(ws, 4, 3, ws, 9, &page(&[(1, 4), (1, 5)]))),
            ("past the head", check_page(ws, 4, 3, ws, 5, &page(&[(1, 5), (1, 6)]))),
            ("empty below the head", check_page(ws, 4, 3, ws, 9, &[])),
        ];
        for (what, result) in bad {
            assert!(result.is_err(), "{what}");
        }
    }

    /// A page of heads is taken only if it can be a page of live heads at its head seq.
    #[test]
    fn a_page_of_heads_is_checked_on_arrival() {
        let ws = WorkspaceId(1);
        let heads = |v: &[(i64, i64)]| v.iter().map(|&(w, s)| change(w, s)).collect::<Vec<_>>();
        assert_eq!(check_heads(ws, 3, ws, 9, &heads(&[(1, 9), (1, 2)]), true), Ok(()), "any order");
        assert_eq!(check_heads(ws, 3, ws, 0, &[], false), Ok(()), "an empty workspace");
        let mut deleted = heads(&[(1, 3)]);
        deleted[0].deleted = true;
        let bad: [(&str, Result<(), String>); 6] = [
            ("other workspace", check_heads(ws, 3, WorkspaceId(2), 9, &[], false)),
            ("an entry of another workspace", check_heads(ws, 3, ws, 9, &heads(&[(2, 1)]), false)),
            ("more than asked", check_heads(ws, 1, ws, 9, &heads(&[(1, 1), (1, 2)]), false)),
            ("past the head", check_heads(ws, 3, ws, 5, &heads(&[(1, 6)]), false)),
            ("a deleted entry", check_heads(ws, 3, ws, 9, &deleted, false)),
            ("a next page after an empty one", check_heads(ws, 3, ws, 9, &[], true)),
        ];
        for (what, result) in bad {
            assert!(result.is_err(), "{what}");
        }
    }

    /// The reader never waits for the application: changes that do not fit its queue become one
    /// `Missed` per run (per workspace, in their place among other events), upload announcements
    /// are dropped, membership notices are kept in order.
    #[test]
    fn events_that_do_not_fit_are_held_as_missed_runs() {
        let (tx, mut rx) = mpsc::channel(2);
        let mut held = Held::default();
        for seq in 1..=5 {
            held.offer(&tx, Event::Change(change(1, seq)));
        }
        let removed = Event::Notice(Notice::MemberRemoved { workspace_id: WorkspaceId(3) });
        held.offer(&tx, removed.clone());
        let upload = Notice::UploadAbandoned { workspace_id: WorkspaceId(1), content_hash: [0; 32] };
        held.offer(&tx, Event::Notice(upload));
        held.offer(&tx, Event::Change(change(1, 6)));
        held.offer(&tx, Event::Change(change(2, 9)));
        held.offer(&tx, Event::Change(change(1, 7)));
        let missed = |ws: i64, after_seq: i64, up_to_seq: i64| Event::Missed {
            workspace_id: WorkspaceId(ws),
            after_seq,
            up_to_seq,
        };
        assert_eq!(
            held.0.iter().cloned().collect::<Vec<_>>(),
            vec![missed(1, 2, 5), removed, missed(1, 5, 7), missed(2, 8, 9)]
        );
        let queued: Vec<i64> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|e| match e {
                Event::Change(c) => c.seq,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(queued, [1, 2]);
        // Once something is held, later events queue behind it even if there is room now.
        held.offer(&tx, Event::Change(change(1, 8)));
        assert!(rx.try_recv().is_err());
        let removed = Event::Notice(Notice::MemberRemoved { workspace_id: WorkspaceId(3) });
        assert_eq!(
            held.0.into_iter().collect::<Vec<_>>(),
            vec![missed(1, 2, 5), removed, missed(1, 5, 8), missed(2, 8, 9)]
        );
    }

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

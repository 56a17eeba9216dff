//! [`Remote`] over the protocol client library ([`filesync_proto_client::Client`]).
//!
//! The library's event stream holds a bounded number of events; changes that
//! arrive while it is full come as one [`RemoteEvent::Missed`], which the
//! engine reads again a page at a time: the engine may do long work between
//! events (a 200 MiB download) without the connection stalling or memory
//! growing with how far behind it is.

use std::path::Path;

use filesync_core::chunking::{FileScan, Hash};
use filesync_core::proto::{Change, ErrorCode, MAX_BATCH_CHUNKS, MAX_BATCH_FILES};
use filesync_core::WorkspaceId;
use futures::StreamExt;

use super::local::LocalFile;
use super::remote::{Committed, Manifest, PathEdit, PutJob, Refusal, Remote, RemoteError, RemoteEvent};
use filesync_proto_client::download::Fetch;
use filesync_proto_client::{BatchUpload, Client, ClientError, ConnectOptions, Event, Events, HeadsPage};

/// Longest wait for a node to accept the TCP connection and the handshake.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Uploads of a batch that may be open on the connection at once (the node allows 64).
const UPLOADS_IN_FLIGHT: usize = 48;

/// Files up to this size travel in `PutFiles` batches; larger ones alone (and as deltas).
const BATCH_FILE_BYTES: u64 = 1024 * 1024;
/// Chunk bytes of one `PutFiles` batch (one `NeedChunks` answer, one durability barrier on the node).
const BATCH_BYTES: u64 = 16 * 1024 * 1024;
/// Files of one `PutFiles` batch: a push's batch of uploads goes as a few of them, pipelined.
const BATCH_FILES: usize = 256;
/// `PutFiles` batches open on the connection at once.
const BATCHES_IN_FLIGHT: usize = 2;
/// Deletes and moves open on the connection at once: the node commits those that queue behind
/// one another together.
const EDITS_IN_FLIGHT: usize = 256;

/// Splits the jobs named by `small` into batches within the protocol's limits, [`BATCH_BYTES`] of
/// content and `frame_budget` bytes of `PutFiles` frame (long paths count).
fn batches<'a>(small: &'a [usize], jobs: &[PutJob], frame_budget: usize) -> Vec<&'a [usize]> {
    let mut out = Vec::new();
    let (mut start, mut files, mut chunks, mut bytes, mut frame) = (0, 0usize, 0usize, 0u64, 0usize);
    for (k, &i) in small.iter().enumerate() {
        let (c, b) = (jobs[i].scan.chunks.len(), jobs[i].scan.size);
        // Generous per-file estimate of the encoded entry: path, fixed fields, 32-byte hash + length per chunk.
        let f = jobs[i].path.len() + 96 + c * 40;
        if files > 0
            && (files == BATCH_FILES.min(MAX_BATCH_FILES)
                || chunks + c > MAX_BATCH_CHUNKS
                || bytes + b > BATCH_BYTES
                || frame + f > frame_budget)
        {
            out.push(&small[start..k]);
            (start, files, chunks, bytes, frame) = (k, 0, 0, 0, 0);
        }
        files += 1;
        chunks += c;
        bytes += b;
        frame += f;
    }
    if files > 0 {
        out.push(&small[start..]);
    }
    out
}

/// One connection to a sync node.
pub struct Session {
    client: Client,
    events: Events,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("node", &self.client.welcome().node_id).finish_non_exhaustive()
    }
}

impl From<ClientError> for RemoteError {
    fn from(e: ClientError) -> RemoteError {
        match e {
            ClientError::Server { code: ErrorCode::WorkspaceNotFound, message } => RemoteError::NoWorkspace(message),
            // The node cannot serve right now (its database is down, it is overloaded): nothing
            // was refused for good, so the connection is treated as lost and the reconnect loop
            // retries every pending change after a pause, instead of dropping the upload.
            ClientError::Server { code: code @ (ErrorCode::Unavailable | ErrorCode::Busy), message } => {
                RemoteError::Connection(format!("{message} ({code}); retrying"))
            }
            ClientError::Server { code, message } => RemoteError::Refused { code: Refusal::Node(code), message },
            e @ ClientError::UnknownCode { .. } => {
                RemoteError::Refused { code: Refusal::UnknownCode, message: e.to_string() }
            }
            // The file moved under us; the watcher brings it back. Not a connection problem.
            ClientError::FileChanged => RemoteError::Refused {
                code: Refusal::FileChanged,
                message: "the file changed while it was read".into(),
            },
            e @ (ClientError::Untrusted(_) | ClientError::BadAddress(_)) => {
                RemoteError::Refused { code: Refusal::Misconfigured, message: e.to_string() }
            }
            other => RemoteError::Connection(other.to_string()),
        }
    }
}

impl Session {
    /// Connects with the login's current access token; one the node finds expired is renewed
    /// (with the device's refresh credential) and the connection tried once more.
    pub async fn connect(addr: &str, config: &super::AgentConfig) -> Result<Session, RemoteError> {
        let creds = &config.credentials;
        let token = creds.token().await.map_err(renewal_error)?;
        let (client, events) = match Session::handshake(addr, config, &token).await {
            Err(RemoteError::Refused { code: Refusal::Node(ErrorCode::TokenExpired), .. }) => {
                let token = creds.renew(&token).await.map_err(renewal_error)?;
                Session::handshake(addr, config, &token).await?
            }
            other => other?,
        };
        Ok(Session { client, events })
    }

    async fn handshake(addr: &str, config: &super::AgentConfig, token: &str) -> Result<(Client, Events), RemoteError> {
        let mut opts = ConnectOptions::new(token, &config.device_id, &config.device_name);
        opts.trust = config.trust.clone();
        Ok(tokio::time::timeout(CONNECT_TIMEOUT, Client::connect_to(addr, opts))
            .await
            .map_err(|_| RemoteError::Connection(format!("{addr} did not answer in time")))??)
    }

    pub fn node_id(&self) -> &str {
        &self.client.welcome().node_id
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl Remote for Session {
    async fn next_event(&mut self) -> RemoteEvent {
        remote_event(self.events.next().await)
    }

    fn try_next_event(&mut self) -> Option<RemoteEvent> {
        match self.events.try_next() {
            Ok(ev) => ev.map(|ev| remote_event(Some(ev))),
            Err(()) => Some(remote_event(None)),
        }
    }

    async fn subscribe(&mut self, ws: WorkspaceId, since_seq: i64) -> Result<i64, RemoteError> {
        Ok(self.client.subscribe(ws, since_seq).await?)
    }

    async fn changes(
        &mut self,
        ws: WorkspaceId,
        after_seq: i64,
        limit: u32,
    ) -> Result<(Vec<Change>, i64), RemoteError> {
        let page = self.client.changes(ws, after_seq, limit).await?;
        Ok((page.changes, page.head_seq))
    }

    async fn heads(&mut self, ws: WorkspaceId, after: Option<Hash>, limit: u32) -> Result<HeadsPage, RemoteError> {
        Ok(self.client.heads(ws, after, limit).await?)
    }

    async fn put_file(
        &mut self,
        ws: WorkspaceId,
        path: &str,
        base_version: i64,
        abs: &Path,
        _meta: &LocalFile,
        scan: &FileScan,
    ) -> Result<Committed, RemoteError> {
        // The engine already scanned the file: upload from that scan instead of reading it twice.
        let c = self.client.put_file_scanned(ws, path, abs, base_version, scan).await?;
        Ok(c.into())
    }

    async fn put_files(&mut self, ws: WorkspaceId, jobs: &[PutJob]) -> Vec<Result<Committed, RemoteError>> {
        let mut out: Vec<Option<Result<Committed, RemoteError>>> = vec![None; jobs.len()];
        // Small files go in `PutFiles` batches: one request and one transaction for many files.
        let small: Vec<usize> = (0..jobs.len()).filter(|&i| jobs[i].scan.size <= BATCH_FILE_BYTES).collect();
        // Half the node's frame limit leaves room for the encoding's own overhead.
        let budget = self.client.welcome().max_frame_bytes as usize / 2;
        // Up to [`BATCHES_IN_FLIGHT`] batches at once: the next one's files are stat'ed and its
        // request is on the wire while the node commits the one before. Owned futures (a client
        // clone and the batch's fields each), for the same reason as the single uploads below.
        let groups: Vec<&[usize]> = batches(&small, jobs, budget);
        let sends: Vec<_> = groups
            .iter()
            .map(|group| {
                let client = self.client.clone();
                let owned: Vec<(String, std::path::PathBuf, i64, FileScan)> = group
                    .iter()
                    .map(|&i| (jobs[i].path.clone(), jobs[i].abs.clone(), jobs[i].base_version, jobs[i].scan.clone()))
                    .collect();
                async move {
                    let uploads: Vec<BatchUpload<'_>> = owned
                        .iter()
                        .map(|(path, local, base_version, scan)| BatchUpload {
                            path,
                            local,
                            base_version: *base_version,
                            scan,
                        })
                        .collect();
                    client.put_files_scanned(ws, &uploads).await
                }
            })
            .collect();
        let answers: Vec<_> = futures::stream::iter(sends).buffered(BATCHES_IN_FLIGHT).collect().await;
        for (group, answer) in groups.into_iter().zip(answers) {
            match answer {
                Ok(results) => {
                    for (&i, r) in group.iter().zip(results) {
                        out[i] = Some(r.map(Into::into).map_err(Into::into));
                    }
                }
                // Nothing of the batch was committed: its files go one by one below, so one bad
                // file only fails itself.
                Err(e) if e.is_refusal() || matches!(e, ClientError::FileChanged) => {
                    tracing::info!(workspace.id = %ws, files = group.len(), error = %e, "batch refused; sending its files one by one");
                }
                Err(e) => {
                    let e = RemoteError::from(e);
                    for &i in group {
                        out[i] = Some(Err(e.clone()));
                    }
                }
            }
        }
        // The rest are pipelined on the one connection: while the node commits one file, the
        // next ones are already on the wire. Bounded below the node's limit of open uploads.
        // Owned futures (a client clone and the job's path each): borrowed ones make the
        // spawned folder task's future not `Send`.
        let rest: Vec<usize> = (0..jobs.len()).filter(|&i| out[i].is_none()).collect();
        let uploads: Vec<_> = rest
            .iter()
            .map(|&i| {
                let j = &jobs[i];
                let (client, path, abs, base) = (self.client.clone(), j.path.clone(), j.abs.clone(), j.base_version);
                let scan = j.scan.clone();
                async move {
                    let c = client.put_file_scanned(ws, &path, &abs, base, &scan).await?;
                    Ok(c.into())
                }
            })
            .collect();
        let done: Vec<Result<Committed, RemoteError>> =
            futures::stream::iter(uploads).buffered(UPLOADS_IN_FLIGHT).collect().await;
        for (i, r) in rest.into_iter().zip(done) {
            out[i] = Some(r);
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(RemoteError::Connection("the upload was not answered".into()))))
            .collect()
    }

    async fn delete(&mut self, ws: WorkspaceId, path: &str, base_version: i64) -> Result<Committed, RemoteError> {
        let c = self.client.delete(ws, path, base_version).await?;
        Ok(c.into())
    }

    async fn edits(&mut self, ws: WorkspaceId, edits: &[PathEdit]) -> Vec<Result<Committed, RemoteError>> {
        // Owned futures (a client clone and the edit each), as for uploads.
        let sends: Vec<_> = edits
            .iter()
            .map(|e| {
                let (client, e) = (self.client.clone(), e.clone());
                async move {
                    let c = match e {
                        PathEdit::Delete { path, base } => client.delete(ws, &path, base).await?,
                        PathEdit::Move { from, to, base } => client.move_path(ws, &from, &to, base).await?,
                    };
                    Ok(c.into())
                }
            })
            .collect();
        futures::stream::iter(sends).buffered(EDITS_IN_FLIGHT).collect().await
    }

    async fn move_path(
        &mut self,
        ws: WorkspaceId,
        from: &str,
        to: &str,
        base_version: i64,
    ) -> Result<Committed, RemoteError> {
        let c = self.client.move_path(ws, from, to, base_version).await?;
        Ok(c.into())
    }

    async fn manifest(&mut self, ws: WorkspaceId, seq: i64) -> Result<Manifest, RemoteError> {
        Ok(self.client.manifest(ws, seq).await?.into())
    }

    async fn manifests(&mut self, ws: WorkspaceId, seqs: &[i64]) -> Vec<Result<Manifest, RemoteError>> {
        // Pipelined on the one connection; owned futures (a client clone each) keep the folder
        // task's future `Send`.
        let fetches: Vec<_> = seqs
            .iter()
            .map(|&seq| {
                let client = self.client.clone();
                async move { Ok(client.manifest(ws, seq).await?.into()) }
            })
            .collect();
        futures::stream::iter(fetches).buffered(filesync_proto_client::download::REQUESTS_IN_FLIGHT).collect().await
    }
}

impl Fetch for Session {
    type Error = RemoteError;

    fn is_refusal(e: &RemoteError) -> bool {
        matches!(e, RemoteError::Refused { .. })
    }

    async fn chunks(&mut self, ws: WorkspaceId, hashes: &[Hash]) -> Result<Vec<Vec<u8>>, RemoteError> {
        Ok(self.client.chunks(ws, hashes.to_vec()).await?)
    }

    async fn chunk_sets(&mut self, ws: WorkspaceId, sets: &[Vec<Hash>]) -> Vec<Result<Vec<Vec<u8>>, RemoteError>> {
        let answers = Fetch::chunk_sets(&mut self.client, ws, sets).await;
        answers.into_iter().map(|a| a.map_err(RemoteError::from)).collect()
    }
}

/// What the engine sees of a protocol event (`None`: the queue ended).
fn remote_event(ev: Option<Event>) -> RemoteEvent {
    match ev {
        Some(Event::Change(c)) => RemoteEvent::Change(c),
        Some(Event::Missed { workspace_id, up_to_seq, .. }) => RemoteEvent::Missed { workspace_id, up_to_seq },
        Some(Event::Notice(n)) => RemoteEvent::Notice(n),
        Some(Event::Goodbye { reason, .. }) => RemoteEvent::Goodbye { reason },
        Some(Event::Closed { error, .. }) => {
            RemoteEvent::Closed { reason: error.unwrap_or_else(|| "the node closed the connection".into()) }
        }
        None => RemoteEvent::Closed { reason: "the connection ended".into() },
    }
}

/// A failed renewal: refused by the server (the device was signed out) is for good; anything
/// else (the API unreachable) is retried like a lost connection.
fn renewal_error(e: crate::http::HttpError) -> RemoteError {
    if e.is_unauthorized() {
        RemoteError::Refused { code: Refusal::Node(ErrorCode::TokenRevoked), message: e.to_string() }
    } else {
        RemoteError::Connection(format!("cannot renew the access token: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use filesync_core::chunking::{ChunkRef, ScannedChunk};

    use super::*;

    fn job(path: String, size: u64, chunks: usize) -> PutJob {
        let chunk = ScannedChunk { chunk: ChunkRef { hash: [1; 32], len: 1 }, offset: 0 };
        PutJob {
            abs: path.clone().into(),
            path,
            base_version: 0,
            meta: LocalFile { size, mtime_ms: 0, mode: 0o644 },
            scan: FileScan { size, content_hash: [0; 32], chunks: vec![chunk; chunks] },
        }
    }

    fn sizes(groups: &[&[usize]]) -> Vec<usize> {
        groups.iter().map(|g| g.len()).collect()
    }

    #[test]
    fn batches_stay_within_every_limit() {
        let all = |jobs: &[PutJob]| (0..jobs.len()).collect::<Vec<_>>();
        let tiny: Vec<PutJob> = (0..2500).map(|i| job(format!("f{i}"), 10, 1)).collect();
        let mut expected = vec![BATCH_FILES; 2500 / BATCH_FILES];
        expected.push(2500 % BATCH_FILES);
        assert_eq!(sizes(&batches(&all(&tiny), &tiny, usize::MAX)), expected);
        // 16 MiB of content per batch.
        let mib: Vec<PutJob> = (0..40).map(|i| job(format!("m{i}"), 1 << 20, 16)).collect();
        assert_eq!(sizes(&batches(&all(&mib), &mib, usize::MAX)), vec![16, 16, 8]);
        // Chunk references.
        let many: Vec<PutJob> = (0..3).map(|i| job(format!("c{i}"), 100, 10_000)).collect();
        assert_eq!(sizes(&batches(&all(&many), &many, usize::MAX)), vec![1, 1, 1]);
        // Long paths against a small frame limit; a file that alone exceeds it still goes (alone).
        let long: Vec<PutJob> = (0..10).map(|i| job(format!("{i}{}", "x".repeat(3000)), 10, 1)).collect();
        assert_eq!(sizes(&batches(&all(&long), &long, 10_000)), vec![3, 3, 3, 1]);
        assert_eq!(sizes(&batches(&all(&long), &long, 100)), vec![1; 10]);
        // Only the jobs named are batched, in order.
        let some = [1, 3, 5];
        assert_eq!(batches(&some, &tiny, usize::MAX), vec![&some[..]]);
    }

    #[test]
    fn a_node_that_cannot_serve_now_is_retried_not_a_refusal() {
        let server = |code| ClientError::Server { code, message: "no".into() };
        // The database behind the node is down, or the node is overloaded: the change is not
        // refused, the connection is retried (and with it every pending upload).
        for code in [ErrorCode::Unavailable, ErrorCode::Busy] {
            assert!(matches!(RemoteError::from(server(code)), RemoteError::Connection(_)), "{code}");
        }
        // A real refusal stays one, with its code: the engine acts on it per path.
        for code in [ErrorCode::Forbidden, ErrorCode::Conflict, ErrorCode::NotFound] {
            assert!(
                matches!(RemoteError::from(server(code)), RemoteError::Refused { code: Refusal::Node(c), .. } if c == code),
                "{code}"
            );
        }
        // A code of a newer node is a refusal of that request, not a lost connection.
        let newer = ClientError::UnknownCode { code: "quota_exceeded".into(), message: "no".into() };
        assert!(matches!(RemoteError::from(newer), RemoteError::Refused { code: Refusal::UnknownCode, .. }));
        assert!(matches!(RemoteError::from(server(ErrorCode::WorkspaceNotFound)), RemoteError::NoWorkspace(_)));
    }
}

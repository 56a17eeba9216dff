//! A workspace's live heads as a zip, streamed chunk by chunk.
//!
//! The archive is pulled, not pushed: actix polls the body stream only when
//! the socket can take more, and each poll reads the next chunk from the
//! store (with [`READ_AHEAD`] chunks in flight so disk and network overlap).
//! Nothing runs when the client stops reading, and a dropped connection drops
//! the stream and with it all work. Memory is therefore bounded by the
//! read-ahead (a few chunks of at most `MAX_CHUNK` bytes each), whatever the
//! size of the files; the list of heads (metadata only) and the manifests of
//! one batch of files ([`BATCH_FILES`], [`BATCH_BYTES`]) are the rest.
//!
//! Chunks are read the way every download reads them, through
//! [`ChunkStore::read_many`]: the manifests of a batch of files are read in
//! one query and their chunks located in one index query per few hundred, so
//! a workspace of many small files costs a few queries per batch, not two
//! per file.
//!
//! Entries are STORED, not deflated: most of what people sync in bulk
//! (photos, video, archives, office files) is already compressed, deflate
//! would cost CPU per download on a shared server for little gain, and the
//! output stays one pass over the stored bytes. Sizes and CRCs follow each
//! entry in a data descriptor (we never hold a file to compute its CRC
//! first); every reader that uses the central directory (unzip, Windows,
//! macOS, Python, the `zip` crate) handles that.
//!
//! **Architecture Invariant:** the archive contains only chunks named by the
//! manifests of this workspace's journal rows, each verified against its
//! hash by the store, and an entry whose bytes do not add up to its
//! recorded size aborts the download instead of producing a wrong file.

use std::cell::RefCell;
use std::io::Write;
use std::rc::Rc;

use actix_web::web::Bytes;
use chrono::{DateTime, Datelike, Timelike, Utc};
use filesync_core::chunking::{hex, ChunkRef};
use filesync_core::db::{journal, Db, DbError};
use filesync_core::proto::{Change, EntryKind};
use filesync_core::storage::{ChunkStore, StorageError};
use filesync_core::WorkspaceId;
use futures::future;
use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt};
use zip::write::{FullFileOptions, SimpleFileOptions, StreamWriter};
use zip::{CompressionMethod, ZipWriter};

/// Chunks read ahead of the one being sent.
pub const READ_AHEAD: usize = 4;

/// Files whose manifests the zip reads in one query...
pub const BATCH_FILES: usize = 256;
/// ...unless their content adds up to this many bytes first (a file larger than that is a batch of
/// its own), so a batch's chunk list stays a few thousand entries.
pub const BATCH_BYTES: u64 = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("reading a manifest: {0}")]
    Db(#[from] DbError),
    #[error("reading a chunk: {0}")]
    Storage(#[from] StorageError),
    #[error("writing the zip: {0}")]
    Zip(#[from] zip::result::ZipError),
    #[error("chunk {hash} has {actual} bytes, its manifest says {expected}")]
    ChunkLength { hash: String, expected: u32, actual: usize },
    #[error("{path}: the chunks add up to {actual} bytes, the journal says {expected}")]
    SizeMismatch { path: String, expected: u64, actual: u64 },
    #[error("version {0} vanished from the journal")]
    MissingVersion(i64),
    #[error("blocking task failed: {0}")]
    Task(String),
}

/// One step of the archive, in order.
enum Piece {
    Dir(Change),
    /// Starts a file; its bytes follow as `Data`.
    File(Change),
    Data(Vec<u8>),
    End,
}

/// The zip of `heads` (live heads of `ws`, already checked against the path
/// rules), as a body stream. An `Err` item ends the stream; the client sees
/// a truncated download rather than a wrong file.
pub fn zip_stream(
    db: Db,
    store: ChunkStore,
    ws: WorkspaceId,
    heads: Vec<Change>,
) -> impl Stream<Item = Result<Bytes, ArchiveError>> {
    let mut assembler = Assembler::new();
    let mut failed = false;
    pieces(db, store, ws, heads)
        .scan((), move |_, piece| {
            if failed {
                return future::ready(None);
            }
            let out = piece.and_then(|p| assembler.step(p));
            failed = out.is_err();
            future::ready(Some(out))
        })
        .filter(|out| future::ready(!matches!(out, Ok(bytes) if bytes.is_empty())))
}

/// The archive's pieces: a batch of files' manifests is read when the stream reaches it, their
/// chunks as the client reads.
fn pieces(
    db: Db,
    store: ChunkStore,
    ws: WorkspaceId,
    heads: Vec<Change>,
) -> impl Stream<Item = Result<Piece, ArchiveError>> {
    stream::iter(batches(heads))
        .then(move |batch| manifests_of(db.clone(), ws, batch))
        .flat_map(move |loaded| -> BoxStream<'static, Result<Piece, ArchiveError>> {
            match loaded {
                Err(e) => stream::once(future::ready(Err(e))).boxed(),
                Ok(files) => batch_pieces(store.clone(), files).boxed(),
            }
        })
        .chain(stream::once(future::ready(Ok(Piece::End))))
}

/// `heads` cut into batches of at most [`BATCH_FILES`] entries and [`BATCH_BYTES`] of content.
fn batches(heads: Vec<Change>) -> Vec<Vec<Change>> {
    let mut out: Vec<Vec<Change>> = Vec::new();
    let mut bytes = 0u64;
    for head in heads {
        let full = out.last().is_none_or(|b| b.len() >= BATCH_FILES || bytes.saturating_add(head.size) > BATCH_BYTES);
        if full {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes = bytes.saturating_add(head.size);
        out.last_mut().expect("a batch was pushed").push(head);
    }
    out
}

/// The batch's heads with their chunk lists (none for a directory), in one query.
async fn manifests_of(
    db: Db,
    ws: WorkspaceId,
    batch: Vec<Change>,
) -> Result<Vec<(Change, Vec<ChunkRef>)>, ArchiveError> {
    let seqs: Vec<i64> = batch.iter().filter(|h| h.kind != EntryKind::Dir).map(|h| h.seq).collect();
    let mut found = if seqs.is_empty() {
        Default::default()
    } else {
        db.run(move |conn| journal::manifests(conn, ws, &seqs)).await?
    };
    batch
        .into_iter()
        .map(|head| {
            if head.kind == EntryKind::Dir {
                return Ok((head, Vec::new()));
            }
            let manifest = found.remove(&head.seq).ok_or(ArchiveError::MissingVersion(head.seq))?;
            Ok((head, manifest))
        })
        .collect()
}

/// A batch's entries: each head, then its chunks' bytes, all read through one [`chunks`] stream.
fn batch_pieces(
    store: ChunkStore,
    files: Vec<(Change, Vec<ChunkRef>)>,
) -> impl Stream<Item = Result<Piece, ArchiveError>> {
    let all: Vec<ChunkRef> = files.iter().flat_map(|(_, m)| m.iter().copied()).collect();
    let data = chunks(store, all).boxed();
    // Each head with how many of the next chunks are its bytes.
    let heads = files.into_iter().map(|(head, manifest)| (head, manifest.len())).collect::<Vec<_>>().into_iter();
    stream::unfold((heads, 0usize, data), |(mut heads, left, mut data)| async move {
        if left > 0 {
            let got =
                data.next().await.unwrap_or_else(|| Err(ArchiveError::Task("the chunk reader ended early".into())));
            return Some((got.map(Piece::Data), (heads, left - 1, data)));
        }
        let (head, n) = heads.next()?;
        let piece = if head.kind == EntryKind::Dir { Piece::Dir(head) } else { Piece::File(head) };
        Some((Ok(piece), (heads, n, data)))
    })
}

/// Bytes `start..end` of a file whose chunk list is `manifest`, as a body stream: the chunks that
/// overlap the range are read from the store (verified) as the client reads, [`READ_AHEAD`] ahead,
/// and cut to the range. The one download path of single files; the zip reads its chunks with the
/// same [`chunks`]. A chunk whose length differs from the manifest ends the stream with an error.
pub fn file_stream(
    store: ChunkStore,
    manifest: Vec<ChunkRef>,
    start: u64,
    end: u64,
) -> impl Stream<Item = Result<Bytes, ArchiveError>> {
    let mut parts = Vec::new();
    let mut offset = 0u64;
    for c in manifest {
        if offset >= end {
            break;
        }
        let c_end = offset + u64::from(c.len);
        if c_end > start {
            let from = start.saturating_sub(offset) as usize;
            let to = (end.min(c_end) - offset) as usize;
            parts.push((c, from, to));
        }
        offset = c_end;
    }
    let wanted = parts.iter().map(|(c, _, _)| *c).collect();
    chunks(store, wanted)
        .zip(stream::iter(parts))
        .map(|(got, (_, from, to))| got.map(|data| Bytes::from(data).slice(from..to)))
}

/// The bytes of `refs`, in order, each verified by the store and as long as its manifest says,
/// read through [`ChunkStore::read_many`] (located in batches, [`READ_AHEAD`] reads in flight).
/// The stream ends after the first error.
fn chunks(store: ChunkStore, refs: Vec<ChunkRef>) -> impl Stream<Item = Result<Vec<u8>, ArchiveError>> {
    let hashes = refs.iter().map(|c| c.hash).collect();
    store.read_many(hashes, READ_AHEAD).zip(stream::iter(refs)).map(|(got, c)| {
        let (_, data) = got?;
        checked_len(&c, data)
    })
}

/// The chunk's bytes if they are as long as its manifest says.
fn checked_len(chunk: &ChunkRef, data: Vec<u8>) -> Result<Vec<u8>, ArchiveError> {
    if data.len() != chunk.len as usize {
        return Err(ArchiveError::ChunkLength { hash: hex(&chunk.hash), expected: chunk.len, actual: data.len() });
    }
    Ok(data)
}

/// Where the zip writer puts its bytes until the stream hands them on.
#[derive(Clone, Default)]
struct Spool(Rc<RefCell<Vec<u8>>>);

impl Spool {
    fn take(&self) -> Bytes {
        Bytes::from(std::mem::take(&mut *self.0.borrow_mut()))
    }
}

impl Write for Spool {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct OpenFile {
    path: String,
    expected: u64,
    written: u64,
}

/// Turns pieces into zip bytes.
struct Assembler {
    zip: Option<ZipWriter<StreamWriter<Spool>>>,
    spool: Spool,
    open: Option<OpenFile>,
}

impl Assembler {
    fn new() -> Assembler {
        let spool = Spool::default();
        Assembler { zip: Some(ZipWriter::new_stream(spool.clone())), spool, open: None }
    }

    fn step(&mut self, piece: Piece) -> Result<Bytes, ArchiveError> {
        let Some(zip) = self.zip.as_mut() else {
            return Ok(Bytes::new());
        };
        match piece {
            Piece::Data(data) => {
                if let Some(open) = self.open.as_mut() {
                    open.written += data.len() as u64;
                    if open.written > open.expected {
                        return Err(mismatch(open));
                    }
                }
                zip.write_all(&data).map_err(zip::result::ZipError::Io)?;
            }
            Piece::File(head) => {
                close(&mut self.open)?;
                zip.start_file(head.path.as_str(), entry_options(&head)?)?;
                self.open = Some(OpenFile { path: head.path, expected: head.size, written: 0 });
            }
            Piece::Dir(head) => {
                close(&mut self.open)?;
                zip.add_directory(format!("{}/", head.path), entry_options(&head)?)?;
            }
            Piece::End => {
                close(&mut self.open)?;
                if let Some(zip) = self.zip.take() {
                    zip.finish()?;
                }
            }
        }
        Ok(self.spool.take())
    }
}

fn mismatch(open: &OpenFile) -> ArchiveError {
    ArchiveError::SizeMismatch { path: open.path.clone(), expected: open.expected, actual: open.written }
}

fn close(open: &mut Option<OpenFile>) -> Result<(), ArchiveError> {
    match open.take() {
        Some(f) if f.written != f.expected => Err(mismatch(&f)),
        _ => Ok(()),
    }
}

/// STORED, the file's mtime (DOS time in UTC plus the exact Unix time), its
/// permission bits when known, zip64 when the size needs it.
fn entry_options(head: &Change) -> Result<FullFileOptions<'static, 'static>, ArchiveError> {
    let mtime_ms = if head.mtime_ms > 0 { head.mtime_ms } else { head.committed_at_ms };
    let mtime = DateTime::<Utc>::from_timestamp_millis(mtime_ms);
    let mut options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Stored)
        .large_file(head.size >= u64::from(u32::MAX))
        .last_modified_time(mtime.and_then(dos_time).unwrap_or_default());
    if head.mode & 0o777 != 0 {
        options = options.unix_permissions(head.mode & 0o777);
    }
    let unix_secs = mtime.and_then(|t| u32::try_from(t.timestamp()).ok());
    Ok(options.into_full_options().with_extended_timestamp(unix_secs, None, None)?)
}

/// DOS time covers 1980 to 2107; anything else gets the zip default.
fn dos_time(t: DateTime<Utc>) -> Option<zip::DateTime> {
    let narrow = |v: u32| u8::try_from(v).ok();
    zip::DateTime::from_date_and_time(
        u16::try_from(t.year()).ok()?,
        narrow(t.month())?,
        narrow(t.day())?,
        narrow(t.hour())?,
        narrow(t.minute())?,
        narrow(t.second())?,
    )
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use filesync_core::proto::ChangeOp;
    use filesync_core::UserId;

    fn head(seq: i64, size: u64) -> Change {
        Change {
            workspace_id: WorkspaceId(1),
            seq,
            op: ChangeOp::Put,
            kind: EntryKind::File,
            path: format!("f{seq}"),
            from_path: None,
            size,
            mtime_ms: 0,
            mode: 0,
            content_hash: [0; 32],
            deleted: false,
            author_id: UserId(1),
            device_id: "d".into(),
            committed_at_ms: 0,
        }
    }

    /// Batches keep the heads' order and stay within their file count and content size; a file
    /// larger than a batch is a batch of its own.
    #[test]
    fn batches_bound_files_and_bytes() {
        let sizes: Vec<u64> = (0..600).map(|i| if i == 300 { 3 * BATCH_BYTES } else { 1 << 20 }).collect();
        let heads: Vec<Change> = sizes.iter().enumerate().map(|(i, &s)| head(i as i64, s)).collect();
        let got = batches(heads);
        let seqs: Vec<i64> = got.iter().flatten().map(|h| h.seq).collect();
        assert_eq!(seqs, (0..600).collect::<Vec<_>>());
        assert!(got.iter().all(|b| !b.is_empty() && b.len() <= BATCH_FILES));
        for b in &got {
            let bytes: u64 = b.iter().map(|h| h.size).sum();
            assert!(bytes <= BATCH_BYTES || b.len() == 1, "{} files, {bytes} bytes", b.len());
        }
        assert!(got.iter().any(|b| b.len() == 1 && b[0].seq == 300));
        assert!(batches(Vec::new()).is_empty());
    }

    #[test]
    fn dos_time_in_and_out_of_range() {
        let t = DateTime::parse_from_rfc3339("2026-03-04T05:06:07Z").unwrap().with_timezone(&Utc);
        let d = dos_time(t).unwrap();
        assert_eq!((d.year(), d.month(), d.day(), d.hour(), d.minute()), (2026, 3, 4, 5, 6));
        assert!(dos_time(DateTime::<Utc>::from_timestamp(0, 0).unwrap()).is_none());
        assert!(dos_time(DateTime::parse_from_rfc3339("2200-01-01T00:00:00Z").unwrap().with_timezone(&Utc)).is_none());
    }
}

//! A workspace's live heads as a zip, streamed chunk by chunk.
//!
//! The archive is pulled, not pushed: actix polls the body stream only when
//! the socket can take more, and each poll reads the next chunk from the
//! store on the blocking pool (with [`READ_AHEAD`] chunks in flight so disk
//! and network overlap). Nothing runs when the client stops reading, and a
//! dropped connection drops the stream and with it all work. Memory is
//! therefore bounded by the read-ahead (a few chunks of at most
//! `MAX_CHUNK` bytes each), whatever the size of the files; the list of
//! heads (metadata only) and one file's manifest at a time are the rest.
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
use futures::future::{self, BoxFuture};
use futures::stream::{self, BoxStream};
use futures::{FutureExt, Stream, StreamExt, TryFutureExt};
use zip::write::{FullFileOptions, SimpleFileOptions, StreamWriter};
use zip::{CompressionMethod, ZipWriter};

/// Chunks read ahead of the one being sent.
pub const READ_AHEAD: usize = 4;

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

type PieceFuture = BoxFuture<'static, Result<Piece, ArchiveError>>;

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
        .buffered(READ_AHEAD)
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

/// The archive's pieces as futures: each file's manifest is read when the
/// stream reaches it, each chunk when `buffered` asks for it.
fn pieces(db: Db, store: ChunkStore, ws: WorkspaceId, heads: Vec<Change>) -> impl Stream<Item = PieceFuture> {
    stream::iter(heads)
        .then(move |head| manifest_of(db.clone(), ws, head))
        .map(move |loaded| -> BoxStream<'static, PieceFuture> {
            match loaded {
                Err(e) => stream::once(future::ready(future::err(e).boxed())).boxed(),
                Ok((head, _)) if head.kind == EntryKind::Dir => {
                    stream::once(future::ready(future::ok(Piece::Dir(head)).boxed())).boxed()
                }
                Ok((head, manifest)) => {
                    let store = store.clone();
                    let start = future::ok(Piece::File(head)).boxed();
                    let chunks =
                        stream::iter(manifest).map(move |c| read_chunk(store.clone(), c).map_ok(Piece::Data).boxed());
                    stream::once(future::ready(start)).chain(chunks).boxed()
                }
            }
        })
        .flatten()
        .chain(stream::once(future::ready(future::ok(Piece::End).boxed())))
}

async fn manifest_of(db: Db, ws: WorkspaceId, head: Change) -> Result<(Change, Vec<ChunkRef>), ArchiveError> {
    if head.kind == EntryKind::Dir {
        return Ok((head, Vec::new()));
    }
    let seq = head.seq;
    let (_, manifest) =
        db.run(move |conn| journal::version_at(conn, ws, seq)).await?.ok_or(ArchiveError::MissingVersion(seq))?;
    Ok((head, manifest))
}

/// Bytes `start..end` of a file whose chunk list is `manifest`, as a body stream: the chunks that
/// overlap the range are read from the store (verified) as the client reads, [`READ_AHEAD`] ahead,
/// and cut to the range. The one download path of single files; the zip reads its chunks with the
/// same [`read_chunk`]. A chunk whose length differs from the manifest ends the stream with an error.
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
    let hashes = parts.iter().map(|(c, _, _)| c.hash).collect();
    store.read_many(hashes, READ_AHEAD).zip(stream::iter(parts)).map(|(got, (c, from, to))| {
        let (_, data) = got?;
        checked_len(&c, data).map(|data| Bytes::from(data).slice(from..to))
    })
}

/// One chunk, verified by the store, of the length its manifest says (an entry of the zip).
async fn read_chunk(store: ChunkStore, chunk: ChunkRef) -> Result<Vec<u8>, ArchiveError> {
    let data = store.get(&chunk.hash).await?;
    checked_len(&chunk, data)
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

    #[test]
    fn dos_time_in_and_out_of_range() {
        let t = DateTime::parse_from_rfc3339("2026-03-04T05:06:07Z").unwrap().with_timezone(&Utc);
        let d = dos_time(t).unwrap();
        assert_eq!((d.year(), d.month(), d.day(), d.hour(), d.minute()), (2026, 3, 4, 5, 6));
        assert!(dos_time(DateTime::<Utc>::from_timestamp(0, 0).unwrap()).is_none());
        assert!(dos_time(DateTime::parse_from_rfc3339("2200-01-01T00:00:00Z").unwrap().with_timezone(&Utc)).is_none());
    }
}

//! Downloads: the one implementation, used by the sync agent and by [`Client::download`] alike.
//!
//! A version is written to a temp file beside its destination ([`TempFile`], named
//! [`TEMP_PREFIX`]…) from chunks that local files already hold ([`LocalChunks`], each checked
//! against its hash when read) and chunks asked for over the connection ([`Fetch`], several
//! requests in flight); chunks of local files unchanged since their scan may instead be copied
//! in the kernel, unread ([`CopyChunks`]; cloned where the file system shares extents), while a
//! second thread hashes the content in order, copied ranges read from their sources (the check
//! overlaps the copy; the file system does the copying), except whole blocks copied from the same
//! offsets of a large file this process placed and that is unchanged since ([`Placed`]: their
//! BLAKE3 chaining values are taken instead, so a 4 KiB edit of 1 GiB is checked without reading
//! the GiB again). Every chunk and the whole content are verified before the file is renamed
//! into place, so a file appears whole or not at all.
//!
//! Two shapes share those pieces:
//! - one large version, a window of requests at a time ([`fetch_into`], bounded memory),
//!   possibly resumed where a fetch before the commit left its temp file ([`Resume`]: the
//!   prefix is neither read back nor copied again, its hash state continues);
//! - a batch of small versions fetched ahead together ([`fetch_ahead`]), written beside their
//!   destinations and made durable with one barrier ([`stage_all`]); each is then renamed on
//!   its own ([`Staged::finish`]) once the caller has decided it still applies.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use filesync_core::chunking::tree::{Blocks, TreeHasher, TREE_BLOCK};
use filesync_core::chunking::{self, ChunkRef, Hash};
use filesync_core::WorkspaceId;
use futures::StreamExt;
use rustix::fs::{Mode, OFlags};

use crate::folder::Folder;
use crate::{Client, ClientError};

/// Temp files of downloads in progress start with this; a crash leaves at most such a file,
/// which the agent removes at its next start (and never syncs).
pub const TEMP_PREFIX: &str = ".filesync-tmp-";

/// Chunks asked for per `GetChunks` request of a large download (bounded memory: 64 × 256 KiB).
pub const CHUNK_BATCH: usize = 64;

/// `GetChunks` windows of one large download in flight together (at most 64 MiB held, 16 MiB at
/// the average chunk size): the network, the node's disk and our writes overlap.
pub const WINDOWS_AHEAD: usize = 4;

/// Versions up to this size are fetched ahead in batches; larger ones download alone, a window
/// at a time.
pub const AHEAD_FILE_BYTES: u64 = 1 << 20;

/// Requests of one prefetch open on the connection at once.
pub const REQUESTS_IN_FLIGHT: usize = 48;

/// Chunk bytes fetched ahead for one batch (bounded memory); the files beyond download alone.
pub const PREFETCH_BYTES: u64 = 32 << 20;

/// Chunk bytes asked for in one `GetChunks` while fetching ahead: several requests overlap, and
/// one refused request only sends its own files down the one-by-one path.
pub const PREFETCH_REQUEST_BYTES: u64 = 1 << 20;

/// What a download needs from a connection: chunks by hash, several requests in flight.
/// Implemented by [`Client`]; the agent implements it over its own connection seam.
#[allow(async_fn_in_trait)]
pub trait Fetch {
    type Error;
    /// True if `e` refused this request only (the connection is fine).
    fn is_refusal(e: &Self::Error) -> bool;
    /// The bytes of each chunk, in the order asked.
    async fn chunks(&mut self, ws: WorkspaceId, hashes: &[Hash]) -> Result<Vec<Vec<u8>>, Self::Error>;
    /// Several [`Fetch::chunks`] requests, answering in the order given; overlapped where the
    /// connection can. One failed set fails only itself.
    async fn chunk_sets(&mut self, ws: WorkspaceId, sets: &[Vec<Hash>]) -> Vec<Result<Vec<Vec<u8>>, Self::Error>> {
        let mut out = Vec::with_capacity(sets.len());
        for set in sets {
            out.push(self.chunks(ws, set).await);
        }
        out
    }
}

impl Fetch for Client {
    type Error = ClientError;

    fn is_refusal(e: &ClientError) -> bool {
        e.is_refusal()
    }

    async fn chunks(&mut self, ws: WorkspaceId, hashes: &[Hash]) -> Result<Vec<Vec<u8>>, ClientError> {
        Client::chunks(self, ws, hashes.to_vec()).await
    }

    async fn chunk_sets(&mut self, ws: WorkspaceId, sets: &[Vec<Hash>]) -> Vec<Result<Vec<Vec<u8>>, ClientError>> {
        // Owned futures (a client clone each): borrowed ones would make a spawned caller's future not `Send`.
        let fetches: Vec<_> = sets
            .iter()
            .map(|set| {
                let (client, set) = (self.clone(), set.clone());
                async move { client.chunks(ws, set).await }
            })
            .collect();
        futures::stream::iter(fetches).buffered(REQUESTS_IN_FLIGHT).collect().await
    }
}

/// Where local files held chunks (path and offset). May be stale: every read is checked
/// against the chunk's hash, and a chunk that no longer matches is fetched instead.
pub type LocalChunks = HashMap<Hash, (PathBuf, u64)>;

/// Chunks that local files unchanged since their scan hold (the open file and the offset):
/// [`fetch_into`] copies them in the kernel, unread, and checks the whole content by hashing the
/// copied ranges from these files, whose stamps (size, times, inode) must not change from before
/// the first copy until the check is done. Should such a file have changed unnoticed, or change
/// meanwhile, that check fails ([`FetchError::Mismatch`]) and the caller downloads again with
/// [`LocalChunks`] only, where every read is checked.
pub type CopyChunks = HashMap<Hash, (std::sync::Arc<std::fs::File>, u64)>;

/// The chunks local files hold, for [`fetch_into`]: read and checked, or copied unread.
#[derive(Debug, Clone, Copy)]
pub struct Local<'a> {
    pub read: &'a LocalChunks,
    pub copy: &'a CopyChunks,
}

/// Where each chunk of the file at `path` starts, from its scan.
pub fn local_chunks_of(path: &Path, scan: &chunking::FileScan) -> LocalChunks {
    let mut out = LocalChunks::new();
    for c in &scan.chunks {
        out.entry(c.chunk.hash).or_insert_with(|| (path.to_path_buf(), c.offset));
    }
    out
}

/// Reads the chunk `want` at `offset` of `path` and returns it if its hash still matches. Blocking.
pub fn read_chunk_at(path: &Path, offset: u64, want: &ChunkRef) -> Option<Vec<u8>> {
    let mut f = std::fs::File::open(path).ok()?;
    f.seek(SeekFrom::Start(offset)).ok()?;
    let mut buf = vec![0u8; want.len as usize];
    f.read_exact(&mut buf).ok()?;
    (chunking::hash(&buf) == want.hash).then_some(buf)
}

/// What the file system says about a regular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalFile {
    pub size: u64,
    pub mtime_ms: i64,
    pub mode: u32,
}

impl LocalFile {
    pub fn from_metadata(meta: &std::fs::Metadata) -> LocalFile {
        let mtime_ms = meta.modified().ok().map(system_time_ms).unwrap_or(0);
        LocalFile { size: meta.len(), mtime_ms, mode: mode_of(meta) }
    }

    /// From a `stat` beneath a folder ([`Folder::stat`]): the same facts as
    /// [`LocalFile::from_metadata`] gives.
    pub(crate) fn from_stat(st: &rustix::fs::Stat) -> LocalFile {
        // Nanoseconds since the epoch, truncated toward zero to milliseconds as `system_time_ms`.
        let ns = i128::from(st.st_mtime) * 1_000_000_000 + i128::from(st.st_mtime_nsec);
        let mtime_ms = i64::try_from(ns / 1_000_000).unwrap_or(i64::MAX);
        #[allow(clippy::useless_conversion)] // `st_mode` is narrower on some systems
        let mode = u32::from(st.st_mode) & 0o7777;
        LocalFile { size: u64::try_from(st.st_size).unwrap_or(0), mtime_ms, mode }
    }
}

pub(crate) fn mode_of(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o7777
}

/// Milliseconds since the Unix epoch (negative before it).
pub fn system_time_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

fn ms_to_system_time(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

#[cfg(target_os = "linux")]
fn copy_range(src: &std::fs::File, offset: u64, dst: &std::fs::File, len: u64) -> std::io::Result<()> {
    let (mut at, mut left) = (offset, len);
    while left > 0 {
        let step = usize::try_from(left).unwrap_or(usize::MAX);
        match rustix::fs::copy_file_range(src, Some(&mut at), dst, None, step)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => left -= n as u64,
        }
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn copy_range(_src: &std::fs::File, _offset: u64, _dst: &std::fs::File, _len: u64) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// Where a download goes: a directory beneath a folder and the names in it. Every operation
/// opens the directory beneath the folder again ([`Folder`]), so a staged file holds no
/// descriptor and no link on the way is ever followed.
#[derive(Debug)]
struct Place {
    /// The folder (opened by path: the one the caller chose).
    root: PathBuf,
    /// The destination's directory beneath `root` (`""`: `root` itself).
    dir: String,
    /// The temp file's name in `dir`.
    temp: String,
    /// The destination's name in `dir`.
    dest_name: OsString,
}

impl Place {
    fn open_dir(&self) -> std::io::Result<OwnedFd> {
        Folder::open(&self.root)?.open_dir(&self.dir)
    }

    /// The temp file, opened for reading (never through a link).
    fn open_temp(&self, dir: &OwnedFd) -> std::io::Result<std::fs::File> {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        Ok(rustix::fs::openat(dir, self.temp.as_str(), flags, Mode::empty())?.into())
    }

    /// Renames the temp file over the destination, in its directory.
    fn rename(&self, dir: &OwnedFd) -> std::io::Result<()> {
        Ok(rustix::fs::renameat(dir, self.temp.as_str(), dir, &self.dest_name)?)
    }

    fn remove(&self, dir: &OwnedFd) {
        let _ = rustix::fs::unlinkat(dir, self.temp.as_str(), rustix::fs::AtFlags::empty());
    }
}

/// A download in progress: a temp file beside its destination, removed if dropped unfinished.
/// It is created, renamed and removed relative to a handle on its directory ([`Folder`]), so a
/// directory swapped for a link meanwhile cannot lead it elsewhere.
#[derive(Debug)]
pub struct TempFile {
    file: std::fs::File,
    /// The destination's directory, held while the file is written.
    dir: OwnedFd,
    place: Place,
    path: PathBuf,
    dest: PathBuf,
    /// False once renamed into place or staged (someone else cleans up).
    armed: bool,
    /// Bytes written so far (the file's length and position).
    written: u64,
    /// The last flush started behind the writing ([`FLUSH_BEHIND`]), while it runs.
    flushing: Option<tokio::task::JoinHandle<()>>,
    /// The blocks of the content as [`fetch_into`] verified it ([`Placed`]), once it did.
    verified: Option<Blocks>,
    /// Bytes [`fetch_into`]'s check took by their blocks' values, unread ([`Placed`]).
    unread: u64,
}

/// The temp file's identity and last change as the file system tells them ([`TempFile::stamp`]):
/// two equal stamps mean nobody wrote, truncated, touched or replaced it in between (the same
/// trust the agent gives a local file whose size and mtime are as scanned; the change time, which
/// no one can set, is part of it too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(st: &rustix::fs::Stat) -> Option<Stamp> {
        #[allow(clippy::useless_conversion, clippy::unnecessary_cast)] // the widths differ between systems
        Some(Stamp {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            len: u64::try_from(st.st_size).ok()?,
            mtime: (st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime: (st.st_ctime as i64, st.st_ctime_nsec as i64),
        })
    }

    /// An open file's stamp (of the file itself, whatever its name is now).
    fn of_file(file: &std::fs::File) -> Option<Stamp> {
        Stamp::of(&rustix::fs::fstat(file).ok()?)
    }
}

impl TempFile {
    /// Creates `TEMP_PREFIX<random>` in the directory of `dest`, which must exist. `dest` is the
    /// caller's own path (its links are followed); the agent's downloads are made beneath their
    /// folder instead ([`Folder::temp_beside`]).
    pub fn beside(dest: PathBuf) -> std::io::Result<TempFile> {
        let name = dest.file_name().ok_or_else(|| std::io::Error::other("destination has no file name"))?;
        let dir = dest.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let folder = Folder::open(dir)?;
        let fd = folder.open_dir("")?;
        TempFile::create(fd, dir.to_path_buf(), String::new(), name.to_owned())
    }

    /// Creates the temp file in `dir_fd`, the directory `dir` beneath the folder `root`.
    pub(crate) fn create(
        dir_fd: OwnedFd,
        root: PathBuf,
        dir: String,
        dest_name: OsString,
    ) -> std::io::Result<TempFile> {
        let temp = format!("{TEMP_PREFIX}{}", uuid::Uuid::new_v4().simple());
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let file = rustix::fs::openat(&dir_fd, temp.as_str(), flags, Mode::from_raw_mode(0o666))?.into();
        let mut base = root.clone();
        base.extend(dir.split('/').filter(|c| !c.is_empty()));
        let (path, dest) = (base.join(&temp), base.join(&dest_name));
        Ok(TempFile {
            file,
            dir: dir_fd,
            place: Place { root, dir, temp, dest_name },
            path,
            dest,
            armed: true,
            written: 0,
            flushing: None,
            verified: None,
            unread: 0,
        })
    }

    /// Where the temporary file is (a reader of what was written so far).
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn dest(&self) -> &Path {
        &self.dest
    }

    pub fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        self.file.write_all(data)?;
        self.grown(data.len() as u64);
        Ok(())
    }

    /// `len` bytes were appended. Every [`FLUSH_BEHIND`] bytes a flush of the file so far starts
    /// on the blocking pool (unless the previous one still runs), so the writing to disk overlaps
    /// the download and the final fsync ([`TempFile::finish`]) finds little left.
    fn grown(&mut self, len: u64) {
        let before = self.written;
        self.written += len;
        if before / FLUSH_BEHIND == self.written / FLUSH_BEHIND
            || self.flushing.as_ref().is_some_and(|f| !f.is_finished())
        {
            return;
        }
        let (Ok(rt), Ok(file)) = (tokio::runtime::Handle::try_current(), self.file.try_clone()) else { return };
        // Only an early start: a failure is the final fsync's to report.
        self.flushing = Some(rt.spawn_blocking(move || {
            let _ = file.sync_data();
        }));
    }

    /// The temp file as its name in its directory finds it now; `None` if the name is gone or
    /// names another file than the one this writes. Compare two to tell whether anyone else
    /// changed it in between.
    pub fn stamp(&self) -> Option<Stamp> {
        let by_name = rustix::fs::statat(&self.dir, self.place.temp.as_str(), rustix::fs::AtFlags::SYMLINK_NOFOLLOW);
        let (by_name, own) = (by_name.ok()?, rustix::fs::fstat(&self.file).ok()?);
        let stamp = Stamp::of(&own)?;
        (by_name.st_dev == own.st_dev && by_name.st_ino == own.st_ino).then_some(stamp)
    }

    /// Appends `len` bytes of `src` from `offset`, copied by the kernel (`copy_file_range`: the
    /// bytes never pass through this process, and file systems that can share extents — XFS,
    /// Btrfs — clone them instead of copying). A clone needs both offsets on a block boundary:
    /// when the source and this file are equally far past one (an edit that kept the file's
    /// length: the old file's ranges stay where they were), the bytes up to the next boundary
    /// are copied first and the rest is cloned. On failure nothing is appended.
    pub fn copy_from(&mut self, src: &std::fs::File, offset: u64, len: u64) -> std::io::Result<()> {
        let start = self.written;
        let block = rustix::fs::fstat(&self.file).map(|st| st.st_blksize as u64).unwrap_or(0).max(1);
        let head = match offset % block {
            0 => 0,
            past if past == start % block => (block - past).min(len),
            _ => 0,
        };
        let copied = copy_range(src, offset, &self.file, head)
            .and_then(|()| copy_range(src, offset + head, &self.file, len - head));
        if copied.is_err() {
            self.file.set_len(start)?;
            self.file.seek(SeekFrom::Start(start))?;
        } else {
            self.grown(len);
        }
        copied
    }

    /// Bytes of the content that the check of [`fetch_into`] did not read: whole blocks copied
    /// from the same offsets of a file this process placed and that is unchanged since
    /// ([`Placed`]), taken by their chaining values.
    pub fn unread(&self) -> u64 {
        self.unread
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.written
    }

    /// True if nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.written == 0
    }

    /// The BLAKE3 hash of everything written so far, read back from the file. Blocking.
    pub fn content_hash(&self) -> std::io::Result<Hash> {
        let mut hasher = blake3::Hasher::new();
        hasher.update_reader(self.place.open_temp(&self.dir)?)?;
        Ok(*hasher.finalize().as_bytes())
    }

    /// Flushes to disk, applies mode and mtime, and renames over the destination (in the
    /// directory it was created in); the rename is made durable too.
    /// Returns the facts of the file now in place.
    pub fn finish(mut self, mode: u32, mtime_ms: i64) -> std::io::Result<LocalFile> {
        self.set_facts(mode, mtime_ms)?;
        self.file.sync_all()?;
        let meta = self.file.metadata()?;
        self.place.rename(&self.dir)?;
        // Disarm the drop guard (the temp name is now the destination's); dropping still closes
        // the file, so a long sync never runs out of descriptors.
        self.armed = false;
        // Stamped after the rename (which changes the file's ctime): from here on, any write,
        // truncation, chmod or change of times moves the stamp.
        if let (Some(blocks), Some(stamp)) = (self.verified.take(), Stamp::of_file(&self.file)) {
            Placed::remember(stamp, blocks);
        }
        // The rename itself survives a crash.
        let _ = rustix::fs::fsync(&self.dir);
        Ok(LocalFile::from_metadata(&meta))
    }

    fn set_facts(&self, mode: u32, mtime_ms: i64) -> std::io::Result<()> {
        if mode != 0 {
            use std::os::unix::fs::PermissionsExt;
            self.file.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))?;
        }
        self.file.set_modified(ms_to_system_time(mtime_ms))
    }

    /// Applies mode and mtime and closes the file, not yet flushed nor in place: a batch of
    /// downloads is made durable at once ([`make_durable`]) before each is renamed
    /// ([`StagedFile::finish`]). One barrier instead of one fsync per file.
    pub fn stage(mut self, mode: u32, mtime_ms: i64) -> std::io::Result<StagedFile> {
        use std::os::unix::fs::MetadataExt;
        self.set_facts(mode, mtime_ms)?;
        let meta = self.file.metadata()?;
        // The staged file takes over the clean-up; dropping `self` closes both descriptors.
        self.armed = false;
        let place = Place {
            root: self.place.root.clone(),
            dir: std::mem::take(&mut self.place.dir),
            temp: std::mem::take(&mut self.place.temp),
            dest_name: std::mem::take(&mut self.place.dest_name),
        };
        let dest = std::mem::take(&mut self.dest);
        Ok(StagedFile { place, dest, facts: LocalFile::from_metadata(&meta), dev: meta.dev(), armed: true })
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        // An abandoned download leaves nothing behind.
        if self.armed {
            self.place.remove(&self.dir);
        }
    }
}

/// A complete download closed beside its destination, waiting for its rename. It holds no
/// descriptor (a batch may be large): its directory is opened beneath the folder again to
/// flush, rename or remove it.
#[derive(Debug)]
pub struct StagedFile {
    place: Place,
    dest: PathBuf,
    facts: LocalFile,
    /// The file system it is on.
    dev: u64,
    armed: bool,
}

impl StagedFile {
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Renames over the destination (after [`make_durable`]); the facts of the file now in place.
    pub fn finish(mut self) -> std::io::Result<LocalFile> {
        self.place.rename(&self.place.open_dir()?)?;
        self.armed = false;
        Ok(self.facts)
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        // Not placed (a failed batch, a change decided otherwise): nothing is left behind. If its
        // directory cannot be opened any more (swapped for a link), the agent's next start
        // removes the temp file.
        if self.armed {
            if let Ok(dir) = self.place.open_dir() {
                self.place.remove(&dir);
            }
        }
    }
}

/// More staged files than this: one `syncfs` of each file system they are on instead of one
/// fsync each (as the node's chunk store does).
const SYNCFS_ABOVE: usize = 16;

/// Makes staged files' content durable, so that a crash after their renames cannot leave an
/// empty or partial file under a synced name. Files on several file systems (a directory of the
/// folder that is a mount of another) get a barrier on each.
pub fn make_durable(files: &[&StagedFile]) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    if files.len() > SYNCFS_ABOVE {
        let mut synced = HashSet::new();
        for f in files {
            if synced.insert(f.dev) {
                rustix::fs::syncfs(f.place.open_dir()?)?;
            }
        }
        return Ok(());
    }
    for f in files {
        f.place.open_temp(&f.place.open_dir()?)?.sync_all()?;
    }
    Ok(())
}

/// Why [`fetch_into`] did not produce the version.
#[derive(Debug, thiserror::Error)]
pub enum FetchError<E> {
    /// The connection failed, or the node refused a request.
    #[error("{0}")]
    Remote(E),
    /// The node sent a chunk that does not match its hash, or not every chunk asked for.
    #[error("the node sent a damaged or incomplete chunk")]
    Damaged,
    /// The assembled file does not match the version's content hash (or a chunk of
    /// [`CopyChunks`] could not be copied).
    #[error("the assembled file does not match the version's content hash")]
    Mismatch,
    /// Writing the temp file failed.
    #[error("cannot write the download: {0}")]
    Write(std::io::Error),
}

/// Where [`fetch_into`] starts: the first `chunks` chunks of the list are in the temp file
/// already (written in order, each verified as it arrived: a large upload fetched before its
/// commit), and `hasher` has hashed exactly those bytes. The default starts at the beginning.
#[derive(Debug, Clone, Default)]
pub struct Resume {
    pub chunks: usize,
    pub hasher: TreeHasher,
}

/// Writes the version made of `chunks` into `out`, a few windows of [`CHUNK_BATCH`] chunks in
/// flight at a time: chunks that `local` still holds are read from disk, only the others are
/// asked for; chunks in `copy` are copied in the kernel, unread ([`CopyChunks`]). Each chunk and
/// the whole content (against `content_hash`) are verified; `progress` gets the bytes written.
/// `from`: where `out` already is ([`Resume`]); its prefix is neither read back nor written again,
/// and the whole-content check continues from its hasher (a prefix that does not match `out`'s
/// length is [`FetchError::Mismatch`]). Returns the bytes taken from local files.
#[allow(clippy::too_many_arguments)]
pub async fn fetch_into<F: Fetch>(
    remote: &mut F,
    ws: WorkspaceId,
    chunks: &[ChunkRef],
    content_hash: &Hash,
    out: &mut TempFile,
    local: Local<'_>,
    from: Resume,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<u64, FetchError<F::Error>> {
    let Local { read: local, copy } = local;
    let Resume { chunks: done, hasher: mut whole } = from;
    let staged = chunks.get(..done).ok_or(FetchError::Mismatch)?.iter().map(|c| u64::from(c.len)).sum::<u64>();
    if staged != out.len() {
        return Err(FetchError::Mismatch);
    }
    if staged > 0 {
        progress(staged);
    }
    let list = chunks;
    let chunks = &chunks[done..];
    // Copied ranges are checked by hashing the whole content in order on a thread of its own:
    // copied ranges read from their sources, whose stamps must hold until the end.
    let (mut check, sources) = if chunks.iter().any(|c| copy.contains_key(&c.hash)) {
        let sources = Sources::of(copy).ok_or(FetchError::Mismatch)?;
        let known = sources.placed();
        (Some(Check::start(out.path(), staged, whole.clone(), known).map_err(FetchError::Write)?), sources)
    } else {
        (None, Sources::default())
    };
    let mut reused = 0u64;
    // Adjacent chunks of one file are copied in one call.
    let mut run: Option<CopyRun> = None;
    for group in chunks.chunks(CHUNK_BATCH * WINDOWS_AHEAD) {
        let mut have: HashMap<Hash, Vec<u8>> = HashMap::new();
        for c in group {
            if have.contains_key(&c.hash) || copy.contains_key(&c.hash) {
                continue;
            }
            if let Some(data) = local.get(&c.hash).and_then(|(path, offset)| read_chunk_at(path, *offset, c)) {
                reused += u64::from(c.len);
                have.insert(c.hash, data);
            }
        }
        let mut asked: HashSet<Hash> = HashSet::new();
        let sets: Vec<Vec<Hash>> = group
            .chunks(CHUNK_BATCH)
            .map(|window| {
                let wanted = |h: &Hash| !have.contains_key(h) && !copy.contains_key(h) && asked.insert(*h);
                window.iter().map(|c| c.hash).filter(wanted).collect()
            })
            .filter(|set: &Vec<Hash>| !set.is_empty())
            .collect();
        for (set, fetched) in sets.iter().zip(remote.chunk_sets(ws, &sets).await) {
            let fetched = fetched.map_err(FetchError::Remote)?;
            if fetched.len() != set.len() {
                return Err(FetchError::Damaged);
            }
            for (hash, data) in set.iter().zip(fetched) {
                if chunking::hash(&data) != *hash {
                    return Err(FetchError::Damaged);
                }
                have.insert(*hash, data);
            }
        }
        for c in group {
            if let Some((src, offset)) = copy.get(&c.hash) {
                let len = u64::from(c.len);
                match &mut run {
                    Some(r) if std::sync::Arc::ptr_eq(&r.src, src) && r.offset + r.len == *offset => r.len += len,
                    _ => {
                        flush_run(out, run.take(), check.as_ref())?;
                        run = Some(CopyRun { src: src.clone(), offset: *offset, len });
                    }
                }
                reused += len;
                progress(len);
                continue;
            }
            flush_run(out, run.take(), check.as_ref())?;
            let data = have.get(&c.hash).ok_or(FetchError::Damaged)?;
            if data.len() != c.len as usize {
                return Err(FetchError::Damaged);
            }
            whole.update(data);
            out.write(data).map_err(FetchError::Write)?;
            if let Some(check) = &check {
                check.written(out.len());
            }
            progress(u64::from(c.len));
        }
        // A copy run goes on into the next group (the check takes its whole blocks unread only
        // where a run covers them).
    }
    flush_run(out, run.take(), check.as_ref())?;
    let (assembled, blocks) = match check.take() {
        Some(check) => {
            let (hash, blocks, pushed) = check.finish(out.len()).map_err(FetchError::Write)?;
            out.unread = pushed * TREE_BLOCK;
            (hash, blocks)
        }
        None => whole.finalize(),
    };
    if assembled != *content_hash || !sources.unchanged() {
        return Err(FetchError::Mismatch);
    }
    if blocks.len >= PLACED_MIN_BYTES {
        // Its rescan after a local edit knows its blocks too.
        chunking::tree::remember(chunking::tree::list_digest(list.iter().copied()), blocks.clone());
        out.verified = Some(blocks);
    }
    Ok(reused)
}

/// Consecutive bytes of one local file to copy into a download.
struct CopyRun {
    src: std::sync::Arc<std::fs::File>,
    offset: u64,
    len: u64,
}

/// Copies `run` (if any) to the end of `out` and hands it to `check`.
fn flush_run<E>(out: &mut TempFile, run: Option<CopyRun>, check: Option<&Check>) -> Result<(), FetchError<E>> {
    let Some(r) = run else { return Ok(()) };
    out.copy_from(&r.src, r.offset, r.len).map_err(|_| FetchError::Mismatch)?;
    if let Some(check) = check {
        check.copied(r);
    }
    Ok(())
}

/// The files chunks are copied from unread ([`CopyChunks`]) and their stamps before the first
/// copy: a source whose stamp changed before the check read it may have handed the copy other
/// bytes than the check saw.
#[derive(Default)]
struct Sources(Vec<(std::sync::Arc<std::fs::File>, Stamp)>);

impl Sources {
    /// `None` if a source cannot be stat'ed.
    fn of(copy: &CopyChunks) -> Option<Sources> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (file, _) in copy.values() {
            if seen.insert(std::sync::Arc::as_ptr(file)) {
                out.push((file.clone(), Stamp::of_file(file)?));
            }
        }
        Some(Sources(out))
    }

    fn unchanged(&self) -> bool {
        self.0.iter().all(|(file, before)| Stamp::of_file(file).as_ref() == Some(before))
    }

    /// The sources that are files this process placed and that are unchanged since ([`Placed`]),
    /// with their blocks, by the address of the source's `File`.
    fn placed(&self) -> HashMap<usize, std::sync::Arc<Blocks>> {
        let mut out = HashMap::new();
        for (file, stamp) in &self.0 {
            if let Some(blocks) = Placed::blocks_of(stamp) {
                out.insert(std::sync::Arc::as_ptr(file) as usize, blocks);
            }
        }
        out
    }
}

/// Files at least this large that a download placed are remembered with their blocks
/// ([`Placed`]); below it, reading a file back costs little.
const PLACED_MIN_BYTES: u64 = 4 * TREE_BLOCK;

/// Files remembered at most ([`Placed`]; the oldest is forgotten first): 32 bytes per MiB each.
const PLACED_MAX: usize = 256;

/// Large files this process placed ([`TempFile::finish`]) after [`fetch_into`] verified their
/// whole content against the version's content hash: their stamp just after the rename and the
/// chaining values of their content's blocks ([`Blocks`], computed while that content was
/// hashed). Only this process's memory: after a restart, every file is read again.
///
/// **What it is trusted for, and why the download stays verified, whole or nothing.** When the
/// next version of such a file is assembled by copying its unchanged ranges (a 4 KiB edit of a
/// 1 GiB file copies, or clones, all but a chunk or two), the check of the new content
/// ([`Check`]) does not read again a whole block that was copied from the same offset of a
/// remembered source whose stamp is still the one taken after its rename: it takes that
/// block's chaining value from here. The content hash it computes is still BLAKE3 of the whole
/// new content, compared with the version's content hash before the rename, exactly as before;
/// what is trusted is that the source's bytes are those hashed when it was placed. The stamp
/// (device, inode, size, mtime and ctime to the nanosecond) vouches for that: a write to the
/// file, through a descriptor or a shared mapping, sets its mtime to the time of the write (the
/// version's mtime, set before the stamp, is older); a truncation changes the size; setting the
/// times back, a chmod, a link or a rename changes the ctime, which no one can set; a file put
/// in its place has another inode or other times. The source's stamp must match from before
/// the first copy to after the last one ([`Sources`]), so the copy took the bytes the values
/// describe. This is the trust the download already gives its own temp file between writing
/// and renaming it (no one else writes a `.filesync-tmp-` file) and the trust the agent gives
/// a file whose stamp says it is as scanned, extended from the download to the next one; it
/// does not cover writes that bypass the file system's times (a raw write to the block device,
/// a file system changed while unmounted by something that keeps times), nor a clock set back
/// to the nanosecond of the stamp. A value that does not fit is harmless: the content hash does
/// not match, the download fails with [`FetchError::Mismatch`] and the caller assembles it
/// again reading and checking every local chunk.
struct Placed;

/// Remembered files: (stamp, blocks), oldest first.
static PLACED: std::sync::Mutex<Vec<(Stamp, std::sync::Arc<Blocks>)>> = std::sync::Mutex::new(Vec::new());

impl Placed {
    fn remember(stamp: Stamp, blocks: Blocks) {
        if blocks.len != stamp.len || blocks.cvs.is_empty() {
            return;
        }
        let Ok(mut placed) = PLACED.lock() else { return };
        placed.retain(|(s, _)| (s.dev, s.ino) != (stamp.dev, stamp.ino));
        if placed.len() >= PLACED_MAX {
            placed.remove(0);
        }
        placed.push((stamp, std::sync::Arc::new(blocks)));
    }

    /// The blocks of a remembered file whose stamp is still `stamp`.
    fn blocks_of(stamp: &Stamp) -> Option<std::sync::Arc<Blocks>> {
        let placed = PLACED.lock().ok()?;
        placed.iter().find(|(s, _)| s == stamp).map(|(_, b)| b.clone())
    }
}

/// Reading bytes back costs a copy; this many at a time.
const READ_BACK_BUF: usize = 1 << 20;

/// Every this many bytes written to a temp file, a flush of it starts behind the writing.
const FLUSH_BEHIND: u64 = 64 << 20;

/// What [`Check`] hashes next, in file order.
enum Part {
    /// The temp file now holds this many bytes: the ones written since are read back from it
    /// (fresh in the page cache).
    Written(u64),
    /// A run copied from a local file: read from that file, not from the copy (a clone shares
    /// the source's blocks but not its cached pages, so reading the copy would go to the disk).
    Copied(CopyRun),
}

/// The BLAKE3 hash of a download's content, computed on a thread of its own as the download
/// proceeds, so the check of what was copied unread overlaps the copying. It starts at `from`
/// with `hasher` having hashed the bytes before (a resumed download's prefix, [`Resume`], is not
/// read again). Copied runs are hashed from their sources; [`Sources`] tells whether those held
/// still meanwhile. A whole block copied from the same offset of a source in `placed` (a file
/// placed by this process, unchanged since: [`Placed`] says why that is sound) is taken by its
/// chaining value, unread.
struct Check {
    parts: Option<std::sync::mpsc::Sender<Part>>,
    thread: std::thread::JoinHandle<std::io::Result<(Hash, Blocks, u64)>>,
}

impl Check {
    fn start(
        path: &Path,
        from: u64,
        mut hasher: TreeHasher,
        placed: HashMap<usize, std::sync::Arc<Blocks>>,
    ) -> std::io::Result<Check> {
        use std::os::unix::fs::FileExt;
        let file = std::fs::File::open(path)?;
        let (tx, rx) = std::sync::mpsc::channel::<Part>();
        let thread = std::thread::Builder::new().name("filesync-check".into()).spawn(move || {
            let mut buf = vec![0u8; READ_BACK_BUF];
            // Hashes `len` bytes of `src` from `at`.
            let mut hash_range = |hasher: &mut TreeHasher, src: &std::fs::File, mut at: u64, len: u64| {
                let end = at + len;
                while at < end {
                    let want = usize::try_from(end - at).unwrap_or(usize::MAX).min(buf.len());
                    let n = src.read_at(&mut buf[..want], at)?;
                    if n == 0 {
                        return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
                    }
                    hasher.update(&buf[..n]);
                    at += n as u64;
                }
                Ok(())
            };
            let (mut done, mut pushed) = (from, 0u64);
            for part in rx {
                match part {
                    Part::Written(upto) if upto > done => {
                        hash_range(&mut hasher, &file, done, upto - done)?;
                        done = upto;
                    }
                    Part::Written(_) => {}
                    Part::Copied(run) => {
                        let blocks = placed.get(&(std::sync::Arc::as_ptr(&run.src) as usize));
                        let (mut at, end) = (run.offset, run.offset + run.len);
                        while at < end {
                            // Where the copy kept its offset, a whole block of the source is its own block.
                            let whole = blocks.filter(|_| at == hasher.len() && at + TREE_BLOCK <= end);
                            if let Some(cv) = whole.and_then(|b| b.whole(at / TREE_BLOCK)) {
                                if hasher.push_block(*cv) {
                                    pushed += 1;
                                    at += TREE_BLOCK;
                                    continue;
                                }
                            }
                            // Up to the next block boundary of the content, where a push may fit.
                            let step = (TREE_BLOCK - hasher.len() % TREE_BLOCK).min(end - at);
                            hash_range(&mut hasher, &run.src, at, step)?;
                            at += step;
                        }
                        done += run.len;
                    }
                }
            }
            let (hash, blocks) = hasher.finalize();
            Ok((hash, blocks, pushed))
        })?;
        Ok(Check { parts: Some(tx), thread })
    }

    /// The temp file now holds `len` bytes, the last ones written (not copied).
    fn written(&self, len: u64) {
        self.send(Part::Written(len));
    }

    /// `run` was copied to the end of the temp file.
    fn copied(&self, run: CopyRun) {
        self.send(Part::Copied(run));
    }

    fn send(&self, part: Part) {
        if let Some(tx) = &self.parts {
            let _ = tx.send(part);
        }
    }

    /// The hash of the first `len` bytes once all are hashed, their blocks, and how many blocks
    /// were taken unread. Blocking (briefly: the hashing kept up with the writing).
    fn finish(mut self, len: u64) -> std::io::Result<(Hash, Blocks, u64)> {
        self.written(len);
        drop(self.parts.take());
        self.thread.join().map_err(|_| std::io::Error::other("the check thread panicked"))?
    }
}

/// One small version to fetch ahead ([`fetch_ahead`]); `key` names its destination for the
/// caller's `open` of [`stage_all`].
#[derive(Debug)]
pub struct AheadJob<K> {
    pub seq: i64,
    pub key: K,
    pub mode: u32,
    pub mtime_ms: i64,
    pub size: u64,
    pub content_hash: Hash,
    pub chunks: Vec<ChunkRef>,
}

/// What a prefetch gathered: the versions to write, and where their chunks come from.
#[derive(Debug)]
pub struct Gathered<K> {
    pub jobs: Vec<AheadJob<K>>,
    fetched: HashMap<Hash, Vec<u8>>,
    local: LocalChunks,
}

impl<K> Default for Gathered<K> {
    fn default() -> Self {
        Gathered { jobs: Vec::new(), fetched: HashMap::new(), local: LocalChunks::new() }
    }
}

impl<K> Gathered<K> {
    pub fn extend(&mut self, other: Gathered<K>) {
        self.jobs.extend(other.jobs);
        self.fetched.extend(other.fetched);
        self.local.extend(other.local);
    }

    /// True if every chunk of `job` was fetched or is held by a local file.
    pub fn has_all(&self, job: &AheadJob<K>) -> bool {
        job.chunks.iter().all(|r| self.fetched.contains_key(&r.hash) || self.local.contains_key(&r.hash))
    }

    /// Keeps only the jobs for which `keep` is true.
    pub fn retain(&mut self, keep: impl FnMut(&AheadJob<K>) -> bool) {
        self.jobs.retain(keep);
    }
}

/// Fetches ahead the chunks that `jobs` need and `local` does not hold, a file's chunks in one
/// request, [`PREFETCH_REQUEST_BYTES`] per request and many in flight, within [`PREFETCH_BYTES`]
/// in all (the jobs beyond are left out: they download alone). A refused request is left out
/// too (its files download alone); a failed connection is the error.
pub async fn fetch_ahead<F: Fetch, K>(
    remote: &mut F,
    ws: WorkspaceId,
    jobs: Vec<AheadJob<K>>,
    local: LocalChunks,
) -> Result<Gathered<K>, F::Error> {
    let (mut kept, mut sets) = (Vec::new(), Vec::new());
    let mut asked: HashSet<Hash> = HashSet::new();
    let (mut set, mut set_bytes, mut total) = (Vec::new(), 0u64, 0u64);
    for job in jobs {
        let (mut need, mut need_bytes) = (Vec::new(), 0u64);
        for r in &job.chunks {
            if !local.contains_key(&r.hash) && asked.insert(r.hash) {
                need.push(r.hash);
                need_bytes += u64::from(r.len);
            }
        }
        if total + need_bytes > PREFETCH_BYTES {
            break; // the rest download one by one
        }
        total += need_bytes;
        if !set.is_empty() && set_bytes + need_bytes > PREFETCH_REQUEST_BYTES {
            sets.push(std::mem::take(&mut set));
            set_bytes = 0;
        }
        set.extend(need);
        set_bytes += need_bytes;
        kept.push(job);
    }
    if !set.is_empty() {
        sets.push(set);
    }
    let mut fetched = HashMap::new();
    if !sets.is_empty() {
        let answers = remote.chunk_sets(ws, &sets).await;
        for (set, answer) in sets.into_iter().zip(answers) {
            match answer {
                // Checked as part of each file's content hash when staged.
                Ok(data) => fetched.extend(set.into_iter().zip(data)),
                Err(e) if F::is_refusal(&e) => {
                    tracing::info!(workspace.id = %ws, chunks = set.len(), "chunks refused; their files download one by one");
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(Gathered { jobs: kept, fetched, local })
}

/// A version fetched ahead, complete, verified and durable beside its destination.
#[derive(Debug)]
pub struct Staged {
    pub file: StagedFile,
    pub size: u64,
    pub mtime_ms: i64,
    pub content_hash: Hash,
    pub chunks: Vec<ChunkRef>,
    /// Bytes taken from local files rather than fetched.
    pub reused: u64,
}

/// Writes each gathered version beside its destination (`open` makes its temp file from its
/// key), then makes them all durable with one barrier per file system ([`make_durable`]). A
/// version that cannot be built whole and verified is left out (it downloads alone); if the
/// barrier fails, all are. Blocking: run it on a blocking thread.
pub fn stage_all<K>(
    ws: WorkspaceId,
    gathered: Gathered<K>,
    open: impl Fn(&K) -> std::io::Result<TempFile>,
) -> HashMap<i64, Staged> {
    let Gathered { jobs, fetched, local } = gathered;
    let mut staged = Vec::with_capacity(jobs.len());
    for job in jobs {
        let seq = job.seq;
        let tmp = match open(&job.key) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(workspace.id = %ws, seq, error = %e, "cannot write a download");
                continue;
            }
        };
        match stage_one(tmp, job, &fetched, &local) {
            Ok(Some(s)) => staged.push((seq, s)),
            Ok(None) => tracing::debug!(workspace.id = %ws, seq, "not fetched ahead whole; downloading alone"),
            Err(e) => tracing::warn!(workspace.id = %ws, seq, error = %e, "cannot write a download"),
        }
    }
    let files: Vec<&StagedFile> = staged.iter().map(|(_, s)| &s.file).collect();
    let barrier = std::time::Instant::now();
    let durable = make_durable(&files);
    tracing::debug!(workspace.id = %ws, files = files.len(), ms = barrier.elapsed().as_millis(), "downloads made durable");
    if let Err(e) = durable {
        tracing::warn!(workspace.id = %ws, error = %e, "cannot flush downloads to disk; downloading one by one");
        return HashMap::new();
    }
    staged.into_iter().collect()
}

/// One version fetched ahead, or `None` if a chunk is missing or the content does not match.
fn stage_one<K>(
    mut tmp: TempFile,
    job: AheadJob<K>,
    fetched: &HashMap<Hash, Vec<u8>>,
    local: &LocalChunks,
) -> std::io::Result<Option<Staged>> {
    let mut whole = blake3::Hasher::new();
    let mut reused = 0u64;
    for r in &job.chunks {
        let read;
        let data = match fetched.get(&r.hash) {
            Some(d) => d,
            None => match local.get(&r.hash).and_then(|(path, offset)| read_chunk_at(path, *offset, r)) {
                Some(d) => {
                    reused += u64::from(r.len);
                    read = d;
                    &read
                }
                None => return Ok(None),
            },
        };
        if data.len() != r.len as usize {
            return Ok(None);
        }
        whole.update(data);
        tmp.write(data)?;
    }
    if *whole.finalize().as_bytes() != job.content_hash {
        return Ok(None);
    }
    let file = tmp.stage(job.mode, job.mtime_ms)?;
    Ok(Some(Staged {
        file,
        size: job.size,
        mtime_ms: job.mtime_ms,
        content_hash: job.content_hash,
        chunks: job.chunks,
        reused,
    }))
}

/// The chunk list of a file no larger than [`chunking::MIN_CHUNK`]: one chunk whose hash is the
/// content hash (or none, for an empty file). Lets a batch of small files be fetched without
/// asking for their manifests; the content is verified either way.
pub fn one_chunk_list(size: u64, content_hash: Hash) -> Vec<ChunkRef> {
    match u32::try_from(size) {
        Ok(len) if len > 0 => vec![ChunkRef { hash: content_hash, len }],
        _ => Vec::new(),
    }
}

impl Client {
    /// Downloads several versions, each to its destination (directories made if missing; each
    /// written beside its destination, so destinations on different file systems are fine),
    /// answering in the order given. The small ones are fetched ahead
    /// together ([`fetch_ahead`], manifests and chunks many requests in flight), written beside
    /// their destinations and made durable with one barrier ([`stage_all`]), then renamed; the
    /// others, and any not fetched ahead whole, download one by one ([`Client::download`]).
    /// The agent applies a batch of incoming changes with the same functions.
    pub async fn download_many(
        &self,
        ws: WorkspaceId,
        wanted: &[(i64, PathBuf)],
    ) -> Vec<Result<crate::Manifest, ClientError>> {
        let asks: Vec<_> = wanted
            .iter()
            .map(|&(seq, _)| {
                let client = self.clone();
                async move { client.manifest(ws, seq).await }
            })
            .collect();
        let mut manifests: Vec<Result<crate::Manifest, ClientError>> =
            futures::stream::iter(asks).buffered(REQUESTS_IN_FLIGHT).collect().await;
        let mut jobs = Vec::new();
        for (i, m) in manifests.iter().enumerate() {
            let Ok(m) = m else { continue };
            if m.size > AHEAD_FILE_BYTES {
                continue;
            }
            if let Some(dir) = wanted[i].1.parent().filter(|d| !d.as_os_str().is_empty()) {
                if tokio::fs::create_dir_all(dir).await.is_err() {
                    continue; // reported by the download alone
                }
            }
            let (size, mtime_ms, content_hash, chunks) = (m.size, m.mtime_ms, m.content_hash, m.chunks.clone());
            jobs.push(AheadJob { seq: m.seq, key: i, mode: 0, mtime_ms, size, content_hash, chunks });
        }
        let mut staged = HashMap::new();
        if jobs.len() > 1 {
            let mut remote = self.clone();
            match fetch_ahead(&mut remote, ws, jobs, LocalChunks::new()).await {
                Ok(gathered) => {
                    let dests: Vec<PathBuf> = wanted.iter().map(|(_, d)| d.clone()).collect();
                    staged = tokio::task::spawn_blocking(move || {
                        stage_all(ws, gathered, |&i| TempFile::beside(dests[i].clone()))
                    })
                    .await
                    .unwrap_or_default();
                }
                Err(e) => {
                    tracing::debug!(workspace.id = %ws, error = %e, "fetching ahead failed; downloading one by one")
                }
            }
        }
        for (i, (seq, dest)) in wanted.iter().enumerate() {
            if manifests[i].is_err() {
                continue;
            }
            let placed = match staged.remove(seq) {
                Some(s) if s.file.dest() == dest.as_path() => s.file.finish().map(drop).map_err(ClientError::Io),
                _ => self.download(ws, *seq, dest).await.map(drop),
            };
            if let Err(e) = placed {
                manifests[i] = Err(e);
            }
        }
        manifests
    }

    /// Downloads the version made by `seq` to `dest` (temporary file beside it, verified,
    /// renamed; the directory is made if missing).
    pub async fn download(&self, ws: WorkspaceId, seq: i64, dest: &Path) -> Result<crate::Manifest, ClientError> {
        self.download_reusing(ws, seq, dest, None).await
    }

    /// Like [`Client::download`], taking every chunk that `base` (e.g. the previous local copy,
    /// possibly `dest` itself) already has from it instead of the network.
    pub async fn download_reusing(
        &self,
        ws: WorkspaceId,
        seq: i64,
        dest: &Path,
        base: Option<&Path>,
    ) -> Result<crate::Manifest, ClientError> {
        let manifest = self.manifest(ws, seq).await?;
        let local = match base {
            Some(b) if b.is_file() => {
                let path = b.to_path_buf();
                let scan = tokio::task::spawn_blocking(move || {
                    std::fs::File::open(&path).and_then(|f| chunking::scan(std::io::BufReader::new(f)))
                })
                .await
                .map_err(|e| ClientError::Io(std::io::Error::other(e)))?;
                scan.map(|s| local_chunks_of(b, &s)).unwrap_or_default()
            }
            _ => LocalChunks::new(),
        };
        if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir).await?;
        }
        let mut tmp = TempFile::beside(dest.to_path_buf())?;
        let mut remote = self.clone();
        fetch_into(
            &mut remote,
            ws,
            &manifest.chunks,
            &manifest.content_hash,
            &mut tmp,
            Local { read: &local, copy: &CopyChunks::new() },
            Resume::default(),
            &mut |_| {},
        )
        .await
        .map_err(|e| match e {
            FetchError::Remote(e) => e,
            FetchError::Write(e) => ClientError::Io(e),
            e @ (FetchError::Damaged | FetchError::Mismatch) => {
                ClientError::Verify(format!("the version of seq {seq}: {e}"))
            }
        })?;
        let (mode, mtime) = (0, manifest.mtime_ms);
        tokio::task::spawn_blocking(move || tmp.finish(mode, mtime))
            .await
            .map_err(|e| ClientError::Io(std::io::Error::other(e)))??;
        Ok(manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use filesync_core::path::WsPath;

    /// A batch whose destinations are on two file systems (a temp directory and `/dev/shm`, a
    /// tmpfs, as when a directory of the folder is a mount of another): each temp file is
    /// beside its destination, so no rename crosses devices, and each file system gets its
    /// barrier.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_batch_across_file_systems_is_flushed_and_placed() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir_in("/dev/shm").unwrap());
        let folders = [Folder::open(a.path()).unwrap(), Folder::open(b.path()).unwrap()];
        let mut staged = Vec::new();
        for i in 0..SYNCFS_ABOVE {
            for f in &folders {
                let mut t = f.temp_beside(&WsPath::parse(&format!("sub/f{i}")).unwrap()).unwrap();
                t.write(format!("file {i}").as_bytes()).unwrap();
                staged.push(t.stage(0o644, 1_700_000_000_000).unwrap());
            }
        }
        assert_ne!(staged[0].dev, staged[1].dev, "the two destinations are on different file systems");
        make_durable(&staged.iter().collect::<Vec<_>>()).unwrap();
        for s in staged {
            s.finish().unwrap();
        }
        for dir in [a.path(), b.path()] {
            for i in 0..SYNCFS_ABOVE {
                assert_eq!(std::fs::read(dir.join(format!("sub/f{i}"))).unwrap(), format!("file {i}").as_bytes());
            }
            assert_eq!(std::fs::read_dir(dir.join("sub")).unwrap().count(), SYNCFS_ABOVE, "no temp file is left");
        }
    }

    /// A node that holds some chunks.
    struct Held(HashMap<Hash, Vec<u8>>);

    impl Fetch for Held {
        type Error = ();
        fn is_refusal(_: &()) -> bool {
            true
        }
        async fn chunks(&mut self, _: WorkspaceId, hashes: &[Hash]) -> Result<Vec<Vec<u8>>, ()> {
            hashes.iter().map(|h| self.0.get(h).cloned().ok_or(())).collect()
        }
    }

    use filesync_core::test_data::noise;

    /// Builds the edited version from `old.bin` as `old_scan` saw it (copied unread where `copy`,
    /// else read and checked) and what the node holds; the result as the caller sees it.
    async fn assemble(
        dir: &Path,
        old_scan: &chunking::FileScan,
        new: &[u8],
        copy: bool,
    ) -> (Result<u64, FetchError<()>>, Vec<u8>) {
        let path = dir.join("old.bin");
        let scan = chunking::scan(new).unwrap();
        let read = local_chunks_of(&path, old_scan);
        let mut copies = CopyChunks::new();
        if copy {
            let file = std::sync::Arc::new(std::fs::File::open(&path).unwrap());
            for c in &old_scan.chunks {
                copies.insert(c.chunk.hash, (file.clone(), c.offset));
            }
        }
        let held = scan.chunks.iter().map(|c| {
            let at = c.offset as usize;
            (c.chunk.hash, new[at..at + c.chunk.len as usize].to_vec())
        });
        let mut node = Held(held.collect());
        let mut tmp = TempFile::beside(dir.join("new.bin")).unwrap();
        let local = Local { read: &read, copy: &copies };
        let ws = WorkspaceId(1);
        let got = fetch_into(
            &mut node,
            ws,
            &scan.refs(),
            &scan.content_hash,
            &mut tmp,
            local,
            Resume::default(),
            &mut |_| {},
        )
        .await;
        let bytes = std::fs::read(tmp.path()).unwrap();
        (got, bytes)
    }

    #[tokio::test]
    async fn copies_from_a_file_changed_after_its_scan_are_caught_and_reading_is_right() {
        let dir = tempfile::tempdir().unwrap();
        let old = noise(3_000_000, 1);
        let mut new = old.clone();
        new[1_500_000..1_504_096].copy_from_slice(&noise(4096, 2));
        std::fs::write(dir.path().join("old.bin"), &old).unwrap();
        let scan = chunking::scan(&old[..]).unwrap();
        let (got, bytes) = assemble(dir.path(), &scan, &new, true).await;
        assert!(got.unwrap() > 2_500_000, "most of the file came from the old one");
        assert!(bytes == new, "copied runs land in order");
        // The old file changes after the copy plan was made (its scan is stale): in a copied run...
        let mut scribbled = old.clone();
        scribbled[2_000_000] ^= 1;
        std::fs::write(dir.path().join("old.bin"), &scribbled).unwrap();
        let (got, _) = assemble(dir.path(), &scan, &new, true).await;
        assert!(matches!(got, Err(FetchError::Mismatch)), "read back, the copy does not add up");
        // ... or shrinks under the copy.
        std::fs::write(dir.path().join("old.bin"), &old[..2_000_000]).unwrap();
        let (got, _) = assemble(dir.path(), &scan, &new, true).await;
        assert!(matches!(got, Err(FetchError::Mismatch)), "a copy past the end fails");
        // The caller's fallback reads and checks each local chunk, fetching the rest: right again.
        std::fs::write(dir.path().join("old.bin"), &scribbled).unwrap();
        let (got, bytes) = assemble(dir.path(), &scan, &new, false).await;
        assert!(got.is_ok() && bytes == new);
    }

    /// A download resumed after a staged prefix (a large upload fetched before its commit): the
    /// prefix is neither fetched nor read again, the rest is copied from the old version (checked
    /// by reading back from where the prefix ends, with the prefix's hash state) and fetched. A
    /// hash state that is not the prefix's, or a prefix longer than the file, does not add up.
    #[tokio::test]
    async fn a_resumed_download_continues_its_prefix_and_checks_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let old = noise(3_000_000, 5);
        let mut new = old.clone();
        new[2_500_000..2_504_096].copy_from_slice(&noise(4096, 6));
        std::fs::write(dir.path().join("old.bin"), &old).unwrap();
        let (old_scan, scan) = (chunking::scan(&old[..]).unwrap(), chunking::scan(&new[..]).unwrap());
        let file = std::sync::Arc::new(std::fs::File::open(dir.path().join("old.bin")).unwrap());
        let copy: CopyChunks = old_scan.chunks.iter().map(|c| (c.chunk.hash, (file.clone(), c.offset))).collect();
        let staged = scan.chunks.len() / 3;
        let prefix = scan.chunks[staged].offset as usize;
        // The node holds only the chunks after the prefix that the old version lacks.
        let held = scan.chunks[staged..].iter().filter(|c| !copy.contains_key(&c.chunk.hash)).map(|c| {
            let at = c.offset as usize;
            (c.chunk.hash, new[at..at + c.chunk.len as usize].to_vec())
        });
        let mut node = Held(held.collect());
        let (read, refs, ws) = (LocalChunks::new(), scan.refs(), WorkspaceId(1));
        let resume_with = |hashed: &[u8]| -> (TempFile, Resume) {
            let mut tmp = TempFile::beside(dir.path().join("new.bin")).unwrap();
            tmp.write(&new[..prefix]).unwrap();
            let mut hasher = TreeHasher::new();
            hasher.update(hashed);
            (tmp, Resume { chunks: staged, hasher })
        };

        let (mut tmp, from) = resume_with(&new[..prefix]);
        let local = Local { read: &read, copy: &copy };
        let mut progress = 0u64;
        let mut count = |n| progress += n;
        let reused =
            fetch_into(&mut node, ws, &refs, &scan.content_hash, &mut tmp, local, from, &mut count).await.unwrap();
        assert_eq!(std::fs::read(tmp.path()).unwrap(), new, "the prefix continued, the rest in order");
        assert!(reused > 1_500_000, "the rest mostly copied from the old version: {reused}");
        assert_eq!(progress, new.len() as u64, "progress counts the staged prefix too");

        let (mut tmp, from) = resume_with(&old[..prefix / 2]);
        let got = fetch_into(&mut node, ws, &refs, &scan.content_hash, &mut tmp, local, from, &mut |_| {}).await;
        assert!(matches!(got, Err(FetchError::Mismatch)), "a hash state of other bytes");
        let (mut tmp, mut from) = resume_with(&new[..prefix]);
        from.chunks += 1;
        let got = fetch_into(&mut node, ws, &refs, &scan.content_hash, &mut tmp, local, from, &mut |_| {}).await;
        assert!(matches!(got, Err(FetchError::Mismatch)), "more chunks than the file holds");
    }

    /// A source written after the copy plan was made (its stamp taken) no longer vouches for what
    /// was copied from it, even if the bytes the check reads add up.
    #[test]
    fn a_source_changed_after_its_stamp_fails_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.bin");
        std::fs::write(&path, noise(100_000, 3)).unwrap();
        let file = std::sync::Arc::new(std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap());
        let copy: CopyChunks = [([1u8; 32], (file.clone(), 0)), ([2u8; 32], (file.clone(), 50_000))].into();
        let sources = Sources::of(&copy).unwrap();
        assert_eq!(sources.0.len(), 1, "one stamp per file");
        assert!(sources.unchanged());
        use std::os::unix::fs::FileExt;
        file.write_all_at(&noise(10, 4), 60_000).unwrap();
        assert!(!sources.unchanged(), "a write since the stamp is seen");
    }

    /// Places `data` at `dir/name` as a download from a node holding all its chunks.
    async fn place(dir: &Path, name: &str, data: &[u8]) -> chunking::FileScan {
        let scan = chunking::scan(data).unwrap();
        let held = scan.chunks.iter().map(|c| {
            let at = c.offset as usize;
            (c.chunk.hash, data[at..at + c.chunk.len as usize].to_vec())
        });
        let mut tmp = TempFile::beside(dir.join(name)).unwrap();
        let (read, copy) = (LocalChunks::new(), CopyChunks::new());
        let local = Local { read: &read, copy: &copy };
        let (refs, ws) = (scan.refs(), WorkspaceId(1));
        let mut node = Held(held.collect());
        fetch_into(&mut node, ws, &refs, &scan.content_hash, &mut tmp, local, Resume::default(), &mut |_| {})
            .await
            .unwrap();
        tmp.finish(0o644, 1_700_000_000_000).unwrap();
        scan
    }

    /// The next version of a large file this process placed: the check takes the whole blocks
    /// copied from the same offsets by their values, unread, and the content is still verified.
    /// Once the old file is written (even with its size and mtime put back), it vouches for
    /// nothing: its blocks are read, and the changed byte fails the check.
    #[tokio::test]
    async fn a_placed_file_unchanged_since_is_not_read_again_by_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let b = TREE_BLOCK as usize;
        let old = noise(6 * b + 1234, 11);
        let old_scan = place(dir.path(), "old.bin", &old).await;
        let path = dir.path().join("old.bin");
        assert_eq!(std::fs::read(&path).unwrap(), old);
        let stamp = Stamp::of_file(&std::fs::File::open(&path).unwrap()).unwrap();
        assert!(Placed::blocks_of(&stamp).is_some_and(|bl| bl.len == old.len() as u64), "remembered with its blocks");

        let mut new = old.clone();
        new[3 * b + 100..3 * b + 4196].copy_from_slice(&noise(4096, 12));
        let (got, bytes) = assemble(dir.path(), &old_scan, &new, true).await;
        assert!(got.is_ok() && bytes == new, "verified and in order");
        let unread = last_unread(dir.path(), &old_scan, &new).await;
        // Whole blocks made only of chunks copied from the same offset, but not the first (its
        // value is not the root's) nor the partial last one: 3 or 4 of the 7 (the edited
        // chunk may reach into the block before the edit's).
        let old_at: HashSet<(Hash, u64)> = old_scan.chunks.iter().map(|c| (c.chunk.hash, c.offset)).collect();
        let new_scan = chunking::scan(&new[..]).unwrap();
        let kept = |i: u64| {
            let (from, to) = (i * TREE_BLOCK, (i + 1) * TREE_BLOCK);
            let within = |c: &&chunking::ScannedChunk| c.offset < to && c.offset + u64::from(c.chunk.len) > from;
            new_scan.chunks.iter().filter(within).all(|c| old_at.contains(&(c.chunk.hash, c.offset)))
        };
        let want = (1..new.len() as u64 / TREE_BLOCK).filter(|&i| kept(i)).count() as u64;
        assert!(want >= 3);
        assert_eq!(unread, want * TREE_BLOCK, "whole unchanged blocks taken by their values");

        // Written in a copied block, then its size and mtime put back: the ctime moved.
        use std::os::unix::fs::FileExt;
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&[old[4 * b + 7] ^ 1], (4 * b + 7) as u64).unwrap();
        f.set_modified(mtime).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), mtime);
        let (got, _) = assemble(dir.path(), &old_scan, &new, true).await;
        assert!(matches!(got, Err(FetchError::Mismatch)), "read again, the copy does not add up");
        assert_eq!(last_unread(dir.path(), &old_scan, &new).await, 0, "nothing taken unread");
    }

    /// [`assemble`] with copies, returning how much the check took unread (0 if it failed).
    async fn last_unread(dir: &Path, old_scan: &chunking::FileScan, new: &[u8]) -> u64 {
        let path = dir.join("old.bin");
        let scan = chunking::scan(new).unwrap();
        let file = std::sync::Arc::new(std::fs::File::open(&path).unwrap());
        let copy: CopyChunks = old_scan.chunks.iter().map(|c| (c.chunk.hash, (file.clone(), c.offset))).collect();
        let held = scan.chunks.iter().map(|c| {
            let at = c.offset as usize;
            (c.chunk.hash, new[at..at + c.chunk.len as usize].to_vec())
        });
        let mut node = Held(held.collect());
        let mut tmp = TempFile::beside(dir.join("new.bin")).unwrap();
        let read = LocalChunks::new();
        let local = Local { read: &read, copy: &copy };
        let refs = scan.refs();
        let got = fetch_into(
            &mut node,
            WorkspaceId(1),
            &refs,
            &scan.content_hash,
            &mut tmp,
            local,
            Resume::default(),
            &mut |_| {},
        )
        .await;
        if got.is_ok() {
            tmp.unread()
        } else {
            0
        }
    }

    /// A chunk the node sends that does not match its hash fails the download, and nothing is
    /// left: neither the destination nor the temp file.
    #[tokio::test]
    async fn a_damaged_chunk_from_the_node_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let data = noise(2_000_000, 13);
        let scan = chunking::scan(&data[..]).unwrap();
        let mut held: HashMap<Hash, Vec<u8>> = scan
            .chunks
            .iter()
            .map(|c| (c.chunk.hash, data[c.offset as usize..(c.offset + u64::from(c.chunk.len)) as usize].to_vec()))
            .collect();
        held.get_mut(&scan.chunks[3].chunk.hash).unwrap()[10] ^= 1;
        let mut node = Held(held);
        let mut tmp = TempFile::beside(dir.path().join("f.bin")).unwrap();
        let (read, copy) = (LocalChunks::new(), CopyChunks::new());
        let local = Local { read: &read, copy: &copy };
        let refs = scan.refs();
        let got = fetch_into(
            &mut node,
            WorkspaceId(1),
            &refs,
            &scan.content_hash,
            &mut tmp,
            local,
            Resume::default(),
            &mut |_| {},
        )
        .await;
        assert!(matches!(got, Err(FetchError::Damaged)));
        drop(tmp);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing appears");
    }

    #[test]
    fn copied_ranges_land_in_order_and_a_failed_copy_appends_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let old: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.path().join("old.bin"), &old).unwrap();
        let src = std::fs::File::open(dir.path().join("old.bin")).unwrap();
        let mut tmp = TempFile::beside(dir.path().join("new.bin")).unwrap();
        tmp.copy_from(&src, 100_000, 50_000).unwrap();
        tmp.write(b"edit").unwrap();
        assert!(tmp.copy_from(&src, 190_000, 50_000).is_err(), "past the end of the old file");
        tmp.copy_from(&src, 0, 10).unwrap();
        // As far past a block boundary as the source range (an edit that kept the length): the
        // head up to the boundary is copied, the rest cloned where the file system can.
        let at = tmp.len();
        tmp.copy_from(&src, at + 8192, 20_000).unwrap();
        let mut want = old[100_000..150_000].to_vec();
        want.extend_from_slice(b"edit");
        want.extend_from_slice(&old[..10]);
        want.extend_from_slice(&old[(at + 8192) as usize..(at + 8192 + 20_000) as usize]);
        assert_eq!(tmp.content_hash().unwrap(), chunking::hash(&want));
        tmp.finish(0o644, 1_700_000_000_000).unwrap();
        assert_eq!(std::fs::read(dir.path().join("new.bin")).unwrap(), want);
    }
}

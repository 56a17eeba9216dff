//! Where pack objects live: a local directory or any object store that
//! `object_store` speaks (S3-compatible stores: AWS, MinIO, SeaweedFS, Ceph
//! RGW, Garage; the in-memory store in tests). Reads are ranged GETs on both;
//! how a sealed pack becomes durable differs:
//!
//! - a directory: the spool file already lies in `<root>/packs/.spool` (same
//!   file system), so sealing is fsync, rename to the pack's key, fsync of the
//!   directory — no copy;
//! - an object store: the spool file (in the system temp directory) is
//!   uploaded with one PUT, or as a multipart upload in [`PART`]-sized parts
//!   when larger, so at most two parts are in memory per upload; the pack is
//!   durable when the store acknowledges the PUT / completes the upload.
//!
//! Object-store requests are retried a few times within [`RETRY_TIMEOUT`], each
//! given at most [`REQUEST_TIMEOUT`]; a store that stays away or stalls becomes
//! [`StorageError::Unavailable`], which the
//! daemons answer as retryable. Every request is counted by kind
//! ([`Backend::requests`], the daemons' `filesync_storage_requests_total`).

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig, WriteMultipart,
};

use super::pack::{pack_key, OpenPack};
use super::requests::{Op, RequestCounters, StorageRequests};
use super::StorageError;
use crate::config::{Config, StorageLocation};
use crate::db::packs::PackId;

/// Multipart part size for packs larger than one part (S3's minimum part is 5 MiB).
pub const PART: usize = 8 * 1024 * 1024;
/// How long an object-store request is retried before the caller gets `Unavailable`.
pub const RETRY_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest one object-store request may take, from connecting to the end of its response: a
/// store that accepts a request and then stalls is given up on after this, not hung on. Enough
/// for a [`PART`] at ~300 KB/s (object_store's own default).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Backend {
    objects: Arc<dyn ObjectStore>,
    place: Place,
    requests: RequestCounters,
}

#[derive(Debug)]
enum Place {
    /// A local directory: packs under `packs/`, loose chunks of earlier releases under `<hh>/`.
    Dir(PathBuf),
    /// An object store, described for logs (`s3://bucket/prefix`); never holds credentials.
    Remote(String),
}

impl Backend {
    /// The configured backend: `storage` is a directory (default `<data_dir>/chunks`), a `file://`
    /// URL or `s3://BUCKET[/PREFIX]` reached with the `s3_*` settings.
    pub fn from_config(config: &Config) -> Result<Backend, StorageError> {
        match config.storage_location().map_err(|e| StorageError::Config(e.to_string()))? {
            StorageLocation::Dir(root) => Backend::dir(&root),
            StorageLocation::S3 { bucket, prefix } => Backend::s3(&bucket, &prefix, config),
        }
    }

    /// A local directory, created if needed; spool files a crash left behind (older than a day,
    /// so never one another process is writing) are deleted. Blocking.
    pub fn dir(root: &Path) -> Result<Backend, StorageError> {
        let spool = root.join("packs").join(".spool");
        std::fs::create_dir_all(&spool).map_err(StorageError::io(&spool))?;
        let day_ago = std::time::SystemTime::now() - Duration::from_secs(24 * 3600);
        for entry in std::fs::read_dir(&spool).map_err(StorageError::io(&spool))?.flatten() {
            let old = entry.metadata().and_then(|m| m.modified()).is_ok_and(|t| t < day_ago);
            if old && entry.file_name().to_string_lossy().starts_with(".spool-") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let objects = LocalFileSystem::new_with_prefix(root).map_err(|e| StorageError::Config(e.to_string()))?;
        Ok(Backend::with(Arc::new(objects), Place::Dir(root.to_path_buf())))
    }

    /// An S3 bucket (any S3-compatible store), keys under `prefix`.
    pub fn s3(bucket: &str, prefix: &str, config: &Config) -> Result<Backend, StorageError> {
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(2),
                base: 2.0,
            },
            max_retries: 4,
            retry_timeout: RETRY_TIMEOUT,
        };
        let options = ClientOptions::new().with_connect_timeout(Duration::from_secs(5)).with_timeout(REQUEST_TIMEOUT);
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(&config.s3_region)
            .with_virtual_hosted_style_request(!config.s3_path_style)
            .with_retry(retry)
            .with_client_options(options);
        if let Some(endpoint) = &config.s3_endpoint {
            builder = builder.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some(key_id) = &config.s3_access_key_id {
            builder = builder.with_access_key_id(key_id).with_secret_access_key(config.s3_secret_access_key.expose());
        }
        let s3 = builder.build().map_err(|e| StorageError::Config(e.to_string()))?;
        let describe = if prefix.is_empty() { format!("s3://{bucket}") } else { format!("s3://{bucket}/{prefix}") };
        let objects: Arc<dyn ObjectStore> =
            if prefix.is_empty() { Arc::new(s3) } else { Arc::new(PrefixStore::new(s3, prefix)) };
        Ok(Backend::with(objects, Place::Remote(describe)))
    }

    /// Any object store (tests use `object_store::memory::InMemory`).
    pub fn objects(objects: Arc<dyn ObjectStore>, describe: impl Into<String>) -> Backend {
        Backend::with(objects, Place::Remote(describe.into()))
    }

    fn with(objects: Arc<dyn ObjectStore>, place: Place) -> Backend {
        Backend { objects, place, requests: RequestCounters::default() }
    }

    /// The requests this backend made so far, by kind, and the bytes they moved.
    pub fn requests(&self) -> StorageRequests {
        self.requests.snapshot()
    }

    /// For logs: the directory or the bucket URL.
    pub fn describe(&self) -> String {
        match &self.place {
            Place::Dir(root) => root.display().to_string(),
            Place::Remote(d) => d.clone(),
        }
    }

    /// Where chunks stored one file per chunk by earlier releases are (a directory store only).
    pub fn loose_root(&self) -> Option<&Path> {
        match &self.place {
            Place::Dir(root) => Some(root),
            Place::Remote(_) => None,
        }
    }

    /// Where packs are written before they are sealed.
    pub fn spool_dir(&self) -> PathBuf {
        match &self.place {
            Place::Dir(root) => root.join("packs").join(".spool"),
            Place::Remote(_) => std::env::temp_dir(),
        }
    }

    /// Bytes `range` of a pack: one ranged read.
    pub async fn read(&self, id: &PackId, range: Range<u64>) -> Result<Bytes, StorageError> {
        self.read_key(&pack_key(id), range).await
    }

    async fn read_key(&self, key: &object_store::path::Path, range: Range<u64>) -> Result<Bytes, StorageError> {
        self.requests.request(Op::ReadRange);
        let bytes = self.objects.get_range(key, range).await?;
        self.requests.read(bytes.len() as u64);
        Ok(bytes)
    }

    async fn head(&self, key: &object_store::path::Path) -> Result<object_store::ObjectMeta, object_store::Error> {
        self.requests.request(Op::Head);
        self.objects.head(key).await
    }

    /// Makes a written pack durable under its key; returns its size.
    pub async fn seal(&self, pack: OpenPack) -> Result<u64, StorageError> {
        let size = match &self.place {
            Place::Dir(root) => {
                let root = root.clone();
                self.requests.request(Op::Put);
                tokio::task::spawn_blocking(move || seal_in_dir(&root, pack)).await??
            }
            Place::Remote(_) => {
                let size = pack.len;
                let file = pack.file().try_clone().map_err(StorageError::io(pack.file.path()))?;
                self.upload(&pack.id, file, size).await?;
                size
            }
        };
        self.requests.written(size);
        Ok(size)
    }

    /// Uploads `size` bytes of `file` (read from its start) as the pack `id`.
    async fn upload(&self, id: &PackId, file: File, size: u64) -> Result<(), StorageError> {
        let key = pack_key(id);
        let file = Arc::new(file);
        if size <= PART as u64 {
            let body = read_part(file, 0, size as usize).await?;
            self.requests.request(Op::Put);
            self.objects.put(&key, PutPayload::from(body)).await?;
            return Ok(());
        }
        self.requests.request(Op::Multipart);
        let upload = self.objects.put_multipart(&key).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
        let mut at = 0u64;
        while at < size {
            let len = (size - at).min(PART as u64) as usize;
            let part = match read_part(file.clone(), at, len).await {
                Ok(part) => part,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(e);
                }
            };
            if let Err(e) = writer.wait_for_capacity(1).await {
                let _ = writer.abort().await;
                return Err(e.into());
            }
            self.requests.request(Op::UploadPart);
            writer.put(part);
            at += len as u64;
        }
        writer.finish().await?;
        Ok(())
    }

    /// Copies the pack `id` from `from` unless this store has it already (moving a store).
    pub async fn copy_pack_from(&self, from: &Backend, id: &PackId) -> Result<bool, StorageError> {
        let key = pack_key(id);
        match self.head(&key).await {
            Ok(_) => return Ok(false),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let size = from.head(&key).await?.size;
        // Through a spool file, as an upload does: a pack is never held whole in memory.
        let mut pack = OpenPack::receiving(&self.spool_dir(), *id)?;
        let mut at = 0u64;
        while at < size {
            let end = (at + PART as u64).min(size);
            let bytes = from.read_key(&key, at..end).await?;
            pack.write(&bytes)?;
            at = end;
        }
        self.seal(pack).await?;
        Ok(true)
    }
}

/// An object found by [`Backend::list`]: its key (relative to the store's root or prefix), size
/// and when it was last written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    pub key: String,
    pub size: u64,
    pub modified: chrono::DateTime<chrono::Utc>,
}

impl Backend {
    /// Every object under `prefix` (`packs/`, or the whole store with `None`), one listing request
    /// per page. Garbage collection compares this with the index; a store of N packs lists in
    /// about N / 1000 requests on S3.
    pub async fn list(&self, prefix: Option<&str>) -> Result<Vec<ListedObject>, StorageError> {
        use futures::TryStreamExt;
        let prefix = prefix.map(object_store::path::Path::from);
        self.requests.request(Op::List);
        let objects: Vec<object_store::ObjectMeta> = self.objects.list(prefix.as_ref()).try_collect().await?;
        Ok(objects
            .into_iter()
            .map(|m| ListedObject { key: m.location.to_string(), size: m.size, modified: m.last_modified })
            .collect())
    }

    /// Deletes the object `key`; one that is already gone is fine (a run interrupted after the
    /// delete does it again).
    pub async fn delete_key(&self, key: &str) -> Result<(), StorageError> {
        self.requests.request(Op::Delete);
        match self.objects.delete(&object_store::path::Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The size of the pack `id`'s object, `None` if there is none.
    pub async fn pack_size(&self, id: &PackId) -> Result<Option<u64>, StorageError> {
        match self.head(&pack_key(id)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes the pack `id`'s object (see [`Backend::delete_key`]).
    pub async fn delete_pack(&self, id: &PackId) -> Result<(), StorageError> {
        self.delete_key(pack_key(id).as_ref()).await
    }
}

/// `len` bytes of `file` at `at`, read on the blocking pool into a buffer allocated here, on the
/// runtime's worker: glibc keeps freed memory in the arena of the thread that allocated it, and
/// the blocking pool has many threads, each with its own arena (a node uploading 1 GiB to S3
/// peaked at 196 MiB with the buffers allocated there; docs/SCALING.md, "Memory").
async fn read_part(file: Arc<File>, at: u64, len: usize) -> Result<Bytes, StorageError> {
    let mut buf = vec![0u8; len];
    tokio::task::spawn_blocking(move || {
        std::os::unix::fs::FileExt::read_exact_at(&*file, &mut buf, at).map_err(StorageError::io("<spool>"))?;
        Ok(Bytes::from(buf))
    })
    .await?
}

/// fsync the spool file, rename it to the pack's key, fsync the directory (and its parent when
/// the directory is new), so the pack survives a crash before anything names it.
fn seal_in_dir(root: &Path, pack: OpenPack) -> Result<u64, StorageError> {
    let target = root.join(pack_key(&pack.id).as_ref());
    let dir = target.parent().unwrap_or(root).to_path_buf();
    pack.file().sync_all().map_err(StorageError::io(pack.file.path()))?;
    let created = !dir.is_dir();
    std::fs::create_dir_all(&dir).map_err(StorageError::io(&dir))?;
    let size = pack.len;
    pack.file.persist(&target).map_err(|e| StorageError::io(&target)(e.error))?;
    sync_dir(&dir)?;
    if created {
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
    }
    Ok(size)
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(StorageError::io(dir))
}

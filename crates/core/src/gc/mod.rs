//! Garbage collection of chunks and packs (`docs/storage.md` §7), safe while agents upload and
//! download: the database decides what may go, every step is one short transaction or an
//! idempotent store request, and a pass interrupted at any point (SIGKILL included) is finished by
//! the next one.
//!
//! One pass, under the `gc` lease ([`crate::db::lease`]):
//! 1. retention ([`crate::db::retention::apply`]) per workspace drops expired versions and trash;
//! 2. [`release`]: a workspace's holds (`workspace_chunks`) on chunks no version of it references
//!    any more, and older than the grace period, are deleted, in a transaction that locks the
//!    workspace row as a commit does;
//! 3. [`sweep`]: a chunk no workspace holds is condemned (uploads stop deduplicating against it),
//!    and a grace period later its row is deleted if still unheld;
//! 4. [`packs`]: a pack no chunk row points into is retired; a pack whose live bytes fell below
//!    [`REWRITE_BELOW`] of its size is rewritten (live entries copied into a new pack, rows moved,
//!    the old one retired); a retired pack's row and object go a grace period after it retired;
//! 5. a pack's row is reserved before its object is written (`db::packs::reserve_pack`), so an
//!    object without a row is a crash's leftover: [`orphans`] older than the grace period are
//!    deleted, and so are reservations never recorded (a writer that crashed) with their objects.
//!
//! **Architecture Invariant:** garbage collection never deletes a chunk a retained version
//! references: a hold is released only inside a transaction holding the workspace's row lock
//! after rescanning the versions committed since the mark, a chunk row is deleted only while no
//! hold references it (the foreign key backs the check), and bytes leave the store only a grace
//! period after the last row that located them is gone.

pub mod orphans;
pub mod packs;
pub mod release;
pub mod sweep;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::db::lease;
use crate::db::{Db, DbError};
use crate::storage::{ChunkStore, StorageError};

/// A pack whose live bytes are below this fraction of its size is rewritten. At 0.5 each byte
/// copied frees at least one byte; measured in `docs/storage.md` §7.
pub const REWRITE_BELOW: f64 = 0.5;

/// How long a runner's lease lasts unless renewed; it is renewed every third of that.
pub const LEASE_TTL: Duration = Duration::from_secs(60);

/// How a pass runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Nothing younger than this is released, condemned, deleted or retired, and bytes leave the
    /// store only this long after the last row locating them went (`gc_grace_secs`).
    pub grace: Duration,
    /// Report what would be reclaimed now, change nothing.
    pub dry_run: bool,
    /// Live fraction under which a pack is rewritten.
    pub rewrite_below: f64,
    /// The server's retention defaults (`keep_days`, `trash_days`; a workspace's own setting
    /// wins): `None` skips retention. A dry run skips it too.
    pub retention: Option<crate::db::retention::Policy>,
}

impl Settings {
    pub fn new(grace: Duration) -> Settings {
        Settings { grace, dry_run: false, rewrite_below: REWRITE_BELOW, retention: None }
    }
}

/// What one pass did (or, dry, would do now).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub workspaces: u64,
    /// Versions retention dropped.
    pub versions_dropped: u64,
    /// Workspace holds released.
    pub holds_released: u64,
    pub chunks_condemned: u64,
    /// Chunk rows deleted (their bytes are dead in their packs).
    pub chunks_deleted: u64,
    pub packs_retired: u64,
    pub packs_rewritten: u64,
    /// Live bytes copied by rewrites.
    pub bytes_copied: u64,
    /// Bytes of the packs rewrites wrote (the copied entries and each pack's header).
    pub bytes_written: u64,
    /// Objects deleted from the store: retired packs, orphans, loose chunk files.
    pub objects_deleted: u64,
    /// Their bytes.
    pub bytes_reclaimed: u64,
    /// Of the objects, orphans (no row, older than the grace period).
    pub orphans_deleted: u64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "objects deleted {} ({} bytes; {} orphans), packs rewritten {} ({} bytes copied, {} written), packs retired {}, \
             versions dropped {}, holds released {}, chunks condemned {}, chunk rows deleted {}, workspaces {}",
            self.objects_deleted,
            self.bytes_reclaimed,
            self.orphans_deleted,
            self.packs_rewritten,
            self.bytes_copied,
            self.bytes_written,
            self.packs_retired,
            self.versions_dropped,
            self.holds_released,
            self.chunks_condemned,
            self.chunks_deleted,
            self.workspaces
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Another runner holds the lease.
    #[error("another garbage collector ({holder}) holds the lease until {until}")]
    Busy { holder: String, until: DateTime<Utc> },
    /// The lease could not be renewed: the pass stopped before its next change.
    #[error("the garbage collector's lease was lost; the pass stopped")]
    LeaseLost,
}

/// A pass in progress: what it works with, and the lease it must still hold before each change.
#[derive(Clone)]
pub struct Pass {
    pub(crate) db: Db,
    pub(crate) store: ChunkStore,
    pub(crate) settings: Settings,
    /// Rows and objects older than this may be collected.
    pub(crate) cutoff: chrono::NaiveDateTime,
    pub(crate) now: DateTime<Utc>,
    lost: Arc<AtomicBool>,
}

impl Pass {
    /// Errors once the lease is lost: called before every change.
    pub(crate) fn check(&self) -> Result<(), GcError> {
        if self.lost.load(Ordering::Relaxed) {
            return Err(GcError::LeaseLost);
        }
        Ok(())
    }
}

/// Runs one full pass if this process can take the lease (see the module doc). `holder` names the
/// runner ([`lease::holder_name`]).
pub async fn run(db: &Db, store: &ChunkStore, settings: &Settings, holder: &str) -> Result<Report, GcError> {
    let ttl = chrono::Duration::from_std(LEASE_TTL).unwrap_or(chrono::Duration::seconds(60));
    let me = holder.to_owned();
    let got = db.write(move |c| lease::acquire(c, lease::GC, &me, Utc::now(), ttl)).await?;
    if got.holder != holder {
        return Err(GcError::Busy { holder: got.holder, until: got.expires_at });
    }
    let lost = Arc::new(AtomicBool::new(false));
    // Aborted when the pass returns or is dropped (a daemon stopping mid-pass): it never
    // outlives the pass.
    let renewer = AbortOnDrop(tokio::spawn(renew(db.clone(), holder.to_owned(), ttl, lost.clone())));
    let now = Utc::now();
    let grace = chrono::Duration::from_std(settings.grace).unwrap_or(chrono::Duration::days(1));
    let pass = Pass {
        db: db.clone(),
        store: store.clone(),
        settings: settings.clone(),
        cutoff: whole_seconds(now - grace),
        now,
        lost,
    };
    let result = run_pass(&pass).await;
    drop(renewer);
    let me = holder.to_owned();
    if let Err(e) = db.write(move |c| lease::release(c, lease::GC, &me)).await {
        tracing::warn!(error = %e, "could not give back the gc lease; it expires by itself");
    }
    result
}

/// A task aborted when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Renews the lease every third of its lifetime; flags `lost` if another runner has it.
async fn renew(db: Db, holder: String, ttl: chrono::Duration, lost: Arc<AtomicBool>) {
    let every = LEASE_TTL / 3;
    loop {
        tokio::time::sleep(every).await;
        let me = holder.clone();
        match db.write(move |c| lease::acquire(c, lease::GC, &me, Utc::now(), ttl)).await {
            Ok(h) if h.holder == holder => {}
            Ok(h) => {
                tracing::error!(holder = %h.holder, "the gc lease was taken over; stopping");
                lost.store(true, Ordering::Relaxed);
                return;
            }
            // The database is away: the next renewal may work, the lease has time left.
            Err(e) => tracing::warn!(error = %e, "renewing the gc lease failed"),
        }
    }
}

async fn run_pass(pass: &Pass) -> Result<Report, GcError> {
    let mut report = Report::default();
    let workspaces = pass.db.run(release::workspaces).await?;
    report.workspaces = workspaces.len() as u64;
    if let (Some(policy), false) = (pass.settings.retention, pass.settings.dry_run) {
        for &ws in &workspaces {
            pass.check()?;
            let now = pass.now;
            // Through the pool, a short transaction per batch: on SQLite each waits its turn
            // behind the process's other writers instead of meeting them as "database busy".
            let db = pass.db.clone();
            let pruned = tokio::task::spawn_blocking(move || {
                let policy = db.run_blocking(|c| crate::db::retention::policy(c, ws, &policy))?;
                crate::db::retention::apply_db(&db, ws, &policy, now)
            })
            .await
            .map_err(|e| crate::db::DbError::Task(e.to_string()))??;
            report.versions_dropped += pruned.versions;
        }
    }
    for &ws in &workspaces {
        report.holds_released += release::release(pass, ws).await?;
    }
    report.chunks_condemned = sweep::condemn(pass).await?;
    let (deleted, loose) = sweep::delete_condemned(pass).await?;
    report.chunks_deleted = deleted;
    let gone = sweep::remove_loose(pass, loose).await?;
    report.objects_deleted += gone.0;
    report.bytes_reclaimed += gone.1;
    report.packs_retired = packs::retire_empty(pass).await?;
    let (rewritten, copied, written) = packs::rewrite(pass).await?;
    report.packs_rewritten = rewritten;
    report.bytes_copied = copied;
    report.bytes_written = written;
    let (objects, bytes) = packs::delete_retired(pass).await?;
    report.objects_deleted += objects;
    report.bytes_reclaimed += bytes;
    let (objects, bytes) = packs::delete_abandoned(pass).await?;
    report.objects_deleted += objects;
    report.orphans_deleted += objects;
    report.bytes_reclaimed += bytes;
    let (orphans, bytes) = orphans::delete(pass).await?;
    report.orphans_deleted += orphans;
    report.objects_deleted += orphans;
    report.bytes_reclaimed += bytes;
    tracing::info!(dry_run = pass.settings.dry_run, %report, "garbage collection pass done");
    Ok(report)
}

/// `t` in whole seconds, as DATETIME columns keep it.
fn whole_seconds(t: DateTime<Utc>) -> chrono::NaiveDateTime {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t).naive_utc()
}

/// Hashes per `IN (...)` list.
pub(crate) const IN_BATCH: usize = 500;

/// Waits for the lease and runs one pass (`filesync-http gc`): a runner that holds it finishes
/// first; one that crashed lets go when its lease expires.
pub async fn run_when_free(db: &Db, store: &ChunkStore, settings: &Settings, holder: &str) -> Result<Report, GcError> {
    loop {
        match run(db, store, settings, holder).await {
            Err(GcError::Busy { holder: other, until }) => {
                tracing::info!(holder = %other, %until, "another garbage collector runs; waiting");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            other => return other,
        }
    }
}

#[cfg(all(test, feature = "testing", feature = "ingest"))]
mod tests;

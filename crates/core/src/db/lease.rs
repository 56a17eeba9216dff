//! The garbage collector's lease: one runner at a time across every process sharing the
//! database (`gc_leases`, one row per lease name). A runner takes the lease when it is free or
//! expired, renews it while it works, and gives it back at the end; a runner that crashed holds it
//! until it expires. A holder names its host and process (`host:pid:random`), so a runner on the
//! same host takes over at once a lease whose process is gone (Linux: no `/proc/PID`).

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use super::schema::gc_leases;
use super::{DbConn, DbError};

/// The garbage collector's lease.
pub const GC: &str = "gc";

/// Who holds a lease now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub holder: String,
    pub expires_at: DateTime<Utc>,
}

/// A name for this runner: `host:pid:random`.
pub fn holder_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}:{:08x}", std::process::id(), rand::random::<u32>())
}

/// True if `holder` names a process on this host that no longer runs.
fn is_dead_local(holder: &str) -> bool {
    let mut parts = holder.rsplitn(3, ':');
    let (_, pid, host) = (parts.next(), parts.next(), parts.next());
    let (Some(pid), Some(host)) = (pid, host) else { return false };
    let Ok(pid) = pid.parse::<u32>() else { return false };
    let ours = holder_name();
    let our_host = ours.rsplitn(3, ':').nth(2).unwrap_or("");
    host == our_host
        && pid != std::process::id()
        && std::path::Path::new("/proc/self").exists()
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn naive(t: DateTime<Utc>) -> chrono::NaiveDateTime {
    // Whole seconds, as every DATETIME column here.
    chrono::DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t).naive_utc()
}

/// Takes (or renews, for its holder) the lease `name` until `now + ttl` if it is free, expired,
/// already `holder`'s, or held by a dead process of this host. Returns who holds it afterwards:
/// `holder` on success. One conditional UPDATE decides (written first, so that on SQLite the
/// transaction is a writer from its start): two runners racing cannot both win.
pub fn acquire(
    conn: &mut DbConn,
    name: &str,
    holder: &str,
    now: DateTime<Utc>,
    ttl: chrono::Duration,
) -> Result<Holder, DbError> {
    let expires = naive(now + ttl);
    let taken =
        diesel::update(gc_leases::table.find(name).filter(
            gc_leases::expires_at.lt(naive(now)).or(gc_leases::holder.eq(holder)).or(gc_leases::holder.eq("")),
        ))
        .set((gc_leases::holder.eq(holder), gc_leases::expires_at.eq(expires)))
        .execute(conn)?;
    let read = |conn: &mut DbConn| -> Result<(String, chrono::NaiveDateTime), DbError> {
        gc_leases::table
            .find(name)
            .select((gc_leases::holder, gc_leases::expires_at))
            .first(conn)
            .optional()?
            .ok_or_else(|| DbError::Task(format!("no lease row {name:?}; migrations not run?")))
    };
    let (mut was, mut until) = read(conn)?;
    if taken == 0 && is_dead_local(&was) {
        tracing::warn!(lease = name, dead = %was, "taking over the lease of a runner that is gone");
        diesel::update(gc_leases::table.find(name).filter(gc_leases::holder.eq(&was)))
            .set((gc_leases::holder.eq(holder), gc_leases::expires_at.eq(expires)))
            .execute(conn)?;
        (was, until) = read(conn)?;
    }
    Ok(Holder { holder: was, expires_at: until.and_utc() })
}

/// Gives the lease back if `holder` still holds it.
pub fn release(conn: &mut DbConn, name: &str, holder: &str) -> Result<(), DbError> {
    diesel::update(gc_leases::table.find(name).filter(gc_leases::holder.eq(holder)))
        .set((gc_leases::holder.eq(""), gc_leases::expires_at.eq(naive(DateTime::<Utc>::UNIX_EPOCH))))
        .execute(conn)?;
    Ok(())
}

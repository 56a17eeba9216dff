//! What every system under test offers the scenarios: a folder A where files
//! are written and a folder B where they must show up. Scenarios are written
//! once against this trait and run unchanged on filesync and on the peers.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::data;
use crate::procs::wait_for;

/// Bytes a transfer put on the wire, as the system (or the kernel) counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wire {
    /// Bytes A sent.
    pub sent_by_a: u64,
    /// Bytes B received.
    pub received_by_b: u64,
    /// Every byte either side sent, in both directions.
    pub total: u64,
}

impl Wire {
    pub fn since(self, before: Wire) -> Wire {
        Wire {
            sent_by_a: self.sent_by_a.saturating_sub(before.sent_by_a),
            received_by_b: self.received_by_b.saturating_sub(before.received_by_b),
            total: self.total.saturating_sub(before.total),
        }
    }

    /// A sample's bytes: what [`Mirror::push`] reported (tools run on demand), else the counters' difference.
    pub fn of_sample(pushed: Option<Wire>, before: Option<Wire>, after: Option<Wire>) -> Option<Wire> {
        match (pushed, before, after) {
            (Some(w), _, _) => Some(w),
            (None, Some(b), Some(a)) => Some(a.since(b)),
            _ => None,
        }
    }
}

/// Requests a system made to its chunk store so far, by kind (filesync's
/// `filesync_storage_requests_total{op}`, summed over its nodes).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreRequests {
    pub by_op: BTreeMap<String, f64>,
}

impl StoreRequests {
    pub fn since(&self, before: &StoreRequests) -> StoreRequests {
        let by_op = self
            .by_op
            .iter()
            .map(|(op, n)| (op.clone(), (n - before.by_op.get(op).copied().unwrap_or(0.0)).max(0.0)))
            .collect();
        StoreRequests { by_op }
    }

    /// Every request of every kind.
    pub fn total(&self) -> f64 {
        self.by_op.values().sum()
    }

    /// Objects written: single PUTs (a directory's fsync + rename) and completed multipart uploads.
    pub fn objects_written(&self) -> f64 {
        ["put", "multipart"].iter().filter_map(|op| self.by_op.get(*op)).sum()
    }

    /// The counts scaled by `factor`, for "per GiB" figures.
    pub fn scaled(&self, factor: f64) -> StoreRequests {
        StoreRequests { by_op: self.by_op.iter().map(|(op, n)| (op.clone(), n * factor)).collect() }
    }

    /// "put 64 · read_range 260": the kinds that were used.
    pub fn breakdown(&self) -> String {
        let used: Vec<String> = self
            .by_op
            .iter()
            .filter(|(_, n)| **n > 0.0)
            .map(|(op, n)| format!("{op} {}", crate::report::group(*n)))
            .collect();
        if used.is_empty() {
            "none".into()
        } else {
            used.join(" · ")
        }
    }
}

pub trait Mirror {
    /// The name in the report.
    fn name(&self) -> String;

    /// A's folder: scenarios write here.
    fn source(&self) -> &Path;

    /// B's folder: scenarios wait for the result here.
    fn target(&self) -> &Path;

    /// Called right after a change in A. Tools run on demand (rsync) transfer here and return the bytes they
    /// report; systems that watch their folder do nothing.
    fn push(&mut self) -> Result<Option<Wire>> {
        Ok(None)
    }

    /// Bytes on the wire so far, for systems that count them continuously.
    fn wire(&mut self) -> Result<Option<Wire>> {
        Ok(None)
    }

    /// Where the byte counts come from, for the report.
    fn wire_source(&self) -> &'static str {
        ""
    }

    /// Requests made to the system's chunk store so far, for systems that have one and count them.
    fn store_requests(&mut self) -> Result<Option<StoreRequests>> {
        Ok(None)
    }

    /// The processes whose memory the report shows: (role, pid).
    fn processes(&self) -> Vec<(String, u32)>;

    /// Fails if a process of the system has died.
    fn ensure_running(&mut self) -> Result<()>;

    /// Waits until the system has nothing left to do, so the next sample starts clean.
    fn settle(&mut self) -> Result<()> {
        Ok(())
    }

    /// Removes `rel` from A and waits until it is gone from B too.
    fn clear(&mut self, rel: &Path) -> Result<()> {
        data::remove(&self.source().join(rel))?;
        self.push()?;
        let gone = self.target().join(rel);
        wait_until(self, "the removal to reach B", POLL_SLOW, || data::is_gone(&gone).then_some(()))?;
        self.settle()
    }
}

/// Polls `probe` every `every` until it yields, for at most [`TRANSFER_TIMEOUT`], failing as soon as a process
/// of the system dies (checked every 100 ms, not every poll).
pub fn wait_until<M: Mirror + ?Sized, T>(
    m: &mut M,
    what: &str,
    every: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Result<T> {
    let what = format!("{what} ({})", m.name());
    let mut checked = Instant::now();
    wait_for(&what, TRANSFER_TIMEOUT, every, || {
        if checked.elapsed() >= Duration::from_millis(100) {
            m.ensure_running()?;
            checked = Instant::now();
        }
        Ok(probe())
    })
}

/// How long any single transfer may take before the sample counts as failed.
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);
/// How often B is polled when latency matters.
pub const POLL_FAST: Duration = Duration::from_millis(1);
/// How often B is polled for bulk transfers (each poll stats many files or hashes).
pub const POLL_SLOW: Duration = Duration::from_millis(50);

//! Scenario 3: 4 KiB overwritten in the middle of an already-synced large
//! file: the bytes each side put on the wire, the wall time and, for a system
//! with a chunk store, the requests each edit made to it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};

use crate::data;
use crate::mirror::{wait_until, Mirror, StoreRequests, Wire, POLL_FAST};
use crate::report::{Row, Unit};
use crate::scenarios::large_file::{size_label, store_rows, wait_until_copied};
use crate::scenarios::SizedRuns;
use crate::stats::Summary;

pub const WALL: &str = "4 KiB edit: wall time";
pub const TOTAL: &str = "4 KiB edit: bytes on the wire, both ways";
pub const SENT: &str = "4 KiB edit: bytes sent by A";
pub const RECEIVED: &str = "4 KiB edit: bytes received by B";
pub const STORE_REQUESTS: &str = "4 KiB edit: chunk-store requests";
pub const STORE_OBJECTS: &str = "4 KiB edit: chunk-store objects written";

const PATCH: usize = 4096;

pub fn run(m: &mut dyn Mirror, stage: &Path, o: SizedRuns) -> Result<Vec<Row>> {
    let name = PathBuf::from("edited.bin");
    let (source, target) = (m.source().join(&name), m.target().join(&name));
    let staged = stage.join("edited.bin");
    let mut rng = data::rng(o.seed);
    data::write_random_file(&staged, o.size, &mut rng)?;
    let expected = data::hash_file(&staged)?;
    std::fs::rename(&staged, &source)?;
    m.push()?;
    wait_until_copied(m, &target, o.size, expected, Instant::now())?;
    m.settle()?;

    let (mut secs, mut total, mut sent, mut received) = (vec![], vec![], vec![], vec![]);
    let mut store: Vec<StoreRequests> = Vec::new();
    for run in 0..o.runs {
        // A different place each sample, near the middle, not aligned to any block size.
        let offset = o.size / 2 + run as u64 * 3 * PATCH as u64 + 1234;
        let patch = data::random_bytes(&mut rng, PATCH);
        let before = m.wire()?;
        let requests_before = m.store_requests()?;
        let t0 = Instant::now();
        data::patch_file(&source, offset, &patch)?;
        let pushed = m.push()?;
        wait_until(m, "the edit to reach B", POLL_FAST, || {
            data::has_patch(&target, o.size, offset, &patch).then_some(())
        })?;
        secs.push(t0.elapsed().as_secs_f64());
        m.settle()?;
        if let (Some(before), Some(after)) = (requests_before, m.store_requests()?) {
            store.push(after.since(&before));
        }
        if let Some(w) = Wire::of_sample(pushed, before, m.wire()?) {
            total.push(w.total as f64);
            sent.push(w.sent_by_a as f64);
            received.push(w.received_by_b as f64);
        }
        if data::hash_file(&target)? != data::hash_file(&source)? {
            bail!("after the edit, B's file differs from A's");
        }
        m.ensure_running()?;
    }
    m.clear(&name)?;
    let system = m.name();
    let mut rows = Vec::new();
    if let Some(t) = Summary::of(&secs) {
        rows.push(Row::measured(WALL, &system, t, Unit::Seconds, format!("in a {} file", size_label(o.size))));
    }
    let source_note = m.wire_source();
    for (test, samples) in [(TOTAL, &total), (SENT, &sent), (RECEIVED, &received)] {
        rows.push(match Summary::of(samples) {
            Some(s) => Row::measured(test, &system, s, Unit::Bytes, source_note),
            None => Row::not_available(test, &system, "the system exposes no byte counts"),
        });
    }
    rows.extend(store_rows(&system, &store, STORE_REQUESTS, STORE_OBJECTS, "per edit"));
    Ok(rows)
}

//! Scenario 2: a large new file of random bytes, A → B complete: wall time,
//! throughput, the peak memory of every process of the system and, for a
//! system with a chunk store, the requests it made to it per GiB.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::data;
use crate::mirror::{wait_until, Mirror, StoreRequests, POLL_SLOW};
use crate::procs::{memory, reset_peak};
use crate::report::{Row, Unit};
use crate::scenarios::SizedRuns;
use crate::stats::Summary;

pub const WALL: &str = "new file: wall time";
pub const RATE: &str = "new file: throughput";
pub const PEAK: &str = "new file: peak RSS";
pub const STORE_REQUESTS: &str = "new file: chunk-store requests per GiB";
pub const STORE_OBJECTS: &str = "new file: chunk-store objects written per GiB";

pub fn run(m: &mut dyn Mirror, stage: &Path, o: SizedRuns) -> Result<Vec<Row>> {
    let name = PathBuf::from("large.bin");
    let mut secs = Vec::new();
    // Per process: (RSS before the first sample, highest peak over the samples).
    let mut mem: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    // Chunk-store requests of each sample, per GiB.
    let mut store: Vec<StoreRequests> = Vec::new();
    for run in 0..o.runs {
        // New random bytes every sample, so nothing can be deduplicated against an earlier one.
        let staged = stage.join(format!("large-{run}.bin"));
        data::write_random_file(&staged, o.size, &mut data::rng(o.seed + run as u64))?;
        let expected = data::hash_file(&staged)?;
        let mut peaks_reset = true;
        for (role, pid) in m.processes() {
            let before = memory(pid)?.rss_kib;
            mem.entry(role).or_insert((before, 0));
            peaks_reset &= reset_peak(pid);
        }
        let requests_before = m.store_requests()?;
        let t0 = Instant::now();
        std::fs::rename(&staged, m.source().join(&name)).context("moving the staged file into A")?;
        m.push()?;
        let target = m.target().join(&name);
        let secs_taken = wait_until_copied(m, &target, o.size, expected, t0)?;
        secs.push(secs_taken);
        for (role, pid) in m.processes() {
            let peak = memory(pid)?.peak_kib;
            let e = mem.entry(role).or_insert((0, 0));
            e.1 = e.1.max(peak);
        }
        m.ensure_running()?;
        m.settle()?;
        if let (Some(before), Some(after)) = (requests_before, m.store_requests()?) {
            store.push(after.since(&before).scaled(data::GIB as f64 / o.size as f64));
        }
        m.clear(&name)?;
        if !peaks_reset {
            eprintln!("note: could not reset peak RSS; peaks are since process start");
        }
    }
    let system = m.name();
    let mut rows = Vec::new();
    if let Some(t) = Summary::of(&secs) {
        let mib = o.size as f64 / data::MIB as f64;
        rows.push(Row::measured(WALL, &system, t, Unit::Seconds, format!("{} random bytes", size_label(o.size))));
        rows.push(Row::measured(RATE, &system, t.map(|s| mib / s), Unit::MibPerSec, ""));
    }
    for (role, (before, peak)) in mem {
        let value = Summary { median: peak as f64, min: peak as f64, max: peak as f64, n: o.runs };
        let detail = format!("{role}: {} KiB before the first sample; highest peak over the samples", before);
        rows.push(Row::measured(PEAK, &format!("{system}: {role}"), value, Unit::Kib, detail));
    }
    rows.extend(store_rows(&system, &store, STORE_REQUESTS, STORE_OBJECTS, "per GiB"));
    Ok(rows)
}

/// The chunk-store rows of a scenario from per-sample request counts: every request, and the objects
/// written; the details show the median sample's requests by kind. None for a system without counts.
pub fn store_rows(system: &str, samples: &[StoreRequests], requests: &str, objects: &str, per: &str) -> Vec<Row> {
    let totals: Vec<f64> = samples.iter().map(StoreRequests::total).collect();
    let written: Vec<f64> = samples.iter().map(StoreRequests::objects_written).collect();
    let mut by_total: Vec<&StoreRequests> = samples.iter().collect();
    by_total.sort_by(|a, b| a.total().total_cmp(&b.total()));
    let detail = by_total
        .get(by_total.len() / 2)
        .map(|s| format!("{per}, by kind (median sample): {}", s.breakdown()))
        .unwrap_or_default();
    let mut rows = Vec::new();
    rows.extend(Row::from_samples(requests, system, &totals, Unit::Count, &detail));
    rows.extend(Row::from_samples(objects, system, &written, Unit::Count, per));
    rows
}

/// Seconds from `t0` until `path` holds the expected bytes. The hash is only checked once the size is right,
/// and a sample counts from the size check that led to a matching hash.
pub fn wait_until_copied(
    m: &mut dyn Mirror,
    path: &Path,
    size: u64,
    expected: blake3::Hash,
    t0: Instant,
) -> Result<f64> {
    wait_until(m, "the whole file to reach B", POLL_SLOW / 5, || {
        if !std::fs::metadata(path).is_ok_and(|md| md.len() == size) {
            return None;
        }
        let at = t0.elapsed().as_secs_f64();
        (data::hash_file(path).ok() == Some(expected)).then_some(at)
    })
}

pub fn size_label(size: u64) -> String {
    match size {
        s if s >= data::GIB && s % data::GIB == 0 => format!("{} GiB", s / data::GIB),
        s if s >= data::MIB && s % data::MIB == 0 => format!("{} MiB", s / data::MIB),
        s if s >= data::KIB && s % data::KIB == 0 => format!("{} KiB", s / data::KIB),
        s => format!("{s} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requests(pairs: &[(&str, f64)]) -> StoreRequests {
        StoreRequests { by_op: pairs.iter().map(|(op, n)| (op.to_string(), *n)).collect() }
    }

    /// A sample's requests are the nodes' counters' difference, scaled per GiB; the rows show every
    /// request and the objects written, with the median sample's kinds in the details.
    #[test]
    fn chunk_store_rows_count_requests_and_objects_per_gib() {
        let before = requests(&[("put", 3.0), ("read_range", 10.0)]);
        let after = requests(&[("put", 4.0), ("multipart", 1.0), ("upload_part", 2.0), ("read_range", 15.0)]);
        let sample = after.since(&before).scaled(4.0);
        assert_eq!(sample.objects_written(), 8.0);
        assert_eq!(sample.total(), 36.0);
        assert_eq!(sample.breakdown(), "multipart 4 · put 4 · read_range 20 · upload_part 8");
        let rows = store_rows("filesync", &[sample], STORE_REQUESTS, STORE_OBJECTS, "per GiB");
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].test.as_str(), rows[1].test.as_str()), (STORE_REQUESTS, STORE_OBJECTS));
        assert!(
            matches!(rows[0].outcome, crate::report::Outcome::Measured { value, unit: Unit::Count } if value.median == 36.0)
        );
        assert!(matches!(rows[1].outcome, crate::report::Outcome::Measured { value, .. } if value.median == 8.0));
        assert!(rows[0].detail.ends_with("read_range 20 · upload_part 8"), "{}", rows[0].detail);
        assert!(store_rows("rsync", &[], STORE_REQUESTS, STORE_OBJECTS, "per GiB").is_empty());
    }
}

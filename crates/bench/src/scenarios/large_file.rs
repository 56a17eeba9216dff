//! Scenario 2: a large new file of random bytes, A → B complete: wall time,
//! throughput and the peak memory of every process of the system.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::data;
use crate::mirror::{wait_until, Mirror, POLL_SLOW};
use crate::procs::{memory, reset_peak};
use crate::report::{Row, Unit};
use crate::scenarios::SizedRuns;
use crate::stats::Summary;

pub const WALL: &str = "new file: wall time";
pub const RATE: &str = "new file: throughput";
pub const PEAK: &str = "new file: peak RSS";

pub fn run(m: &mut dyn Mirror, stage: &Path, o: SizedRuns) -> Result<Vec<Row>> {
    let name = PathBuf::from("large.bin");
    let mut secs = Vec::new();
    // Per process: (RSS before the first sample, highest peak over the samples).
    let mut mem: BTreeMap<String, (u64, u64)> = BTreeMap::new();
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
    Ok(rows)
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

//! Scenario 1: a 4 KiB file written and closed on A until the identical file
//! is in place on B; then an edit of each file, then a delete of each.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;
use rand::Rng;

use crate::data;
use crate::mirror::{wait_until, Mirror, POLL_FAST};
use crate::report::{Row, Unit};
use crate::stats::{percentile, sorted, Summary};

pub const CREATE_P50: &str = "create 4 KiB: p50";
pub const CREATE_P99: &str = "create 4 KiB: p99";
pub const EDIT_P50: &str = "edit 4 KiB: p50";
pub const EDIT_P99: &str = "edit 4 KiB: p99";
pub const DELETE_P50: &str = "delete: p50";
pub const DELETE_P99: &str = "delete: p99";
pub const TESTS: [&str; 6] = [CREATE_P50, CREATE_P99, EDIT_P50, EDIT_P99, DELETE_P50, DELETE_P99];

const SIZE: usize = 4096;

#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Writes per series (create, edit, delete each).
    pub writes: usize,
    /// Before each write, a pause drawn uniformly from zero to this, so writes land at every phase of any
    /// timer the system runs.
    pub gap_max: Duration,
    pub seed: u64,
}

pub fn run(m: &mut dyn Mirror, o: Options) -> Result<Vec<Row>> {
    let mut rng = data::rng(o.seed);
    let names: Vec<PathBuf> = (0..o.writes).map(|i| PathBuf::from(format!("lat-{i:05}.bin"))).collect();
    let pause = |rng: &mut rand::rngs::StdRng| {
        let ms = rng.random_range(0..=o.gap_max.as_millis() as u64);
        std::thread::sleep(Duration::from_millis(ms));
    };
    // A warm-up write, not counted: the first change can pay for connections and caches.
    let warm = PathBuf::from("lat-warm-up.bin");
    let body = data::random_bytes(&mut rng, SIZE);
    time_write(m, &warm, &body)?;
    m.clear(&warm)?;

    let mut create = Vec::new();
    for name in &names {
        pause(&mut rng);
        let body = data::random_bytes(&mut rng, SIZE);
        create.push(time_write(m, name, &body)?);
    }
    let mut edit = Vec::new();
    for name in &names {
        pause(&mut rng);
        let body = data::random_bytes(&mut rng, SIZE);
        edit.push(time_write(m, name, &body)?);
    }
    let mut delete = Vec::new();
    for name in &names {
        pause(&mut rng);
        let t0 = Instant::now();
        std::fs::remove_file(m.source().join(name))?;
        m.push()?;
        let on_b = m.target().join(name);
        wait_until(m, "the delete to reach B", POLL_FAST, || data::is_gone(&on_b).then_some(()))?;
        delete.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    m.ensure_running()?;
    m.settle()?;
    let gap = format!("pause before each write uniform 0–{} ms", o.gap_max.as_millis());
    let mut rows = Vec::new();
    for ((p50, p99), samples) in [(CREATE_P50, CREATE_P99), (EDIT_P50, EDIT_P99), (DELETE_P50, DELETE_P99)]
        .into_iter()
        .zip([create, edit, delete])
    {
        rows.extend(percentile_rows(p50, p99, &m.name(), &samples, &gap));
    }
    Ok(rows)
}

/// Writes `body` to `name` on A (the clock starts just before `open`) and waits until B has it; milliseconds.
pub fn time_write(m: &mut dyn Mirror, name: &Path, body: &[u8]) -> Result<f64> {
    let t0 = Instant::now();
    std::fs::write(m.source().join(name), body)?;
    m.push()?;
    let on_b = m.target().join(name);
    wait_until(m, "the file to reach B", POLL_FAST, || data::has_contents(&on_b, body).then_some(()))?;
    Ok(t0.elapsed().as_secs_f64() * 1e3)
}

/// A p50 row and a p99 row for one series of latencies in milliseconds.
pub fn percentile_rows(p50_test: &str, p99_test: &str, system: &str, samples: &[f64], detail: &str) -> Vec<Row> {
    let v = sorted(samples);
    let (Some(all), Some(p50), Some(p99)) = (Summary::of(&v), percentile(&v, 50.0), percentile(&v, 99.0)) else {
        return Vec::new();
    };
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let detail = format!("p50 {p50:.1} ms, p99 {p99:.1} ms, mean {mean:.1} ms; {detail}");
    vec![
        Row::measured(p50_test, system, Summary { median: p50, ..all }, Unit::Millis, detail.clone()),
        Row::measured(p99_test, system, Summary { median: p99, ..all }, Unit::Millis, detail),
    ]
}

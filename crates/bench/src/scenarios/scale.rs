//! Scenario 9: the sync agent as the workspace grows (issue #11). A tree of
//! small files grows in steps to each size; at each size the scenario measures
//! the initial sync of the step, the latency of small edits, the memory of
//! every process, the state each end keeps on disk, and the time from
//! restarting B on the in-sync tree until the next edit on A is on B.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::Rng;

use crate::data;
use crate::mirror::{wait_until, Mirror, POLL_FAST};
use crate::procs::{memory, wait_for};
use crate::report::{group, Row, Unit};
use crate::scenarios::latency::{percentile_rows, time_write};
use crate::stats::Summary;

/// What a system offers beyond [`Mirror`] for this scenario. Peers that keep no state worth comparing, or
/// whose restart is not measured, keep the defaults.
pub trait AtScale: Mirror {
    /// Bytes each end keeps on disk besides the folder (role, bytes).
    fn state_bytes(&self) -> Result<Vec<(String, u64)>> {
        Ok(Vec::new())
    }

    /// Stops B's end; false if the system does not take part in the restart figure.
    fn stop_target(&mut self) -> Result<bool> {
        Ok(false)
    }

    /// Starts B's end again on the same folder and state (after [`AtScale::stop_target`] said true).
    fn start_target(&mut self) -> Result<()> {
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Tree sizes in files, each rounded up to whole directories; measured in increasing order.
    pub sizes: Vec<usize>,
    pub per_dir: usize,
    pub file_size: usize,
    /// Timed edits at each size.
    pub edits: usize,
    /// Before each edit, a pause drawn uniformly from zero to this.
    pub gap_max: Duration,
    pub seed: u64,
}

/// The files the edits overwrite, apart from the tree so that an empty tree has something to edit.
pub const EDITED: usize = 8;
const TREE: &str = "scale";
const EDITS_DIR: &str = "scale-edits";

/// The tests the targets name (at the default largest size).
pub const EDIT_P50_1M: &str = "1,000,000 files: edit 4 KiB p50";
pub const RESTART_1M: &str = "1,000,000 files: restart B → next edit on B";

pub const EDIT_P50: &str = "edit 4 KiB p50";
pub const EDIT_P99: &str = "edit 4 KiB p99";
pub const SYNC_RATE: &str = "initial sync rate of the step";
pub const RSS: &str = "RSS";
pub const STATE: &str = "state on disk";
pub const RESTART: &str = "restart B → next edit on B";

/// The name of test `what` at tree size `n`: "100,000 files: edit 4 KiB p50".
pub fn test(n: usize, what: &str) -> String {
    format!("{} files: {what}", group(n as f64))
}

/// The sizes as measured: whole directories, increasing, each once.
pub fn sizes(o: &Options) -> Vec<usize> {
    let per_dir = o.per_dir.max(1);
    let mut v: Vec<usize> = o.sizes.iter().map(|n| n.div_ceil(per_dir) * per_dir).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Every test name of a run with these options (for rows of a system that is missing or fails).
pub fn tests(o: &Options) -> Vec<String> {
    sizes(o)
        .into_iter()
        .flat_map(|n| [EDIT_P50, EDIT_P99, SYNC_RATE, RSS, STATE, RESTART].map(|t| test(n, t)))
        .collect()
}

/// How long one step's initial sync may take: ten minutes, or 200 files/s if that is longer.
fn sync_timeout(files: usize) -> Duration {
    Duration::from_secs(600).max(Duration::from_secs((files / 200) as u64))
}

pub fn run(m: &mut dyn AtScale, stage: &Path, o: &Options) -> Result<Vec<Row>> {
    let system = m.name();
    let per_dir = o.per_dir.max(1);
    let mut rng = data::rng(o.seed);
    let mut rows = Vec::new();

    // The edited files, synced once before anything is timed.
    std::fs::create_dir_all(m.source().join(EDITS_DIR))?;
    let edited: Vec<PathBuf> = (0..EDITED).map(|i| Path::new(EDITS_DIR).join(format!("e{i}.bin"))).collect();
    for rel in &edited {
        let body = data::random_bytes(&mut rng, o.file_size);
        std::fs::write(m.source().join(rel), &body)?;
        m.push()?;
        let on_b = m.target().join(rel);
        wait_until(m, "an edited file to reach B", POLL_FAST, || data::has_contents(&on_b, &body).then_some(()))?;
    }
    std::fs::create_dir_all(m.source().join(TREE))?;
    m.push()?;
    m.settle()?;

    let mut dirs = 0;
    let mut next_edit = 0;
    for n in sizes(o) {
        // Grow the tree to n files: new directories staged, then renamed in one after the other.
        let want = n / per_dir;
        if want > dirs {
            let staged = stage.join(format!("scale-{n}"));
            data::write_tree_dirs(&staged, dirs..want, per_dir, o.file_size, &mut data::rng(o.seed + n as u64))?;
            let added = (want - dirs) * per_dir;
            let t0 = Instant::now();
            for d in dirs..want {
                let dir = format!("d{d:03}");
                std::fs::rename(staged.join(&dir), m.source().join(TREE).join(&dir))
                    .context("moving a staged directory into A")?;
            }
            m.push()?;
            let mut arrivals = data::Arrivals::of_dirs(&m.target().join(TREE), dirs..want, per_dir, o.file_size as u64);
            let every = Duration::from_millis(if added > 100_000 { 500 } else { 50 });
            let limit = sync_timeout(added);
            let took = wait_for(&format!("{added} new files to reach B ({system})"), limit, every, || {
                m.ensure_running()?;
                let arrived = arrivals.poll();
                Ok((arrived == added || t0.elapsed() > limit).then(|| (t0.elapsed(), arrived)))
            })?;
            data::remove(&staged)?;
            let (took, arrived) = took;
            let mut detail =
                format!("{added} files of {} B added to {} ({per_dir} per directory)", o.file_size, dirs * per_dir);
            if arrived < added {
                // The rate so far, said as such; the sizes after this one are not measured for it.
                detail = format!(
                    "{detail}; NOT FINISHED: {arrived} of {added} had arrived when the limit of {} s ran out",
                    limit.as_secs()
                );
            }
            let rate = arrived as f64 / took.as_secs_f64();
            rows.push(Row::measured(
                &test(n, SYNC_RATE),
                &system,
                Summary::of(&[rate]).expect("one sample"),
                Unit::FilesPerSec,
                detail,
            ));
            if arrived < added {
                eprintln!(
                    "{system}: {arrived} of {added} files reached B within {} s; not measuring larger sizes",
                    limit.as_secs()
                );
                return Ok(rows);
            }
            dirs = want;
        }
        m.settle()?;

        for (role, pid) in m.processes() {
            let mem = memory(pid)?;
            let detail = format!("{role}: VmRSS once idle at this size; peak since start {} KiB", mem.peak_kib);
            let value = Summary::of(&[mem.rss_kib as f64]).expect("one sample");
            rows.push(Row::measured(&test(n, RSS), &format!("{system}: {role}"), value, Unit::Kib, detail));
        }
        for (role, bytes) in m.state_bytes()? {
            let value = Summary::of(&[bytes as f64]).expect("one sample");
            rows.push(Row::measured(
                &test(n, STATE),
                &format!("{system}: {role}"),
                value,
                Unit::Bytes,
                "every file under its home",
            ));
        }

        // One warm-up edit, not counted, then the timed ones.
        let mut ms = Vec::new();
        for i in 0..=o.edits {
            let pause = rng.random_range(0..=o.gap_max.as_millis() as u64);
            std::thread::sleep(Duration::from_millis(pause));
            let rel = &edited[next_edit % EDITED];
            next_edit += 1;
            let body = data::random_bytes(&mut rng, o.file_size);
            let took = time_write(m, rel, &body)?;
            if i > 0 {
                ms.push(took);
            }
        }
        let detail = format!("{n} files in the tree; pause before each edit uniform 0–{} ms", o.gap_max.as_millis());
        rows.extend(percentile_rows(&test(n, EDIT_P50), &test(n, EDIT_P99), &system, &ms, &detail));
        m.settle()?;

        if m.stop_target()? {
            let t0 = Instant::now();
            m.start_target()?;
            let rel = &edited[next_edit % EDITED];
            next_edit += 1;
            let body = data::random_bytes(&mut rng, o.file_size);
            std::fs::write(m.source().join(rel), &body)?;
            m.push()?;
            let on_b = m.target().join(rel);
            wait_until(m, "the edit after B's restart to reach B", POLL_FAST, || {
                data::has_contents(&on_b, &body).then_some(())
            })?;
            let secs = t0.elapsed().as_secs_f64();
            let detail =
                "clock from starting B's agent again (after a clean stop) on the in-sync tree; A edits a file \
                          at once";
            rows.push(Row::measured(
                &test(n, RESTART),
                &system,
                Summary::of(&[secs]).expect("one sample"),
                Unit::Seconds,
                detail,
            ));
            m.settle()?;
        }
    }
    // The tree stays: this scenario runs last and the run's directory is removed with everything in it.
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_whole_directories_in_order_and_targets_name_real_tests() {
        let o = Options {
            sizes: vec![2_500, 0, 1_000_000, 2_000],
            per_dir: 1000,
            file_size: 4096,
            edits: 1,
            gap_max: Duration::ZERO,
            seed: 1,
        };
        assert_eq!(sizes(&o), vec![0, 2_000, 3_000, 1_000_000]);
        let names = tests(&o);
        assert_eq!((test(1_000_000, EDIT_P50).as_str(), test(1_000_000, RESTART).as_str()), (EDIT_P50_1M, RESTART_1M));
        assert!(names.iter().any(|t| t == EDIT_P50_1M) && names.iter().any(|t| t == RESTART_1M), "{names:?}");
        assert_eq!(names.len(), 4 * 6);
    }
}

//! Scenario 11: a synced tree of small files renamed on A, then deleted (issue #11: a directory
//! rename is a move per file and a deletion a delete per file; how long until B shows each).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::data;
use crate::mirror::{wait_until, Mirror, POLL_SLOW};
use crate::report::{Row, Unit};
use crate::scenarios::TreeRuns;
use crate::stats::Summary;

pub const RENAME: &str = "tree renamed: wall time";
pub const DELETE: &str = "tree deleted: wall time";

pub fn run(m: &mut dyn Mirror, stage: &Path, o: TreeRuns) -> Result<Vec<Row>> {
    let (name, renamed) = (PathBuf::from("tree"), PathBuf::from("tree-renamed"));
    let (per_dir, files) = (o.per_dir(), o.total_files());
    let (mut rename_secs, mut delete_secs) = (Vec::new(), Vec::new());
    for run in 0..o.runs {
        // The tree is synced first (not timed).
        let staged = stage.join(format!("rename-{run}"));
        data::write_tree(&staged, o.dirs, per_dir, o.size, &mut data::rng(o.seed + run as u64))?;
        std::fs::rename(&staged, m.source().join(&name)).context("moving the staged tree into A")?;
        m.push()?;
        let mut arrivals = data::Arrivals::new(&m.target().join(&name), o.dirs, per_dir, o.size as u64);
        wait_until(m, "the tree to reach B", POLL_SLOW, || (arrivals.poll() == files).then_some(()))?;
        m.settle()?;

        // Renamed: done when every file is on B under the new name and the old name is gone.
        let t0 = Instant::now();
        std::fs::rename(m.source().join(&name), m.source().join(&renamed)).context("renaming the tree on A")?;
        m.push()?;
        let (old_b, new_b) = (m.target().join(&name), m.target().join(&renamed));
        let mut arrivals = data::Arrivals::new(&new_b, o.dirs, per_dir, o.size as u64);
        let took = wait_until(m, "the renamed tree on B", POLL_SLOW, || {
            (arrivals.poll() == files && data::is_gone(&old_b)).then(|| t0.elapsed())
        })?;
        rename_secs.push(took.as_secs_f64());
        data::same_tree(&m.source().join(&renamed), &new_b)?;
        m.ensure_running()?;
        m.settle()?;

        // Deleted: done when the tree is gone from B.
        let t0 = Instant::now();
        data::remove(&m.source().join(&renamed))?;
        m.push()?;
        let took = wait_until(m, "the deletion on B", POLL_SLOW, || data::is_gone(&new_b).then(|| t0.elapsed()))?;
        delete_secs.push(took.as_secs_f64());
        m.ensure_running()?;
        m.settle()?;
    }
    let system = m.name();
    let detail = format!("{files} files of {} B in {} directories", o.size, o.dirs);
    let mut rows = Vec::new();
    if let Some(t) = Summary::of(&rename_secs) {
        rows.push(Row::measured(RENAME, &system, t, Unit::Seconds, detail.clone()));
    }
    if let Some(t) = Summary::of(&delete_secs) {
        rows.push(Row::measured(DELETE, &system, t, Unit::Seconds, detail));
    }
    Ok(rows)
}

//! Scenario 4: many small files in many directories, initial sync A → B.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::data;
use crate::mirror::{wait_until, Mirror, POLL_SLOW};
use crate::report::{Row, Unit};
use crate::scenarios::TreeRuns;
use crate::stats::Summary;

pub const RATE: &str = "small files: initial sync rate";
pub const WALL: &str = "small files: wall time";

pub fn run(m: &mut dyn Mirror, stage: &Path, o: TreeRuns) -> Result<Vec<Row>> {
    let name = PathBuf::from("tree");
    let (per_dir, files) = (o.per_dir(), o.total_files());
    let mut secs = Vec::new();
    for run in 0..o.runs {
        let staged = stage.join(format!("tree-{run}"));
        data::write_tree(&staged, o.dirs, per_dir, o.size, &mut data::rng(o.seed + run as u64))?;
        // One rename: the whole tree appears at once, as when a folder is moved in.
        let t0 = Instant::now();
        std::fs::rename(&staged, m.source().join(&name)).context("moving the staged tree into A")?;
        m.push()?;
        let on_b = m.target().join(&name);
        let mut arrivals = data::Arrivals::new(&on_b, o.dirs, per_dir, o.size as u64);
        let took =
            wait_until(m, "every file to reach B", POLL_SLOW, || (arrivals.poll() == files).then(|| t0.elapsed()))?;
        secs.push(took.as_secs_f64());
        data::same_tree(&m.source().join(&name), &on_b)?;
        m.ensure_running()?;
        m.settle()?;
        m.clear(&name)?;
    }
    let system = m.name();
    let Some(t) = Summary::of(&secs) else { return Ok(Vec::new()) };
    let detail = format!("{files} files of {} B in {} directories", o.size, o.dirs);
    Ok(vec![
        Row::measured(RATE, &system, t.map(|s| files as f64 / s), Unit::FilesPerSec, detail.clone()),
        Row::measured(WALL, &system, t, Unit::Seconds, detail),
    ])
}

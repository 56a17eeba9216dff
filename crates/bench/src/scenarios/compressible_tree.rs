//! Scenario 10: a source-like tree (text that compresses 3–4 times), initial sync A → B: the bytes
//! each side put on the wire against the tree's own size, and the wall time.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::data;
use crate::mirror::{wait_until, Mirror, Wire, POLL_SLOW};
use crate::report::{Row, Unit};
use crate::scenarios::TreeRuns;
use crate::stats::Summary;

pub const TOTAL: &str = "source tree: bytes on the wire, both ways";
pub const SENT: &str = "source tree: bytes sent by A";
pub const RECEIVED: &str = "source tree: bytes received by B";
pub const WALL: &str = "source tree: wall time";
pub const TESTS: [&str; 4] = [SENT, RECEIVED, TOTAL, WALL];

pub fn run(m: &mut dyn Mirror, stage: &Path, o: TreeRuns) -> Result<Vec<Row>> {
    let name = PathBuf::from("src");
    let (per_dir, files, tree_bytes) = (o.per_dir(), o.total_files(), o.total_bytes());
    let (mut secs, mut total, mut sent, mut received) = (vec![], vec![], vec![], vec![]);
    for run in 0..o.runs {
        let staged = stage.join(format!("src-{run}"));
        data::write_text_tree(&staged, o.dirs, per_dir, o.size, &mut data::rng(o.seed + run as u64))?;
        m.settle()?;
        let before = m.wire()?;
        let t0 = Instant::now();
        std::fs::rename(&staged, m.source().join(&name)).context("moving the staged tree into A")?;
        let pushed = m.push()?;
        let on_b = m.target().join(&name);
        let mut arrivals = data::Arrivals::new(&on_b, o.dirs, per_dir, o.size as u64);
        let took =
            wait_until(m, "every file to reach B", POLL_SLOW, || (arrivals.poll() == files).then(|| t0.elapsed()))?;
        secs.push(took.as_secs_f64());
        // Counted once both ends are idle: acknowledgements and index updates after the last file count too.
        m.settle()?;
        if let Some(w) = Wire::of_sample(pushed, before, m.wire()?) {
            total.push(w.total as f64);
            sent.push(w.sent_by_a as f64);
            received.push(w.received_by_b as f64);
        }
        data::same_tree(&m.source().join(&name), &on_b)?;
        m.ensure_running()?;
        m.clear(&name)?;
    }
    let system = m.name();
    let mut rows = Vec::new();
    let source_note = m.wire_source();
    for (test, samples) in [(SENT, &sent), (RECEIVED, &received), (TOTAL, &total)] {
        rows.push(match Summary::of(samples) {
            Some(s) => {
                let share = s.median / tree_bytes as f64 * 100.0;
                let detail =
                    format!("{share:.0} % of the tree's {} B; {source_note}", crate::report::group(tree_bytes as f64));
                Row::measured(test, &system, s, Unit::Bytes, detail)
            }
            None => Row::not_available(test, &system, "the system exposes no byte counts"),
        });
    }
    if let Some(t) = Summary::of(&secs) {
        let detail = format!("{files} files of {} B of text in {} directories", o.size, o.dirs);
        rows.push(Row::measured(WALL, &system, t, Unit::Seconds, detail));
    }
    Ok(rows)
}

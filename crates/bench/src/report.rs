//! The results of a run and their rendering as `docs/BENCHMARKS.md`: each
//! figure as median with min and max, the ratio of filesync to every peer
//! measured in the same run, and the targets of issue #6 met or missed.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::machine::Machine;
use crate::stats::Summary;

/// The system the project is about; every other system in a table is a peer.
pub const FILESYNC: &str = "filesync";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Unit {
    Millis,
    Seconds,
    Bytes,
    MibPerSec,
    FilesPerSec,
    Kib,
    ReqPerSec,
    /// A plain count (requests, objects).
    Count,
}

impl Unit {
    pub fn format(self, v: f64) -> String {
        match self {
            Unit::Millis if v < 10.0 => format!("{v:.2} ms"),
            Unit::Millis => format!("{v:.1} ms"),
            Unit::Seconds => format!("{v:.2} s"),
            Unit::Bytes => format!("{} B", group(v)),
            Unit::MibPerSec => format!("{v:.0} MiB/s"),
            Unit::FilesPerSec => format!("{} files/s", group(v)),
            Unit::Kib => format!("{} KiB", group(v)),
            Unit::ReqPerSec => format!("{} req/s", group(v)),
            Unit::Count => group(v),
        }
    }
}

/// Thousands separated by commas, rounded to a whole number.
pub fn group(v: f64) -> String {
    let n = v.round() as i64;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        out.insert(0, '-');
    }
    out
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Outcome {
    Measured {
        value: Summary,
        unit: Unit,
    },
    /// A piece needed for this figure is missing (not built, not installed, not exposed).
    NotAvailable(String),
    /// The harness or the system failed while measuring.
    Failed(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub test: String,
    pub system: String,
    pub outcome: Outcome,
    pub detail: String,
}

impl Row {
    pub fn measured(test: &str, system: &str, value: Summary, unit: Unit, detail: impl Into<String>) -> Row {
        Row {
            test: test.into(),
            system: system.into(),
            outcome: Outcome::Measured { value, unit },
            detail: detail.into(),
        }
    }

    /// A measured row from raw samples; `None` without samples.
    pub fn from_samples(test: &str, system: &str, samples: &[f64], unit: Unit, detail: &str) -> Option<Row> {
        Summary::of(samples).map(|s| Row::measured(test, system, s, unit, detail))
    }

    pub fn not_available(test: &str, system: &str, why: impl Into<String>) -> Row {
        Row {
            test: test.into(),
            system: system.into(),
            outcome: Outcome::NotAvailable(why.into()),
            detail: String::new(),
        }
    }

    pub fn failed(test: &str, system: &str, err: &anyhow::Error) -> Row {
        Row {
            test: test.into(),
            system: system.into(),
            outcome: Outcome::Failed(format!("{err:#}")),
            detail: String::new(),
        }
    }

    fn value(&self) -> Option<(Summary, Unit)> {
        match self.outcome {
            Outcome::Measured { value, unit } => Some((value, unit)),
            _ => None,
        }
    }

    pub fn is_filesync(&self) -> bool {
        self.system == FILESYNC || self.system.starts_with("filesync ")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scenario {
    pub number: u8,
    pub title: String,
    pub about: String,
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

impl Scenario {
    pub fn new(number: u8, title: &str, about: &str) -> Scenario {
        Scenario { number, title: title.into(), about: about.into(), rows: Vec::new(), notes: Vec::new() }
    }

    /// "0.52× rsync" for each peer row of the same test with the same unit.
    fn ratios(&self, row: &Row) -> String {
        let Some((mine, unit)) = row.value() else { return String::new() };
        self.rows
            .iter()
            .filter(|p| !p.is_filesync() && p.test == row.test)
            .filter_map(|p| {
                let (theirs, u) = p.value()?;
                (u == unit && theirs.median != 0.0).then(|| format!("{:.2}× {}", mine.median / theirs.median, p.system))
            })
            .collect::<Vec<_>>()
            .join(" · ")
    }
}

/// A goal from the issue, checked against the filesync row of `test` in `scenario`.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub scenario: u8,
    pub test: &'static str,
    pub goal: Goal,
    pub text: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub enum Goal {
    AtMost(f64),
    AtLeast(f64),
    /// At most `factor` times the peer's median.
    WithinPeer(f64, &'static str),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub title: String,
    pub command: String,
    pub started: String,
    pub duration_secs: f64,
    pub build: String,
    pub machine: Machine,
    pub scenarios: Vec<Scenario>,
    pub notes: Vec<String>,
    pub analysis: Option<String>,
}

impl Report {
    /// Reads reports written with `--json`.
    pub fn load(path: &std::path::Path) -> anyhow::Result<Report> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{} is not a report: {e}", path.display()))
    }

    /// This report with the scenarios of `later` in place of its own of the same number, and a note saying so.
    pub fn merge(mut self, later: Report) -> Report {
        for sc in later.scenarios {
            self.notes.push(format!(
                "Scenario {} comes from a later run: `{}` on {} ({:.0} s).",
                sc.number, later.command, later.started, later.duration_secs
            ));
            match self.scenarios.iter_mut().find(|s| s.number == sc.number) {
                Some(slot) => *slot = sc,
                None => self.scenarios.push(sc),
            }
        }
        self.scenarios.sort_by_key(|s| s.number);
        self
    }

    /// Rows that failed: a smoke run must have none.
    pub fn failures(&self) -> Vec<String> {
        self.failures_where(|_| true)
    }

    /// Rows that failed whose row `pick` selects.
    pub fn failures_where(&self, pick: impl Fn(&Row) -> bool) -> Vec<String> {
        self.rows()
            .filter_map(|(s, r)| match &r.outcome {
                Outcome::Failed(e) if pick(r) => Some(format!("{}. {} / {}: {e}", s.number, r.test, r.system)),
                _ => None,
            })
            .collect()
    }

    /// Rows that were not available, with the reason.
    pub fn unavailable(&self) -> Vec<String> {
        self.unavailable_where(|_, _| true)
    }

    /// Rows that were not available and for which `pick(system, reason)` holds.
    pub fn unavailable_where(&self, pick: impl Fn(&str, &str) -> bool) -> Vec<String> {
        self.rows()
            .filter_map(|(s, r)| match &r.outcome {
                Outcome::NotAvailable(why) if pick(&r.system, why) => {
                    Some(format!("{}. {} / {}: {why}", s.number, r.test, r.system))
                }
                _ => None,
            })
            .collect()
    }

    fn rows(&self) -> impl Iterator<Item = (&Scenario, &Row)> {
        self.scenarios.iter().flat_map(|s| s.rows.iter().map(move |r| (s, r)))
    }

    fn verdict(&self, t: &Target) -> (String, String) {
        let scenario = self.scenarios.iter().find(|s| s.number == t.scenario);
        let row = scenario.and_then(|s| s.rows.iter().find(|r| r.is_filesync() && r.test == t.test));
        let Some((mine, unit)) = row.and_then(Row::value) else {
            let why = match row.map(|r| &r.outcome) {
                Some(Outcome::Failed(_)) => "**not measured: the measurement failed** (see the scenario)",
                Some(Outcome::NotAvailable(_)) => "not available in this run (see the scenario)",
                _ => "not measured in this run",
            };
            return ("–".into(), why.into());
        };
        let got = unit.format(mine.median);
        let verdict = match t.goal {
            Goal::AtMost(limit) if mine.median <= limit => "met".to_owned(),
            Goal::AtMost(limit) => {
                format!("**missed**: {:.2}× the limit of {}", mine.median / limit, unit.format(limit))
            }
            Goal::AtLeast(floor) if mine.median >= floor => "met".to_owned(),
            Goal::AtLeast(floor) => {
                format!("**missed**: {:.0}% of the goal of {}", 100.0 * mine.median / floor, unit.format(floor))
            }
            Goal::WithinPeer(factor, peer) => {
                let theirs = scenario
                    .and_then(|s| s.rows.iter().find(|r| r.system == peer && r.test == t.test))
                    .and_then(Row::value);
                match theirs {
                    None => format!("{peer} not measured in this run"),
                    Some((p, _)) if mine.median <= factor * p.median => {
                        format!("met ({:.2}× {peer}: {})", mine.median / p.median, unit.format(p.median))
                    }
                    Some((p, _)) => format!(
                        "**missed**: {:.2}× {peer} ({}), allowed {factor}×",
                        mine.median / p.median,
                        unit.format(p.median)
                    ),
                }
            }
        };
        (got, verdict)
    }

    pub fn to_markdown(&self, targets: &[Target]) -> String {
        let mut md = String::new();
        let m = &self.machine;
        let _ = writeln!(md, "# {}\n", self.title);
        let _ = writeln!(
            md,
            "Generated by `{}` on {}; the run took {:.0} s. Do not edit by hand: run the command again. \
             The analysis at the end is kept in `bench/ANALYSIS.md`.\n",
            self.command, self.started, self.duration_secs
        );
        let _ = writeln!(md, "## Machine\n");
        let _ = writeln!(md, "- {} × {} ({} cores available), {} memory", m.cpus, m.cpu_model, m.cores, m.memory);
        let _ = writeln!(md, "- {}, kernel {}; temp files on {}", m.os, m.kernel, m.temp_fs);
        let _ = writeln!(md, "- filesync {}", self.build);
        for v in &m.versions {
            let _ = writeln!(md, "- {v}");
        }
        let _ = writeln!(
            md,
            "\nEverything runs on this one machine over 127.0.0.1: both ends of every transfer share its cores. \
             Each figure is the median of the samples with the min and max beside it; latencies show percentiles of \
             all samples. \"vs peers\" is filesync's median divided by the peer's, measured in this same run: below \
             1 is better for times, bytes and memory, above 1 is better for rates.\n"
        );
        for n in &self.notes {
            let _ = writeln!(md, "- {n}");
        }
        if !targets.is_empty() {
            let _ = writeln!(md, "\n## Targets (issues #6 and #11)\n");
            let _ = writeln!(md, "| # | Target | filesync | Verdict |\n|---|---|---|---|");
            for t in targets {
                let (got, verdict) = self.verdict(t);
                let _ = writeln!(md, "| {} | {} | {got} | {verdict} |", t.scenario, t.text);
            }
        }
        for s in &self.scenarios {
            let _ = writeln!(md, "\n## {}. {}\n\n{}\n", s.number, s.title, s.about);
            let _ = writeln!(md, "| Test | System | Result | min | max | n | vs peers | Details |");
            let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
            for r in &s.rows {
                let (result, min, max, n) = match &r.outcome {
                    Outcome::Measured { value, unit } => {
                        (unit.format(value.median), unit.format(value.min), unit.format(value.max), value.n.to_string())
                    }
                    Outcome::NotAvailable(why) => {
                        (format!("not available: {}", cell(why)), "".into(), "".into(), "".into())
                    }
                    Outcome::Failed(e) => (format!("**failed**: {}", cell(e)), "".into(), "".into(), "".into()),
                };
                let ratios = if r.is_filesync() { s.ratios(r) } else { String::new() };
                let _ = writeln!(
                    md,
                    "| {} | {} | {result} | {min} | {max} | {n} | {ratios} | {} |",
                    r.test,
                    r.system,
                    cell(&r.detail)
                );
            }
            for n in &s.notes {
                let _ = writeln!(md, "\n{n}");
            }
        }
        if let Some(a) = &self.analysis {
            let _ = writeln!(md, "\n{}", a.trim_end());
        }
        md
    }
}

/// Text safe inside a table cell: one line, no column breaks, not too long.
fn cell(s: &str) -> String {
    let one_line = s.replace('|', "/").split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 400 {
        let cut: String = one_line.chars().take(400).collect();
        format!("{cut}…")
    } else {
        one_line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(median: f64) -> Summary {
        Summary { median, min: median / 2.0, max: median * 2.0, n: 3 }
    }

    fn report(rows: Vec<Row>) -> Report {
        let mut sc = Scenario::new(2, "Large new file", "about");
        sc.rows = rows;
        Report {
            title: "Benchmarks".into(),
            command: "bench".into(),
            started: "today".into(),
            duration_secs: 1.0,
            build: "abc".into(),
            machine: Machine::default(),
            scenarios: vec![sc],
            notes: vec![],
            analysis: None,
        }
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(group(1234567.4), "1,234,567");
        assert_eq!(group(999.0), "999");
        assert_eq!(group(-4096.0), "-4,096");
        assert_eq!(Unit::Bytes.format(393368.0), "393,368 B");
        assert_eq!(Unit::Count.format(13449.4), "13,449");
    }

    #[test]
    fn filesync_rows_show_the_ratio_to_each_peer_and_targets_say_by_how_much() {
        let r = report(vec![
            Row::measured("1 GiB wall time", FILESYNC, s(3.0), Unit::Seconds, ""),
            Row::measured("1 GiB wall time", "rsync", s(2.0), Unit::Seconds, ""),
            Row::measured("1 GiB wall time", "Syncthing", s(6.0), Unit::Seconds, ""),
            Row::not_available("peak RSS", FILESYNC, "node not built"),
        ]);
        let targets = [
            Target {
                scenario: 2, test: "1 GiB wall time", goal: Goal::WithinPeer(1.2, "rsync"), text: "≤ 1.2× rsync"
            },
            Target { scenario: 2, test: "1 GiB wall time", goal: Goal::AtMost(4.0), text: "≤ 4 s" },
            Target { scenario: 2, test: "peak RSS", goal: Goal::AtMost(1.0), text: "flat" },
        ];
        let md = r.to_markdown(&targets);
        assert!(md.contains("1.50× rsync · 0.50× Syncthing"), "{md}");
        assert!(md.contains("**missed**: 1.50× rsync (2.00 s), allowed 1.2×"), "{md}");
        assert!(md.contains("| 3.00 s | met |"), "{md}");
        assert!(md.contains("| flat | – | not available in this run"), "{md}");
        assert!(md.contains("not available: node not built"), "{md}");
        assert_eq!(r.unavailable().len(), 1);
        assert!(r.failures().is_empty());
    }

    #[test]
    fn a_later_run_replaces_scenarios_of_the_same_number_and_says_so() {
        let first = report(vec![Row::measured("t", "rsync", s(1.0), Unit::Seconds, "")]);
        let mut later = report(vec![Row::measured("t", "rsync", s(2.0), Unit::Seconds, "")]);
        later.command = "bench large-file".into();
        later.scenarios.push(Scenario::new(5, "Idle connections", ""));
        let json = serde_json::to_string(&first).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        let merged = back.merge(later);
        assert_eq!(merged.scenarios.iter().map(|s| s.number).collect::<Vec<_>>(), vec![2, 5]);
        assert!(matches!(merged.scenarios[0].rows[0].outcome, Outcome::Measured { value, .. } if value.median == 2.0));
        assert_eq!(merged.notes.len(), 2);
        assert!(merged.notes[0].contains("`bench large-file`"), "{:?}", merged.notes);
    }

    #[test]
    fn failures_can_be_told_apart_by_system() {
        let err = anyhow::anyhow!("gone");
        let r = report(vec![Row::failed("t", "Syncthing (delay 1 s)", &err), Row::failed("t", FILESYNC, &err)]);
        assert_eq!(r.failures_where(Row::is_filesync), vec!["2. t / filesync: gone".to_owned()]);
        assert_eq!(r.failures_where(|r| !r.is_filesync()), vec!["2. t / Syncthing (delay 1 s): gone".to_owned()]);
        assert_eq!(r.failures().len(), 2);
    }

    #[test]
    fn failures_are_listed_and_cells_stay_on_one_line() {
        let err = anyhow::anyhow!("line one\nline | two");
        let r = report(vec![Row::failed("t", "rsync", &err)]);
        assert_eq!(r.failures(), vec!["2. t / rsync: line one\nline | two".to_owned()]);
        assert!(r.to_markdown(&[]).contains("**failed**: line one line / two"));
    }
}

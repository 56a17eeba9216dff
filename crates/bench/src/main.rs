//! `filesync-bench`: measures filesync against rsync and Syncthing on the same
//! data, in the same run, on this machine, and writes `docs/BENCHMARKS.md`.
//!
//! **Architecture Invariant:** every process and socket of a run is on
//! 127.0.0.1, every process is stopped and every temp file removed when the
//! run ends, on error too. A figure that could not be measured is reported as
//! "not available" or "failed", never estimated.

mod data;
mod filesync;
mod lab;
mod machine;
mod mirror;
mod plan;
mod procs;
mod report;
mod rsync;
mod scenarios;
mod sizes;
mod stats;
mod syncthing;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::sizes::parse_size;

#[derive(Parser, Debug)]
#[command(name = "filesync-bench", about = "Benchmarks filesync against rsync and Syncthing on this machine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    settings: Settings,
}

#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
enum Command {
    /// Every scenario; writes docs/BENCHMARKS.md unless --out says otherwise.
    All,
    /// 1. Propagation latency of a 4 KiB create, edit and delete.
    Latency,
    /// 2. A large new file: wall time, throughput, peak RSS.
    LargeFile,
    /// 3. 4 KiB overwritten in the middle of a large synced file: bytes and time.
    SmallEdit,
    /// 4. Many small files, initial sync: files per second.
    ManyFiles,
    /// 5. Idle authenticated connections to one node: RSS per connection.
    Connections,
    /// 6. One change fanned out to many subscribed connections on two nodes.
    Fanout,
    /// 7. HTTP API: /check-token and /login with wrk.
    Http,
    /// 8. One node under load: commits per second, upload and download MiB/s.
    NodeLoad,
    /// 9. The agent as the workspace grows: edit latency, initial sync, RSS, state on disk, restart.
    Scale,
    /// 10. A source-like tree of compressible text, initial sync: bytes on the wire against rsync -z and Syncthing.
    CompressibleTree,
    /// 11. A synced tree of small files renamed, then deleted: time until B shows each.
    RenameTree,
    /// Writes the report again from `--json` files of earlier runs (later files replace earlier scenarios) with
    /// the current bench/ANALYSIS.md; measures nothing.
    Render {
        /// Reports written with --json, oldest first.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
    },
}

impl Command {
    fn scenarios(&self) -> Vec<u8> {
        match self {
            // Scale leaves its tree in place: it runs last.
            Command::All => vec![1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 9],
            Command::Latency => vec![1],
            Command::LargeFile => vec![2],
            Command::SmallEdit => vec![3],
            Command::ManyFiles => vec![4],
            Command::Connections => vec![5],
            Command::Fanout => vec![6],
            Command::Http => vec![7],
            Command::NodeLoad => vec![8],
            Command::Scale => vec![9],
            Command::CompressibleTree => vec![10],
            Command::RenameTree => vec![11],
            Command::Render { .. } => vec![],
        }
    }
}

/// Sizes and counts. Every default is the issue's; `--smoke` shrinks them all.
#[derive(Args, Debug, Clone)]
pub struct Settings {
    /// Tiny sizes: checks that the harness works, not speed. Fails if any figure fails.
    #[arg(long, global = true)]
    pub smoke: bool,
    /// Markdown report path (default: docs/BENCHMARKS.md for `all`, standard output otherwise).
    #[arg(long, global = true)]
    pub out: Option<PathBuf>,
    /// Also write the results as JSON here.
    #[arg(long, global = true)]
    pub json: Option<PathBuf>,
    /// Systems to measure, comma separated: filesync, rsync, syncthing.
    #[arg(long, global = true, value_delimiter = ',', default_value = "filesync,rsync,syncthing")]
    pub systems: Vec<String>,
    /// Directory holding filesync-http, filesync-tcp and filesync (default: next to this program).
    #[arg(long, global = true)]
    pub bin_dir: Option<PathBuf>,
    /// Where the run's temporary files go (default: $TMPDIR or /tmp).
    #[arg(long, global = true)]
    pub tmp: Option<PathBuf>,
    /// Keep the run's temporary directory (folders, databases, every process's log) for a look afterwards.
    #[arg(long, global = true)]
    pub keep: bool,
    /// Samples per figure for scenarios 2–4.
    #[arg(long, global = true)]
    pub runs: Option<usize>,
    /// Seed for all random data and pauses.
    #[arg(long, global = true, default_value_t = 1)]
    pub seed: u64,
    /// 1: writes per series for filesync.
    #[arg(long, global = true)]
    pub writes: Option<usize>,
    /// 1: longest pause before a filesync write, in ms.
    #[arg(long, global = true, default_value_t = 100)]
    pub gap_ms: u64,
    /// 1: Syncthing watcher delays to measure, in seconds (10 is Syncthing's default).
    #[arg(long, global = true, value_delimiter = ',')]
    pub syncthing_delays: Option<Vec<u32>>,
    /// 1: writes per series for Syncthing at each delay (each write waits out the watcher delay).
    #[arg(long, global = true)]
    pub syncthing_writes: Option<usize>,
    /// 2–4: Syncthing's watcher delay for the throughput scenarios, in seconds.
    #[arg(long, global = true, default_value_t = 1)]
    pub syncthing_bulk_delay: u32,
    /// 2: size of the new file.
    #[arg(long, global = true, value_parser = parse_size)]
    pub large_size: Option<u64>,
    /// 3: size of the file edited in the middle.
    #[arg(long, global = true, value_parser = parse_size)]
    pub edit_size: Option<u64>,
    /// 4: number of small files.
    #[arg(long, global = true)]
    pub files: Option<usize>,
    /// 4: directories they are spread over.
    #[arg(long, global = true)]
    pub dirs: Option<usize>,
    /// 4: size of each small file.
    #[arg(long, global = true, value_parser = parse_size)]
    pub file_size: Option<u64>,
    /// 5: numbers of idle connections to measure, comma separated.
    #[arg(long, global = true, value_delimiter = ',')]
    pub connections: Option<Vec<usize>>,
    /// 6: subscribed connections, spread over two nodes.
    #[arg(long, global = true)]
    pub subscribers: Option<usize>,
    /// 7: seconds per wrk run.
    #[arg(long, global = true)]
    pub http_secs: Option<u64>,
    /// 7: bcrypt cost of the HTTP API (default: 12, the production default; 4 in smoke runs).
    #[arg(long, global = true)]
    pub bcrypt_cost: Option<u32>,
    /// 7: open HTTP connections per wrk run.
    #[arg(long, global = true, default_value_t = 64)]
    pub http_connections: usize,
    /// 8: seconds per series.
    #[arg(long, global = true)]
    pub load_secs: Option<u64>,
    /// 8: connections committing small files at once.
    #[arg(long, global = true)]
    pub committers: Option<usize>,
    /// 8: connections uploading, then downloading, large files at once.
    #[arg(long, global = true)]
    pub streams: Option<usize>,
    /// filesync's chunk store: `dir` (a directory in the run's temp root) or `s3` (a fresh prefix in the tests'
    /// S3 bucket: SeaweedFS from .ci/seaweedfs.sh, or FILESYNC_TEST_S3_*).
    #[arg(long, global = true, default_value = "dir", value_parser = ["dir", "s3"])]
    pub storage: String,
    /// 9: tree sizes in files, comma separated, grown in this order (rounded up to whole directories).
    #[arg(long, global = true, value_delimiter = ',')]
    pub scale_sizes: Option<Vec<usize>>,
    /// 9: files per directory of the tree.
    #[arg(long, global = true, default_value_t = 1000)]
    pub scale_per_dir: usize,
    /// 9: timed 4 KiB edits at each size for filesync (Syncthing makes --syncthing-writes).
    #[arg(long, global = true)]
    pub scale_edits: Option<usize>,
    /// 10: number of text files in the source-like tree.
    #[arg(long, global = true)]
    pub text_files: Option<usize>,
    /// 10: directories they are spread over.
    #[arg(long, global = true)]
    pub text_dirs: Option<usize>,
    /// 10: size of each text file.
    #[arg(long, global = true, value_parser = parse_size)]
    pub text_file_size: Option<u64>,
}

impl Settings {
    pub fn wants(&self, system: &str) -> bool {
        self.systems.iter().any(|s| s.eq_ignore_ascii_case(system))
    }

    fn pick<T>(&self, given: Option<T>, full: T, smoke: T) -> T {
        given.unwrap_or(if self.smoke { smoke } else { full })
    }

    pub fn runs(&self) -> usize {
        self.pick(self.runs, 3, 1)
    }
    pub fn writes(&self) -> usize {
        self.pick(self.writes, 200, 5)
    }
    pub fn syncthing_delays(&self) -> Vec<u32> {
        self.pick(self.syncthing_delays.clone(), vec![10, 1], vec![1])
    }
    pub fn syncthing_writes(&self) -> usize {
        self.pick(self.syncthing_writes, 10, 3)
    }
    pub fn large_size(&self) -> u64 {
        self.pick(self.large_size, 1 << 30, 8 << 20)
    }
    pub fn edit_size(&self) -> u64 {
        self.pick(self.edit_size, 1 << 30, 8 << 20)
    }
    pub fn files(&self) -> usize {
        self.pick(self.files, 10_000, 200)
    }
    pub fn dirs(&self) -> usize {
        self.pick(self.dirs, 100, 4)
    }
    pub fn file_size(&self) -> usize {
        self.pick(self.file_size, 4096, 4096) as usize
    }
    pub fn connections(&self) -> Vec<usize> {
        self.pick(self.connections.clone(), vec![1_000, 10_000], vec![20])
    }
    pub fn subscribers(&self) -> usize {
        self.pick(self.subscribers, 1_000, 20)
    }
    pub fn bcrypt_cost(&self) -> u32 {
        self.pick(self.bcrypt_cost, 12, 4)
    }
    pub fn scale_sizes(&self) -> Vec<usize> {
        self.pick(self.scale_sizes.clone(), vec![0, 100_000, 1_000_000], vec![0, 2_000])
    }
    pub fn scale_edits(&self) -> usize {
        self.pick(self.scale_edits, 100, 5)
    }
    pub fn text_files(&self) -> usize {
        self.pick(self.text_files, 3_000, 40)
    }
    pub fn text_dirs(&self) -> usize {
        self.pick(self.text_dirs, 30, 2)
    }
    pub fn text_file_size(&self) -> usize {
        self.pick(self.text_file_size, 24 * 1024, 8 * 1024) as usize
    }
    pub fn http_duration(&self) -> Duration {
        Duration::from_secs(self.pick(self.http_secs, 10, 1))
    }
    pub fn load_duration(&self) -> Duration {
        Duration::from_secs(self.pick(self.load_secs, 10, 1))
    }
    pub fn committers(&self) -> usize {
        self.pick(self.committers, 16, 2).max(1)
    }
    pub fn streams(&self) -> usize {
        self.pick(self.streams, 4, 1).max(1)
    }
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Earlier reports merged, oldest first, with the analysis as it is now.
fn render(inputs: &[PathBuf]) -> Result<report::Report> {
    let mut merged: Option<report::Report> = None;
    for path in inputs {
        let next = report::Report::load(path)?;
        merged = Some(match merged {
            None => next,
            Some(m) => m.merge(next),
        });
    }
    let mut report = merged.context("no reports given")?;
    report.analysis = std::fs::read_to_string("bench/ANALYSIS.md").ok();
    Ok(report)
}

/// A smoke run may skip Syncthing when it is not installed, and filesync pieces whose crate is not in this
/// checkout (smoke.sh builds every binary there is); anything else missing means the harness has rotted.
fn tolerated_in_smoke(system: &str, why: &str) -> bool {
    (system.starts_with("Syncthing") && why.contains("not installed"))
        || (system.starts_with(report::FILESYNC) && why.contains("is not built"))
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    for s in &cli.settings.systems {
        if !["filesync", "rsync", "syncthing"].contains(&s.to_ascii_lowercase().as_str()) {
            bail!("unknown system {s:?}: use filesync, rsync or syncthing");
        }
    }
    let report = match &cli.command {
        Command::Render { inputs } => render(inputs)?,
        _ => {
            procs::install_signal_handling()?;
            let fds = procs::raise_fd_limit();
            let command = std::env::args().collect::<Vec<_>>().join(" ");
            plan::run(&cli.settings, &cli.command.scenarios(), &command, fds)?
        }
    };
    let md = report.to_markdown(&plan::targets());
    let full = matches!(cli.command, Command::All | Command::Render { .. }) && !cli.settings.smoke;
    let out = cli.settings.out.clone().or_else(|| full.then(|| PathBuf::from("docs/BENCHMARKS.md")));
    match &out {
        Some(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(path, &md).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        None => println!("{md}"),
    }
    if let (Some(path), false) = (&cli.settings.json, matches!(cli.command, Command::Render { .. })) {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    for line in report.unavailable() {
        eprintln!("not available: {line}");
    }
    let failures = if cli.settings.smoke {
        // A smoke run checks our harness and our system on a loaded CI machine: a third-party peer
        // that fails there (Syncthing restarting under load, say) is reported, not fatal.
        for line in report.failures_where(|r| !r.is_filesync()) {
            eprintln!("warning: a peer failed in the smoke run: {line}");
        }
        let mut f = report.failures_where(report::Row::is_filesync);
        f.extend(report.unavailable_where(|system, why| !tolerated_in_smoke(system, why)));
        f
    } else {
        report.failures()
    };
    for line in &failures {
        eprintln!("FAILED: {line}");
    }
    // Rendering old results measures nothing, so their failures are not this command's.
    if !failures.is_empty() && !matches!(cli.command, Command::Render { .. }) {
        bail!("{} figure(s) failed", failures.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoke_tolerates_only_a_missing_syncthing_or_unbuilt_filesync_pieces() {
        assert!(tolerated_in_smoke("Syncthing (delay 1 s)", "syncthing is not installed (bench/setup.sh installs it)"));
        assert!(tolerated_in_smoke("filesync", "filesync-tcp is not built in target/debug"));
        assert!(!tolerated_in_smoke("rsync", "rsync is not installed (bench/setup.sh installs it)"));
        assert!(!tolerated_in_smoke("filesync", "wrk is not installed (bench/setup.sh installs it)"));
    }
}

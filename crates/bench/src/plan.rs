//! One run: which system takes part in which scenario, with which sizes, and
//! the targets the report checks.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::filesync::Filesync;
use crate::lab::{fresh_dir, measure, Slot, Unavailable};
use crate::machine::Machine;
use crate::mirror::Mirror;
use crate::report::{Goal, Report, Row, Scenario, Target, FILESYNC};
use crate::rsync::Rsync;
use crate::scenarios::{
    compressible_tree, large_file, latency, many_files, rename_tree, scale, small_edit, SizedRuns, TreeRuns,
};
use crate::syncthing::{Syncthing, DEFAULT_COMPRESSION};
use crate::Settings;

/// The systems of a run; each starts when a scenario first needs it.
struct Lab {
    filesync: Slot<Filesync>,
    rsync: Slot<Rsync>,
    rsync_inplace: Slot<Rsync>,
    rsync_z: Slot<Rsync>,
    syncthing: Slot<Syncthing>,
    stage: PathBuf,
}

impl Lab {
    fn new(s: &Settings, root: &Path) -> Result<Lab> {
        let stage = fresh_dir(root, "stage")?;
        let dir = |name: &str| (root.to_path_buf(), name.to_owned());
        let filesync = if s.wants(FILESYNC) {
            let ((root, name), settings) = (dir("filesync"), s.clone());
            Slot::lazy(move || Filesync::start(&fresh_dir(&root, &name)?, &settings))
        } else {
            Slot::Off
        };
        let rsync = |name: &str, inplace: bool, compress: bool| {
            if !s.wants("rsync") {
                return Slot::Off;
            }
            let (root, name) = dir(name);
            Slot::lazy(move || {
                installed("rsync")?;
                Rsync::start(&fresh_dir(&root, &name)?, inplace, compress)
            })
        };
        let syncthing = if s.wants("syncthing") {
            let (root, name) = dir("syncthing");
            Slot::lazy(move || {
                installed("syncthing")?;
                Syncthing::start(&fresh_dir(&root, &name)?, 10)
            })
        } else {
            Slot::Off
        };
        Ok(Lab {
            filesync,
            rsync: rsync("rsync", false, false),
            rsync_inplace: rsync("rsync-inplace", true, false),
            rsync_z: rsync("rsync-z", false, true),
            syncthing,
            stage,
        })
    }
}

/// An [`Unavailable`] error unless `tool` runs.
pub fn installed(tool: &str) -> Result<()> {
    match Command::new(tool).arg("--version").output() {
        Ok(_) => Ok(()),
        Err(_) => Err(Unavailable(format!("{tool} is not installed (bench/setup.sh installs it)")).into()),
    }
}

pub fn run(s: &Settings, scenarios: &[u8], command: &str, fd_limit: u64) -> Result<Report> {
    let started = chrono::Local::now();
    let t0 = Instant::now();
    let tmp = s.tmp.clone().unwrap_or_else(std::env::temp_dir);
    let root = tempfile::Builder::new().prefix("filesync-bench.").disable_cleanup(s.keep).tempdir_in(&tmp)?;
    if s.keep {
        eprintln!("keeping {} (process logs under it)", root.path().display());
    }
    let machine = Machine::describe(root.path());
    let mut lab = Lab::new(s, root.path())?;
    let mut done = Vec::new();
    for &n in scenarios {
        crate::procs::check_interrupted()?;
        done.push(match n {
            1 => run_latency(&mut lab, s),
            2 => run_large_file(&mut lab, s),
            3 => run_small_edit(&mut lab, s),
            4 => run_many_files(&mut lab, s),
            5 => crate::filesync::connections_scenario(&mut lab.filesync, s),
            6 => crate::filesync::fanout_scenario(&mut lab.filesync, s),
            7 => crate::filesync::http_scenario(&mut lab.filesync, s),
            8 => crate::filesync::node_load_scenario(&mut lab.filesync, s),
            10 => run_compressible_tree(&mut lab, s),
            11 => run_rename_tree(&mut lab, s),
            _ => run_scale(&mut lab, s),
        });
    }
    // Stop every system before their directories go.
    drop(lab);
    let mut notes = vec![format!("Open-file limit of the harness and everything it starts: {fd_limit}.")];
    if s.storage == "s3" {
        notes.push(
            "filesync's chunk store: S3 (a fresh prefix in the tests' bucket, SeaweedFS `weed mini` on loopback \
             unless FILESYNC_TEST_S3_ENDPOINT named another)."
                .into(),
        );
    }
    if s.smoke {
        notes.push("Smoke run: tiny sizes, one sample each. It checks that the harness works, not speed.".into());
    }
    Ok(Report {
        title: if s.smoke { "Benchmarks (smoke run)".into() } else { "Benchmarks".into() },
        command: command.to_owned(),
        started: started.format("%Y-%m-%d %H:%M %Z").to_string(),
        duration_secs: t0.elapsed().as_secs_f64(),
        build: crate::filesync::build_description(s),
        machine,
        scenarios: done,
        notes,
        analysis: std::fs::read_to_string("bench/ANALYSIS.md").ok().filter(|_| !s.smoke),
    })
}

fn run_latency(lab: &mut Lab, s: &Settings) -> Scenario {
    let mut sc = Scenario::new(
        1,
        "Propagation latency",
        "A 4 KiB file of fresh random bytes is written and closed in A's folder; the clock starts just before \
         `open()` and stops when B's folder holds the identical file (B is polled every 1 ms). Then each file is \
         overwritten with new bytes (edit), then deleted. Before each write the harness pauses for a random time, \
         so writes land at every phase of any timer a system runs. One warm-up write is not counted.",
    );
    let opts = latency::Options { writes: s.writes(), gap_max: Duration::from_millis(s.gap_ms), seed: s.seed };
    measure(&mut sc, &latency::TESTS, FILESYNC, &mut lab.filesync, |f| latency::run(f.mirror()?, opts));
    for delay in s.syncthing_delays() {
        let name = format!("Syncthing (delay {delay} s)");
        let opts =
            latency::Options { writes: s.syncthing_writes(), gap_max: Duration::from_secs(delay.into()), seed: s.seed };
        measure(&mut sc, &latency::TESTS, &name, &mut lab.syncthing, |st| {
            st.set_delay(delay)?;
            latency::run(st, opts)
        });
    }
    sc.notes.push(format!(
        "Syncthing runs {} writes per series at each delay (every write waits out its watcher delay, so 200 would \
         take most of an hour at the default); its pause before each write is uniform between 0 and the delay.",
        s.syncthing_writes()
    ));
    sc
}

fn run_large_file(lab: &mut Lab, s: &Settings) -> Scenario {
    let o = SizedRuns { size: s.large_size(), runs: s.runs(), seed: s.seed + 1000 };
    let mut sc = Scenario::new(
        2,
        "Large new file",
        &format!(
            "{} of random bytes is written and flushed in a staging folder on the same filesystem, then renamed \
             into A's folder: the clock starts at the rename and stops when B holds the whole file (size checked \
             every 10 ms, then its BLAKE3 hash). Fresh bytes every sample. Peak RSS is each process's VmHWM, reset \
             before every sample through /proc/<pid>/clear_refs. filesync's chunk-store requests are its nodes' \
             `filesync_storage_requests_total` from the sample's start until it is idle again, per GiB of the file.",
            large_file::size_label(o.size)
        ),
    );
    let tests = [large_file::WALL, large_file::RATE];
    measure_bulk(&mut sc, &tests, lab, s, false, |m, stage| large_file::run(m, stage, o));
    sc
}

fn run_small_edit(lab: &mut Lab, s: &Settings) -> Scenario {
    let o = SizedRuns { size: s.edit_size(), runs: s.runs(), seed: s.seed + 2000 };
    let mut sc = Scenario::new(
        3,
        "Small edit in a large file",
        &format!(
            "A {} file of random bytes is synced first (not timed). Then 4 KiB of new random bytes overwrite it in \
             place near the middle, at a different unaligned offset each sample, and the modification time moves to \
             a new second. Timed from the write until B's copy shows the new bytes; B's whole file is then checked \
             against A's. Bytes come from each system's own counters, read after it is idle again; so do filesync's \
             chunk-store requests per edit (its nodes' `filesync_storage_requests_total`).",
            large_file::size_label(o.size)
        ),
    );
    let tests = [small_edit::WALL, small_edit::TOTAL, small_edit::SENT, small_edit::RECEIVED];
    measure_bulk(&mut sc, &tests, lab, s, true, |m, stage| small_edit::run(m, stage, o));
    sc
}

fn run_many_files(lab: &mut Lab, s: &Settings) -> Scenario {
    let o = TreeRuns { files: s.files(), dirs: s.dirs(), size: s.file_size(), runs: s.runs(), seed: s.seed + 3000 };
    let mut sc = Scenario::new(
        4,
        "Many small files",
        "A tree of small files of random bytes is written and flushed in a staging folder, then renamed into A's \
         folder in one step: the clock starts at the rename and stops when every file is on B at full size (B is \
         counted every 50 ms); contents are compared afterwards. Fresh bytes every sample.",
    );
    let tests = [many_files::RATE, many_files::WALL];
    measure_bulk(&mut sc, &tests, lab, s, false, |m, stage| many_files::run(m, stage, o));
    sc
}

fn run_rename_tree(lab: &mut Lab, s: &Settings) -> Scenario {
    let o = TreeRuns { files: s.files(), dirs: s.dirs(), size: s.file_size(), runs: s.runs(), seed: s.seed + 11_000 };
    let mut sc = Scenario::new(
        11,
        "A tree renamed, then deleted",
        "The tree of scenario 4 (fresh bytes every sample) is synced to B first, not timed. Then its top directory \
         is renamed on A: the clock stops when every file is on B under the new name at full size and the old name \
         is gone from B (B is checked every 50 ms); contents are compared afterwards. Then the renamed tree is \
         deleted on A: the clock stops when it is gone from B.",
    );
    let tests = [rename_tree::RENAME, rename_tree::DELETE];
    measure_bulk(&mut sc, &tests, lab, s, false, |m, stage| rename_tree::run(m, stage, o));
    sc
}

fn run_compressible_tree(lab: &mut Lab, s: &Settings) -> Scenario {
    let o = TreeRuns {
        files: s.text_files(),
        dirs: s.text_dirs(),
        size: s.text_file_size(),
        runs: s.runs(),
        seed: s.seed + 10_000,
    };
    let files = o.total_files();
    let mut sc = Scenario::new(
        10,
        "Compressible tree",
        &format!(
            "A source-like tree — {} files of {} B of generated program text (indented lines of keywords and \
             identifiers; zstd and gzip shrink it 3 to 4 times; every file different, nothing to deduplicate) in {} \
             directories, {} in all — is written and flushed in a staging folder, then renamed into A's folder in \
             one step. Counted: the bytes each system put on the wire until B holds every file and both ends are \
             idle again, from each system's own counters, and the wall time (B counted every 50 ms). filesync \
             compresses a chunk with zstd when a sample says it pays and sends it in that stored form both ways; \
             rsync runs without and with `-z`; Syncthing with its default device compression (`metadata`: only \
             indexes and requests) and with `always` (file data too), the setting a user syncing source would pick.",
            files,
            o.size,
            o.dirs,
            large_file::size_label(o.total_bytes()),
        ),
    );
    let tests = compressible_tree::TESTS;
    let stage = lab.stage.clone();
    measure(&mut sc, &tests, FILESYNC, &mut lab.filesync, |f| compressible_tree::run(f.mirror()?, &stage, o));
    measure(&mut sc, &tests, "rsync", &mut lab.rsync, |m| compressible_tree::run(m, &stage, o));
    measure(&mut sc, &tests, "rsync -z", &mut lab.rsync_z, |m| compressible_tree::run(m, &stage, o));
    let delay = s.syncthing_bulk_delay;
    for compression in [DEFAULT_COMPRESSION, "always"] {
        let name = match compression {
            DEFAULT_COMPRESSION => format!("Syncthing (delay {delay} s)"),
            other => format!("Syncthing (delay {delay} s, compression {other})"),
        };
        measure(&mut sc, &tests, &name, &mut lab.syncthing, |st| {
            st.set_delay(delay)?;
            st.set_compression(compression)?;
            let rows = compressible_tree::run(st, &stage, o);
            // Later scenarios see Syncthing as a user gets it.
            let back = st.set_compression(DEFAULT_COMPRESSION);
            rows.and_then(|rows| back.map(|()| rows))
        });
    }
    sc
}

fn run_scale(lab: &mut Lab, s: &Settings) -> Scenario {
    let o = scale::Options {
        sizes: s.scale_sizes(),
        per_dir: s.scale_per_dir,
        file_size: s.file_size(),
        edits: s.scale_edits(),
        gap_max: Duration::from_millis(s.gap_ms),
        seed: s.seed + 8000,
    };
    let sizes = scale::sizes(&o).iter().map(|n| crate::report::group(*n as f64)).collect::<Vec<_>>().join(", ");
    let mut sc = Scenario::new(
        9,
        "Scale",
        &format!(
            "A tree of {} B files of random bytes, {} per directory, grows in steps to {sizes} files. Each step's new \
             directories are written and flushed in a staging folder, then renamed into A's folder one after the \
             other: the clock starts at the first rename and stops when every new file is on B at full size. Once \
             idle at each size: VmRSS of every process, each end's state on disk (every file under its home), then \
             timed overwrites of one of {EDITED} small files beside the tree with fresh bytes (clock from just before \
             `open()` until B holds the bytes; B polled every 1 ms; one warm-up edit not counted), then B's agent is \
             stopped and started again on the in-sync tree and A edits a file at once: the clock runs from B's start \
             until B holds that edit. Syncthing (watcher delay 1 s) takes part in the initial sync, the edits \
             ({} per size) and the memory and state figures on the same tree sizes in the same run.",
            s.file_size(),
            o.per_dir,
            s.syncthing_writes(),
            EDITED = scale::EDITED,
        ),
    );
    let tests = scale::tests(&o);
    let tests: Vec<&str> = tests.iter().map(String::as_str).collect();
    let stage = lab.stage.clone();
    measure(&mut sc, &tests, FILESYNC, &mut lab.filesync, |f| scale::run(f.mirror()?, &stage, &o));
    let peer = scale::Options { edits: s.syncthing_writes(), gap_max: Duration::from_secs(1), ..o.clone() };
    measure(&mut sc, &tests, "Syncthing (delay 1 s)", &mut lab.syncthing, |st| {
        st.set_delay(1)?;
        scale::run(st, &stage, &peer)
    });
    sc.notes.push(
        "The tree is left in place at the end: this scenario runs last, and the run's directory goes with it.".into(),
    );
    sc
}

/// Runs a bulk scenario (2–4) on filesync, rsync (and rsync --inplace if asked) and Syncthing at its bulk delay.
fn measure_bulk(
    sc: &mut Scenario,
    tests: &[&str],
    lab: &mut Lab,
    s: &Settings,
    with_inplace: bool,
    run: impl Fn(&mut dyn Mirror, &Path) -> Result<Vec<Row>>,
) {
    let stage = lab.stage.clone();
    measure(sc, tests, FILESYNC, &mut lab.filesync, |f| run(f.mirror()?, &stage));
    measure(sc, tests, "rsync", &mut lab.rsync, |m| run(m, &stage));
    if with_inplace {
        measure(sc, tests, "rsync --inplace", &mut lab.rsync_inplace, |m| run(m, &stage));
    }
    let delay = s.syncthing_bulk_delay;
    measure(sc, tests, &format!("Syncthing (delay {delay} s)"), &mut lab.syncthing, |st| {
        st.set_delay(delay)?;
        run(st, &stage)
    });
}

/// The goals of issue #6, all on loopback on this machine.
pub fn targets() -> Vec<Target> {
    use crate::filesync::{CHECK_TOKEN_RATE, FANOUT_P99, RSS_PER_CONN_10K};
    vec![
        Target { scenario: 1, test: latency::CREATE_P50, goal: Goal::AtMost(50.0), text: "p50 ≤ 50 ms" },
        Target { scenario: 1, test: latency::CREATE_P99, goal: Goal::AtMost(150.0), text: "p99 ≤ 150 ms" },
        Target {
            scenario: 2,
            test: large_file::WALL,
            goal: Goal::WithinPeer(1.2, "rsync"),
            text: "1 GiB within 1.2× rsync",
        },
        Target {
            scenario: 3,
            test: small_edit::TOTAL,
            goal: Goal::WithinPeer(1.0, "rsync"),
            text: "fewer bytes than rsync",
        },
        Target { scenario: 4, test: many_files::RATE, goal: Goal::AtLeast(2000.0), text: "≥ 2,000 files/s" },
        Target {
            scenario: 5,
            test: RSS_PER_CONN_10K,
            goal: Goal::AtMost(32.0),
            text: "≤ 32 KiB per connection at 10,000",
        },
        Target { scenario: 6, test: FANOUT_P99, goal: Goal::AtMost(1000.0), text: "p99 ≤ 1 s" },
        Target { scenario: 7, test: CHECK_TOKEN_RATE, goal: Goal::AtLeast(30_000.0), text: "≥ 30,000 req/s" },
        Target {
            scenario: 9,
            test: scale::EDIT_P50_1M,
            goal: Goal::AtMost(25.0),
            text: "edit p50 at 1,000,000 files ≤ 25 ms (issue #11)",
        },
        Target {
            scenario: 9,
            test: scale::RESTART_1M,
            goal: Goal::AtMost(15.0),
            text: "restart at 1,000,000 files to the next synced edit ≤ 15 s (issue #11)",
        },
    ]
}

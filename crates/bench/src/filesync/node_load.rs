//! Scenario 8: how much one node takes, driven from this process with the
//! protocol client library against node 1 (docs/SCALING.md quotes it).
//!
//! - commits: W connections, each committing new 4 KiB files into its own
//!   workspace one after another for D seconds; commits per second over all
//!   of them, and the commit latency;
//! - upload and download: W connections sending new 16 MiB files for D
//!   seconds (MiB/s into the node: hashed, stored and committed), then the
//!   same connections fetching those files back (MiB/s out of the node).
//!
//! Every writer has its own workspace, so the figures are the node's (and
//! the database's and the chunk store's), not one workspace's journal.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use filesync_core::WorkspaceId;
use filesync_proto_client::{Client, ConnectOptions};

use crate::filesync::api::Api;
use crate::filesync::Filesync;
use crate::procs::check_interrupted;
use crate::report::{Row, Unit, FILESYNC};
use crate::scenarios::latency::percentile_rows;

/// Size of each file in the commit series.
const SMALL: usize = 4096;
/// Size of each file in the throughput series.
const LARGE: usize = 16 << 20;

#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Writers in the commit series.
    pub committers: usize,
    /// Writers (then readers) in the throughput series.
    pub streams: usize,
    /// Length of each series.
    pub duration: Duration,
    pub runs: usize,
    pub seed: u64,
}

pub fn commits_test(w: usize) -> String {
    format!("commits of 4 KiB files per second, {w} connection{}", if w == 1 { "" } else { "s" })
}
pub fn commit_p50_test(w: usize) -> String {
    format!("commit latency at {w} connections: p50")
}
pub fn commit_p99_test(w: usize) -> String {
    format!("commit latency at {w} connections: p99")
}
pub const UPLOAD: &str = "upload: new 16 MiB files into one node";
pub const DOWNLOAD: &str = "download: 16 MiB files out of one node";

/// The names of every figure, for rows saying why none was measured.
pub fn tests(o: &Options) -> Vec<String> {
    vec![
        commits_test(1),
        commits_test(o.committers),
        commit_p50_test(o.committers),
        commit_p99_test(o.committers),
        UPLOAD.into(),
        DOWNLOAD.into(),
    ]
}

struct Writer {
    client: Client,
    _events: filesync_proto_client::Events,
    ws: WorkspaceId,
    dir: PathBuf,
}

pub fn run(f: &mut Filesync, root: &Path, o: Options) -> Result<Vec<Row>> {
    let addr = f.stack.nodes()?[0].addr();
    let api = Api::new(f.stack.http_url())?;
    let user = api.user("nodeload")?;
    let most = o.committers.max(o.streams).max(1);
    let mut workspaces = Vec::with_capacity(most);
    for i in 0..most {
        workspaces.push(WorkspaceId(api.workspace(&user, &format!("load-{i}"))?));
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut rows = Vec::new();
    rt.block_on(async {
        let mut writers = Vec::with_capacity(most);
        for (i, ws) in workspaces.into_iter().enumerate() {
            let device = format!("bench-load-{i}");
            let (client, events) = Client::connect(addr.as_str(), ConnectOptions::new(&user.token, &device, &device))
                .await
                .with_context(|| format!("connection {i} to {addr}"))?;
            let dir = crate::lab::fresh_dir(root, &format!("load-{i}"))?;
            writers.push(Writer { client, _events: events, ws, dir });
        }

        let mut single = Vec::new();
        let (mut many, mut latencies) = (Vec::new(), Vec::new());
        let (mut up, mut down) = (Vec::new(), Vec::new());
        let mut detail_up = String::new();
        for run in 0..o.runs {
            check_interrupted()?;
            let seed = o.seed ^ (run as u64) << 32;
            let one = commit_series(&writers[..1], o.duration, SMALL, seed).await?;
            single.push(one.count() as f64 / o.duration.as_secs_f64());
            let all = commit_series(&writers[..o.committers], o.duration, SMALL, seed ^ 1).await?;
            many.push(all.count() as f64 / o.duration.as_secs_f64());
            latencies.extend(all.latencies());

            let streams = &writers[..o.streams];
            let started = Instant::now();
            let large = commit_series(streams, o.duration, LARGE, seed ^ 2).await?;
            let secs = started.elapsed().as_secs_f64();
            let files = large.count();
            up.push((files * LARGE) as f64 / secs / f64::from(1 << 20));
            detail_up = format!("{} connection(s), {files} files in {secs:.1} s (last sample)", o.streams);
            down.push(download_all(streams, &large, LARGE).await? / f64::from(1 << 20));
        }
        let detail =
            |w: usize| format!("{w} connection(s) to node 1, each its own workspace, {:?} per sample", o.duration);
        rows.extend(Row::from_samples(&commits_test(1), FILESYNC, &single, Unit::FilesPerSec, &detail(1)));
        rows.extend(Row::from_samples(
            &commits_test(o.committers),
            FILESYNC,
            &many,
            Unit::FilesPerSec,
            &detail(o.committers),
        ));
        rows.extend(percentile_rows(
            &commit_p50_test(o.committers),
            &commit_p99_test(o.committers),
            FILESYNC,
            &latencies,
            &format!("{}; from put_file's start to its commit", detail(o.committers)),
        ));
        rows.extend(Row::from_samples(UPLOAD, FILESYNC, &up, Unit::MibPerSec, &detail_up));
        rows.extend(Row::from_samples(
            DOWNLOAD,
            FILESYNC,
            &down,
            Unit::MibPerSec,
            &format!("{} connection(s), each fetching the files it uploaded", o.streams),
        ));
        anyhow::Ok(())
    })?;
    f.stack.ensure_running()?;
    Ok(rows)
}

/// What one series committed: per writer, each commit's seq and latency in ms.
struct Series(Vec<Vec<(i64, f64)>>);

impl Series {
    fn count(&self) -> usize {
        self.0.iter().map(Vec::len).sum()
    }
    fn latencies(&self) -> Vec<f64> {
        self.0.iter().flatten().map(|c| c.1).collect()
    }
}

/// Each writer commits new `size`-byte files one after another until `duration` is over (a commit under way is
/// finished).
async fn commit_series(writers: &[Writer], duration: Duration, size: usize, seed: u64) -> Result<Series> {
    let deadline = Instant::now() + duration;
    let each = writers.iter().enumerate().map(|(i, w)| async move {
        let mut rng = crate::data::rng(seed ^ (i as u64).wrapping_mul(0x9E37_79B9));
        let mut done = Vec::new();
        while Instant::now() < deadline {
            let name = format!("f-{seed:x}-{}.bin", done.len());
            let file = w.dir.join(&name);
            std::fs::write(&file, crate::data::random_bytes(&mut rng, size))?;
            let t0 = Instant::now();
            let c = w.client.put_file(w.ws, &name, &file, 0).await.with_context(|| format!("committing {name}"))?;
            done.push((c.seq, t0.elapsed().as_secs_f64() * 1000.0));
            std::fs::remove_file(&file)?;
        }
        anyhow::Ok(done)
    });
    Ok(Series(futures::future::try_join_all(each).await?))
}

/// Every writer downloads the files it committed in `series`, all writers at once; bytes per second over all.
async fn download_all(writers: &[Writer], series: &Series, size: usize) -> Result<f64> {
    let started = Instant::now();
    let each = writers.iter().zip(&series.0).map(|(w, commits)| async move {
        let dest = w.dir.join("download.bin");
        for (seq, _) in commits {
            w.client.download(w.ws, *seq, &dest).await.with_context(|| format!("downloading seq {seq}"))?;
        }
        std::fs::remove_file(&dest).ok();
        anyhow::Ok(commits.len() * size)
    });
    let bytes: usize = futures::future::try_join_all(each).await?.into_iter().sum();
    Ok(bytes as f64 / started.elapsed().as_secs_f64())
}

//! filesync itself, as a user runs it: the server side ([`stack`]) and two
//! `filesync` agents with separate homes and folders ([`agents`]), A on node
//! 1 and B on node 2, plus the filesync-only scenarios 5–8.

pub mod agents;
pub mod api;
mod database;
pub mod http_bench;
pub mod load;
pub mod node_load;
pub mod stack;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;

use crate::data;
use crate::lab::{fresh_dir, measure, Slot, Unavailable};
use crate::mirror::{Mirror, StoreRequests, Wire, POLL_SLOW, TRANSFER_TIMEOUT};
use crate::procs::{socket_bytes, wait_for};
use crate::report::{Scenario, FILESYNC};
use crate::scenarios::scale::AtScale;
use crate::Settings;
use agents::Agents;
use stack::{Stack, Tuning};

pub const RSS_PER_CONN_10K: &str = "idle connections: node RSS per connection at 10,000";
pub use http_bench::CHECK_RATE as CHECK_TOKEN_RATE;
pub use load::FANOUT_P99;

pub struct Filesync {
    root: PathBuf,
    a_dir: PathBuf,
    b_dir: PathBuf,
    // Agents stop before the servers they talk to.
    agents: Result<Agents, AgentsMissing>,
    pub stack: Stack,
}

/// Where the filesync binaries are: `--bin-dir`, else next to this program.
pub fn bin_dir(s: &Settings) -> PathBuf {
    s.bin_dir.clone().unwrap_or_else(|| {
        std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)).unwrap_or_default()
    })
}

pub fn build_description(s: &Settings) -> String {
    let dir = bin_dir(s);
    let profile = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("commit {commit}, {profile} build from {}", dir.display())
}

impl Filesync {
    /// Starts the server side, then the agents if the client is built. Missing pieces make the figures that
    /// need them "not available"; a piece that is built but fails to start is an error.
    pub fn start(root: &Path, s: &Settings) -> Result<Filesync> {
        let bins = bin_dir(s);
        let max_conns = s.connections().into_iter().max().unwrap_or(0).max(s.subscribers());
        let tuning = Tuning { bcrypt_cost: s.bcrypt_cost(), max_connections: max_conns + 1000, s3: s.storage == "s3" };
        let stack = Stack::start(root, &bins, &tuning)?;
        let (a_dir, b_dir) = (fresh_dir(root, "A")?, fresh_dir(root, "B")?);
        let agents = Agents::start(root, &bins, &stack, &a_dir, &b_dir).map_err(AgentsMissing::from);
        let mut f = Filesync { root: root.to_path_buf(), a_dir, b_dir, agents, stack };
        if f.agents.is_ok() {
            // Scenarios without agents (5–7) still run if the agents cannot sync; 1–4 then report this error.
            if let Err(e) = f.first_round_trip() {
                let e = e.context("the agents did not pass a first file from A to B");
                eprintln!("filesync agents: {e:#}");
                f.agents = Err(AgentsMissing::from(e));
            }
        }
        Ok(f)
    }

    /// The agents, or why they are not there.
    fn agents(&mut self) -> Result<&mut Agents> {
        match &mut self.agents {
            Ok(a) => Ok(a),
            Err(AgentsMissing { why, unavailable: true }) => Err(Unavailable(why.clone()).into()),
            Err(AgentsMissing { why, .. }) => Err(anyhow::anyhow!("{why}")),
        }
    }

    /// filesync as a [`Mirror`]: files written in A's folder, expected in B's.
    pub fn mirror(&mut self) -> Result<&mut Filesync> {
        self.agents()?;
        Ok(self)
    }

    /// One file through A → node 1 → node 2 → B and its delete, so the first sample pays no start-up cost.
    fn first_round_trip(&mut self) -> Result<()> {
        let name = Path::new("bench-ready.txt");
        std::fs::write(self.a_dir.join(name), b"ready")?;
        let on_b = self.b_dir.join(name);
        wait_for("the first file to reach B", Duration::from_secs(120), POLL_SLOW, || {
            self.ensure_running()?;
            Ok(data::has_contents(&on_b, b"ready").then_some(()))
        })?;
        self.clear(name)
    }

    /// Sum of the node counters that move while work is in flight.
    fn activity(&self) -> Result<f64> {
        let mut sum = 0.0;
        for node in self.stack.nodes()? {
            sum += node
                .metrics()?
                .iter()
                .filter(|(name, _)| ["commits", "chunks_received", "chunks_sent"].iter().any(|k| name.contains(k)))
                .map(|(_, v)| v)
                .sum::<f64>();
        }
        Ok(sum)
    }
}

impl Mirror for Filesync {
    fn name(&self) -> String {
        FILESYNC.into()
    }

    fn source(&self) -> &Path {
        &self.a_dir
    }

    fn target(&self) -> &Path {
        &self.b_dir
    }

    fn wire(&mut self) -> Result<Option<Wire>> {
        let agents = self.agents()?;
        let (a_sent, a_received) = socket_bytes(agents.a.proc.pid())?;
        let (b_sent, b_received) = socket_bytes(agents.b.proc.pid())?;
        Ok(Some(Wire {
            sent_by_a: a_sent,
            received_by_b: b_received,
            total: a_sent + a_received + b_sent + b_received,
        }))
    }

    fn wire_source(&self) -> &'static str {
        "kernel TCP counters of the agents' sockets (ss); total counts both hops, A ↔ node 1 and node 2 ↔ B"
    }

    /// `filesync_storage_requests_total{op}` of every node, summed.
    fn store_requests(&mut self) -> Result<Option<StoreRequests>> {
        let mut requests = StoreRequests::default();
        for node in self.stack.nodes()? {
            for (name, value) in node.metrics()? {
                if let Some(op) =
                    name.strip_prefix("filesync_storage_requests_total{op=\"").and_then(|r| r.strip_suffix("\"}"))
                {
                    *requests.by_op.entry(op.to_owned()).or_default() += value;
                }
            }
        }
        Ok(Some(requests))
    }

    fn processes(&self) -> Vec<(String, u32)> {
        let mut out: Vec<(String, u32)> =
            self.stack.nodes.iter().enumerate().map(|(i, n)| (format!("node {}", i + 1), n.proc.pid())).collect();
        if let Ok(a) = &self.agents {
            out.push(("agent A".into(), a.a.proc.pid()));
            out.push(("agent B".into(), a.b.proc.pid()));
        }
        out
    }

    fn ensure_running(&mut self) -> Result<()> {
        self.stack.ensure_running()?;
        self.agents()?.ensure_running()
    }

    /// Idle: the nodes' commit and chunk counters have not moved for three polls in a row.
    fn settle(&mut self) -> Result<()> {
        let (mut last, mut calm) = (-1.0, 0);
        wait_for("filesync to become idle", TRANSFER_TIMEOUT, Duration::from_millis(100), || {
            self.ensure_running()?;
            let now = self.activity()?;
            calm = if now == last { calm + 1 } else { 0 };
            last = now;
            Ok((calm >= 3).then_some(()))
        })
    }
}

/// The agents' homes hold their state; B's agent is the one restarted.
impl AtScale for Filesync {
    fn state_bytes(&self) -> Result<Vec<(String, u64)>> {
        let Ok(agents) = &self.agents else { return Ok(Vec::new()) };
        Ok(vec![
            ("agent A".into(), data::dir_bytes(&agents.a.home)?),
            ("agent B".into(), data::dir_bytes(&agents.b.home)?),
        ])
    }

    fn stop_target(&mut self) -> Result<bool> {
        self.agents()?.b.stop();
        Ok(true)
    }

    fn start_target(&mut self) -> Result<()> {
        self.agents()?.b.start_again()
    }
}

/// Why the agents are not usable: a missing piece (`unavailable`) or a failure.
struct AgentsMissing {
    why: String,
    unavailable: bool,
}

impl From<anyhow::Error> for AgentsMissing {
    fn from(e: anyhow::Error) -> AgentsMissing {
        AgentsMissing { unavailable: e.downcast_ref::<Unavailable>().is_some(), why: format!("{e:#}") }
    }
}

pub fn http_scenario(slot: &mut Slot<Filesync>, s: &Settings) -> Scenario {
    let mut sc = Scenario::new(
        7,
        "HTTP API",
        "`wrk` (2 threads) against `filesync-http` on loopback, backed by MariaDB and Redis. A user is registered and \
         logged in first; `GET /check-token` carries its token. Logins use the configured bcrypt cost (12, the \
         production default, unless the run says otherwise), so they are CPU-bound by design; the third series runs `/check-token` while logins run.",
    );
    let o = http_bench::Options {
        runs: s.runs(),
        duration: s.http_duration(),
        connections: s.http_connections,
        bcrypt_cost: s.bcrypt_cost(),
    };
    measure(&mut sc, &http_bench::TESTS, FILESYNC, slot, |f| {
        let root = f.root.clone();
        http_bench::run(f, &root, o)
    });
    sc
}

pub fn connections_scenario(slot: &mut Slot<Filesync>, s: &Settings) -> Scenario {
    let counts = s.connections();
    let mut sc = Scenario::new(
        5,
        "Idle connections",
        "The harness opens N connections to node 1 with the protocol client library (TCP, `Hello` with a JWT, \
         `Welcome`), 256 handshakes at a time, waits 2 s, and reads the node's VmRSS from /proc. Per connection = \
         (RSS with N open − RSS before the scenario's first connection) ÷ N, so memory kept from an earlier sample \
         counts against the later one. The connections then close before the next sample.",
    );
    let tests: Vec<String> = counts.iter().map(|&n| load::rss_per_connection_test(n)).collect();
    let tests: Vec<&str> = tests.iter().map(String::as_str).collect();
    let runs = s.runs();
    measure(&mut sc, &tests, FILESYNC, slot, |f| load::connections(f, &counts, runs));
    sc
}

pub fn fanout_scenario(slot: &mut Slot<Filesync>, s: &Settings) -> Scenario {
    let n = s.subscribers();
    let mut sc = Scenario::new(
        6,
        "Fan-out",
        &format!(
            "{n} connections of a workspace member, spread evenly over both nodes, subscribe to the workspace. The \
             owner, connected to node 1, uploads a new 4 KiB file; the clock starts just before the upload and stops \
             for each connection when its `Change` event arrives. Percentiles are over every connection of every \
             change; max is the slowest connection of each change."
        ),
    );
    let runs = s.runs();
    measure(&mut sc, &[load::FANOUT_P50, load::FANOUT_P99, load::FANOUT_MAX], FILESYNC, slot, |f| {
        let root = f.root.clone();
        load::fanout(f, &root, n, runs)
    });
    sc
}

pub fn node_load_scenario(slot: &mut Slot<Filesync>, s: &Settings) -> Scenario {
    let o = node_load::Options {
        committers: s.committers(),
        streams: s.streams(),
        duration: s.load_duration(),
        runs: s.runs(),
        seed: s.seed,
    };
    let mut sc = Scenario::new(
        8,
        "One node under load",
        &format!(
            "The harness connects to node 1 with the protocol client library, each connection to its own \
             workspace of one user. Commits: for {secs} s, one connection and then {c} at once each commit new 4 KiB \
             files of random bytes one after another (`put_file`: chunks sent, verified, stored, committed in the \
             database, the change published); the rate counts every commit of every connection. Upload: {w} \
             connections send new 16 MiB files of random bytes for {secs} s; download: the same connections then \
             fetch every file they sent. Rates are bytes of file content per second through one node, which shares \
             the machine with the database, Redis, the chunk store and the harness.",
            secs = o.duration.as_secs(),
            c = o.committers,
            w = o.streams,
        ),
    );
    let tests = node_load::tests(&o);
    let tests: Vec<&str> = tests.iter().map(String::as_str).collect();
    measure(&mut sc, &tests, FILESYNC, slot, |f| {
        let root = f.root.clone();
        node_load::run(f, &root, o)
    });
    sc
}

//! filesync itself, as a user runs it: the server side ([`stack`]) and two
//! `filesync` agents with separate homes and folders ([`agents`]), A on node
//! 1 and B on node 2, plus the filesync-only scenarios 5–7.

pub mod agents;
pub mod api;
pub mod http_bench;
pub mod stack;

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::lab::{measure, Slot, Unavailable};
use crate::report::{Scenario, FILESYNC};
use crate::Settings;
use agents::Agents;
use stack::{Stack, Tuning};

pub const RSS_PER_CONN_10K: &str = "idle connections: node RSS per connection at 10,000";
pub const FANOUT_P99: &str = "fan-out: p99";
pub use http_bench::CHECK_RATE as CHECK_TOKEN_RATE;

pub struct Filesync {
    root: PathBuf,
    // Agents stop before the servers they talk to.
    agents: Result<Agents, String>,
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
        let tuning = Tuning { bcrypt_cost: s.bcrypt_cost(), max_connections: max_conns + 1000 };
        let stack = Stack::start(root, &bins, &tuning)?;
        let agents = match Agents::start(root, &bins, &stack) {
            Ok(a) => Ok(a),
            Err(e) => match e.downcast_ref::<Unavailable>() {
                Some(u) => Err(u.0.clone()),
                None => return Err(e),
            },
        };
        Ok(Filesync { root: root.to_path_buf(), agents, stack })
    }

    /// A's and B's agents as a [`crate::mirror::Mirror`].
    pub fn mirror(&mut self) -> Result<&mut Agents> {
        match &mut self.agents {
            Ok(a) => Ok(a),
            Err(why) => Err(Unavailable(why.clone()).into()),
        }
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

pub fn connections_scenario(slot: &mut Slot<Filesync>, _s: &Settings) -> Scenario {
    let mut sc = Scenario::new(5, "Idle connections", "");
    measure(&mut sc, &[RSS_PER_CONN_10K], FILESYNC, slot, |_| {
        Err(Unavailable("load generator not written yet".into()).into())
    });
    sc
}

pub fn fanout_scenario(slot: &mut Slot<Filesync>, _s: &Settings) -> Scenario {
    let mut sc = Scenario::new(6, "Fan-out", "");
    measure(&mut sc, &[FANOUT_P99], FILESYNC, slot, |_| {
        Err(Unavailable("fan-out client not written yet".into()).into())
    });
    sc
}

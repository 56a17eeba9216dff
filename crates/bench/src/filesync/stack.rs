//! The server side of filesync as separate processes on 127.0.0.1: a fresh
//! MariaDB database (created for the run, dropped after it), the shared
//! Redis, `filesync-http`, and two `filesync-tcp` nodes sharing the database,
//! Redis and one chunk store.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use super::database::RunDatabase;

use crate::lab::Unavailable;
use crate::procs::{free_port, wait_for, Proc};

const STARTUP: Duration = Duration::from_secs(60);
pub const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// How the daemons are configured beyond addresses and paths.
#[derive(Debug, Clone)]
pub struct Tuning {
    pub bcrypt_cost: u32,
    pub max_connections: usize,
    /// Chunks in a fresh prefix of the tests' S3 bucket instead of a directory.
    pub s3: bool,
}

pub struct Node {
    pub proc: Proc,
    pub port: u16,
    pub admin_port: u16,
}

impl Node {
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn metrics(&self) -> Result<Vec<(String, f64)>> {
        metrics_at(self.admin_port)
    }
}

/// A node's Prometheus metrics from its admin port, as name (with labels) → value.
pub fn metrics_at(admin_port: u16) -> Result<Vec<(String, f64)>> {
    let url = format!("http://127.0.0.1:{admin_port}/metrics");
    let text = reqwest::blocking::Client::builder().no_proxy().build()?.get(&url).send()?.text()?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect())
}

pub struct Stack {
    pub http: Proc,
    pub http_port: u16,
    pub nodes: Vec<Node>,
    /// Why the nodes are missing, if they are.
    pub nodes_missing: Option<String>,
    // Dropped last: the database goes once every process using it has stopped.
    _db: RunDatabase,
}

impl Drop for Stack {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.proc.stop();
        }
        self.http.stop();
    }
}

/// The path of `bin` in `dir`, or an [`Unavailable`] error naming it.
pub fn binary(dir: &Path, bin: &str) -> Result<PathBuf> {
    let path = dir.join(bin);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Unavailable(format!("{bin} is not built in {} (cargo build --release --workspace --bins)", dir.display()))
            .into())
    }
}

impl Stack {
    pub fn start(root: &Path, bins: &Path, tuning: &Tuning) -> Result<Stack> {
        let http_bin = binary(bins, "filesync-http")?;
        let db = RunDatabase::create()?;
        let secret = format!("{:032x}{:032x}", rand::random::<u128>(), rand::random::<u128>());
        let storage = root.join("storage");
        std::fs::create_dir_all(&storage)?;
        let mut storage_env = vec![("FILESYNC_STORAGE", storage.display().to_string())];
        if tuning.s3 {
            storage_env = filesync_testkit::TestS3::try_fresh().map_err(Unavailable)?.env();
        }
        let daemon = |bin: &Path, name: &str| -> Command {
            let mut cmd = Command::new(bin);
            // Nothing from the caller's environment may change what is measured.
            for (k, _) in std::env::vars_os() {
                if k.to_string_lossy().starts_with("FILESYNC_") {
                    cmd.env_remove(k);
                }
            }
            cmd.env("FILESYNC_DATABASE_URL", db.url())
                .env("FILESYNC_REDIS_URL", REDIS_URL)
                .env("FILESYNC_JWT_SECRET", &secret)
                .env("FILESYNC_DATA_DIR", root.join(format!("{name}-data")))
                .envs(storage_env.iter().map(|(k, v)| (k, v)))
                .env("FILESYNC_BCRYPT_COST", tuning.bcrypt_cost.to_string())
                .env("FILESYNC_MAX_CONNECTIONS", tuning.max_connections.to_string())
                .env("FILESYNC_NODE_ID", name)
                .env("RUST_LOG", "info");
            cmd
        };
        let http_port = free_port()?;
        let mut cmd = daemon(&http_bin, "http");
        cmd.env("FILESYNC_HTTP_ADDR", format!("127.0.0.1:{http_port}"));
        let mut http = Proc::spawn("filesync-http", cmd, root)?;
        wait_ready(&mut http, &format!("http://127.0.0.1:{http_port}/readyz"))?;

        let mut nodes = Vec::new();
        let mut nodes_missing = None;
        match binary(bins, "filesync-tcp") {
            Err(e) => nodes_missing = Some(e.to_string()),
            Ok(tcp_bin) => {
                for i in 1..=2 {
                    let (port, admin_port) = (free_port()?, free_port()?);
                    let mut cmd = daemon(&tcp_bin, &format!("node{i}"));
                    cmd.env("FILESYNC_TCP_ADDR", format!("127.0.0.1:{port}"))
                        .env("FILESYNC_TCP_ADMIN_ADDR", format!("127.0.0.1:{admin_port}"));
                    let mut proc = Proc::spawn(&format!("filesync-tcp-{i}"), cmd, root)?;
                    wait_ready(&mut proc, &format!("http://127.0.0.1:{admin_port}/readyz"))?;
                    nodes.push(Node { proc, port, admin_port });
                }
            }
        }
        Ok(Stack { http, http_port, nodes, nodes_missing, _db: db })
    }

    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn nodes(&self) -> Result<&[Node]> {
        match &self.nodes_missing {
            Some(why) => Err(Unavailable(why.clone()).into()),
            None => Ok(&self.nodes),
        }
    }

    pub fn ensure_running(&mut self) -> Result<()> {
        self.http.ensure_running()?;
        self.nodes.iter_mut().try_for_each(|n| n.proc.ensure_running())
    }
}

/// Waits until `url` answers 200, failing early if the process dies.
fn wait_ready(proc: &mut Proc, url: &str) -> Result<()> {
    let http = reqwest::blocking::Client::builder().no_proxy().timeout(Duration::from_secs(2)).build()?;
    wait_for(url, STARTUP, Duration::from_millis(50), || {
        proc.ensure_running()?;
        Ok(http.get(url).send().is_ok_and(|r| r.status().is_success()).then_some(()))
    })
    .with_context(|| format!("waiting for {url}"))
}

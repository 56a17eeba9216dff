//! What the run was measured on: CPU, memory, kernel and tool versions.

use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    pub cpus: usize,
    pub cores: usize,
    pub cpu_model: String,
    pub memory: String,
    pub kernel: String,
    pub os: String,
    pub temp_fs: String,
    pub versions: Vec<String>,
}

impl Machine {
    pub fn describe(temp_dir: &Path) -> Machine {
        let cpuinfo = read("/proc/cpuinfo");
        let meminfo = read("/proc/meminfo");
        let mem_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?.trim().parse().ok())
            .unwrap_or(0.0);
        let versions = [
            ("rsync", &["--version"][..]),
            ("syncthing", &["--version"]),
            ("wrk", &["--version"]),
            ("mysql", &["--version"]),
            ("redis-server", &["--version"]),
        ]
        .iter()
        .filter_map(|(tool, args)| first_line_of(tool, args))
        .collect();
        Machine {
            cpus: cpuinfo.lines().filter(|l| l.starts_with("processor")).count(),
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            cpu_model: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|(_, v)| v.trim().to_owned()))
                .unwrap_or_else(|| "unknown CPU".into()),
            memory: format!("{:.1} GiB", mem_kib / 1024.0 / 1024.0),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            os: read("/etc/os-release")
                .lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_owned()))
                .unwrap_or_else(|| "unknown OS".into()),
            temp_fs: filesystem_of(temp_dir),
            versions,
        }
    }
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn first_line_of(tool: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(tool).args(args).output().ok()?;
    // wrk prints its version to stderr and exits 1.
    let text = if out.stdout.is_empty() { out.stderr } else { out.stdout };
    let line = String::from_utf8_lossy(&text).lines().next()?.trim().to_owned();
    (!line.is_empty()).then_some(line)
}

/// "ext4 (/)" for the mount holding `path`: the longest mount point that is a prefix of it.
fn filesystem_of(path: &Path) -> String {
    let mounts = read("/proc/mounts");
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, point, fs) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(point).then(|| (point.len(), format!("{fs} ({point})")))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, s)| s)
        .unwrap_or_else(|| "unknown filesystem".into())
}

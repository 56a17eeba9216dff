//! Peer: rsync pushing A to a local rsync daemon serving B, over plain TCP on
//! loopback. Each change is one client run, timed by the scenario; bytes are
//! the client's own `--stats`. Variants: `--inplace`, and `-z` (compression,
//! the algorithm rsync negotiates between the two ends: zstd when both have it).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

use crate::mirror::{Mirror, Wire, TRANSFER_TIMEOUT};
use crate::procs::{free_port, run_capture, wait_for_port, Proc};

pub struct Rsync {
    daemon: Proc,
    port: u16,
    src: PathBuf,
    dst: PathBuf,
    inplace: bool,
    compress: bool,
}

impl Rsync {
    /// A daemon serving an empty B under `root`, and an empty A beside it.
    pub fn start(root: &Path, inplace: bool, compress: bool) -> Result<Rsync> {
        let (src, dst) = (root.join("A"), root.join("B"));
        std::fs::create_dir_all(&src)?;
        std::fs::create_dir_all(&dst)?;
        let conf = root.join("rsyncd.conf");
        let uid = rustix::process::getuid().as_raw();
        let gid = rustix::process::getgid().as_raw();
        std::fs::write(
            &conf,
            format!(
                "use chroot = no\nuid = {uid}\ngid = {gid}\n[bench]\n    path = {}\n    read only = no\n",
                dst.display()
            ),
        )?;
        let port = free_port()?;
        let mut cmd = Command::new("rsync");
        cmd.arg("--daemon").arg("--no-detach").arg("--address=127.0.0.1").arg(format!("--port={port}"));
        cmd.arg(format!("--config={}", conf.display()));
        let daemon = Proc::spawn("rsyncd", cmd, root)?;
        wait_for_port(port, Duration::from_secs(20)).with_context(|| daemon.log_tail())?;
        Ok(Rsync { daemon, port, src, dst, inplace, compress })
    }
}

impl Mirror for Rsync {
    fn name(&self) -> String {
        match (self.inplace, self.compress) {
            (true, false) => "rsync --inplace".into(),
            (false, true) => "rsync -z".into(),
            (true, true) => "rsync -z --inplace".into(),
            (false, false) => "rsync".into(),
        }
    }

    fn source(&self) -> &Path {
        &self.src
    }

    fn target(&self) -> &Path {
        &self.dst
    }

    fn push(&mut self) -> Result<Option<Wire>> {
        let mut cmd = Command::new("rsync");
        cmd.args(["-a", "--delete", "--stats"]);
        if self.inplace {
            cmd.arg("--inplace");
        }
        if self.compress {
            cmd.arg("-z");
        }
        cmd.arg(format!("{}/", self.src.display())).arg(format!("rsync://127.0.0.1:{}/bench/", self.port));
        let out = run_capture(cmd, TRANSFER_TIMEOUT)?;
        parse_stats(&out).map(Some)
    }

    fn wire_source(&self) -> &'static str {
        "rsync --stats (client)"
    }

    fn processes(&self) -> Vec<(String, u32)> {
        vec![("rsync daemon".into(), self.daemon.pid())]
    }

    fn ensure_running(&mut self) -> Result<()> {
        self.daemon.ensure_running()
    }
}

/// "Total bytes sent" and "Total bytes received" from the client's `--stats`.
fn parse_stats(out: &str) -> Result<Wire> {
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(name)?.trim().replace(',', "").parse::<u64>().ok())
            .ok_or_else(|| anyhow!("no \"{name}\" in rsync --stats output:\n{out}"))
    };
    let sent = field("Total bytes sent:")?;
    let received = field("Total bytes received:")?;
    Ok(Wire { sent_by_a: sent, received_by_b: sent, total: sent + received })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data;

    #[test]
    fn stats_give_bytes_in_both_directions() {
        let out = "Number of files: 2\nTotal bytes sent: 163,945\nTotal bytes received: 229,423\n\nsent 163,945 bytes";
        let w = parse_stats(out).unwrap();
        assert_eq!(w, Wire { sent_by_a: 163_945, received_by_b: 163_945, total: 393_368 });
        assert!(parse_stats("nothing").is_err());
    }

    #[test]
    fn a_push_mirrors_a_into_b_through_the_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Rsync::start(dir.path(), false, false).unwrap();
        data::write_tree(r.source(), 2, 2, 4096, &mut data::rng(1)).unwrap();
        let wire = r.push().unwrap().unwrap();
        assert!(wire.sent_by_a > 4 * 4096, "{wire:?}");
        data::same_tree(r.source(), r.target()).unwrap();
        r.clear(Path::new("d000")).unwrap();
        assert!(data::is_gone(&r.target().join("d000")));
    }
}

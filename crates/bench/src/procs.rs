//! Processes the harness starts. Each runs in its own process group and the
//! whole group is stopped when its [`Proc`] is dropped, so an error half-way
//! through a run leaves nothing behind. A first SIGINT/SIGTERM makes every
//! wait loop fail (so the normal drops run); a second one kills every group
//! still registered and exits.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rustix::process::{kill_process_group, Pid, Signal};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static GROUPS: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// Listens for SIGINT/SIGTERM on a background thread.
pub fn install_signal_handling() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
                return;
            };
            for round in 0.. {
                tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
                INTERRUPTED.store(true, Ordering::SeqCst);
                if round == 0 {
                    eprintln!("interrupted: stopping after cleanup (again to force)");
                    continue;
                }
                kill_all_groups(Signal::KILL);
                std::process::exit(130);
            }
        })
    })?;
    Ok(())
}

/// Fails once the run was interrupted; every wait loop calls it.
pub fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

fn kill_all_groups(sig: Signal) {
    let groups: Vec<i32> = GROUPS.lock().map(|g| g.iter().copied().collect()).unwrap_or_default();
    for pgid in groups {
        if let Some(pid) = Pid::from_raw(pgid) {
            let _ = kill_process_group(pid, sig);
        }
    }
}

/// Polls `probe` every `every` until it yields a value, failing after `timeout` or on interrupt.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = probe()? {
            return Ok(v);
        }
        check_interrupted()?;
        if start.elapsed() > timeout {
            bail!("timed out after {:.0?} waiting for {what}", timeout);
        }
        std::thread::sleep(every);
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> Result<()> {
    wait_for(&format!("127.0.0.1:{port} to accept connections"), timeout, Duration::from_millis(20), || {
        Ok(TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ()))
    })
}

/// A running child in its own process group, with its output in a log file.
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts `cmd`; stdout and stderr go to `<log_dir>/<name>.log`.
    pub fn spawn(name: &str, cmd: Command, log_dir: &Path) -> Result<Proc> {
        Proc::spawn_with_stdin(name, cmd, log_dir, false)
    }

    /// [`Proc::spawn`]; with `keep_stdin` the command's own stdin setting is kept instead of /dev/null.
    fn spawn_with_stdin(name: &str, mut cmd: Command, log_dir: &Path, keep_stdin: bool) -> Result<Proc> {
        let log = log_dir.join(format!("{name}.log"));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        if !keep_stdin {
            cmd.stdin(Stdio::null());
        }
        cmd.stdout(out.try_clone()?).stderr(out).process_group(0);
        let child = cmd.spawn().with_context(|| format!("starting {name}: {cmd:?}"))?;
        if let Ok(mut g) = GROUPS.lock() {
            g.insert(child.id() as i32);
        }
        Ok(Proc { name: name.to_owned(), child, log })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An error with the end of its log if the process has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => Err(anyhow!("{} exited ({status}); log tail:\n{}", self.name, self.log_tail())),
        }
    }

    /// The last few KiB of its log, for error messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log, 4096)
    }

    /// Waits for it to exit on its own (for one-shot commands), failing on timeout or interrupt.
    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let name = self.name.clone();
        let child = &mut self.child;
        wait_for(&format!("{name} to finish"), timeout, Duration::from_millis(2), || Ok(child.try_wait()?))
    }

    /// SIGTERM to the group, then SIGKILL if it has not exited within a few seconds.
    pub fn stop(&mut self) {
        let pgid = self.child.id() as i32;
        if let Some(pid) = Pid::from_raw(pgid) {
            if matches!(self.child.try_wait(), Ok(None)) {
                let _ = kill_process_group(pid, Signal::TERM);
                let deadline = Instant::now() + Duration::from_secs(10);
                while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            // The leader may be gone while forked helpers of the group are not.
            let _ = kill_process_group(pid, Signal::KILL);
        }
        let _ = self.child.wait();
        if let Ok(mut g) = GROUPS.lock() {
            g.remove(&pgid);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn log_tail(path: &Path, max: u64) -> String {
    let Ok(mut f) = File::open(path) else { return String::new() };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// Runs a one-shot command to completion with a timeout; its output is returned, and is part of the error on failure.
pub fn run_capture(cmd: Command, timeout: Duration) -> Result<String> {
    run_with_input(cmd, None, timeout)
}

/// [`run_capture`], with `input` on the command's standard input (e.g. a password it reads from stdin).
pub fn run_with_input(mut cmd: Command, input: Option<&str>, timeout: Duration) -> Result<String> {
    let dir = tempfile::tempdir()?;
    let shown = format!("{cmd:?}");
    cmd.current_dir(std::env::current_dir()?);
    if let Some(text) = input {
        let path = dir.path().join("stdin");
        std::fs::write(&path, text)?;
        cmd.stdin(File::open(&path)?);
    }
    let mut p = Proc::spawn_with_stdin("cmd", cmd, dir.path(), input.is_some())?;
    let status = p.wait(timeout)?;
    let out = std::fs::read_to_string(&p.log).unwrap_or_default();
    if !status.success() {
        bail!("{shown} failed ({status}):\n{}", tail_str(&out, 4096));
    }
    Ok(out)
}

fn tail_str(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Memory of a process as the kernel reports it, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    pub rss_kib: u64,
    pub peak_kib: u64,
}

pub fn memory(pid: u32) -> Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_memory(&status).ok_or_else(|| anyhow!("no VmRSS/VmHWM in /proc/{pid}/status"))
}

fn parse_memory(status: &str) -> Option<Memory> {
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
    };
    Some(Memory { rss_kib: field("VmRSS:")?, peak_kib: field("VmHWM:")? })
}

/// Resets the peak RSS (VmHWM) to the current RSS, so a peak can be read per sample.
pub fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Raises the open-file limit to its hard maximum (children inherit it); returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let cur = getrlimit(Resource::Nofile);
    if let Some(max) = cur.maximum {
        let _ = setrlimit(Resource::Nofile, Rlimit { current: Some(max), maximum: Some(max) });
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Bytes `pid`'s established TCP sockets have sent (and had acknowledged) and received, as the kernel counts
/// them (`ss -tinp`). Sockets closed in the meantime are not counted.
pub fn socket_bytes(pid: u32) -> Result<(u64, u64)> {
    let mut cmd = Command::new("ss");
    cmd.args(["-tinpH", "state", "established"]);
    let out = run_capture(cmd, Duration::from_secs(30))?;
    Ok(parse_socket_bytes(&out, pid))
}

fn parse_socket_bytes(ss: &str, pid: u32) -> (u64, u64) {
    let owner = format!("pid={pid},");
    let (mut sent, mut received, mut mine) = (0, 0, false);
    for line in ss.lines() {
        if !line.starts_with(char::is_whitespace) {
            mine = line.contains(&owner);
            continue;
        }
        if mine {
            let field = |name: &str| {
                line.split_whitespace().find_map(|w| w.strip_prefix(name)?.parse::<u64>().ok()).unwrap_or(0)
            };
            sent += field("bytes_acked:");
            received += field("bytes_received:");
        }
    }
    (sent, received)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_fields_are_read_from_proc_status() {
        let status = "Name:\tx\nVmHWM:\t  20480 kB\nVmRSS:\t   10240 kB\nThreads:\t3\n";
        assert_eq!(parse_memory(status), Some(Memory { rss_kib: 10240, peak_kib: 20480 }));
        assert_eq!(parse_memory("Name:\tx\n"), None);
        let me = memory(std::process::id()).unwrap();
        assert!(me.rss_kib > 0 && me.peak_kib >= me.rss_kib);
    }

    #[test]
    fn dropping_a_proc_stops_its_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sh");
        // The shell forks a sleeping child that would outlive a plain kill of the shell.
        cmd.args(["-c", "sleep 300 & echo $! > child.pid; wait"]).current_dir(dir.path());
        let p = Proc::spawn("sleeper", cmd, dir.path()).unwrap();
        let pid_file = dir.path().join("child.pid");
        let child: u32 = wait_for("child pid", Duration::from_secs(10), Duration::from_millis(10), || {
            Ok(std::fs::read_to_string(&pid_file).ok().and_then(|s| s.trim().parse().ok()))
        })
        .unwrap();
        assert!(Path::new(&format!("/proc/{child}")).exists());
        drop(p);
        wait_for("grandchild to go", Duration::from_secs(10), Duration::from_millis(10), || {
            let state = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            // Gone, or a zombie waiting for init to reap it.
            Ok((state.is_empty() || state.contains(") Z")).then_some(()))
        })
        .unwrap();
    }

    #[test]
    fn socket_bytes_are_summed_per_process() {
        let ss = "0      0   127.0.0.1:1  127.0.0.1:2 users:((\"x\",pid=42,fd=5))
\t cubic bytes_sent:10 bytes_acked:10 bytes_received:300 segs_out:2
0      0   127.0.0.1:3  127.0.0.1:4 users:((\"y\",pid=420,fd=5))
\t cubic bytes_acked:7 bytes_received:9
0      0   127.0.0.1:5  127.0.0.1:6 users:((\"x\",pid=42,fd=6))
\t cubic bytes_acked:5
";
        assert_eq!(parse_socket_bytes(ss, 42), (15, 300));
        assert_eq!(parse_socket_bytes(ss, 420), (7, 9));
        assert_eq!(parse_socket_bytes(ss, 1), (0, 0));
    }

    #[test]
    fn input_reaches_the_command() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "read line; echo got $line"]);
        assert_eq!(run_with_input(cmd, Some("secret\n"), Duration::from_secs(10)).unwrap().trim(), "got secret");
    }

    #[test]
    fn failing_command_reports_its_output() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo boom >&2; exit 3"]);
        let err = run_capture(cmd, Duration::from_secs(10)).unwrap_err().to_string();
        assert!(err.contains("boom") && err.contains('3'), "{err}");
    }
}

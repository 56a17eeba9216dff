//! Harness for the client's tests: real servers through their `run` seams on
//! 127.0.0.1:0 (the HTTP API, and TCP sync nodes when a test needs them), each
//! test on its own fresh database, and the real `filesync` binary run with its
//! own `--home`.

#![allow(dead_code)] // each test file uses a different part

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use filesync_core::config::Config;
use filesync_core::db::Backend;
use filesync_core::secret::Secret;
use filesync_core::testing::TestDb;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const SECRET: &str = "client-test-secret-client-test-secret-0123";
/// Longest one CLI command may take before the test counts it as hung.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// A daemon started through its `run` seam; stopped when dropped.
pub struct Daemon {
    pub addr: String,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Daemon {
    pub fn new(addr: String, shutdown: oneshot::Sender<()>, task: JoinHandle<anyhow::Result<()>>) -> Daemon {
        Daemon { addr, shutdown: Some(shutdown), task: Some(task) }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A daemon config for tests: bcrypt cost 4, a fixed secret, the test database, chunks under `dir`.
pub fn config(db: &TestDb, dir: &Path, redis: bool) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        database_url: Some(db.url().to_owned()),
        db_pool_size: 4,
        jwt_secret: Secret::new(SECRET),
        bcrypt_cost: 4,
        redis_url: redis.then(|| "redis://127.0.0.1:6379".to_owned()),
        storage: Some(dir.join("chunks").display().to_string()),
        ..Config::default()
    }
}

pub async fn test_db(backend: Backend) -> TestDb {
    tokio::task::spawn_blocking(move || TestDb::new(backend)).await.expect("test db")
}

/// The HTTP API on a fresh port.
pub async fn start_http(config: Config) -> Daemon {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(filesync_http_api::run(listener, config, async {
        let _ = rx.await;
    }));
    let client = reqwest::Client::new();
    for _ in 0..300 {
        if let Ok(res) = client.get(format!("{addr}/readyz")).send().await {
            if res.status().is_success() {
                return Daemon { addr, shutdown: Some(tx), task: Some(task) };
            }
        }
        assert!(!task.is_finished(), "HTTP API exited during startup");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("HTTP API did not become ready");
}

/// One person's `filesync`: its own home directory, pointed at the test servers.
pub struct Cli {
    pub home: PathBuf,
    pub server: String,
    pub sync: Vec<String>,
}

impl Cli {
    pub fn new(home: PathBuf, server: &str, sync: &[String]) -> Cli {
        Cli { home, server: server.to_owned(), sync: sync.to_vec() }
    }

    /// Runs `filesync ARGS` with `stdin`; fails the test if it hangs.
    pub async fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        self.run_with_env_stdin(args, &[], stdin).await
    }

    /// [`Cli::run`] with extra environment variables and no input.
    pub async fn run_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.run_with_env_stdin(args, env, None).await
    }

    async fn run_with_env_stdin(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_filesync"));
        cmd.env_remove("FILESYNC_CA").envs(env.iter().copied());
        cmd.args(args)
            .arg("--home")
            .arg(&self.home)
            .arg("--server")
            .arg(&self.server)
            .env_remove("FILESYNC_SERVER")
            .env_remove("FILESYNC_SYNC")
            .env_remove("FILESYNC_HOME")
            .env("RUST_LOG", std::env::var("FILESYNC_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        if !self.sync.is_empty() {
            cmd.arg("--sync").arg(self.sync.join(","));
        }
        let mut child = cmd.spawn().expect("spawn filesync");
        let mut input = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).await.expect("write stdin");
        }
        drop(input);
        tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("`filesync {}` hung", args.join(" ")))
            .expect("filesync ran")
    }

    /// Runs a command that must succeed; returns its stdout.
    pub async fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin).await;
        if std::env::var_os("FILESYNC_TEST_LOG").is_some() {
            eprintln!("--- filesync {}\n{}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        }
        assert!(
            out.status.success(),
            "`filesync {}` failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a command that must fail with one line on stderr; returns that line.
    pub async fn fails(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin).await;
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "`filesync {}` should have failed: {err}", args.join(" "));
        let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(lines.len(), 1, "one error line expected, got: {err}");
        lines[0].to_owned()
    }

    /// Registers `name` (`<name>@example.com`, password `password-<name>`) and logs in.
    pub async fn register(&self, name: &str) {
        let email = format!("{name}@example.com");
        self.ok(
            &[
                "register",
                "--email",
                &email,
                "--username",
                name,
                "--first-name",
                "Test",
                "--last-name",
                "User",
                "--password-stdin",
            ],
            Some(&format!("password-{name}\n")),
        )
        .await;
    }
}

/// A redis-server of our own on a free port, so no other test's events or presence keys mix in.
pub struct TestRedis {
    pub port: u16,
    child: std::process::Child,
}

impl TestRedis {
    pub fn start() -> TestRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
        let mut child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed");
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return TestRedis { port, child };
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("redis-server did not start on port {port}");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP sync node on a fresh port.
pub async fn start_node(config: Config) -> Daemon {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(filesync_tcp_sync::run(listener, config, async {
        let _ = rx.await;
    }));
    Daemon { addr, shutdown: Some(tx), task: Some(task) }
}

/// Everything on the server side: a database, Redis, the HTTP API and `nodes` sync nodes.
pub struct Stack {
    pub http: Daemon,
    pub nodes: Vec<Daemon>,
    pub dir: tempfile::TempDir,
    _redis: TestRedis,
    _db: TestDb,
}

/// A scratch directory for a test's folders, homes and logs; FILESYNC_TEST_KEEP=1 keeps it for a look after.
pub fn test_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .disable_cleanup(std::env::var_os("FILESYNC_TEST_KEEP").is_some())
        .tempdir()
        .expect("tempdir")
}

impl Stack {
    pub async fn start(backend: Backend, nodes: usize) -> Stack {
        Stack::start_with(backend, nodes, |_| {}).await
    }

    /// [`Stack::start`] with the daemons' config adjusted by `tweak`.
    pub async fn start_with(backend: Backend, nodes: usize, tweak: impl Fn(&mut Config)) -> Stack {
        let db = test_db(backend).await;
        let dir = test_dir("filesync-e2e-");
        let redis = TestRedis::start();
        let mut cfg = config(&db, &dir.path().join("data"), false);
        cfg.redis_url = Some(redis.url());
        tweak(&mut cfg);
        let http = start_http(cfg.clone()).await;
        let mut started = Vec::new();
        for i in 0..nodes {
            let mut node_cfg = cfg.clone();
            node_cfg.node_id = Some(format!("node-{}", i + 1));
            started.push(start_node(node_cfg).await);
        }
        Stack { http, nodes: started, dir, _redis: redis, _db: db }
    }

    /// The test database's URL, for a test that acts on the server's data directly (retention).
    pub fn db_url(&self) -> &str {
        self._db.url()
    }

    pub fn node_addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    /// A person's CLI talking to these nodes, in the given order.
    pub fn cli(&self, name: &str, sync: &[String]) -> Cli {
        Cli::new(self.dir.path().join(format!("home-{name}")), &self.http.addr, sync)
    }
}

/// A running `filesync sync` process; killed when dropped.
pub struct Agent {
    child: tokio::process::Child,
    pub log: PathBuf,
}

impl Cli {
    /// Starts `filesync sync` in the background; its log goes to `<home>/agent.log`.
    pub fn spawn_sync(&self) -> Agent {
        self.spawn_sync_with_env(&[])
    }

    /// [`Cli::spawn_sync`] with extra environment variables (the agent's tuning knobs).
    pub fn spawn_sync_with_env(&self, env: &[(&str, &str)]) -> Agent {
        std::fs::create_dir_all(&self.home).expect("home");
        let log = self.home.join("agent.log");
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log");
        let err = out.try_clone().expect("log");
        // FILESYNC_TEST_AGENT_BIN runs another build of the agent (a before/after measurement).
        let bin = std::env::var_os("FILESYNC_TEST_AGENT_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_filesync").into());
        let mut cmd = tokio::process::Command::new(bin);
        cmd.args(["sync", "--no-notify", "--no-progress", "--home"])
            .arg(&self.home)
            .args(["--server", &self.server])
            .env_remove("FILESYNC_SERVER")
            .env_remove("FILESYNC_HOME")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        if !self.sync.is_empty() {
            cmd.arg("--sync").arg(self.sync.join(","));
        }
        Agent { child: cmd.spawn().expect("spawn filesync sync"), log }
    }
}

impl Agent {
    /// Waits up to `within` for the agent to exit by itself.
    pub async fn wait(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(within, self.child.wait()).await.ok().and_then(Result::ok)
    }

    /// SIGKILL: no chance to clean up or save.
    pub async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// SIGTERM, then waits for a clean exit.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("the agent stops after SIGTERM")
            .expect("wait");
        assert!(
            status.success(),
            "agent exited with {status}: {}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Every file under `root` and the BLAKE3 of its content, by `/`-separated relative path.
pub fn tree(root: &Path) -> std::collections::BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut std::collections::BTreeMap<String, String>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                walk(root, &p, out);
            } else if ft.is_file() {
                let rel = p.strip_prefix(root).expect("inside").to_string_lossy().replace('\\', "/");
                let hash = std::fs::read(&p).map(|b| blake3::hash(&b).to_hex().to_string()).unwrap_or_default();
                out.insert(rel, hash);
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Polls `check` until it holds, failing the test after `within`.
pub async fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    eventually_async(what, within, || std::future::ready(check())).await;
}

/// [`eventually`] for checks that run commands.
pub async fn eventually_async<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

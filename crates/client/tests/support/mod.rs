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
        storage: Some(dir.join("chunks")),
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
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_filesync"));
        cmd.args(args)
            .arg("--home")
            .arg(&self.home)
            .arg("--server")
            .arg(&self.server)
            .env_remove("FILESYNC_SERVER")
            .env_remove("FILESYNC_SYNC")
            .env_remove("FILESYNC_HOME")
            .env("RUST_LOG", "warn")
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

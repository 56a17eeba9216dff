//! The web UI in a real browser: `node tests/browser/story.mjs` drives Debian's
//! headless `chromium` through playwright-core against a real stack (the HTTP
//! API serving the UI, a sync node, Redis, the database), while a real
//! `filesync sync` agent keeps a folder of the same workspace in sync.
//!
//! The story asks this test for the agent over its stdout (`@@agent <email>
//! <password> <workspace>`); the test logs the CLI in, links a folder, starts
//! `filesync sync` and answers with the folder's path on the story's stdin.
//!
//! It needs `node`, `/usr/bin/chromium` and `npm ci` in tests/browser (`bash
//! .ci/run` installs all three). Without them it FAILS and says what is
//! missing, unless FILESYNC_SKIP_BROWSER=1. Screenshots of every page go to
//! `target/browser-shots/<backend>/` (not in git).

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use filesync_core::db::Backend;
use support::{Agent, Stack};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The longest the whole browser story may take on one backend.
const STORY_TIMEOUT: Duration = Duration::from_secs(300);

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn chromium() -> PathBuf {
    std::env::var_os("FILESYNC_CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// What is missing to run the story, if anything.
fn missing_prerequisites() -> Vec<String> {
    let mut missing = Vec::new();
    let node = std::process::Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        missing.push("`node` (apt-get install nodejs npm)".to_owned());
    }
    if !chromium().exists() {
        missing.push(format!("{} (apt-get install chromium)", chromium().display()));
    }
    if !browser_dir().join("node_modules/playwright-core/package.json").exists() {
        missing.push(format!("playwright-core (cd {} && npm ci)", browser_dir().display()));
    }
    missing
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_does_everything_in_the_browser_while_an_agent_syncs() {
    if std::env::var("FILESYNC_SKIP_BROWSER").is_ok_and(|v| v == "1") {
        eprintln!("FILESYNC_SKIP_BROWSER=1: the browser story is skipped");
        return;
    }
    let missing = missing_prerequisites();
    assert!(
        missing.is_empty(),
        "the browser story needs {} (bash .ci/run installs them); set FILESYNC_SKIP_BROWSER=1 to skip it",
        missing.join(", ")
    );
    for backend in [Backend::Sqlite, Backend::Mysql] {
        tokio::time::timeout(STORY_TIMEOUT, story(backend))
            .await
            .unwrap_or_else(|_| panic!("the browser story timed out on {backend:?}"));
    }
}

async fn story(backend: Backend) {
    let stack = Stack::start(backend, 1).await;
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../target/browser-shots/{backend:?}"));
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).expect("screenshot dir");

    let mut child = tokio::process::Command::new("node")
        .arg(browser_dir().join("story.mjs"))
        .arg(&stack.http.addr)
        .current_dir(browser_dir())
        .env("STORY_SHOTS", &shots)
        // playwright makes the browser's new, empty profile under TMPDIR: inside this test's scratch dir.
        .env("TMPDIR", stack.dir.path())
        .env("STORY_CHROMIUM", chromium())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start node");
    let mut to_story = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut agents: Vec<Agent> = Vec::new();
    let mut said = Vec::new();
    while let Some(line) = lines.next_line().await.expect("story output") {
        println!("story[{backend:?}]: {line}");
        said.push(line.clone());
        let Some(request) = line.strip_prefix("@@agent ") else { continue };
        let [email, password, workspace] = request.split(' ').collect::<Vec<_>>()[..] else {
            panic!("bad agent request: {line}");
        };
        let (agent, folder) = start_agent(&stack, email, password, workspace).await;
        agents.push(agent);
        to_story.write_all(format!("{}\n", folder.display()).as_bytes()).await.expect("answer the story");
        to_story.flush().await.expect("flush");
    }
    let status = child.wait().await.expect("node exits");
    for agent in &agents {
        println!("--- agent log ---\n{}", agent.log_text());
    }
    assert!(status.success(), "the browser story failed on {backend:?} (see its output above)");
    assert!(said.iter().any(|l| l == "story: done"), "the story ended early: {said:?}");
    for agent in agents {
        // The story changed the password in the browser: the agent was signed out, and said so.
        let log = agent.log_text();
        assert!(log.contains("signed out"), "the agent did not notice the password change: {log}");
        agent.kill().await;
    }
}

/// Logs a CLI in as `email`, links `workspace` to a new folder, starts `filesync sync` on it.
async fn start_agent(stack: &Stack, email: &str, password: &str, workspace: &str) -> (Agent, PathBuf) {
    let name = email.split('@').next().unwrap_or("user");
    let cli = stack.cli(name, &stack.node_addrs());
    cli.ok(&["login", "--email", email, "--password-stdin"], Some(&format!("{password}\n"))).await;
    let folder = stack.dir.path().join(format!("{name}-{workspace}"));
    cli.ok(&["workspace", "link", workspace, folder.to_str().expect("utf-8 path"), "--no-sync"], None).await;
    (cli.spawn_sync(), folder)
}

//! Two `filesync` sync agents, each with its own home and folder: A's on node
//! 1 and B's on node 2, syncing one workspace that A's user owns and shares
//! with B's user. They are set up with the CLI, as a user would
//! (`login`, `workspace link`), then run `filesync sync`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::filesync::api::{Api, User};
use crate::filesync::stack::{binary, Stack};
use crate::procs::{run_with_input, Proc};

pub struct Agent {
    pub proc: Proc,
    /// Its home: configuration, credentials and each linked folder's state.
    pub home: PathBuf,
    /// `filesync sync` as it was started, to start it again.
    sync: Command,
    name: String,
    log_dir: PathBuf,
    starts: usize,
}

impl Agent {
    /// Stops the agent (SIGTERM, as a user's logout or service stop would).
    pub fn stop(&mut self) {
        self.proc.stop();
    }

    /// Starts it again with the same home and folder; its log goes to a new file.
    pub fn start_again(&mut self) -> Result<()> {
        self.starts += 1;
        let mut cmd = Command::new(self.sync.get_program());
        cmd.args(self.sync.get_args());
        for (k, v) in self.sync.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        self.proc = Proc::spawn(&format!("agent-{}-start-{}", self.name, self.starts), cmd, &self.log_dir)?;
        Ok(())
    }
}

pub struct Agents {
    pub a: Agent,
    pub b: Agent,
}

impl Agents {
    /// Registers both users, creates and shares the workspace, links `a_dir` and `b_dir`, starts both agents.
    pub fn start(root: &Path, bins: &Path, stack: &Stack, a_dir: &Path, b_dir: &Path) -> Result<Agents> {
        let nodes = stack.nodes()?;
        let cli = binary(bins, "filesync")?;
        let api = Api::new(stack.http_url())?;
        let (alice, bob) = (api.user("agent_a")?, api.user("agent_b")?);
        let ws = api.workspace(&alice, "bench")?;
        api.share(&alice, ws, &bob)?;
        let setup = AgentSetup { cli: &cli, server: stack.http_url(), workspace: ws };
        let a = setup.start(root, "A", &alice, &nodes[0].addr(), a_dir)?;
        let b = setup.start(root, "B", &bob, &nodes[nodes.len() - 1].addr(), b_dir)?;
        Ok(Agents { a, b })
    }

    pub fn ensure_running(&mut self) -> Result<()> {
        self.a.proc.ensure_running()?;
        self.b.proc.ensure_running()
    }
}

struct AgentSetup<'a> {
    cli: &'a Path,
    server: String,
    workspace: i64,
}

impl AgentSetup<'_> {
    fn command(&self, home: &Path, node: &str) -> Command {
        let mut cmd = Command::new(self.cli);
        cmd.arg("--home").arg(home).args(["--server", &self.server, "--sync", node]);
        cmd.env_remove("FILESYNC_DEBOUNCE_MS");
        cmd
    }

    fn start(&self, root: &Path, name: &str, user: &User, node: &str, dir: &Path) -> Result<Agent> {
        let home: PathBuf = root.join(format!("home-{name}"));
        std::fs::create_dir_all(&home)?;
        let step = Duration::from_secs(120);
        let mut login = self.command(&home, node);
        login.args(["login", "--email", &user.email, "--password-stdin"]);
        run_with_input(login, Some(&format!("{}\n", user.password)), step)
            .with_context(|| format!("agent {name}: filesync login"))?;
        let mut link = self.command(&home, node);
        link.args(["workspace", "link", &self.workspace.to_string()]).arg(dir).arg("--no-sync");
        run_with_input(link, None, step).with_context(|| format!("agent {name}: filesync workspace link"))?;
        let sync = || {
            let mut sync = self.command(&home, node);
            sync.args(["sync", "--no-notify", "--no-progress"]);
            sync
        };
        let (first, again) = (sync(), sync());
        Ok(Agent {
            proc: Proc::spawn(&format!("agent-{name}"), first, root)?,
            home,
            sync: again,
            name: name.to_owned(),
            log_dir: root.to_path_buf(),
            starts: 1,
        })
    }
}

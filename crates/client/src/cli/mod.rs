//! The `filesync` command line: argument parsing (clap) and one module per
//! group of commands. Commands return `anyhow` errors whose top message is
//! one line a person can act on; `main` prints it and exits non-zero.
//!
//! - [`account`]: register, login, logout, passwd, devices, whoami.
//! - [`workspace`]: create, list, share, members, role, remove, leave, rename, delete, download, link, unlink.
//! - [`files`]: history, restore, who, status.
//! - [`trash`]: the trash: list, restore.
//! - [`sync`]: the agent (`filesync sync [--once]`).

pub mod account;
pub mod files;
mod prompt;
pub mod sync;
pub mod trash;
pub mod workspace;

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context as _};
use clap::{Args, CommandFactory, Parser, Subcommand};

use filesync_core::{Role, WorkspaceId};

use crate::home::{Home, LinkedFolder, SavedToken, Settings, DEFAULT_DEBOUNCE_MS, DEFAULT_SERVER, DEFAULT_SYNC};
use crate::http::{Api, ApiWorkspace, Credentials};
use crate::tls::Trust;

/// Self-hosted real-time file sync: share a folder, keep working in it.
#[derive(Debug, Parser)]
#[command(name = "filesync", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Settings accepted before or after the subcommand; `--help` lists them apart from a command's own.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// HTTP API base URL [default: from config.toml, else http://127.0.0.1:8080].
    #[arg(long, global = true, env = "FILESYNC_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// TCP sync node addresses, tried in order: HOST:PORT, or tls://HOST:PORT for a node that serves TLS
    /// [default: from config.toml, else 127.0.0.1:7070].
    #[arg(long, global = true, env = "FILESYNC_SYNC", value_name = "ADDR[,ADDR...]", value_delimiter = ',')]
    pub sync: Vec<String>,
    /// PEM file of CA certificates trusted besides the system's, for an https:// server and tls:// sync nodes
    /// signed by a private CA.
    #[arg(long, global = true, env = "FILESYNC_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Where the token, device id, config and sync state live [default: the platform's config dir].
    #[arg(long, global = true, env = "FILESYNC_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Quiet period before a changed file is synced, in milliseconds [default: 50].
    #[arg(long, global = true, env = "FILESYNC_DEBOUNCE_MS", value_name = "MS")]
    pub debounce_ms: Option<u64>,
    /// More log output (-v: debug, -vv: trace). `RUST_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an account (prompts for what is missing).
    Register(account::RegisterArgs),
    /// Log in and keep the token in the home directory.
    Login(account::LoginArgs),
    /// Sign this device out: the server revokes its token and refresh credential, and the home forgets them.
    Logout,
    /// Change the account's password; every other device must log in again.
    Passwd(account::PasswdArgs),
    /// List the account's logged-in devices, or sign one out.
    #[command(subcommand)]
    Devices(account::DevicesCommand),
    /// Show who is logged in, and whether the server still accepts the token.
    Whoami,
    /// Create, list, share, download and link workspaces; manage their members.
    #[command(subcommand)]
    Workspace(workspace::WorkspaceCommand),
    /// Sync every linked folder until stopped (Ctrl-C finishes the file in flight and saves state).
    Sync(sync::SyncArgs),
    /// Linked folders, last seq, pending uploads and conflicts.
    Status,
    /// List the versions of a file inside a linked folder.
    History {
        /// A file inside a linked folder.
        path: PathBuf,
    },
    /// Bring back an earlier version of a file (it becomes the newest version).
    Restore {
        /// A file inside a linked folder.
        path: PathBuf,
        /// The version number, as listed by `filesync history`.
        #[arg(value_name = "VERSION")]
        number: i64,
    },
    /// Deleted files and folders of a workspace (`trash [WS]`), or bring one back (`trash restore PATH`).
    Trash(trash::TrashArgs),
    /// Members online now, per device.
    Who {
        /// Workspace id or name.
        workspace: String,
    },
    /// Print a shell completion script.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// Everything a command needs: the home directory and the settings in effect.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub home: Home,
    pub global: GlobalArgs,
    pub settings: Settings,
}

impl Ctx {
    pub fn open(global: GlobalArgs) -> anyhow::Result<Ctx> {
        let home = Home::open(global.home.clone())?;
        let settings = home.settings()?;
        Ok(Ctx { home, global, settings })
    }

    /// Flag/env, then config.toml, then the default.
    pub fn server(&self) -> String {
        self.global.server.clone().or_else(|| self.settings.server.clone()).unwrap_or_else(|| DEFAULT_SERVER.to_owned())
    }

    pub fn sync_addrs(&self) -> Vec<String> {
        let given: Vec<String> =
            self.global.sync.iter().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect();
        if !given.is_empty() {
            given
        } else if !self.settings.sync.is_empty() {
            self.settings.sync.clone()
        } else {
            vec![DEFAULT_SYNC.to_owned()]
        }
    }

    pub fn debounce_ms(&self) -> u64 {
        self.global.debounce_ms.or(self.settings.debounce_ms).unwrap_or(DEFAULT_DEBOUNCE_MS)
    }

    /// The certificates trusted for TLS: the system's, plus `--ca FILE`.
    pub fn trust(&self) -> anyhow::Result<Trust> {
        match &self.global.ca {
            Some(file) => Ok(Trust::with_ca_file(file)?),
            None => Ok(Trust::system()),
        }
    }

    /// The API without a token.
    pub fn anonymous_api(&self) -> anyhow::Result<Api> {
        Ok(Api::with_trust(&self.server(), None, &self.trust()?)?)
    }

    /// The saved token, or a clear "log in first".
    pub fn token(&self) -> anyhow::Result<SavedToken> {
        self.home.token()?.ok_or_else(|| anyhow!("not logged in; run `filesync login` first"))
    }

    /// The API with the saved login, which renews its access token as needed. The server the
    /// login came from is used unless one is given explicitly.
    pub fn api(&self) -> anyhow::Result<Api> {
        Ok(self.credentials()?.api())
    }

    /// The saved login as renewing credentials (renewed tokens are saved back in the home).
    pub fn credentials(&self) -> anyhow::Result<Credentials> {
        let token = self.token()?;
        let server = self.global.server.clone().unwrap_or_else(|| token.server.clone());
        let api = Api::with_trust(&server, None, &self.trust()?)?;
        Ok(Credentials::new(api, token, Some(self.home.clone())))
    }

    /// Remembers `--server`/`--sync` given at login so later commands need no flags.
    pub fn remember_addresses(&self) -> anyhow::Result<()> {
        let mut settings = self.settings.clone();
        if let Some(server) = &self.global.server {
            settings.server = Some(server.clone());
        }
        if !self.global.sync.is_empty() {
            settings.sync = self.sync_addrs();
        }
        if settings != self.settings {
            self.home.save_settings(&settings)?;
        }
        Ok(())
    }

    /// A workspace named by id or by name, among those the user belongs to.
    pub async fn resolve_workspace(&self, api: &Api, name_or_id: &str) -> anyhow::Result<ApiWorkspace> {
        let all = api.workspace_names().await?;
        pick_workspace(&all, name_or_id)
    }

    /// The linked folder containing `path`, and the path relative to its root (with `/` separators).
    pub fn locate(&self, path: &std::path::Path) -> anyhow::Result<(LinkedFolder, String)> {
        let abs = absolute(path)?;
        for folder in self.home.folders()? {
            if let Ok(rel) = abs.strip_prefix(&folder.root) {
                let rel = rel_to_string(rel)?;
                if rel.is_empty() {
                    bail!("{} is the root of a linked folder; name a file inside it", path.display());
                }
                return Ok((folder, rel));
            }
        }
        bail!("{} is not inside a linked folder (see `filesync status`)", path.display())
    }
}

/// Picks by exact id first, then by exact name; several with one name is an error listing their ids.
pub fn pick_workspace(all: &[ApiWorkspace], name_or_id: &str) -> anyhow::Result<ApiWorkspace> {
    if let Ok(id) = name_or_id.parse::<WorkspaceId>() {
        if let Some(ws) = all.iter().find(|w| w.id == id) {
            return Ok(ws.clone());
        }
    }
    let named: Vec<&ApiWorkspace> = all.iter().filter(|w| w.name == name_or_id).collect();
    match named.as_slice() {
        [one] => Ok((*one).clone()),
        [] => bail!("no workspace {name_or_id:?} among yours (see `filesync workspace list`)"),
        many => {
            let ids: Vec<String> = many.iter().map(|w| w.id.to_string()).collect();
            bail!("several workspaces are named {name_or_id:?}; name one by id: {}", ids.join(", "))
        }
    }
}

/// `bytes` for people: `512 B`, `1.5 KiB`, `3.2 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Prints rows under a header line, each column as wide as its widest cell (the last one unpadded).
pub fn print_table<const N: usize>(header: [&str; N], rows: impl IntoIterator<Item = [String; N]>) {
    let rows: Vec<[String; N]> = rows.into_iter().collect();
    let mut width = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; N]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == N {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = width[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header);
    for row in &rows {
        line(std::array::from_fn(|i| row[i].as_str()));
    }
}

/// `path` made absolute without requiring it to exist (the file may have been deleted).
pub fn absolute(path: &std::path::Path) -> anyhow::Result<PathBuf> {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().context("cannot read the current directory")?.join(path)
    };
    // Resolve symlinks in the part that exists (e.g. /tmp on macOS), keep the rest as given.
    let mut existing = joined.clone();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name.to_owned());
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    let mut out = std::fs::canonicalize(&existing).unwrap_or(existing);
    for name in rest.into_iter().rev() {
        out.push(name);
    }
    Ok(out)
}

/// A relative path as the workspace names it: UTF-8, `/`-separated.
pub fn rel_to_string(rel: &std::path::Path) -> anyhow::Result<String> {
    let mut parts = Vec::new();
    for comp in rel.components() {
        match comp {
            std::path::Component::Normal(c) => {
                parts.push(c.to_str().ok_or_else(|| anyhow!("{} is not valid UTF-8", rel.display()))?)
            }
            std::path::Component::CurDir => {}
            _ => bail!("{} leaves the linked folder", rel.display()),
        }
    }
    Ok(parts.join("/"))
}

/// Runs one command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Completions { shell } = cli.command {
        let mut cmd = Cli::command();
        clap_complete::generate(shell, &mut cmd, "filesync", &mut std::io::stdout());
        return Ok(());
    }
    let ctx = Ctx::open(cli.global)?;
    match cli.command {
        Command::Register(args) => account::register(&ctx, args).await,
        Command::Login(args) => account::login(&ctx, args).await,
        Command::Logout => account::logout(&ctx).await,
        Command::Passwd(args) => account::passwd(&ctx, args).await,
        Command::Devices(cmd) => account::devices(&ctx, cmd).await,
        Command::Whoami => account::whoami(&ctx).await,
        Command::Workspace(cmd) => workspace::run(&ctx, cmd).await,
        Command::Sync(args) => sync::run(&ctx, args).await,
        Command::Status => files::status(&ctx),
        Command::History { path } => files::history(&ctx, &path).await,
        Command::Restore { path, number } => files::restore(&ctx, &path, number).await,
        Command::Trash(args) => trash::run(&ctx, args).await,
        Command::Who { workspace } => files::who(&ctx, &workspace).await,
        Command::Completions { .. } => Ok(()),
    }
}

/// Parses a role for sharing: only editor and viewer can be given.
pub fn share_role(s: &str) -> Result<Role, String> {
    match s {
        "editor" => Ok(Role::Editor),
        "viewer" => Ok(Role::Viewer),
        other => Err(format!("{other:?} is not a role you can give; use editor or viewer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws(id: i64, name: &str) -> ApiWorkspace {
        ApiWorkspace {
            id: WorkspaceId(id),
            name: name.into(),
            owner_id: 1,
            role: Role::Owner,
            owner_username: None,
            usage: None,
        }
    }

    #[test]
    fn workspaces_are_named_by_id_or_name() {
        let all = vec![ws(1, "docs"), ws(2, "photos"), ws(3, "photos"), ws(4, "7")];
        assert_eq!(pick_workspace(&all, "1").unwrap().name, "docs");
        assert_eq!(pick_workspace(&all, "docs").unwrap().id, WorkspaceId(1));
        assert_eq!(pick_workspace(&all, "7").unwrap().id, WorkspaceId(4));
        let err = pick_workspace(&all, "photos").unwrap_err().to_string();
        assert!(err.contains("2, 3"), "{err}");
        assert!(pick_workspace(&all, "nope").is_err());
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_work_after_the_subcommand() {
        let cli = Cli::try_parse_from(["filesync", "whoami", "--server", "http://h:1", "--sync", "a:1,b:2"]).unwrap();
        assert_eq!(cli.global.server.as_deref(), Some("http://h:1"));
        assert_eq!(cli.global.sync, vec!["a:1", "b:2"]);
        let cli = Cli::try_parse_from(["filesync", "--home", "/x", "workspace", "list", "--ca", "/ca.pem"]).unwrap();
        assert_eq!(cli.global.ca, Some(PathBuf::from("/ca.pem")));
        assert_eq!(cli.global.home, Some(PathBuf::from("/x")));
        assert!(Cli::try_parse_from(["filesync", "workspace", "share", "w", "e@x.y", "--role", "owner"]).is_err());
    }

    #[test]
    fn bytes_read_as_people_count_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }

    #[test]
    fn trash_takes_a_workspace_or_a_restore() {
        let cli = Cli::try_parse_from(["filesync", "trash", "docs"]).unwrap();
        assert!(
            matches!(cli.command, Command::Trash(t) if t.workspace.as_deref() == Some("docs") && t.action.is_none())
        );
        let cli = Cli::try_parse_from(["filesync", "trash", "restore", "a/b.txt"]).unwrap();
        assert!(matches!(cli.command, Command::Trash(t) if t.workspace.is_none() && t.action.is_some()));
        let cli = Cli::try_parse_from(["filesync", "trash"]).unwrap();
        assert!(matches!(cli.command, Command::Trash(t) if t.workspace.is_none() && t.action.is_none()));
    }

    #[test]
    fn relative_paths_stay_inside() {
        assert_eq!(rel_to_string(std::path::Path::new("a/./b.txt")).unwrap(), "a/b.txt");
        assert!(rel_to_string(std::path::Path::new("../x")).is_err());
    }
}

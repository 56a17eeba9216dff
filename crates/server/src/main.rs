//! `filesync-server`: the whole of filesync in one process for a first run or
//! a small team — the HTTP API and one sync node, on the embedded SQLite
//! database in the data dir, with the in-process bus and a JWT secret
//! generated and kept in the data dir. Production runs the two daemons
//! (`filesync-http`, `filesync-tcp`) separately; this binary only links their
//! libraries, so they stay independent of each other.
//!
//! Both are given the same [`Services`]: one database pool (so one SQLite
//! writer lock), one chunk store, and one bus, so a change made through the
//! API reaches the node's subscribers at once, share notices arrive, and the
//! API reads the node's presence — with or without Redis.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use filesync_bus::{Deps, Services};
use filesync_core::config::Config;
use tokio_util::sync::CancellationToken;

/// filesync in one process: HTTP API + one sync node on embedded SQLite. Without
/// FILESYNC_JWT_SECRET a secret is generated and kept in the data dir.
#[derive(Debug, Parser)]
#[command(
    name = "filesync-server",
    version,
    after_help = filesync_core::config::environment_help()
)]
struct Cli {
    /// TOML config file (overrides FILESYNC_CONFIG).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory for the database, the secret and the chunks (overrides FILESYNC_DATA_DIR).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("filesync-server: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(start(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("filesync-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn start(cli: Cli) -> anyhow::Result<()> {
    let mut config = Config::from_env(cli.config.as_deref())?;
    if let Some(dir) = cli.data_dir {
        config.data_dir = dir;
    }
    // The one-command default: a secret is generated unless one is given.
    config.dev_mode = true;
    filesync_core::bin_support::init_tracing(&config.log_format);
    config.prepare_for_serving()?;

    let http = std::net::TcpListener::bind(&config.http_addr)
        .with_context(|| format!("cannot listen on {} (FILESYNC_HTTP_ADDR)", config.http_addr))?;
    let sync = tokio::net::TcpListener::bind(&config.tcp_addr)
        .await
        .with_context(|| format!("cannot listen on {} (FILESYNC_TCP_ADDR)", config.tcp_addr))?;
    let admin = tokio::net::TcpListener::bind(&config.tcp_admin_addr)
        .await
        .with_context(|| format!("cannot listen on {} (FILESYNC_TCP_ADMIN_ADDR)", config.tcp_admin_addr))?;
    // With a certificate both the API and the node speak TLS; the printed commands say so.
    let (web, wire) = if config.tls_cert.is_some() { ("https", "tls://") } else { ("http", "") };
    let http_addr = format!("{web}://{}", http.local_addr()?);
    let sync_addr = format!("{wire}{}", sync.local_addr()?);

    let services: Services = Deps::from(config.clone()).open().await?;
    let node = filesync_tcp_sync::Node::start(services.clone()).await?;
    let stop = CancellationToken::new();
    let mut servers = tokio::task::JoinSet::new();
    servers.spawn(filesync_http_api::run(http, services, stop.clone().cancelled_owned()));
    servers.spawn(filesync_tcp_sync::run_admin(admin, node.clone(), stop.clone().cancelled_owned()));
    let sync_stop = stop.clone();
    servers.spawn(async move { node.serve(sync, sync_stop.cancelled_owned()).await });

    println!(
        "filesync is running\n  \
         Web UI:    {http_addr}/   (open it in a browser: register, create a workspace, share it)\n  \
         HTTP API:  {http_addr}\n  \
         sync node: {sync_addr}\n  \
         data:      {}\n\n\
         Get a user syncing (in another terminal):\n  \
         filesync --server {http_addr} --sync {sync_addr} register\n  \
         filesync --server {http_addr} --sync {sync_addr} workspace create Documents ./Documents\n  \
         filesync --server {http_addr} --sync {sync_addr} sync\n",
        config.data_dir.display()
    );

    // Until a signal, or until one server stops on its own (an error): then stop the others too.
    let early = tokio::select! {
        () = filesync_core::bin_support::shutdown_signal() => None,
        Some(done) = servers.join_next() => Some(done),
    };
    stop.cancel();
    let mut result: anyhow::Result<()> = match early {
        Some(done) => {
            done.context("a server task panicked")?.and(Err(anyhow::anyhow!("a server stopped unexpectedly")))
        }
        None => Ok(()),
    };
    while let Some(done) = servers.join_next().await {
        if let Err(e) = done.context("a server task panicked").and_then(|r| r) {
            result = result.and(Err(e));
        }
    }
    result
}

//! `filesync-tcp`: loads the configuration, binds the sync and admin
//! addresses and turns SIGINT/SIGTERM into a graceful shutdown (Goodbye to
//! every client, in-flight commits finish). Everything else is in the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use filesync_core::config::Config;
use tokio::net::TcpListener;

/// The filesync sync node: clients keep a TCP connection here to upload, download and receive changes.
#[derive(Debug, Parser)]
#[command(name = "filesync-tcp", version, after_help = filesync_core::config::environment_help())]
struct Cli {
    /// TOML config file (overrides FILESYNC_CONFIG).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Development mode: generate and keep a JWT secret in the data dir if none is set.
    #[arg(long)]
    dev: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut config = Config::from_env(cli.config.as_deref())?;
    config.dev_mode |= cli.dev;
    filesync_core::bin_support::init_tracing(&config.log_format);
    config.prepare_for_serving()?;
    let listener = TcpListener::bind(&config.tcp_addr)
        .await
        .with_context(|| format!("cannot listen on {} (FILESYNC_TCP_ADDR)", config.tcp_addr))?;
    let admin = TcpListener::bind(&config.tcp_admin_addr)
        .await
        .with_context(|| format!("cannot listen on {} (FILESYNC_TCP_ADMIN_ADDR)", config.tcp_admin_addr))?;
    let node = filesync_tcp_sync::Node::start(config).await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let admin_task = tokio::spawn(filesync_tcp_sync::run_admin(admin, node.clone(), stop.clone().cancelled_owned()));
    let served = node.serve(listener, filesync_core::bin_support::shutdown_signal()).await;
    stop.cancel();
    let _ = admin_task.await;
    served
}

//! `filesync-tcp`: loads the configuration, binds the sync and admin
//! addresses and turns SIGINT/SIGTERM into a graceful shutdown (Goodbye to
//! every client, in-flight commits finish). Everything else is in the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use filesync_core::config::Config;
use tokio::net::TcpListener;

const ENVIRONMENT: &str = "\
Environment (each also a key of the TOML config file, lower case without FILESYNC_):
  FILESYNC_CONFIG           TOML config file; env vars override it
  FILESYNC_DATABASE_URL     mysql://USER:PASSWORD@HOST:PORT/DB or sqlite://PATH [default: sqlite://<data_dir>/filesync.db]
  FILESYNC_DB_POOL_SIZE     database connections kept open [default: 10]
  FILESYNC_DATA_DIR         directory for SQLite, the --dev JWT secret and the chunks [default: ./data]
  FILESYNC_STORAGE          chunk store directory, shared by all nodes [default: <data_dir>/chunks]
  FILESYNC_REDIS_URL        redis://HOST:PORT: presence and the cross-node bus [default: unset, single node]
  FILESYNC_REDIS_PREFIX     first segment of every Redis key and channel, one per deployment [default: filesync]
  FILESYNC_JWT_SECRET       HS256 secret shared with filesync-http, at least 32 bytes; required unless --dev
  FILESYNC_JWT_TTL_SECS     token lifetime (used by filesync-http) [default: 86400]
  FILESYNC_TCP_ADDR         sync protocol address [default: 127.0.0.1:7070]
  FILESYNC_TCP_ADMIN_ADDR   /healthz, /readyz, /metrics address [default: 127.0.0.1:7071]
  FILESYNC_NODE_ID          this node's name in presence and logs [default: random]
  FILESYNC_MAX_FRAME_BYTES  largest protocol frame [default: 8388608]
  FILESYNC_MAX_CONNECTIONS  connection cap; more are refused with `busy` [default: 10000]
  FILESYNC_LOG_FORMAT       text or json [default: text]
  FILESYNC_DEV_MODE         true: generate and keep a JWT secret in the data dir (same as --dev)
  RUST_LOG                  log filter, e.g. info or filesync_tcp_sync=debug [default: info]
  FILESYNC_TLS_CERT         PEM certificate chain; with FILESYNC_TLS_KEY the sync port serves TLS only [default: plain TCP]
  FILESYNC_TLS_KEY          PEM private key of FILESYNC_TLS_CERT
The HTTP-only settings (FILESYNC_HTTP_ADDR, FILESYNC_BCRYPT_COST, FILESYNC_LOGIN_*) are accepted and ignored.";

/// The filesync sync node: clients keep a TCP connection here to upload, download and receive changes.
#[derive(Debug, Parser)]
#[command(name = "filesync-tcp", version, after_help = ENVIRONMENT)]
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

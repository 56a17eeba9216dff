//! `filesync-http`: parses the command line, loads the configuration, binds
//! the port and turns SIGINT/SIGTERM into a graceful shutdown. Everything
//! else lives in the library behind `filesync_http_api::run`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use filesync_core::config::Config;
use filesync_core::db::{run_migrations, Db, Manager};
use filesync_core::storage;

/// The filesync HTTP API: accounts, login, workspaces and sharing.
#[derive(Debug, Parser)]
#[command(name = "filesync-http", version, after_help = filesync_core::config::environment_help())]
struct Cli {
    /// TOML config file (overrides FILESYNC_CONFIG).
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Development mode: generate and keep a JWT secret in the data dir if none is set.
    #[arg(long, global = true)]
    dev: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Migrate the database, then serve the API (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Chunk store maintenance.
    #[command(subcommand)]
    Storage(StorageCommand),
    /// One full garbage collection pass — retention, then the sweep of chunks and packs no
    /// retained version references — with the daemon's settings (gc_grace_secs, ...), then exit,
    /// printing what was reclaimed. Waits while another process holds the gc lease. Safe while
    /// the daemons serve, and to interrupt at any point: the next pass finishes the work.
    Gc {
        /// Print what a pass would reclaim now; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
enum StorageCommand {
    /// Move chunks stored one file per chunk (releases before packs) into packs of the configured
    /// store. With --from, first copy every pack of that store into the configured one and take the
    /// loose chunks from there: how a local directory moves to s3://. Safe to run again; the
    /// daemons may keep serving meanwhile.
    Migrate {
        /// Where the store is now: a directory, file:// URL or s3://BUCKET[/PREFIX] (the s3_*
        /// settings apply); default: the configured store itself.
        #[arg(long, value_name = "STORAGE")]
        from: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("filesync-http: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(start(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One readable line with the causes, not a backtrace.
            eprintln!("filesync-http: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn start(cli: Cli) -> anyhow::Result<()> {
    let mut config = Config::from_env(cli.config.as_deref())?;
    config.dev_mode |= cli.dev;
    filesync_core::bin_support::init_tracing(&config.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate => migrate(&config).await,
        Command::Storage(StorageCommand::Migrate { from }) => migrate_storage(&config, from).await,
        Command::Gc { dry_run } => collect_garbage(&config, dry_run).await,
        Command::Serve => serve(config).await,
    }
}

async fn collect_garbage(config: &Config, dry_run: bool) -> anyhow::Result<()> {
    let url = config.database_url();
    let db = tokio::task::spawn_blocking(move || Db::open(&url, 2)).await?.context("opening the database")?;
    let store = storage::open(config, db.clone()).await.context("opening the chunk store")?;
    let settings = filesync_http_api::gc::settings(config, dry_run);
    let holder = filesync_core::db::lease::holder_name();
    let report = filesync_core::gc::run_when_free(&db, &store, &settings, &holder).await?;
    let verb = if dry_run { "would reclaim" } else { "reclaimed" };
    println!("gc {verb}: {report}");
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    let url = config.database_url();
    let applied = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
        let mut conn = Manager::new(&url)?.connect()?;
        Ok(run_migrations(&mut conn)?)
    })
    .await??;
    if applied.is_empty() {
        tracing::info!("database is up to date");
    }
    for version in applied {
        tracing::info!(migration = %version, "migration applied");
    }
    Ok(())
}

async fn migrate_storage(config: &Config, from: Option<String>) -> anyhow::Result<()> {
    let url = config.database_url();
    let db = tokio::task::spawn_blocking(move || Db::open(&url, 2)).await?.context("opening the database")?;
    let store = storage::open(config, db).await.context("opening the chunk store")?;
    let source = match from {
        Some(from) => {
            let source = Config { storage: Some(from), ..config.clone() };
            let backend = tokio::task::spawn_blocking(move || storage::Backend::from_config(&source)).await?;
            Some(backend.context("opening the store given with --from")?)
        }
        None => None,
    };
    let done = storage::migrate::migrate(&store, source.as_ref()).await?;
    for chunk in &done.unreadable {
        tracing::warn!(chunk = %chunk, "a loose chunk's file is missing or corrupt; left as it was");
    }
    tracing::info!(
        store = %store.backend().describe(),
        packs_copied = done.packs_copied,
        chunks_packed = done.chunks_packed,
        packs_written = done.packs_written,
        unreadable = done.unreadable.len(),
        "chunk store migrated"
    );
    Ok(())
}

async fn serve(mut config: Config) -> anyhow::Result<()> {
    // Checked before binding so a missing secret fails fast with its own message.
    config.prepare_for_serving()?;
    let listener = std::net::TcpListener::bind(&config.http_addr)
        .with_context(|| format!("cannot listen on {} (FILESYNC_HTTP_ADDR)", config.http_addr))?;
    filesync_http_api::run(listener, config, filesync_core::bin_support::shutdown_signal()).await
}

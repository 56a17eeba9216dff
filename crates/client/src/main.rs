//! `filesync`: the command-line client and sync agent.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use filesync_client::cli::{run, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Help and --version succeed; a usage error fails like any other error (status 1, as documented).
            return if e.use_stderr() { ExitCode::FAILURE } else { ExitCode::SUCCESS };
        }
    };
    // On a terminal the progress bars tell what happens; elsewhere (services, logs) one line per event.
    let on_terminal = std::io::stderr().is_terminal();
    let default = match cli.global.verbose {
        0 if on_terminal => "warn",
        0 => "warn,filesync_client=info,filesync_proto_client=info",
        1 => "info,filesync_client=debug,filesync_proto_client=debug",
        _ => "debug,filesync_client=trace,filesync_proto_client=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(on_terminal)
        .with_target(false)
        .init();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the message, then its causes.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

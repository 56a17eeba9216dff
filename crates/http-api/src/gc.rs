//! Garbage collection inside `filesync-http` ([`scheduled`], every `gc_interval_secs`) and as
//! `filesync-http gc` ([`settings`] for both, so the command collects exactly as the daemon does).
//! One runner at a time across every process sharing the database: the `gc` lease
//! (`filesync_core::db::lease`); a process that finds it taken skips that round.

use std::time::Duration;

use actix_web::web;
use filesync_core::config::Config;
use filesync_core::db::retention::Policy;
use filesync_core::gc::{self, GcError, Settings};

use crate::state::AppState;

/// The pass's settings from the configuration (the same for the daemon and the command).
pub fn settings(config: &Config, dry_run: bool) -> Settings {
    Settings {
        dry_run,
        retention: Some(Policy::defaults(config)),
        ..Settings::new(Duration::from_secs(config.gc_grace_secs))
    }
}

/// Runs a pass every `interval` until shutdown (the first one an interval after start).
pub async fn scheduled(state: web::Data<AppState>, interval: Duration, settings: Settings) {
    let holder = filesync_core::db::lease::holder_name();
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = state.stopping.cancelled() => return,
        }
        match gc::run(&state.db, &state.store, &settings, &holder).await {
            Ok(report) => state.metrics.gc.record(&report),
            Err(GcError::Busy { holder, until }) => {
                tracing::info!(%holder, %until, "another process collects garbage; skipping this round");
            }
            Err(e) => tracing::warn!(error = %e, "garbage collection pass failed; the next one finishes it"),
        }
    }
}

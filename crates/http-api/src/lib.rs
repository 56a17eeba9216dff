//! The filesync HTTP API daemon (`filesync-http`): registration, login,
//! workspaces and sharing, and the read side of the sync journal (file
//! lists, history, restore, zip downloads, presence), over actix-web, on
//! MySQL/MariaDB or SQLite.
//!
//! # Layout
//! - [`run`]: the seam. Serves on a listener until a shutdown future resolves;
//!   `main` (and the tests) call it. Only `main` binds ports and handles signals.
//! - [`routes`]: the route table and one module per group of handlers.
//! - [`auth`]: the `AuthUser` extractor, the only reader of `Authorization`.
//! - [`authz`]: the only place that decides what a member may do.
//! - [`known_users`]: the users tokens name, remembered briefly so a token check needs no query.
//! - [`error`]: `ApiError`, the single error type and JSON error body.
//! - [`validate`]: input rules; [`wire`]: the JSON shapes of the API.
//! - [`archive`]: a workspace as a zip streamed chunk by chunk from the store.
//! - [`throttle`]: in-memory login throttling; the bus and presence are
//!   `filesync_bus`'s, shared with the sync node in `filesync-server`;
//!   [`metrics`]: Prometheus; [`gc`]: garbage collection on a schedule; [`state`]: what requests share; [`tls`]: HTTPS.
//! - [`openapi`]: `GET /openapi.json`, generated from the handlers' annotations.
//! - [`ui`]: the web UI at `/` (embedded assets, `/session`, live events);
//!   [`session_cookie`]: its HttpOnly session cookie and CSRF rule.
//!
//! **Architecture Invariant:** handlers never read headers for credentials
//! and never compare roles; they take an `AuthUser` and ask `authz`.

pub mod archive;
pub mod auth;
pub mod authz;
pub mod error;
pub mod gc;
pub mod known_users;
pub mod metrics;
pub mod openapi;
mod routes;
pub mod session_cookie;
pub mod state;
pub mod throttle;
pub mod tls;
pub mod ui;
pub mod validate;
pub mod wire;

use std::future::Future;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{middleware, web, App, HttpServer};
use anyhow::Context;
pub use filesync_bus::{Deps, Services};

use crate::state::AppState;

/// How long in-flight requests may finish after shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves the API on `listener` until `shutdown` resolves, then stops
/// accepting, lets in-flight requests finish and returns.
///
/// `deps` is a `Config` (everything is built from it) or [`Services`] built
/// once and shared, as `filesync-server` shares one database pool and one bus
/// with its node. What is not given is opened first (the database migrated);
/// fails if the configuration cannot serve (no or short JWT secret outside dev
/// mode, bad bcrypt cost, database unreachable, invalid Redis URL).
pub async fn run(
    listener: std::net::TcpListener,
    deps: impl Into<Deps>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut deps = deps.into();
    deps.config.prepare_for_serving()?;
    let tls = match (&deps.config.tls_cert, &deps.config.tls_key) {
        (Some(cert), Some(key)) => Some(tls::server_config(cert, key)?),
        _ => None,
    };
    // A bus this daemon makes for itself without Redis shares presence with no node.
    let presence_visible = deps.bus.is_some() || deps.config.redis_url.is_some();
    let services = deps.open().await?;
    let gc_every = services.config.gc_interval_secs;
    let gc_settings = gc::settings(&services.config, false);
    let state = web::Data::new(AppState::new(services, presence_visible).await?);
    let collector =
        (gc_every > 0).then(|| tokio::spawn(gc::scheduled(state.clone(), Duration::from_secs(gc_every), gc_settings)));
    let stopping = state.stopping.clone();
    let revocations = tokio::spawn(forget_revoked(state.clone()));
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(error::json_config())
            .app_data(error::query_config())
            .app_data(error::path_config())
            .wrap(middleware::from_fn(metrics::track))
            // UI responses set their own policy; everything else may run nothing.
            .wrap(
                middleware::DefaultHeaders::new()
                    .add((header::CONTENT_SECURITY_POLICY, ui::API_CSP))
                    .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
                    .add((header::REFERRER_POLICY, "no-referrer")),
            )
            .configure(routes::configure)
            .configure(ui::configure)
            .default_service(web::to(error::route_not_found))
    })
    // Signals belong to `main`; the seam stops only through `shutdown`.
    .disable_signals()
    .shutdown_timeout(SHUTDOWN_GRACE.as_secs());
    let server = match tls {
        Some(tls) => server.listen_rustls_0_23(listener, tls),
        None => server.listen(listener),
    }
    .context("cannot serve on the listener")?
    .run();
    let handle = server.handle();
    let mut serving = tokio::spawn(server);
    tracing::info!(http.addr = %addr, "HTTP API listening on {scheme}://{addr}");
    tokio::select! {
        res = &mut serving => {
            revocations.abort();
            if let Some(c) = &collector { c.abort(); }
            return Ok(res??);
        }
        () = shutdown => tracing::info!("shutting down: finishing in-flight requests"),
    }
    stopping.cancel();
    revocations.abort();
    if let Some(c) = collector {
        // A pass in progress stops here; the next one (any process) finishes its work.
        c.abort();
    }
    handle.stop(true).await;
    serving.await??;
    tracing::info!("HTTP API stopped");
    Ok(())
}

/// Keeps token checks true across processes: a token revoked through another
/// `filesync-http` (logout, password change, a removed device) is refused by
/// this one's next request, not only after [`known_users::TTL`].
async fn forget_revoked(state: web::Data<AppState>) {
    let mut revocations = state.bus.subscribe_to(&[filesync_bus::Topic::Revocations]);
    while let Some(msg) = revocations.recv().await {
        match msg {
            filesync_bus::BusMessage::Revoked { user_id } => state.known_users.forget(user_id),
            filesync_bus::BusMessage::Resync => state.known_users.forget_all(),
            _ => {}
        }
    }
}

//! What every request shares: the database, the chunk store, the keys, the
//! throttle, the bus and the metrics. Built once in [`crate::run`], cloned into each worker.

use std::sync::Arc;
use std::time::Duration;

use filesync_bus::{Bus, Services};
use filesync_core::db::retention::Policy;
use filesync_core::db::{Db, DbConn};
use filesync_core::jwt::JwtKeys;
use filesync_core::password::Passwords;
use filesync_core::storage::ChunkStore;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::error::{ApiError, ApiResult};
use crate::known_users::KnownUsers;
use crate::metrics::Metrics;
use crate::session_cookie::CsrfKey;
use crate::throttle::LoginThrottle;

#[derive(Debug)]
pub struct AppState {
    pub db: Db,
    /// The chunk store the sync nodes use too (`storage::open`): downloads read it, HTTP
    /// uploads write it through core's `ingest`, exactly as a node does.
    pub store: ChunkStore,
    pub jwt: JwtKeys,
    /// Makes the web UI's CSRF tokens ([`crate::session_cookie`]).
    pub csrf: CsrfKey,
    pub passwords: Passwords,
    pub throttle: LoginThrottle,
    /// Announcements to the sync nodes (and live pages), and presence. Without
    /// Redis it is the in-process bus, shared with the node in `filesync-server`.
    pub bus: Bus,
    /// Cancelled when shutdown begins, so long-lived answers (the UI's event streams) end at once.
    pub stopping: CancellationToken,
    /// False when the bus is this daemon's own in-process bus: no node writes presence into it.
    pub presence_visible: bool,
    /// Peers whose `X-Forwarded-For` names the client (`trusted_proxies`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub metrics: Metrics,
    /// Users named by recently checked tokens.
    pub known_users: KnownUsers,
    /// The server's retention defaults (`keep_days`, `trash_days`); a workspace may have its own.
    pub retention: Policy,
    /// Concurrent bcrypt jobs: at most one core fewer than the machine has, so logins
    /// never take every blocking thread and core from token checks and queries.
    bcrypt_slots: Arc<Semaphore>,
}

/// How many bcrypt hashes may run at once: every core but one, at least one.
fn bcrypt_parallelism() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
}

impl AppState {
    /// Takes the built dependencies and prepares the password hasher (on the blocking pool).
    pub async fn new(services: Services, presence_visible: bool) -> anyhow::Result<AppState> {
        let Services { config, db, store, bus } = services;
        let cost = config.bcrypt_cost;
        let passwords = tokio::task::spawn_blocking(move || Passwords::new(cost)).await??;
        tracing::info!(db.backend = ?db.backend(), bcrypt.cost = cost, "state ready");
        Ok(AppState {
            db,
            store,
            jwt: JwtKeys::new(&config.jwt_secret, config.jwt_ttl_secs),
            csrf: CsrfKey::from_jwt_secret(config.jwt_secret.expose()),
            passwords,
            throttle: LoginThrottle::new(config.login_max_failures, Duration::from_secs(config.login_window_secs)),
            trusted_proxies: config.trusted_proxy_nets()?,
            bus,
            stopping: CancellationToken::new(),
            presence_visible,
            metrics: Metrics::new()?,
            known_users: KnownUsers::default(),
            retention: Policy::defaults(&config),
            bcrypt_slots: Arc::new(Semaphore::new(bcrypt_parallelism())),
        })
    }

    /// Runs read-only database work on the blocking pool. `f` may refuse the
    /// request with an [`ApiError`]; database failures convert into one, and
    /// are handed back to the pool first so that it replaces a dead connection.
    pub async fn read<T, F>(&self, f: F) -> ApiResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConn) -> ApiResult<T> + Send + 'static,
    {
        let outcome = self
            .db
            .run(move |conn| match f(conn) {
                Err(ApiError::Database(e)) => Err(e),
                other => Ok(other),
            })
            .await;
        outcome.map_err(ApiError::from)?
    }

    /// Hashes a new password on the blocking pool.
    pub async fn hash_password(&self, password: String) -> ApiResult<String> {
        let passwords = self.passwords.clone();
        self.bcrypt(move || passwords.hash(&password)).await?.map_err(ApiError::internal)
    }

    /// Checks a password on the blocking pool. Without a stored hash (unknown
    /// email) it spends the same time on a dummy hash and says no.
    pub async fn verify_password(&self, password: String, hash: Option<String>) -> ApiResult<bool> {
        let passwords = self.passwords.clone();
        self.bcrypt(move || match hash {
            Some(hash) => passwords.verify(&password, &hash),
            None => passwords.verify_dummy(&password),
        })
        .await
    }

    /// Runs a bcrypt job on the blocking pool once one of the bcrypt slots is free.
    async fn bcrypt<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> ApiResult<T> {
        let permit = Arc::clone(&self.bcrypt_slots).acquire_owned().await.map_err(ApiError::internal)?;
        tokio::task::spawn_blocking(move || {
            let out = job();
            drop(permit);
            out
        })
        .await
        .map_err(ApiError::internal)
    }
}

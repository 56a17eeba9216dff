//! The database: one diesel codebase over MySQL/MariaDB and SQLite.
//!
//! The backend is chosen by the URL scheme (`mysql://` or `sqlite://`), the
//! connection is the [`DbConn`] enum (diesel's `MultiConnection`), and every
//! query is written once against it. Migrations are embedded per backend and
//! run at start. Diesel is blocking: async code goes through [`Db::run`],
//! which moves the work to tokio's blocking pool.

pub mod accounts;
pub mod devices;
pub mod horizon;
pub mod invitations;
pub mod journal;
pub mod lease;
pub mod membership;
pub mod packs;
pub mod retention;
pub mod schema;
pub mod trash;
pub mod usage;

use std::sync::Arc;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{ManageConnection, Pool, PooledConnection};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
#[cfg(feature = "mysql")]
use diesel::MysqlConnection;
use diesel::SqliteConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::secret::redact_url;

#[cfg(feature = "mysql")]
pub const MYSQL_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/mysql");
pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");

/// A connection to either backend. SQLite is last: diesel's derived
/// `establish` tries variants in order and SQLite accepts any string.
#[derive(diesel::MultiConnection)]
pub enum DbConn {
    #[cfg(feature = "mysql")]
    Mysql(MysqlConnection),
    Sqlite(SqliteConnection),
}

/// Which backend a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Mysql,
    Sqlite,
}

impl Backend {
    /// `mysql://…` or `sqlite://PATH`; anything else is refused so that a typo
    /// never silently creates an empty SQLite file.
    pub fn from_url(url: &str) -> Result<Backend, DbError> {
        if url.starts_with("mysql://") {
            Ok(Backend::Mysql)
        } else if url.starts_with("sqlite://") {
            Ok(Backend::Sqlite)
        } else {
            Err(DbError::Connect(format!(
                "unsupported database URL {:?}: expected mysql://USER:PASSWORD@HOST:PORT/DB or sqlite://PATH",
                redact_url(url)
            )))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("not found")]
    NotFound,
    /// A unique constraint was hit; the string names what was taken.
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// The journal refused an edit (a stale base, a clash with what exists).
    #[error("{0}")]
    Refused(journal::Refusal),
    #[error("database connection failed: {0}")]
    Connect(String),
    #[error("database pool: {0}")]
    Pool(String),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("database error: {0}")]
    Query(#[from] DieselError),
    #[error("database task failed: {0}")]
    Task(String),
    /// The connection died under the call (the server restarted, failed
    /// over, or cannot be reached): nothing was committed by this call unless
    /// the loss hit its COMMIT. Retry after a short wait.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
}

impl DbError {
    /// True if the error is a unique-key violation.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, DbError::Query(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)))
    }

    /// True if the database could not be reached (a lost connection, a
    /// refused connect, a pool that cannot hand out a connection) or chose this
    /// transaction as a deadlock's victim (MariaDB rolled it back whole): the
    /// request may succeed when retried after a short wait.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, DbError::Unavailable(_) | DbError::Connect(_) | DbError::Pool(_))
            || matches!(self, DbError::Query(DieselError::DatabaseError(DatabaseErrorKind::SerializationFailure, _)))
    }
}

/// Opens connections for the pool, choosing the variant from the URL scheme
/// (so the real connection error is reported, not diesel's generic one) and
/// setting SQLite's per-connection pragmas.
#[derive(Debug, Clone)]
pub struct Manager {
    url: String,
    backend: Backend,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConnectError(String);

impl Manager {
    pub fn new(url: &str) -> Result<Manager, DbError> {
        Ok(Manager { url: url.to_owned(), backend: Backend::from_url(url)? })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// One new connection, outside any pool.
    pub fn connect(&self) -> Result<DbConn, DbError> {
        match self.backend {
            #[cfg(feature = "mysql")]
            Backend::Mysql => MysqlConnection::establish(&self.url)
                .map(DbConn::Mysql)
                .map_err(|e| DbError::Connect(format!("{} ({})", e, redact_url(&self.url)))),
            #[cfg(not(feature = "mysql"))]
            Backend::Mysql => Err(DbError::Connect(format!(
                "{} needs MySQL support, which this build leaves out; rebuild with the `mysql` cargo feature",
                redact_url(&self.url)
            ))),
            Backend::Sqlite => {
                let path = self.url.trim_start_matches("sqlite://");
                if let Some(parent) = std::path::Path::new(path).parent() {
                    if !parent.as_os_str().is_empty() {
                        std::fs::create_dir_all(parent)
                            .map_err(|e| DbError::Connect(format!("cannot create {}: {e}", parent.display())))?;
                    }
                }
                let mut conn = SqliteConnection::establish(path)
                    .map_err(|e| DbError::Connect(format!("{e} (sqlite file {path})")))?;
                // WAL lets readers run beside the writer; busy_timeout makes a
                // second writer wait instead of failing at once.
                conn.batch_execute(
                    "PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 15000; \
                     PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;",
                )
                .map_err(|e| DbError::Connect(format!("sqlite pragmas: {e}")))?;
                Ok(DbConn::Sqlite(conn))
            }
        }
    }
}

impl ManageConnection for Manager {
    type Connection = DbConn;
    type Error = ConnectError;

    fn connect(&self) -> Result<DbConn, ConnectError> {
        Manager::connect(self).map_err(|e| ConnectError(e.to_string()))
    }

    fn is_valid(&self, conn: &mut DbConn) -> Result<(), ConnectError> {
        conn.batch_execute("SELECT 1").map_err(|e| ConnectError(e.to_string()))
    }

    /// A connection whose transaction state is broken is not given out again.
    fn has_broken(&self, conn: &mut DbConn) -> bool {
        diesel::r2d2::R2D2Connection::is_broken(conn)
    }
}

/// Applies every pending embedded migration of the connection's backend.
/// Returns the versions applied.
pub fn run_migrations(conn: &mut DbConn) -> Result<Vec<String>, DbError> {
    let applied = match conn {
        #[cfg(feature = "mysql")]
        DbConn::Mysql(c) => c.run_pending_migrations(MYSQL_MIGRATIONS),
        DbConn::Sqlite(c) => c.run_pending_migrations(SQLITE_MIGRATIONS),
    }
    .map_err(|e| DbError::Migration(e.to_string()))?;
    Ok(applied.into_iter().map(|v| v.to_string()).collect())
}

/// The shared handle: a pool plus the rule that blocking work runs on
/// tokio's blocking threads.
#[derive(Clone)]
pub struct Db {
    pool: Pool<Manager>,
    /// For replacing a dead connection in place (`heal`).
    manager: Manager,
    backend: Backend,
    /// SQLite allows one writer; taking this before a write transaction
    /// turns lock-upgrade failures (`database is locked`) into waiting.
    sqlite_writer: Arc<std::sync::Mutex<()>>,
    stats: Arc<PoolCounters>,
}

#[derive(Debug, Default)]
struct PoolCounters {
    gets: std::sync::atomic::AtomicU64,
    wait_nanos: std::sync::atomic::AtomicU64,
    timeouts: std::sync::atomic::AtomicU64,
}

/// The pool as an operator sees it (exported by both daemons' `/metrics`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolStats {
    /// Connections open, busy or idle.
    pub connections: u32,
    pub idle: u32,
    /// Connections handed out so far.
    pub gets: u64,
    /// Total time callers waited for a connection.
    pub wait_seconds: f64,
    /// Callers that gave up waiting.
    pub timeouts: u64,
}

impl PoolStats {
    /// The figures in Prometheus text format, names prefixed with `prefix` (e.g. `filesync_tcp`), to be
    /// appended to a daemon's `/metrics`.
    pub fn prometheus_text(&self, prefix: &str) -> String {
        let rows: [(&str, &str, &str, String); 5] = [
            ("db_pool_connections", "gauge", "Database connections open", self.connections.to_string()),
            ("db_pool_idle_connections", "gauge", "Database connections idle", self.idle.to_string()),
            ("db_pool_checkouts_total", "counter", "Connections handed out by the pool", self.gets.to_string()),
            (
                "db_pool_wait_seconds_total",
                "counter",
                "Time spent waiting for a pooled connection",
                self.wait_seconds.to_string(),
            ),
            (
                "db_pool_timeouts_total",
                "counter",
                "Waits for a pooled connection that timed out",
                self.timeouts.to_string(),
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in rows {
            out.push_str(&format!(
                "# HELP {prefix}_{name} {help}\n# TYPE {prefix}_{name} {kind}\n{prefix}_{name} {value}\n"
            ));
        }
        out
    }
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("backend", &self.backend).finish_non_exhaustive()
    }
}

pub type PooledConn = PooledConnection<Manager>;

impl Db {
    /// Connects (checking the first connection so a bad URL fails now, with
    /// the real reason) and runs the embedded migrations. Blocking.
    pub fn open(url: &str, pool_size: u32) -> Result<Db, DbError> {
        let manager = Manager::new(url)?;
        let backend = manager.backend();
        let mut first = manager.connect()?;
        run_migrations(&mut first)?;
        drop(first);
        // No `SELECT 1` on every checkout (a round trip per query, a quarter of all statements under
        // load): a connection that fails is checked after the failure instead (`heal`).
        let pool = Pool::builder()
            .max_size(pool_size.max(1))
            .test_on_check_out(false)
            .connection_timeout(Duration::from_secs(15))
            .build(manager.clone())
            .map_err(|e| DbError::Pool(e.to_string()))?;
        Ok(Db { pool, manager, backend, sqlite_writer: Arc::new(std::sync::Mutex::new(())), stats: Arc::default() })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A pooled connection. Blocking.
    pub fn conn(&self) -> Result<PooledConn, DbError> {
        use std::sync::atomic::Ordering::Relaxed;
        let started = std::time::Instant::now();
        let got = self.pool.get();
        let waited = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.stats.wait_nanos.fetch_add(waited, Relaxed);
        match got {
            Ok(conn) => {
                self.stats.gets.fetch_add(1, Relaxed);
                Ok(conn)
            }
            Err(e) => {
                self.stats.timeouts.fetch_add(1, Relaxed);
                Err(DbError::Pool(e.to_string()))
            }
        }
    }

    /// How busy the pool is and how long callers waited for it.
    pub fn pool_stats(&self) -> PoolStats {
        use std::sync::atomic::Ordering::Relaxed;
        let state = self.pool.state();
        PoolStats {
            connections: state.connections,
            idle: state.idle_connections,
            gets: self.stats.gets.load(Relaxed),
            wait_seconds: self.stats.wait_nanos.load(Relaxed) as f64 / 1e9,
            timeouts: self.stats.timeouts.load(Relaxed),
        }
    }

    /// Runs blocking database work on the blocking pool.
    pub async fn run<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConn) -> Result<T, DbError> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || db.run_blocking(f)).await.map_err(|e| DbError::Task(e.to_string()))?
    }

    /// [`Db::run`] for callers already on a blocking thread.
    pub fn run_blocking<T, F>(&self, f: F) -> Result<T, DbError>
    where
        F: FnOnce(&mut DbConn) -> Result<T, DbError>,
    {
        let mut conn = self.conn()?;
        f(&mut conn).map_err(|e| self.heal(&mut conn, e))
    }

    /// Runs `f` in a write transaction on the blocking pool.
    pub async fn write<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConn) -> Result<T, DbError> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || db.write_blocking(f)).await.map_err(|e| DbError::Task(e.to_string()))?
    }

    /// [`Db::write`] for callers already on a blocking thread.
    pub fn write_blocking<T, F>(&self, f: F) -> Result<T, DbError>
    where
        F: FnOnce(&mut DbConn) -> Result<T, DbError>,
    {
        let mut conn = self.conn()?;
        let _guard = match self.backend {
            Backend::Sqlite => Some(self.sqlite_writer.lock().unwrap_or_else(|p| p.into_inner())),
            Backend::Mysql => None,
        };
        (*conn).transaction(f).map_err(|e| self.heal(&mut conn, e))
    }

    /// [`Db::write`] at READ COMMITTED on MySQL/MariaDB (SQLite serializes writers anyway): the
    /// rows a statement's subqueries read are not locked, so maintenance statements such as
    /// garbage collection's (`UPDATE packs … WHERE NOT EXISTS (SELECT … FROM chunks …)`) take no
    /// shared gap locks where uploads insert, and cannot deadlock them. Only for statements that
    /// re-check their own conditions or that a foreign key guards.
    pub async fn write_read_committed<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConn) -> Result<T, DbError> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = db.conn()?;
            let _guard = match db.backend {
                Backend::Sqlite => Some(db.sqlite_writer.lock().unwrap_or_else(|p| p.into_inner())),
                Backend::Mysql => None,
            };
            let run = |c: &mut PooledConn| -> Result<T, DbError> {
                if db.backend == Backend::Mysql {
                    // Applies to the next transaction only.
                    c.batch_execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")?;
                }
                (**c).transaction(f)
            };
            run(&mut conn).map_err(|e| db.heal(&mut conn, e))
        })
        .await
        .map_err(|e| DbError::Task(e.to_string()))?
    }

    /// After a failed call: if the connection itself is gone (the server restarted, failed over, or
    /// killed it; whatever the driver's words for it), a new one takes its place in the pool — now, or
    /// if the database is still away, on the next call that meets this one — and the error becomes
    /// [`DbError::Unavailable`], so that callers answer "retry" rather than fail for good.
    ///
    /// Every caller's error must reach here for this to work: code that turned a `DbError` into its own
    /// error type inside the closure would keep a dead connection in the pool (filesync-http did, and
    /// answered 500 after every MariaDB restart; `AppState::read` now hands it back).
    fn heal(&self, conn: &mut PooledConn, err: DbError) -> DbError {
        if matches!(err, DbError::NotFound | DbError::Conflict(_) | DbError::Refused(_) | DbError::Unavailable(_))
            || err.is_unique_violation()
        {
            return err;
        }
        // A connection whose last transaction could not roll back refuses every later one.
        let broken = diesel::r2d2::R2D2Connection::is_broken(&mut **conn);
        if !broken && conn.batch_execute("SELECT 1").is_ok() {
            return err;
        }
        match self.manager.connect() {
            Ok(fresh) => {
                tracing::warn!(error = %err, "database connection lost; replaced");
                **conn = fresh;
            }
            Err(e) => tracing::warn!(error = %e, "database connection lost and the database not yet back"),
        }
        DbError::Unavailable(err.to_string())
    }

    /// True if a connection answers `SELECT 1` (readiness).
    pub async fn ping(&self) -> bool {
        self.run(|c| c.batch_execute("SELECT 1").map_err(DbError::from)).await.is_ok()
    }
}

/// The current time as stored in `created_at`/`updated_at` columns (UTC, whole seconds,
/// because MySQL's DATETIME keeps no fraction).
pub fn now() -> chrono::NaiveDateTime {
    let now = chrono::Utc::now().naive_utc();
    now.with_nanosecond_zero()
}

trait NanosZero {
    fn with_nanosecond_zero(self) -> Self;
}

impl NanosZero for chrono::NaiveDateTime {
    fn with_nanosecond_zero(self) -> Self {
        use chrono::Timelike;
        self.with_nanosecond(0).unwrap_or(self)
    }
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    use super::accounts::{self, NewUser};
    use super::*;
    use crate::ids::{Role, UserId, WorkspaceId};
    use crate::testing::for_each_backend;

    /// A connection the server dropped fails one call, then the pool has a working one again.
    #[test]
    fn a_killed_connection_is_replaced_after_one_failure() {
        let tdb = crate::testing::TestDb::new(Backend::Mysql);
        let db = Db::open(tdb.url(), 1).unwrap();
        let id_of = |c: &mut DbConn| {
            diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>("CAST(CONNECTION_ID() AS SIGNED)"))
                .get_result::<i64>(c)
                .map_err(DbError::from)
        };
        let first = db.write_blocking(id_of).unwrap();
        let mut killer = db.manager.connect().unwrap();
        killer.batch_execute(&format!("KILL {first}")).unwrap();
        assert!(db.write_blocking(id_of).is_err(), "the killed connection still answered");
        let second = db.write_blocking(id_of).unwrap();
        assert_ne!(first, second);
    }

    #[test]
    fn accounts_story_on_both_backends() {
        for_each_backend(|tdb| {
            let db = Db::open(tdb.url(), 2).unwrap();
            let mut c = db.conn().unwrap();
            // Migrations are idempotent: a second run applies nothing.
            assert!(run_migrations(&mut c).unwrap().is_empty());
            let new = |u: &'static str, e: &'static str| NewUser {
                first_name: "Ann'; DROP TABLE users; --",
                last_name: "Ünïcødé",
                username: u,
                email: e,
                password_hash: "$2b$04$x",
            };
            let alice = accounts::create_user(&mut c, &new("alice", "alice@example.com")).unwrap();
            assert_eq!(alice.first_name, "Ann'; DROP TABLE users; --");
            assert!(matches!(
                accounts::create_user(&mut c, &new("alice2", "alice@example.com")),
                Err(DbError::Conflict("email"))
            ));
            assert!(matches!(
                accounts::create_user(&mut c, &new("alice", "other@example.com")),
                Err(DbError::Conflict("username"))
            ));
            let bob = accounts::create_user(&mut c, &new("bob", "bob@example.com")).unwrap();
            let ws = accounts::create_workspace(&mut c, UserId(alice.id), "Café").unwrap();
            // Binary collation: a name differing only by accent is another workspace.
            accounts::create_workspace(&mut c, UserId(alice.id), "Cafe").unwrap();
            assert!(matches!(
                accounts::create_workspace(&mut c, UserId(alice.id), "Café"),
                Err(DbError::Conflict("workspace"))
            ));
            let wid = WorkspaceId(ws.id);
            assert_eq!(accounts::role_of(&mut c, wid, UserId(alice.id)).unwrap(), Some(Role::Owner));
            assert_eq!(accounts::role_of(&mut c, wid, UserId(bob.id)).unwrap(), None);
            accounts::add_member(&mut c, wid, UserId(bob.id), Role::Viewer, UserId(alice.id)).unwrap();
            assert!(matches!(
                accounts::add_member(&mut c, wid, UserId(bob.id), Role::Editor, UserId(alice.id)),
                Err(DbError::Conflict("member"))
            ));
            let shared = accounts::workspaces_of(&mut c, UserId(bob.id), true).unwrap();
            assert_eq!(shared.len(), 1);
            assert_eq!(shared[0].owner_username, "alice");
            assert_eq!(shared[0].role, Role::Viewer);
            assert!(accounts::workspaces_of(&mut c, UserId(alice.id), true).unwrap().is_empty());
            assert_eq!(accounts::workspaces_of(&mut c, UserId(alice.id), false).unwrap().len(), 2);
            let members = accounts::members_of(&mut c, wid).unwrap();
            assert_eq!(
                members.iter().map(|m| (m.username.as_str(), m.role)).collect::<Vec<_>>(),
                vec![("alice", Role::Owner), ("bob", Role::Viewer)]
            );
        });
    }

    #[test]
    fn unknown_url_scheme_is_refused() {
        let err = Db::open("postgres://x", 1).unwrap_err();
        assert!(err.to_string().contains("unsupported database URL"), "{err}");
        let err = Db::open("mysql://root:secretpw@127.0.0.1:1/nope", 1).unwrap_err();
        assert!(!err.to_string().contains("secretpw"), "{err}");
    }
}

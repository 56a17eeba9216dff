//! Test support: a throw-away database per test on a real backend, so tests
//! run in parallel without seeing each other's rows.
//!
//! MySQL tests use `FILESYNC_TEST_MYSQL_URL` (default
//! `mysql://root@127.0.0.1:3306`): each [`TestDb`] creates
//! `filesync_test_<random>` and drops it when dropped.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::MysqlConnection;

use crate::db::Backend;

/// The server URL (no database) for MySQL tests.
pub fn mysql_server_url() -> String {
    std::env::var("FILESYNC_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_owned())
}

/// A fresh, empty database. Dropping it removes it.
pub struct TestDb {
    backend: Backend,
    url: String,
    name: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Mysql => TestDb::mysql(),
            Backend::Sqlite => TestDb::sqlite(),
        }
    }

    /// A new database on the MariaDB/MySQL server. Panics (the test fails) if the server is not there.
    pub fn mysql() -> TestDb {
        let server = mysql_server_url();
        let name = format!("filesync_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = MysqlConnection::establish(&format!("{server}/mysql"))
            .unwrap_or_else(|e| panic!("MariaDB not reachable at {server}: {e}"));
        conn.batch_execute(&format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"))
            .expect("create test database");
        TestDb { backend: Backend::Mysql, url: format!("{server}/{name}"), name, _dir: None }
    }

    /// A new SQLite file in a temp directory.
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("filesync.db");
        TestDb {
            backend: Backend::Sqlite,
            url: format!("sqlite://{}", path.display()),
            name: path.display().to_string(),
            _dir: Some(dir),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The database name (MySQL) or file path (SQLite).
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.backend == Backend::Mysql {
            if let Ok(mut conn) = MysqlConnection::establish(&format!("{}/mysql", mysql_server_url())) {
                let _ = conn.batch_execute(&format!("DROP DATABASE IF EXISTS `{}`", self.name));
            }
        }
    }
}

/// Content of one chunk whose bytes are `text`, recorded as held by `ws` (for journal stories).
pub fn held_content(c: &mut crate::db::DbConn, ws: crate::WorkspaceId, text: &str) -> crate::db::journal::Content {
    use crate::chunking::{hash, ChunkRef};
    use crate::db::journal::{record_chunk, Content, NewChunk};
    let h = hash(text.as_bytes());
    record_chunk(c, ws, &NewChunk { hash: h, size: text.len() as u32, stored_size: text.len() as u64, at: None })
        .expect("record the chunk");
    Content {
        size: text.len() as u64,
        mtime_ms: 1,
        mode: 0o644,
        content_hash: h,
        chunks: vec![ChunkRef { hash: h, len: text.len() as u32 }],
    }
}

/// Runs `story` once per backend, each on its own fresh database.
pub fn for_each_backend(mut story: impl FnMut(&TestDb)) {
    for backend in [Backend::Sqlite, Backend::Mysql] {
        let db = TestDb::new(backend);
        story(&db);
    }
}

pub use crate::test_data::{noise, text};

//! Test harness: real databases (a fresh MariaDB database or SQLite file per
//! test), a real throw-away Redis per test (so that killing it or publishing
//! membership events never disturbs other tests), the chunk store in a
//! directory or in a fresh prefix of the tests' S3 bucket ([`Cluster::on_s3`]),
//! nodes on 127.0.0.1:0, and the protocol client library.

#![allow(dead_code)]

mod certs;
pub use certs::TestCerts;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use filesync_core::config::Config;
use filesync_core::db::accounts::{self, NewUser};
use filesync_core::db::devices;
use filesync_core::db::{Backend, Db};
use filesync_core::jwt::{Grant, JwtKeys};
use filesync_core::proto::{Change, ErrorCode};
use filesync_core::testing::TestDb;
use filesync_core::{Role, Secret, UserId, WorkspaceId};
use filesync_proto_client::{Client, ClientError, ConnectOptions, Event, Events};
use filesync_tcp_sync::{Node, Tuning};
use filesync_testkit::TestS3;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const SECRET: &str = "test-secret-test-secret-test-secret-0123";
/// Upper bound for anything that should happen "at once"; only reached when a test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// A redis-server of our own on a free port.
pub struct TestRedis {
    pub port: u16,
    child: Option<Child>,
}

impl TestRedis {
    pub fn start() -> TestRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut r = TestRedis { port, child: None };
        r.spawn();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        self.child = Some(child);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct RunningNode {
    pub addr: SocketAddr,
    pub node: Node,
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningNode {
    /// Stops accepting, says Goodbye, waits for `serve` to return.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.task).await.expect("serve returns after shutdown")?
    }
}

/// One database, one chunk store, maybe one Redis, any number of nodes.
pub struct Cluster {
    pub tdb: TestDb,
    pub db: Db,
    pub dir: tempfile::TempDir,
    pub redis: Option<TestRedis>,
    pub jwt: JwtKeys,
    /// Chunks in this prefix of the tests' S3 bucket; `None`: in a directory under `dir`.
    pub s3: Option<TestS3>,
}

impl Cluster {
    /// Chunks in a directory.
    pub fn new(backend: Backend, with_redis: bool) -> Cluster {
        Cluster::with_store(backend, with_redis, None)
    }

    /// Chunks in a fresh prefix of the tests' S3 bucket; `None` when FILESYNC_SKIP_S3=1 (the test then
    /// returns), a panic saying how to start SeaweedFS when it does not answer.
    pub fn on_s3(backend: Backend, with_redis: bool) -> Option<Cluster> {
        TestS3::fresh().map(|s3| Cluster::with_store(backend, with_redis, Some(s3)))
    }

    fn with_store(backend: Backend, with_redis: bool, s3: Option<TestS3>) -> Cluster {
        let tdb = TestDb::new(backend);
        let db = Db::open(tdb.url(), 4).expect("test database");
        let dir = tempfile::tempdir().unwrap();
        let redis = with_redis.then(TestRedis::start);
        Cluster { tdb, db, dir, redis, jwt: JwtKeys::new(&Secret::new(SECRET), 3600), s3 }
    }

    pub fn storage(&self) -> std::path::PathBuf {
        self.dir.path().join("chunks")
    }

    pub fn config(&self) -> Config {
        let mut config = Config {
            data_dir: self.dir.path().to_path_buf(),
            database_url: Some(self.tdb.url().to_owned()),
            db_pool_size: 4,
            jwt_secret: Secret::new(SECRET),
            redis_url: self.redis.as_ref().map(TestRedis::url),
            storage: Some(self.storage().display().to_string()),
            bcrypt_cost: 4,
            ..Config::default()
        };
        if let Some(s3) = &self.s3 {
            s3.configure(&mut config);
        }
        config
    }

    pub async fn node(&self) -> RunningNode {
        self.node_with(self.config(), Tuning::default()).await
    }

    pub async fn node_with(&self, config: Config, tuning: Tuning) -> RunningNode {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let node = Node::start_with(config, tuning).await.expect("node starts");
        let stop = CancellationToken::new();
        let (n, s) = (node.clone(), stop.clone());
        let task = tokio::spawn(async move { n.serve(listener, s.cancelled_owned()).await });
        RunningNode { addr, node, stop, task }
    }

    /// A user and a valid token for them.
    pub fn user(&self, name: &str) -> (UserId, String) {
        let mut c = self.db.conn().unwrap();
        let email = format!("{name}@example.com");
        let u = accounts::create_user(
            &mut c,
            &NewUser { first_name: name, last_name: "Test", username: name, email: &email, password_hash: "x" },
        )
        .unwrap();
        let (token, _) = self.token(UserId(u.id), "agent");
        (UserId(u.id), token)
    }

    /// A new login (device) of `user` and an access token issued to it, as `/login` makes them.
    pub fn token(&self, user: UserId, device: &str) -> (String, Grant) {
        let mut c = self.db.conn().unwrap();
        let state = devices::token_state(&mut c, user).unwrap().expect("user exists");
        let d = devices::create(&mut c, user, device, &devices::new_secret().hash).unwrap();
        let grant = Grant { generation: state.generation, device: d.id };
        (self.jwt.issue(user, &state.email, grant).unwrap().0, grant)
    }

    /// The grant of a fresh login of `user`.
    pub fn grant(&self, user: UserId) -> Grant {
        self.token(user, "another").1
    }

    pub fn workspace(&self, owner: UserId, name: &str) -> WorkspaceId {
        let mut c = self.db.conn().unwrap();
        WorkspaceId(accounts::create_workspace(&mut c, owner, name).unwrap().id)
    }

    pub fn share(&self, ws: WorkspaceId, user: UserId, role: Role, by: UserId) {
        let mut c = self.db.conn().unwrap();
        accounts::add_member(&mut c, ws, user, role, by).unwrap();
    }

    pub fn head_seq(&self, ws: WorkspaceId) -> i64 {
        let mut c = self.db.conn().unwrap();
        filesync_core::db::journal::head_seq(&mut c, ws).unwrap().unwrap()
    }

    /// Number of chunk entries in the store's pack files (a chunk written twice counts twice): every
    /// pack file in the directory, or every recorded pack read back from S3.
    pub fn stored_chunks(&self) -> usize {
        if self.s3.is_some() {
            return self.stored_chunks_in_bucket();
        }
        let Ok(dirs) = std::fs::read_dir(self.storage().join("packs")) else { return 0 };
        dirs.filter_map(Result::ok)
            .filter(|d| d.file_name() != ".spool")
            .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().filter_map(Result::ok))
            .map(|pack| pack_entries(&std::fs::read(pack.path()).unwrap()))
            .sum()
    }

    fn stored_chunks_in_bucket(&self) -> usize {
        use diesel::prelude::*;
        use filesync_core::db::packs::PackId;
        use filesync_core::db::schema::packs;
        let mut c = self.db.conn().unwrap();
        let rows: Vec<(Vec<u8>, i64)> = packs::table.select((packs::id, packs::size)).load(&mut c).unwrap();
        let backend = filesync_core::storage::Backend::from_config(&self.config()).expect("the bucket");
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                let mut entries = 0;
                for (id, size) in rows {
                    let id = PackId(id.as_slice().try_into().expect("a 16-byte pack id"));
                    let bytes = backend.read(&id, 0..size as u64).await.expect("a recorded pack is in the bucket");
                    entries += pack_entries(&bytes);
                }
                entries
            })
        })
    }
}

/// Entries in one pack file's bytes.
fn pack_entries(bytes: &[u8]) -> usize {
    use filesync_core::storage::pack::{ENTRY_HEADER_LEN, HEADER_LEN};
    let (mut at, mut entries) = (HEADER_LEN as usize, 0);
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at + 33..at + 37].try_into().unwrap()) as usize;
        at += ENTRY_HEADER_LEN + len;
        entries += 1;
    }
    entries
}

pub async fn connect(addr: SocketAddr, token: &str, device: &str) -> (Client, Events) {
    tokio::time::timeout(WAIT, Client::connect(addr, ConnectOptions::new(token, device, format!("{device} name"))))
        .await
        .expect("connect in time")
        .expect("handshake accepted")
}

/// The next Change (skipping other events), or a panic naming what was waited for.
pub async fn next_change(events: &mut Events, what: &str) -> Change {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Err(_) => panic!("timed out waiting for {what}"),
            Ok(None) => panic!("events ended while waiting for {what}"),
            Ok(Some(Event::Change(c))) => return c,
            Ok(Some(Event::Closed { error, .. })) => panic!("connection closed ({error:?}) while waiting for {what}"),
            Ok(Some(_)) => continue,
        }
    }
}

#[allow(unused_imports)] // not every test file makes noise
pub use filesync_core::testing::noise;

pub fn write_file(dir: &std::path::Path, name: &str, data: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

pub fn code(r: Result<impl std::fmt::Debug, ClientError>) -> ErrorCode {
    match r {
        Err(ClientError::Server { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Runs a future with the test deadline.
pub async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Connects to `tls://localhost:PORT` trusting `certs`' CA.
pub async fn connect_tls(addr: SocketAddr, certs: &TestCerts, token: &str, device: &str) -> (Client, Events) {
    let url = format!("tls://localhost:{}", addr.port());
    tokio::time::timeout(WAIT, Client::connect_to(&url, certs.trusting(token, device)))
        .await
        .expect("connect in time")
        .expect("TLS handshake and Hello accepted")
}

/// GET `path` on an admin address; the whole response, headers included.
pub async fn admin_get(admin: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
    let mut body = String::new();
    within("admin answer", s.read_to_string(&mut body)).await.unwrap();
    body
}

/// The value of one sample line of a Prometheus text exposition (`name` includes any labels), 0 if absent.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

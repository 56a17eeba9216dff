//! Scaled sync nodes behind the load balancer, as deployed: HAProxy with the
//! committed `deploy/haproxy.cfg` (only its address variables set) in front
//! of two `filesync-tcp` processes, the HTTP API, MariaDB and a Redis of the
//! test's own. Two `filesync sync` agents know only HAProxy's address.
//!
//! One node is stopped (SIGTERM: Goodbye and drain; SIGKILL: gone mid-word)
//! while both people keep writing. Its agent must come back through HAProxy on
//! the other node with nothing lost, presence must show both devices there,
//! and the restarted node must take new connections once HAProxy's health
//! check sees it again.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use filesync_client::home::Home;
use filesync_client::http::Api;
use filesync_core::db::Backend;
use filesync_core::WorkspaceId;
use filesync_proto_client::{Client, ConnectOptions};

use support::{eventually, eventually_async, start_http, test_db, tree, Cli, TestRedis};

/// Longest a change may take to reach the other folder, or a node to (re)appear (not a speed check).
const SYNCED: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port()
}

/// `target/<profile>/filesync-tcp`, built by cargo if this test run did not build it (it belongs to another
/// package, so `CARGO_BIN_EXE_` cannot name it).
fn node_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("test executable");
            let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
            let bin = profile_dir.join(format!("filesync-tcp{}", std::env::consts::EXE_SUFFIX));
            // Always asked: a no-op when the binary is current, a rebuild when the sources changed.
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "--quiet", "-p", "filesync-tcp-sync", "--bin", "filesync-tcp"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status();
            match status {
                Ok(s) if s.success() => {}
                other if bin.exists() => eprintln!("cannot rebuild filesync-tcp ({other:?}); using {}", bin.display()),
                other => panic!("cannot build filesync-tcp: {other:?}"),
            }
            bin
        })
        .clone()
}

/// One `filesync-tcp` process; restartable on the same addresses.
struct NodeProcess {
    id: String,
    addr: String,
    admin: String,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl NodeProcess {
    fn new(id: &str, common: &[(String, String)], dir: &Path) -> NodeProcess {
        let addr = format!("127.0.0.1:{}", free_port());
        let admin = format!("127.0.0.1:{}", free_port());
        let mut env = common.to_vec();
        env.push(("FILESYNC_NODE_ID".into(), id.into()));
        env.push(("FILESYNC_TCP_ADDR".into(), addr.clone()));
        env.push(("FILESYNC_TCP_ADMIN_ADDR".into(), admin.clone()));
        let log = dir.join(format!("{id}.log"));
        NodeProcess { id: id.into(), addr, admin, env, log, child: None }
    }

    fn admin_port(&self) -> String {
        self.admin.rsplit(':').next().unwrap_or_default().to_owned()
    }

    fn start(&mut self) {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("node log");
        let err = out.try_clone().expect("node log");
        let child = Command::new(node_binary())
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn filesync-tcp");
        self.child = Some(child);
    }

    async fn wait_ready(&mut self) {
        let url = format!("http://{}/readyz", self.admin);
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + SYNCED;
        loop {
            if let Ok(r) = http.get(&url).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            if let Some(Some(status)) = self.child.as_mut().map(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "{} exited at start ({status}):\n{}",
                    self.id,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(tokio::time::Instant::now() < deadline, "{} never became ready", self.id);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM; the node must say Goodbye, drain and exit 0.
    async fn terminate(&mut self) {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let waited = tokio::time::timeout(SYNCED, tokio::task::spawn_blocking(move || child.wait())).await;
        let status =
            waited.unwrap_or_else(|_| panic!("{} did not exit after SIGTERM", self.id)).expect("task").expect("wait");
        assert!(status.success(), "{} exited with {status} after SIGTERM", self.id);
    }

    /// SIGKILL: no Goodbye, no drain.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// HAProxy with the committed config; killed on drop.
struct Haproxy {
    addr: String,
    child: Child,
}

impl Haproxy {
    fn start(nodes: &[NodeProcess], dir: &Path) -> Haproxy {
        let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/haproxy.cfg");
        let addr = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.join("haproxy.log")).expect("haproxy log");
        let child = Command::new("/usr/sbin/haproxy")
            .arg("-db") // foreground, no daemon
            .arg("-f")
            .arg(&cfg)
            .env("FILESYNC_LB_BIND", &addr)
            .env("FILESYNC_NODE1_ADDR", &nodes[0].addr)
            .env("FILESYNC_NODE1_ADMIN", nodes[0].admin_port())
            .env("FILESYNC_NODE2_ADDR", &nodes[1].addr)
            .env("FILESYNC_NODE2_ADMIN", nodes[1].admin_port())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("haproxy must be installed (apt-get install haproxy)");
        // Owned by the guard from here on, so a failed start is cleaned up too.
        let lb = Haproxy { addr, child };
        for _ in 0..400 {
            if std::net::TcpStream::connect(&lb.addr).is_ok() {
                return lb;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("haproxy did not listen on {}", lb.addr);
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The whole deployment, and two people whose agents know only the load balancer.
struct Deployment {
    nodes: Vec<NodeProcess>,
    lb: Haproxy,
    alice: Cli,
    bob: Cli,
    a: PathBuf,
    b: PathBuf,
    api: Api,
    ws: WorkspaceId,
    token: String,
    http: support::Daemon,
    _redis: TestRedis,
    _db: filesync_core::testing::TestDb,
    dir: tempfile::TempDir,
}

impl Deployment {
    async fn start() -> Deployment {
        let db = test_db(Backend::Mysql).await;
        let dir = support::test_dir("filesync-lb-");
        let redis = TestRedis::start();
        let data = dir.path().join("data");
        let mut cfg = support::config(&db, &data, false);
        cfg.redis_url = Some(redis.url());
        let http = start_http(cfg.clone()).await;
        let common: Vec<(String, String)> = [
            ("FILESYNC_DATABASE_URL", db.url().to_owned()),
            ("FILESYNC_REDIS_URL", redis.url()),
            ("FILESYNC_JWT_SECRET", support::SECRET.to_owned()),
            ("FILESYNC_DATA_DIR", data.display().to_string()),
            ("FILESYNC_STORAGE", data.join("chunks").display().to_string()),
            ("FILESYNC_DB_POOL_SIZE", "4".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let mut nodes =
            vec![NodeProcess::new("node-1", &common, dir.path()), NodeProcess::new("node-2", &common, dir.path())];
        for n in &mut nodes {
            n.start();
        }
        for n in &mut nodes {
            n.wait_ready().await;
        }
        let lb = Haproxy::start(&nodes, dir.path());
        let only_lb = [lb.addr.clone()];
        let alice = Cli::new(dir.path().join("home-alice"), &http.addr, &only_lb);
        let bob = Cli::new(dir.path().join("home-bob"), &http.addr, &only_lb);
        alice.register("alice").await;
        bob.register("bob").await;
        let a = dir.path().join("alice-folder");
        let b = dir.path().join("bob-folder");
        alice.ok(&["workspace", "create", "team", a.to_str().unwrap(), "--no-sync"], None).await;
        alice.ok(&["workspace", "share", "team", "bob@example.com", "--role", "editor"], None).await;
        bob.ok(&["workspace", "link", "team", b.to_str().unwrap(), "--no-sync"], None).await;
        let token = Home::open(Some(alice.home.clone())).unwrap().token().unwrap().expect("alice is logged in").token;
        let api = Api::new(&http.addr, Some(token.clone())).unwrap();
        let ws = api.workspaces().await.unwrap().iter().find(|w| w.name == "team").expect("team").id;
        Deployment { nodes, lb, alice, bob, a, b, api, ws, token, http, _redis: redis, _db: db, dir }
    }

    /// Waits until both folders are identical and the server (a fresh download through HAProxy) holds the same.
    async fn converge(&self, what: &str) -> std::collections::BTreeMap<String, String> {
        let (a, b) = (self.a.clone(), self.b.clone());
        eventually(what, SYNCED, || tree(&a) == tree(&b)).await;
        let now = tree(&self.a);
        let fresh = self.dir.path().join(format!("server-{}", uuid::Uuid::new_v4().simple()));
        self.alice.ok(&["workspace", "download", "team", fresh.to_str().unwrap()], None).await;
        assert_eq!(tree(&fresh), now, "the server differs after: {what}");
        now
    }

    /// (username, node id) of every connected device, once `holds` is true of them.
    async fn presence_until(&self, what: &str, holds: impl Fn(&[(String, String)]) -> bool) -> Vec<(String, String)> {
        let deadline = tokio::time::Instant::now() + SYNCED;
        loop {
            let devices = self.api.presence(self.ws).await.unwrap().expect("presence is served from Redis");
            let placed: Vec<(String, String)> =
                devices.into_iter().map(|d| (d.username, d.node.unwrap_or_default())).collect();
            if holds(&placed) {
                return placed;
            }
            if tokio::time::Instant::now() >= deadline {
                let log = |home: &Path| {
                    let text = std::fs::read_to_string(home.join("agent.log")).unwrap_or_default();
                    let lines: Vec<&str> = text.lines().collect();
                    lines[lines.len().saturating_sub(40)..].join("\n")
                };
                panic!(
                    "timed out waiting for: {what}; presence: {placed:?}\n--- alice's agent ---\n{}\n--- bob's agent ---\n{}",
                    log(&self.alice.home),
                    log(&self.bob.home)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop_http(self) {
        let Deployment { http, .. } = self;
        http.stop().await;
    }
}

fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stop {
    /// Graceful: Goodbye, drain, exit 0.
    Term,
    /// The process is gone at once.
    Kill,
}

async fn a_node_leaves_and_comes_back(stop: Stop) {
    let mut d = Deployment::start().await;
    write(&d.a, "plan.txt", b"the plan, version 1\n");
    write(&d.b, "notes/bob.txt", b"bob's notes\n");
    let agent_a = d.alice.spawn_sync();
    let agent_b = d.bob.spawn_sync();
    d.converge("the first files, through HAProxy").await;

    // Both devices are connected, each to some node behind HAProxy.
    let placed = d.presence_until("both devices in presence", |p| p.len() == 2).await;
    let victim = d.nodes.iter().position(|n| placed.iter().any(|(_, node)| *node == n.id)).expect("a busy node");
    let (victim_id, survivor_id) = (d.nodes[victim].id.clone(), d.nodes[1 - victim].id.clone());
    let moved: Vec<String> = placed.iter().filter(|(_, n)| *n == victim_id).map(|(u, _)| u.clone()).collect();

    match stop {
        Stop::Term => d.nodes[victim].terminate().await,
        Stop::Kill => d.nodes[victim].kill(),
    }
    // Written while the node is down and its agents are moving.
    write(&d.a, "during/alice.bin", &vec![7u8; 300_000]);
    write(&d.b, "during/bob.txt", b"written while a node was away\n");
    write(&d.a, "plan.txt", b"the plan, version 2\n");
    let on_survivor = |p: &[(String, String)]| {
        ["alice", "bob"].iter().all(|u| p.iter().any(|(user, node)| user == u && *node == survivor_id))
    };
    let placed = d.presence_until("both devices on the surviving node", on_survivor).await;
    if stop == Stop::Term {
        // A graceful stop removes its entries; a killed node's linger until it restarts (or their TTL ends).
        assert_eq!(placed.len(), 2, "{placed:?}");
    }
    // And after the move.
    write(&d.b, "after/bob.txt", b"after the move\n");
    let now = d.converge("writes during and after the node's departure").await;
    for (path, data) in [
        ("plan.txt", &b"the plan, version 2\n"[..]),
        ("notes/bob.txt", b"bob's notes\n"),
        ("during/alice.bin", &[7u8; 300_000][..]),
        ("during/bob.txt", b"written while a node was away\n"),
        ("after/bob.txt", b"after the move\n"),
    ] {
        assert_eq!(now.get(path), Some(&blake3::hash(data).to_hex().to_string()), "{path} in {now:?}");
    }
    assert_eq!(now.len(), 5, "{now:?}");
    if stop == Stop::Term {
        // The graceful stop told the agent to leave (Goodbye) rather than leaving it to notice a dead socket.
        let log = if moved.iter().any(|u| u == "alice") { agent_a.log_text() } else { agent_b.log_text() };
        assert!(log.contains("node is leaving"), "no Goodbye seen by the moved agent:\n{log}");
    }

    // The node comes back; once HAProxy's health check sees it, it takes new connections (leastconn: it has none).
    d.nodes[victim].start();
    d.nodes[victim].wait_ready().await;
    let (lb, token) = (d.lb.addr.clone(), d.token.clone());
    eventually_async("a new connection lands on the restarted node", SYNCED, || {
        let (lb, token, victim_id) = (lb.clone(), token.clone(), victim_id.clone());
        async move {
            let opts = ConnectOptions::new(&token, "probe", "probe");
            match tokio::time::timeout(Duration::from_secs(10), Client::connect_to(&lb, opts)).await {
                Ok(Ok((client, _events))) => client.welcome().node_id == victim_id,
                _ => false,
            }
        }
    })
    .await;
    // The restarted node cleared what its last run left in presence: each device once, on the survivor.
    d.presence_until("presence without the old run's entries", |p| p.len() == 2 && on_survivor(p)).await;
    write(&d.a, "back.txt", b"the node is back\n");
    d.converge("a change after the node came back").await;

    agent_a.stop().await;
    agent_b.stop().await;
    for n in &mut d.nodes {
        n.terminate().await;
    }
    d.stop_http().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_a_node_behind_haproxy_and_nothing_is_lost() {
    a_node_leaves_and_comes_back(Stop::Term).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_a_node_behind_haproxy_and_nothing_is_lost() {
    a_node_leaves_and_comes_back(Stop::Kill).await;
}

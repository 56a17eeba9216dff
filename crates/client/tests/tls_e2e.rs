//! The `filesync` CLI over TLS on both sides: the HTTP API on https:// and a
//! sync node on tls://, with certificates from a private CA made at test
//! time. With `--ca` everything works; without it the CLI stops with one line
//! that says what to do.

mod support;

#[path = "../../tcp-sync/tests/common/certs.rs"]
mod certs;

use std::time::Duration;

use certs::TestCerts;
use filesync_core::db::Backend;
use support::{test_db, tree, Cli, Daemon};

/// The HTTP API serving HTTPS with `certs`, on a fresh port.
async fn start_https(config: filesync_core::config::Config, certs: &TestCerts) -> Daemon {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = format!("https://localhost:{}", listener.local_addr().expect("addr").port());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(filesync_http_api::run(listener, certs.serve(config), async {
        let _ = rx.await;
    }));
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&certs.ca).unwrap()).unwrap();
    let client = reqwest::Client::builder().tls_certs_merge([ca]).build().unwrap();
    for _ in 0..300 {
        if let Ok(res) = client.get(format!("{addr}/readyz")).send().await {
            if res.status().is_success() {
                return Daemon::new(addr, tx, task);
            }
        }
        assert!(!task.is_finished(), "HTTPS API exited during startup");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("HTTPS API did not become ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_syncs_over_tls_with_the_ca_and_says_what_to_do_without_it() {
    let certs = TestCerts::new();
    let db = test_db(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = support::config(&db, &dir.path().join("data"), false);
    let http = start_https(cfg.clone(), &certs).await;
    let node = support::start_node(certs.serve(cfg)).await;
    let port = node.addr.rsplit(':').next().unwrap().to_owned();
    let sync = vec![format!("tls://localhost:{port}")];
    let alice = Cli::new(dir.path().join("home-alice"), &http.addr, &sync);
    let ca = certs.ca.to_str().unwrap();

    // Without --ca, the HTTPS API is not trusted either: one line, naming the server and the reason.
    let email = "alice@example.com";
    let register = [
        "register",
        "--email",
        email,
        "--username",
        "alice",
        "--first-name",
        "A",
        "--last-name",
        "B",
        "--password-stdin",
    ];
    let line = alice.fails(&register, Some("password-alice\n")).await;
    assert!(line.contains(&http.addr) && line.contains("pass --ca FILE"), "{line}");

    // With --ca: register over HTTPS, then sync a folder over TLS.
    let mut args = register.to_vec();
    args.extend(["--ca", ca]);
    alice.ok(&args, Some("password-alice\n")).await;
    let folder = dir.path().join("folder");
    alice.ok(&["workspace", "create", "team", folder.to_str().unwrap(), "--no-sync", "--ca", ca], None).await;
    std::fs::write(folder.join("hello.txt"), b"hello over TLS\n").unwrap();
    std::fs::write(folder.join("big.bin"), vec![42u8; 2_000_000]).unwrap();
    alice.ok(&["sync", "--once", "--no-notify", "--no-progress", "--ca", ca], None).await;
    let copy = dir.path().join("copy");
    alice.ok(&["workspace", "download", "team", copy.to_str().unwrap(), "--ca", ca], None).await;
    assert_eq!(tree(&copy), tree(&folder));
    assert_eq!(tree(&copy).len(), 2);

    // Without --ca the sync node is not trusted: one line that says what to do, at once (no retrying).
    let line = alice.fails(&["sync", "--once", "--no-notify", "--no-progress"], None).await;
    assert!(line.contains("TLS certificate is not trusted") && line.contains("pass --ca FILE"), "{line}");
    assert_eq!(line.matches("not trusted").count(), 1, "{line}");

    // FILESYNC_CA works like --ca.
    let out = alice.run_with_env(&["sync", "--once", "--no-notify", "--no-progress"], &[("FILESYNC_CA", ca)]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    node.stop().await;
    http.stop().await;
}

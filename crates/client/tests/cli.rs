//! The account and workspace commands against the real HTTP API, on SQLite
//! and on MariaDB: what a person typing them sees (output, one-line errors,
//! exit codes, the files in the home directory).

mod support;

use filesync_core::db::Backend;

use support::{config, start_http, test_db, Cli};

async fn account_and_workspace_story(backend: Backend) {
    let db = test_db(backend).await;
    let data = tempfile::tempdir().unwrap();
    let http = start_http(config(&db, data.path(), false)).await;
    let dir = tempfile::tempdir().unwrap();
    let alice = Cli::new(dir.path().join("alice-home"), &http.addr, &[]);
    let bob = Cli::new(dir.path().join("bob-home"), &http.addr, &[]);

    // Not logged in yet: a clear line, non-zero exit.
    let err = alice.fails(&["workspace", "list"], None).await;
    assert!(err.contains("not logged in"), "{err}");

    alice.register("alice").await;
    bob.register("bob").await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(alice.home.join("token.json")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the token file is private");
    }
    let me = alice.ok(&["whoami"], None).await;
    assert!(me.contains("alice@example.com"), "{me}");

    // Registering the same email again, a wrong password: the server's reason, one line.
    let err = alice
        .fails(
            &[
                "register",
                "--email",
                "alice@example.com",
                "--username",
                "alice2",
                "--first-name",
                "A",
                "--last-name",
                "B",
                "--password-stdin",
            ],
            Some("password-alice\n"),
        )
        .await;
    assert!(err.to_lowercase().contains("email"), "{err}");
    let err =
        alice.fails(&["login", "--email", "alice@example.com", "--password-stdin"], Some("wrong-password\n")).await;
    assert!(err.contains("incorrect"), "{err}");
    // The failed login did not log alice out.
    alice.ok(&["whoami"], None).await;

    // A workspace, linked to a folder (no sync node in this test: --no-sync).
    let folder = dir.path().join("Docs");
    let out = alice.ok(&["workspace", "create", "docs", folder.to_str().unwrap(), "--no-sync"], None).await;
    assert!(out.contains("created workspace docs"), "{out}");
    assert!(folder.is_dir());
    let list = alice.ok(&["workspace", "list"], None).await;
    assert!(list.contains("docs") && list.contains("owner") && list.contains("linked at"), "{list}");
    let status = alice.ok(&["status"], None).await;
    assert!(status.contains("docs") && status.contains("last seq 0"), "{status}");

    // Sharing by name, with a role; bob sees it; members lists both.
    alice.ok(&["workspace", "share", "docs", "bob@example.com", "--role", "viewer"], None).await;
    let bobs = bob.ok(&["workspace", "list"], None).await;
    assert!(bobs.contains("docs") && bobs.contains("viewer"), "{bobs}");
    let members = alice.ok(&["workspace", "members", "docs"], None).await;
    assert!(members.contains("alice@example.com") && members.contains("bob@example.com"), "{members}");

    // An email without an account is invited, and listed as such.
    let out = alice.ok(&["workspace", "share", "docs", "nobody@example.com"], None).await;
    assert!(out.contains("invited nobody@example.com to docs as editor"), "{out}");
    let members = alice.ok(&["workspace", "members", "docs"], None).await;
    assert!(members.contains("nobody@example.com") && members.contains("invited, no account yet"), "{members}");

    // Wrong inputs name the problem.
    let err = alice.fails(&["workspace", "share", "docs", "not an email"], None).await;
    assert!(err.contains("email must look like"), "{err}");
    let err = alice.fails(&["workspace", "members", "nope"], None).await;
    assert!(err.contains("no workspace \"nope\""), "{err}");
    let err = bob.fails(&["workspace", "share", "docs", "alice@example.com"], None).await;
    assert!(!err.is_empty());
    let err = alice
        .fails(&["workspace", "link", "docs", dir.path().join("Other").to_str().unwrap(), "--no-sync"], None)
        .await;
    assert!(err.contains("already linked"), "{err}");
    let err = alice.fails(&["workspace", "share", "docs", "bob@example.com", "--role", "owner"], None).await;
    assert!(err.contains("owner"), "{err}");

    // Logout forgets the token.
    alice.ok(&["logout"], None).await;
    assert!(!alice.home.join("token.json").exists());
    let err = alice.fails(&["whoami"], None).await;
    assert!(err.contains("not logged in"), "{err}");
    http.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_and_workspaces_on_sqlite() {
    account_and_workspace_story(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_and_workspaces_on_mariadb() {
    account_and_workspace_story(Backend::Mysql).await;
}

/// `trash`, `trash restore` and `workspace retention` against the real HTTP API: the files are put
/// and deleted over HTTP with alice's saved token, as her agent would.
async fn trash_and_retention_story(backend: Backend) {
    let db = test_db(backend).await;
    let data = tempfile::tempdir().unwrap();
    let http = start_http(config(&db, data.path(), false)).await;
    let dir = tempfile::tempdir().unwrap();
    let alice = Cli::new(dir.path().join("alice-home"), &http.addr, &[]);
    let bob = Cli::new(dir.path().join("bob-home"), &http.addr, &[]);
    alice.register("alice").await;
    bob.register("bob").await;
    let folder = dir.path().join("Docs");
    alice.ok(&["workspace", "create", "docs", folder.to_str().unwrap(), "--no-sync"], None).await;
    alice.ok(&["workspace", "share", "docs", "bob@example.com"], None).await;
    let out = alice.ok(&["trash", "docs"], None).await;
    assert!(out.contains("the trash of docs is empty (deleted files stay 30 days)"), "{out}");

    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(alice.home.join("token.json")).unwrap()).unwrap();
    let token = saved["token"].as_str().unwrap().to_owned();
    let web = reqwest::Client::new();
    let file = |path: &str| format!("{}/workspaces/1/file", http.addr.trim_end_matches('/')) + "?path=" + path;
    for (path, body) in [("notes.txt", "hello"), ("folder/a.txt", "aaa"), ("folder/b.txt", "bbbb")] {
        let res = web.put(file(path)).bearer_auth(&token).body(body).send().await.unwrap();
        assert!(res.status().is_success(), "{}", res.status());
    }
    for path in ["notes.txt", "folder"] {
        let res = web.delete(file(path)).bearer_auth(&token).send().await.unwrap();
        assert!(res.status().is_success(), "{}", res.status());
    }

    // The trash, as a table with headers; without a workspace and outside a linked folder, a clear line.
    let out = alice.ok(&["trash", "docs"], None).await;
    let header = out.lines().next().unwrap();
    assert_eq!(header.split_whitespace().collect::<Vec<_>>(), ["DELETED", "BY", "SIZE", "EXPIRES", "PATH"], "{out}");
    assert_eq!(out.lines().count(), 4, "{out}");
    let notes = out.lines().find(|l| l.ends_with("notes.txt")).unwrap();
    assert!(notes.contains("alice") && notes.contains("5 B"), "{out}");
    let err = bob.fails(&["trash"], None).await;
    assert!(err.contains("not inside a linked folder"), "{err}");

    // Restores: a file by its path in the workspace, a folder by its path in the linked folder.
    let out = alice.ok(&["trash", "restore", "notes.txt", "--workspace", "docs"], None).await;
    assert!(out.contains("RESTORED") && out.contains("notes.txt"), "{out}");
    let out = alice.ok(&["trash", "restore", folder.join("folder").to_str().unwrap()], None).await;
    assert!(out.contains("folder/a.txt") && out.contains("folder/b.txt"), "{out}");
    let err = alice.fails(&["trash", "restore", "notes.txt", "--workspace", "docs"], None).await;
    assert!(err.contains("cannot restore notes.txt from the trash") && err.contains("is in the trash"), "{err}");
    let out = bob.ok(&["trash", "docs"], None).await;
    assert!(out.contains("is empty"), "{out}");

    // Retention: anyone reads it, the owner changes it, one setting at a time.
    let out = bob.ok(&["workspace", "retention", "docs"], None).await;
    assert!(out.contains("every version is kept 30 days, then one a week up to 90 days (server default)"), "{out}");
    let err = bob.fails(&["workspace", "retention", "docs", "--keep-days", "7"], None).await;
    assert!(err.contains("owner"), "{err}");
    let out = alice.ok(&["workspace", "retention", "docs", "--keep-days", "0"], None).await;
    assert!(out.contains("only the current version of each file is kept"), "{out}");
    let out = alice.ok(&["workspace", "retention", "docs", "--trash-days", "7"], None).await;
    assert!(out.contains("only the current version") && out.contains("stay 7 days in the trash"), "{out}");
    assert!(!out.contains("(server default)"), "{out}");
    let err = alice.fails(&["workspace", "retention", "docs", "--trash-days", "99999"], None).await;
    assert!(err.contains("99999"), "{err}");

    // The listing says what each workspace stores.
    let list = alice.ok(&["workspace", "list"], None).await;
    let header: Vec<&str> = list.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["ID", "NAME", "ROLE", "FILES", "HISTORY", "TRASH", "FOLDER"], "{list}");
    assert!(list.contains("12 B"), "hello + aaa + bbbb live: {list}");
    http.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trash_and_retention_on_sqlite() {
    trash_and_retention_story(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trash_and_retention_on_mariadb() {
    trash_and_retention_story(Backend::Mysql).await;
}

#[tokio::test]
async fn an_unreachable_server_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    // Port 9 on loopback: nothing listens there.
    let cli = Cli::new(dir.path().join("home"), "http://127.0.0.1:9", &[]);
    let err = cli.fails(&["login", "--email", "a@example.com", "--password-stdin"], Some("pw-pw-pw-pw\n")).await;
    assert!(err.contains("cannot reach the server at http://127.0.0.1:9"), "{err}");
    let err = cli.fails(&["login", "--email", "a@example.com", "--password-stdin"], Some("\n")).await;
    assert!(err.contains("no password"), "{err}");
    let bad = Cli::new(dir.path().join("home"), "ftp://x", &[]);
    let err = bad.fails(&["login", "--email", "a@example.com", "--password-stdin"], Some("pw\n")).await;
    assert!(err.contains("invalid server URL"), "{err}");
}

#[tokio::test]
async fn completions_are_printed_for_a_shell() {
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(dir.path().join("home"), "http://127.0.0.1:9", &[]);
    let script = cli.ok(&["completions", "bash"], None).await;
    assert!(script.contains("filesync") && script.contains("workspace"), "{}", &script[..200.min(script.len())]);
}

/// A usage error exits 1 as documented; help lists a command's own options apart from the global ones.
#[tokio::test]
async fn usage_errors_exit_1_and_help_is_readable() {
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(dir.path().join("home"), "http://127.0.0.1:9", &[]);
    let out = cli.run(&["workspace", "no-such-command"], None).await;
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli.run(&["register", "--help"], None).await;
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let (own, global) = help.split_once("Global options").expect("a Global options section");
    assert!(own.contains("--first-name") && own.contains("Your first name"), "{help}");
    assert!(global.contains("--server") && !own.contains("--server"), "{help}");
}

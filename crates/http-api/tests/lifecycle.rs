//! The data lifecycle over HTTP (issue #13): the trash (list, restore a file and a folder of 100
//! files), retention settings and who may change them, retention applied (old versions go, the
//! head stays, history and restore say what expired, the trash empties) and the workspaces'
//! usage, on SQLite and on MariaDB. Retention runs with a clock moved forward, not by waiting.

mod common;

use chrono::{Duration, Utc};
use common::{assert_error, on_both_backends, people, urlencode, Server};
use filesync_core::db::retention::{self, Policy, Pruned};
use filesync_core::db::Db;
use filesync_core::WorkspaceId;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn start(backend: filesync_core::db::Backend) -> (Server, tempfile::TempDir) {
    let storage = tempfile::tempdir().unwrap();
    let dir = storage.path().display().to_string();
    let srv = Server::start(backend, move |c| c.storage = Some(dir)).await;
    (srv, storage)
}

/// PUT a file; returns its new version.
async fn put(srv: &Server, token: &str, ws: i64, path: &str, body: &str) -> i64 {
    let url = srv.url(&format!("/workspaces/{ws}/file?path={}", urlencode(path)));
    let req = srv.raw().put(url).bearer_auth(token).body(body.to_owned());
    let (status, res) = srv.send(req).await;
    assert!(status.is_success(), "{status} {res}");
    res["version"].as_i64().unwrap()
}

async fn delete(srv: &Server, token: &str, ws: i64, path: &str) -> (StatusCode, Value) {
    let url = srv.url(&format!("/workspaces/{ws}/file?path={}", urlencode(path)));
    srv.send(srv.raw().delete(url).bearer_auth(token)).await
}

/// The bytes of a file (a version of it), or the error answer.
async fn download(
    srv: &Server,
    token: &str,
    ws: i64,
    path: &str,
    version: Option<i64>,
) -> Result<String, (StatusCode, Value)> {
    let mut url = srv.url(&format!("/workspaces/{ws}/file?path={}", urlencode(path)));
    if let Some(v) = version {
        url.push_str(&format!("&version={v}"));
    }
    let res = srv.raw().get(url).bearer_auth(token).send().await.unwrap();
    let status = res.status();
    let text = res.text().await.unwrap();
    if status == StatusCode::OK {
        Ok(text)
    } else {
        Err((status, serde_json::from_str(&text).unwrap()))
    }
}

/// Every trash entry, newest first, read a page of `limit` at a time.
async fn whole_trash(srv: &Server, token: &str, ws: i64, limit: i64) -> Vec<Value> {
    let mut all = Vec::new();
    let mut before: Option<i64> = None;
    loop {
        let mut url = format!("/workspaces/{ws}/trash?limit={limit}");
        if let Some(b) = before {
            url.push_str(&format!("&before_seq={b}"));
        }
        let (status, body) = srv.get(&url, Some(token)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let page = body["entries"].as_array().unwrap();
        assert!(page.len() as i64 <= limit);
        all.extend(page.iter().cloned());
        match body["next_before_seq"].as_i64() {
            Some(next) => before = Some(next),
            None => return all,
        }
    }
}

async fn trash_restore(srv: &Server, token: &str, ws: i64, path: &str) -> (StatusCode, Value) {
    srv.post(&format!("/workspaces/{ws}/trash/restore"), Some(token), json!({ "path": path })).await
}

async fn put_retention(srv: &Server, token: &str, ws: i64, body: Value) -> (StatusCode, Value) {
    let req = srv.raw().put(srv.url(&format!("/workspaces/{ws}/retention"))).bearer_auth(token).json(&body);
    srv.send(req).await
}

async fn live_paths(srv: &Server, token: &str, ws: i64) -> Vec<String> {
    let (status, body) = srv.get(&format!("/workspaces/{ws}/files"), Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trash_lists_and_restores_files_and_whole_folders() {
    on_both_backends(|backend| async move {
        let (srv, _storage) = start(backend).await;
        let p = people(&srv).await;
        let (alice, dave, bob, ws) = (p.alice.as_str(), p.dave.as_str(), p.bob.as_str(), p.ws);

        let v1 = put(&srv, alice, ws, "notes.txt", "one").await;
        let v2 = put(&srv, alice, ws, "notes.txt", "two!").await;
        assert!(v2 > v1);
        let (status, body) = delete(&srv, dave, ws, "notes.txt").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        for i in 0..100 {
            put(&srv, alice, ws, &format!("folder/f{i:03}.txt"), &format!("file number {i}")).await;
        }
        let (status, body) =
            srv.post(&format!("/workspaces/{ws}/mkdir"), Some(alice), json!({"path": "folder/empty"})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, body) = delete(&srv, alice, ws, "folder").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(live_paths(&srv, alice, ws).await.is_empty());

        // Everyone in the workspace sees the trash, newest first, a page at a time.
        let trash = whole_trash(&srv, bob, ws, 40).await;
        assert_eq!(trash.len(), 102, "100 files, a directory and notes.txt");
        let versions: Vec<i64> = trash.iter().map(|e| e["deleted_version"].as_i64().unwrap()).collect();
        assert!(versions.windows(2).all(|w| w[0] > w[1]), "newest first: {versions:?}");
        let notes = trash.last().unwrap();
        assert_eq!(notes["path"], "notes.txt");
        assert_eq!((notes["kind"].as_str(), notes["size"].as_u64()), (Some("file"), Some(4)));
        assert_eq!((notes["deleted_by"].as_str(), notes["restores_version"].as_i64()), (Some("dave"), Some(v2)));
        let deleted_at: chrono::DateTime<Utc> = notes["deleted_at"].as_str().unwrap().parse().unwrap();
        let expires_at: chrono::DateTime<Utc> = notes["expires_at"].as_str().unwrap().parse().unwrap();
        assert_eq!(expires_at - deleted_at, Duration::days(30), "the server's default trash_days");
        let dir = trash.iter().find(|e| e["path"] == "folder/empty").unwrap();
        assert_eq!((dir["kind"].as_str(), dir["deleted_by"].as_str()), (Some("dir"), Some("alice")));

        // Bad pages are refused; viewers may look but not restore.
        assert_error(&srv.get(&format!("/workspaces/{ws}/trash?limit=0"), Some(bob)).await, 422, "invalid_limit");
        assert_error(
            &srv.get(&format!("/workspaces/{ws}/trash?before_seq=0"), Some(bob)).await,
            422,
            "invalid_before_seq",
        );
        assert_error(&trash_restore(&srv, bob, ws, "notes.txt").await, 403, "forbidden");
        assert_error(&trash_restore(&srv, alice, ws, "../x").await, 422, "invalid_path");
        assert_error(&trash_restore(&srv, alice, ws, "never-there.txt").await, 404, "not_in_trash");

        // A file comes back as it last was.
        let (status, body) = trash_restore(&srv, dave, ws, "notes.txt").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["restored"][0]["path"], "notes.txt");
        assert_eq!(download(&srv, alice, ws, "notes.txt", None).await.unwrap(), "two!");
        assert_error(&trash_restore(&srv, dave, ws, "notes.txt").await, 404, "not_in_trash");

        // A folder comes back whole, in one change set, parents first.
        let (status, body) = trash_restore(&srv, alice, ws, "folder").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let restored = body["restored"].as_array().unwrap();
        assert_eq!(restored.len(), 101);
        assert_eq!(restored[0]["path"], "folder/empty");
        let live = live_paths(&srv, alice, ws).await;
        assert_eq!(live.len(), 102);
        assert_eq!(download(&srv, bob, ws, "folder/f042.txt", None).await.unwrap(), "file number 42");
        assert!(whole_trash(&srv, alice, ws, 500).await.is_empty());
        // ... committed like any change: the journal shows the restores.
        let (_, activity) = srv.get(&format!("/workspaces/{ws}/activity?limit=1"), Some(alice)).await;
        assert_eq!(activity["entries"][0]["op"], "restore");

        // A restore that cannot land (a file now where the deleted file's folder was) changes nothing.
        let (status, _) = delete(&srv, alice, ws, "folder/f001.txt").await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = delete(&srv, alice, ws, "folder").await;
        assert_eq!(status, StatusCode::OK);
        put(&srv, alice, ws, "folder", "a file now").await;
        assert_error(&trash_restore(&srv, alice, ws, "folder/f001.txt").await, 409, "restore_conflict");
        assert_eq!(whole_trash(&srv, alice, ws, 500).await.len(), 101, "nothing left the trash");
        assert_eq!(live_paths(&srv, alice, ws).await, vec!["folder".to_owned(), "notes.txt".to_owned()]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_old_versions_and_the_trash_and_says_so() {
    on_both_backends(|backend| async move {
        let (srv, _storage) = start(backend).await;
        let p = people(&srv).await;
        let (alice, dave, bob, ws) = (p.alice.as_str(), p.dave.as_str(), p.bob.as_str(), p.ws);
        let url = format!("/workspaces/{ws}/retention");

        // Settings: any member reads them, only the owner changes them, within range.
        let (status, body) = srv.get(&url, Some(bob)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            body,
            json!({"keep_days": 30, "trash_days": 30, "keep_days_is_default": true, "trash_days_is_default": true})
        );
        assert_error(&put_retention(&srv, dave, ws, json!({"keep_days": 1})).await, 403, "forbidden");
        for bad in [json!({"keep_days": -1}), json!({"trash_days": 36501}), json!({"keep_days": "x"})] {
            let res = put_retention(&srv, alice, ws, bad.clone()).await;
            assert!(res.0 == StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {res:?}");
        }
        assert_error(&put_retention(&srv, alice, ws, json!({"keep_days": 100000})).await, 422, "invalid_retention");
        assert_eq!(srv.get(&url, Some(bob)).await.1["keep_days_is_default"], true, "a refused change changes nothing");
        let (status, body) = put_retention(&srv, alice, ws, json!({"keep_days": 1, "trash_days": 2})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            body,
            json!({"keep_days": 1, "trash_days": 2, "keep_days_is_default": false, "trash_days_is_default": false})
        );
        assert_error(&srv.get("/workspaces/999999/retention", Some(alice)).await, 404, "workspace_not_found");

        let v1 = put(&srv, alice, ws, "old.txt", "first").await;
        let v2 = put(&srv, alice, ws, "old.txt", "second").await;
        let v3 = put(&srv, alice, ws, "old.txt", "the third").await;
        put(&srv, alice, ws, "gone.txt", "0123456789").await;
        assert_eq!(delete(&srv, alice, ws, "gone.txt").await.0, StatusCode::OK);
        let usage = |body: &Value| body["workspaces"][0]["usage"].clone();
        let (_, list) = srv.get("/workspaces", Some(bob)).await;
        assert_eq!(usage(&list), json!({"live_bytes": 9, "history_bytes": 5 + 6, "trash_bytes": 10}));
        // Asked without usage (the agent's start): the same workspaces, no usage read.
        let (status, names) = srv.get("/workspaces?usage=false", Some(bob)).await;
        assert_eq!(status, StatusCode::OK, "{names}");
        assert_eq!(names["workspaces"][0]["id"], list["workspaces"][0]["id"]);
        assert_eq!(usage(&names), Value::Null, "{names}");
        assert_eq!(usage(&srv.get("/view-shared-workspaces?usage=false", Some(bob)).await.1), Value::Null);
        assert_eq!(srv.get("/workspaces?usage=maybe", Some(bob)).await.0, StatusCode::UNPROCESSABLE_ENTITY);

        // Retention runs (as `filesync-http gc` does) ten days from now.
        let url_db = srv.db.url().to_owned();
        let pruned = tokio::task::spawn_blocking(move || {
            let db = Db::open(&url_db, 1).unwrap();
            let defaults = Policy { keep_days: 30, trash_days: 30 };
            let policy = db.run_blocking(|c| retention::policy(c, WorkspaceId(ws), &defaults)).unwrap();
            assert_eq!(policy, Policy { keep_days: 1, trash_days: 2 });
            retention::apply_db(&db, WorkspaceId(ws), &policy, Utc::now() + Duration::days(10)).unwrap()
        })
        .await
        .unwrap();
        assert_eq!(pruned, Pruned { versions: 4, trash_paths: 1, bytes: 5 + 6 + 10 });

        // The head stays and downloads; history lists what is kept and counts what expired.
        assert_eq!(download(&srv, bob, ws, "old.txt", None).await.unwrap(), "the third");
        let (status, hist) = srv.get(&format!("/workspaces/{ws}/history?path=old.txt"), Some(bob)).await;
        assert_eq!(status, StatusCode::OK, "{hist}");
        let kept: Vec<i64> =
            hist["versions"].as_array().unwrap().iter().map(|v| v["version"].as_i64().unwrap()).collect();
        assert_eq!((kept, hist["expired_versions"].as_i64()), (vec![v3], Some(2)));
        // An expired version answers 410 with its own code, to download and to restore.
        let gone = download(&srv, bob, ws, "old.txt", Some(v1)).await.unwrap_err();
        assert_error(&gone, 410, "version_expired");
        let res = srv
            .post(&format!("/workspaces/{ws}/restore"), Some(alice), json!({"path": "old.txt", "version": v2}))
            .await;
        assert_error(&res, 410, "version_expired");
        // A version that never existed is still a 404.
        let res = srv
            .post(&format!("/workspaces/{ws}/restore"), Some(alice), json!({"path": "old.txt", "version": 9999}))
            .await;
        assert_error(&res, 404, "version_not_found");
        // The expired trash is gone: not listed, not restorable.
        assert!(whole_trash(&srv, alice, ws, 50).await.is_empty());
        assert_error(&trash_restore(&srv, alice, ws, "gone.txt").await, 404, "not_in_trash");
        let (_, list) = srv.get("/workspaces", Some(alice)).await;
        assert_eq!(usage(&list), json!({"live_bytes": 9, "history_bytes": 0, "trash_bytes": 0}));
        // The journal goes on, and the path's history still says what expired.
        assert!(put(&srv, alice, ws, "old.txt", "fourth").await > v3);
        let (_, hist) = srv.get(&format!("/workspaces/{ws}/history?path=old.txt"), Some(bob)).await;
        assert_eq!((hist["versions"].as_array().unwrap().len(), hist["expired_versions"].as_i64()), (2, Some(2)));
    })
    .await;
}

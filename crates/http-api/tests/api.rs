//! The public contract of the HTTP API, route by route, on SQLite and on
//! MariaDB (each story runs on both), with real Redis for announcements.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{assert_error, client_from, on_both_backends, Server, SECRET};
use filesync_core::db::Backend;
use filesync_core::jwt::{Grant, JwtKeys};
use filesync_core::secret::Secret;
use filesync_core::UserId;
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn register_body(username: &str, email: &str, password: &str) -> Value {
    json!({"first_name": "Ann", "last_name": "Lee", "username": username, "email": email, "password": password})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_then_login() {
    on_both_backends(|backend| async move {
        let srv = Server::start(backend, |_| {}).await;
        let nasty = "Robert'); DROP TABLE users; -- \"%_\\";
        let (status, body) = srv
            .post(
                "/register",
                None,
                json!({"first_name": nasty, "last_name": "Ünïcødé 李 🚀' OR '1'='1", "username": "bobby.tables",
                       "email": "  O'Brien+x@Example.COM ", "password": "pa'ss; --\"word"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{backend:?} {body}");
        let user = &body["user"];
        assert!(user["id"].as_i64().is_some());
        assert_eq!(user["username"], "bobby.tables");
        assert_eq!(user["email"], "o'brien+x@example.com", "emails are stored trimmed and lower-cased");
        assert_eq!(user["first_name"], nasty, "stored verbatim");
        assert_eq!(user["last_name"], "Ünïcødé 李 🚀' OR '1'='1");
        assert!(user.get("password_hash").is_none() && user.get("password").is_none());

        // Taken email (in any case) and taken username.
        let dup_email = srv.post("/register", None, register_body("other", "O'BRIEN+X@example.com", "password1")).await;
        assert_error(&dup_email, 409, "email_taken");
        let dup_user = srv.post("/register", None, register_body("bobby.tables", "new@example.com", "password1")).await;
        assert_error(&dup_user, 409, "username_taken");

        // Every invalid field, one at a time, and nothing is stored.
        for (body, code) in [
            (register_body("carol", "not-an-email", "password1"), "invalid_email"),
            (register_body("carol", "carol@localhost", "password1"), "invalid_email"),
            (register_body("carol", "carol@example.com", "short"), "invalid_password"),
            (register_body("c", "carol@example.com", "password1"), "invalid_username"),
            (register_body("carol/../x", "carol@example.com", "password1"), "invalid_username"),
            (register_body(&"c".repeat(33), "carol@example.com", "password1"), "invalid_username"),
            (json!({"first_name": "C", "last_name": "D", "username": "carol", "email": "carol@example.com"}), "invalid_request"),
            (json!({"first_name": 5, "last_name": "D", "username": "carol", "email": "c@example.com", "password": "password1"}), "invalid_request"),
        ] {
            assert_error(&srv.post("/register", None, body).await, 422, code);
        }
        let carol_never_stored = srv.post("/login", None, json!({"email": "carol@example.com", "password": "password1"})).await;
        assert_error(&carol_never_stored, 401, "invalid_credentials");

        // Login with the exact password (metacharacters included) and an email in another case.
        let (status, login) =
            srv.post("/login", None, json!({"email": "o'brien+X@EXAMPLE.com", "password": "pa'ss; --\"word"})).await;
        assert_eq!(status, StatusCode::OK, "{login}");
        assert_eq!(login["token_type"], "Bearer");
        assert_eq!(login["user"]["username"], "bobby.tables");
        let expires: DateTime<Utc> = login["expires_at"].as_str().unwrap().parse().expect("RFC 3339");
        let ttl = expires - Utc::now();
        assert!(ttl > chrono::Duration::minutes(59) && ttl <= chrono::Duration::hours(1), "{ttl}");
        let token = login["token"].as_str().unwrap();
        let user_id = login["user"]["id"].as_i64().unwrap();

        // Unknown email and wrong password: the same answer.
        let wrong = srv.post("/login", None, json!({"email": "o'brien+x@example.com", "password": "nope-nope"})).await;
        let unknown = srv.post("/login", None, json!({"email": "ghost@example.com", "password": "nope-nope"})).await;
        assert_error(&wrong, 401, "invalid_credentials");
        assert_eq!(wrong, unknown);
        assert_error(&srv.post("/login", None, json!({"email": "x@example.com"})).await, 422, "invalid_request");

        // /check-token: Bearer and bare tokens; then every way a token can be bad.
        let (status, check) = srv.get("/check-token", Some(token)).await;
        assert_eq!(status, StatusCode::OK, "{check}");
        assert_eq!(check, json!({"valid": true, "user_id": user_id, "expires_at": login["expires_at"]}));
        let bare = srv.send(srv.raw().get(srv.url("/check-token")).header("Authorization", token)).await;
        assert_eq!(bare.0, StatusCode::OK, "{}", bare.1);
        assert_error(&srv.get("/check-token", None).await, 401, "missing_token");
        assert_error(&srv.get("/check-token", Some("not-a-jwt")).await, 401, "invalid_token");
        let basic = srv.send(srv.raw().get(srv.url("/check-token")).header("Authorization", "Basic YTpi")).await;
        assert_error(&basic, 401, "invalid_token");
        let grant = Grant { generation: 0, device: login["device_id"].as_i64().unwrap() };
        let (forged, _) = JwtKeys::new(&Secret::new("another-secret-another-secret-0123"), 3600)
            .issue(UserId(user_id), "o'brien+x@example.com", grant)
            .unwrap();
        assert_error(&srv.get("/check-token", Some(&forged)).await, 401, "invalid_token");
        let (expired, _) = JwtKeys::new(&Secret::new(SECRET), 3600)
            .issue_at(UserId(user_id), "o'brien+x@example.com", grant, Utc::now().timestamp() - 100, 10)
            .unwrap();
        assert_error(&srv.get("/check-token", Some(&expired)).await, 401, "token_expired");
        let (orphan, _) =
            JwtKeys::new(&Secret::new(SECRET), 3600).issue(UserId(user_id + 1000), "x@example.com", grant).unwrap();
        assert_error(&srv.get("/check-token", Some(&orphan)).await, 401, "invalid_token");
        srv.stop().await.expect("clean shutdown");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_routes_and_methods() {
    on_both_backends(|backend| async move {
        let srv = Server::start(backend, |_| {}).await;
        let malformed = srv
            .send(srv.raw().post(srv.url("/register")).header("Content-Type", "application/json").body("{\"email\": "))
            .await;
        assert_error(&malformed, 400, "malformed_json");
        let no_content_type = srv.send(srv.raw().post(srv.url("/login")).body("{}")).await;
        assert_error(&no_content_type, 415, "unsupported_media_type");
        // What a cross-site HTML form can send.
        let form = srv.send(srv.raw().post(srv.url("/login")).header("Content-Type", "text/plain").body("{}")).await;
        assert_error(&form, 415, "unsupported_media_type");
        let huge = json!({"first_name": "x".repeat(70 * 1024), "last_name": "y", "username": "huge",
                          "email": "huge@example.com", "password": "password1"});
        assert_error(&srv.post("/register", None, huge).await, 413, "payload_too_large");
        assert_error(&srv.get("/no-such-route", None).await, 404, "route_not_found");
        assert_error(&srv.get("/register", None).await, 405, "method_not_allowed");
        assert_error(&srv.post("/workspaces", None, json!({})).await, 405, "method_not_allowed");
        let (_, token) = srv.user("alice").await;
        // A huge body on a protected route is refused before it is read too.
        let huge_ws = srv.post("/create-workspace", Some(&token), json!({"name": "n".repeat(70 * 1024)})).await;
        assert_error(&huge_ws, 413, "payload_too_large");
        srv.stop().await.expect("clean shutdown");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_of_one_email() {
    on_both_backends(|backend| async move {
        let srv = Server::start(backend, |_| {}).await;
        let attempts = (0..6)
            .map(|i| srv.post("/register", None, register_body(&format!("racer{i}"), "race@example.com", "password1")));
        let results = futures::future::join_all(attempts).await;
        let created = results.iter().filter(|(s, _)| *s == StatusCode::CREATED).count();
        assert_eq!(created, 1, "{backend:?}: {results:?}");
        for res in results.iter().filter(|(s, _)| *s != StatusCode::CREATED) {
            assert_error(res, 409, "email_taken");
        }
        srv.stop().await.expect("clean shutdown");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspaces_sharing_and_membership() {
    on_both_backends(|backend| async move {
        let srv = Server::start(backend, |_| {}).await;
        let (alice_id, alice) = srv.user("alice").await;
        let (bob_id, bob) = srv.user("bob").await;
        let (_, carol) = srv.user("carol").await;

        // Create.
        let (status, body) = srv.post("/create-workspace", Some(&alice), json!({"name": "Docs"})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let ws = body["workspace"]["id"].as_i64().unwrap();
        assert_eq!(body, json!({"workspace": {"id": ws, "name": "Docs", "owner_id": alice_id, "role": "owner"}}));
        assert_error(
            &srv.post("/create-workspace", Some(&alice), json!({"name": "Docs"})).await,
            409,
            "workspace_exists",
        );
        let (status, _) = srv.post("/create-workspace", Some(&bob), json!({"name": "Docs"})).await;
        assert_eq!(status, StatusCode::CREATED, "another owner may use the same name");
        for name in ["Café ☕ 文档", "'; DROP TABLE workspaces; --", "50% off_"] {
            let (status, body) = srv.post("/create-workspace", Some(&alice), json!({"name": name})).await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            assert_eq!(body["workspace"]["name"], name);
        }
        for name in ["", ".", "..", "a/b", "a\\b", "nul\0byte", &"x".repeat(256)] {
            let res = srv.post("/create-workspace", Some(&alice), json!({"name": name})).await;
            assert_error(&res, 422, "invalid_workspace_name");
        }
        assert_error(&srv.post("/create-workspace", Some(&alice), json!({})).await, 422, "invalid_request");
        assert_error(&srv.post("/create-workspace", None, json!({"name": "x"})).await, 401, "missing_token");

        // Share: validation, authorization, then success and duplicates.
        let add = |token: String, body: Value| {
            let srv = &srv;
            async move { srv.post("/add-user", Some(&token), body).await }
        };
        assert_error(
            &add(alice.clone(), json!({"workspace_id": ws, "email": "bob@example.com", "role": "owner"})).await,
            422,
            "invalid_role",
        );
        assert_error(
            &add(alice.clone(), json!({"workspace_id": ws, "email": "bob@example.com", "role": "admin"})).await,
            422,
            "invalid_role",
        );
        assert_error(
            &add(alice.clone(), json!({"workspace_id": ws, "email": "bob@example.com", "role": "viewer' OR '1'='1"}))
                .await,
            422,
            "invalid_role",
        );
        assert_error(
            &add(alice.clone(), json!({"workspace_id": ws, "email": "x' OR '1'='1@example.com"})).await,
            422,
            "invalid_email",
        );
        assert_error(
            &add(alice.clone(), json!({"workspace_id": "abc", "email": "bob@example.com"})).await,
            422,
            "invalid_request",
        );
        assert_error(&add(alice.clone(), json!({"email": "bob@example.com"})).await, 422, "invalid_request");
        assert_error(
            &add(carol.clone(), json!({"workspace_id": ws, "email": "bob@example.com"})).await,
            404,
            "workspace_not_found",
        );
        assert_error(
            &add(alice.clone(), json!({"workspace_id": ws + 999, "email": "bob@example.com"})).await,
            404,
            "workspace_not_found",
        );
        // An email without an account: a pending invitation (tests/members.rs).
        let (status, body) = add(alice.clone(), json!({"workspace_id": ws, "email": "nobody@example.com"})).await;
        assert_eq!(
            (status, &body["invitation"]["email"]),
            (StatusCode::ACCEPTED, &json!("nobody@example.com")),
            "{body}"
        );
        assert_error(
            &srv.post("/add-user", None, json!({"workspace_id": ws, "email": "bob@example.com"})).await,
            401,
            "missing_token",
        );

        // The original client sends ids as strings and emails in any case.
        let (status, body) =
            add(alice.clone(), json!({"workspace_id": ws.to_string(), "email": " BOB@example.com"})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(
            body,
            json!({"member": {"user_id": bob_id, "username": "bob", "email": "bob@example.com", "role": "editor"}})
        );
        assert_error(
            &add(alice.clone(), json!({"workspace_id": ws, "email": "bob@example.com"})).await,
            409,
            "already_member",
        );
        assert_error(
            &add(alice.clone(), json!({"workspace_id": ws, "email": "alice@example.com"})).await,
            409,
            "already_member",
        );
        // Bob is a member now, but not the owner.
        assert_error(
            &add(bob.clone(), json!({"workspace_id": ws, "email": "carol@example.com"})).await,
            403,
            "forbidden",
        );
        let (status, body) =
            add(alice.clone(), json!({"workspace_id": ws, "email": "carol@example.com", "role": "viewer"})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["member"]["role"], "viewer");

        // Listings.
        let (status, shared) = srv.get("/view-shared-workspaces", Some(&bob)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            shared,
            json!({"workspaces": [{
                "id": ws, "name": "Docs", "owner": {"id": alice_id, "username": "alice"}, "role": "editor",
                "usage": {"live_bytes": 0, "history_bytes": 0, "trash_bytes": 0},
            }]}),
            "only workspaces shared with bob, not his own"
        );
        let (_, shared) = srv.get("/view-shared-workspaces", Some(&alice)).await;
        assert_eq!(shared, json!({"workspaces": []}));
        let (_, all) = srv.get("/workspaces", Some(&bob)).await;
        let names: Vec<(&str, &str)> = all["workspaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| (w["owner"]["username"].as_str().unwrap(), w["role"].as_str().unwrap()))
            .collect();
        assert_eq!(names.len(), 2, "{all}");
        assert!(names.contains(&("bob", "owner")) && names.contains(&("alice", "editor")), "{all}");
        let (_, all) = srv.get("/workspaces", Some(&alice)).await;
        assert_eq!(all["workspaces"].as_array().unwrap().len(), 4, "{all}");
        assert_error(&srv.get("/workspaces", None).await, 401, "missing_token");
        assert_error(&srv.get("/view-shared-workspaces", None).await, 401, "missing_token");

        let (status, members) = srv.get(&format!("/view-shared-users?workspace_id={ws}"), Some(&carol)).await;
        assert_eq!(status, StatusCode::OK, "{members}");
        let roles: Vec<(&str, &str)> = members["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["username"].as_str().unwrap(), m["role"].as_str().unwrap()))
            .collect();
        assert_eq!(roles, vec![("alice", "owner"), ("bob", "editor"), ("carol", "viewer")]);
        assert_eq!(
            members["users"][0],
            json!({"user_id": alice_id, "username": "alice", "email": "alice@example.com", "role": "owner"})
        );
        let (_, dave) = srv.user("dave").await;
        let hidden = srv.get(&format!("/view-shared-users?workspace_id={ws}"), Some(&dave)).await;
        let missing = srv.get(&format!("/view-shared-users?workspace_id={}", ws + 999), Some(&dave)).await;
        assert_error(&hidden, 404, "workspace_not_found");
        assert_eq!(hidden, missing, "a non-member cannot tell the workspace exists");
        assert_error(&srv.get("/view-shared-users", Some(&dave)).await, 422, "invalid_request");
        assert_error(
            &srv.get("/view-shared-users?workspace_id=1%20OR%201=1", Some(&dave)).await,
            422,
            "invalid_request",
        );
        assert_error(&srv.get(&format!("/view-shared-users?workspace_id={ws}"), None).await, 401, "missing_token");
        srv.stop().await.expect("clean shutdown");
    })
    .await;
}

/// Waits (bounded) for the `workspace_shared` event naming `workspace_name`;
/// other tests publish on the same channel names, so others are skipped.
async fn next_share_event(
    messages: &mut (impl futures::Stream<Item = redis::Msg> + Unpin),
    workspace_name: &str,
) -> Value {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let msg = messages.next().await.expect("subscription open");
            let payload: String = msg.get_payload().expect("text payload");
            let event: Value = serde_json::from_str(&payload).expect("JSON event");
            if event["workspace_name"] == workspace_name {
                return event;
            }
        }
    })
    .await
    .expect("event published within 10 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharing_is_announced_on_redis_and_survives_an_outage() {
    const REDIS: &str = "redis://127.0.0.1:6379";
    on_both_backends(|backend| async move {
        let srv = Server::start(backend, |c| c.redis_url = Some(REDIS.into())).await;
        let (alice_id, alice) = srv.user("alice").await;
        let (bob_id, _) = srv.user("bob").await;
        let name = format!("shared-{}", uuid_like());
        let (_, body) = srv.post("/create-workspace", Some(&alice), json!({"name": name})).await;
        let ws = body["workspace"]["id"].as_i64().unwrap();

        let client = redis::Client::open(REDIS).unwrap();
        let mut pubsub = client.get_async_pubsub().await.expect("Redis reachable");
        pubsub.subscribe(format!("filesync:user:{bob_id}")).await.unwrap();
        let mut messages = pubsub.on_message();
        let (status, body) = srv
            .post("/add-user", Some(&alice), json!({"workspace_id": ws, "email": "bob@example.com", "role": "viewer"}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let event = next_share_event(&mut messages, &name).await;
        assert_eq!(
            event,
            json!({"type": "workspace_shared", "workspace_id": ws, "workspace_name": name, "role": "viewer",
                   "by_user_id": alice_id, "by_username": "alice"})
        );
        drop(messages);
        srv.stop().await.expect("clean shutdown");

        // Redis down (nothing listens on port 1): sharing still works and is stored.
        let srv = Server::start(backend, |c| c.redis_url = Some("redis://127.0.0.1:1".into())).await;
        let (_, alice) = srv.user("alice").await;
        srv.user("bob").await;
        let (_, body) = srv.post("/create-workspace", Some(&alice), json!({"name": "Docs"})).await;
        let ws = body["workspace"]["id"].as_i64().unwrap();
        let (status, body) =
            srv.post("/add-user", Some(&alice), json!({"workspace_id": ws, "email": "bob@example.com"})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (_, members) = srv.get(&format!("/view-shared-users?workspace_id={ws}"), Some(&alice)).await;
        assert_eq!(members["users"].as_array().unwrap().len(), 2, "{members}");
        srv.stop().await.expect("clean shutdown");
    })
    .await;
}

/// A name no other test run uses at the same time.
fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("{}-{nanos}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() {
    on_both_backends(|backend| async move {
        let srv = Server::start(backend, |_| {}).await;
        assert_eq!(srv.get("/healthz", None).await, (StatusCode::OK, json!({"status": "ok"})));
        assert_eq!(srv.get("/readyz", None).await, (StatusCode::OK, json!({"status": "ready"})));
        srv.post("/register", None, register_body("mia", "mia@example.com", "password1")).await;
        srv.post("/register", None, register_body("mia", "mia@example.com", "password1")).await;
        srv.get("/no/such/thing", None).await;
        let res = srv.raw().get(srv.url("/metrics")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
        let text = res.text().await.unwrap();
        for line in [
            r#"filesync_http_requests_total{method="POST",route="/register",status="201"} 1"#,
            r#"filesync_http_requests_total{method="POST",route="/register",status="409"} 1"#,
            r#"filesync_http_requests_total{method="GET",route="unmatched",status="404"} 1"#,
            r#"filesync_http_request_duration_seconds_count{method="POST",route="/register"} 2"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(text.contains("filesync_http_request_duration_seconds_bucket{"), "{text}");
        // The database pool: registrations checked out connections, none timed out.
        let value = |name: &str| -> f64 {
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} in\n{text}"));
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        assert!(value("filesync_http_db_pool_checkouts_total") >= 2.0, "{text}");
        assert!(value("filesync_http_db_pool_connections") >= 1.0, "{text}");
        assert_eq!(value("filesync_http_db_pool_timeouts_total"), 0.0, "{text}");
        // The chunk store's requests: nothing was stored nor read yet.
        assert_eq!(value(r#"filesync_storage_requests_total{op="put"}"#), 0.0, "{text}");
        assert_eq!(value(r#"filesync_storage_requests_total{op="read_range"}"#), 0.0, "{text}");
        srv.stop().await.expect("clean shutdown");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_start_without_a_strong_secret_and_stops_on_request() {
    let db = tokio::task::spawn_blocking(|| filesync_core::testing::TestDb::new(Backend::Sqlite)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (secret, expected) in [("", "FILESYNC_JWT_SECRET is not set"), ("too-short", "at least 32 bytes")] {
        let mut config = common::test_config(&db, dir.path());
        config.jwt_secret = Secret::new(secret);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let err = filesync_http_api::run(listener, config, std::future::pending()).await.unwrap_err();
        assert!(err.to_string().contains(expected), "{err}");
    }
    // Dev mode makes and keeps its own secret in the data dir.
    let srv = Server::start_on(db, |c| {
        c.jwt_secret = Secret::default();
        c.dev_mode = true;
    })
    .await;
    let (_, token) = srv.user("devuser").await;
    let base = srv.base.clone();
    srv.stop().await.expect("clean shutdown");
    let after = client_from(None).get(format!("{base}/check-token")).bearer_auth(token).send().await;
    assert!(after.is_err(), "the listener is closed after shutdown");
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_when_given_a_certificate() {
    on_both_backends(|backend| async move {
        let srv = Server::start(backend, |c| {
            c.tls_cert = Some(fixture("tls-cert.pem"));
            c.tls_key = Some(fixture("tls-key.pem"));
        })
        .await;
        assert!(srv.base.starts_with("https://"), "{}", srv.base);
        let (_, token) = srv.user("secure").await;
        let (status, body) = srv.get("/check-token", Some(&token)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        // No plaintext fallback on the TLS port.
        let plain = client_from(None).get(srv.base.replace("https://", "http://") + "/healthz").send().await;
        assert!(plain.is_err() || plain.is_ok_and(|r| !r.status().is_success()));
        srv.stop().await.expect("clean shutdown");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_start_with_an_unreadable_certificate() {
    let db = tokio::task::spawn_blocking(|| filesync_core::testing::TestDb::new(Backend::Sqlite)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::test_config(&db, dir.path());
    config.tls_cert = Some(dir.path().join("missing.pem"));
    config.tls_key = Some(fixture("tls-key.pem"));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = filesync_http_api::run(listener, config, std::future::pending()).await.unwrap_err();
    assert!(format!("{err:#}").contains("FILESYNC_TLS_CERT"), "{err:#}");
    // A key without a certificate is a configuration error too.
    let mut config = common::test_config(&db, dir.path());
    config.tls_key = Some(fixture("tls-key.pem"));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = filesync_http_api::run(listener, config, std::future::pending()).await.unwrap_err();
    assert!(err.to_string().contains("FILESYNC_TLS_CERT and FILESYNC_TLS_KEY"), "{err}");
}

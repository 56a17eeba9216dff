//! Credentials over HTTP: devices and refresh credentials, logout, password
//! change, account deletion, and login throttling that never locks out other
//! users. On SQLite and MariaDB.

mod common;

use std::net::IpAddr;

use common::{assert_error, client_from, on_both_backends, Server};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn login(srv: &Server, email: &str, password: &str, device: &str) -> Value {
    let (status, body) =
        srv.post("/login", None, json!({"email": email, "password": password, "device_name": device})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn token(v: &Value) -> &str {
    v["token"].as_str().expect("token")
}

async fn delete(srv: &Server, path: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = srv.raw().delete(srv.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.expect("request");
    let status = res.status();
    let text = res.text().await.expect("body");
    (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).expect("JSON") })
}

async fn post_empty(srv: &Server, path: &str, token: &str) -> StatusCode {
    srv.raw().post(srv.url(path)).bearer_auth(token).send().await.expect("request").status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_refresh_and_logout() {
    on_both_backends(|backend| async move {
        let srv = Server::start(backend, |_| {}).await;
        let (_, _) = srv.user("alice").await;
        let (_, bob) = srv.user("bob").await;
        let laptop = login(&srv, "alice@example.com", "password-alice", "laptop").await;
        let phone = login(&srv, "alice@example.com", "password-alice", "phone").await;
        let refresh = laptop["refresh_token"].as_str().unwrap().to_owned();
        assert!(refresh.starts_with("fsr1_"), "{laptop}");

        // The caller's devices, the current one marked; another user sees only theirs.
        let (status, list) = srv.get("/devices", Some(token(&laptop))).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        let names: Vec<(&str, bool)> = list["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| (d["name"].as_str().unwrap(), d["current"].as_bool().unwrap()))
            .collect();
        assert!(names.contains(&("laptop", true)) && names.contains(&("phone", false)), "{list}");
        assert!(list.to_string().find("fsr1_").is_none(), "no secret is listed");
        let (_, bobs) = srv.get("/devices", Some(&bob)).await;
        assert!(!bobs.to_string().contains("laptop"), "{bobs}");
        assert_error(&srv.get("/devices", None).await, 401, "missing_token");

        // A refresh credential buys a new access token for the same device.
        let (status, renewed) = srv.post("/token/refresh", None, json!({"refresh_token": refresh})).await;
        assert_eq!(status, StatusCode::OK, "{renewed}");
        assert_eq!(renewed["device_id"], laptop["device_id"]);
        assert_eq!(srv.get("/check-token", Some(token(&renewed))).await.0, StatusCode::OK);
        let bad = srv.post("/token/refresh", None, json!({"refresh_token": "fsr1_0000"})).await;
        assert_error(&bad, 401, "invalid_refresh_token");
        assert_error(
            &srv.post("/token/refresh", None, json!({"refresh_token": token(&phone)})).await,
            401,
            "invalid_refresh_token",
        );
        assert_error(&srv.post("/token/refresh", None, json!({})).await, 422, "invalid_request");
        // A device name out of bounds is refused.
        let long = srv
            .post(
                "/login",
                None,
                json!({"email": "alice@example.com", "password": "password-alice", "device_name": "x".repeat(65)}),
            )
            .await;
        assert_error(&long, 422, "invalid_device_name");

        // Revoking the phone: its token and refresh credential are refused at once.
        let phone_id = phone["device_id"].as_i64().unwrap();
        assert_eq!(
            delete(&srv, &format!("/devices/{phone_id}"), Some(token(&laptop)), None).await.0,
            StatusCode::NO_CONTENT
        );
        assert_error(&srv.get("/check-token", Some(token(&phone))).await, 401, "token_revoked");
        let phone_refresh = json!({"refresh_token": phone["refresh_token"]});
        assert_error(&srv.post("/token/refresh", None, phone_refresh).await, 401, "invalid_refresh_token");
        let again = delete(&srv, &format!("/devices/{phone_id}"), Some(token(&laptop)), None).await;
        assert_error(&again, 404, "device_not_found");
        // Nobody revokes another user's device.
        let laptop_id = laptop["device_id"].as_i64().unwrap();
        assert_error(&delete(&srv, &format!("/devices/{laptop_id}"), Some(&bob), None).await, 404, "device_not_found");
        assert_error(&delete(&srv, "/devices/laptop", Some(&bob), None).await, 404, "device_not_found");
        assert_eq!(srv.get("/check-token", Some(token(&laptop))).await.0, StatusCode::OK);

        // Logout: this device's tokens (the renewed one too) and its refresh credential are refused.
        assert_eq!(post_empty(&srv, "/logout", token(&renewed)).await, StatusCode::NO_CONTENT);
        assert_error(&srv.get("/check-token", Some(token(&laptop))).await, 401, "token_revoked");
        assert_error(&srv.get("/check-token", Some(token(&renewed))).await, 401, "token_revoked");
        assert_error(
            &srv.post("/token/refresh", None, json!({"refresh_token": refresh})).await,
            401,
            "invalid_refresh_token",
        );
        assert_eq!(post_empty(&srv, "/logout", token(&laptop)).await, StatusCode::UNAUTHORIZED);
        // Bob was not affected.
        assert_eq!(srv.get("/check-token", Some(&bob)).await.0, StatusCode::OK);
        srv.stop().await.expect("clean shutdown");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_password_revokes_every_earlier_credential() {
    on_both_backends(|backend| async move {
        let srv = Server::start(backend, |_| {}).await;
        srv.user("alice").await;
        let a = login(&srv, "alice@example.com", "password-alice", "laptop").await;
        let b = login(&srv, "alice@example.com", "password-alice", "phone").await;
        let change = |current: &str, new: &str| json!({"current_password": current, "new_password": new});

        let wrong = srv.post("/change-password", Some(token(&a)), change("nope-nope", "new-password-1")).await;
        assert_error(&wrong, 403, "forbidden");
        let short = srv.post("/change-password", Some(token(&a)), change("password-alice", "short")).await;
        assert_error(&short, 422, "invalid_password");
        assert_error(
            &srv.post("/change-password", Some(token(&a)), json!({"new_password": "x"})).await,
            422,
            "invalid_request",
        );
        assert_error(
            &srv.post("/change-password", None, change("password-alice", "new-password-1")).await,
            401,
            "missing_token",
        );
        // Nothing changed by the refusals.
        assert_eq!(srv.get("/check-token", Some(token(&b))).await.0, StatusCode::OK);

        let (status, fresh) =
            srv.post("/change-password", Some(token(&a)), change("password-alice", "new-password-1")).await;
        assert_eq!(status, StatusCode::OK, "{fresh}");
        assert_eq!(srv.get("/check-token", Some(token(&fresh))).await.0, StatusCode::OK);
        for old in [&a, &b] {
            assert_error(&srv.get("/check-token", Some(token(old))).await, 401, "token_revoked");
            let refresh = json!({"refresh_token": old["refresh_token"]});
            assert_error(&srv.post("/token/refresh", None, refresh).await, 401, "invalid_refresh_token");
        }
        // The new login keeps the device's name and can be refreshed.
        let (_, list) = srv.get("/devices", Some(token(&fresh))).await;
        assert_eq!(list["devices"].as_array().unwrap().len(), 1, "{list}");
        assert_eq!(list["devices"][0]["name"], "laptop");
        let (status, _) = srv.post("/token/refresh", None, json!({"refresh_token": fresh["refresh_token"]})).await;
        assert_eq!(status, StatusCode::OK);
        let old_password =
            srv.post("/login", None, json!({"email": "alice@example.com", "password": "password-alice"})).await;
        assert_error(&old_password, 401, "invalid_credentials");
        login(&srv, "alice@example.com", "new-password-1", "desktop").await;
        srv.stop().await.expect("clean shutdown");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_account() {
    on_both_backends(|backend| async move {
        let srv = Server::start(backend, |_| {}).await;
        let (_, alice) = srv.user("alice").await;
        let (_, bob) = srv.user("bob").await;
        let (status, team) = srv.post("/create-workspace", Some(&alice), json!({"name": "team"})).await;
        assert_eq!(status, StatusCode::CREATED, "{team}");
        let team_id = team["workspace"]["id"].as_i64().unwrap();
        assert_eq!(srv.post("/create-workspace", Some(&alice), json!({"name": "solo"})).await.0, StatusCode::CREATED);
        let (status, _) = srv.post("/create-workspace", Some(&bob), json!({"name": "bobs"})).await;
        assert_eq!(status, StatusCode::CREATED);
        let share = json!({"workspace_id": team_id, "email": "bob@example.com", "role": "editor"});
        assert_eq!(srv.post("/add-user", Some(&alice), share).await.0, StatusCode::CREATED);

        let wrong = delete(&srv, "/account", Some(&alice), Some(json!({"password": "nope-nope"}))).await;
        assert_error(&wrong, 403, "forbidden");
        assert_error(&delete(&srv, "/account", Some(&alice), Some(json!({}))).await, 422, "invalid_request");
        assert_error(&delete(&srv, "/account", None, Some(json!({"password": "x"}))).await, 401, "missing_token");
        // Alice owns "team", which bob is a member of: refused, naming it.
        let blocked = delete(&srv, "/account", Some(&alice), Some(json!({"password": "password-alice"}))).await;
        assert_error(&blocked, 409, "owns_shared_workspaces");
        assert_eq!(blocked.1["error"]["workspaces"], json!([{"id": team_id, "name": "team", "other_members": 1}]));
        assert!(blocked.1["error"]["message"].as_str().unwrap().contains("team"));
        assert_eq!(srv.get("/check-token", Some(&alice)).await.0, StatusCode::OK, "nothing changed");

        // Bob leaves with his account: his own workspace and his membership in "team" go with it.
        let gone = delete(&srv, "/account", Some(&bob), Some(json!({"password": "password-bob"}))).await;
        assert_eq!(gone.0, StatusCode::NO_CONTENT, "{}", gone.1);
        assert_error(&srv.get("/check-token", Some(&bob)).await, 401, "token_revoked");
        let bob_login = srv.post("/login", None, json!({"email": "bob@example.com", "password": "password-bob"})).await;
        assert_error(&bob_login, 401, "invalid_credentials");
        let (_, members) = srv.get(&format!("/view-shared-users?workspace_id={team_id}"), Some(&alice)).await;
        assert!(!members.to_string().contains("bob"), "{members}");
        // Bob's own workspace is gone: a new bob starts empty.
        let (_, bob2) = srv.user("bob").await;
        let (_, spaces) = srv.get("/workspaces", Some(&bob2)).await;
        assert_eq!(spaces["workspaces"], json!([]), "{spaces}");

        // Now alice may go too; her email and username are free again.
        let gone = delete(&srv, "/account", Some(&alice), Some(json!({"password": "password-alice"}))).await;
        assert_eq!(gone.0, StatusCode::NO_CONTENT, "{}", gone.1);
        assert_error(&srv.get("/check-token", Some(&alice)).await, 401, "token_revoked");
        let (_, again) = srv.user("alice").await;
        let (_, spaces) = srv.get("/workspaces", Some(&again)).await;
        assert_eq!(spaces["workspaces"], json!([]), "a new account starts empty");
        srv.stop().await.expect("clean shutdown");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_slows_one_account_and_never_locks_out_others() {
    on_both_backends(|backend| async move {
        let srv = Server::start(backend, |c| {
            c.login_max_failures = 4;
            c.trusted_proxies = "127.0.0.4".into();
        })
        .await;
        for name in ["alice", "bob", "carol", "dave"] {
            srv.user(name).await;
        }
        let from = |last: u8| client_from(Some(IpAddr::from([127, 0, 0, last])));
        let (one, two, three, proxy) = (from(1), from(2), from(3), from(4));
        let try_login = |client: &reqwest::Client, email: &str, password: &str, xff: Option<&str>| {
            let mut req = client.post(srv.url("/login")).json(&json!({"email": email, "password": password}));
            if let Some(xff) = xff {
                req = req.header("X-Forwarded-For", xff);
            }
            async move { req.send().await.expect("request").status().as_u16() }
        };
        // A flood of failures for alice from one address...
        let mut codes = Vec::new();
        for _ in 0..30 {
            codes.push(try_login(&one, "alice@example.com", "wrong-password", None).await);
        }
        assert_eq!(&codes[..2], &[401, 401]);
        assert!(codes[2..].iter().all(|&c| c == 429), "{codes:?}");
        // ...slows alice down from there, with Retry-After...
        let locked = one
            .post(srv.url("/login"))
            .json(&json!({"email": "alice@example.com", "password": "password-alice"}))
            .send()
            .await
            .unwrap();
        assert_eq!(locked.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry: u64 = locked.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!(retry >= 1, "{retry}");
        // ...but another user from the same address logs in, and so does a new user's register + login,
        assert_eq!(try_login(&one, "bob@example.com", "password-bob", None).await, 200);
        let (status, _) = srv
            .post_from(
                &one,
                "/register",
                None,
                json!({"first_name": "E", "last_name": "F", "username": "erin", "email": "erin@example.com", "password": "password-erin"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(try_login(&one, "erin@example.com", "password-erin", None).await, 200);
        // and alice herself from another address.
        assert_eq!(try_login(&two, "alice@example.com", "password-alice", None).await, 200);

        // X-Forwarded-For from an untrusted peer is ignored: changing it does not escape the delay.
        assert_eq!(try_login(&three, "carol@example.com", "wrong-1", Some("198.51.100.1")).await, 401);
        assert_eq!(try_login(&three, "carol@example.com", "wrong-1", Some("198.51.100.2")).await, 401);
        assert_eq!(try_login(&three, "carol@example.com", "password-carol", Some("198.51.100.3")).await, 429);
        // From the trusted proxy it names the client: dave is slowed for one client address only.
        assert_eq!(try_login(&proxy, "dave@example.com", "wrong-1", Some("198.51.100.7")).await, 401);
        assert_eq!(try_login(&proxy, "dave@example.com", "wrong-1", Some("198.51.100.7")).await, 401);
        assert_eq!(try_login(&proxy, "dave@example.com", "password-dave", Some("198.51.100.7")).await, 429);
        assert_eq!(try_login(&proxy, "dave@example.com", "password-dave", Some("198.51.100.8")).await, 200);
        srv.stop().await.expect("clean shutdown");
    })
    .await;
}

/// Two `filesync-http` processes behind one load balancer share the database
/// and Redis. A token the second has just checked (and so cached) is refused
/// by it as soon as the first revokes it — not only when its cache expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_through_one_api_process_is_refused_by_another() {
    on_both_backends(|backend| async move {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let prefix = format!("revoke-test-{}-{nanos}", std::process::id());
        let redis = |c: &mut filesync_core::config::Config, prefix: &str| {
            c.redis_url = Some("redis://127.0.0.1:6379".into());
            c.redis_prefix = prefix.to_owned();
        };
        let a = Server::start(backend, |c| redis(c, &prefix)).await;
        let url = a.db.url().to_owned();
        let b = Server::start(backend, |c| {
            redis(c, &prefix);
            c.database_url = Some(url);
        })
        .await;
        let (_, _) = a.user("alice").await;
        let laptop = login(&a, "alice@example.com", "password-alice", "laptop").await;
        let phone = login(&a, "alice@example.com", "password-alice", "phone").await;
        // B checks both tokens now, so it holds them in its cache.
        for t in [token(&laptop), token(&phone)] {
            let (status, body) = b.get("/workspaces", Some(t)).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }

        assert_eq!(post_empty(&a, "/logout", token(&laptop)).await, StatusCode::NO_CONTENT);
        // Redis delivers in milliseconds; the cache would trust the token for 10 s.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        loop {
            let res = b.get("/workspaces", Some(token(&laptop))).await;
            if res.0 == StatusCode::UNAUTHORIZED {
                assert_error(&res, 401, "token_revoked");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "B still accepts a logged-out token: {}", res.1);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        // The other login of the same user is untouched.
        let (status, body) = b.get("/workspaces", Some(token(&phone))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        b.stop().await.expect("B stops");
        a.stop().await.expect("A stops");
    })
    .await;
}

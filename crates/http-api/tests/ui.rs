//! The web UI's server side: the embedded page and its policy, the cookie
//! session (`/session`) and the CSRF rule for cookie-authenticated requests.
//! The page itself is driven in a real browser by crates/client/tests/browser_ui.rs.

mod common;

use common::{assert_error, on_both_backends, Server};
use filesync_core::db::Backend;
use reqwest::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE, COOKIE, ETAG, IF_NONE_MATCH, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_assets_are_embedded_and_may_run_only_their_own_scripts() {
    let server = Server::start(Backend::Sqlite, |_| {}).await;
    let client = server.raw();

    let page = client.get(server.url("/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers()[CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
    let csp = page.headers()[CONTENT_SECURITY_POLICY].to_str().unwrap().to_owned();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script type="module" src="/ui/app.js">"#), "{html}");

    for (asset, kind) in [("app.js", "text/javascript"), ("app.css", "text/css"), ("icon.svg", "image/svg+xml")] {
        let res = client.get(server.url(&format!("/ui/{asset}"))).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{asset}");
        assert!(res.headers()[CONTENT_TYPE].to_str().unwrap().starts_with(kind), "{asset}");
        assert!(res.headers().contains_key(CONTENT_SECURITY_POLICY), "{asset}");
        // A browser that has the asset gets a 304 without the bytes.
        let etag = res.headers()[ETAG].clone();
        let again = client.get(server.url(&format!("/ui/{asset}"))).header(IF_NONE_MATCH, etag).send().await.unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{asset}");
    }
    let missing = client.get(server.url("/ui/nothing.js")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    // API paths keep their JSON answers, and JSON may never run anything in a browser.
    assert_error(&server.get("/no-such-route", None).await, 404, "route_not_found");
    let api = client.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(api.headers()[CONTENT_SECURITY_POLICY], "default-src 'none'; frame-ancestors 'none'; sandbox");
    assert_eq!(api.headers()["x-content-type-options"], "nosniff");
    assert_error(&server.send(client.post(server.url("/"))).await, 405, "method_not_allowed");
    server.stop().await.unwrap();
}

/// The `filesync_session` cookie from a response's `Set-Cookie`, with its attributes.
fn session_cookie(res: &reqwest::Response) -> Option<String> {
    res.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("filesync_session="))
        .map(str::to_owned)
}

async fn json_of(res: reqwest::Response) -> (StatusCode, Value) {
    let status = res.status();
    let text = res.text().await.unwrap();
    (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_session_logs_in_needs_the_csrf_token_to_change_anything_and_logs_out() {
    on_both_backends(|backend| async move {
        let server = Server::start(backend, |_| {}).await;
        let client = server.raw();
        let (_, alice_token) = server.user("alice").await;
        server.user("bob").await;

        // A wrong password sets no cookie, and says so like /login.
        let res = client
            .post(server.url("/session"))
            .json(&json!({"email": "alice@example.com", "password": "wrong-password"}))
            .send()
            .await
            .unwrap();
        assert!(session_cookie(&res).is_none());
        assert_error(&json_of(res).await, 401, "invalid_credentials");

        // Bob logs in through the UI: the token is in an HttpOnly, SameSite=Strict cookie, not in the body.
        let res = client
            .post(server.url("/session"))
            .json(&json!({"email": "bob@example.com", "password": "password-bob"}))
            .send()
            .await
            .unwrap();
        let set = session_cookie(&res).expect("a session cookie");
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
            assert!(set.contains(attr), "{attr} missing: {set}");
        }
        assert!(!set.contains("Secure"), "no Secure flag over plain HTTP: {set}");
        let (status, body) = json_of(res).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["user"]["username"], "bob");
        assert!(body.get("token").is_none(), "the token stays out of reach of scripts: {body}");
        let csrf = body["csrf_token"].as_str().expect("csrf token").to_owned();
        let cookie = set.split(';').next().unwrap().to_owned();

        // Reading needs only the cookie; the page learns its CSRF token from GET /session.
        let (status, me) =
            json_of(client.get(server.url("/session")).header(COOKIE, &cookie).send().await.unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{me}");
        assert_eq!(me["csrf_token"], csrf.as_str());
        assert_eq!(me["user"]["username"], "bob");
        let (status, list) =
            json_of(client.get(server.url("/workspaces")).header(COOKIE, &cookie).send().await.unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{list}");

        // Changing something without the CSRF token, or with another session's, is refused and changes nothing.
        let create = |csrf: Option<&str>| {
            let mut req =
                client.post(server.url("/create-workspace")).header(COOKIE, &cookie).json(&json!({"name": "Plans"}));
            if let Some(csrf) = csrf {
                req = req.header("X-CSRF-Token", csrf);
            }
            req
        };
        assert_error(&json_of(create(None).send().await.unwrap()).await, 403, "forbidden");
        let (_, alice) = json_of(
            client
                .post(server.url("/session"))
                .json(&json!({"email": "alice@example.com", "password": "password-alice"}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        let alice_csrf = alice["csrf_token"].as_str().unwrap();
        assert_ne!(alice_csrf, csrf);
        assert_error(&json_of(create(Some(alice_csrf)).send().await.unwrap()).await, 403, "forbidden");
        let (_, list) =
            json_of(client.get(server.url("/workspaces")).header(COOKIE, &cookie).send().await.unwrap()).await;
        assert_eq!(list["workspaces"].as_array().unwrap().len(), 0, "{list}");

        // With it, the same authz decides as for the API.
        let (status, created) = json_of(create(Some(&csrf)).send().await.unwrap()).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let ws = created["workspace"]["id"].as_i64().unwrap();
        let (status, _) = server.post("/create-workspace", Some(&alice_token), json!({"name": "Alice's"})).await;
        assert_eq!(status, StatusCode::CREATED);
        let (_, alice_ws) = server.get("/workspaces", Some(&alice_token)).await;
        let alice_ws = alice_ws["workspaces"][0]["id"].as_i64().unwrap();
        let (status, _) = json_of(
            client
                .get(server.url(&format!("/workspaces/{alice_ws}/files")))
                .header(COOKIE, &cookie)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "bob is no member of alice's workspace");
        let (status, files) = json_of(
            client.get(server.url(&format!("/workspaces/{ws}/files"))).header(COOKIE, &cookie).send().await.unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{files}");

        // A Bearer client never meets the CSRF rule.
        let (status, _) = server.post("/create-workspace", Some(&alice_token), json!({"name": "More"})).await;
        assert_eq!(status, StatusCode::CREATED);

        // A forged cookie is no session.
        let forged = client.get(server.url("/workspaces")).header(COOKIE, "filesync_session=abc.def.ghi");
        assert_error(&json_of(forged.send().await.unwrap()).await, 401, "invalid_token");

        // Logging out makes the browser drop the cookie.
        let res = client.delete(server.url("/session")).header(COOKIE, &cookie).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let cleared = session_cookie(&res).expect("a clearing cookie");
        assert!(cleared.starts_with("filesync_session=;") && cleared.contains("Max-Age=0"), "{cleared}");
        assert_error(&json_of(client.get(server.url("/session")).send().await.unwrap()).await, 401, "missing_token");
        server.stop().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cookie_is_secure_under_tls() {
    let server = Server::start(Backend::Sqlite, |_| {}).await;
    server.user("carol").await;
    // Behind a TLS-terminating proxy that says so.
    let res = server
        .raw()
        .post(server.url("/session"))
        .header("X-Forwarded-Proto", "https")
        .json(&json!({"email": "carol@example.com", "password": "password-carol"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let set = session_cookie(&res).unwrap();
    assert!(set.contains("Secure") && set.contains("HttpOnly"), "{set}");
    server.stop().await.unwrap();
}

/// Reads the event stream until `needle` has arrived (bounded, so a silent stream fails the test).
async fn read_until(res: &mut reqwest::Response, seen: &mut String, needle: &str) {
    let wait = async {
        while !seen.contains(needle) {
            match res.chunk().await.expect("event stream") {
                Some(bytes) => seen.push_str(&String::from_utf8_lossy(&bytes)),
                None => panic!("the event stream ended before {needle:?}: {seen}"),
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("no {needle:?} on the event stream: {seen}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_page_hears_of_every_change_and_of_losing_access() {
    on_both_backends(|backend| async move {
        let server = Server::start(backend, |_| {}).await;
        let client = server.raw();
        let (_, alice) = server.user("alice").await;
        let (bob_id, bob) = server.user("bob").await;
        let (_, carol) = server.user("carol").await;
        let (_, created) = server.post("/create-workspace", Some(&alice), json!({"name": "Team"})).await;
        let ws = created["workspace"]["id"].as_i64().unwrap();
        let (status, _) =
            server.post("/add-user", Some(&alice), json!({"workspace_id": ws, "email": "bob@example.com"})).await;
        assert_eq!(status, StatusCode::CREATED);

        // Only members may listen.
        let (status, body) = json_of(
            client.get(server.url(&format!("/workspaces/{ws}/events"))).bearer_auth(&carol).send().await.unwrap(),
        )
        .await;
        assert_error(&(status, body), 404, "workspace_not_found");

        let mut events =
            client.get(server.url(&format!("/workspaces/{ws}/events"))).bearer_auth(&bob).send().await.unwrap();
        assert_eq!(events.status(), StatusCode::OK);
        assert!(events.headers()[CONTENT_TYPE].to_str().unwrap().starts_with("text/event-stream"));
        let mut seen = String::new();
        read_until(&mut events, &mut seen, ": connected").await;

        // A change committed by someone else arrives with its seq.
        let put = client
            .put(server.url(&format!("/workspaces/{ws}/file?path=notes.txt")))
            .bearer_auth(&alice)
            .body("hello")
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), StatusCode::CREATED);
        let seq = put.json::<Value>().await.unwrap()["version"].as_i64().unwrap();
        read_until(&mut events, &mut seen, &format!("event: change\ndata: {{\"seq\":{seq}}}\n\n")).await;

        // Removed from the workspace: told so, and the stream ends.
        let res = client
            .delete(server.url(&format!("/workspaces/{ws}/members/{bob_id}")))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        read_until(&mut events, &mut seen, "event: gone").await;
        let end = tokio::time::timeout(std::time::Duration::from_secs(10), events.chunk()).await;
        assert!(matches!(end, Ok(Ok(None))), "the stream ends after `gone`: {end:?}");
        server.stop().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_session_renews_itself_changes_the_password_and_logs_out_for_good() {
    on_both_backends(|backend| async move {
        let server = Server::start(backend, |_| {}).await;
        let client = server.raw();
        server.user("dora").await;
        let res = client
            .post(server.url("/session"))
            .json(&json!({"email": "dora@example.com", "password": "password-dora", "device_name": "Web browser"}))
            .send()
            .await
            .unwrap();
        let cookies: Vec<String> =
            res.headers().get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        let refresh = cookies.iter().find(|c| c.starts_with("filesync_refresh=")).expect("a refresh cookie").clone();
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/session"] {
            assert!(refresh.contains(attr), "{attr} missing: {refresh}");
        }
        let session = session_cookie(&res).unwrap();
        let (_, body) = json_of(res).await;
        let csrf = body["csrf_token"].as_str().unwrap().to_owned();
        let session = session.split(';').next().unwrap().to_owned();
        let refresh = refresh.split(';').next().unwrap().to_owned();

        // The browser's device is listed, as this browser.
        let (status, devices) =
            json_of(client.get(server.url("/devices")).header(COOKIE, &session).send().await.unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{devices}");
        assert_eq!(devices["devices"][0]["name"], "Web browser");

        // Without an access token, the device credential renews the session.
        let res = client.post(server.url("/session/refresh")).header(COOKIE, &refresh).send().await.unwrap();
        let renewed = session_cookie(&res).expect("a new session cookie");
        let (status, body) = json_of(res).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["user"]["username"], "dora");
        let renewed = renewed.split(';').next().unwrap().to_owned();
        let (status, _) =
            json_of(client.get(server.url("/workspaces")).header(COOKIE, &renewed).send().await.unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        assert_error(
            &json_of(client.post(server.url("/session/refresh")).send().await.unwrap()).await,
            401,
            "missing_token",
        );

        // A new password through the session: new cookies that work, the old token refused.
        let res = client
            .post(server.url("/session/password"))
            .header(COOKIE, &session)
            .header("X-CSRF-Token", &csrf)
            .json(&json!({"current_password": "password-dora", "new_password": "dora-new-password"}))
            .send()
            .await
            .unwrap();
        let changed = session_cookie(&res).expect("a new session cookie");
        let (status, body) = json_of(res).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let changed = changed.split(';').next().unwrap().to_owned();
        let csrf = body["csrf_token"].as_str().unwrap().to_owned();
        let (status, _) =
            json_of(client.get(server.url("/workspaces")).header(COOKIE, &changed).send().await.unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) =
            json_of(client.get(server.url("/workspaces")).header(COOKIE, &session).send().await.unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "the token from before the change is refused");

        // Logging out revokes the token itself, not just the cookie.
        let res = client
            .post(server.url("/logout"))
            .header(COOKIE, &changed)
            .header("X-CSRF-Token", &csrf)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let (status, _) =
            json_of(client.get(server.url("/workspaces")).header(COOKIE, &changed).send().await.unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "a logged-out token is refused");
        server.stop().await.unwrap();
    })
    .await;
}

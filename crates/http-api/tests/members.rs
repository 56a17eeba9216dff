//! Managing the people of a workspace over HTTP, on SQLite and on MariaDB:
//! roles, removing and leaving, renaming and deleting, pending invitations.

mod common;

use common::{assert_error, on_both_backends, Server};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

impl Server {
    async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.raw().request(method, self.url(path));
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request");
        let status = res.status();
        let text = res.text().await.expect("body");
        if status == StatusCode::NO_CONTENT {
            assert!(text.is_empty(), "204 with a body: {text}");
            return (status, Value::Null);
        }
        (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}")))
    }

    async fn workspace(&self, token: &str, name: &str) -> i64 {
        let (status, body) = self.post("/create-workspace", Some(token), json!({"name": name})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["workspace"]["id"].as_i64().unwrap()
    }

    async fn share(&self, token: &str, ws: i64, email: &str, role: &str) -> (StatusCode, Value) {
        self.post("/add-user", Some(token), json!({"workspace_id": ws, "email": email, "role": role})).await
    }

    /// (username, role) of each member, and (email, role) of each pending invitation, as `token` sees them.
    async fn people(&self, token: &str, ws: i64) -> (Vec<(String, String)>, Vec<(String, String)>) {
        let (status, body) = self.get(&format!("/view-shared-users?workspace_id={ws}"), Some(token)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let pairs = |list: &Value, key: &str| -> Vec<(String, String)> {
            list.as_array()
                .unwrap()
                .iter()
                .map(|m| (m[key].as_str().unwrap().to_owned(), m["role"].as_str().unwrap().to_owned()))
                .collect()
        };
        (pairs(&body["users"], "username"), pairs(&body["invitations"], "email"))
    }
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
}

fn register_body(username: &str) -> Value {
    json!({"first_name": "F", "last_name": "L", "username": username, "email": format!("{username}@example.com"),
           "password": format!("password-{username}")})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_change_and_members_are_removed_or_leave() {
    on_both_backends(|backend| async move {
        let srv = Server::start(backend, |_| {}).await;
        let (alice_id, alice) = srv.user("alice").await;
        let (bob_id, bob) = srv.user("bob").await;
        let (carol_id, carol) = srv.user("carol").await;
        let (dave_id, dave) = srv.user("dave").await;
        let ws = srv.workspace(&alice, "Team").await;
        for who in ["bob", "carol"] {
            assert_eq!(srv.share(&alice, ws, &format!("{who}@example.com"), "editor").await.0, StatusCode::CREATED);
        }
        let member = |ws: i64, user: i64| format!("/workspaces/{ws}/members/{user}");

        // Change a role: the owner only, editor/viewer only, never the owner's own.
        let (status, body) =
            srv.call(Method::PUT, &member(ws, bob_id), Some(&alice), Some(json!({"role": "viewer"}))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            body,
            json!({"member": {"user_id": bob_id, "username": "bob", "email": "bob@example.com", "role": "viewer"}})
        );
        assert_eq!(
            srv.people(&carol, ws).await.0,
            owned(&[("alice", "owner"), ("bob", "viewer"), ("carol", "editor")])
        );
        let put = |token: String, user: i64, body: Value| {
            let srv = &srv;
            async move { srv.call(Method::PUT, &member(ws, user), Some(&token), Some(body)).await }
        };
        assert_error(&put(alice.clone(), alice_id, json!({"role": "viewer"})).await, 409, "owner_role_fixed");
        assert_error(&put(alice.clone(), bob_id, json!({"role": "owner"})).await, 422, "invalid_role");
        assert_error(&put(alice.clone(), bob_id, json!({"role": "admin"})).await, 422, "invalid_role");
        assert_error(&put(alice.clone(), bob_id, json!({})).await, 422, "invalid_request");
        assert_error(&put(alice.clone(), dave_id, json!({"role": "viewer"})).await, 404, "member_not_found");
        assert_error(&put(alice.clone(), 999_999, json!({"role": "viewer"})).await, 404, "member_not_found");
        assert_error(&put(carol.clone(), bob_id, json!({"role": "editor"})).await, 403, "forbidden");
        assert_error(&put(carol.clone(), carol_id, json!({"role": "viewer"})).await, 403, "forbidden");
        // A non-member, or a workspace that does not exist: the same 404.
        let outsider = put(dave.clone(), bob_id, json!({"role": "editor"})).await;
        assert_error(&outsider, 404, "workspace_not_found");
        let missing =
            srv.call(Method::PUT, &member(ws + 999, bob_id), Some(&dave), Some(json!({"role": "editor"}))).await;
        assert_eq!(outsider, missing);
        assert_error(
            &srv.call(Method::PUT, &member(ws, bob_id), None, Some(json!({"role": "editor"}))).await,
            401,
            "missing_token",
        );
        let bad_path = srv
            .call(Method::PUT, &format!("/workspaces/{ws}/members/bob"), Some(&alice), Some(json!({"role": "editor"})))
            .await;
        assert_error(&bad_path, 404, "workspace_not_found");
        assert_error(&srv.call(Method::POST, &member(ws, bob_id), Some(&alice), None).await, 405, "method_not_allowed");
        assert_eq!(
            srv.people(&alice, ws).await.0,
            owned(&[("alice", "owner"), ("bob", "viewer"), ("carol", "editor")]),
            "nothing changed"
        );

        // Remove: the owner removes anyone but themself; a member only themself (leave).
        assert_error(&srv.call(Method::DELETE, &member(ws, bob_id), Some(&carol), None).await, 403, "forbidden");
        assert_error(&srv.call(Method::DELETE, &member(ws, alice_id), Some(&carol), None).await, 403, "forbidden");
        assert_error(
            &srv.call(Method::DELETE, &member(ws, alice_id), Some(&alice), None).await,
            409,
            "owner_cannot_leave",
        );
        assert_error(
            &srv.call(Method::DELETE, &member(ws, dave_id), Some(&alice), None).await,
            404,
            "member_not_found",
        );
        assert_error(
            &srv.call(Method::DELETE, &member(ws, dave_id), Some(&dave), None).await,
            404,
            "workspace_not_found",
        );
        assert_error(&srv.call(Method::DELETE, &member(ws, bob_id), None, None).await, 401, "missing_token");
        let (status, _) = srv.call(Method::DELETE, &member(ws, bob_id), Some(&alice), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        // Bob's next call is the 404 of a workspace that does not exist; the workspace is gone from his list.
        let hidden = srv.get(&format!("/view-shared-users?workspace_id={ws}"), Some(&bob)).await;
        assert_error(&hidden, 404, "workspace_not_found");
        assert_error(&srv.get(&format!("/workspaces/{ws}/files"), Some(&bob)).await, 404, "workspace_not_found");
        let (_, list) = srv.get("/workspaces", Some(&bob)).await;
        assert_eq!(list, json!({"workspaces": []}));
        assert_error(&srv.call(Method::DELETE, &member(ws, bob_id), Some(&alice), None).await, 404, "member_not_found");

        // Carol leaves.
        let (status, _) = srv.call(Method::DELETE, &member(ws, carol_id), Some(&carol), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_error(&srv.get(&format!("/workspaces/{ws}/files"), Some(&carol)).await, 404, "workspace_not_found");
        assert_eq!(srv.people(&alice, ws).await.0, owned(&[("alice", "owner")]));
        // Shared again, she is a member again.
        assert_eq!(srv.share(&alice, ws, "carol@example.com", "viewer").await.0, StatusCode::CREATED);
        assert_eq!(srv.people(&carol, ws).await.0, owned(&[("alice", "owner"), ("carol", "viewer")]));
        srv.stop().await.expect("clean shutdown");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspaces_are_renamed_and_deleted() {
    on_both_backends(|backend| async move {
        let srv = Server::start(backend, |_| {}).await;
        let (alice_id, alice) = srv.user("alice").await;
        let (_, bob) = srv.user("bob").await;
        let (_, carol) = srv.user("carol").await;
        let ws = srv.workspace(&alice, "Team").await;
        let other = srv.workspace(&alice, "Other").await;
        let bobs = srv.workspace(&bob, "Mine").await;
        assert_eq!(srv.share(&alice, ws, "bob@example.com", "editor").await.0, StatusCode::CREATED);
        assert_eq!(srv.share(&alice, ws, "new@example.com", "viewer").await.0, StatusCode::ACCEPTED);
        let path = |ws: i64| format!("/workspaces/{ws}");

        // Rename.
        let (status, body) =
            srv.call(Method::PATCH, &path(ws), Some(&alice), Some(json!({"name": "Team 2026 ☕"}))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            body,
            json!({"workspace": {"id": ws, "name": "Team 2026 ☕", "owner_id": alice_id, "role": "owner"}})
        );
        let (_, list) = srv.get("/workspaces", Some(&bob)).await;
        assert!(
            list["workspaces"].as_array().unwrap().iter().any(|w| w["id"] == ws && w["name"] == "Team 2026 ☕"),
            "{list}"
        );
        let (status, _) = srv.call(Method::PATCH, &path(ws), Some(&alice), Some(json!({"name": "Team 2026 ☕"}))).await;
        assert_eq!(status, StatusCode::OK, "renaming to the same name is fine");
        let patch = |token: String, ws: i64, body: Value| {
            let srv = &srv;
            async move { srv.call(Method::PATCH, &path(ws), Some(&token), Some(body)).await }
        };
        assert_error(&patch(alice.clone(), ws, json!({"name": "Other"})).await, 409, "workspace_exists");
        let (status, _) = patch(bob.clone(), bobs, json!({"name": "Other"})).await;
        assert_eq!(status, StatusCode::OK, "another owner may use the name");
        for name in ["", "..", "a/b", &"x".repeat(256)] {
            assert_error(&patch(alice.clone(), ws, json!({"name": name})).await, 422, "invalid_workspace_name");
        }
        assert_error(&patch(alice.clone(), ws, json!({})).await, 422, "invalid_request");
        assert_error(&patch(bob.clone(), ws, json!({"name": "Mine now"})).await, 403, "forbidden");
        assert_error(&patch(carol.clone(), ws, json!({"name": "X"})).await, 404, "workspace_not_found");
        assert_error(&patch(alice.clone(), ws + 999, json!({"name": "X"})).await, 404, "workspace_not_found");
        assert_error(&srv.call(Method::PATCH, &path(ws), None, Some(json!({"name": "X"}))).await, 401, "missing_token");
        let (_, list) = srv.get("/workspaces", Some(&alice)).await;
        let names: Vec<&str> =
            list["workspaces"].as_array().unwrap().iter().map(|w| w["name"].as_str().unwrap()).collect();
        assert_eq!(names, vec!["Other", "Team 2026 ☕"], "refused renames changed nothing");

        // Delete: the owner only; every member loses it at once, invitations go with it.
        assert_error(&srv.call(Method::DELETE, &path(ws), Some(&bob), None).await, 403, "forbidden");
        assert_error(&srv.call(Method::DELETE, &path(ws), Some(&carol), None).await, 404, "workspace_not_found");
        assert_error(&srv.call(Method::DELETE, &path(ws), None, None).await, 401, "missing_token");
        let (status, _) = srv.call(Method::DELETE, &path(ws), Some(&alice), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        for token in [&alice, &bob] {
            assert_error(
                &srv.get(&format!("/view-shared-users?workspace_id={ws}"), Some(token)).await,
                404,
                "workspace_not_found",
            );
            assert_error(&srv.get(&format!("/workspaces/{ws}/files"), Some(token)).await, 404, "workspace_not_found");
        }
        let (_, list) = srv.get("/workspaces", Some(&bob)).await;
        assert_eq!(list["workspaces"].as_array().unwrap().len(), 1, "only bob's own is left: {list}");
        assert_error(&srv.call(Method::DELETE, &path(ws), Some(&alice), None).await, 404, "workspace_not_found");
        // The invitation went with it: registering that email joins nothing.
        let (status, _) = srv.post("/register", None, register_body("new")).await;
        assert_eq!(status, StatusCode::CREATED);
        let (_, newcomer) =
            srv.post("/login", None, json!({"email": "new@example.com", "password": "password-new"})).await;
        let (_, list) = srv.get("/workspaces", Some(newcomer["token"].as_str().unwrap())).await;
        assert_eq!(list, json!({"workspaces": []}));
        // The other workspace is untouched.
        assert_eq!(srv.people(&alice, other).await.0, owned(&[("alice", "owner")]));
        srv.stop().await.expect("clean shutdown");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invitation_becomes_membership_at_registration_or_is_cancelled() {
    on_both_backends(|backend| async move {
        let srv = Server::start(backend, |_| {}).await;
        let (alice_id, alice) = srv.user("alice").await;
        let (_, carol) = srv.user("carol").await;
        let ws = srv.workspace(&alice, "Team").await;
        let second = srv.workspace(&alice, "Second").await;
        assert_eq!(srv.share(&alice, ws, "carol@example.com", "editor").await.0, StatusCode::CREATED);

        // Bob has no account yet: a pending invitation, listed with the members.
        let (status, body) = srv.share(&alice, ws, "  Bob@Example.com ", "viewer").await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        let invitation = &body["invitation"];
        let invitation_id = invitation["id"].as_i64().unwrap();
        assert_eq!(invitation["email"], "bob@example.com");
        assert_eq!(invitation["workspace_id"], ws);
        assert_eq!(invitation["role"], "viewer");
        assert_eq!(invitation["status"], "pending");
        assert_eq!(invitation["invited_by"], json!({"id": alice_id, "username": "alice"}));
        assert!(invitation["created_at"].as_str().is_some_and(|t| t.parse::<chrono::DateTime<chrono::Utc>>().is_ok()));
        assert_error(&srv.share(&alice, ws, "bob@example.com", "editor").await, 409, "already_invited");
        assert_error(&srv.share(&alice, ws, "not an email", "editor").await, 422, "invalid_email");
        assert_error(&srv.share(&carol, ws, "zed@example.com", "editor").await, 403, "forbidden");
        let (members, pending) = srv.people(&carol, ws).await;
        assert_eq!(members, owned(&[("alice", "owner"), ("carol", "editor")]), "an invitation is not a member");
        assert_eq!(pending, owned(&[("bob@example.com", "viewer")]));
        assert_eq!(srv.share(&alice, second, "bob@example.com", "editor").await.0, StatusCode::ACCEPTED);

        // Cancelling: the owner only, this workspace's invitations only.
        let cancel = |ws: i64, id: i64| format!("/workspaces/{ws}/invitations/{id}");
        assert_error(&srv.call(Method::DELETE, &cancel(ws, invitation_id), Some(&carol), None).await, 403, "forbidden");
        assert_error(
            &srv.call(Method::DELETE, &cancel(second, invitation_id), Some(&alice), None).await,
            404,
            "invitation_not_found",
        );
        assert_error(
            &srv.call(Method::DELETE, &cancel(ws, invitation_id + 999), Some(&alice), None).await,
            404,
            "invitation_not_found",
        );
        let (_, zed) = srv.user("zed").await;
        assert_error(
            &srv.call(Method::DELETE, &cancel(ws, invitation_id), Some(&zed), None).await,
            404,
            "workspace_not_found",
        );

        // Bob registers: both invitations are memberships, with the roles given; nothing is pending.
        let (status, body) = srv.post("/register", None, register_body("bob")).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (_, login) =
            srv.post("/login", None, json!({"email": "bob@example.com", "password": "password-bob"})).await;
        let bob = login["token"].as_str().unwrap().to_owned();
        let (_, list) = srv.get("/workspaces", Some(&bob)).await;
        let mine: Vec<(i64, &str)> = list["workspaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| (w["id"].as_i64().unwrap(), w["role"].as_str().unwrap()))
            .collect();
        assert_eq!(mine.len(), 2, "{list}");
        assert!(mine.contains(&(ws, "viewer")) && mine.contains(&(second, "editor")), "{list}");
        let (members, pending) = srv.people(&bob, ws).await;
        assert_eq!(members, owned(&[("alice", "owner"), ("bob", "viewer"), ("carol", "editor")]));
        assert!(pending.is_empty(), "{pending:?}");
        assert_error(
            &srv.call(Method::DELETE, &cancel(ws, invitation_id), Some(&alice), None).await,
            404,
            "invitation_not_found",
        );

        // A cancelled invitation joins nothing at registration.
        let (status, body) = srv.share(&alice, ws, "dave@example.com", "editor").await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        let (status, _) =
            srv.call(Method::DELETE, &cancel(ws, body["invitation"]["id"].as_i64().unwrap()), Some(&alice), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert!(srv.people(&alice, ws).await.1.is_empty());
        let (_, dave) = srv.user("dave").await;
        let (_, list) = srv.get("/workspaces", Some(&dave)).await;
        assert_eq!(list, json!({"workspaces": []}));
        srv.stop().await.expect("clean shutdown");
    })
    .await;
}

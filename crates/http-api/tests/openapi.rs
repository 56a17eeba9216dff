//! `GET /openapi.json` describes exactly the routes the server has: every
//! route of the table in `src/routes/mod.rs` is in the document and every
//! operation of the document reaches a handler, with the security it
//! declares, answering a status it documents. SQLite only: this checks the
//! route table and the document, not the database.

mod common;

use std::collections::BTreeSet;

use common::Server;
use filesync_core::db::Backend;
use reqwest::{Method, StatusCode};
use serde_json::Value;

const METHODS: [&str; 6] = ["get", "post", "put", "patch", "delete", "head"];

/// (METHOD, path) of every route `configure` registers, read from its source:
/// each `resource("<path>")` and the `web::<method>()` routes after it.
fn route_table() -> BTreeSet<(String, String)> {
    let source = include_str!("../src/routes/mod.rs");
    let mut marks: Vec<(usize, bool)> = source.match_indices("resource(\"").map(|(i, _)| (i, true)).collect();
    marks.extend(source.match_indices("web::").map(|(i, _)| (i, false)));
    marks.sort();
    let mut routes = BTreeSet::new();
    let mut path: Option<String> = None;
    for (at, is_resource) in marks {
        let rest = &source[at..];
        if is_resource {
            let start = "resource(\"".len();
            let end = rest[start..].find('"').expect("closing quote") + start;
            path = Some(rest[start..end].to_owned());
        } else {
            let name = &rest["web::".len()..];
            let name = &name[..name.find(|c: char| !c.is_ascii_alphanumeric() && c != '_').unwrap_or(name.len())];
            if METHODS.contains(&name) && rest["web::".len() + name.len()..].starts_with("()") {
                let path = path.clone().unwrap_or_else(|| panic!("web::{name}() before any resource(\"...\")"));
                routes.insert((name.to_uppercase(), path));
            }
        }
    }
    assert!(routes.len() >= 10, "the scan of src/routes/mod.rs found too few routes: {routes:?}");
    routes
}

fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                ops.push((method.to_uppercase(), path.clone(), op));
            }
        }
    }
    ops
}

/// `/workspaces/{id}/files` → `/workspaces/1/files`.
fn concrete(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').expect("closing brace") + open;
        out.push_str(&rest[..open]);
        out.push('1');
        rest = &rest[close + 1..];
    }
    out + rest
}

#[tokio::test]
async fn the_document_describes_exactly_the_routes() {
    let server = Server::start(Backend::Sqlite, |_| {}).await;
    let (status, doc) = server.get("/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{}", doc["openapi"]);

    let documented: BTreeSet<(String, String)> = operations(&doc).into_iter().map(|(m, p, _)| (m, p)).collect();
    let routed = route_table();
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        undocumented.is_empty() && unrouted.is_empty(),
        "routes missing from /openapi.json (annotate the handler with #[utoipa::path] and list it in \
         openapi::ApiDoc): {undocumented:?}; documented but not in the route table: {unrouted:?}"
    );

    let mut operation_ids = BTreeSet::new();
    for (method, path, op) in operations(&doc) {
        let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path}: no operationId"));
        assert!(operation_ids.insert(id.to_owned()), "{method} {path}: operationId {id} is used twice");
        let responses = op["responses"].as_object().unwrap_or_else(|| panic!("{method} {path}: no responses"));
        assert!(responses.keys().any(|s| s.starts_with('2')), "{method} {path}: no success response");
        for (status, response) in responses {
            if status.starts_with('4') || status.starts_with('5') {
                let schema = &response["content"]["application/json"]["schema"]["$ref"];
                assert_eq!(schema, "#/components/schemas/Error", "{method} {path}: {status} must carry the error body");
            }
        }
        let secured = op["security"].as_array().is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some()));
        if secured {
            assert!(responses.contains_key("401"), "{method} {path}: an authenticated route documents 401");
        }

        // The operation reaches its handler, which answers as documented.
        let url = server.url(&concrete(&path));
        let res = server.raw().request(Method::from_bytes(method.as_bytes()).unwrap(), url).send().await.unwrap();
        let got = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        assert_ne!(got, StatusCode::METHOD_NOT_ALLOWED, "{method} {path} is documented but not routed: {body}");
        assert_ne!(body["error"]["code"], "route_not_found", "{method} {path} is documented but not routed");
        assert!(
            responses.contains_key(got.as_str()),
            "{method} {path} answered {got}, which it does not document: {body}"
        );
        if secured {
            assert_eq!(got, StatusCode::UNAUTHORIZED, "{method} {path} declares bearer security: {body}");
            assert_eq!(body["error"]["code"], "missing_token", "{method} {path}");
        } else {
            assert_ne!(got, StatusCode::UNAUTHORIZED, "{method} {path} needs a token but does not declare it: {body}");
        }
    }
    server.stop().await.unwrap();
}

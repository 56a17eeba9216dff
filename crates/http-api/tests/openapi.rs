//! `GET /openapi.json` describes exactly the routes the server has: every
//! route registered in `src/` (the table in `src/routes/mod.rs`, and any
//! other `resource("…")`) is in the document and every
//! operation of the document reaches a handler, with the security it
//! declares, answering a status it documents. SQLite only: this checks the
//! route table and the document, not the database.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::Server;
use filesync_core::db::Backend;
use reqwest::{Method, StatusCode};
use serde_json::Value;

const METHODS: [&str; 6] = ["get", "post", "put", "patch", "delete", "head"];

/// Every `.rs` file under `dir`, recursively.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// (METHOD, path) of every route the crate registers, read from its source:
/// in each file, every `resource("<path>")` (or `route("<path>", …)`) and the
/// `web::<method>()` routes that follow it.
fn route_table() -> BTreeSet<(String, String)> {
    let mut files = Vec::new();
    sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
    let mut routes = BTreeSet::new();
    for file in files {
        let source = std::fs::read_to_string(&file).expect("read source");
        let mut marks: Vec<(usize, usize)> = Vec::new();
        for opener in ["resource(\"", "route(\""] {
            marks.extend(source.match_indices(opener).map(|(i, m)| (i, m.len())));
        }
        marks.extend(source.match_indices("web::").map(|(i, _)| (i, 0)));
        marks.sort();
        let mut path: Option<String> = None;
        for (at, opener) in marks {
            let rest = &source[at..];
            if opener > 0 {
                let end = rest[opener..].find('"').expect("closing quote") + opener;
                path = Some(rest[opener..end].to_owned());
                continue;
            }
            let name = &rest["web::".len()..];
            let name = &name[..name.find(|c: char| !c.is_ascii_alphanumeric() && c != '_').unwrap_or(name.len())];
            if METHODS.contains(&name) && rest["web::".len() + name.len()..].starts_with("()") {
                let path = path
                    .clone()
                    .unwrap_or_else(|| panic!("{}: web::{name}() before any resource(\"...\")", file.display()));
                routes.insert((name.to_uppercase(), path));
            }
        }
    }
    assert!(routes.len() >= 10, "the scan of src/ found too few routes: {routes:?}");
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
        // Secured: every alternative needs some scheme (an empty `{}` would make it optional).
        let requirements = op["security"].as_array().cloned().unwrap_or_default();
        let secured =
            !requirements.is_empty() && requirements.iter().all(|r| r.as_object().is_some_and(|r| !r.is_empty()));
        let bearer = requirements.iter().any(|r| r.get("bearer").is_some());
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
            assert_eq!(got, StatusCode::UNAUTHORIZED, "{method} {path} declares security: {body}");
            if bearer {
                assert_eq!(body["error"]["code"], "missing_token", "{method} {path}");
            }
        } else {
            assert_ne!(got, StatusCode::UNAUTHORIZED, "{method} {path} needs a token but does not declare it: {body}");
        }
    }

    // A method the document does not list for a path is a 405 whose `Allow` lists the ones it does.
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let listed: Vec<String> = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
            .into_iter()
            .filter(|m| item.get(m.to_lowercase()).is_some())
            .map(String::from)
            .collect();
        let other = ["PATCH", "PUT", "DELETE", "POST"]
            .into_iter()
            .find(|m| !listed.iter().any(|l| l == m))
            .expect("an unlisted method");
        let res = server
            .raw()
            .request(Method::from_bytes(other.as_bytes()).unwrap(), server.url(&concrete(path)))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED, "{other} {path}");
        let allow = res.headers().get("allow").map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(allow, Some(listed.join(", ")), "{other} {path}: Allow");
    }
    server.stop().await.unwrap();
}

/// The error codes of the `ErrorCode` enum (as `/openapi.json` lists them) are
/// exactly the codes docs/http-api.md documents in its table of statuses.
#[test]
fn every_error_code_is_documented() {
    use utoipa::OpenApi;

    let doc = serde_json::to_value(filesync_http_api::openapi::ApiDoc::openapi()).expect("document as JSON");
    let in_code: BTreeSet<String> = doc["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .expect("the ErrorCode schema lists its values")
        .iter()
        .map(|v| v.as_str().expect("a code").to_owned())
        .collect();

    let docs = include_str!("../../../docs/http-api.md");
    let table = docs.split("| status | codes |").nth(1).expect("docs/http-api.md has the table of error codes");
    let table = &table[..table.find("\n\n").unwrap_or(table.len())];
    let is_code =
        |s: &&str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    let in_docs: BTreeSet<String> = table.split('`').skip(1).step_by(2).filter(is_code).map(String::from).collect();

    let undocumented: Vec<_> = in_code.difference(&in_docs).collect();
    let unknown: Vec<_> = in_docs.difference(&in_code).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "codes missing from docs/http-api.md's table: {undocumented:?}; codes the table lists that ErrorCode lacks: {unknown:?}"
    );
}

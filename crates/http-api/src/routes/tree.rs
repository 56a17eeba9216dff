//! Changes to the tree over HTTP: `DELETE /workspaces/{id}/file`,
//! `POST /workspaces/{id}/move` and `POST /workspaces/{id}/mkdir`: the
//! journal edits agents send, under the same rules. A directory is deleted or
//! moved with everything under it, in one transaction.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use filesync_core::db::journal::{self, Author, Committed, Edit};
use filesync_core::db::{DbConn, DbError};
use filesync_core::ingest::{self, Base};
use filesync_core::WorkspaceId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::file::{announce, author, base_of, refused, PathQuery};
use crate::auth::AuthUser;
use crate::authz::{authorize, Action};
use crate::error::{ApiError, ApiResult, ErrorBody, ErrorCode};
use crate::openapi::{AuthErrors, JsonBodyErrors, ServerErrors};
use crate::state::AppState;
use crate::validate;

/// The edits that delete `path` or move it to `to`: the path itself and, for a directory,
/// everything under it (children deleted before their parent, moved after it).
fn subtree(conn: &mut DbConn, ws: WorkspaceId, path: &str, base: Base, to: Option<&str>) -> Result<Vec<Edit>, DbError> {
    let head = journal::head_of(conn, ws, path)?.filter(|h| !h.deleted);
    let under = journal::live_under(conn, ws, path)?;
    if head.is_none() && under.is_empty() {
        return Err(DbError::NotFound);
    }
    let top_base = base.resolve(conn, ws, path)?;
    let moved = |p: &str| to.map(|to| format!("{to}{}", &p[path.len()..]));
    let edit = |p: &str, base_version: i64| match moved(p) {
        Some(to) => Edit::Move { from: p.to_owned(), to, base_version },
        None => Edit::Delete { path: p.to_owned(), base_version },
    };
    let mut edits: Vec<Edit> = under.iter().map(|c| edit(&c.path, c.seq)).collect();
    if head.is_some() {
        match to {
            Some(_) => edits.insert(0, edit(path, top_base)),
            None => {
                edits.reverse();
                edits.push(edit(path, top_base));
            }
        }
    } else if to.is_none() {
        edits.reverse();
    }
    Ok(edits)
}

/// Commits `edits` as one transaction: all of them or, if the journal refuses one, none.
async fn commit_all(
    state: &AppState,
    ws: WorkspaceId,
    author: Author,
    make: impl FnOnce(&mut DbConn) -> Result<Vec<Edit>, DbError> + Send + 'static,
) -> ApiResult<Committed> {
    let done = state
        .db
        .write(move |c| {
            let edits = make(c)?;
            let mut last = None;
            for r in journal::commit_many(c, ws, &author, &edits)? {
                last = Some(r?);
            }
            last.ok_or(DbError::NotFound)
        })
        .await
        .map_err(refused)?;
    if done.new_seq {
        announce(state, ws, done.seq).await;
    }
    Ok(done)
}

#[derive(Serialize, ToSchema)]
struct ChangedResponse {
    path: String,
    version: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<String>,
}

/// Deletes a file, or a directory with everything under it.
#[utoipa::path(
    delete,
    path = "/workspaces/{id}/file",
    tag = "files",
    security(("bearer" = [])),
    params(
        ("id" = i64, Path, description = "The workspace", example = 1),
        PathQuery,
        ("If-Match" = Option<String>, Header, description = "The version the caller saw; another head refuses the delete"),
    ),
    responses(
        (status = 200, description = "Deleted", body = ChangedResponse),
        (status = 403, description = "`forbidden`: viewers may not change files", body = ErrorBody),
        (status = 404, description = "`workspace_not_found` or `path_not_found`", body = ErrorBody),
        (status = 409, description = "`stale_base`", body = ErrorBody),
        (status = 422, description = "`invalid_request`, `invalid_path` or `invalid_if_match`", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn delete(
    state: web::Data<AppState>,
    user: AuthUser,
    ws: web::Path<i64>,
    query: web::Query<PathQuery>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let ws = WorkspaceId(ws.into_inner());
    let path = query.into_inner().path;
    validate::workspace_path(&path)?;
    let base = base_of(&req)?;
    state.read(move |conn| authorize(conn, user.id, ws, Action::WriteFiles).map(|_| ())).await?;
    let key = path.clone();
    let done = commit_all(&state, ws, author(&user), move |c| subtree(c, ws, &key, base, None)).await?;
    tracing::info!(workspace.id = ws.0, user.id = user.id.0, seq = done.seq, "deleted over HTTP");
    Ok(HttpResponse::Ok().json(ChangedResponse { path, version: done.seq, from: None }))
}

#[derive(Deserialize, ToSchema)]
pub struct MoveRequest {
    #[schema(min_length = 1, max_length = 4096, example = "docs/old.txt")]
    from: String,
    #[schema(min_length = 1, max_length = 4096, example = "docs/new.txt")]
    to: String,
    /// The version of `from` the caller saw; without it, the current one.
    base_version: Option<i64>,
}

/// Moves (renames) a file, or a directory with everything under it.
#[utoipa::path(
    post,
    path = "/workspaces/{id}/move",
    tag = "files",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The workspace", example = 1)),
    request_body = MoveRequest,
    responses(
        (status = 200, description = "Moved", body = ChangedResponse),
        (status = 403, description = "`forbidden`: viewers may not change files", body = ErrorBody),
        (status = 404, description = "`workspace_not_found` or `path_not_found`", body = ErrorBody),
        (status = 409, description = "`stale_base`, `destination_exists` or `parent_is_file`", body = ErrorBody),
        (status = 422, description = "`invalid_request`, `invalid_path`, `same_path` or `move_into_itself`", body = ErrorBody),
        AuthErrors,
        JsonBodyErrors,
        ServerErrors,
    )
)]
pub async fn move_path(
    state: web::Data<AppState>,
    user: AuthUser,
    ws: web::Path<i64>,
    body: web::Json<MoveRequest>,
) -> ApiResult<HttpResponse> {
    let ws = WorkspaceId(ws.into_inner());
    let MoveRequest { from, to, base_version } = body.into_inner();
    validate::workspace_path(&from)?;
    validate::workspace_path(&to)?;
    if to.starts_with(&format!("{from}/")) {
        return Err(ApiError::invalid(ErrorCode::MoveIntoItself, "a directory cannot move inside itself"));
    }
    let base = base_version.map_or(Base::Current, Base::Seen);
    state.read(move |conn| authorize(conn, user.id, ws, Action::WriteFiles).map(|_| ())).await?;
    let (src, dst) = (from.clone(), to.clone());
    let done = commit_all(&state, ws, author(&user), move |c| {
        if src == dst {
            return Err(DbError::Refused(journal::Refusal::SamePath));
        }
        subtree(c, ws, &src, base, Some(&dst))
    })
    .await?;
    tracing::info!(workspace.id = ws.0, user.id = user.id.0, seq = done.seq, "moved over HTTP");
    Ok(HttpResponse::Ok().json(ChangedResponse { path: to, version: done.seq, from: Some(from) }))
}

#[derive(Deserialize, ToSchema)]
pub struct MkdirRequest {
    #[schema(min_length = 1, max_length = 4096, example = "docs/drafts")]
    path: String,
}

/// Creates a directory (201), or answers 200 if it is one already.
#[utoipa::path(
    post,
    path = "/workspaces/{id}/mkdir",
    tag = "files",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The workspace", example = 1)),
    request_body = MkdirRequest,
    responses(
        (status = 200, description = "It is a directory already", body = ChangedResponse),
        (status = 201, description = "Created", body = ChangedResponse),
        (status = 403, description = "`forbidden`: viewers may not change files", body = ErrorBody),
        (status = 404, description = "`workspace_not_found`", body = ErrorBody),
        (status = 409, description = "`parent_is_file` or `kind_mismatch` (a file is at the path)", body = ErrorBody),
        (status = 422, description = "`invalid_request` or `invalid_path`", body = ErrorBody),
        AuthErrors,
        JsonBodyErrors,
        ServerErrors,
    )
)]
pub async fn mkdir(
    state: web::Data<AppState>,
    user: AuthUser,
    ws: web::Path<i64>,
    body: web::Json<MkdirRequest>,
) -> ApiResult<HttpResponse> {
    let ws = WorkspaceId(ws.into_inner());
    let path = body.into_inner().path;
    validate::workspace_path(&path)?;
    state.read(move |conn| authorize(conn, user.id, ws, Action::WriteFiles).map(|_| ())).await?;
    let edit = Edit::MakeDir { path: path.clone(), base_version: 0 };
    let done = ingest::commit(&state.db, ws, author(&user), edit).await.map_err(refused)?;
    let status = if done.new_seq {
        announce(&state, ws, done.seq).await;
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(HttpResponse::build(status).json(ChangedResponse { path, version: done.seq, from: None }))
}

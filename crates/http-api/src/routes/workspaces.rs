//! `/create-workspace`, `/add-user`, `/view-shared-workspaces`,
//! `/view-shared-users`, `/workspaces`.

use actix_web::{web, HttpResponse};
use filesync_core::db::accounts;
use filesync_core::db::DbError;
use filesync_core::events::UserEvent;
use filesync_core::{Role, UserId, WorkspaceId};
use serde::{Deserialize, Serialize};

use crate::auth::AuthUser;
use crate::authz::{authorize, Action};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::validate;
use crate::wire::{self, MemberJson, WorkspaceItem};

#[derive(Deserialize)]
pub struct CreateWorkspaceRequest {
    name: String,
}

#[derive(Serialize)]
struct CreatedWorkspace {
    id: i64,
    name: String,
    owner_id: i64,
    role: Role,
}

#[derive(Serialize)]
struct CreateWorkspaceResponse {
    workspace: CreatedWorkspace,
}

pub async fn create_workspace(
    state: web::Data<AppState>,
    user: AuthUser,
    body: web::Json<CreateWorkspaceRequest>,
) -> ApiResult<HttpResponse> {
    let name = body.into_inner().name;
    validate::workspace_name(&name)?;
    let ws =
        state.db.write(move |conn| accounts::create_workspace(conn, user.id, &name)).await.map_err(|e| match e {
            DbError::Conflict(_) => {
                ApiError::Conflict { code: "workspace_exists", message: "you already have a workspace with this name" }
            }
            other => other.into(),
        })?;
    tracing::info!(workspace.id = ws.id, user.id = ws.owner_id, "workspace created");
    Ok(HttpResponse::Created().json(CreateWorkspaceResponse {
        workspace: CreatedWorkspace { id: ws.id, name: ws.name, owner_id: ws.owner_id, role: Role::Owner },
    }))
}

#[derive(Deserialize)]
pub struct AddUserRequest {
    #[serde(deserialize_with = "wire::id")]
    workspace_id: i64,
    email: String,
    role: Option<String>,
}

#[derive(Serialize)]
struct AddUserResponse {
    member: MemberJson,
}

const NO_SUCH_USER: ApiError = ApiError::NotFound { code: "user_not_found", message: "no user has this email" };

pub async fn add_user(
    state: web::Data<AppState>,
    caller: AuthUser,
    body: web::Json<AddUserRequest>,
) -> ApiResult<HttpResponse> {
    let AddUserRequest { workspace_id, email, role } = body.into_inner();
    let role = validate::member_role(role.as_deref())?;
    let ws_id = WorkspaceId(workspace_id);
    let email = validate::normalize_email(&email);
    let caller_id = caller.id;
    let (workspace, target) = state
        .read(move |conn| {
            let (workspace, _) = authorize(conn, caller_id, ws_id, Action::ManageMembers)?;
            let target = accounts::user_by_email(conn, &email)?.ok_or(NO_SUCH_USER)?;
            Ok((workspace, target))
        })
        .await?;
    let target_id = UserId(target.id);
    // Foreign keys hold the workspace and the user in place should either vanish meanwhile.
    state.db.write(move |conn| accounts::add_member(conn, ws_id, target_id, role, caller_id)).await.map_err(
        |e| match e {
            DbError::Conflict(_) => {
                ApiError::Conflict { code: "already_member", message: "this user is already a member of the workspace" }
            }
            other => other.into(),
        },
    )?;
    tracing::info!(workspace.id = ws_id.0, user.id = target.id, role = %role, "member added");
    if let Some(bus) = &state.bus {
        let event = UserEvent::WorkspaceShared {
            workspace_id: ws_id,
            workspace_name: workspace.name,
            role,
            by_user_id: caller.id,
            by_username: caller.username,
        };
        bus.publish_user(target_id, &event).await;
    }
    Ok(HttpResponse::Created().json(AddUserResponse {
        member: MemberJson { user_id: target.id, username: target.username, email: target.email, role },
    }))
}

#[derive(Serialize)]
struct WorkspacesResponse {
    workspaces: Vec<WorkspaceItem>,
}

async fn list_workspaces(state: &AppState, user: UserId, shared_only: bool) -> ApiResult<HttpResponse> {
    let rows = state.read(move |conn| Ok(accounts::workspaces_of(conn, user, shared_only)?)).await?;
    Ok(HttpResponse::Ok().json(WorkspacesResponse { workspaces: rows.into_iter().map(WorkspaceItem::from).collect() }))
}

/// Workspaces others shared with the caller.
pub async fn shared_workspaces(state: web::Data<AppState>, user: AuthUser) -> ApiResult<HttpResponse> {
    list_workspaces(&state, user.id, true).await
}

/// Every workspace of the caller, owned and shared.
pub async fn all_workspaces(state: web::Data<AppState>, user: AuthUser) -> ApiResult<HttpResponse> {
    list_workspaces(&state, user.id, false).await
}

#[derive(Deserialize)]
pub struct MembersQuery {
    #[serde(deserialize_with = "wire::id")]
    workspace_id: i64,
}

#[derive(Serialize)]
struct MembersResponse {
    users: Vec<MemberJson>,
}

pub async fn shared_users(
    state: web::Data<AppState>,
    user: AuthUser,
    query: web::Query<MembersQuery>,
) -> ApiResult<HttpResponse> {
    let ws = WorkspaceId(query.workspace_id);
    let members = state
        .read(move |conn| {
            authorize(conn, user.id, ws, Action::ViewMembers)?;
            Ok(accounts::members_of(conn, ws)?)
        })
        .await?;
    Ok(HttpResponse::Ok().json(MembersResponse { users: members.into_iter().map(MemberJson::from).collect() }))
}

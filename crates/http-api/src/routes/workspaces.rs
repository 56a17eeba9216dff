//! `/create-workspace`, `/add-user`, `/view-shared-workspaces`,
//! `/view-shared-users`, `/workspaces`. Changing members and workspaces after
//! that is [`super::members`].

use actix_web::{web, HttpResponse};
use filesync_core::db::accounts::{self, User};
use filesync_core::db::{invitations, membership, usage, DbError};
use filesync_core::events::UserEvent;
use filesync_core::{Role, UserId, WorkspaceId};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::AuthUser;
use crate::authz::{authorize, Action};
use crate::error::{ApiError, ApiResult, ErrorBody, ErrorCode};
use crate::openapi::{AuthErrors, JsonBodyErrors, ServerErrors};
use crate::state::AppState;
use crate::validate;
use crate::wire::{self, InvitationJson, MemberJson, WorkspaceItem};

#[derive(Deserialize, ToSchema)]
pub struct CreateWorkspaceRequest {
    /// At most 255 bytes, not `.` or `..`, no `/`, `\` or control characters.
    #[schema(min_length = 1, max_length = 255, pattern = r"^[^/\\\u0000-\u001F\u007F-\u009F]+$", example = "Team")]
    name: String,
}

#[derive(Serialize, ToSchema)]
struct CreatedWorkspace {
    id: i64,
    name: String,
    owner_id: i64,
    #[schema(schema_with = wire::role_schema)]
    role: Role,
}

#[derive(Serialize, ToSchema)]
struct CreateWorkspaceResponse {
    workspace: CreatedWorkspace,
}

#[utoipa::path(
    post,
    path = "/create-workspace",
    tag = "workspaces",
    security(("bearer" = [])),
    request_body = CreateWorkspaceRequest,
    responses(
        (status = 201, description = "The new workspace, owned by the caller", body = CreateWorkspaceResponse),
        (status = 409, description = "`workspace_exists`: the caller has a workspace with this name", body = ErrorBody),
        (status = 422, description = "`invalid_request` or `invalid_workspace_name`", body = ErrorBody),
        AuthErrors,
        JsonBodyErrors,
        ServerErrors,
    )
)]
pub async fn create_workspace(
    state: web::Data<AppState>,
    user: AuthUser,
    body: web::Json<CreateWorkspaceRequest>,
) -> ApiResult<HttpResponse> {
    let name = body.into_inner().name;
    validate::workspace_name(&name)?;
    let ws =
        state.db.write(move |conn| accounts::create_workspace(conn, user.id, &name)).await.map_err(|e| match e {
            DbError::Conflict(_) => ApiError::Conflict {
                code: ErrorCode::WorkspaceExists,
                message: "you already have a workspace with this name",
            },
            other => other.into(),
        })?;
    tracing::info!(workspace.id = ws.id, user.id = ws.owner_id, "workspace created");
    Ok(HttpResponse::Created().json(CreateWorkspaceResponse {
        workspace: CreatedWorkspace { id: ws.id, name: ws.name, owner_id: ws.owner_id, role: Role::Owner },
    }))
}

#[derive(Deserialize, ToSchema)]
pub struct AddUserRequest {
    /// A string of digits is accepted too.
    #[serde(deserialize_with = "wire::id")]
    workspace_id: i64,
    email: String,
    /// `editor` (the default) or `viewer`.
    #[schema(example = "editor")]
    role: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct AddUserResponse {
    member: MemberJson,
}

#[derive(Serialize, ToSchema)]
struct InvitationResponse {
    invitation: InvitationJson,
}

/// Whom `/add-user` named.
enum Target {
    Member(User),
    /// No account has this email yet.
    Invite(String),
}

/// `/add-user`: an email with an account becomes a member at once (201 `{"member"}`); one without
/// becomes a pending invitation (202 `{"invitation"}`) that turns into membership when that email
/// registers.
#[utoipa::path(
    post,
    path = "/add-user",
    tag = "workspaces",
    security(("bearer" = [])),
    request_body = AddUserRequest,
    responses(
        (status = 201, description = "The email has an account: the new member", body = AddUserResponse),
        (status = 202, description = "No account has this email yet: a pending invitation, a membership once it registers", body = InvitationResponse),
        (status = 403, description = "`forbidden`: the caller is a member but not the owner", body = ErrorBody),
        (status = 404, description = "`workspace_not_found` (also for a workspace the caller is not a member of)", body = ErrorBody),
        (status = 409, description = "`already_member` or `already_invited`", body = ErrorBody),
        (status = 422, description = "`invalid_request`, `invalid_role`, or `invalid_email` (an email without an account must be valid)", body = ErrorBody),
        AuthErrors,
        JsonBodyErrors,
        ServerErrors,
    )
)]
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
            let target = match accounts::user_by_email(conn, &email)? {
                Some(user) => Target::Member(user),
                None => Target::Invite(validate::email(&email)?),
            };
            Ok((workspace, target))
        })
        .await?;
    let target = match target {
        Target::Member(user) => user,
        Target::Invite(email) => return invite(&state, caller_id, ws_id, email, role).await,
    };
    let target_id = UserId(target.id);
    // Foreign keys hold the workspace and the user in place should either vanish meanwhile.
    state.db.write(move |conn| accounts::add_member(conn, ws_id, target_id, role, caller_id)).await.map_err(
        |e| match e {
            DbError::Conflict(_) => ApiError::Conflict {
                code: ErrorCode::AlreadyMember,
                message: "this user is already a member of the workspace",
            },
            other => other.into(),
        },
    )?;
    tracing::info!(workspace.id = ws_id.0, user.id = target.id, role = %role, "member added");
    let event = UserEvent::WorkspaceShared {
        workspace_id: ws_id,
        workspace_name: workspace.name,
        role,
        by_user_id: caller.id,
        by_username: caller.username,
    };
    state.bus.publish_user(target_id, &event).await;
    Ok(HttpResponse::Created().json(AddUserResponse {
        member: MemberJson { user_id: target.id, username: target.username, email: target.email, role },
    }))
}

/// A pending invitation for an email without an account (202). Should the email register
/// between our look-up and the insert, the registration's hook may have run before the
/// invitation existed: the invitation is then accepted here and the answer is the member (201).
async fn invite(state: &AppState, by: UserId, ws: WorkspaceId, email: String, role: Role) -> ApiResult<HttpResponse> {
    let (invitation, joined) = state
        .db
        .write(move |conn| {
            let invitation = invitations::invite(conn, ws, &email, role, by)?;
            let joined = match accounts::user_by_email(conn, &email)? {
                Some(user) => {
                    invitations::accept_all(conn, UserId(user.id), &email)?;
                    membership::member(conn, ws, UserId(user.id))?
                }
                None => None,
            };
            Ok((invitation, joined))
        })
        .await
        .map_err(|e| match e {
            DbError::Conflict(_) => ApiError::Conflict {
                code: ErrorCode::AlreadyInvited,
                message: "this email is already invited to the workspace",
            },
            other => other.into(),
        })?;
    if let Some(member) = joined {
        tracing::info!(workspace.id = ws.0, user.id = member.user_id, role = %role, "member added");
        return Ok(HttpResponse::Created().json(AddUserResponse { member: member.into() }));
    }
    tracing::info!(workspace.id = ws.0, invitation.id = invitation.id, role = %role, "invitation created");
    Ok(HttpResponse::Accepted().json(InvitationResponse { invitation: invitation.into() }))
}

#[derive(Serialize, ToSchema)]
struct WorkspacesResponse {
    workspaces: Vec<WorkspaceItem>,
}

/// How to list workspaces.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// With each workspace's usage (the default). Usage reads every version the workspaces keep;
    /// `false` lists them without it, at a cost independent of their size (the sync agent's start).
    #[serde(default = "yes")]
    usage: bool,
}

fn yes() -> bool {
    true
}

async fn list_workspaces(
    state: &AppState,
    user: UserId,
    shared_only: bool,
    with_usage: bool,
) -> ApiResult<HttpResponse> {
    let (rows, mut usage) = state
        .read(move |conn| {
            let rows = accounts::workspaces_of(conn, user, shared_only)?;
            let ids: Vec<WorkspaceId> = rows.iter().map(|r| WorkspaceId(r.workspace.id)).collect();
            let usage = if with_usage { Some(usage::of(conn, &ids)?) } else { None };
            Ok((rows, usage))
        })
        .await?;
    let workspaces = rows
        .into_iter()
        .map(|r| {
            let used = usage.as_mut().map(|u| u.remove(&WorkspaceId(r.workspace.id)).unwrap_or_default());
            WorkspaceItem::new(r, used)
        })
        .collect();
    Ok(HttpResponse::Ok().json(WorkspacesResponse { workspaces }))
}

/// Workspaces others shared with the caller.
#[utoipa::path(
    get,
    path = "/view-shared-workspaces",
    tag = "workspaces",
    security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "The workspaces shared with the caller, not those it owns", body = WorkspacesResponse),
        (status = 422, description = "`invalid_request`: `usage` is not `true` or `false`", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn shared_workspaces(
    state: web::Data<AppState>,
    user: AuthUser,
    query: web::Query<ListQuery>,
) -> ApiResult<HttpResponse> {
    list_workspaces(&state, user.id, true, query.usage).await
}

/// Every workspace of the caller, owned and shared.
#[utoipa::path(
    get,
    path = "/workspaces",
    tag = "workspaces",
    security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "Every workspace of the caller, owned and shared", body = WorkspacesResponse),
        (status = 422, description = "`invalid_request`: `usage` is not `true` or `false`", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn all_workspaces(
    state: web::Data<AppState>,
    user: AuthUser,
    query: web::Query<ListQuery>,
) -> ApiResult<HttpResponse> {
    list_workspaces(&state, user.id, false, query.usage).await
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MembersQuery {
    /// The workspace whose members to list.
    #[serde(deserialize_with = "wire::id")]
    workspace_id: i64,
}

#[derive(Serialize, ToSchema)]
struct MembersResponse {
    users: Vec<MemberJson>,
    /// Pending invitations (emails without an account yet), each marked `"status": "pending"`.
    invitations: Vec<InvitationJson>,
}

#[utoipa::path(
    get,
    path = "/view-shared-users",
    tag = "workspaces",
    security(("bearer" = [])),
    params(MembersQuery),
    responses(
        (status = 200, description = "The members, the owner first, and the pending invitations, oldest first", body = MembersResponse),
        (status = 404, description = "`workspace_not_found` (also for a workspace the caller is not a member of)", body = ErrorBody),
        (status = 422, description = "`invalid_request`: `workspace_id` is missing or not a number", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn shared_users(
    state: web::Data<AppState>,
    user: AuthUser,
    query: web::Query<MembersQuery>,
) -> ApiResult<HttpResponse> {
    let ws = WorkspaceId(query.workspace_id);
    let (members, pending) = state
        .read(move |conn| {
            authorize(conn, user.id, ws, Action::ViewMembers)?;
            Ok((accounts::members_of(conn, ws)?, invitations::invitations_of(conn, ws)?))
        })
        .await?;
    Ok(HttpResponse::Ok().json(MembersResponse {
        users: members.into_iter().map(MemberJson::from).collect(),
        invitations: pending.into_iter().map(InvitationJson::from).collect(),
    }))
}

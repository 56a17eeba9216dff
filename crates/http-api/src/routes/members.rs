//! Managing the people of a workspace: `PUT`/`DELETE
//! /workspaces/{id}/members/{user_id}` (change a role; remove a member, or
//! leave), `PATCH`/`DELETE /workspaces/{id}` (rename, delete), `DELETE
//! /workspaces/{id}/invitations/{invitation_id}`, and turning pending
//! invitations into memberships at registration ([`accept_invitations`]).
//!
//! Every change is announced on the bus after it commits (`RoleChanged`,
//! `MemberRemoved`, `WorkspaceDeleted` on the user's channel), so the sync
//! nodes end the subscriptions it takes away at once and tell the agents;
//! both daemons read the role from the database on every request, so the
//! next request is refused even if an announcement is lost.

use actix_web::{web, HttpResponse};
use filesync_core::db::{invitations, membership, DbConn, DbError};
use filesync_core::events::UserEvent;
use filesync_core::{Role, UserId, WorkspaceId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::AuthUser;
use crate::authz::{authorize, Action, NOT_FOUND};
use crate::error::{ApiError, ApiResult, ErrorBody, ErrorCode};
use crate::openapi::{AuthErrors, JsonBodyErrors, ServerErrors};
use crate::state::AppState;
use crate::validate;
use crate::wire::MemberJson;

const MEMBER_NOT_FOUND: ApiError =
    ApiError::NotFound { code: ErrorCode::MemberNotFound, message: "this user is not a member of the workspace" };
const INVITATION_NOT_FOUND: ApiError =
    ApiError::NotFound { code: ErrorCode::InvitationNotFound, message: "no such pending invitation in this workspace" };

/// Runs `f` on a pooled connection as a write (serialized on SQLite).
async fn write<T, F>(state: &AppState, f: F) -> ApiResult<T>
where
    T: Send + 'static,
    F: FnOnce(&mut DbConn) -> ApiResult<T> + Send + 'static,
{
    state.db.write(move |conn| Ok(f(conn))).await?
}

/// Announces `event` to `user`'s connections (after the commit; a bus failure is only logged).
async fn tell(state: &AppState, user: UserId, event: &UserEvent) {
    state.bus.publish_user(user, event).await;
}

#[derive(Deserialize, ToSchema)]
pub struct SetRoleRequest {
    /// `editor` or `viewer`.
    #[schema(schema_with = crate::wire::given_role_schema)]
    role: String,
}

#[derive(Serialize, ToSchema)]
struct MemberResponse {
    member: MemberJson,
}

/// `PUT /workspaces/{id}/members/{user_id}` `{role}`: the owner gives a member another role.
#[utoipa::path(
    put,
    path = "/workspaces/{id}/members/{user_id}",
    tag = "workspaces",
    security(("bearer" = [])),
    params(
        ("id" = i64, Path, description = "The workspace", example = 1),
        ("user_id" = i64, Path, description = "The member", example = 2),
    ),
    request_body = SetRoleRequest,
    responses(
        (status = 200, description = "The member with the new role; their agents are told at once", body = MemberResponse),
        (status = 403, description = "`forbidden`: the caller is a member but not the owner", body = ErrorBody),
        (status = 404, description = "`workspace_not_found` (also for a workspace the caller is not a member of) or `member_not_found`", body = ErrorBody),
        (status = 409, description = "`owner_role_fixed`: the owner's own role cannot change", body = ErrorBody),
        (status = 422, description = "`invalid_request` or `invalid_role` (only `editor` or `viewer`)", body = ErrorBody),
        AuthErrors,
        JsonBodyErrors,
        ServerErrors,
    )
)]
pub async fn set_role(
    state: web::Data<AppState>,
    caller: AuthUser,
    ids: web::Path<(i64, i64)>,
    body: web::Json<SetRoleRequest>,
) -> ApiResult<HttpResponse> {
    let (ws, target) = ids.into_inner();
    let (ws, target) = (WorkspaceId(ws), UserId(target));
    let role = validate::member_role(Some(&body.role))?;
    let member = write(&state, move |conn| {
        let (workspace, _) = authorize(conn, caller.id, ws, Action::ManageMembers)?;
        if workspace.owner_id == target.0 {
            return Err(ApiError::Conflict {
                code: ErrorCode::OwnerRoleFixed,
                message: "the owner's role cannot change",
            });
        }
        if !membership::set_role(conn, ws, target, role)? {
            return Err(MEMBER_NOT_FOUND);
        }
        membership::member(conn, ws, target)?.ok_or(MEMBER_NOT_FOUND)
    })
    .await?;
    tracing::info!(workspace.id = ws.0, user.id = target.0, role = %role, by = caller.id.0, "member role changed");
    tell(&state, target, &UserEvent::RoleChanged { workspace_id: ws, role }).await;
    Ok(HttpResponse::Ok().json(MemberResponse { member: member.into() }))
}

/// `DELETE /workspaces/{id}/members/{user_id}`: the owner removes a member, or a member leaves.
#[utoipa::path(
    delete,
    path = "/workspaces/{id}/members/{user_id}",
    tag = "workspaces",
    security(("bearer" = [])),
    params(
        ("id" = i64, Path, description = "The workspace", example = 1),
        ("user_id" = i64, Path, description = "The member; the caller's own id to leave", example = 2),
    ),
    responses(
        (status = 204, description = "Removed (or left); their agents stop syncing the workspace at once"),
        (status = 403, description = "`forbidden`: a member who is not the owner removing someone else", body = ErrorBody),
        (status = 404, description = "`workspace_not_found` (also for a workspace the caller is not a member of) or `member_not_found`", body = ErrorBody),
        (status = 409, description = "`owner_cannot_leave`", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn remove_member(
    state: web::Data<AppState>,
    caller: AuthUser,
    ids: web::Path<(i64, i64)>,
) -> ApiResult<HttpResponse> {
    let (ws, target) = ids.into_inner();
    let (ws, target) = (WorkspaceId(ws), UserId(target));
    let leaving = target == caller.id;
    let action = if leaving { Action::Leave } else { Action::ManageMembers };
    write(&state, move |conn| {
        let (workspace, _) = authorize(conn, caller.id, ws, action)?;
        if workspace.owner_id == target.0 {
            return Err(ApiError::Conflict {
                code: ErrorCode::OwnerCannotLeave,
                message: "the owner cannot leave their own workspace; delete it instead",
            });
        }
        if membership::remove_member(conn, ws, target)? {
            Ok(())
        } else {
            Err(MEMBER_NOT_FOUND)
        }
    })
    .await?;
    tracing::info!(workspace.id = ws.0, user.id = target.0, by = caller.id.0, leaving, "member removed");
    tell(&state, target, &UserEvent::MemberRemoved { workspace_id: ws }).await;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, ToSchema)]
pub struct RenameRequest {
    /// At most 255 bytes, not `.` or `..`, no `/`, `\` or control characters.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^/\\\u0000-\u001F\u007F-\u009F]+$",
        example = "Team 2026"
    )]
    name: String,
}

#[derive(Serialize, ToSchema)]
struct RenamedWorkspace {
    id: i64,
    name: String,
    owner_id: i64,
    #[schema(schema_with = crate::wire::role_schema)]
    role: Role,
}

#[derive(Serialize, ToSchema)]
struct RenameResponse {
    workspace: RenamedWorkspace,
}

/// `PATCH /workspaces/{id}` `{name}`: the owner renames the workspace.
#[utoipa::path(
    patch,
    path = "/workspaces/{id}",
    tag = "workspaces",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The workspace", example = 1)),
    request_body = RenameRequest,
    responses(
        (status = 200, description = "Renamed", body = RenameResponse),
        (status = 403, description = "`forbidden`: the caller is a member but not the owner", body = ErrorBody),
        (status = 404, description = "`workspace_not_found` (also for a workspace the caller is not a member of)", body = ErrorBody),
        (status = 409, description = "`workspace_exists`: the owner has a workspace of that name already", body = ErrorBody),
        (status = 422, description = "`invalid_request` or `invalid_workspace_name`", body = ErrorBody),
        AuthErrors,
        JsonBodyErrors,
        ServerErrors,
    )
)]
pub async fn rename_workspace(
    state: web::Data<AppState>,
    caller: AuthUser,
    ws: web::Path<i64>,
    body: web::Json<RenameRequest>,
) -> ApiResult<HttpResponse> {
    let ws = WorkspaceId(ws.into_inner());
    let name = body.into_inner().name;
    validate::workspace_name(&name)?;
    let new_name = name.clone();
    let owner_id = write(&state, move |conn| {
        let (workspace, _) = authorize(conn, caller.id, ws, Action::ManageWorkspace)?;
        membership::rename_workspace(conn, ws, &new_name).map_err(|e| match e {
            DbError::Conflict(_) => ApiError::Conflict {
                code: ErrorCode::WorkspaceExists,
                message: "you already have a workspace with this name",
            },
            DbError::NotFound => NOT_FOUND,
            other => other.into(),
        })?;
        Ok(workspace.owner_id)
    })
    .await?;
    tracing::info!(workspace.id = ws.0, "workspace renamed");
    Ok(HttpResponse::Ok()
        .json(RenameResponse { workspace: RenamedWorkspace { id: ws.0, name, owner_id, role: Role::Owner } }))
}

/// `DELETE /workspaces/{id}`: the owner deletes the workspace; every member loses access at once.
#[utoipa::path(
    delete,
    path = "/workspaces/{id}",
    tag = "workspaces",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The workspace", example = 1)),
    responses(
        (status = 204, description = "Deleted with its history, members and invitations; every member's agents stop syncing it"),
        (status = 403, description = "`forbidden`: the caller is a member but not the owner", body = ErrorBody),
        (status = 404, description = "`workspace_not_found` (also for a workspace the caller is not a member of)", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn delete_workspace(
    state: web::Data<AppState>,
    caller: AuthUser,
    ws: web::Path<i64>,
) -> ApiResult<HttpResponse> {
    let ws = WorkspaceId(ws.into_inner());
    let members = write(&state, move |conn| {
        authorize(conn, caller.id, ws, Action::ManageWorkspace)?;
        membership::delete_workspace(conn, ws).map_err(|e| match e {
            DbError::NotFound => NOT_FOUND,
            other => other.into(),
        })
    })
    .await?;
    tracing::info!(workspace.id = ws.0, members = members.len(), "workspace deleted");
    let event = UserEvent::WorkspaceDeleted { workspace_id: ws };
    for member in members {
        tell(&state, member, &event).await;
    }
    Ok(HttpResponse::NoContent().finish())
}

/// `DELETE /workspaces/{id}/invitations/{invitation_id}`: the owner cancels a pending invitation.
#[utoipa::path(
    delete,
    path = "/workspaces/{id}/invitations/{invitation_id}",
    tag = "workspaces",
    security(("bearer" = [])),
    params(
        ("id" = i64, Path, description = "The workspace", example = 1),
        ("invitation_id" = i64, Path, description = "The pending invitation", example = 1),
    ),
    responses(
        (status = 204, description = "Cancelled"),
        (status = 403, description = "`forbidden`: the caller is a member but not the owner", body = ErrorBody),
        (status = 404, description = "`workspace_not_found` (also for a workspace the caller is not a member of) or `invitation_not_found`", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn cancel_invitation(
    state: web::Data<AppState>,
    caller: AuthUser,
    ids: web::Path<(i64, i64)>,
) -> ApiResult<HttpResponse> {
    let (ws, invitation) = ids.into_inner();
    let ws = WorkspaceId(ws);
    write(&state, move |conn| {
        authorize(conn, caller.id, ws, Action::ManageMembers)?;
        if invitations::cancel(conn, ws, invitation)? {
            Ok(())
        } else {
            Err(INVITATION_NOT_FOUND)
        }
    })
    .await?;
    tracing::info!(workspace.id = ws.0, invitation.id = invitation, "invitation cancelled");
    Ok(HttpResponse::NoContent().finish())
}

/// The hook `/register` calls once the account exists: every pending invitation of `email`
/// becomes a membership of `user`. A failure is logged, never fails the registration (the
/// invitations stay pending, and the owner can share again).
pub async fn accept_invitations(state: &AppState, user: UserId, email: &str) {
    let lookup = email.to_owned();
    match state.db.write(move |conn| invitations::accept_all(conn, user, &lookup)).await {
        Ok(accepted) => {
            for a in accepted {
                tracing::info!(workspace.id = a.workspace_id.0, user.id = user.0, role = %a.role, "invitation accepted at registration");
            }
        }
        Err(e) => tracing::error!(user.id = user.0, error = %e, "cannot turn invitations into memberships"),
    }
}

//! `GET /workspaces/{id}/events`: the live feed of an open workspace page, as
//! server-sent events fed by the bus.
//!
//! - `event: change` (`data: {"seq": N}`, or `{}` after the bus may have lost
//!   something): the journal moved; the page re-reads what it shows.
//! - `event: members`: someone's membership or role changed for the caller.
//! - `event: gone`: the caller lost access (removed, workspace deleted, signed
//!   out); the stream ends and the page leaves the workspace.
//!
//! Every user event re-checks access with `authz`, so a removed member's page
//! stops receiving changes at once. A stream lives at most [`MAX_LIFETIME`]
//! (the browser reconnects by itself and is authenticated and authorized
//! again), and a comment every [`KEEPALIVE`] keeps proxies from closing it
//! and lets the server notice a browser that went away. Shutdown ends every
//! stream at once, so it never waits for open pages.

use std::convert::Infallible;
use std::time::Duration;

use actix_web::http::header;
use actix_web::web::{self, Bytes};
use actix_web::HttpResponse;

use filesync_bus::{BusMessage, Topic};
use filesync_core::events::WorkspaceEvent;
use filesync_core::WorkspaceId;
use futures::stream::{self, StreamExt};

use crate::auth::AuthUser;
use crate::authz::{authorize, Action};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::openapi::{AuthErrors, ServerErrors};
use crate::state::AppState;

/// How often an idle stream sends a comment.
pub const KEEPALIVE: Duration = Duration::from_secs(15);
/// How long one stream lives before the browser is made to reconnect.
pub const MAX_LIFETIME: Duration = Duration::from_secs(10 * 60);

#[utoipa::path(
    get,
    path = "/workspaces/{id}/events",
    tag = "ui",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The workspace", example = 1)),
    responses(
        (status = 200, description = "Server-sent events: `change` (the journal moved), `members`, `gone` (access lost; the stream ends)",
            content_type = "text/event-stream", body = String),
        (status = 404, description = "`workspace_not_found`", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn events(state: web::Data<AppState>, user: AuthUser, ws: web::Path<i64>) -> ApiResult<HttpResponse> {
    let ws = WorkspaceId(ws.into_inner());
    let uid = user.id;
    state.read(move |conn| authorize(conn, uid, ws, Action::ReadFiles).map(|_| ())).await?;
    // Subscribed before the answer starts: nothing committed from now on is missed.
    let sub = state.bus.subscribe_to(&[Topic::Workspace(ws), Topic::User(uid)]);
    let bus = sub.into_stream().map(Some);
    let ticks = stream::unfold((), |()| async {
        tokio::time::sleep(KEEPALIVE).await;
        Some((None, ()))
    });
    let deadline = tokio::time::sleep(MAX_LIFETIME);
    let merged = stream::select(bus, ticks).take_until(deadline).take_until(state.stopping.clone().cancelled_owned());
    let st = state.clone();
    let body = stream::unfold((Box::pin(merged), false), move |(mut items, ended)| {
        let st = st.clone();
        async move {
            if ended {
                return None;
            }
            let (text, end) = match items.next().await? {
                None => (": keep-alive\n\n".to_owned(), false),
                Some(BusMessage::Workspace { event: WorkspaceEvent::Committed { seq, .. }, .. }) => {
                    (format!("event: change\ndata: {{\"seq\":{seq}}}\n\n"), false)
                }
                // Not watched here: token checks learn revocations in `run`; the page shows
                // committed changes only, not uploads in progress.
                Some(
                    BusMessage::Revoked { .. } | BusMessage::Workspace { event: WorkspaceEvent::Upload { .. }, .. },
                ) => (": keep-alive\n\n".to_owned(), false),
                Some(BusMessage::Resync) => ("event: change\ndata: {}\n\n".to_owned(), false),
                Some(BusMessage::User { .. }) => {
                    // A share, a removal, a role change or a revocation: may the caller still look?
                    match st.read(move |conn| authorize(conn, uid, ws, Action::ReadFiles).map(|_| ())).await {
                        Err(ApiError::NotFound { .. }) => ("event: gone\ndata: {}\n\n".to_owned(), true),
                        // Allowed, or the database did not answer: the page reads again and finds out.
                        _ => ("event: members\ndata: {}\n\n".to_owned(), false),
                    }
                }
            };
            Some((Ok::<_, Infallible>(Bytes::from(text)), (items, end)))
        }
    });
    let opening = stream::once(futures::future::ready(Ok(Bytes::from_static(b"retry: 1000\n: connected\n\n"))));
    tracing::debug!(workspace.id = ws.0, user.id = uid.0, "live events opened");
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache, no-transform"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(opening.chain(body)))
}

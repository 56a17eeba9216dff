//! The route table. Each path serves one method; any other method on it is a
//! JSON 405, and any unknown path a JSON 404 (see [`crate::app`]).
//!
//! Every route here is described in `/openapi.json`: annotate its handler
//! with `#[utoipa::path(...)]` and list it in [`crate::openapi::ApiDoc`]
//! (`tests/openapi.rs` fails otherwise).

pub(crate) mod accounts;
pub(crate) mod activity;
pub(crate) mod devices;
pub(crate) mod file;
pub(crate) mod files;
pub(crate) mod health;
pub(crate) mod members;
pub(crate) mod presence;
pub(crate) mod retention;
pub(crate) mod trash;
pub(crate) mod tree;
pub(crate) mod workspaces;

use actix_web::{web, Resource};

use crate::error::method_not_allowed;
use crate::ui;

fn resource(path: &str) -> Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/register").route(web::post().to(accounts::register)))
        .service(resource("/login").route(web::post().to(accounts::login)))
        .service(resource("/check-token").route(web::get().to(accounts::check_token)))
        .service(resource("/token/refresh").route(web::post().to(accounts::refresh)))
        .service(resource("/logout").route(web::post().to(accounts::logout)))
        .service(resource("/change-password").route(web::post().to(accounts::change_password)))
        .service(resource("/account").route(web::delete().to(accounts::delete_account)))
        .service(resource("/devices").route(web::get().to(devices::list)))
        .service(resource("/devices/{id}").route(web::delete().to(devices::revoke)))
        .service(resource("/create-workspace").route(web::post().to(workspaces::create_workspace)))
        .service(resource("/add-user").route(web::post().to(workspaces::add_user)))
        .service(resource("/view-shared-workspaces").route(web::get().to(workspaces::shared_workspaces)))
        .service(resource("/view-shared-users").route(web::get().to(workspaces::shared_users)))
        .service(resource("/workspaces").route(web::get().to(workspaces::all_workspaces)))
        .service(
            resource("/workspaces/{id}")
                .route(web::patch().to(members::rename_workspace))
                .route(web::delete().to(members::delete_workspace)),
        )
        .service(
            resource("/workspaces/{id}/members/{user_id}")
                .route(web::put().to(members::set_role))
                .route(web::delete().to(members::remove_member)),
        )
        .service(
            resource("/workspaces/{id}/invitations/{invitation_id}")
                .route(web::delete().to(members::cancel_invitation)),
        )
        .service(resource("/download-workspace").route(web::post().to(files::download_workspace)))
        .service(resource("/workspaces/{id}/files").route(web::get().to(files::list_files)))
        .service(resource("/workspaces/{id}/history").route(web::get().to(files::history)))
        .service(resource("/workspaces/{id}/restore").route(web::post().to(files::restore)))
        .service(resource("/workspaces/{id}/trash").route(web::get().to(trash::list_trash)))
        .service(resource("/workspaces/{id}/trash/restore").route(web::post().to(trash::restore_from_trash)))
        .service(
            resource("/workspaces/{id}/retention")
                .route(web::get().to(retention::get_retention))
                .route(web::put().to(retention::set_retention)),
        )
        .service(
            resource("/workspaces/{id}/file")
                .route(web::get().to(file::download))
                .route(web::put().to(file::upload))
                .route(web::delete().to(tree::delete)),
        )
        .service(resource("/workspaces/{id}/move").route(web::post().to(tree::move_path)))
        .service(resource("/workspaces/{id}/mkdir").route(web::post().to(tree::mkdir)))
        .service(resource("/workspaces/{id}/activity").route(web::get().to(activity::activity)))
        .service(resource("/workspaces/{id}/presence").route(web::get().to(presence::presence)))
        .service(resource("/workspaces/{id}/events").route(web::get().to(ui::events::events)))
        .service(resource("/session/refresh").route(web::post().to(ui::session::refresh)))
        .service(resource("/session/password").route(web::post().to(ui::session::change_password)))
        .service(
            resource("/session")
                .route(web::get().to(ui::session::current))
                .route(web::post().to(ui::session::log_in))
                .route(web::delete().to(ui::session::log_out)),
        )
        .service(resource("/healthz").route(web::get().to(health::healthz)))
        .service(resource("/readyz").route(web::get().to(health::readyz)))
        .service(resource("/metrics").route(web::get().to(health::metrics)))
        .service(resource("/openapi.json").route(web::get().to(crate::openapi::openapi_json)));
}

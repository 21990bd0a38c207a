//! The OpenAPI document, generated from the handlers' annotations and the types they use.

use axum::response::IntoResponse;
use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{accounts, health, kinds, live, session, tasks, webhook_secrets};

#[derive(OpenApi)]
#[openapi(
    info(title = "FlowForge API", description = "Tasks processed by a worker fleet on a PostgreSQL queue. \
        Every path under /tasks is also served under /api/v1/tasks."),
    paths(
        tasks::create_task, tasks::create_tasks, tasks::list_tasks, tasks::get_task, tasks::edit_task,
        tasks::delete_task, tasks::cancel_task, tasks::retry_task, kinds::list_kinds,
        accounts::me, accounts::create_user, accounts::create_token, accounts::list_tokens, accounts::revoke_token,
        session::sign_in, session::current, session::sign_out, live::events, live::ops_metrics,
        webhook_secrets::rotate_secret, webhook_secrets::list_secrets,
        health::health, health::ready, health::metrics,
    ),
    modifiers(&BearerAuth),
    tags((name = "tasks"), (name = "accounts"), (name = "session", description = "The web UI's cookie session"),
         (name = "live", description = "Live task changes and operations metrics"),
         (name = "webhooks", description = "The secret that signs your webhook deliveries"), (name = "probes"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub async fn document() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}

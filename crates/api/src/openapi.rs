//! The OpenAPI document: what every route declares (its annotation, collected by the
//! routers in `routes`), plus the title, the bearer scheme and the tags here.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "FlowForge API", description = "Tasks processed by a worker fleet on a PostgreSQL queue. \
        Every path under /tasks is also served under /api/v1/tasks."),
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

/// The document, serialised once at start.
#[derive(Clone)]
pub struct Document(Arc<String>);

impl Document {
    pub fn new(document: &utoipa::openapi::OpenApi) -> Document {
        Document(Arc::new(document.to_json().expect("an OpenAPI document serialises")))
    }
}

pub async fn serve(State(document): State<Document>) -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], document.0.as_str().to_owned())
}

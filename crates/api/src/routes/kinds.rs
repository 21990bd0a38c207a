//! `/api/v1/kinds`: the task kinds this deployment runs. The web UI builds its kind
//! lists and example payloads from it; clients can validate payloads before sending.

use axum::extract::State;
use axum::Json;
use flowforge_kinds::KindDescription;
use serde::Serialize;

use crate::routes::ErrorBody;
use crate::state::AppState;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_kinds))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct KindListEnvelope {
    pub success: bool,
    pub data: Vec<KindDescription>,
}

/// The task kinds this deployment runs, each with its payload's JSON Schema and an
/// example. A task of any other kind, or whose payload does not fit, is refused with 422.
#[utoipa::path(get, path = "/kinds", tag = "tasks",
    responses((status = 200, body = KindListEnvelope), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_kinds(State(state): State<AppState>) -> Json<KindListEnvelope> {
    Json(KindListEnvelope { success: true, data: state.kinds.describe() })
}

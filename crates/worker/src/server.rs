//! The worker's side HTTP server: metrics and probes.

use axum::Router;
use flowforge_platform::http::{database_ready, Probes};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// `/ready` fails once `shutdown` is cancelled (the worker is draining) or while the
/// database does not answer.
pub(crate) fn router(pool: PgPool, metrics: prometheus::Registry, shutdown: CancellationToken) -> Router {
    Probes::new().metrics(metrics).ready(shutdown, database_ready(pool)).router()
}

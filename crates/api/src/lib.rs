//! FlowForge's task API: tasks over the queue engine, with auth, rate limits, audit and a
//! Redis cache that is never required for correct answers.

pub mod accounts;
pub mod admission;
pub mod audit;
pub mod cache;
pub mod client_addr;
pub mod config;
pub mod error;
pub mod events;
pub mod extract;
pub mod idempotency;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod ops;
pub mod rate_limit;
pub mod redis;
pub mod requests;
pub mod routes;
pub mod startup;
pub mod state;

pub use config::ApiSettings;
pub use startup::Application;

/// The api's schema, applied after the queue engine's ([`flowforge_queue::MIGRATOR`]).
pub static MIGRATOR: sqlx::migrate::Migrator = {
    let mut m = sqlx::migrate!("./migrations");
    m.ignore_missing = true;
    m
};

/// Applies every migration FlowForge has, in order.
pub async fn migrate(db: &sqlx::PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    flowforge_queue::MIGRATOR.run(db).await?;
    MIGRATOR.run(db).await?;
    flowforge_webhooks::MIGRATOR.run(db).await
}

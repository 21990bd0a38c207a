//! FlowForge's task API: tasks over the queue engine, with auth, rate limits, audit and a
//! Redis cache that is never required for correct answers.

pub mod admission;
pub mod audit;
pub mod cache;
pub mod client_addr;
pub mod config;
pub mod creations;
pub mod error;
pub mod events;
pub mod extract;
pub mod idempotency;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod ops;
pub mod quota;
pub mod rate_limit;
pub mod redis;
pub mod requests;
pub mod routes;
pub mod startup;
pub mod state;

pub use config::ApiSettings;
/// Users, tokens and sessions live in their own crate, shared with the cli.
pub use flowforge_accounts as accounts;
pub use startup::Application;

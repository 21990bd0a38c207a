//! FlowForge's worker service: the built-in task handlers on the queue engine, a side
//! HTTP server for metrics and probes, and graceful shutdown. `src/main.rs` is the whole
//! of running it: `WorkerSettings::from_env`, `WorkerApp::build`, then
//! `run_until_stopped` with a token cancelled on SIGTERM.

pub mod config;
pub mod handlers;
mod server;
mod startup;

pub use config::{HandlerSettings, WebhookSettings, WorkerSettings};
pub use handlers::registry;
pub use startup::WorkerApp;

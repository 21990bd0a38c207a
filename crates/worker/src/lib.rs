//! FlowForge's worker service: the built-in task handlers on the queue engine, a side
//! HTTP server for metrics and probes, and graceful shutdown.
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! use flowforge_worker::{WorkerApp, WorkerSettings};
//! let settings = WorkerSettings::from_env()?;
//! let app = WorkerApp::build(settings).await?;
//! app.run_until_stopped(flowforge_platform::shutdown::token_on_signal()).await
//! # }
//! ```

pub mod config;
pub mod handlers;
mod server;
mod startup;

pub use config::{HandlerSettings, WebhookSettings, WorkerSettings};
pub use handlers::registry;
pub use startup::WorkerApp;

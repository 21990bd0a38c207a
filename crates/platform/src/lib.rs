//! Plumbing shared by the FlowForge services (`api`, `worker`) and the `flowforge` CLI:
//! layered configuration with secrets from files, JSON telemetry, the PostgreSQL pool,
//! Prometheus rendering, probes, serving with a bounded drain, and the shutdown signal.
//! Written once here, never copied.

pub mod allocator;
pub mod config;
pub mod db;
pub mod http;
pub mod metrics;
pub mod probe;
pub mod service;
pub mod shutdown;
pub mod telemetry;
pub mod tls;

pub use config::{ConfigError, Profile, Secret, Source};

/// Every FlowForge binary allocates through mimalloc: glibc's allocator serialised the
/// api's request threads on its arena locks (about a quarter more requests per second
/// with mimalloc, measured with wrk against one replica). Tuned in [`allocator`].
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

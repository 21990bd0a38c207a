//! The engine's Prometheus metrics, with the `prometheus` feature; without it
//! [`QueueMetrics`] records nothing and the engine pulls in no metrics library.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::Queue;

/// What became of an attempt, as counted.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ended {
    Completed,
    Failed,
    Retried,
    Released,
    Cancelled,
    Running,
}

impl Ended {
    #[cfg_attr(not(feature = "prometheus"), allow(dead_code))]
    fn label(self) -> &'static str {
        match self {
            Ended::Completed => "completed",
            Ended::Failed => "failed",
            Ended::Retried => "retried",
            Ended::Released => "released",
            Ended::Cancelled => "cancelled",
            Ended::Running => "running",
        }
    }
}

#[cfg(feature = "prometheus")]
pub use exported::{DepthGauges, QueueMetrics};
#[cfg(not(feature = "prometheus"))]
pub use silent::QueueMetrics;

#[cfg(not(feature = "prometheus"))]
mod silent {
    use super::*;

    /// Records nothing: built without the `prometheus` feature.
    #[derive(Clone, Default)]
    pub struct QueueMetrics;

    impl QueueMetrics {
        pub fn unregistered() -> Self {
            QueueMetrics
        }

        pub(crate) fn export_kinds(&self, _kinds: &[&str]) {}
        pub(crate) fn outcome(&self, _kind: &str, _ended: Ended) {}
        pub(crate) fn claimed(&self, _n: usize) {}
        pub(crate) fn started(&self) {}
        pub(crate) fn finished(&self) {}
        pub(crate) fn start_delay(&self, _delay: Duration) {}
        pub(crate) fn processing(&self, _kind: &str, _took: Duration) {}
        pub(crate) fn panicked(&self) {}
        pub(crate) fn stale_outcome(&self) {}
        pub(crate) fn lease_expiries(&self, _n: usize) {}
        pub(crate) async fn refresh_depth(self, _queue: Queue, _interval: Duration, _close: CancellationToken) {}
    }
}

#[cfg(feature = "prometheus")]
mod exported {
    use prometheus::{
        Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    };

    use super::*;
    use crate::store::QueueDepth;

    /// The queue engine's Prometheus metrics, registered into the service's registry.
    #[derive(Clone)]
    pub struct QueueMetrics {
        /// Tasks whose outcome was recorded, by kind and final outcome of the attempt
        /// (`completed`, `failed`, `retried`, `cancelled`).
        pub outcomes: IntCounterVec,
        pub completed: IntCounterVec,
        pub failed: IntCounterVec,
        pub retries: IntCounterVec,
        pub processing: HistogramVec,
        pub start_delay: Histogram,
        pub claimed: IntCounter,
        pub claim_batches: Histogram,
        pub lease_expiries: IntCounter,
        pub stale_outcomes: IntCounter,
        pub panics: IntCounter,
        pub in_flight: IntGauge,
        pub depth: DepthGauges,
    }

    /// How much work is waiting, read from the database: exported by every worker and api
    /// replica, so the backlog stays visible when no worker runs.
    #[derive(Clone)]
    pub struct DepthGauges {
        pub queue_depth: IntGauge,
        pub tasks_by_status: IntGaugeVec,
    }

    impl DepthGauges {
        pub fn new(registry: &Registry) -> prometheus::Result<Self> {
            let g = DepthGauges {
                queue_depth: IntGauge::new("queue_depth", "Pending tasks that are due now")?,
                tasks_by_status: IntGaugeVec::new(
                    Opts::new("queue_tasks", "Tasks waiting or running, by state (scheduled = pending, not yet due)"),
                    &["state"],
                )?,
            };
            registry.register(Box::new(g.queue_depth.clone()))?;
            registry.register(Box::new(g.tasks_by_status.clone()))?;
            Ok(g)
        }

        pub fn set(&self, d: &QueueDepth) {
            self.queue_depth.set(d.ready);
            self.tasks_by_status.with_label_values(&["ready"]).set(d.ready);
            self.tasks_by_status.with_label_values(&["scheduled"]).set(d.scheduled);
            self.tasks_by_status.with_label_values(&["running"]).set(d.running);
        }

        /// Refreshes the gauges every `interval` until `close` is cancelled.
        pub async fn refresh(self, queue: Queue, interval: Duration, close: CancellationToken) {
            loop {
                match queue.depth().await {
                    Ok(d) => self.set(&d),
                    Err(e) => tracing::debug!(error = %e, "queue depth unavailable"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = close.cancelled() => return,
                }
            }
        }
    }

    impl QueueMetrics {
        pub fn new(registry: &Registry) -> prometheus::Result<Self> {
            let m = QueueMetrics {
                outcomes: IntCounterVec::new(
                    Opts::new("task_outcomes_total", "Attempt outcomes recorded, by kind and outcome"),
                    &["kind", "outcome"],
                )?,
                completed: IntCounterVec::new(
                    Opts::new("tasks_completed_total", "Tasks completed successfully"),
                    &["kind"],
                )?,
                failed: IntCounterVec::new(
                    Opts::new("tasks_failed_total", "Tasks that failed for good (dead letters)"),
                    &["kind"],
                )?,
                retries: IntCounterVec::new(
                    Opts::new("task_retries_total", "Failed attempts scheduled for retry"),
                    &["kind"],
                )?,
                processing: HistogramVec::new(
                    HistogramOpts::new("task_processing_duration_seconds", "Handler run time per attempt").buckets(
                        vec![0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0],
                    ),
                    &["kind"],
                )?,
                start_delay: Histogram::with_opts(
                    HistogramOpts::new("task_start_delay_seconds", "From due time (run_at) to handler start").buckets(
                        vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0],
                    ),
                )?,
                claimed: IntCounter::new("tasks_claimed_total", "Tasks claimed by this worker")?,
                claim_batches: Histogram::with_opts(
                    HistogramOpts::new("task_claim_batch_size", "Tasks per claim query")
                        .buckets(vec![1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0]),
                )?,
                lease_expiries: IntCounter::new("task_lease_expiries_total", "Expired leases rescued by this worker")?,
                stale_outcomes: IntCounter::new(
                    "task_stale_outcomes_total",
                    "Outcomes dropped because the lease had been lost (fencing at work)",
                )?,
                panics: IntCounter::new("task_handler_panics_total", "Handler panics caught")?,
                in_flight: IntGauge::new("tasks_in_flight", "Tasks running in this worker now")?,
                depth: DepthGauges::new(registry)?,
            };
            registry.register(Box::new(m.outcomes.clone()))?;
            registry.register(Box::new(m.completed.clone()))?;
            registry.register(Box::new(m.failed.clone()))?;
            registry.register(Box::new(m.retries.clone()))?;
            registry.register(Box::new(m.processing.clone()))?;
            registry.register(Box::new(m.start_delay.clone()))?;
            registry.register(Box::new(m.claimed.clone()))?;
            registry.register(Box::new(m.claim_batches.clone()))?;
            registry.register(Box::new(m.lease_expiries.clone()))?;
            registry.register(Box::new(m.stale_outcomes.clone()))?;
            registry.register(Box::new(m.panics.clone()))?;
            registry.register(Box::new(m.in_flight.clone()))?;
            Ok(m)
        }

        /// Metrics registered nowhere, for engine users who do not export them.
        pub fn unregistered() -> Self {
            Self::new(&Registry::new()).expect("fresh registry accepts every metric")
        }

        /// Exports every kind's counters from the start (as 0), so rates and alerts have data.
        pub(crate) fn export_kinds(&self, kinds: &[&str]) {
            for kind in kinds {
                self.completed.with_label_values(&[kind]);
                self.failed.with_label_values(&[kind]);
                self.retries.with_label_values(&[kind]);
                self.processing.with_label_values(&[kind]);
            }
        }

        pub(crate) fn outcome(&self, kind: &str, ended: Ended) {
            match ended {
                Ended::Completed => self.completed.with_label_values(&[kind]).inc(),
                Ended::Failed => self.failed.with_label_values(&[kind]).inc(),
                Ended::Retried => self.retries.with_label_values(&[kind]).inc(),
                Ended::Released | Ended::Cancelled | Ended::Running => {}
            }
            self.outcomes.with_label_values(&[kind, ended.label()]).inc();
        }

        pub(crate) fn claimed(&self, n: usize) {
            self.claimed.inc_by(n as u64);
            self.claim_batches.observe(n as f64);
        }

        pub(crate) fn started(&self) {
            self.in_flight.inc();
        }

        pub(crate) fn finished(&self) {
            self.in_flight.dec();
        }

        pub(crate) fn start_delay(&self, delay: Duration) {
            self.start_delay.observe(delay.as_secs_f64());
        }

        pub(crate) fn processing(&self, kind: &str, took: Duration) {
            self.processing.with_label_values(&[kind]).observe(took.as_secs_f64());
        }

        pub(crate) fn panicked(&self) {
            self.panics.inc();
        }

        pub(crate) fn stale_outcome(&self) {
            self.stale_outcomes.inc();
        }

        pub(crate) fn lease_expiries(&self, n: usize) {
            self.lease_expiries.inc_by(n as u64);
        }

        pub(crate) async fn refresh_depth(self, queue: Queue, interval: Duration, close: CancellationToken) {
            self.depth.refresh(queue, interval, close).await
        }
    }
}

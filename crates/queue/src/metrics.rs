use std::time::Duration;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use tokio_util::sync::CancellationToken;

use crate::store::{Queue, QueueDepth};

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
                HistogramOpts::new("task_processing_duration_seconds", "Handler run time per attempt").buckets(vec![
                    0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                ]),
                &["kind"],
            )?,
            start_delay: Histogram::with_opts(
                HistogramOpts::new("task_start_delay_seconds", "From due time (run_at) to handler start")
                    .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0]),
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
}

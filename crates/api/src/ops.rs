//! The operations view's numbers, read from the platform's own Prometheus: the same
//! series the dashboards and alerts use, so the UI never tells a different story.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::ApiError;

const TIMEOUT: Duration = Duration::from_secs(3);

/// Range queries: name in the response → PromQL.
const SERIES: &[(&str, &str)] = &[
    ("queue_depth", "max(queue_depth)"),
    ("throughput", "sum(rate(tasks_completed_total[1m]))"),
    ("failure_rate", "sum(rate(tasks_failed_total[1m]))"),
    ("retry_rate", "sum(rate(task_retries_total[1m]))"),
    ("api_request_rate", r#"sum(rate(http_requests_total{job="api"}[1m]))"#),
    (
        "api_error_ratio",
        r#"1 - sum(rate(http_requests_total{job="api",status!~"5.."}[1m])) / sum(rate(http_requests_total{job="api"}[1m]))"#,
    ),
    (
        "api_latency_p95",
        r#"histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{job="api"}[1m])))"#,
    ),
    ("task_duration_p95", "histogram_quantile(0.95, sum by (le) (rate(task_processing_duration_seconds_bucket[1m])))"),
];

const WORKERS_UP: &str = r#"up{job="worker"}"#;
const WORKERS_IN_FLIGHT: &str = r#"tasks_in_flight{job="worker"}"#;
const WORKERS_COMPLETED: &str = r#"sum by (instance) (rate(tasks_completed_total{job="worker"}[1m]))"#;

#[derive(Debug, Serialize)]
pub struct OpsMetrics {
    pub step_seconds: u64,
    /// `[unix seconds, value]` points; a value that is not a number is `null`.
    pub series: BTreeMap<&'static str, Vec<(f64, f64)>>,
    pub workers: Vec<WorkerHealth>,
}

#[derive(Debug, Serialize)]
pub struct WorkerHealth {
    pub instance: String,
    pub up: bool,
    pub in_flight: f64,
    pub completed_per_second: f64,
}

#[derive(Deserialize)]
struct PromResponse {
    data: PromData,
}

#[derive(Deserialize)]
struct PromData {
    result: Vec<PromSeries>,
}

#[derive(Deserialize)]
struct PromSeries {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    #[serde(default)]
    values: Vec<(f64, String)>,
    value: Option<(f64, String)>,
}

#[derive(Clone)]
pub struct Prometheus {
    client: reqwest::Client,
    /// Base URL up to and including any route prefix, e.g. `http://prometheus:9090/prometheus`.
    base: Option<String>,
}

const NOT_CONFIGURED: ApiError =
    ApiError::MetricsUnavailable("the operations view needs Prometheus: set FLOWFORGE_PROMETHEUS_URL");
const NOT_ANSWERING: ApiError =
    ApiError::MetricsUnavailable("Prometheus is not answering; the operations view will retry");

impl Prometheus {
    pub fn new(base: Option<&str>) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder().timeout(TIMEOUT).build()?;
        Ok(Prometheus { client, base: base.map(|b| b.trim_end_matches('/').to_owned()) })
    }

    async fn query(&self, path: &str, params: &[(&str, &str)]) -> Result<Vec<PromSeries>, ApiError> {
        let base = self.base.as_deref().ok_or(NOT_CONFIGURED)?;
        let response = self.client.get(format!("{base}/api/v1/{path}")).query(params).send().await;
        let body = match response.and_then(|r| r.error_for_status()) {
            Ok(r) => r.json::<PromResponse>().await,
            Err(e) => Err(e),
        };
        body.map(|b| b.data.result).map_err(|e| {
            tracing::warn!(error = %e, "Prometheus query failed");
            NOT_ANSWERING
        })
    }

    /// The last `minutes` of every series, and each worker's health now.
    pub async fn snapshot(&self, minutes: u64) -> Result<OpsMetrics, ApiError> {
        let end = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let step = minutes.max(5); // seconds: 60 points per range
        let (start, end_text, step_text) = ((end - minutes * 60).to_string(), end.to_string(), step.to_string());
        let ranges = futures::future::try_join_all(SERIES.iter().map(|(_, query)| {
            let params = [("query", *query), ("start", &start), ("end", &end_text), ("step", &step_text)];
            async move { self.query("query_range", &params).await }
        }));
        let instant = |query| async move { self.query("query", &[("query", query)]).await };
        let (ranges, up, in_flight, completed) =
            tokio::try_join!(ranges, instant(WORKERS_UP), instant(WORKERS_IN_FLIGHT), instant(WORKERS_COMPLETED))?;
        let series = SERIES
            .iter()
            .zip(ranges)
            .map(|((name, _), result)| {
                let points = result
                    .into_iter()
                    .next()
                    .map(|s| s.values.into_iter().map(|(t, v)| (t, v.parse().unwrap_or(f64::NAN))).collect())
                    .unwrap_or_default();
                (*name, points)
            })
            .collect();
        let by_instance = |result: Vec<PromSeries>| -> BTreeMap<String, f64> {
            result
                .into_iter()
                .filter_map(|s| {
                    let value = s.value?.1.parse().ok()?;
                    Some((s.metric.get("instance")?.clone(), value))
                })
                .collect()
        };
        let (in_flight, completed) = (by_instance(in_flight), by_instance(completed));
        let workers = by_instance(up)
            .into_iter()
            .map(|(instance, up)| WorkerHealth {
                up: up == 1.0,
                in_flight: in_flight.get(&instance).copied().unwrap_or(0.0),
                completed_per_second: completed.get(&instance).copied().unwrap_or(0.0),
                instance,
            })
            .collect();
        Ok(OpsMetrics { step_seconds: step, series, workers })
    }
}

//! `flowforge alert-receiver`: the stack's own Alertmanager webhook receiver. It keeps the
//! last notifications in memory (GET /alerts), and logs each one as a JSON line, so an
//! operator — and the system test — can see exactly what Alertmanager sent. A connected
//! deployment routes to a pager or chat webhook instead (or as well).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use flowforge_platform::http::Listener;
use flowforge_platform::http::{Drain, Probes};
use serde_json::Value;

/// Enough for days of grouped notifications; older ones are dropped first.
const KEPT: usize = 1000;

#[derive(clap::Args)]
pub struct ReceiverArgs {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:9095")]
    pub listen: SocketAddr,
}

#[derive(Clone, Default)]
struct Received(Arc<Mutex<VecDeque<Value>>>);

pub fn router() -> Router {
    Router::new()
        .route("/alerts", post(receive).get(list))
        .with_state(Received::default())
        .merge(Probes::new().router())
}

pub async fn run(args: ReceiverArgs) -> anyhow::Result<()> {
    let listener = Listener::bind(args.listen, None).await?;
    tracing::info!(addr = %listener.local_addr(), "alert receiver listening");
    let drain = Drain { deadline: Duration::from_secs(5), ..Drain::default() };
    flowforge_platform::http::serve(listener, router(), flowforge_platform::shutdown::signal(), drain).await?;
    Ok(())
}

/// Takes Alertmanager's webhook payload (version 4): `status`, `groupLabels`, `alerts[]`.
async fn receive(State(received): State<Received>, Json(notification): Json<Value>) -> StatusCode {
    let Some(alerts) = notification.get("alerts").and_then(Value::as_array) else {
        return StatusCode::UNPROCESSABLE_ENTITY;
    };
    for alert in alerts {
        // (Computed outside the macro, whose expansion shadows `Value`.)
        let status = alert.get("status").and_then(Value::as_str).unwrap_or("?");
        let alertname = alert.pointer("/labels/alertname").and_then(Value::as_str).unwrap_or("?");
        let labels = alert.get("labels").map(Value::to_string).unwrap_or_default();
        tracing::info!(status, alertname, labels, "alert notification");
    }
    let mut kept = received.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if kept.len() == KEPT {
        kept.pop_front();
    }
    kept.push_back(notification);
    StatusCode::OK
}

async fn list(State(received): State<Received>) -> Json<Vec<Value>> {
    let kept = received.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    Json(kept.iter().cloned().collect())
}

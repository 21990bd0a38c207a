//! What the web UI watches: `/api/v1/events` (server-sent task changes) and
//! `/api/v1/ops/metrics` (the operations view, admins only).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::{stream, Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use crate::accounts::Caller;
use crate::error::{ApiError, ApiResult};
use crate::events::TaskEvent;
use crate::extract::ApiQuery;
use crate::state::AppState;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(events)).routes(routes!(ops_metrics))
}

/// Below the proxy's idle timeout, so a quiet stream stays open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

fn sse_event(event: &TaskEvent) -> Event {
    match event {
        TaskEvent::Changed(change) => Event::default().event("task").data(change.json.as_ref()),
        TaskEvent::Deleted { id, .. } => Event::default().event("deleted").data(json!({ "id": id }).to_string()),
        TaskEvent::Resync => Event::default().event("resync").data("{}"),
    }
}

fn visible(caller: &Caller, event: &TaskEvent) -> bool {
    match event {
        TaskEvent::Changed(change) => caller.can_see(change.owner_id),
        TaskEvent::Deleted { owner_id, .. } => caller.can_see(*owner_id),
        TaskEvent::Resync => true,
    }
}

/// Open event streams, per replica and per user: each holds a connection and a feed
/// subscription, so their number is capped.
#[derive(Debug, Default)]
pub struct StreamSlots {
    open: Mutex<HashMap<i64, usize>>,
}

/// One open stream: counted (and in the `event_streams` gauge) for as long as it lives.
struct Slot {
    state: AppState,
    user_id: i64,
}

impl StreamSlots {
    fn take(&self, state: &AppState, user_id: i64) -> ApiResult<Slot> {
        let mut open = self.open.lock().expect("stream slots");
        if open.values().sum::<usize>() >= state.settings.max_streams {
            return Err(ApiError::TooManyStreams("this replica has as many event streams open as it allows"));
        }
        let mine = open.entry(user_id).or_default();
        if *mine >= state.settings.max_streams_per_user {
            return Err(ApiError::TooManyStreams("you have as many event streams open as allowed; close one"));
        }
        *mine += 1;
        state.metrics.event_streams.inc();
        Ok(Slot { state: state.clone(), user_id })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.state.streams.open.lock().expect("stream slots");
        if let Some(n) = open.get_mut(&self.user_id) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.user_id);
            }
        }
        self.state.metrics.event_streams.dec();
    }
}

/// Server-sent events: `ready` once, then `task` (the task as it is now, without its
/// payload, result and errors), `deleted` and
/// `resync` (reload: changes were missed) for the tasks the caller may see. Ends when the
/// replica starts draining, so the browser reconnects to another one.
/// At most `FLOWFORGE_MAX_STREAMS_PER_USER` per user and `FLOWFORGE_MAX_STREAMS` per
/// replica are open at once (429 `too_many_streams` past either).
#[utoipa::path(get, path = "/events", tag = "live",
    responses((status = 200, description = "text/event-stream of task changes"),
              (status = 429, body = crate::routes::ErrorBody)),
    security(("bearer" = [])))]
pub async fn events(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let open = state.streams.take(&state, caller.user_id)?;
    let ready = stream::once(async { Event::default().event("ready").data("{}") });
    let changes = stream::unfold((state.feed.subscribe(), caller, open), |(mut rx, caller, open)| async move {
        let events: Vec<Event> = match rx.recv().await {
            Ok(batch) => batch.iter().filter(|e| visible(&caller, e)).map(sse_event).collect(),
            Err(RecvError::Lagged(_)) => vec![sse_event(&TaskEvent::Resync)],
            Err(RecvError::Closed) => return None,
        };
        Some((stream::iter(events), (rx, caller, open)))
    })
    .flatten();
    let until_drain = state.draining_token().cancelled_owned();
    Ok(Sse::new(ready.chain(changes).map(Ok).take_until(until_drain)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OpsParams {
    /// How far back the series go, 1..=360 minutes (default 15).
    minutes: Option<u64>,
}

impl OpsParams {
    /// How far back to look, or a 400 when out of range.
    fn minutes(&self) -> ApiResult<u64> {
        let minutes = self.minutes.unwrap_or(15);
        if !(1..=360).contains(&minutes) {
            return Err(ApiError::bad_request("invalid_minutes", "minutes must be between 1 and 360"));
        }
        Ok(minutes)
    }
}

/// Queue depth, throughput, failures, API errors and latency over time, and each
/// worker's health, from Prometheus.
#[utoipa::path(get, path = "/ops/metrics", tag = "live", params(OpsParams),
    responses((status = 200, description = "Series and worker health"), (status = 403, body = crate::routes::ErrorBody),
              (status = 503, body = crate::routes::ErrorBody)),
    security(("bearer" = [])))]
pub async fn ops_metrics(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(params): ApiQuery<OpsParams>,
) -> ApiResult<Response> {
    if !caller.is_admin() {
        return Err(ApiError::Forbidden("the operations view is for admins"));
    }
    let metrics = state.prometheus.snapshot(params.minutes()?).await?;
    Ok(Json(json!({ "success": true, "data": metrics })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::query_tests::{extract, query_string, refusal, Refusal, RAW_QUERY};
    use axum::http::StatusCode;
    use proptest::prelude::*;

    /// The minutes the operations view would read, or the refusal a client reads.
    fn ops_outcome(query: &str) -> Option<Result<u64, Refusal>> {
        extract::<OpsParams>(query).map(|r| r.and_then(|p| p.minutes()).map_err(refusal))
    }

    fn check_ops_outcome(outcome: Result<u64, Refusal>) -> Result<(), TestCaseError> {
        match outcome {
            Ok(minutes) => prop_assert!((1..=360).contains(&minutes)),
            Err((status, code, message)) => {
                prop_assert_eq!(status, StatusCode::BAD_REQUEST);
                prop_assert!(code == "invalid_query" || code == "invalid_minutes", "{}", code);
                prop_assert!(!message.is_empty());
            }
        }
        Ok(())
    }

    #[test]
    fn ops_query_strings_are_read_as_a_client_means_them() {
        assert_eq!(ops_outcome("").unwrap().unwrap(), 15);
        assert_eq!(ops_outcome("minutes=360").unwrap().unwrap(), 360);
        for (query, code) in [
            ("minutes=0", "invalid_minutes"),
            ("minutes=361", "invalid_minutes"),
            ("minutes=-1", "invalid_query"),
            ("minutes=", "invalid_query"),
            ("minutes=1&minutes=2", "invalid_query"),
            ("hours=1", "invalid_query"),
        ] {
            let (status, got, _) = ops_outcome(query).unwrap().unwrap_err();
            assert_eq!((status, got.as_str()), (StatusCode::BAD_REQUEST, code), "{query}");
        }
    }

    proptest::proptest! {
        /// Any query string on `/ops/metrics`: a range Prometheus can be asked for, or a 400.
        #[test]
        fn any_ops_query_string_is_parsed_or_refused(query in RAW_QUERY) {
            if let Some(outcome) = ops_outcome(&query) {
                check_ops_outcome(outcome)?;
            }
        }

        /// Any value for `minutes` (or another key): taken only as a number in 1..=360.
        #[test]
        fn any_ops_minutes_value_is_parsed_or_refused(
            key in prop_oneof![3 => Just("minutes".to_owned()), 1 => ".{0,8}"],
            value in prop_oneof![".{0,20}", proptest::num::i64::ANY.prop_map(|n| n.to_string()),
                                 (0u64..400).prop_map(|n| n.to_string())],
        ) {
            let outcome = ops_outcome(&query_string(&[(key.clone(), value.clone())])).unwrap();
            if let Ok(minutes) = &outcome {
                prop_assert!(key == "minutes" && value.parse::<u64>() == Ok(*minutes));
            }
            check_ops_outcome(outcome)?;
        }
    }
}

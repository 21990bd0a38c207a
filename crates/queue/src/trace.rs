//! W3C trace continuity: a request's trace id travels with the tasks it creates, so the
//! spans of the api request and of every attempt belong to one trace when spans are
//! exported (OTLP, see `flowforge_platform::telemetry`). Without an OpenTelemetry layer
//! installed this does nothing.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Makes `span` part of the trace `trace_id` (32 lowercase hex digits), as the child of a
/// remote parent. Only the trace id is kept with a task, so the parent span id is derived
/// from it (any non-zero id is valid for a parent that is not exported from here).
pub fn continue_trace(span: &tracing::Span, trace_id: &str) {
    let Ok(trace) = TraceId::from_hex(trace_id) else { return };
    if trace == TraceId::INVALID || trace_id.len() != 32 {
        return;
    }
    let Ok(parent) = SpanId::from_hex(&trace_id[16..]) else { return };
    let parent = if parent == SpanId::INVALID { SpanId::from_bytes([0, 0, 0, 0, 0, 0, 0, 1]) } else { parent };
    let context = SpanContext::new(trace, parent, TraceFlags::SAMPLED, true, TraceState::default());
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(context));
}

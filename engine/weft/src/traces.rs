//! OpenTelemetry traces, off unless `--otlp-endpoint` is set: one span per run and one per step
//! attempt, exported over OTLP (HTTP/protobuf) by a batch processor on its own thread.
//!
//! A run outlives any one process (steps run on several replicas, across restarts), so its span
//! is not held open: its trace id is the run id and its span id is derived from it, so every
//! replica parents step-attempt spans to it without sharing state, and the run span itself is
//! emitted when the run ends (start time: its creation). Each application owns its provider
//! (never the global one: tests run many servers in one process).
//!
//! A step attempt's span context travels to agents as a W3C `traceparent`
//! (`00-<trace id>-<span id>-01`) in the assignment.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    Span as _, SpanBuilder, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags,
    TraceId, TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider,
};
use uuid::Uuid;
use weft_store::{RunRecord, RunStatus};

/// The exporter could not be built.
#[derive(Debug, thiserror::Error)]
#[error("OTLP exporter: {0}")]
pub struct TracesError(String);

/// The application's tracer, or nothing. Cheap to clone.
#[derive(Clone, Default)]
pub struct Traces {
    enabled: Option<Arc<Enabled>>,
}

struct Enabled {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl std::fmt::Debug for Traces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Traces")
            .field("enabled", &self.enabled.is_some())
            .finish()
    }
}

impl Traces {
    /// No tracing: every span is a no-op.
    pub fn off() -> Traces {
        Traces::default()
    }

    /// Export to the OTLP/HTTP collector at `endpoint` (its base URL, e.g.
    /// `http://collector:4318`; spans go to `/v1/traces`), in batches at least every
    /// `flush_every`.
    pub fn otlp(endpoint: &str, flush_every: Duration) -> Result<Traces, TracesError> {
        let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(url)
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| TracesError(e.to_string()))?;
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(flush_every)
                    .build(),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(Resource::builder().with_service_name("weft").build())
            .build();
        let tracer = provider.tracer("weft");
        Ok(Traces {
            enabled: Some(Arc::new(Enabled { provider, tracer })),
        })
    }

    /// Whether spans are exported.
    pub fn enabled(&self) -> bool {
        self.enabled.is_some()
    }

    /// Start the span of one attempt of step `step_id` of run `run_id`, as a child of the run's.
    pub fn step_attempt(&self, run_id: Uuid, step_id: &str, attempt: u32, kind: &str) -> StepSpan {
        let Some(enabled) = &self.enabled else {
            return StepSpan { span: None };
        };
        let parent = Context::new().with_remote_span_context(SpanContext::new(
            trace_id(run_id),
            run_span_id(run_id),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        ));
        let builder = SpanBuilder::from_name(format!("step {step_id}"))
            .with_kind(SpanKind::Internal)
            .with_attributes([
                KeyValue::new("weft.run_id", run_id.to_string()),
                KeyValue::new("weft.step_id", step_id.to_string()),
                KeyValue::new("weft.attempt", i64::from(attempt)),
                KeyValue::new("weft.step_type", kind.to_string()),
            ]);
        StepSpan {
            span: Some(enabled.tracer.build_with_context(builder, &parent)),
        }
    }

    /// Emit the span of `run`, which just reached `status`.
    pub fn run_ended(&self, run: &RunRecord, status: RunStatus) {
        let Some(enabled) = &self.enabled else {
            return;
        };
        let mut builder = SpanBuilder::from_name(format!("run {}", run.definition_name))
            .with_kind(SpanKind::Internal)
            .with_trace_id(trace_id(run.id))
            .with_span_id(run_span_id(run.id))
            .with_start_time(SystemTime::from(run.created_at))
            .with_attributes([
                KeyValue::new("weft.run_id", run.id.to_string()),
                KeyValue::new("weft.definition", run.definition_name.clone()),
                KeyValue::new("weft.definition_version", run.definition_version.clone()),
                KeyValue::new("weft.status", status.as_str()),
            ]);
        if matches!(status, RunStatus::Failed) {
            builder = builder.with_status(Status::error("the run failed"));
        }
        let mut span = enabled.tracer.build_with_context(builder, &Context::new());
        span.end();
    }

    /// Export what is buffered and stop the exporter (blocks: runs on a blocking thread).
    pub async fn shutdown(&self) {
        let Some(enabled) = self.enabled.clone() else {
            return;
        };
        let stopped = tokio::task::spawn_blocking(move || {
            enabled
                .provider
                .shutdown_with_timeout(Duration::from_secs(5))
        })
        .await;
        match stopped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "traces: the exporter did not stop cleanly"),
            Err(e) => tracing::warn!(error = %e, "traces: the exporter shutdown panicked"),
        }
    }
}

/// The run's trace: its id.
fn trace_id(run_id: Uuid) -> TraceId {
    TraceId::from_bytes(*run_id.as_bytes())
}

/// The run span's id: the random low half of the (v7) run id, never zero.
fn run_span_id(run_id: Uuid) -> SpanId {
    let low = run_id.as_u128() as u64;
    SpanId::from(if low == 0 { 1 } else { low })
}

/// The span of one step attempt (a no-op when tracing is off). Ends when [`StepSpan::end`] is
/// called or it is dropped.
pub struct StepSpan {
    span: Option<opentelemetry_sdk::trace::Span>,
}

impl StepSpan {
    /// The W3C `traceparent` of this span, for an agent; `None` when tracing is off.
    pub fn traceparent(&self) -> Option<String> {
        let context = self.span.as_ref()?.span_context();
        Some(format!(
            "00-{}-{}-{:02x}",
            context.trace_id(),
            context.span_id(),
            context.trace_flags().to_u8()
        ))
    }

    /// End it with the runner that ran it and its outcome (`completed`, `failed`, `parked`).
    pub fn end(mut self, runner: &str, outcome: &str, error: Option<&str>) {
        if let Some(span) = &mut self.span {
            span.set_attribute(KeyValue::new("weft.runner", runner.to_string()));
            span.set_attribute(KeyValue::new("weft.outcome", outcome.to_string()));
            if let Some(error) = error {
                span.set_status(Status::error(error.to_string()));
            }
            span.end();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_spans_carry_no_traceparent() {
        let span = Traces::off().step_attempt(Uuid::now_v7(), "a", 1, "task");
        assert_eq!(span.traceparent(), None);
        span.end("wasm", "completed", None);
    }

    #[test]
    fn run_ids_map_to_trace_and_span_ids() {
        let id = Uuid::parse_str("0190a5b2-7c3d-7e4f-8a1b-2c3d4e5f6071").unwrap();
        assert_eq!(trace_id(id).to_string(), "0190a5b27c3d7e4f8a1b2c3d4e5f6071");
        assert_eq!(run_span_id(id).to_string(), "8a1b2c3d4e5f6071");
        assert_eq!(run_span_id(Uuid::from_u128(5 << 64)), SpanId::from(1));
    }
}

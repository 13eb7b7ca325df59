//! OpenTelemetry tracing of decisions, exported over OTLP/gRPC.
//!
//! Configured by the standard `OTEL_*` variables: tracing is on when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is
//! set, and off with `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`.
//! Each call becomes a server span, a child of the caller's W3C
//! `traceparent`. Spans are exported by the SDK's batch processor on its own
//! thread: a call only records into memory, and a full export queue drops
//! spans instead of waiting.

use opentelemetry::KeyValue;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, Span};
use tracing::{info, warn};

use crate::engine::{DecisionRequest, Evaluation};

/// The tracer of the server, when tracing is configured.
#[derive(Debug, Clone)]
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

fn env_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.trim().is_empty())
}

impl Tracing {
    /// Tracing as the `OTEL_*` environment asks for it; `None` when off.
    /// Must be called inside the tokio runtime (the exporter's channel
    /// lives on it).
    pub fn from_env(service_name: &'static str) -> Result<Option<Tracing>, String> {
        let disabled = std::env::var("OTEL_SDK_DISABLED")
            .is_ok_and(|v| v.eq_ignore_ascii_case("true"))
            || std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v.eq_ignore_ascii_case("none"));
        let configured =
            env_set("OTEL_EXPORTER_OTLP_ENDPOINT") || env_set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        if disabled || !configured {
            return Ok(None);
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .map_err(|e| format!("cannot set up the OTLP trace exporter: {e}"))?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(
                std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| service_name.to_string()),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("purposegate");
        info!("exporting traces over OTLP");
        Ok(Some(Tracing { provider, tracer }))
    }

    /// Starts a server span for an RPC, a child of the caller's trace
    /// context (W3C `traceparent` in the metadata) if it sent one.
    pub fn rpc_span(&self, method: &'static str, metadata: &tonic::metadata::MetadataMap) -> Span {
        let parent = TraceContextPropagator::new().extract(&MetadataExtractor(metadata));
        self.tracer
            .span_builder(format!("purposegate.v1.DecisionService/{method}"))
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("rpc.system", "grpc"),
                KeyValue::new("rpc.service", "purposegate.v1.DecisionService"),
                KeyValue::new("rpc.method", method),
            ])
            .start_with_context(&self.tracer, &parent)
    }

    /// Exports what is buffered and stops; call once, when the server ends.
    pub async fn shutdown(self) {
        let provider = self.provider;
        let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(e)) = done {
            warn!(error = %e, "flushing traces at shutdown failed");
        }
    }
}

/// The decision's attributes on its span.
pub fn record_decision(span: &mut Span, req: &DecisionRequest, answer: &Evaluation) {
    let rule_ids: Vec<opentelemetry::StringValue> = answer
        .rule_ids
        .iter()
        .map(|r| r.to_string().into())
        .collect();
    span.set_attributes([
        KeyValue::new("purposegate.decision", answer.decision.as_str()),
        KeyValue::new("purposegate.purpose", req.purpose.clone()),
        KeyValue::new("purposegate.data_category", req.resource.category.clone()),
        KeyValue::new(
            "purposegate.rule_ids",
            opentelemetry::Value::Array(rule_ids.into()),
        ),
        KeyValue::new(
            "purposegate.policy_revision",
            answer.policy_revision.to_string(),
        ),
        KeyValue::new("purposegate.subject", req.subject.id.clone()),
    ]);
    if let Some(monitor) = &answer.monitor {
        span.set_attribute(KeyValue::new(
            "purposegate.monitor.decision",
            monitor.decision.as_str(),
        ));
    }
}

/// Marks a span as failed with the status the caller got.
pub fn record_error(span: &mut Span, status: &tonic::Status) {
    span.set_status(Status::error(status.message().to_string()));
    span.set_attribute(KeyValue::new("rpc.grpc.status_code", status.code() as i64));
}

/// Reads W3C trace context from gRPC metadata.
struct MetadataExtractor<'a>(&'a tonic::metadata::MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

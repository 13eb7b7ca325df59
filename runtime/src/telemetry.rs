//! OpenTelemetry traces, exported over OTLP/gRPC.
//!
//! Configured by the standard `OTEL_*` variables: tracing is on when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is
//! set, and off with `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`.
//! Each call becomes a span, a child of the caller's W3C `traceparent`.
//! Finished spans go into a bounded queue with `try_send` ([`SpanQueue`]);
//! one thread of its own batches and exports them. A full queue drops the
//! span and counts it: a call never waits for telemetry.

use std::sync::Mutex;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, Span, SpanData, SpanExporter};
use prometheus_client::metrics::counter::Counter;
use tracing::{debug, info, warn};

/// The tracer of a binary, when tracing is configured.
#[derive(Debug, Clone)]
pub struct Telemetry {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

fn env_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.trim().is_empty())
}

impl Telemetry {
    /// Tracing as the `OTEL_*` environment asks for it; `None` when off.
    /// Must be called inside the tokio runtime (the exporter's channel
    /// lives on it).
    /// `dropped` counts spans a full export queue turned away.
    pub fn from_env(
        service_name: &'static str,
        dropped: Counter,
    ) -> Result<Option<Telemetry>, String> {
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
        let queue = SpanQueue::start(exporter, QueueSettings::from_env(), dropped)
            .map_err(|e| format!("cannot start the span exporter: {e}"))?;
        let provider = SdkTracerProvider::builder()
            .with_span_processor(queue)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("purposegate");
        info!("exporting traces over OTLP");
        Ok(Some(Telemetry { provider, tracer }))
    }

    /// Starts a server span for an RPC of `service` (`package.Service`), a
    /// child of the caller's trace context (W3C `traceparent` in the
    /// metadata) if it sent one.
    pub fn rpc_span(
        &self,
        service: &'static str,
        method: &'static str,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Span {
        let parent = parent_context(metadata.as_ref());
        self.tracer
            .span_builder(format!("{service}/{method}"))
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("rpc.system", "grpc"),
                KeyValue::new("rpc.service", service),
                KeyValue::new("rpc.method", method),
            ])
            .start_with_context(&self.tracer, &parent)
    }

    /// Starts a server span for an HTTP request of `route` (e.g.
    /// `/access/v1/evaluation`), a child of the caller's trace context
    /// (W3C `traceparent` in `headers`) if it sent one.
    pub fn http_span(
        &self,
        method: &'static str,
        route: &'static str,
        headers: &tonic::codegen::http::HeaderMap,
    ) -> Span {
        let parent = parent_context(headers);
        self.tracer
            .span_builder(format!("{method} {route}"))
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.request.method", method),
                KeyValue::new("http.route", route),
            ])
            .start_with_context(&self.tracer, &parent)
    }

    /// Starts an internal span named `name`, a child of `parent`.
    pub fn span(&self, name: &'static str, parent: &Context) -> Span {
        self.tracer
            .span_builder(name)
            .with_kind(SpanKind::Internal)
            .start_with_context(&self.tracer, parent)
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

/// Marks a span as failed with the status the caller got.
pub fn record_error(span: &mut Span, status: &tonic::Status) {
    span.set_status(Status::error(status.message().to_string()));
    span.set_attribute(KeyValue::new("rpc.grpc.status_code", status.code() as i64));
}

/// The caller's trace context from HTTP headers or gRPC metadata (W3C
/// `traceparent`/`tracestate`); empty when it sent none.
pub fn parent_context(headers: &tonic::codegen::http::HeaderMap) -> Context {
    parent_context_of(&HeaderExtractor(headers))
}

/// The caller's trace context from any carrier of W3C headers (Envoy's
/// ext_authz request hands them over as a map).
pub fn parent_context_of(carrier: &dyn Extractor) -> Context {
    TraceContextPropagator::new().extract(carrier)
}

/// The trace context of `cx` as W3C headers into `headers`, so the next hop
/// joins the same trace.
pub fn inject_context(cx: &Context, headers: &mut tonic::codegen::http::HeaderMap) {
    TraceContextPropagator::new().inject_context(cx, &mut HeaderInjector(headers));
}

struct HeaderExtractor<'a>(&'a tonic::codegen::http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct HeaderInjector<'a>(&'a mut tonic::codegen::http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            tonic::codegen::http::HeaderName::from_bytes(key.as_bytes()),
            tonic::codegen::http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Export settings, from the standard `OTEL_BSP_*` variables.
#[derive(Debug, Clone, Copy)]
struct QueueSettings {
    max_queue: usize,
    max_batch: usize,
    delay: Duration,
}

impl QueueSettings {
    fn from_env() -> Self {
        let number = |name: &str, default: u64| -> u64 {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(default)
        };
        QueueSettings {
            max_queue: usize::try_from(number("OTEL_BSP_MAX_QUEUE_SIZE", 2048))
                .unwrap_or(2048)
                .max(1),
            max_batch: usize::try_from(number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512))
                .unwrap_or(512)
                .max(1),
            delay: Duration::from_millis(number("OTEL_BSP_SCHEDULE_DELAY", 5000).max(1)),
        }
    }
}

enum Message {
    Span(Box<SpanData>),
    Flush(SyncSender<()>),
    Shutdown(SyncSender<()>),
}

/// A span processor whose queue is bounded and counted: `on_end` never
/// blocks; a full queue drops the span and bumps `dropped`. One thread
/// exports batches every `delay` or when a batch is full.
#[derive(Debug)]
pub struct SpanQueue {
    queue: SyncSender<Message>,
    dropped: Counter,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Message::Span(_) => "Span",
            Message::Flush(_) => "Flush",
            Message::Shutdown(_) => "Shutdown",
        })
    }
}

impl SpanQueue {
    /// Starts the export thread; must be called inside the tokio runtime
    /// the exporter's channel lives on.
    fn start<E: SpanExporter + 'static>(
        exporter: E,
        settings: QueueSettings,
        dropped: Counter,
    ) -> std::io::Result<Self> {
        let (queue, rx) = std::sync::mpsc::sync_channel(settings.max_queue);
        let runtime = tokio::runtime::Handle::current();
        let worker = std::thread::Builder::new()
            .name("span-export".into())
            .spawn(move || export_loop(exporter, rx, settings, &runtime))?;
        Ok(SpanQueue {
            queue,
            dropped,
            worker: Mutex::new(Some(worker)),
        })
    }

    /// Sends a control message and waits (bounded) for it to be done.
    fn ask(&self, make: fn(SyncSender<()>) -> Message, timeout: Duration) -> OTelSdkResult {
        let (ack, done) = std::sync::mpsc::sync_channel(1);
        self.queue
            .send(make(ack))
            .map_err(|_| OTelSdkError::AlreadyShutdown)?;
        done.recv_timeout(timeout)
            .map_err(|_| OTelSdkError::Timeout(timeout))
    }
}

impl opentelemetry_sdk::trace::SpanProcessor for SpanQueue {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        match self.queue.try_send(Message::Span(Box::new(span))) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.inc();
            }
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.ask(Message::Flush, Duration::from_secs(10))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let result = self.ask(Message::Shutdown, timeout);
        if let Ok(mut worker) = self.worker.lock() {
            if let Some(handle) = worker.take() {
                let _ = handle.join();
            }
        }
        result
    }
}

fn export_loop<E: SpanExporter>(
    exporter: E,
    rx: Receiver<Message>,
    settings: QueueSettings,
    runtime: &tokio::runtime::Handle,
) {
    let mut batch: Vec<SpanData> = Vec::with_capacity(settings.max_batch);
    let mut deadline = Instant::now() + settings.delay;
    let export = |batch: &mut Vec<SpanData>| {
        if batch.is_empty() {
            return;
        }
        let spans = std::mem::take(batch);
        if let Err(e) = runtime.block_on(exporter.export(spans)) {
            debug!(error = %e, "span export failed");
        }
    };
    loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(Message::Span(span)) => {
                batch.push(*span);
                if batch.len() >= settings.max_batch {
                    export(&mut batch);
                    deadline = Instant::now() + settings.delay;
                }
            }
            Ok(Message::Flush(ack)) => {
                // Take what is already queued too.
                while let Ok(Message::Span(span)) = rx.try_recv() {
                    batch.push(*span);
                }
                export(&mut batch);
                let _ = ack.send(());
            }
            Ok(Message::Shutdown(ack)) => {
                while let Ok(Message::Span(span)) = rx.try_recv() {
                    batch.push(*span);
                }
                export(&mut batch);
                let _ = exporter.shutdown();
                let _ = ack.send(());
                return;
            }
            Err(RecvTimeoutError::Timeout) => {
                export(&mut batch);
                deadline = Instant::now() + settings.delay;
            }
            Err(RecvTimeoutError::Disconnected) => {
                export(&mut batch);
                return;
            }
        }
    }
}

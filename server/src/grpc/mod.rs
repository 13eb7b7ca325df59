//! The gRPC edge: `purposegate.v1.DecisionService` over the policy store.
//!
//! **Architecture Invariant:** generated types are converted to and from the
//! engine's types in [`convert`] only.

pub mod convert;
pub mod health;
pub mod limits;

pub use limits::{MessageLimits, MethodLimit};

/// Largest `Check` message: every field at its limit fits (about 110 KiB).
pub const MAX_CHECK_BYTES: usize = 128 * 1024;
/// Largest `CheckBatch` message: about 1,000 typical requests.
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// Bytes of `Check` and `CheckBatch` messages a port reads and answers at
/// once; calls beyond it wait (briefly) for room.
pub const MESSAGE_BUDGET_BYTES: usize = 8 * 1024 * 1024;

/// The limits of `Check` and `CheckBatch` on a port with `max_batch`.
pub fn decision_limits(max_batch: usize) -> [MethodLimit; 2] {
    [
        MethodLimit {
            path: "/purposegate.v1.DecisionService/Check",
            max_bytes: MAX_CHECK_BYTES,
            max_requests: None,
        },
        MethodLimit {
            path: "/purposegate.v1.DecisionService/CheckBatch",
            max_bytes: MAX_BATCH_BYTES,
            max_requests: Some(max_batch),
        },
    ]
}

/// Places for `WatchPolicy` streams: each holds one for as long as it is
/// open; with none left, a new watch is `RESOURCE_EXHAUSTED`.
#[derive(Debug, Clone)]
pub struct Watchers {
    places: Arc<tokio::sync::Semaphore>,
    max: usize,
    refused: prometheus_client::metrics::counter::Counter,
}

impl Watchers {
    pub fn new(max: usize, refused: prometheus_client::metrics::counter::Counter) -> Self {
        Watchers {
            places: Arc::new(tokio::sync::Semaphore::new(max)),
            max,
            refused,
        }
    }

    /// `stream`, holding a place while it lives; or why there is none.
    pub fn hold<S>(&self, stream: S) -> Result<impl Stream<Item = S::Item> + Send + 'static, Status>
    where
        S: Stream + Send + 'static,
    {
        let Ok(place) = self.places.clone().try_acquire_owned() else {
            self.refused.inc();
            return Err(Status::resource_exhausted(format!(
                "{} policy watches are open (--max-watchers); try again later",
                self.max
            )));
        };
        Ok(stream.map(move |item| {
            let _held = &place;
            item
        }))
    }
}

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use opentelemetry::KeyValue;
use opentelemetry::trace::Span as _;
use opentelemetry_sdk::trace::Span;
use pb::decision_service_server::DecisionService;
use purposegate_proto::v1 as pb;
use tokio::sync::watch;
use tokio_stream::{Stream, StreamExt, wrappers::WatchStream};
use tonic::{Request, Response, Status};

use crate::audit::DecisionLog;
use crate::engine::InvalidRequest;
use crate::metrics::Metrics;
use crate::store::PolicyStore;
use crate::telemetry::{self, Tracing};

/// Serves decisions from the store's current policy.
#[derive(Debug, Clone)]
pub struct DecisionServer {
    store: Arc<PolicyStore>,
    max_batch: usize,
    watchers: Watchers,
    /// Becomes true when the server begins to shut down; open watch streams
    /// end then, so they do not hold the drain open.
    shutdown: watch::Receiver<bool>,
    decision_log: DecisionLog,
    metrics: Metrics,
    tracing: Option<Tracing>,
}

impl DecisionServer {
    pub fn new(
        store: Arc<PolicyStore>,
        max_batch: usize,
        max_watchers: usize,
        shutdown: watch::Receiver<bool>,
        decision_log: DecisionLog,
        metrics: Metrics,
        tracing: Option<Tracing>,
    ) -> Self {
        DecisionServer {
            store,
            max_batch,
            watchers: Watchers::new(max_watchers, metrics.watchers_refused.clone()),
            shutdown,
            decision_log,
            metrics,
            tracing,
        }
    }

    fn span(&self, method: &'static str, metadata: &tonic::metadata::MetadataMap) -> Option<Span> {
        self.tracing.as_ref().map(|t| t.rpc_span(method, metadata))
    }

    /// Decides one request; counts it, traces it into `span` and hands it
    /// to the decision log.
    fn decide(
        &self,
        policy: &crate::engine::Policy,
        req: crate::engine::DecisionRequest,
        start: Instant,
        span: Option<&mut Span>,
    ) -> pb::CheckResponse {
        let answer = policy.evaluate(&req);
        self.metrics.decided(answer.decision);
        if let Some(span) = span {
            telemetry::record_decision(span, &req, &answer);
        }
        self.decision_log.record(req, &answer, start.elapsed());
        convert::response(answer)
    }
}

/// `INVALID_ARGUMENT` naming the field, also marked on the call's span.
fn invalid(e: InvalidRequest, span: Option<&mut Span>) -> Status {
    let status = Status::invalid_argument(e.to_string());
    if let Some(span) = span {
        telemetry::record_error(span, &status);
    }
    status
}

#[tonic::async_trait]
impl DecisionService for DecisionServer {
    async fn check(
        &self,
        request: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        let start = Instant::now();
        let mut span = self.span("Check", request.metadata());
        let req =
            convert::request(request.into_inner(), "").map_err(|e| invalid(e, span.as_mut()))?;
        let policy = self.store.current();
        let response = self.decide(&policy, req, start, span.as_mut());
        self.metrics.answered(start.elapsed());
        Ok(Response::new(response))
    }

    async fn check_batch(
        &self,
        request: Request<pb::CheckBatchRequest>,
    ) -> Result<Response<pb::CheckBatchResponse>, Status> {
        let start = Instant::now();
        let mut span = self.span("CheckBatch", request.metadata());
        let requests = request.into_inner().requests;
        self.metrics.batch(requests.len());
        if let Some(span) = span.as_mut() {
            span.set_attribute(KeyValue::new(
                "purposegate.batch_size",
                i64::try_from(requests.len()).unwrap_or(i64::MAX),
            ));
        }
        if requests.len() > self.max_batch {
            let status = Status::invalid_argument(format!(
                "field `requests` holds {} requests; at most {} are accepted (--max-batch)",
                requests.len(),
                self.max_batch
            ));
            if let Some(span) = span.as_mut() {
                telemetry::record_error(span, &status);
            }
            return Err(status);
        }
        let converted = requests
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                // The prefix is written only for the one that is invalid.
                convert::request(r, "").map_err(|mut e| {
                    e.field = format!("requests[{i}].{}", e.field);
                    e
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(e, span.as_mut()))?;
        // One policy for the whole batch: every answer has the same revision.
        let policy = self.store.current();
        let responses = converted
            .into_iter()
            .map(|r| self.decide(&policy, r, start, None))
            .collect();
        self.metrics.answered(start.elapsed());
        Ok(Response::new(pb::CheckBatchResponse { responses }))
    }

    type WatchPolicyStream =
        Pin<Box<dyn Stream<Item = Result<pb::PolicyRevision, Status>> + Send + 'static>>;

    async fn watch_policy(
        &self,
        _request: Request<pb::WatchPolicyRequest>,
    ) -> Result<Response<Self::WatchPolicyStream>, Status> {
        // The watch stream yields the current policy first, then each
        // change; the stream ends when shutdown begins.
        let revisions =
            WatchStream::new(self.store.subscribe()).map(|policy| Ok(convert::revision(&policy)));
        let revisions = self.watchers.hold(revisions)?;
        Ok(Response::new(Box::pin(end_on_shutdown(
            revisions,
            self.shutdown.clone(),
            None,
        ))))
    }

    async fn get_policy(
        &self,
        _request: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::PolicyInfo>, Status> {
        let policy = self.store.current();
        Ok(Response::new(convert::policy_info(
            &policy,
            self.store.last_reload_error(),
        )))
    }
}

/// `stream` until `shutdown` turns true, then `last` (if any) and the end:
/// a long-lived stream must not hold a graceful drain open.
pub fn end_on_shutdown<S, T>(
    stream: S,
    shutdown: watch::Receiver<bool>,
    last: Option<T>,
) -> impl Stream<Item = T> + Send + 'static
where
    S: Stream<Item = T> + Send + 'static,
    T: Send + 'static,
{
    enum Item<T> {
        Next(T),
        Last(Option<T>),
        Stop,
    }
    let mut last = Some(last);
    let ending = WatchStream::new(shutdown)
        .filter(|&down| down)
        .take(1)
        .map(move |_| Item::Last(last.take().flatten()))
        .chain(tokio_stream::once(Item::Stop));
    stream
        .map(Item::Next)
        .merge(ending)
        .take_while(|item| !matches!(item, Item::Stop))
        .filter_map(|item| match item {
            Item::Next(t) => Some(t),
            Item::Last(t) => t,
            Item::Stop => None,
        })
}

/// Server reflection, v1 and v1alpha (grpcurl asks either), describing the
/// purposegate API, health and `extra` encoded descriptor sets.
pub fn reflection(
    extra: &[&'static [u8]],
) -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    tonic_reflection::server::Error,
> {
    let builder = || {
        let mut b = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(purposegate_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        for set in extra {
            b = b.register_encoded_file_descriptor_set(set);
        }
        b
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}

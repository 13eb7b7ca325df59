//! The local decision API: `purposegate.v1.DecisionService` on
//! `--local-listen`, answered through the decision cache. It never hands
//! out a purpose context: a process beside the app is no PEP, and a
//! context is what lets a call through at the next hop
//! (`issue_purpose_context` is not asked of the server, and no answer
//! carries one).

use std::pin::Pin;
use std::sync::Arc;

use pb::decision_service_server::DecisionService;
use purposegate_proto::v1 as pb;
use tokio::sync::watch;
use tokio_stream::{Stream, StreamExt, wrappers::WatchStream};
use tonic::{Request, Response, Status};

use crate::cache::Answer;
use crate::gate::Gate;

/// Items of one batch decided at once.
const BATCH_CONCURRENCY: usize = 32;

#[derive(Debug, Clone)]
pub struct LocalDecisions {
    gate: Gate,
    /// Most requests in one batch (counted before decoding as well).
    max_batch: usize,
    revisions: watch::Receiver<Option<pb::PolicyRevision>>,
    /// True once shutdown begins: open watch streams end then.
    shutdown: watch::Receiver<bool>,
}

impl LocalDecisions {
    pub fn new(
        gate: Gate,
        max_batch: usize,
        revisions: watch::Receiver<Option<pb::PolicyRevision>>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        LocalDecisions {
            gate,
            max_batch,
            revisions,
            shutdown,
        }
    }
}

/// The PDP could not answer: say so without passing on its internals.
fn unavailable(status: &Status) -> Status {
    Status::unavailable(crate::gate::unanswered(status))
}

/// The server's own checks (`purposegate_proto::convert`), so the local API refuses
/// exactly what the PDP would, without asking it.
fn validate(req: &pb::CheckRequest, prefix: &str) -> Result<(), Status> {
    purposegate_proto::convert::request(req.clone(), prefix)
        .map(|_| ())
        .map_err(|invalid| Status::invalid_argument(invalid.to_string()))
}

/// The cache's shared answer as the caller's own: with its request id,
/// and never a purpose context.
fn for_caller(answer: Answer, req: &pb::CheckRequest) -> pb::CheckResponse {
    let mut answer = Arc::unwrap_or_clone(answer);
    answer.request_id.clone_from(&req.request_id);
    answer.purpose_context.clear();
    answer
}

/// A local caller's question as the sidecar asks it: without asking for a
/// purpose context.
fn without_context(mut req: pb::CheckRequest) -> pb::CheckRequest {
    req.issue_purpose_context = false;
    req
}

/// An answer the PDP could not give: an invalid request stays
/// INVALID_ARGUMENT, anything else is UNAVAILABLE.
fn not_answered(status: &Status) -> Status {
    if status.code() == tonic::Code::InvalidArgument {
        status.clone()
    } else {
        unavailable(status)
    }
}

#[tonic::async_trait]
impl DecisionService for LocalDecisions {
    async fn check(
        &self,
        request: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        let parent = self
            .gate
            .parent(|| purposegate_runtime::telemetry::parent_context(request.metadata().as_ref()));
        let req = without_context(request.into_inner());
        validate(&req, "")?;
        let lookup = self.gate.ask(&req, &parent).await;
        match lookup.answer {
            Ok(answer) => {
                let mut response = Response::new(for_caller(answer, &req));
                // Where the answer came from: hit, miss or stale.
                response.metadata_mut().insert(
                    "x-purposegate-cache",
                    tonic::metadata::MetadataValue::from_static(lookup.source.as_str()),
                );
                Ok(response)
            }
            Err(status) => Err(not_answered(&status)),
        }
    }

    async fn check_batch(
        &self,
        request: Request<pb::CheckBatchRequest>,
    ) -> Result<Response<pb::CheckBatchResponse>, Status> {
        let parent = self
            .gate
            .parent(|| purposegate_runtime::telemetry::parent_context(request.metadata().as_ref()));
        // The count was checked before decoding (`MessageLimits`); each item
        // goes through the cache, a few at a time, answered in order.
        let requests: Vec<pb::CheckRequest> = request
            .into_inner()
            .requests
            .into_iter()
            .map(without_context)
            .collect();
        if requests.len() > self.max_batch {
            return Err(Status::invalid_argument(format!(
                "field `requests` holds {} requests; at most {} are accepted (--max-batch)",
                requests.len(),
                self.max_batch
            )));
        }
        for (i, r) in requests.iter().enumerate() {
            validate(r, &format!("requests[{i}]."))?;
        }
        let parent = &parent;
        let answers: Vec<_> = futures_util::StreamExt::collect(futures_util::StreamExt::buffered(
            futures_util::stream::iter(requests).map(|req| async move {
                let lookup = self.gate.ask(&req, parent).await;
                lookup.answer.map(|answer| for_caller(answer, &req))
            }),
            BATCH_CONCURRENCY,
        ))
        .await;
        let mut responses = Vec::with_capacity(answers.len());
        for answer in answers {
            match answer {
                Ok(answer) => responses.push(answer),
                Err(status) => return Err(not_answered(&status)),
            }
        }
        Ok(Response::new(pb::CheckBatchResponse { responses }))
    }

    async fn permitted_purposes(
        &self,
        request: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::PermittedPurposesResponse>, Status> {
        let parent = self
            .gate
            .parent(|| purposegate_runtime::telemetry::parent_context(request.metadata().as_ref()));
        let req = request.into_inner();
        purposegate_proto::convert::purposes_request(req.clone(), "")
            .map_err(|invalid| Status::invalid_argument(invalid.to_string()))?;
        let (answer, source) = self.gate.permitted_purposes(&req, &parent).await;
        match answer {
            Ok(answer) => {
                let mut answer = Arc::unwrap_or_clone(answer);
                answer.request_id.clone_from(&req.request_id);
                let mut response = Response::new(answer);
                response.metadata_mut().insert(
                    "x-purposegate-cache",
                    tonic::metadata::MetadataValue::from_static(source.as_str()),
                );
                Ok(response)
            }
            Err(status) => Err(not_answered(&status)),
        }
    }

    type WatchPolicyStream =
        Pin<Box<dyn Stream<Item = Result<pb::PolicyRevision, Status>> + Send + 'static>>;

    /// The revisions this sidecar has seen from the PDP.
    async fn watch_policy(
        &self,
        _request: Request<pb::WatchPolicyRequest>,
    ) -> Result<Response<Self::WatchPolicyStream>, Status> {
        let stream = WatchStream::new(self.revisions.clone()).filter_map(|r| r.map(Ok));
        Ok(Response::new(Box::pin(
            purposegate_runtime::grpc::end_on_shutdown(stream, self.shutdown.clone(), None),
        )))
    }

    async fn get_policy(
        &self,
        _request: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::PolicyInfo>, Status> {
        self.gate
            .pdp
            .get_policy()
            .await
            .map(Response::new)
            .map_err(|s| unavailable(&s))
    }

    /// Not answered here: it lists a tenant's data subjects, which only the
    /// server's `--choices-writers` may ask, with their own identity.
    async fn permitted_subjects(
        &self,
        _request: Request<pb::PermittedSubjectsRequest>,
    ) -> Result<Response<pb::PermittedSubjectsResponse>, Status> {
        Err(Status::unimplemented(
            "PermittedSubjects is asked of the decision server, by a caller --choices-writers names",
        ))
    }
}

//! The gRPC edge: `purposegate.v1.DecisionService` over the policy store.
//!
//! **Architecture Invariant:** generated types are converted to and from the
//! engine's types in [`convert`] only.

pub mod convert;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use pb::decision_service_server::DecisionService;
use purposegate_proto::v1 as pb;
use tokio::sync::watch;
use tokio_stream::{Stream, StreamExt, wrappers::WatchStream};
use tonic::{Request, Response, Status};

use crate::audit::DecisionLog;
use crate::engine::InvalidRequest;
use crate::metrics::Metrics;
use crate::store::PolicyStore;

/// Serves decisions from the store's current policy.
#[derive(Debug, Clone)]
pub struct DecisionServer {
    store: Arc<PolicyStore>,
    max_batch: usize,
    /// Becomes true when the server begins to shut down; open watch streams
    /// end then, so they do not hold the drain open.
    shutdown: watch::Receiver<bool>,
    decision_log: DecisionLog,
    metrics: Metrics,
}

impl DecisionServer {
    pub fn new(
        store: Arc<PolicyStore>,
        max_batch: usize,
        shutdown: watch::Receiver<bool>,
        decision_log: DecisionLog,
        metrics: Metrics,
    ) -> Self {
        DecisionServer {
            store,
            max_batch,
            shutdown,
            decision_log,
            metrics,
        }
    }

    /// Decides one request and hands the decision to the log.
    fn decide(
        &self,
        policy: &crate::engine::Policy,
        req: crate::engine::DecisionRequest,
        start: Instant,
    ) -> pb::CheckResponse {
        let answer = policy.evaluate(&req);
        self.metrics.decided(answer.decision);
        self.decision_log.record(req, &answer, start.elapsed());
        convert::response(answer)
    }
}

fn invalid(e: InvalidRequest) -> Status {
    Status::invalid_argument(e.to_string())
}

#[tonic::async_trait]
impl DecisionService for DecisionServer {
    async fn check(
        &self,
        request: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        let start = Instant::now();
        let req = convert::request(request.into_inner(), "").map_err(invalid)?;
        let policy = self.store.current();
        let response = self.decide(&policy, req, start);
        self.metrics.answered(start.elapsed());
        Ok(Response::new(response))
    }

    async fn check_batch(
        &self,
        request: Request<pb::CheckBatchRequest>,
    ) -> Result<Response<pb::CheckBatchResponse>, Status> {
        let start = Instant::now();
        let requests = request.into_inner().requests;
        self.metrics.batch(requests.len());
        if requests.len() > self.max_batch {
            return Err(Status::invalid_argument(format!(
                "field `requests` holds {} requests; at most {} are accepted (--max-batch)",
                requests.len(),
                self.max_batch
            )));
        }
        let converted = requests
            .into_iter()
            .enumerate()
            .map(|(i, r)| convert::request(r, &format!("requests[{i}].")))
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        // One policy for the whole batch: every answer has the same revision.
        let policy = self.store.current();
        let responses = converted
            .into_iter()
            .map(|r| self.decide(&policy, r, start))
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
        let revisions = WatchStream::new(self.store.subscribe())
            .map(|policy| Some(Ok(convert::revision(&policy))));
        let shutdown = WatchStream::new(self.shutdown.clone())
            .filter(|&down| down)
            .map(|_| None);
        let stream = revisions
            .merge(shutdown)
            .take_while(Option::is_some)
            .filter_map(|item| item);
        Ok(Response::new(Box::pin(stream)))
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

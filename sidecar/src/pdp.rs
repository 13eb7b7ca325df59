//! The decision point (the purposegate server), as the sidecar uses it: a
//! `Check` bounded by `--pdp-timeout`, and a `WatchPolicy` stream that
//! reconnects with backoff and flushes the cache on each new revision.

use std::sync::Arc;
use std::time::Duration;

use pb::decision_service_client::DecisionServiceClient;
use purposegate_proto::v1 as pb;
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};
use tracing::{info, warn};

use crate::cache::DecisionCache;

#[derive(Debug, Clone)]
pub struct Pdp {
    client: DecisionServiceClient<Channel>,
    url: String,
    timeout: Duration,
}

impl Pdp {
    /// A client that connects on first use, so the sidecar starts (and
    /// denies) while the PDP is away.
    pub fn new(url: &str, timeout: Duration) -> Result<Pdp, String> {
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| format!("invalid --pdp `{url}`: {e}"))?
            .connect_timeout(timeout)
            .timeout(timeout)
            .tcp_nodelay(true);
        Ok(Pdp {
            client: DecisionServiceClient::new(endpoint.connect_lazy()),
            url: url.to_string(),
            timeout,
        })
    }

    /// Asks the PDP, within the timeout.
    pub async fn check(
        &self,
        request: tonic::Request<pb::CheckRequest>,
    ) -> Result<pb::CheckResponse, tonic::Status> {
        let mut client = self.client.clone();
        match tokio::time::timeout(self.timeout, client.check(request)).await {
            Ok(result) => result.map(tonic::Response::into_inner),
            Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                "the decision point did not answer within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }

    pub async fn get_policy(&self) -> Result<pb::PolicyInfo, tonic::Status> {
        let mut client = self.client.clone();
        client
            .get_policy(pb::GetPolicyRequest {})
            .await
            .map(tonic::Response::into_inner)
    }

    /// Follows the PDP's revisions for as long as the process runs.
    pub fn follow_revisions(
        &self,
        cache: Arc<DecisionCache>,
        announce: watch::Sender<Option<pb::PolicyRevision>>,
    ) {
        let pdp = self.clone();
        tokio::spawn(async move {
            let mut backoff = Backoff::new();
            loop {
                let mut client = pdp.client.clone();
                match client.watch_policy(pb::WatchPolicyRequest {}).await {
                    Ok(stream) => {
                        let mut stream = stream.into_inner();
                        while let Some(item) = stream.next().await {
                            match item {
                                Ok(revision) => {
                                    backoff.reset();
                                    if cache.set_revision(&revision.revision) {
                                        info!(revision = %revision.revision, policy = %revision.name, "policy revision changed; decision cache flushed");
                                    }
                                    announce.send_replace(Some(revision));
                                }
                                Err(status) => {
                                    warn!(pdp = %pdp.url, error = %status.message(), "policy watch ended");
                                    break;
                                }
                            }
                        }
                    }
                    Err(status) => {
                        warn!(pdp = %pdp.url, code = ?status.code(), error = %status.message(), "cannot watch the policy");
                    }
                }
                tokio::time::sleep(backoff.next()).await;
            }
        });
    }
}

/// Exponential backoff from 100 ms to 5 s, with jitter.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    fn new() -> Self {
        Backoff { next: Self::FIRST }
    }

    fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    fn next(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        // Up to 25% jitter so a fleet of sidecars does not reconnect in step.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        now + now.mul_f64(f64::from(nanos % 250) / 1000.0)
    }
}

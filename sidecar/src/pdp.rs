//! The decision point (the purposegate server), as the sidecar uses it: a
//! `Check` bounded by `--pdp-timeout`, and a `WatchPolicy` stream that
//! reconnects with backoff and flushes the cache on each new revision.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use pb::decision_service_client::DecisionServiceClient;
use purposegate_proto::v1 as pb;
use purposegate_runtime::tls::ClientTls;
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tracing::{info, warn};

use crate::cache::DecisionCache;

/// The decision point the gate asks. [`Pdp`] is the real one (the
/// server, over gRPC); tests of the request path put a fake in its place,
/// as linkerd2-proxy tests its inbound stack with fake connectors.
pub trait DecisionPoint: std::fmt::Debug + Send + Sync {
    fn check(
        &self,
        request: tonic::Request<pb::CheckRequest>,
    ) -> BoxFuture<'_, Result<pb::CheckResponse, tonic::Status>>;

    fn permitted_purposes(
        &self,
        request: tonic::Request<pb::CheckRequest>,
    ) -> BoxFuture<'_, Result<pb::PermittedPurposesResponse, tonic::Status>>;

    fn get_policy(&self) -> BoxFuture<'_, Result<pb::PolicyInfo, tonic::Status>>;
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl DecisionPoint for Pdp {
    fn check(
        &self,
        request: tonic::Request<pb::CheckRequest>,
    ) -> BoxFuture<'_, Result<pb::CheckResponse, tonic::Status>> {
        Box::pin(Pdp::check(self, request))
    }

    fn permitted_purposes(
        &self,
        request: tonic::Request<pb::CheckRequest>,
    ) -> BoxFuture<'_, Result<pb::PermittedPurposesResponse, tonic::Status>> {
        Box::pin(Pdp::permitted_purposes(self, request))
    }

    fn get_policy(&self) -> BoxFuture<'_, Result<pb::PolicyInfo, tonic::Status>> {
        Box::pin(Pdp::get_policy(self))
    }
}

#[derive(Debug, Clone)]
pub struct Pdp {
    client: DecisionServiceClient<Channel>,
    /// The same connection, for `ChoicesService`.
    channel: Channel,
    url: String,
    timeout: Duration,
    /// Checks in flight to the PDP at once: a burst (every open call
    /// re-judged at a new revision, many distinct first calls) waits its
    /// turn, within the timeout, rather than flooding the PDP.
    in_flight: Arc<tokio::sync::Semaphore>,
}

/// Longest wait for the policy's description (`GetPolicy`).
const GET_POLICY_TIMEOUT: Duration = Duration::from_secs(30);

/// Most checks in flight to the PDP from one sidecar.
const MAX_CHECKS_IN_FLIGHT: usize = 256;

impl Pdp {
    /// A client that connects on first use, so the sidecar starts (and
    /// denies) while the PDP is away. With `tls` the URL must be `https://`
    /// and every connection is mutual TLS with the files as they are at
    /// connect time; without, it must be `http://`.
    pub fn new(url: &str, timeout: Duration, tls: Option<ClientTls>) -> Result<Pdp, String> {
        let channel = purposegate_runtime::tls::connect::channel(
            url,
            "--pdp",
            timeout,
            tls,
            "--tls-cert, --tls-key and --tls-client-ca",
        )?;
        Ok(Pdp {
            channel: channel.clone(),
            client: DecisionServiceClient::new(channel)
                .max_decoding_message_size(purposegate_proto::limits::MAX_POLICY_INFO_BYTES),
            url: url.to_string(),
            timeout,
            in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_CHECKS_IN_FLIGHT)),
        })
    }

    /// Asks the PDP, within `--pdp-timeout`.
    pub async fn check(
        &self,
        request: tonic::Request<pb::CheckRequest>,
    ) -> Result<pb::CheckResponse, tonic::Status> {
        let mut client = self.client.clone();
        self.within_limits(client.check(request)).await
    }

    /// Asks the PDP the reverse question, within the same limits as
    /// [`Pdp::check`].
    pub async fn permitted_purposes(
        &self,
        request: tonic::Request<pb::CheckRequest>,
    ) -> Result<pb::PermittedPurposesResponse, tonic::Status> {
        let mut client = self.client.clone();
        self.within_limits(client.permitted_purposes(request)).await
    }

    /// A call to the PDP, in one of its places in flight, all within
    /// `--pdp-timeout`.
    async fn within_limits<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, tonic::Status> {
        // One deadline for the wait and the call together.
        let deadline = tokio::time::Instant::now() + self.timeout;
        let Ok(Ok(_turn)) = tokio::time::timeout_at(deadline, self.in_flight.acquire()).await
        else {
            return Err(tonic::Status::unavailable(format!(
                "{MAX_CHECKS_IN_FLIGHT} checks already wait for the decision point"
            )));
        };
        match tokio::time::timeout_at(deadline, call).await {
            Ok(answer) => answer.map(tonic::Response::into_inner),
            Err(_) => Err(tonic::Status::deadline_exceeded(
                "the decision point did not answer within --pdp-timeout",
            )),
        }
    }

    /// The serving policy's description, within [`GET_POLICY_TIMEOUT`]:
    /// not a decision, and a large policy's takes longer to send than
    /// `--pdp-timeout` allows a decision.
    pub async fn get_policy(&self) -> Result<pb::PolicyInfo, tonic::Status> {
        let mut client = self.client.clone();
        match tokio::time::timeout(
            GET_POLICY_TIMEOUT,
            client.get_policy(pb::GetPolicyRequest {}),
        )
        .await
        {
            Ok(answer) => answer.map(tonic::Response::into_inner),
            Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                "the decision point did not describe its policy within {}s",
                GET_POLICY_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Follows the PDP's revisions for as long as the process runs.
    pub fn follow_revisions(
        &self,
        cache: Arc<DecisionCache>,
        purposes: Arc<DecisionCache<pb::PermittedPurposesResponse>>,
        inheritance: Arc<crate::inherit::Inheritance>,
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
                                    // The keys first: a context signed by
                                    // a rotated key verifies from now on.
                                    inheritance.set_keys(&revision.purpose_context_keys);
                                    // Both caches flush before anything
                                    // hears of the new revision.
                                    let flushed = purposes.set_revision(&revision.revision);
                                    if cache.set_revision(&revision.revision) || flushed {
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

impl Pdp {
    /// Follows the changes of choices for as long as the process runs:
    /// each evicts the cached decisions that read the choices changed; a
    /// gap in the revisions, or a new watch that cannot resume, evicts
    /// every decision that read choices. While the watch is down (no word
    /// from it for `window`), such decisions are kept no longer than their
    /// own short TTL.
    pub fn follow_choices(
        &self,
        cache: Arc<DecisionCache>,
        window: Duration,
        announce: tokio::sync::broadcast::Sender<ChoiceChanged>,
    ) {
        let pdp = self.clone();
        tokio::spawn(async move {
            let mut client =
                pb::choices_service_client::ChoicesServiceClient::new(pdp.channel.clone());
            let mut backoff = Backoff::new();
            // The last revision followed; 0 until the first word.
            let mut last = 0;
            loop {
                let asked = pb::WatchChoicesRequest {
                    after_revision: last,
                };
                match tokio::time::timeout(window, client.watch_choices(asked)).await {
                    Ok(Ok(stream)) => {
                        let mut stream = stream.into_inner();
                        loop {
                            match tokio::time::timeout(window, stream.next()).await {
                                Ok(Some(Ok(change))) => {
                                    backoff.reset();
                                    last = follow(&cache, &change, last, &announce);
                                    cache.choices_watch_alive(window);
                                }
                                Ok(Some(Err(status))) => {
                                    warn!(pdp = %pdp.url, error = %status.message(), "the watch of choices ended");
                                    break;
                                }
                                Ok(None) => break,
                                Err(_) => {
                                    warn!(pdp = %pdp.url, "the watch of choices went silent");
                                    break;
                                }
                            }
                        }
                    }
                    Ok(Err(status)) => {
                        warn!(pdp = %pdp.url, code = ?status.code(), error = %status.message(), "cannot watch choices");
                    }
                    Err(_) => warn!(pdp = %pdp.url, "cannot watch choices: no answer"),
                }
                cache.choices_watch_ended();
                tokio::time::sleep(backoff.next()).await;
            }
        });
    }
}

/// Whose choices changed, told to the open calls (their supervisors):
/// `tenant` empty for "anyone's may have" (a gap, a new watch); `data_subject`
/// empty for the tenant's own configuration, which touches all its calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChoiceChanged {
    pub tenant: String,
    pub data_subject: String,
}

impl ChoiceChanged {
    /// Whether a call asked about `tenant`'s data of `data_subject` may be
    /// decided otherwise now.
    pub fn touches(&self, tenant: &str, data_subject: &str) -> bool {
        self.tenant.is_empty()
            || (self.tenant == tenant
                && (self.data_subject.is_empty() || self.data_subject == data_subject))
    }
}

/// Applies one word of the watch of choices to the cache, `last` being
/// the revision followed so far, and tells the open calls; gives the
/// revision followed after it.
fn follow(
    cache: &DecisionCache,
    change: &pb::ChoiceChange,
    last: u64,
    announce: &tokio::sync::broadcast::Sender<ChoiceChanged>,
) -> u64 {
    let revision = change.revision;
    let everything = || {
        cache.choices_flushed(revision);
        // No one listening is fine: no call is open.
        let _ = announce.send(ChoiceChanged {
            tenant: String::new(),
            data_subject: String::new(),
        });
    };
    if change.everything {
        everything();
        return revision;
    }
    if change.tenant.is_empty() {
        // A heartbeat: a revision past the last followed is a change
        // missed (or the first word of a new watch).
        if last == 0 || revision > last {
            everything();
        }
        return last.max(revision);
    }
    if revision <= last {
        return last;
    }
    if last != 0 && revision == last + 1 {
        cache.choices_changed(&change.tenant, &change.data_subject, revision);
        let _ = announce.send(ChoiceChanged {
            tenant: change.tenant.clone(),
            data_subject: change.data_subject.clone(),
        });
    } else {
        everything();
    }
    revision
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

//! `Gate`: one decision for one intercepted call, the same for every face
//! of the sidecar (proxy, ext_authz, local API): the cache, then the PDP.

use std::sync::Arc;

use purposegate_proto::v1 as pb;

use crate::cache::{DecisionCache, Source};
use crate::pdp::Pdp;

#[derive(Debug, Clone)]
pub struct Gate {
    pub cache: Arc<DecisionCache>,
    pub pdp: Pdp,
}

/// What the gate found, for the caller to enforce.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The PDP's answer (fresh, cached or stale), or why there is none.
    pub answer: Result<pb::CheckResponse, tonic::Status>,
    pub source: Source,
}

impl Gate {
    pub async fn decide(&self, request: pb::CheckRequest) -> Verdict {
        let request_id = request.request_id.clone();
        let ask = || self.pdp.check(tonic::Request::new(request.clone()));
        match self.cache.decide(&request, ask).await {
            Ok((mut answer, source)) => {
                answer.request_id = request_id;
                tracing::debug!(
                    decision = answer.decision().as_str_name(),
                    cache = source.as_str(),
                    purpose = %request.purpose,
                    "decided"
                );
                Verdict {
                    answer: Ok(answer),
                    source,
                }
            }
            Err(status) => Verdict {
                answer: Err(status),
                source: Source::Miss,
            },
        }
    }
}

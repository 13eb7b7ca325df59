//! What the sidecar's own tests share: a fake decision point and a gate
//! around it.

use std::sync::Arc;
use std::time::Duration;

use purposegate_proto::v1 as pb;

use crate::cache::{CacheLimits, DecisionCache};
use crate::gate::Gate;
use crate::metrics::CacheMetrics;
use crate::pdp::{BoxFuture, DecisionPoint};

/// Permits `provide` on everything; denies every other purpose.
#[derive(Debug, Default)]
pub struct FakePdp;

impl DecisionPoint for FakePdp {
    fn check(
        &self,
        request: tonic::Request<pb::CheckRequest>,
    ) -> BoxFuture<'_, Result<pb::CheckResponse, tonic::Status>> {
        let purpose = request.into_inner().purpose;
        Box::pin(async move {
            let permit = purpose == "provide";
            Ok(pb::CheckResponse {
                decision: if permit {
                    pb::Decision::Permit
                } else {
                    pb::Decision::Deny
                } as i32,
                reason: format!("fake: `{purpose}`"),
                policy_revision: "fake".into(),
                ttl_seconds: 60,
                ..Default::default()
            })
        })
    }

    fn permitted_purposes(
        &self,
        _request: tonic::Request<pb::CheckRequest>,
    ) -> BoxFuture<'_, Result<pb::PermittedPurposesResponse, tonic::Status>> {
        Box::pin(async { Err(tonic::Status::unimplemented("fake")) })
    }

    fn get_policy(&self) -> BoxFuture<'_, Result<pb::PolicyInfo, tonic::Status>> {
        Box::pin(async { Err(tonic::Status::unimplemented("fake")) })
    }
}

/// A gate that asks [`FakePdp`], with small caches.
pub fn fake_gate() -> Gate {
    let limits = CacheLimits {
        max_entries: 1000,
        max_bytes: 1 << 20,
        stale_window: Duration::ZERO,
        deny_ttl: Duration::from_secs(5),
    };
    Gate {
        cache: Arc::new(DecisionCache::new(limits, CacheMetrics::default())),
        purposes: Arc::new(DecisionCache::new(limits, CacheMetrics::default())),
        pdp: Arc::new(FakePdp),
        telemetry: None,
        dry_run: false,
        inheritance: Arc::new(crate::inherit::Inheritance::new(false, Default::default())),
    }
}

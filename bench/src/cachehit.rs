//! The sidecar's cache hit inside the process (the question written from
//! the request, found, and its answer handed out), beside the physical
//! floor: a bare `DashMap::get` of a comparable key, in the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use purposegate_proto::v1 as pb;
use purposegate_sidecar::cache::{CacheLimits, DecisionCache};
use purposegate_sidecar::metrics::CacheMetrics;

use purposegate_bench::timing::Sample;

/// The cache hit and the bare probe, measured interleaved.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CacheHit {
    pub hit: Sample,
    pub bare: Sample,
}

pub fn run() -> Result<CacheHit, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| e.to_string())?;
    let cache = DecisionCache::new(
        CacheLimits {
            max_entries: 100_000,
            max_bytes: 64 << 20,
            stale_window: Duration::ZERO,
            deny_ttl: Duration::from_secs(5),
        },
        CacheMetrics::default(),
    );
    cache.set_revision("r1");
    let requests: Vec<pb::CheckRequest> = (0..200)
        .map(|i| crate::net::check_request_from(&format!("workload-{i}")))
        .collect();
    let answer = pb::CheckResponse {
        decision: pb::Decision::Permit.into(),
        rule_ids: vec!["online-services".into()],
        reason: "`provide` on `customer-data` is permitted by rule `online-services`".into(),
        policy_revision: "r1".into(),
        ttl_seconds: 300,
        ..Default::default()
    };
    // The floor: the same answers in a bare map, keyed by a string holding
    // the same fields, found by a borrowed `&str` (SipHash, as the cache).
    let bare: DashMap<String, Arc<pb::CheckResponse>> = DashMap::new();
    let bare_keys: Vec<String> = requests.iter().map(bare_key).collect();
    let shared = Arc::new(answer.clone());
    for key in &bare_keys {
        bare.insert(key.clone(), shared.clone());
    }
    runtime.block_on(async {
        for req in &requests {
            let fill = || async { Ok(answer.clone()) };
            cache
                .get_or_ask(req, fill)
                .await
                .map_err(|e| e.to_string())?;
        }
        let never = || async { Err(tonic::Status::internal("a hit must not ask the PDP")) };
        let batch = 256;
        let (mut hits, mut probes) = (Vec::new(), Vec::new());
        for _ in 0..10 {
            for (req, key) in requests.iter().zip(&bare_keys) {
                let start = Instant::now();
                for _ in 0..batch {
                    std::hint::black_box(cache.get_or_ask(std::hint::black_box(req), never).await)
                        .map_err(|e| e.to_string())?;
                }
                hits.push(start.elapsed().as_nanos() as f64 / f64::from(batch));
                let start = Instant::now();
                for _ in 0..batch {
                    let found = bare
                        .get(std::hint::black_box(key.as_str()))
                        .map(|e| e.value().clone());
                    std::hint::black_box(found);
                }
                probes.push(start.elapsed().as_nanos() as f64 / f64::from(batch));
            }
        }
        let out = CacheHit {
            hit: Sample::new("sidecar cache hit, in process", hits),
            bare: Sample::new("bare DashMap::get, same run", probes),
        };
        for s in [&out.hit, &out.bare] {
            println!(
                "{:>34}: median {:>5.0} ns, p99 {:>5.0} ns ({} runs)",
                s.name, s.median_ns, s.p99_ns, s.runs
            );
        }
        Ok(out)
    })
}

/// The fields of a request the benchmark varies, as one string.
fn bare_key(req: &pb::CheckRequest) -> String {
    let subject = req.subject.clone().unwrap_or_default();
    let resource = req.resource.clone().unwrap_or_default();
    format!(
        "{}|{}|{}|{}|{}",
        req.purpose, subject.id, subject.tenant, resource.category, resource.owner_tenant
    )
}

//! The sidecar's cache hit inside the process: building the key from the
//! request and finding the answer, nothing else.

use std::time::{Duration, Instant};

use purposegate_proto::v1 as pb;
use purposegate_sidecar::cache::{CacheLimits, DecisionCache};
use purposegate_sidecar::metrics::CacheMetrics;

use purposegate_bench::timing::Sample;

pub fn run() -> Result<Sample, String> {
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
        reason:
            "`provide.personalization` on `customer-data` is permitted by rule `online-services`"
                .into(),
        policy_revision: "r1".into(),
        ttl_seconds: 300,
        ..Default::default()
    };
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
        let mut values = Vec::new();
        for _ in 0..10 {
            for req in &requests {
                let start = Instant::now();
                for _ in 0..batch {
                    std::hint::black_box(cache.get_or_ask(std::hint::black_box(req), never).await)
                        .map_err(|e| e.to_string())?;
                }
                values.push(start.elapsed().as_nanos() as f64 / f64::from(batch));
            }
        }
        let sample = Sample::new("sidecar cache hit, in process", values);
        println!(
            "{:>34}: median {:>5.0} ns, p99 {:>5.0} ns ({} runs)",
            sample.name, sample.median_ns, sample.p99_ns, sample.runs
        );
        Ok(sample)
    })
}

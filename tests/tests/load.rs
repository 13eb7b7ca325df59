//! Load at a fixed rate through the sidecar's proxy to the demo app, with
//! the real server deciding: zero errors, no false permits, latency
//! percentiles reported, the sidecar's resident memory flat.
//!
//! CI runs it for 10 s at 200 calls/s. The full run (60 s; RELIABILITY.md
//! has its figures), on release binaries:
//!
//! ```sh
//! cargo build --release --workspace --exclude purposegate-bench --bins
//! PURPOSEGATE_LOAD_SECONDS=60 cargo nextest run --release -p purposegate-tests --test load --no-capture
//! ```
//!
//! `PURPOSEGATE_LOAD_RATE` sets the calls per second.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stdout,
    reason = "test helpers: a failed setup must fail the test; the figures are printed"
)]

use std::time::{Duration, Instant};

use pb::customer_service_client::CustomerServiceClient;
use purposegate_demo_service::pb;
use purposegate_tests::{ServerProcess, channel, demo_behind_sidecar, get_customer};

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Debug)]
struct Outcome {
    prohibited: bool,
    /// From the call's scheduled start, so a stall counts against the
    /// calls that waited on it (no coordinated omission).
    latency: Duration,
    result: Result<(), tonic::Code>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_rate_through_the_sidecar_has_no_errors_and_flat_memory() {
    let seconds = setting("PURPOSEGATE_LOAD_SECONDS", 10);
    let rate = setting("PURPOSEGATE_LOAD_RATE", 200);
    let server = ServerProcess::start(&["--decision-log", "off"]);
    let (demo, sidecar) = demo_behind_sidecar(&server.url(), &[], &[]);
    let client = CustomerServiceClient::new(channel(&sidecar.proxy_url()).await);

    // 1,000 callers' identities: the first round misses, the rest hit,
    // and the cache settles; one call in ten asks for a prohibited purpose.
    let total = seconds * rate;
    let interval = Duration::from_secs(1) / u32::try_from(rate).unwrap();
    let start = Instant::now();
    let mut calls = Vec::with_capacity(usize::try_from(total).unwrap());
    let mut memory = Vec::new();
    for n in 0..total {
        let scheduled = start + interval * u32::try_from(n).unwrap();
        tokio::time::sleep_until(scheduled.into()).await;
        if n % rate == 0 {
            memory.push(sidecar.resident_kib());
        }
        let mut client = client.clone();
        calls.push(tokio::spawn(async move {
            let prohibited = n % 10 == 9;
            let purpose = if prohibited { "advertising" } else { "provide" };
            let mut request = get_customer(purpose, &format!("caller-{}", n % 1000));
            request.set_timeout(Duration::from_secs(5));
            let result = client
                .get_customer(request)
                .await
                .map(|_| ())
                .map_err(|s| s.code());
            Outcome {
                prohibited,
                latency: scheduled.elapsed(),
                result,
            }
        }));
    }
    let mut outcomes = Vec::with_capacity(calls.len());
    for call in calls {
        outcomes.push(call.await.unwrap());
    }
    let elapsed = start.elapsed();
    memory.push(sidecar.resident_kib());

    let false_permits = outcomes
        .iter()
        .filter(|o| o.prohibited && o.result.is_ok())
        .count();
    let errors: Vec<_> = outcomes
        .iter()
        .filter(|o| {
            let expected = if o.prohibited {
                Err(tonic::Code::PermissionDenied)
            } else {
                Ok(())
            };
            o.result != expected
        })
        .map(|o| o.result)
        .collect();
    let permitted = outcomes.iter().filter(|o| o.result.is_ok()).count();
    let mut latencies: Vec<Duration> = outcomes.iter().map(|o| o.latency).collect();
    latencies.sort();
    let (p50, p99, max) = (
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1],
    );
    // Flat: by half-way every one of the 1,000 identities has been asked
    // (at 200/s, after 5 s), so the cache is full; the second half may not
    // grow resident memory by more than 2 MiB.
    let settled = memory[memory.len() / 2];
    let last = memory[memory.len() - 1];
    let peak = memory.iter().copied().max().unwrap();
    println!(
        "load: {} calls in {:.1} s ({rate}/s scheduled), {permitted} permitted, {} denied, \
         {} errors, {false_permits} false permits; latency p50 {p50:?} p99 {p99:?} max {max:?}; \
         sidecar RSS {} KiB settled, {last} KiB at the end, {peak} KiB peak",
        outcomes.len(),
        elapsed.as_secs_f64(),
        outcomes.len() - permitted,
        errors.len(),
        settled,
    );
    assert_eq!(false_permits, 0);
    assert!(
        errors.is_empty(),
        "{} calls failed: {:?}",
        errors.len(),
        &errors[..errors.len().min(10)]
    );
    assert_eq!(
        demo.received(),
        permitted,
        "the app saw other calls than were permitted"
    );
    assert!(
        last <= settled + 2048,
        "sidecar memory grew from {settled} KiB to {last} KiB: {memory:?}"
    );
}

//! The decision server killed (SIGKILL) and restarted while callers keep
//! calling through the sidecar's proxy: nothing passes without a decision
//! the PDP gave, and the sidecar is back to permitting within 2 s of the
//! PDP's return.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stdout,
    reason = "test helpers: a failed setup must fail the test; the figures are printed"
)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pb::customer_service_client::CustomerServiceClient;
use purposegate_demo_service::pb;
use purposegate_tests::{ServerProcess, channel, demo_behind_sidecar, free_addr, get_customer};
use tonic::transport::Channel;

#[derive(Debug, Clone)]
struct Call {
    started: Instant,
    ended: Instant,
    /// Asked for a purpose the policy prohibits (`advertising`).
    prohibited: bool,
    outcome: Result<(), tonic::Code>,
}

/// One caller: back-to-back calls, each with a subject never used before,
/// so every call is a cache miss the PDP must answer; one in four asks for
/// a prohibited purpose.
async fn caller(
    mut client: CustomerServiceClient<Channel>,
    id: usize,
    until: Arc<Mutex<bool>>,
    log: Arc<Mutex<Vec<Call>>>,
) {
    for n in 0..100_000usize {
        if *until.lock().unwrap() {
            return;
        }
        let prohibited = n % 4 == 3;
        let purpose = if prohibited { "advertising" } else { "provide" };
        let mut request = get_customer(purpose, &format!("caller-{id}-{n}"));
        request.set_timeout(Duration::from_secs(2));
        let started = Instant::now();
        let outcome = client
            .get_customer(request)
            .await
            .map(|_| ())
            .map_err(|s| s.code());
        log.lock().unwrap().push(Call {
            started,
            ended: Instant::now(),
            prohibited,
            outcome,
        });
        // Keep a steady pace rather than spin when calls fail fast.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_pdp_lets_nothing_through_and_the_sidecar_recovers_within_2s() {
    let listen = free_addr().to_string();
    let server_args = ["--listen", listen.as_str(), "--decision-log", "off"];
    let server = ServerProcess::start(&server_args);
    let (demo, sidecar) = demo_behind_sidecar(&server.url(), &["--pdp-timeout", "200ms"], &[]);
    let proxy = channel(&sidecar.proxy_url()).await;

    let stop = Arc::new(Mutex::new(false));
    let log = Arc::new(Mutex::new(Vec::new()));
    let callers: Vec<_> = (0..4)
        .map(|id| {
            tokio::spawn(caller(
                CustomerServiceClient::new(proxy.clone()),
                id,
                stop.clone(),
                log.clone(),
            ))
        })
        .collect();

    // Under load for a while, then the PDP dies without a word.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.signal("KILL");
    drop(server); // reaps it
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let again = listen.clone();
    let _second = tokio::task::spawn_blocking(move || {
        ServerProcess::start(&["--listen", &again, "--decision-log", "off"])
    })
    .await
    .unwrap();
    let back = Instant::now();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    *stop.lock().unwrap() = true;
    for c in callers {
        c.await.unwrap();
    }
    let calls = log.lock().unwrap().clone();

    // No prohibited purpose ever passed.
    let false_permits = calls
        .iter()
        .filter(|c| c.prohibited && c.outcome.is_ok())
        .count();
    assert_eq!(false_permits, 0);
    // Nothing passed while no PDP could decide: a call that started after
    // the kill and ended before the restart had no one to ask (every call
    // is a cache miss).
    let dark: Vec<&Call> = calls
        .iter()
        .filter(|c| c.started > killed + Duration::from_millis(50) && c.ended < back)
        .collect();
    assert!(
        dark.len() > 20,
        "only {} calls during the outage",
        dark.len()
    );
    let let_through = dark.iter().filter(|c| c.outcome.is_ok()).count();
    assert_eq!(
        let_through, 0,
        "{let_through} calls passed with the PDP dead"
    );
    assert!(
        dark.iter()
            .all(|c| c.outcome == Err(tonic::Code::PermissionDenied)),
        "calls are denied, not failed, while the PDP is away: {:?}",
        dark.iter()
            .map(|c| format!("{:?}", c.outcome))
            .collect::<std::collections::BTreeSet<_>>()
    );
    // Permitted calls work before the kill and soon after the return.
    assert!(calls.iter().any(|c| c.ended < killed && c.outcome.is_ok()));
    let recovered = calls
        .iter()
        .filter(|c| c.started >= back && c.outcome.is_ok())
        .map(|c| c.ended)
        .min()
        .expect("no call passed after the PDP came back");
    let recovery = recovered.duration_since(back);
    assert!(
        recovery < Duration::from_secs(2),
        "the sidecar took {recovery:?} to permit again"
    );
    // And every permitted call after recovery passes.
    let late_failures = calls
        .iter()
        .filter(|c| c.started > recovered && !c.prohibited && c.outcome.is_err())
        .count();
    assert_eq!(late_failures, 0);
    // The app saw exactly the calls the callers saw pass.
    let passed = calls.iter().filter(|c| c.outcome.is_ok()).count();
    assert_eq!(demo.received(), passed);
    println!(
        "{} calls, {} during the outage (all denied), recovered {recovery:?} after the PDP's return",
        calls.len(),
        dark.len()
    );
}

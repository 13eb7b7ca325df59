//! The real sidecar in front of the real server: the decision cache, its
//! coalescing, its flush on a new revision, and failing closed without the
//! PDP.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers: a failed setup must fail the test"
)]

use std::time::{Duration, Instant};

use pb::decision_service_client::DecisionServiceClient;
use purposegate_proto::v1 as pb;
use purposegate_tests::{
    ServerProcess, SidecarProcess, TempDir, channel, check_request, default_policy_text,
    default_policy_without_prohibition, eventually, free_addr, metric, replace_file,
};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

fn check(purpose: &str, category: &str) -> pb::CheckRequest {
    check_request(purpose, category)
}

/// How many decisions the PDP has made.
fn pdp_decisions(server: &ServerProcess) -> f64 {
    let text = server.metrics();
    ["PERMIT", "DENY", "NOT_APPLICABLE", "INDETERMINATE"]
        .iter()
        .filter_map(|d| {
            metric(
                &text,
                &format!(r#"purposegate_decisions_total{{decision="{d}"}}"#),
            )
        })
        .sum()
}

/// A client of the sidecar's local API, once the sidecar knows the PDP's
/// revision (before that it caches nothing).
async fn local_client(sidecar: &SidecarProcess) -> DecisionServiceClient<Channel> {
    let mut client = DecisionServiceClient::new(channel(&sidecar.local_url()).await);
    let mut revisions = client
        .watch_policy(pb::WatchPolicyRequest {})
        .await
        .unwrap()
        .into_inner();
    tokio::time::timeout(Duration::from_secs(10), revisions.next())
        .await
        .expect("the sidecar learns the revision within 10 s")
        .unwrap()
        .unwrap();
    client
}

async fn ask(
    client: &mut DecisionServiceClient<Channel>,
    req: pb::CheckRequest,
) -> Result<(pb::CheckResponse, String), tonic::Status> {
    let response = client.check(req).await?;
    let cache = response
        .metadata()
        .get("x-purposegate-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    Ok((response.into_inner(), cache))
}

#[tokio::test]
async fn the_second_identical_call_is_served_from_the_cache() {
    let server = ServerProcess::start(&["--decision-log", "off"]);
    let sidecar = SidecarProcess::start(&server.url(), &[], &[]);
    let mut client = local_client(&sidecar).await;

    let mut first_req = check("provide", "customer-data");
    first_req.request_id = "one".into();
    let (first, source) = ask(&mut client, first_req).await.unwrap();
    assert_eq!(first.decision(), pb::Decision::Permit);
    assert_eq!(source, "miss");
    assert_eq!(first.request_id, "one");

    let mut second_req = check("provide", "customer-data");
    second_req.request_id = "two".into();
    let (second, source) = ask(&mut client, second_req).await.unwrap();
    assert_eq!(source, "hit");
    assert_eq!(second.decision(), pb::Decision::Permit);
    assert_eq!(second.rule_ids, first.rule_ids);
    assert_eq!(
        second.request_id, "two",
        "the request id is the caller's, not the cached one"
    );

    // A request differing in any decided field is a different entry.
    let mut other = check("provide", "customer-data");
    other.subject = Some(pb::Subject {
        id: "crm".into(),
        tenant: "contoso".into(),
        roles: vec![],
    });
    let (_, source) = ask(&mut client, other).await.unwrap();
    assert_eq!(source, "miss");

    assert_eq!(
        pdp_decisions(&server),
        2.0,
        "the PDP was asked twice, not three times"
    );
    let text = sidecar.metrics();
    assert_eq!(
        metric(&text, "purposegate_sidecar_cache_hits_total"),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "purposegate_sidecar_cache_misses_total"),
        Some(2.0)
    );
}

#[tokio::test]
async fn concurrent_identical_misses_make_one_pdp_call() {
    let server = ServerProcess::start(&["--decision-log", "off"]);
    // A PDP that takes half a second, so every call arrives while the
    // first one's question is still out: the others must wait on it.
    let slow = purposegate_tests::SlowRelay::start(server.addr, Duration::from_millis(500)).await;
    let sidecar = SidecarProcess::start(
        &format!("http://{}", slow.addr),
        &["--pdp-timeout", "3s"],
        &[],
    );
    let client = local_client(&sidecar).await;
    let calls: Vec<_> = (0..100)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(
                async move { ask(&mut client, check("troubleshoot", "diagnostic-data")).await },
            )
        })
        .collect();
    for call in calls {
        let (answer, _) = call.await.unwrap().unwrap();
        assert_eq!(answer.decision(), pb::Decision::Permit);
    }
    assert_eq!(
        pdp_decisions(&server),
        1.0,
        "100 identical first calls, one PDP call"
    );
    let text = sidecar.metrics();
    let misses = metric(&text, "purposegate_sidecar_cache_misses_total").unwrap();
    let coalesced = metric(&text, "purposegate_sidecar_cache_coalesced_waits_total").unwrap();
    let hits = metric(&text, "purposegate_sidecar_cache_hits_total").unwrap();
    assert_eq!(misses, 1.0, "one call asked the PDP: {text}");
    assert_eq!(
        coalesced + hits,
        99.0,
        "the others waited for it or found it: {text}"
    );
    assert!(
        coalesced >= 90.0,
        "the others arrived during the PDP call and waited on it: {text}"
    );
}

#[tokio::test]
async fn a_policy_change_reaches_the_sidecar_and_changes_the_next_decision() {
    let dir = TempDir::new("sidecar-reload");
    let path = dir.path().join("policy.yaml");
    std::fs::write(&path, default_policy_text()).unwrap();
    let server = ServerProcess::start(&[
        "--policy",
        &path.display().to_string(),
        "--decision-log",
        "off",
    ]);
    let sidecar = SidecarProcess::start(&server.url(), &[], &[]);
    let mut client = local_client(&sidecar).await;
    let advertising = || check("advertising", "customer-data");
    let (before, _) = ask(&mut client, advertising()).await.unwrap();
    assert_eq!(before.decision(), pb::Decision::Deny);
    let (_, source) = ask(&mut client, advertising()).await.unwrap();
    assert_eq!(source, "hit");

    replace_file(&path, &default_policy_without_prohibition());

    let (after, _) = eventually("the sidecar answers with the new policy", || {
        let mut client = client.clone();
        async move {
            let (answer, _) = ask(&mut client, advertising()).await.unwrap();
            (answer.decision() == pb::Decision::NotApplicable).then_some(answer)
        }
    })
    .await;
    assert_ne!(after.policy_revision, before.policy_revision);
}

#[tokio::test]
async fn without_the_pdp_only_fresh_or_stale_window_answers_are_served() {
    // A policy whose decisions live 1 s, and a sidecar that may serve them
    // 2 s past that while the PDP is away.
    let dir = TempDir::new("sidecar-stale");
    let text = default_policy_text().replace("decisionTtlSeconds: 300", "decisionTtlSeconds: 1");
    let path = dir.write("policy.yaml", &text);
    let server = ServerProcess::start(&["--policy", &path, "--decision-log", "off"]);
    let sidecar = SidecarProcess::start(
        &server.url(),
        &["--pdp-timeout", "200ms", "--stale-if-error", "2s"],
        &[],
    );
    let mut client = local_client(&sidecar).await;
    let (answer, _) = ask(&mut client, check("provide", "customer-data"))
        .await
        .unwrap();
    assert_eq!(answer.decision(), pb::Decision::Permit);
    let cached_at = Instant::now();

    drop(server);

    // Never asked before: denied (UNAVAILABLE) within the timeout.
    let start = Instant::now();
    let err = ask(&mut client, check("improve", "customer-data"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "took {:?}",
        start.elapsed()
    );

    // Past its TTL but inside the stale window: served, marked stale.
    tokio::time::sleep(Duration::from_millis(1300).saturating_sub(cached_at.elapsed())).await;
    let (stale, source) = ask(&mut client, check("provide", "customer-data"))
        .await
        .unwrap();
    assert_eq!(source, "stale");
    assert_eq!(stale.decision(), pb::Decision::Permit);

    // Past the stale window: nothing.
    tokio::time::sleep(Duration::from_millis(3300).saturating_sub(cached_at.elapsed())).await;
    let err = ask(&mut client, check("provide", "customer-data"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    let text = sidecar.metrics();
    assert!(
        metric(&text, "purposegate_sidecar_cache_stale_serves_total").is_some_and(|n| n >= 1.0)
    );
    assert!(metric(&text, "purposegate_sidecar_pdp_errors_total").is_some_and(|n| n >= 2.0));
}

#[tokio::test]
async fn the_cache_stays_within_its_bound() {
    let server = ServerProcess::start(&["--decision-log", "off"]);
    let sidecar = SidecarProcess::start(&server.url(), &["--cache-max-entries", "10"], &[]);
    let mut client = local_client(&sidecar).await;
    for i in 0..40 {
        let mut req = check("provide", "customer-data");
        req.subject = Some(pb::Subject {
            id: format!("workload-{i}"),
            ..Default::default()
        });
        let (answer, source) = ask(&mut client, req).await.unwrap();
        assert_eq!(answer.decision(), pb::Decision::Permit);
        assert_eq!(source, "miss");
    }
    let text = sidecar.metrics();
    let entries = metric(&text, "purposegate_sidecar_cache_entries").unwrap();
    let evictions = metric(&text, "purposegate_sidecar_cache_evictions_total").unwrap();
    assert!(entries <= 10.0, "{entries} entries held: {text}");
    assert!(evictions >= 30.0, "{evictions} evictions: {text}");
}

/// The PDP goes away and comes back with another policy: the sidecar's
/// watch reconnects, learns the new revision and flushes what it cached.
#[tokio::test]
async fn the_policy_watch_reconnects_to_a_restarted_pdp() {
    let listen = free_addr().to_string();
    let dir = TempDir::new("sidecar-restart");
    let without = dir.write("without.yaml", &default_policy_without_prohibition());

    let first = ServerProcess::start(&["--listen", &listen, "--decision-log", "off"]);
    let sidecar = SidecarProcess::start(&first.url(), &["--pdp-timeout", "500ms"], &[]);
    let mut client = local_client(&sidecar).await;
    let advertising = || check("advertising", "customer-data");
    let (before, _) = ask(&mut client, advertising()).await.unwrap();
    assert_eq!(before.decision(), pb::Decision::Deny);
    drop(first);

    let _second = ServerProcess::start(&[
        "--listen",
        &listen,
        "--policy",
        &without,
        "--decision-log",
        "off",
    ]);
    let (after, _) = eventually("the sidecar follows the restarted PDP", || {
        let mut client = client.clone();
        async move {
            match ask(&mut client, advertising()).await {
                Ok((answer, _)) if answer.decision() == pb::Decision::NotApplicable => Some(answer),
                _ => None,
            }
        }
    })
    .await;
    assert_ne!(after.policy_revision, before.policy_revision);
}

/// A PDP slower than --pdp-timeout: nothing uncached is let through, and
/// the answer comes within the timeout, not the PDP's pace.
#[tokio::test]
async fn a_pdp_slower_than_the_timeout_gets_calls_denied_in_time() {
    let server = ServerProcess::start(&["--decision-log", "off"]);
    let slow = purposegate_tests::SlowRelay::start(server.addr, Duration::from_millis(600)).await;
    let sidecar = SidecarProcess::start(
        &format!("http://{}", slow.addr),
        &["--pdp-timeout", "200ms"],
        &[],
    );
    let mut client = DecisionServiceClient::new(channel(&sidecar.local_url()).await);
    for purpose in ["provide", "troubleshoot", "improve"] {
        let start = Instant::now();
        let err = ask(&mut client, check(purpose, "customer-data"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
        assert!(
            start.elapsed() < Duration::from_millis(550),
            "denied after {:?}, slower than the 200 ms timeout allows",
            start.elapsed()
        );
    }
    let errors = metric(&sidecar.metrics(), "purposegate_sidecar_pdp_errors_total").unwrap();
    assert!(errors >= 3.0, "{errors}");
}

/// SIGTERM with watch streams open on the local port: they end, and the
/// sidecar exits 0 well before its drain time.
#[tokio::test]
async fn sigterm_ends_open_streams_and_the_sidecar_exits_0() {
    let server = ServerProcess::start(&["--decision-log", "off"]);
    let mut sidecar = SidecarProcess::start(&server.url(), &["--drain", "10s"], &[]);
    let local = channel(&sidecar.local_url()).await;
    let mut client = DecisionServiceClient::new(local.clone());
    let mut revisions = client
        .watch_policy(pb::WatchPolicyRequest {})
        .await
        .unwrap()
        .into_inner();
    let _first = revisions.next().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(local.clone())
        .watch(tonic_health::pb::HealthCheckRequest {
            service: "purposegate.v1.DecisionService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let _serving = health.next().await;

    let signalled = Instant::now();
    sidecar.signal("TERM");
    let end = tokio::time::timeout(Duration::from_secs(5), revisions.next())
        .await
        .expect("the local watch ends within 5 s");
    assert!(matches!(end, None | Some(Ok(_))), "{end:?}");
    let code = sidecar.exited(Duration::from_secs(5)).await;
    assert_eq!(code, Some(0), "{}", sidecar.log().join("\n"));
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "took {:?}",
        signalled.elapsed()
    );
}

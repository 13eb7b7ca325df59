#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: a failed setup must fail the test"
)]

//! Hot reload of a policy served from disk, through the real binary.

use std::time::Duration;

use pb::decision_service_client::DecisionServiceClient;
use purposegate_proto::v1 as pb;
use purposegate_tests::{
    ServerProcess, TempDir, channel, check_request, default_policy_text,
    default_policy_without_prohibition, eventually, get_policy, reload_error_shown, replace_file,
};
use tokio_stream::StreamExt;

fn advertising() -> pb::CheckRequest {
    check_request("advertising", "customer-data")
}

/// Asks until the answer for advertising satisfies `want`; how long it took.
async fn until<F>(client: &DecisionServiceClient<tonic::transport::Channel>, want: F) -> Duration
where
    F: Fn(&pb::CheckResponse) -> bool,
{
    let (_, took) = eventually("the decision changes", || {
        let mut client = client.clone();
        let want = &want;
        async move {
            let answer = client.check(advertising()).await.unwrap().into_inner();
            want(&answer).then_some(())
        }
    })
    .await;
    took
}

#[tokio::test]
async fn a_valid_change_is_served_within_a_second_and_announced() {
    let dir = TempDir::new("reload");
    let path = dir.path().join("policy.yaml");
    std::fs::write(&path, default_policy_text()).unwrap();
    let server = ServerProcess::start(&["--policy", &path.display().to_string()]);
    let mut client = DecisionServiceClient::new(channel(&server.url()).await);

    let before = client.check(advertising()).await.unwrap().into_inner();
    assert_eq!(before.decision(), pb::Decision::Deny);
    let mut watch = client
        .watch_policy(pb::WatchPolicyRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.revision, before.policy_revision);

    // Drop the prohibition: advertising on customer data is no longer denied
    // (and nothing permits it).
    replace_file(&path, &default_policy_without_prohibition());

    let took = until(&client, |a| a.decision() == pb::Decision::NotApplicable).await;
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let after = client.check(advertising()).await.unwrap().into_inner();
    assert_ne!(after.policy_revision, before.policy_revision);
    let serving = format!(
        r#"purposegate_policy_info{{name="online-services-dpa",revision="{}"}}"#,
        after.policy_revision
    );
    // policy_info follows the store off the request path: give it a moment.
    let (metrics, _) = eventually("policy_info shows the new revision", || async {
        let text = server.metrics();
        (purposegate_tests::metric(&text, &serving) == Some(1.0)).then_some(text)
    })
    .await;
    assert!(
        !metrics.contains(&before.policy_revision),
        "the old revision is gone"
    );
    assert!(
        purposegate_tests::metric(
            &metrics,
            r#"purposegate_policy_reloads_total{result="success"}"#
        )
        .is_some_and(|n| n >= 1.0)
    );

    let announced = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("announced within 5 s")
        .unwrap()
        .unwrap();
    assert_eq!(announced.revision, after.policy_revision);
}

#[tokio::test]
async fn a_broken_change_keeps_the_last_good_revision_and_health_serving() {
    let dir = TempDir::new("reload-broken");
    let path = dir.path().join("policy.yaml");
    std::fs::write(&path, default_policy_text()).unwrap();
    let server = ServerProcess::start(&["--policy", &path.display().to_string()]);
    let channel = channel(&server.url()).await;
    let mut client = DecisionServiceClient::new(channel.clone());
    let good = client.check(advertising()).await.unwrap().into_inner();

    let broken = default_policy_text().replace("purposes: [lbo]\n", "purposes: [lbo.biling]\n");
    replace_file(&path, &broken);

    // The error shows in GetPolicy; decisions and revision do not change.
    let info = reload_error_shown(&client).await;
    assert!(
        info.last_reload_error.contains("lbo.biling"),
        "{}",
        info.last_reload_error
    );
    assert!(
        info.last_reload_error
            .contains("did you mean `lbo.billing`?")
    );
    assert_eq!(info.revision, good.policy_revision);
    let still = client.check(advertising()).await.unwrap().into_inner();
    assert_eq!(still.decision(), pb::Decision::Deny);
    assert_eq!(still.policy_revision, good.policy_revision);

    assert_eq!(
        purposegate_tests::health_status(channel, "").await,
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    assert!(
        server
            .log()
            .iter()
            .any(|l| l.contains("policy reload failed") && l.contains("lbo.biling")),
        "the failure is logged with its diagnostics:\n{}",
        server.log().join("\n")
    );

    // Fixing the file clears the error.
    replace_file(&path, &default_policy_text());
    let failures = purposegate_tests::metric(
        &server.metrics(),
        r#"purposegate_policy_reloads_total{result="failure"}"#,
    );
    assert!(failures.is_some_and(|n| n >= 1.0), "{failures:?}");
    eventually("a good reload clears the error", || {
        let mut client = client.clone();
        async move {
            get_policy(&mut client)
                .await
                .last_reload_error
                .is_empty()
                .then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn a_policy_directory_reloads_when_a_file_is_added() {
    let dir = TempDir::new("reload-dir");
    dir.write(
        "base.yaml",
        "version: 1\nname: split\npurposes:\n  advertising: Ads\ndataCategories:\n  customer-data: Customer data\n",
    );
    let server = ServerProcess::start(&["--policy", &dir.path().display().to_string()]);
    let mut client = DecisionServiceClient::new(channel(&server.url()).await);
    let before = client.check(advertising()).await.unwrap().into_inner();
    assert_eq!(before.decision(), pb::Decision::NotApplicable);

    dir.write(
        "rules.yaml",
        "version: 1\nrules:\n  - id: no-ads\n    effect: deny\n    purposes: [advertising]\n",
    );
    until(&client, |a| {
        a.decision() == pb::Decision::Deny && a.rule_ids == ["no-ads"]
    })
    .await;
}

/// Four callers asking about advertising while `meanwhile` runs; every
/// answer (or error) they got.
async fn hammer_while<F: std::future::Future<Output = ()>>(
    client: &DecisionServiceClient<tonic::transport::Channel>,
    meanwhile: F,
) -> Vec<Result<pb::CheckResponse, tonic::Status>> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let askers: Vec<_> = (0..4)
        .map(|_| {
            let mut client = client.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for _ in 0..100_000 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    seen.push(
                        client
                            .check(advertising())
                            .await
                            .map(tonic::Response::into_inner),
                    );
                }
                seen
            })
        })
        .collect();
    meanwhile.await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut all = Vec::new();
    for asker in askers {
        all.extend(asker.await.unwrap());
    }
    all
}

/// Checks racing reloads each see one whole policy: every revision answers
/// with one decision only, never a mix of the old and new rules.
#[tokio::test]
async fn checks_during_reloads_never_see_a_half_loaded_policy() {
    let dir = TempDir::new("reload-race");
    let path = dir.path().join("policy.yaml");
    let with_prohibition = default_policy_text();
    let without = default_policy_without_prohibition();
    std::fs::write(&path, &with_prohibition).unwrap();
    let server = ServerProcess::start(&[
        "--policy",
        &path.display().to_string(),
        "--decision-log",
        "off",
    ]);
    let client = DecisionServiceClient::new(channel(&server.url()).await);

    let answers = hammer_while(&client, async {
        for i in 0..6 {
            let text = if i % 2 == 0 {
                &without
            } else {
                &with_prohibition
            };
            replace_file(&path, text);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    assert!(answers.len() > 100, "only {} answers", answers.len());
    let mut by_revision: std::collections::HashMap<String, (pb::Decision, Vec<String>)> =
        std::collections::HashMap::new();
    for answer in answers {
        let a = answer.unwrap();
        let first = by_revision
            .entry(a.policy_revision.clone())
            .or_insert((a.decision(), a.rule_ids.clone()));
        assert_eq!(
            *first,
            (a.decision(), a.rule_ids.clone()),
            "revision {} answered two ways",
            a.policy_revision
        );
    }
    assert_eq!(
        by_revision.len(),
        2,
        "both policies served: {by_revision:?}"
    );
}

/// Broken reloads while checks run: not one check fails, and every answer
/// comes from the last good revision.
#[tokio::test]
async fn broken_reloads_under_load_fail_no_check() {
    let dir = TempDir::new("reload-broken-load");
    let path = dir.path().join("policy.yaml");
    let good = default_policy_text();
    let broken = good.replace("purposes: [lbo]\n", "purposes: [lbo.biling]\n");
    std::fs::write(&path, &good).unwrap();
    let server = ServerProcess::start(&[
        "--policy",
        &path.display().to_string(),
        "--decision-log",
        "off",
    ]);
    let client = DecisionServiceClient::new(channel(&server.url()).await);
    let answers = hammer_while(&client, async {
        for i in 0..6 {
            // Broken, then broken differently: never a good new revision.
            let text = if i % 2 == 0 {
                broken.clone()
            } else {
                format!("{broken}\n# edit {i}\n")
            };
            replace_file(&path, &text);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    let failed = answers.iter().filter(|a| a.is_err()).count();
    let ok = answers.len() - failed;
    let mut revisions = std::collections::BTreeSet::new();
    for a in answers.into_iter().flatten() {
        assert_eq!(a.decision(), pb::Decision::Deny);
        revisions.insert(a.policy_revision);
    }
    assert_eq!(failed, 0, "checks failed during broken reloads");
    assert!(ok > 100, "only {ok} checks");
    assert_eq!(
        revisions.len(),
        1,
        "the last good revision served throughout: {revisions:?}"
    );
    let failures = purposegate_tests::metric(
        &server.metrics(),
        r#"purposegate_policy_reloads_total{result="failure"}"#,
    );
    assert!(failures.is_some_and(|n| n >= 1.0), "{failures:?}");
}

/// The default policy with `n` more purposes, `extra-0` .. `extra-N`.
fn with_purposes(n: usize) -> String {
    let text = default_policy_text();
    let mut extra = String::new();
    for i in 0..n {
        extra.push_str(&format!("  extra-{i:05}: An extra purpose number {i}\n"));
    }
    text.replacen("purposes:\n", &format!("purposes:\n{extra}"), 1)
}

#[tokio::test]
async fn a_revocation_after_a_slow_change_or_beside_a_busy_file_applies_within_a_second() {
    let dir = TempDir::new("reload-race");
    let path = dir.path().join("policy.yaml");
    std::fs::write(&path, default_policy_text()).unwrap();
    let server = ServerProcess::start(&["--policy", &path.display().to_string()]);
    let client = DecisionServiceClient::new(channel(&server.url()).await);

    // A file written beside the policy every 10 ms (a decision log, say)
    // for the whole test: it must not hold a reload back.
    let busy = dir.path().join("decisions.jsonl");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut file = std::fs::File::create(&busy).unwrap();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = writeln!(file, "{{\"decision\":\"PERMIT\"}}");
                let _ = file.flush();
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    // A large policy file, heavy to load, then at once the
    // revocation: the revocation is served within a second of its write.
    let heavy = with_purposes(2500);
    assert!(heavy.len() < 128 * 1024, "{} bytes", heavy.len());
    replace_file(&path, &heavy);
    std::thread::sleep(Duration::from_millis(50));
    let written = std::time::Instant::now();
    replace_file(&path, &default_policy_without_prohibition());
    until(&client, |a| a.decision() == pb::Decision::NotApplicable).await;
    let took = written.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "applied {took:?} after its write"
    );
    // And it stays: the heavy load, finishing later, does not win.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut client = client.clone();
    let answer = client.check(advertising()).await.unwrap().into_inner();
    assert_eq!(answer.decision(), pb::Decision::NotApplicable);

    // The busy file alone changes nothing, and a change beside it is seen.
    let written = std::time::Instant::now();
    replace_file(&path, &default_policy_text());
    until(&client, |a| a.decision() == pb::Decision::Deny).await;
    assert!(written.elapsed() < Duration::from_secs(1));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.join().unwrap();
    let peak = server.peak_resident_kib();
    assert!(peak < 64 * 1024, "the server reached {peak} KiB");
}

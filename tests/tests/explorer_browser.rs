//! The policy explorer's page in real headless Chromium (Debian's, driven
//! by playwright-core from npm through `tests/browser/explorer.mjs`): the
//! matrix read, a request tried, a candidate compared and a reload
//! followed, each checked against gRPC `Check` and by axe-core.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers: a failed setup must fail the test"
)]

use pb::decision_service_client::DecisionServiceClient;
use purposegate_proto::v1 as pb;
use purposegate_tests::explorer::{billing_anything, check_over_grpc};
use purposegate_tests::{
    ServerProcess, TempDir, channel, check_request, default_policy_text,
    default_policy_without_prohibition, repo_root,
};
use serde_json::Value;

/// The page in real Chromium (Debian's, driven by playwright-core from npm;
/// `.ci/test` installs both), checked by axe-core for WCAG 2.1 AA too.
#[tokio::test]
async fn chromium_reads_the_matrix_tries_a_request_and_follows_a_reload() {
    let dir = TempDir::new("explorer-browser");
    let policy = dir.write("policy.yaml", &default_policy_text());
    let replacement = dir.write("replacement.yaml", &default_policy_without_prohibition());
    let candidate = dir.write("candidate.yaml", &billing_anything());
    let server = ServerProcess::start(&["--decision-log", "off", "--policy", &policy]);
    let out_dir = repo_root().join("target/explorer-test");
    let url = format!("http://{}/", server.admin_addr.unwrap());
    let run = std::process::Command::new("node")
        .arg(repo_root().join("tests/browser/explorer.mjs"))
        .args([
            url.as_str(),
            &out_dir.display().to_string(),
            &policy,
            &replacement,
            &candidate,
        ])
        .output()
        .unwrap_or_else(|e| panic!("node: {e}"));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "the browser run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    // The README's and docs' screenshot is this run's, so it shows the page
    // as it is (written only when it changed).
    let shot = std::fs::read(out_dir.join("explorer.png")).unwrap();
    let shown = repo_root().join("docs/explorer.png");
    if std::fs::read(&shown).ok().as_deref() != Some(shot.as_slice()) {
        std::fs::write(&shown, &shot).unwrap();
    }
    assert!(
        seen["advertisingCustomerData"]
            .as_str()
            .unwrap()
            .contains("deny"),
        "{seen}"
    );
    assert!(
        seen["lboDiagnosticData"]
            .as_str()
            .unwrap()
            .contains("conditional"),
        "{seen}"
    );
    assert!(
        seen["lboDiagnosticTitle"]
            .as_str()
            .unwrap()
            .contains("anonymized"),
        "{seen}"
    );
    let explanation = seen["explanation"].as_str().unwrap();
    for says in [
        "lbo-anonymized-diagnostic",
        // The purpose spelled out, not only its id.
        "Legitimate business operations",
        // The bare request's answer, and an example of each outcome.
        "gets INDETERMINATE",
        "PERMIT for",
    ] {
        assert!(explanation.contains(says), "{says}: {seen}");
    }
    // The compare view marks the widened cells (customer data, and
    // diagnostic data derived from it), before and after, and shows the
    // request both policies decided.
    assert_eq!(seen["compare"]["result"], "widens", "{seen}");
    assert_eq!(
        seen["compare"]["widened"],
        serde_json::json!([
            "lbo.billing x customer-data",
            "lbo.billing x diagnostic-data"
        ]),
        "{seen}"
    );
    assert_eq!(
        seen["compare"]["widenedText"], "◐ conditional → ✓ permit",
        "{seen}"
    );
    assert!(
        seen["compare"]["verdict"]
            .as_str()
            .unwrap()
            .contains("widens what data may be used for"),
        "{seen}"
    );
    assert!(
        seen["compare"]["examples"]
            .as_str()
            .unwrap()
            .contains("after: PERMIT (billing-anything)"),
        "{seen}"
    );
    assert_eq!(
        seen["compareAccessibility"],
        serde_json::json!([]),
        "{seen}"
    );
    assert_eq!(seen["tried"]["decision"], "PERMIT", "{seen}");
    assert!(
        seen["tried"]["rules"]
            .as_str()
            .unwrap()
            .contains("lbo-anonymized-diagnostic"),
        "{seen}"
    );
    // Exactly what Check answers for the request the form sent (the page
    // shows backquoted ids as code).
    let tried = serde_json::json!({
        "purpose": "lbo",
        "subject": {"id": "analytics"},
        "resource": {"category": "diagnostic-data", "deidentification": "anonymized"},
    });
    let (decision, rule_ids, reason) = check_over_grpc(&server, &tried).await;
    assert_eq!(seen["tried"]["decision"], decision.as_str(), "{seen}");
    assert_eq!(
        seen["tried"]["rules"],
        rule_ids.join(", ").as_str(),
        "{seen}"
    );
    assert_eq!(
        seen["tried"]["reason"],
        reason.replace('`', "").as_str(),
        "{seen}"
    );
    // The reverse question shows exactly what PermittedPurposes answers.
    let mut client = DecisionServiceClient::new(channel(&server.url()).await);
    let reverse = client
        .permitted_purposes(check_request("", "customer-data"))
        .await
        .unwrap()
        .into_inner();
    let want: Vec<&str> = reverse
        .purposes
        .iter()
        .map(|p| p.purpose.as_str())
        .collect();
    assert!(want.contains(&"troubleshoot.security-incident"), "{want:?}");
    assert_eq!(seen["permitted"], serde_json::json!(want), "{seen}");
    assert_ne!(seen["revisionAfter"], seen["revision"], "{seen}");
    assert!(
        seen["advertisingCustomerDataAfter"]
            .as_str()
            .unwrap()
            .contains("not applicable"),
        "{seen}"
    );
    assert_eq!(
        seen["problems"],
        serde_json::json!([]),
        "console errors: {seen}"
    );
    assert_eq!(
        seen["accessibility"],
        serde_json::json!([]),
        "axe-core finds WCAG 2.1 AA violations: {seen}"
    );
    let screenshot = out_dir.join("explorer.png");
    assert!(
        std::fs::metadata(&screenshot).unwrap().len() > 10_000,
        "{}",
        screenshot.display()
    );
}

//! The policy explorer's compare face: `POST /api/diff` and the `/compare`
//! form, a candidate policy compared with the serving one and never
//! served.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers: a failed setup must fail the test"
)]

use purposegate_tests::explorer::{billing_anything, check_over_grpc, http, policy_json};
use purposegate_tests::{ServerProcess, TempDir};
use serde_json::Value;

#[tokio::test]
async fn the_diff_api_compares_a_candidate_without_serving_it() {
    let server = ServerProcess::start(&["--decision-log", "off"]);
    let admin = server.admin_addr.unwrap();
    let before = policy_json(&server)["revision"].clone();
    let yaml = ["Content-Type: application/yaml"];
    let candidate = billing_anything();
    let (status, _, body) = http(admin, "POST", "/api/diff", &yaml, Some(&candidate));
    assert_eq!(status, 200, "{body}");
    let diff: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(diff["widened"], 2, "{diff}");
    assert_eq!(diff["old"]["revision"], before);
    let cell = &diff["cells"][0];
    assert_eq!(
        (&cell["purpose"], &cell["category"]),
        (&"lbo.billing".into(), &"customer-data".into())
    );
    // The example is confirmed by the serving policy over gRPC: refused.
    let example = &cell["newlyPermitted"]["request"];
    let (decision, _, _) = check_over_grpc(&server, example).await;
    assert_ne!(decision, "PERMIT", "{example}");
    // Evaluated, never served.
    assert_eq!(policy_json(&server)["revision"], before);

    // An invalid candidate: 400 with its diagnostics.
    let bad = candidate.replace("purposes: [lbo.billing]", "purposes: [lbo.biling]");
    let (status, _, body) = http(admin, "POST", "/api/diff", &yaml, Some(&bad));
    assert_eq!(status, 400, "{body}");
    let refused: Value = serde_json::from_str(&body).unwrap();
    assert!(
        refused["diagnostics"][0]
            .as_str()
            .unwrap()
            .contains("did you mean `lbo.billing`?"),
        "{refused}"
    );
    // Not YAML by its type (a form another site could post): 415.
    let (status, _, _) = http(
        admin,
        "POST",
        "/api/diff",
        &["Content-Type: text/plain"],
        Some(&candidate),
    );
    assert_eq!(status, 415);
    // Too large: 413.
    let dir = TempDir::new("diff-huge");
    let huge = dir.write("huge.yaml", &"#".repeat(200 * 1024));
    let (status, _, _) = http(admin, "POST", "/api/diff", &yaml, Some(&format!("@{huge}")));
    assert_eq!(status, 413);
    // The form page answers without JavaScript, and says what was wrong.
    let (status, headers, page) = http(admin, "GET", "/compare", &[], None);
    assert_eq!(status, 200);
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("content-security-policy"),
        "{headers}"
    );
    assert!(
        page.contains(r#"<form method="post" action="/compare">"#),
        "{page}"
    );
    let form = ["Content-Type: application/x-www-form-urlencoded"];
    let (status, _, page) = http(
        admin,
        "POST",
        "/compare",
        &form,
        Some("policy=version%3A%202"),
    );
    assert_eq!(status, 200);
    assert!(page.contains(r#"data-result="invalid""#), "{page}");
    let (status, _, _) = http(admin, "DELETE", "/compare", &[], None);
    assert_eq!(status, 405);
}

//! The policy explorer on the server's admin port: driven in real headless
//! Chromium, its JSON checked cell by cell against `Check` over gRPC.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers: a failed setup must fail the test"
)]

use pb::decision_service_client::DecisionServiceClient;
use purposegate_proto::v1 as pb;
use purposegate_tests::{
    ServerProcess, TempDir, channel, check_request, curl, default_policy_text,
    default_policy_without_prohibition, repo_root,
};
use serde_json::Value;

const JSON: &[&str] = &["Content-Type: application/json"];

/// One HTTP/1.1 request to the explorer with curl: (status, headers, body).
fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
    body: Option<&str>,
) -> (u16, String, String) {
    let url = format!("http://{addr}{path}");
    // curl's own HEAD (-I) knows no body follows.
    let mut args = if method == "HEAD" {
        vec!["-I"]
    } else {
        vec!["-X", method]
    };
    for h in headers {
        args.extend(["-H", h]);
    }
    if let Some(body) = body {
        args.extend(["--data-binary", body]);
    }
    args.push(&url);
    let got = curl(&args);
    (got.status, got.headers, got.body)
}

fn policy_json(server: &ServerProcess) -> Value {
    let (status, _, body) = http(server.admin_addr.unwrap(), "GET", "/api/policy", &[], None);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// A request in its JSON form (the explorer's examples, the CLI's input)
/// as the protobuf message, for `Check` over gRPC.
fn to_proto(json: &Value) -> pb::CheckRequest {
    let text = |v: &Value| v.as_str().unwrap_or("").to_string();
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().map(text).collect())
            .unwrap_or_default()
    };
    let map = |v: &Value| -> std::collections::HashMap<String, String> {
        v.as_object()
            .map(|o| o.iter().map(|(k, v)| (k.clone(), text(v))).collect())
            .unwrap_or_default()
    };
    let resource = &json["resource"];
    let deidentification = match resource["deidentification"].as_str() {
        None => pb::Deidentification::Unspecified,
        Some(name) => pb::Deidentification::from_str_name(&name.to_uppercase().replace('-', "_"))
            .unwrap_or_else(|| panic!("no state {name}")),
    };
    pb::CheckRequest {
        subject: Some(pb::Subject {
            id: text(&json["subject"]["id"]),
            tenant: text(&json["subject"]["tenant"]),
            roles: list(&json["subject"]["roles"]),
        }),
        resource: Some(pb::Resource {
            category: text(&resource["category"]),
            owner_tenant: text(&resource["ownerTenant"]),
            deidentification: deidentification.into(),
            group_size: resource["groupSize"].as_u64().unwrap_or(0),
            origin: list(&resource["origin"]),
            attributes: map(&resource["attributes"]),
        }),
        purpose: text(&json["purpose"]),
        action: String::new(),
        context: Some(pb::Context {
            customer_instruction: text(&json["context"]["customerInstruction"]),
            attributes: map(&json["context"]["attributes"]),
        }),
        supported_obligations: list(&json["supportedObligations"]),
        request_id: String::new(),
        ..Default::default()
    }
}

/// The test's own grid of facts for a cell, independent of how the
/// explorer picks them: every de-identification state, group sizes around
/// the default policy's minimum, tenancy and the customer's instruction. A
/// cell is about data of its own category: data derived from others brings
/// them into play too (semantic 4), each its own cell.
fn grid(purpose: &str, category: &str) -> Vec<pb::CheckRequest> {
    let mut out = Vec::new();
    let states = [
        "",
        "identified",
        "pseudonymized",
        "unlinked-pseudonymized",
        "anonymized",
        "aggregated",
    ];
    let origins: Vec<Option<&str>> = vec![None, Some(category)];
    for state in states {
        for k in [0u64, 49, 50] {
            for tenancy in [None, Some(("t1", "t1")), Some(("t1", "t2"))] {
                for instruction in ["", "documented"] {
                    for origin in &origins {
                        let mut json = serde_json::json!({
                            "purpose": purpose,
                            "resource": {"category": category},
                            "context": {"customerInstruction": instruction},
                        });
                        if !state.is_empty() {
                            json["resource"]["deidentification"] = state.into();
                        }
                        if k > 0 {
                            json["resource"]["groupSize"] = k.into();
                        }
                        if let Some((subject, owner)) = tenancy {
                            json["subject"] = serde_json::json!({"tenant": subject});
                            json["resource"]["ownerTenant"] = owner.into();
                        }
                        if let Some(origin) = origin {
                            json["resource"]["origin"] = serde_json::json!([origin]);
                        }
                        out.push(to_proto(&json));
                    }
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn every_matrix_cell_agrees_with_check() {
    let server = ServerProcess::start(&["--decision-log", "off"]);
    let mut client = DecisionServiceClient::new(channel(&server.url()).await);
    let doc = policy_json(&server);
    assert_eq!(doc["name"], "online-services-dpa");
    let mut cells = 0;
    let mut lifted_cells = 0;
    let mut kinds = std::collections::BTreeMap::new();
    for row in doc["matrix"]["cells"].as_array().unwrap() {
        for cell in row.as_array().unwrap() {
            cells += 1;
            let kind = cell["kind"].as_str().unwrap();
            *kinds.entry(kind.to_string()).or_insert(0) += 1;
            let bare = serde_json::json!({
                "purpose": cell["purpose"],
                "resource": {"category": cell["category"]},
            });
            let answer = client.check(to_proto(&bare)).await.unwrap().into_inner();
            let what = format!("{} on {}", cell["purpose"], cell["category"]);
            assert_eq!(
                answer
                    .decision()
                    .as_str_name()
                    .trim_start_matches("DECISION_"),
                cell["decision"],
                "{what}"
            );
            assert_eq!(
                serde_json::to_value(&answer.rule_ids).unwrap(),
                cell.get("ruleIds")
                    .cloned()
                    .unwrap_or(Value::Array(Vec::new())),
                "{what}"
            );
            assert_eq!(answer.reason, cell["reason"].as_str().unwrap(), "{what}");
            let permit = answer.decision() == pb::Decision::Permit;
            // The cell's colour against the server's answers to a grid of
            // requests the test chose itself.
            let batch = grid(
                cell["purpose"].as_str().unwrap(),
                cell["category"].as_str().unwrap(),
            );
            let answers = client
                .check_batch(pb::CheckBatchRequest { requests: batch })
                .await
                .unwrap()
                .into_inner()
                .responses;
            let permitted = answers
                .iter()
                .filter(|a| a.decision() == pb::Decision::Permit)
                .count();
            match kind {
                "permit" => assert_eq!(permitted, answers.len(), "{what}: not all permitted"),
                "deny" | "not-applicable" => assert_eq!(permitted, 0, "{what}: some permitted"),
                _ => assert!(
                    permitted > 0 && permitted < answers.len(),
                    "{what}: conditional, but {permitted} of {} permitted",
                    answers.len()
                ),
            }
            match kind {
                "permit" => assert!(permit, "{what}"),
                "deny" | "not-applicable" => assert!(!permit, "{what}"),
                "conditional" => {
                    let yes = client
                        .check(to_proto(&cell["permittedExample"]))
                        .await
                        .unwrap()
                        .into_inner();
                    assert_eq!(
                        yes.decision(),
                        pb::Decision::Permit,
                        "{what}: {}",
                        cell["permittedExample"]
                    );
                    let no = client
                        .check(to_proto(&cell["refusedExample"]))
                        .await
                        .unwrap()
                        .into_inner();
                    assert_ne!(
                        no.decision(),
                        pb::Decision::Permit,
                        "{what}: {}",
                        cell["refusedExample"]
                    );
                    assert!(!cell["rules"].as_array().unwrap().is_empty(), "{what}");
                }
                other => panic!("{what}: unknown kind {other}"),
            }
            // A deny cell whose prohibition can be lifted shows a request
            // that gets past it, and is still not permitted.
            if let Some(lifted) = cell.get("liftedExample") {
                assert_eq!(kind, "deny", "{what}");
                let answer = client.check(to_proto(lifted)).await.unwrap().into_inner();
                assert_eq!(
                    answer.decision(),
                    pb::Decision::NotApplicable,
                    "{what}: {lifted}"
                );
                lifted_cells += 1;
            }
        }
    }
    // advertising, profiling and market-research on every category: the
    // customer's instruction lifts the prohibition and permits nothing.
    assert!(
        lifted_cells >= 3,
        "{lifted_cells} cells show a lifted prohibition"
    );
    let purposes = doc["purposes"].as_array().unwrap().len();
    let categories = doc["dataCategories"].as_array().unwrap().len();
    assert_eq!(cells, purposes * categories);
    for kind in ["permit", "deny", "conditional", "not-applicable"] {
        assert!(kinds.contains_key(kind), "no {kind} cell in {kinds:?}");
    }
}

/// What gRPC `Check` answers for a request in its JSON form: decision,
/// rule ids and reason.
async fn check_over_grpc(server: &ServerProcess, request: &Value) -> (String, Vec<String>, String) {
    let answer = DecisionServiceClient::new(channel(&server.url()).await)
        .check(to_proto(request))
        .await
        .unwrap()
        .into_inner();
    (
        answer.decision().as_str_name().to_string(),
        answer.rule_ids.clone(),
        answer.reason,
    )
}

#[tokio::test]
async fn the_json_api_answers_as_check_does_and_refuses_bad_input() {
    let server = ServerProcess::start(&["--decision-log", "off"]);
    let admin = server.admin_addr.unwrap();

    let (status, head, body) = http(
        admin,
        "POST",
        "/api/check",
        &["Content-Type: application/json"],
        Some(
            r#"{"purpose":"advertising","subject":{"id":"ads"},"resource":{"category":"customer-data"}}"#,
        ),
    );
    assert_eq!(status, 200, "{body}");
    assert!(head.contains("content-type: application/json"));
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["decision"], "DENY");
    assert_eq!(answer["ruleIds"], serde_json::json!(["no-prohibited-uses"]));
    let request = serde_json::json!({"purpose":"advertising","subject":{"id":"ads"},"resource":{"category":"customer-data"}});
    let (decision, rule_ids, reason) = check_over_grpc(&server, &request).await;
    assert_eq!(answer["decision"], decision.as_str());
    assert_eq!(answer["ruleIds"], serde_json::json!(rule_ids));
    assert_eq!(answer["reason"], reason.as_str());

    for (body, status, says) in [
        ("not json", 400, "not JSON"),
        (
            r#"{"purpose":"provide","resource":{"categry":"customer-data"}}"#,
            400,
            "did you mean `category`",
        ),
        (r#"{"purpose":"provide"}"#, 400, "resource.category"),
        (
            r#"{"purpose":"advertising","purpose":"provide","resource":{"category":"customer-data"}}"#,
            400,
            "duplicate key `purpose`",
        ),
        (
            r#"{"purpose":"provide","resource":{"category":"customer-data"},"supported_obligations":[],"supportedObligations":["x"]}"#,
            400,
            "are the same field",
        ),
    ] {
        let (got, _, text) = http(admin, "POST", "/api/check", JSON, Some(body));
        assert_eq!(got, status, "{body}: {text}");
        assert!(text.contains(says), "{body}: {text}");
    }
    let big = format!(r#"{{"purpose":"{}"}}"#, "x".repeat(100_000));
    assert_eq!(http(admin, "POST", "/api/check", JSON, Some(&big)).0, 413);

    // The reverse question: the purposes PermittedPurposes names.
    let (status, _, body) = http(
        admin,
        "POST",
        "/api/permitted-purposes",
        JSON,
        Some(
            r#"{"subject":{"id":"crm"},"resource":{"category":"diagnostic-data","deidentification":"anonymized"}}"#,
        ),
    );
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    let mut reverse = check_request("", "diagnostic-data");
    if let Some(resource) = reverse.resource.as_mut() {
        resource.deidentification = pb::Deidentification::Anonymized.into();
    }
    let want = DecisionServiceClient::new(channel(&server.url()).await)
        .permitted_purposes(reverse)
        .await
        .unwrap()
        .into_inner();
    let shown: Vec<&str> = answer["purposes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["purpose"].as_str().unwrap())
        .collect();
    let wanted: Vec<&str> = want.purposes.iter().map(|p| p.purpose.as_str()).collect();
    assert_eq!(shown, wanted);
    assert!(wanted.contains(&"lbo.billing"), "{wanted:?}");
    assert_eq!(
        answer["purposes"][0]["ruleIds"],
        serde_json::json!(want.purposes[0].rule_ids)
    );
    let (status, _, text) = http(
        admin,
        "POST",
        "/api/permitted-purposes",
        JSON,
        Some(r#"{"purpose":"provide","resource":{"category":"customer-data"}}"#),
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("must be empty"), "{text}");
    assert_eq!(http(admin, "GET", "/nothing", &[], None).0, 404);
    let (status, head, _) = http(admin, "DELETE", "/api/policy", &[], None);
    assert_eq!(status, 405);
    assert!(head.contains("allow: get, head"), "{head}");
    // A form post from another page is not JSON: refused.
    let (status, _, text) = http(
        admin,
        "POST",
        "/api/check",
        &["Content-Type: application/x-www-form-urlencoded"],
        Some(r#"{"purpose":"provide","resource":{"category":"customer-data"}}"#),
    );
    assert_eq!(status, 415, "{text}");
    // A name that is not this machine's (DNS rebinding) is refused.
    let (status, _, text) = http(admin, "GET", "/api/policy", &["Host: evil.example"], None);
    assert_eq!(status, 421, "{text}");
    assert_eq!(
        http(admin, "GET", "/", &["Host: localhost:9091"], None).0,
        200
    );
    let (status, _, body) = http(admin, "HEAD", "/", &[], None);
    assert_eq!((status, body.trim()), (200, ""));

    // The policy document's ETag makes polling cheap.
    let (status, head, _) = http(admin, "GET", "/api/policy", &[], None);
    assert_eq!(status, 200);
    let etag = head
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .unwrap()
        .trim()
        .to_string();
    let (status, _, _) = http(
        admin,
        "GET",
        "/api/policy",
        &[&format!("If-None-Match: {etag}")],
        None,
    );
    assert_eq!(status, 304);

    // The page itself, and its assets, from the binary.
    let (status, head, page) = http(admin, "GET", "/", &[], None);
    assert_eq!(status, 200);
    assert!(head.contains("content-security-policy"), "{head}");
    assert!(
        page.contains(
            r#"data-purpose="advertising" data-category="customer-data" data-kind="deny""#
        )
    );
    assert_eq!(http(admin, "GET", "/explorer.css", &[], None).0, 200);
    assert_eq!(http(admin, "GET", "/explorer.js", &[], None).0, 200);
    // Still serving after all that.
    assert_eq!(http(admin, "GET", "/api/policy", &[], None).0, 200);
}

#[test]
fn the_page_shows_the_last_reload_error() {
    let dir = TempDir::new("explorer-reload-error");
    let path = dir.write("policy.yaml", &default_policy_text());
    let server = ServerProcess::start(&["--decision-log", "off", "--policy", &path]);
    let admin = server.admin_addr.unwrap();
    std::fs::write(
        &path,
        "version: 1\nname: broken\nrules: [{id: r, effect: permit, purposes: [nope]}]\n",
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, _, page) = http(admin, "GET", "/", &[], None);
        if page.contains(r#"id="reload-error""#) {
            assert!(page.contains("unknown purpose"), "the error is shown");
            assert!(
                page.contains("online-services-dpa"),
                "the good revision still serves"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no reload error on the page"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

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
    assert!(want.contains(&"provide.personalization"), "{want:?}");
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

/// The default policy with a rule that permits billing on customer data
/// whatever its state: customer data for billing widened (and diagnostic
/// data derived from it).
fn billing_anything() -> String {
    format!(
        "{}\n  - id: billing-anything\n    effect: permit\n    dataCategories: [customer-data]\n    purposes: [lbo.billing]\n",
        default_policy_text().trim_end()
    )
}

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

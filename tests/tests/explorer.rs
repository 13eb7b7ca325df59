//! The policy explorer on the server's admin port: its JSON checked cell
//! by cell against `Check` over gRPC, its JSON API, and the page saying
//! the last reload failed. The page in real headless Chromium is
//! `explorer_browser.rs`; `/api/diff` and `/compare`, `explorer_compare.rs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers: a failed setup must fail the test"
)]

use pb::decision_service_client::DecisionServiceClient;
use purposegate_proto::v1 as pb;
use purposegate_tests::explorer::{check_over_grpc, http, policy_json, to_proto};
use purposegate_tests::{ServerProcess, TempDir, channel, check_request, default_policy_text};
use serde_json::Value;

const JSON: &[&str] = &["Content-Type: application/json"];

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
            let mut batch = grid(
                cell["purpose"].as_str().unwrap(),
                cell["category"].as_str().unwrap(),
            );
            // A purpose that depends on choices: the cell shows what the
            // rules permit where the choices allow it, and the server's
            // store holds none, so every request names an owner tenant.
            if cell.get("choices").is_some() {
                for req in &mut batch {
                    let resource = req.resource.as_mut().unwrap();
                    if resource.owner_tenant.is_empty() {
                        resource.owner_tenant = "t1".into();
                    }
                }
            }
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
                // The bare request names no owner tenant: whose choices
                // to read is not said.
                "permit" if cell.get("choices").is_some() => {
                    assert_eq!(answer.decision(), pb::Decision::Indeterminate, "{what}")
                }
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
    // The default policy's personalisation is the tenant's to switch off:
    // its permitted cells say so, in the JSON and on the page; no other
    // cell does.
    let marked: Vec<String> = doc["matrix"]["cells"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter())
        .filter(|cell| cell.get("choices").is_some())
        .map(|cell| {
            format!(
                "{}/{}",
                cell["purpose"].as_str().unwrap(),
                cell["category"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        marked
            .iter()
            .all(|m| m.starts_with("provide.personalization/")),
        "{marked:?}"
    );
    assert!(
        marked.contains(&"provide.personalization/customer-data".to_string()),
        "{marked:?}"
    );
    let (status, page) = purposegate_tests::http_get(server.admin_addr.unwrap(), "/");
    assert_eq!(status, 200);
    assert!(
        page.contains(r#"data-purpose="provide.personalization" data-category="customer-data" data-kind="permit" data-choices="yes""#),
        "the page marks the cell"
    );
    assert!(
        page.contains("Depends on the tenant&#39;s configuration (on unless switched off)")
            || page.contains("Depends on the tenant's configuration (on unless switched off)")
    );
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

#[tokio::test]
async fn the_explorer_decides_on_the_choices_store_and_shows_what_it_read() {
    let server = ServerProcess::start(&["--decision-log", "off", "--choices-writers", "*"]);
    let admin = server.admin_addr.unwrap();
    let ask = r#"{"purpose":"provide.personalization","resource":{"category":"customer-data","ownerTenant":"contoso","dataSubject":"u-42"}}"#;
    let decided = |body: &str| -> Value {
        let (status, _, body) = http(
            admin,
            "POST",
            "/api/check",
            &["Content-Type: application/json"],
            Some(body),
        );
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    };
    // On by default for the tenant: permitted, as Check permits it.
    assert_eq!(decided(ask)["decision"], "PERMIT");
    let mut choices =
        pb::choices_service_client::ChoicesServiceClient::new(channel(&server.url()).await);
    choices
        .record_choice(pb::RecordChoiceRequest {
            tenant: "contoso".into(),
            purpose: "provide.personalization".into(),
            state: pb::ChoiceState::Withdrawn.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let denied = decided(ask);
    assert_eq!(denied["decision"], "DENY", "{denied}");
    assert!(
        denied["reason"]
            .as_str()
            .unwrap()
            .contains("switched off by tenant `contoso`"),
        "{denied}"
    );
    // The try form takes the data subject and shows the choices read.
    let (status, page) = purposegate_tests::http_get(
        admin,
        "/?purpose=provide.personalization&category=customer-data&owner_tenant=contoso&data_subject=u-42",
    );
    assert_eq!(status, 200);
    assert!(
        page.contains(r#"name="data_subject""#),
        "the form has the field"
    );
    assert!(
        page.contains(r#"data-decision="DENY""#),
        "the try was denied"
    );
    let read = page
        .split(r#"id="result-choices">"#)
        .nth(1)
        .and_then(|rest| rest.split("</dd>").next())
        .unwrap_or_else(|| panic!("no choices shown"));
    assert!(
        read.contains("<code>provide.personalization</code> withdrawn")
            && read.contains("data subject: none recorded")
            && read.contains("revision 1"),
        "{read}"
    );
}

//! The server's OpenID AuthZEN 1.0 API from outside: a client written from
//! the specification and its certification scenario (`tests/authzen/
//! conformance.py`, Python `requests`) against the real server, every
//! default-policy case checked against gRPC `Check` too, and the edges a
//! client can push: h2c, TLS, the base URL, the body limit, slow and
//! repeated headers, the decision log, metrics and the span.

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
    AuthZenClient, OtlpReceiver, Pki, ServerProcess, TempDir, channel, curl, eventually, metric,
    repo_root,
};
use serde_json::{Value, json};

const JSON: &str = "Content-Type: application/json";

/// Runs the conformance client's `suite` against `server`; its output.
fn conformance(server: &ServerProcess, suite: &str, extra: &[&str]) -> String {
    let run = std::process::Command::new("python3")
        .arg(repo_root().join("tests/authzen/conformance.py"))
        .args(["--base-url", &server.authzen_url(), "--suite", suite])
        .args(extra)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("python3: {e}"));
    let stdout = String::from_utf8_lossy(&run.stdout).to_string();
    assert!(
        run.status.success(),
        "the AuthZEN client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    stdout
}

/// `N passed, M failed, K skipped` of the client's last line.
fn counts(output: &str) -> (usize, usize) {
    let last = output.lines().last().unwrap_or_default();
    let number = |word: &str| -> usize {
        last.split(", ")
            .find_map(|part| part.strip_suffix(word))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no `{word}` count in {last:?}"))
    };
    (number(" passed"), number(" failed"))
}

#[test]
fn the_specifications_examples_and_the_certification_cases_pass() {
    let policy = repo_root().join("tests/authzen/examples-policy.yaml");
    let server = ServerProcess::start(&[
        "--decision-log",
        "off",
        "--policy",
        &policy.display().to_string(),
    ]);
    let output = conformance(&server, "examples", &[]);
    let (passed, failed) = counts(&output);
    assert_eq!(failed, 0, "{output}");
    assert!(passed >= 100, "{output}");
    // Every example of the sections the issue names is a case that ran.
    for case in [
        "spec/access-evaluation-request",
        "spec/evaluations/no-defaults",
        "spec/evaluations/default-subject-context",
        "spec/evaluations/default-action-overridden",
        "spec/evaluations-semantics/execute_all",
        "spec/evaluations-semantics/deny_on_first_deny",
        "spec/evaluations-semantics/permit_on_first_permit",
        "spec/action-search",
        "spec/search-pagination",
        "spec/search-pagination/changed-request",
        "c-6-2",
        "c-6-3",
        "spec/pdp-metadata/head",
        "c-2-4-1/missing-subject",
        "c-2-4-2/resource-without-id",
        "c-2-4-3",
        "c-2-4-4",
        "c-2-4-5",
        "c-2-4-6/subject-a-string",
        "c-2-5-1",
        "c-3-4-1",
        "c-3-4-2",
        "c-3-4-3",
        "c-4-4-1",
        "c-4-6-1",
        "c-4-7-1/action-search",
        "c-4-7-2/action-search",
    ] {
        assert!(
            output.lines().any(|l| l == format!("ok   {case}")),
            "{case} did not pass:\n{output}"
        );
    }
}

#[tokio::test]
async fn the_default_policy_cases_pass_and_agree_with_check() {
    let server = ServerProcess::start(&["--decision-log", "off"]);
    let output = conformance(&server, "default", &[]);
    let (passed, failed) = counts(&output);
    assert_eq!(failed, 0, "{output}");
    assert!(passed >= 40, "{output}");

    // The expectations of the case file are Check's: it cannot drift.
    let path = repo_root().join("tests/authzen/default-policy-cases.json");
    let cases: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut grpc = DecisionServiceClient::new(channel(&server.url()).await);
    let mut checked = 0;
    let mut single: Vec<(Value, Value)> = cases["single"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["request"].clone(), c.clone()))
        .collect();
    for batch in cases["batches"].as_array().unwrap() {
        let request = &batch["request"];
        let items = request["evaluations"].as_array().unwrap();
        // Only execute_all answers every item.
        if request["options"]["evaluations_semantic"]
            .as_str()
            .unwrap_or("execute_all")
            != "execute_all"
        {
            continue;
        }
        for (item, want) in items.iter().zip(batch["expected"].as_array().unwrap()) {
            let mut merged = request.clone();
            merged.as_object_mut().unwrap().remove("evaluations");
            merged.as_object_mut().unwrap().remove("options");
            for (k, v) in item.as_object().unwrap() {
                merged[k] = v.clone();
            }
            single.push((merged, want.clone()));
        }
    }
    for (request, want) in single {
        let answer = grpc
            .check(check_request_of(&request))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            want["context_decision"],
            json!(answer.decision().as_str_name()),
            "{request}"
        );
        assert_eq!(want["rule_ids"], json!(answer.rule_ids), "{request}");
        assert_eq!(
            want["decision"],
            json!(answer.decision() == pb::Decision::Permit),
            "{request}"
        );
        checked += 1;
    }
    assert!(checked >= 40, "{checked}");
}

/// The `CheckRequest` an AuthZEN request stands for (the mapping of the
/// README, written out a second time, independently of the server's).
fn check_request_of(r: &Value) -> pb::CheckRequest {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().map(text).collect())
            .unwrap_or_default()
    };
    let map = |v: &Value| -> std::collections::HashMap<String, String> {
        v.as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), text(v))).collect())
            .unwrap_or_default()
    };
    let either = |v: &Value, snake: &str, camel: &str| -> Value {
        v.get(snake)
            .or_else(|| v.get(camel))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let sp = &r["subject"]["properties"];
    let rp = &r["resource"]["properties"];
    let mut attributes = map(&rp["attributes"]);
    attributes.insert("id".into(), text(&r["resource"]["id"]));
    let deidentification = match text(&rp["deidentification"]).to_ascii_uppercase().as_str() {
        "" => pb::Deidentification::Unspecified,
        name => pb::Deidentification::from_str_name(name).unwrap_or_else(|| panic!("{name}")),
    };
    let group_size = either(rp, "group_size", "groupSize");
    pb::CheckRequest {
        subject: Some(pb::Subject {
            id: text(&r["subject"]["id"]),
            tenant: text(&sp["tenant"]),
            roles: list(&sp["roles"]),
        }),
        resource: Some(pb::Resource {
            category: text(&r["resource"]["type"]),
            owner_tenant: text(&either(rp, "owner_tenant", "ownerTenant")),
            data_subject: String::new(),
            deidentification: deidentification.into(),
            group_size: group_size
                .as_u64()
                .or_else(|| group_size.as_str().and_then(|s| s.parse().ok()))
                .unwrap_or(0),
            origin: list(&rp["origin"]),
            attributes,
        }),
        purpose: text(&r["action"]["name"]),
        context: Some(pb::Context {
            customer_instruction: text(&either(
                &r["context"],
                "customer_instruction",
                "customerInstruction",
            )),
            attributes: map(&r["context"]["attributes"]),
        }),
        supported_obligations: list(&either(
            &r["context"],
            "supported_obligations",
            "supportedObligations",
        )),
        ..Default::default()
    }
}

const CRM_PROVIDE: &str = r#"{"subject":{"type":"workload","id":"crm"},"action":{"name":"provide"},"resource":{"type":"customer-data","id":"c-3"}}"#;

#[test]
fn h2c_and_the_base_url_and_the_limits() {
    let server = ServerProcess::start(&[
        "--decision-log",
        "off",
        "--authzen-base-url",
        "https://pdp.example.com/authz/",
        "--authzen-max-body",
        "4Ki",
    ]);
    let url = server.authzen_url();
    // HTTP/2 with prior knowledge, as gateways speak it.
    let h2 = curl(&[
        "--http2-prior-knowledge",
        &format!("{url}/access/v1/evaluation"),
        "-H",
        JSON,
        "-d",
        CRM_PROVIDE,
    ]);
    assert!(h2.headers.starts_with("http/2 200"), "{}", h2.headers);
    assert!(h2.body.starts_with(r#"{"decision":true,"#), "{}", h2.body);
    // The metadata names the configured base, whatever Host says.
    let meta = curl(&[
        &format!("{url}/.well-known/authzen-configuration"),
        "-H",
        "Host: evil.example",
    ]);
    let meta: Value = serde_json::from_str(&meta.body).unwrap();
    assert_eq!(
        meta["policy_decision_point"],
        "https://pdp.example.com/authz"
    );
    assert_eq!(
        meta["search_action_endpoint"],
        "https://pdp.example.com/authz/access/v1/search/action"
    );
    // Past the body limit: 413, and the server goes on.
    let big = format!(
        r#"{{"subject":{{"type":"u","id":"a"}},"pad":"{}"}}"#,
        "x".repeat(8 * 1024)
    );
    let refused = curl(&[
        &format!("{url}/access/v1/evaluation"),
        "-H",
        JSON,
        "-d",
        &big,
    ]);
    assert_eq!(refused.status, 413, "{}", refused.body);
    assert!(
        refused.body.contains("--authzen-max-body"),
        "{}",
        refused.body
    );
    // X-Request-ID twice is refused; once, it is echoed.
    let twice = curl(&[
        &format!("{url}/access/v1/evaluation"),
        "-H",
        JSON,
        "-H",
        "X-Request-ID: a",
        "-H",
        "X-Request-ID: b",
        "-d",
        CRM_PROVIDE,
    ]);
    assert_eq!(twice.status, 400, "{}", twice.body);
    assert!(twice.body.contains("more than once"), "{}", twice.body);
    let once = curl(&[
        &format!("{url}/access/v1/evaluation"),
        "-H",
        JSON,
        "-H",
        "X-Request-ID: 7f3a",
        "-d",
        CRM_PROVIDE,
    ]);
    assert!(
        once.headers.contains("x-request-id: 7f3a"),
        "{}",
        once.headers
    );
    // Subject and resource search are not offered, and say where to look.
    let none = curl(&[
        &format!("{url}/access/v1/search/subject"),
        "-H",
        JSON,
        "-d",
        "{}",
    ]);
    assert_eq!(none.status, 404);
    assert!(none.body.contains("authzen-configuration"), "{}", none.body);
}

#[test]
fn a_slow_body_is_cut_off_and_others_are_answered() {
    use std::io::{Read, Write};
    let server = ServerProcess::start(&["--decision-log", "off"]);
    let addr = server.authzen_addr.unwrap();
    // A request that promises a body and never sends it.
    let mut slow = std::net::TcpStream::connect(addr).unwrap();
    slow.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    write!(
        slow,
        "POST /access/v1/evaluation HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
    )
    .unwrap();
    // Meanwhile another caller is answered at once.
    let client = AuthZenClient::new(&server.authzen_url());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (status, answer) = runtime.block_on(client.post(
        "/access/v1/evaluation",
        &serde_json::from_str(CRM_PROVIDE).unwrap(),
    ));
    assert_eq!((status, answer["decision"].clone()), (200, json!(true)));
    let started = std::time::Instant::now();
    let mut reply = String::new();
    let _ = slow.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
}

#[tokio::test]
async fn a_decision_is_logged_counted_and_traced_as_check_is() {
    let receiver = OtlpReceiver::start().await;
    let endpoint = receiver.endpoint();
    let dir = TempDir::new("authzen-log");
    let log = dir.path().join("decisions.jsonl").display().to_string();
    let server = ServerProcess::start_with_env(
        &["--decision-log", &log],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let url = server.authzen_url();
    let asked = curl(&[
        &format!("{url}/access/v1/evaluation"),
        "-H",
        JSON,
        "-H",
        "X-Request-ID: req-42",
        "-H",
        "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "-d",
        r#"{"subject":{"type":"workload","id":"ads"},"action":{"name":"advertising"},"resource":{"type":"customer-data","id":"c-3"}}"#,
    ]);
    assert_eq!(asked.status, 200, "{}", asked.body);
    let (line, _) = eventually("the decision is logged", || async {
        std::fs::read_to_string(&log)
            .ok()?
            .lines()
            .find(|l| l.contains("req-42"))
            .map(str::to_string)
    })
    .await;
    let line: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(line["decision"], "DENY");
    assert_eq!(line["purpose"], "advertising");
    assert_eq!(line["subject"], "ads");
    assert_eq!(line["resource_id"], "c-3");
    assert_eq!(line["rule_ids"], json!(["no-prohibited-uses"]));
    let denied = metric(
        &server.metrics(),
        r#"purposegate_decisions_total{decision="DENY"}"#,
    );
    assert_eq!(denied, Some(1.0));
    let (span, _) = eventually("the span is exported", || async {
        receiver
            .spans()
            .into_iter()
            .find(|s| s.name == "POST /access/v1/evaluation")
    })
    .await;
    let hex: String = span.trace_id.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, "4bf92f3577b34da6a3ce929d0e0e4736");
    let attributes = format!("{:?}", span.attributes);
    assert!(attributes.contains("purposegate.decision"), "{attributes}");
    assert!(attributes.contains("DENY"), "{attributes}");
}

#[test]
fn authzen_speaks_tls_with_the_servers_certificates() {
    let dir = TempDir::new("authzen-tls");
    let trust = Pki::new(dir.path(), "trust");
    let (cert, key) = trust.issue("server", "IP:127.0.0.1,DNS:localhost");
    let server = ServerProcess::start(&[
        "--decision-log",
        "off",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ]);
    let addr = server.authzen_addr.unwrap();
    let url = format!("https://localhost:{}", addr.port());
    let resolve = format!("localhost:{}:127.0.0.1", addr.port());
    let ca = trust.ca();
    for version in ["--http1.1", "--http2"] {
        let asked = curl(&[
            version,
            "--cacert",
            &ca,
            "--resolve",
            &resolve,
            &format!("{url}/access/v1/evaluation"),
            "-H",
            JSON,
            "-d",
            CRM_PROVIDE,
        ]);
        assert_eq!(asked.status, 200, "{version}: {}", asked.body);
        assert!(
            asked.body.starts_with(r#"{"decision":true"#),
            "{}",
            asked.body
        );
    }
    let meta = curl(&[
        "--cacert",
        &ca,
        "--resolve",
        &resolve,
        &format!("{url}/.well-known/authzen-configuration"),
    ]);
    let meta: Value = serde_json::from_str(&meta.body).unwrap();
    assert_eq!(meta["policy_decision_point"], json!(url));
    // Plaintext on the TLS port gets no answer.
    let plain = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            &format!("http://{addr}/.well-known/authzen-configuration"),
        ])
        .output()
        .unwrap();
    assert!(!plain.status.success() || plain.stdout.is_empty());
}

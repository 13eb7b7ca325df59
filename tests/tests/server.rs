//! The real `purposegate-server` binary serving on a free loopback port,
//! asked by a real tonic client and by the real grpcurl (how it stops:
//! `server_shutdown.rs`).

use std::time::Duration;

use pb::decision_service_client::DecisionServiceClient;
use purposegate_proto::v1 as pb;
use purposegate_tests::{ServerProcess, channel, check_request, eventually, get_policy, grpcurl};
use tokio_stream::StreamExt;
use tonic::Code;

fn check(purpose: &str, category: &str) -> pb::CheckRequest {
    check_request(purpose, category)
}

async fn client(server: &ServerProcess) -> DecisionServiceClient<tonic::transport::Channel> {
    DecisionServiceClient::new(channel(&server.url()).await)
}

#[tokio::test]
async fn check_answers_with_decision_rules_reason_and_revision() {
    let server = ServerProcess::start(&[]);
    let mut client = client(&server).await;
    let mut req = check("troubleshoot.security-incident", "customer-data");
    req.request_id = "req-1".into();
    let answer = client.check(req).await.unwrap().into_inner();
    assert_eq!(answer.decision(), pb::Decision::Permit);
    assert_eq!(answer.rule_ids, ["online-services"]);
    assert_eq!(answer.request_id, "req-1");
    assert_eq!(answer.ttl_seconds, 300);
    assert_eq!(answer.policy_revision.len(), 16);
    assert!(answer.reason.contains("permitted"), "{}", answer.reason);

    let denied = client
        .check(check("advertising", "customer-data"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(denied.decision(), pb::Decision::Deny);
    assert_eq!(denied.rule_ids, ["no-prohibited-uses"]);
    assert_eq!(denied.policy_revision, answer.policy_revision);
}

#[tokio::test]
async fn check_carries_tenants_deidentification_and_origin() {
    let server = ServerProcess::start(&[]);
    let mut client = client(&server).await;
    let mut req = check(
        "professional-services.planning",
        "professional-services-data",
    );
    req.subject = Some(pb::Subject {
        id: "consultant".into(),
        tenant: "fabrikam".into(),
        roles: vec![],
    });
    req.resource = Some(pb::Resource {
        category: "professional-services-data".into(),
        owner_tenant: "contoso".into(),
        ..Default::default()
    });
    let answer = client.check(req).await.unwrap().into_inner();
    assert_eq!(answer.decision(), pb::Decision::Deny);

    let mut lbo = check("lbo.internal-reporting", "service-generated-data");
    lbo.resource = Some(pb::Resource {
        category: "service-generated-data".into(),
        deidentification: pb::Deidentification::Aggregated.into(),
        group_size: 49,
        origin: vec!["customer-data".into()],
        ..Default::default()
    });
    let below_k = client.check(lbo.clone()).await.unwrap().into_inner();
    assert_eq!(below_k.decision(), pb::Decision::NotApplicable);
    if let Some(r) = lbo.resource.as_mut() {
        r.group_size = 50;
    }
    let at_k = client.check(lbo).await.unwrap().into_inner();
    assert_eq!(at_k.decision(), pb::Decision::Permit, "{at_k:?}");
}

#[tokio::test]
async fn invalid_requests_are_invalid_argument_naming_the_field() {
    let server = ServerProcess::start(&[]);
    let mut client = client(&server).await;
    let err = client.check(check("", "customer-data")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "field `purpose` must not be empty");

    let err = client.check(check("provide", "")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "field `resource.category` must not be empty");

    let mut bad_enum = check("provide", "customer-data");
    if let Some(r) = bad_enum.resource.as_mut() {
        r.deidentification = 42;
    }
    let err = client.check(bad_enum).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("resource.deidentification"),
        "{err:?}"
    );

    // Each origin is an evaluation of its own: a bounded number.
    let mut many_origins = check("provide", "customer-data");
    if let Some(r) = many_origins.resource.as_mut() {
        r.origin = (0..65).map(|i| format!("category-{i}")).collect();
    }
    let err = client.check(many_origins).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "field `resource.origin` lists 65 categories; at most 64 are accepted"
    );

    // Every field has a limit, named in the refusal.
    let mut long_subject = check("provide", "customer-data");
    if let Some(s) = long_subject.subject.as_mut() {
        s.id = "s".repeat(3000);
    }
    let err = client.check(long_subject).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "field `subject.id` is 3000 bytes long; at most 2048 are accepted"
    );
    let mut many_attributes = check("provide", "customer-data");
    if let Some(r) = many_attributes.resource.as_mut() {
        r.attributes = (0..40).map(|i| (format!("k{i}"), "v".into())).collect();
    }
    let err = client.check(many_attributes).await.unwrap_err();
    assert_eq!(
        err.message(),
        "field `resource.attributes` has 40 entries; at most 32 are accepted"
    );
    // 300,000 of them: the message is refused by its size, before decoding.
    let mut huge = check("provide", "customer-data");
    if let Some(r) = huge.resource.as_mut() {
        r.attributes = (0..300_000)
            .map(|i| (format!("k{i}"), "v".into()))
            .collect();
    }
    let err = client.check(huge).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);
    assert!(
        err.message().contains("at most 131072 are accepted"),
        "{err:?}"
    );

    // Unknown ids are answers, not errors.
    let answer = client
        .check(check("lbo.biling", "diagnostic-data"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.decision(), pb::Decision::NotApplicable);
    assert!(
        answer.reason.contains("did you mean `lbo.billing`?"),
        "{}",
        answer.reason
    );

    // The server keeps serving after bad input.
    let ok = client
        .check(check("provide", "customer-data"))
        .await
        .unwrap();
    assert_eq!(ok.into_inner().decision(), pb::Decision::Permit);
}

#[tokio::test]
async fn check_batch_answers_in_order_and_enforces_its_maximum() {
    let server = ServerProcess::start(&["--max-batch", "3"]);
    let mut client = client(&server).await;
    let requests = vec![
        check("advertising", "customer-data"),
        check("provide", "customer-data"),
        check("astrology", "customer-data"),
    ];
    let answers = client
        .check_batch(pb::CheckBatchRequest {
            requests: requests.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .responses;
    let decisions: Vec<pb::Decision> = answers.iter().map(|a| a.decision()).collect();
    assert_eq!(
        decisions,
        [
            pb::Decision::Deny,
            pb::Decision::Permit,
            pb::Decision::NotApplicable
        ]
    );

    let mut four = requests.clone();
    four.push(check("provide", "customer-data"));
    let err = client
        .check_batch(pb::CheckBatchRequest { requests: four })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("at most 3"), "{err:?}");

    let mut one_bad = requests;
    one_bad[1].purpose.clear();
    let err = client
        .check_batch(pb::CheckBatchRequest { requests: one_bad })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "field `requests[1].purpose` must not be empty"
    );
}

#[tokio::test]
async fn flags_can_come_from_the_environment() {
    let server = ServerProcess::start_with_env(&[], &[("PURPOSEGATE_MAX_BATCH", "2")]);
    let mut client = client(&server).await;
    let err = client
        .check_batch(pb::CheckBatchRequest {
            requests: vec![check("provide", "customer-data"); 3],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("at most 2"), "{err:?}");
}

#[tokio::test]
async fn get_policy_describes_trees_rules_and_revision() {
    let server = ServerProcess::start(&[]);
    let mut client = client(&server).await;
    let info = get_policy(&mut client).await;
    assert_eq!(info.name, "online-services-dpa");
    assert_eq!(info.revision.len(), 16);
    assert!(info.last_reload_error.is_empty());
    let roots: Vec<&str> = info.purposes.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(
        roots,
        [
            "provide",
            "troubleshoot",
            "improve",
            "professional-services",
            "lbo",
            "profiling",
            "advertising",
            "market-research"
        ]
    );
    let lbo = info.purposes.iter().find(|p| p.id == "lbo").unwrap();
    assert_eq!(lbo.children.len(), 6);
    assert!(lbo.children.iter().any(|c| c.id == "lbo.billing"));
    assert_eq!(info.data_categories.len(), 4);
    assert_eq!(info.rules.len(), 6);
    let agg = info
        .rules
        .iter()
        .find(|r| r.id == "lbo-aggregated")
        .unwrap();
    assert_eq!(agg.effect, "permit");
    assert!(agg.when.contains("at least 50"), "{}", agg.when);
}

#[tokio::test]
async fn watch_policy_sends_the_current_revision_first() {
    let server = ServerProcess::start(&[]);
    let mut client = client(&server).await;
    let info = get_policy(&mut client).await;
    let mut a = client
        .watch_policy(pb::WatchPolicyRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut b = client
        .watch_policy(pb::WatchPolicyRequest {})
        .await
        .unwrap()
        .into_inner();
    for stream in [&mut a, &mut b] {
        let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("a revision within 5 s")
            .expect("an item")
            .expect("not an error");
        assert_eq!(first.revision, info.revision);
        assert_eq!(first.name, "online-services-dpa");
    }
}

#[test]
fn grpcurl_lists_describes_and_calls_without_a_proto_file() {
    let server = ServerProcess::start(&[]);
    let addr = server.addr.to_string();

    let list = grpcurl(&["-plaintext", &addr, "list"], None);
    assert_eq!(list.code, Some(0), "{list:?}");
    for service in ["purposegate.v1.DecisionService", "grpc.health.v1.Health"] {
        assert!(list.stdout.lines().any(|l| l == service), "{list:?}");
    }

    let describe = grpcurl(
        &[
            "-plaintext",
            &addr,
            "describe",
            "purposegate.v1.CheckRequest",
        ],
        None,
    );
    assert_eq!(describe.code, Some(0), "{describe:?}");
    for field in [
        "purpose",
        "supported_obligations",
        "request_id",
        ".purposegate.v1.Resource resource",
    ] {
        assert!(describe.stdout.contains(field), "{field}: {describe:?}");
    }

    let call = grpcurl(
        &[
            "-plaintext",
            "-d",
            r#"{"purpose":"provide","resource":{"category":"customer-data"},"subject":{"id":"crm"}}"#,
            &addr,
            "purposegate.v1.DecisionService/Check",
        ],
        None,
    );
    assert_eq!(call.code, Some(0), "{call:?}");
    let json: serde_json::Value = serde_json::from_str(&call.stdout).unwrap();
    assert_eq!(json["decision"], "PERMIT");
    assert_eq!(json["ruleIds"], serde_json::json!(["online-services"]));

    let health = grpcurl(&["-plaintext", &addr, "grpc.health.v1.Health/Check"], None);
    assert_eq!(health.code, Some(0), "{health:?}");
    assert!(health.stdout.contains("SERVING"), "{health:?}");

    let invalid = grpcurl(
        &[
            "-plaintext",
            "-d",
            r#"{"purpose":"provide"}"#,
            &addr,
            "purposegate.v1.DecisionService/Check",
        ],
        None,
    );
    assert_ne!(invalid.code, Some(0), "{invalid:?}");
    assert!(invalid.stderr.contains("InvalidArgument"), "{invalid:?}");
    assert!(invalid.stderr.contains("resource.category"), "{invalid:?}");
}

#[test]
fn an_invalid_policy_at_startup_exits_1_with_its_diagnostics() {
    let dir = purposegate_tests::TempDir::new("serve-bad");
    let path = dir.write(
        "bad.yaml",
        "version: 1\nname: bad\nrules: [{id: r, effect: permit, purposes: [nope]}]\n",
    );
    let run = std::process::Command::new(purposegate_tests::binary("purposegate-server"))
        .args(["--listen", "127.0.0.1:0", "--policy", &path])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("unknown purpose `nope`"), "{stderr}");
}

#[tokio::test]
async fn every_decision_is_one_json_line_in_the_decision_log() {
    let dir = purposegate_tests::TempDir::new("decision-log");
    let log_path = dir.path().join("decisions.jsonl");
    let server = ServerProcess::start(&["--decision-log", &log_path.display().to_string()]);
    let mut client = client(&server).await;
    let mut req = check("advertising", "customer-data");
    req.request_id = "audit-1".into();
    req.subject = Some(pb::Subject {
        id: "ads-svc".into(),
        tenant: "contoso".into(),
        roles: vec![],
    });
    let answer = client.check(req).await.unwrap().into_inner();

    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let (line, _) = eventually("the decision is logged", || async {
        read_log()
            .lines()
            .find(|l| l.contains("audit-1"))
            .map(str::to_string)
    })
    .await;
    let record: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(record["request_id"], "audit-1");
    assert_eq!(record["subject"], "ads-svc");
    assert_eq!(record["tenant"], "contoso");
    assert_eq!(record["purpose"], "advertising");
    assert_eq!(record["category"], "customer-data");
    assert_eq!(record["decision"], "DENY");
    assert_eq!(
        record["rule_ids"],
        serde_json::json!(["no-prohibited-uses"])
    );
    assert_eq!(record["revision"], answer.policy_revision.as_str());
    assert!(record["latency_us"].is_u64(), "{record}");
    assert!(
        record["time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{record}"
    );

    // A batch logs each of its decisions.
    let batch: Vec<pb::CheckRequest> = (0..3)
        .map(|i| {
            let mut r = check("provide", "customer-data");
            r.request_id = format!("batch-{i}");
            r
        })
        .collect();
    client
        .check_batch(pb::CheckBatchRequest { requests: batch })
        .await
        .unwrap();
    eventually("each decision of the batch is logged", || async {
        let text = read_log();
        (0..3)
            .all(|i| text.contains(&format!("\"batch-{i}\"")))
            .then_some(())
    })
    .await;
}

/// A message that says `purpose` (field 3) is a number: not a CheckRequest
/// any client should send.
#[derive(Clone, PartialEq, prost::Message)]
struct WrongWireType {
    #[prost(uint64, tag = "3")]
    purpose: u64,
}

#[tokio::test]
async fn oversized_and_malformed_messages_are_refused_and_the_server_keeps_serving() {
    let server = ServerProcess::start(&["--decision-log", "off"]);
    let channel = channel(&server.url()).await;
    let mut client =
        DecisionServiceClient::new(channel.clone()).max_encoding_message_size(16 * 1024 * 1024);

    // Above the 128 KiB a Check may take.
    let mut huge = check("provide", "customer-data");
    if let Some(r) = huge.resource.as_mut() {
        r.attributes
            .insert("padding".into(), "x".repeat(5 * 1024 * 1024));
    }
    let err = client.check(huge).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");

    // Bytes that are no CheckRequest.
    let mut raw = tonic::client::Grpc::new(channel.clone());
    raw.ready().await.unwrap();
    let err = raw
        .unary::<_, pb::CheckResponse, _>(
            tonic::Request::new(WrongWireType { purpose: 7 }),
            tonic::codegen::http::uri::PathAndQuery::from_static(
                "/purposegate.v1.DecisionService/Check",
            ),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    // tonic refuses to decode it: INTERNAL, saying only that the message
    // could not be decoded, not where in the server that happened.
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(err.message().contains("decode"), "{err:?}");
    assert!(
        !err.message().contains(".rs"),
        "no source paths leak: {err:?}"
    );

    // Still serving, the same answers.
    let answer = client
        .check(check("provide", "customer-data"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.decision(), pb::Decision::Permit);
}

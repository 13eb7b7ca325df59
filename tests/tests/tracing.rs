//! Every Check is a span exported over OTLP to a real receiver, a child of
//! the caller's W3C `traceparent`.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: a failed setup must fail the test"
)]

use pb::decision_service_client::DecisionServiceClient;
use purposegate_proto::v1 as pb;
use purposegate_tests::{OtlpReceiver, ServerProcess, channel, eventually};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(span: &opentelemetry_proto::tonic::trace::v1::Span, key: &str) -> String {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    let value = span
        .attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
        .unwrap_or_else(|| panic!("no attribute {key} on {span:?}"));
    match value {
        Value::StringValue(s) => s.clone(),
        Value::ArrayValue(a) => a
            .values
            .iter()
            .filter_map(|v| match &v.value {
                Some(Value::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(","),
        other => format!("{other:?}"),
    }
}

#[tokio::test]
async fn a_check_is_a_span_in_the_callers_trace() {
    let receiver = OtlpReceiver::start().await;
    let endpoint = receiver.endpoint();
    let server = ServerProcess::start_with_env(
        &["--decision-log", "off"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_SERVICE_NAME", "pdp-under-test"),
        ],
    );
    let mut client = DecisionServiceClient::new(channel(&server.url()).await);
    let mut request = tonic::Request::new(pb::CheckRequest {
        purpose: "advertising".into(),
        resource: Some(pb::Resource {
            category: "customer-data".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01")
            .parse()
            .unwrap(),
    );
    let answer = client.check(request).await.unwrap().into_inner();

    let (span, _) = eventually("the receiver gets the Check span", || async {
        receiver
            .spans()
            .into_iter()
            .find(|s| s.name == "purposegate.v1.DecisionService/Check")
    })
    .await;
    assert_eq!(hex(&span.trace_id), TRACE_ID);
    assert_eq!(hex(&span.parent_span_id), PARENT_SPAN_ID);
    assert_eq!(attribute(&span, "purposegate.decision"), "DENY");
    assert_eq!(attribute(&span, "purposegate.purpose"), "advertising");
    assert_eq!(
        attribute(&span, "purposegate.data_category"),
        "customer-data"
    );
    assert_eq!(
        attribute(&span, "purposegate.rule_ids"),
        "no-prohibited-uses"
    );
    assert_eq!(
        attribute(&span, "purposegate.policy_revision"),
        answer.policy_revision
    );
    assert_eq!(attribute(&span, "rpc.method"), "Check");
}

#[tokio::test]
async fn an_unreachable_collector_never_fails_a_check() {
    // Nothing listens on this port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let server = ServerProcess::start_with_env(
        &["--decision-log", "off"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
    );
    let mut client = DecisionServiceClient::new(channel(&server.url()).await);
    for _ in 0..200 {
        let answer = client
            .check(pb::CheckRequest {
                purpose: "provide".into(),
                resource: Some(pb::Resource {
                    category: "customer-data".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.decision(), pb::Decision::Permit);
    }
}

//! Every Check is a span exported over OTLP to a real receiver, a child of
//! the caller's W3C `traceparent`.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: a failed setup must fail the test"
)]

use pb::decision_service_client::DecisionServiceClient;
use purposegate_demo_service::pb::{
    GetCustomerRequest, customer_service_client::CustomerServiceClient,
};
use purposegate_proto::v1 as pb;
use purposegate_tests::{
    DemoService, OtlpReceiver, ServerProcess, SidecarProcess, channel, demo_behind_sidecar,
    eventually, metric,
};

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

fn attribute_bool(span: &opentelemetry_proto::tonic::trace::v1::Span, key: &str) -> bool {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    match span
        .attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
    {
        Some(Value::BoolValue(b)) => *b,
        other => panic!("{key} is not a boolean: {other:?}"),
    }
}

/// Receiver, server, demo app and sidecar, all tracing to the receiver.
struct TracedStack {
    receiver: OtlpReceiver,
    _server: ServerProcess,
    demo: DemoService,
    sidecar: SidecarProcess,
}

impl TracedStack {
    async fn start(sidecar_args: &[&str]) -> Self {
        let receiver = OtlpReceiver::start().await;
        let endpoint = receiver.endpoint();
        let otel = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ];
        let server = ServerProcess::start_with_env(&["--decision-log", "off"], &otel);
        let (demo, sidecar) = demo_behind_sidecar(&server.url(), sidecar_args, &otel);
        TracedStack {
            receiver,
            _server: server,
            demo,
            sidecar,
        }
    }
}

/// The sidecar makes every decision a span in the intercepted call's trace,
/// and the PDP's Check span joins the same trace under it.
#[tokio::test]
async fn sidecar_decisions_are_spans_in_the_callers_trace() {
    let stack = TracedStack::start(&[]).await;
    let (receiver, sidecar) = (&stack.receiver, &stack.sidecar);
    let mut client = CustomerServiceClient::new(channel(&sidecar.proxy_url()).await);

    let call = |purpose: &str, trace: &str, parent: &str| {
        let mut request = tonic::Request::new(GetCustomerRequest { id: "c-1".into() });
        let metadata = request.metadata_mut();
        metadata.insert("x-purpose", purpose.parse().unwrap());
        metadata.insert(
            "traceparent",
            format!("00-{trace}-{parent}-01").parse().unwrap(),
        );
        request
    };
    const DENIED_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
    const DENIED_PARENT: &str = "b7ad6b7169203331";
    client
        .get_customer(call("provide", TRACE_ID, PARENT_SPAN_ID))
        .await
        .unwrap();
    let err = client
        .get_customer(call("advertising", DENIED_TRACE, DENIED_PARENT))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);

    let decision_span = |trace: &'static str| {
        let receiver = receiver.clone();
        move || {
            let receiver = receiver.clone();
            async move {
                receiver
                    .spans()
                    .into_iter()
                    .find(|s| s.name == "purposegate.decision" && hex(&s.trace_id) == trace)
            }
        }
    };
    let (permit, _) = eventually(
        "the permit's decision span arrives",
        decision_span(TRACE_ID),
    )
    .await;
    assert_eq!(hex(&permit.parent_span_id), PARENT_SPAN_ID);
    assert_eq!(attribute(&permit, "purposegate.decision"), "PERMIT");
    assert_eq!(attribute(&permit, "purposegate.purpose"), "provide");
    assert_eq!(
        attribute(&permit, "purposegate.data_category"),
        "customer-data"
    );
    assert_eq!(
        attribute(&permit, "purposegate.rule_ids"),
        "online-services"
    );
    assert_eq!(attribute(&permit, "purposegate.cache"), "miss");
    assert_eq!(attribute(&permit, "purposegate.policy_revision").len(), 16);
    assert!(attribute_bool(&permit, "purposegate.enforced"));

    let (deny, _) = eventually(
        "the denial's decision span arrives",
        decision_span(DENIED_TRACE),
    )
    .await;
    assert_eq!(hex(&deny.parent_span_id), DENIED_PARENT);
    assert_eq!(attribute(&deny, "purposegate.decision"), "DENY");
    assert_eq!(
        attribute(&deny, "purposegate.rule_ids"),
        "no-prohibited-uses"
    );

    // The PDP's span is in the same trace, under the sidecar's decision.
    let (pdp, _) = eventually("the PDP's Check span arrives", || {
        let receiver = receiver.clone();
        async move {
            receiver.spans().into_iter().find(|s| {
                s.name == "purposegate.v1.DecisionService/Check" && hex(&s.trace_id) == TRACE_ID
            })
        }
    })
    .await;
    assert_eq!(pdp.parent_span_id, permit.span_id);
    let dropped = metric(
        &sidecar.metrics(),
        "purposegate_sidecar_spans_dropped_total",
    );
    assert_eq!(dropped, Some(0.0));
}

#[tokio::test]
async fn dry_run_traces_a_denied_call_it_lets_through_as_not_enforced() {
    let stack = TracedStack::start(&["--dry-run"]).await;
    let mut client = CustomerServiceClient::new(channel(&stack.sidecar.proxy_url()).await);
    let mut request = tonic::Request::new(GetCustomerRequest { id: "c-1".into() });
    request
        .metadata_mut()
        .insert("x-purpose", "advertising".parse().unwrap());
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01")
            .parse()
            .unwrap(),
    );
    let customer = client.get_customer(request).await.unwrap().into_inner();
    assert_eq!(customer.id, "c-1");
    assert_eq!(stack.demo.received(), 1);
    let (span, _) = eventually("the dry-run decision span arrives", || {
        let receiver = stack.receiver.clone();
        async move {
            receiver
                .spans()
                .into_iter()
                .find(|s| s.name == "purposegate.decision")
        }
    })
    .await;
    assert_eq!(attribute(&span, "purposegate.decision"), "DENY");
    assert!(!attribute_bool(&span, "purposegate.enforced"));
}

//! The sidecar's proxy between a real client and the real demo app, asking
//! the real server: permitted calls arrive whole, denied ones never arrive.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers: a failed setup must fail the test"
)]

use pb::customer_service_client::CustomerServiceClient;
use purposegate_demo_service::pb;
use purposegate_tests::{
    DemoService, ServerProcess, SidecarProcess, channel, demo_behind_sidecar, repo_root,
};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

const ROUTES: &str = "examples/customer-service/routes.yaml";

struct Stack {
    _server: ServerProcess,
    demo: DemoService,
    sidecar: SidecarProcess,
}

/// Server, demo app and a sidecar in front of the app's gRPC port.
fn stack(extra: &[&str]) -> Stack {
    let server = ServerProcess::start(&["--decision-log", "off"]);
    let (demo, sidecar) = demo_behind_sidecar(&server.url(), extra, &[]);
    Stack {
        _server: server,
        demo,
        sidecar,
    }
}

async fn client(stack: &Stack) -> CustomerServiceClient<Channel> {
    CustomerServiceClient::new(channel(&stack.sidecar.proxy_url()).await)
}

fn with_purpose<T>(message: T, purpose: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if !purpose.is_empty() {
        request
            .metadata_mut()
            .insert("x-purpose", purpose.parse().unwrap());
    }
    request
        .metadata_mut()
        .insert("x-subject", "crm".parse().unwrap());
    request
}

#[tokio::test]
async fn a_permitted_call_reaches_the_app_with_body_and_trailers_intact() {
    let stack = stack(&[]);
    let mut client = client(&stack).await;

    let customer = client
        .get_customer(with_purpose(
            pb::GetCustomerRequest { id: "c-3".into() },
            "provide",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(customer.name, "Alan Turing");

    // A large body, unchanged both ways (Echo is service-generated data).
    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let echoed = client
        .echo(with_purpose(
            pb::EchoRequest {
                payload: payload.clone(),
            },
            "improve",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(echoed.payload, payload);

    // A stream whose status and custom metadata arrive in trailers.
    let mut stream = client
        .export_customers(with_purpose(
            pb::ExportCustomersRequest {
                fail_after: 2,
                follow: false,
            },
            "troubleshoot",
        ))
        .await
        .unwrap()
        .into_inner();
    let mut received = Vec::new();
    let status = loop {
        match stream.next().await {
            Some(Ok(c)) => received.push(c.id),
            Some(Err(status)) => break status,
            None => panic!("the stream ended without its trailers"),
        }
    };
    assert_eq!(received, ["c-1", "c-2"]);
    assert_eq!(status.code(), tonic::Code::Aborted);
    assert_eq!(status.message(), "export stopped after 2 records");
    assert_eq!(
        status
            .metadata()
            .get("x-demo-exported")
            .and_then(|v| v.to_str().ok()),
        Some("2")
    );

    // And a whole stream with grpc-status 0 in its trailers.
    let all: Vec<_> = client
        .export_customers(with_purpose(
            pb::ExportCustomersRequest {
                fail_after: 0,
                follow: false,
            },
            "provide",
        ))
        .await
        .unwrap()
        .into_inner()
        .collect::<Result<Vec<_>, _>>()
        .await
        .unwrap();
    assert_eq!(all.len(), 5);
    assert_eq!(stack.demo.received(), 4);
}

#[tokio::test]
async fn a_denied_call_gets_permission_denied_and_never_reaches_the_app() {
    let stack = stack(&[]);
    let mut client = client(&stack).await;
    let err = client
        .get_customer(with_purpose(
            pb::GetCustomerRequest { id: "c-1".into() },
            "advertising",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(err.message().contains("no-prohibited-uses"), "{err:?}");
    let header = |name: &str| {
        err.metadata()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(header("x-purposegate-decision"), "DENY");
    assert_eq!(header("x-purposegate-rule-ids"), "no-prohibited-uses");
    assert_eq!(header("x-purposegate-revision").len(), 16);
    assert!(header("x-purposegate-reason").contains("denies `advertising`"));

    // Indeterminate and not applicable block too: the PEP is deny-biased.
    // (Echo's data has no fixed de-identification, so `lbo`'s rules cannot
    // be decided for it; customer records are fixed as identified.)
    for (purpose, decision) in [
        ("lbo.billing", "INDETERMINATE"),
        ("astrology", "NOT_APPLICABLE"),
    ] {
        let err = client
            .echo(with_purpose(
                pb::EchoRequest {
                    payload: b"x".to_vec(),
                },
                purpose,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{purpose}");
        assert_eq!(
            err.metadata()
                .get("x-purposegate-decision")
                .and_then(|v| v.to_str().ok()),
            Some(decision),
            "{purpose}"
        );
    }
    assert_eq!(stack.demo.received(), 0, "the app saw a denied call");
}

#[tokio::test]
async fn a_call_with_no_purpose_or_no_route_is_denied() {
    let stack = stack(&[]);
    let mut client = client(&stack).await;
    let err = client
        .get_customer(with_purpose(
            pb::GetCustomerRequest { id: "c-1".into() },
            "",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(err.message().contains("x-purpose"), "{err:?}");

    // The health service of the app is on no route.
    let mut other = tonic::client::Grpc::new(channel(&stack.sidecar.proxy_url()).await);
    other.ready().await.unwrap();
    let err = other
        .unary::<_, pb::Customer, _>(
            with_purpose(pb::GetCustomerRequest { id: "c-1".into() }, "provide"),
            tonic::codegen::http::uri::PathAndQuery::from_static("/demo.v1.Unrouted/Get"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(err.message().contains("no route"), "{err:?}");
    assert_eq!(stack.demo.received(), 0);
}

#[tokio::test]
async fn dry_run_lets_a_denied_call_through_and_still_records_it() {
    let stack = stack(&["--dry-run"]);
    let mut client = client(&stack).await;
    let customer = client
        .get_customer(with_purpose(
            pb::GetCustomerRequest { id: "c-1".into() },
            "advertising",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(customer.id, "c-1");
    assert_eq!(stack.demo.received(), 1);
    let log = stack.sidecar.log();
    assert!(
        log.iter().any(|l| l.contains("dry run")
            && l.contains("no-prohibited-uses")
            && l.contains("\"enforced\":false")),
        "{}",
        log.join("\n")
    );
}

#[test]
fn http1_calls_are_proxied_or_refused_with_403() {
    let server = ServerProcess::start(&["--decision-log", "off"]);
    let demo = DemoService::start();
    let upstream = format!("http://{}", demo.http_addr);
    let routes = repo_root().join(ROUTES).display().to_string();
    let sidecar = SidecarProcess::start(
        &server.url(),
        &["--upstream", &upstream, "--routes", &routes],
        &[],
    );
    let addr = sidecar.proxy_addr;

    let (status, headers, body) = http1(
        addr,
        "GET",
        "/customers/c-2",
        &[("x-purpose", "provide")],
        b"",
    );
    assert_eq!(status, 200, "{headers}");
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["name"], "Grace Hopper");

    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let (status, _, body) = http1(addr, "POST", "/echo", &[("x-purpose", "improve")], &payload);
    assert_eq!(status, 200);
    assert_eq!(body, payload);

    let (status, headers, body) = http1(
        addr,
        "GET",
        "/customers/c-2",
        &[("x-purpose", "advertising")],
        b"",
    );
    assert_eq!(status, 403);
    assert!(
        headers.contains("x-purposegate-decision: DENY"),
        "{headers}"
    );
    assert!(
        headers.contains("x-purposegate-rule-ids: no-prohibited-uses"),
        "{headers}"
    );
    assert!(String::from_utf8_lossy(&body).contains("denies `advertising`"));

    let (status, _, _) = http1(
        addr,
        "DELETE",
        "/customers/c-2",
        &[("x-purpose", "provide")],
        b"",
    );
    assert_eq!(status, 403, "DELETE is on no route");
    assert_eq!(demo.received(), 2);
}

/// One HTTP/1.1 request; (status, headers as text, body).
fn http1(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let mut body = response[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head, body)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size");
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap().trim(), 16)
                .unwrap();
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Callers that go away mid-stream leave the sidecar and the app serving.
#[tokio::test]
async fn clients_disconnecting_mid_stream_leave_everything_serving() {
    let stack = stack(&[]);
    for _ in 0..20 {
        let mut client = client(&stack).await;
        let mut stream = client
            .export_customers(with_purpose(
                pb::ExportCustomersRequest {
                    fail_after: 0,
                    follow: false,
                },
                "provide",
            ))
            .await
            .unwrap()
            .into_inner();
        // Take one record, then drop the stream and its connection.
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.id, "c-1");
        drop(stream);
        drop(client);
    }
    // A large request abandoned before its answer.
    for _ in 0..5 {
        let mut client = client(&stack).await;
        let payload = vec![7u8; 2_000_000];
        let call = client.echo(with_purpose(pb::EchoRequest { payload }, "improve"));
        let _ = tokio::time::timeout(std::time::Duration::from_millis(1), call).await;
    }
    let mut client = client(&stack).await;
    let customer = client
        .get_customer(with_purpose(
            pb::GetCustomerRequest { id: "c-4".into() },
            "provide",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(customer.name, "Katherine Johnson");
}

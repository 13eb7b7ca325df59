//! A gRPC route that reads the data subject from a field of the first
//! request message: the sidecar reads it from the wire as the app's
//! protobuf parser does, and refuses a message the app could read
//! another way. Over the real server, sidecar and demo service, with a
//! real tonic client, raw HTTP/2 frames and grpcurl for ext_authz.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers: a failed setup must fail the test"
)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use pb::choices_service_client::ChoicesServiceClient;
use purposegate_demo_service::pb as demo;
use purposegate_proto::v1 as pb;
use purposegate_tests::attacks::{grpc_frame, h2_from, h2_request};
use purposegate_tests::{
    CONSENT_POLICY, DemoService, ServerProcess, SidecarProcess, TempDir, channel, choices_server,
    grpcurl,
};

const ROUTES: &str = "routes:
  - grpc: /demo.v1.CustomerService/GetCustomer
    dataCategory: customer-data
    resource: { dataSubject: { grpcField: 1 } }
";

const GET: &str = "/demo.v1.CustomerService/GetCustomer";

struct Setup {
    _dir: TempDir,
    server: ServerProcess,
    sidecar: SidecarProcess,
    app: DemoService,
}

fn setup(name: &str) -> Setup {
    let dir = TempDir::new(name);
    let policy = dir.write("choices.yaml", CONSENT_POLICY);
    let routes = dir.write("routes.yaml", ROUTES);
    let server = choices_server(&policy, &[]);
    let app = DemoService::start();
    let upstream = format!("http://{}", app.grpc_addr);
    let sidecar = SidecarProcess::start(
        &server.url(),
        &[
            "--upstream",
            upstream.as_str(),
            "--routes",
            routes.as_str(),
            "--max-first-message-bytes",
            "1Ki",
            "--header-read-timeout",
            "1s",
        ],
        &[],
    );
    Setup {
        _dir: dir,
        server,
        sidecar,
        app,
    }
}

async fn record(server: &ServerProcess, subject: &str, state: pb::ChoiceState) {
    ChoicesServiceClient::new(channel(&server.url()).await)
        .record_choice(purposegate_tests::consent(subject, state))
        .await
        .unwrap();
}

/// `GetCustomer` for `id` through the sidecar, for marketing of
/// `contoso`'s data, with `x-data-subject: header` too.
async fn get_customer(
    sidecar: &SidecarProcess,
    id: &str,
    header: &str,
) -> Result<demo::Customer, tonic::Status> {
    let mut client = demo::customer_service_client::CustomerServiceClient::new(
        channel(&sidecar.proxy_url()).await,
    );
    let mut request = tonic::Request::new(demo::GetCustomerRequest { id: id.into() });
    for (name, value) in [
        ("x-purpose", "marketing"),
        ("x-data-tenant", "contoso"),
        ("x-data-subject", header),
    ] {
        request.metadata_mut().insert(name, value.parse().unwrap());
    }
    client.get_customer(request).await.map(|r| r.into_inner())
}

/// A length-delimited field, as protobuf writes it (field numbers and
/// lengths under 128).
fn field(number: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![number << 3 | 2, u8::try_from(value.len()).unwrap()];
    out.extend_from_slice(value);
    out
}

/// `body` posted to `GetCustomer` over raw HTTP/2: the `grpc-status` and
/// the reason the sidecar gave (empty when the app answered).
async fn raw_call(sidecar: &SidecarProcess, content_type: &str, body: Vec<u8>) -> (String, String) {
    let headers = [
        ("content-type", content_type),
        ("te", "trailers"),
        ("x-purpose", "marketing"),
        ("x-data-tenant", "contoso"),
    ];
    let (_, head, _, trailers) = h2_request(sidecar.proxy_addr, "POST", GET, &headers, body)
        .await
        .unwrap();
    let get = |name: &str| {
        head.get(name)
            .or_else(|| trailers.as_ref().and_then(|t| t.get(name)))
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    (get("grpc-status"), get("x-purposegate-reason"))
}

#[tokio::test]
async fn the_data_subject_is_the_field_the_app_reads_not_the_header() {
    let s = setup("choices-grpc-field");
    record(&s.server, "c-1", pb::ChoiceState::Granted).await;
    // The message says whose data it is; the header is not believed.
    let customer = get_customer(&s.sidecar, "c-1", "c-3").await.unwrap();
    assert_eq!(customer.id, "c-1");
    let denied = get_customer(&s.sidecar, "c-3", "c-1").await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    assert!(denied.message().contains("`c-3`"), "{denied:?}");
    // A withdrawal reaches the field's subject within a second.
    record(&s.server, "c-1", pb::ChoiceState::Withdrawn).await;
    let since = Instant::now();
    loop {
        match get_customer(&s.sidecar, "c-1", "").await {
            Err(status) if status.code() == tonic::Code::PermissionDenied => break,
            _ if since.elapsed() > Duration::from_secs(5) => panic!("still permitted"),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert!(
        since.elapsed() < Duration::from_secs(1),
        "{:?}",
        since.elapsed()
    );
    assert_eq!(
        s.app.received(),
        1,
        "only the permitted call reached the app"
    );
}

#[tokio::test]
async fn a_message_the_app_could_read_another_way_never_reaches_it() {
    let s = setup("choices-grpc-hostile");
    record(&s.server, "c-1", pb::ChoiceState::Granted).await;
    let grpc = "application/grpc";
    // Granted, in one frame: the app answers.
    let (status, reason) = raw_call(&s.sidecar, grpc, grpc_frame(&field(1, b"c-1"))).await;
    assert_eq!((status.as_str(), reason.as_str()), ("0", ""));
    let mut twice = field(1, b"c-1");
    twice.extend(field(1, b"c-3"));
    let mut other_type = vec![1 << 3, 7];
    other_type.extend(field(1, b"c-3"));
    let mut compressed = grpc_frame(&field(1, b"c-1"));
    compressed[0] = 1;
    let mut large = field(1, b"c-1");
    large.extend(std::iter::repeat_n(field(2, &[b'x'; 100]), 12).flatten());
    let whole = grpc_frame(&field(1, b"c-1"));
    for (what, content_type, body, says) in [
        ("twice", grpc, grpc_frame(&twice), "more than once"),
        ("varint", grpc, grpc_frame(&other_type), "wire type 0"),
        ("compressed", grpc, compressed, "compressed"),
        (
            "large",
            grpc,
            grpc_frame(&large),
            "--max-first-message-bytes",
        ),
        (
            "cut",
            grpc,
            whole[..whole.len() - 1].to_vec(),
            "ended inside",
        ),
        ("empty", grpc, Vec::new(), "before its first message"),
        (
            "json",
            "application/grpc+json",
            b"{\"id\":\"c-1\"}".to_vec(),
            "not binary protobuf",
        ),
    ] {
        let (status, reason) = raw_call(&s.sidecar, content_type, body).await;
        assert_eq!(status, "7", "{what}: {reason}");
        assert!(reason.contains(says), "{what}: {reason}");
    }
    assert_eq!(s.app.received(), 1, "no refused call reached the app");
}

/// A `GetCustomer` call whose body the test sends frame by frame: the
/// sender of its frames, and the call.
async fn streamed_call(
    sidecar: &SidecarProcess,
) -> (
    tokio::sync::mpsc::Sender<Result<hyper::body::Frame<Bytes>, std::io::Error>>,
    tokio::task::JoinHandle<hyper::Result<hyper::Response<hyper::body::Incoming>>>,
) {
    let mut sender = h2_from([127, 0, 0, 1].into(), sidecar.proxy_addr).await;
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Result<hyper::body::Frame<Bytes>, std::io::Error>>(1);
    let body = http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let request = hyper::Request::post(format!("http://{}{GET}", sidecar.proxy_addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-purpose", "marketing")
        .header("x-data-tenant", "contoso")
        .body(body)
        .unwrap();
    (tx, tokio::spawn(sender.send_request(request)))
}

#[tokio::test]
async fn a_message_that_comes_in_pieces_is_read_whole_and_passed_on_intact() {
    let s = setup("choices-grpc-pieces");
    record(&s.server, "c-1", pb::ChoiceState::Granted).await;
    let (tx, call) = streamed_call(&s.sidecar).await;
    for byte in grpc_frame(&field(1, b"c-1")) {
        tx.send(Ok(hyper::body::Frame::data(Bytes::from(vec![byte]))))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(tx);
    let response = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let collected = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    assert_eq!(trailers.get("grpc-status").unwrap(), "0", "{trailers:?}");
    // The app parsed the very message: it answered for c-1.
    let bytes = collected.to_bytes();
    let customer: demo::Customer = prost::Message::decode(&bytes[5..]).unwrap();
    assert_eq!(customer.id, "c-1");
    // A message that never finishes holds its call no longer than
    // --header-read-timeout.
    let (tx, call) = streamed_call(&s.sidecar).await;
    let start = Instant::now();
    tx.send(Ok(hyper::body::Frame::data(Bytes::from_static(&[
        0, 0, 0, 0, 9, 10,
    ]))))
    .await
    .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(response.headers().get("grpc-status").unwrap(), "4");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    drop(tx);
    assert_eq!(s.app.received(), 1);
}

#[test]
fn ext_authz_reads_the_field_from_the_body_envoy_sends() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let s = setup("choices-grpc-extauthz");
    runtime.block_on(record(&s.server, "c-1", pb::ChoiceState::Granted));
    let check = |body: Option<&[u8]>| {
        let mut http = serde_json::json!({
            "method": "POST",
            "path": GET,
            "headers": {"content-type": "application/grpc", "x-purpose": "marketing", "x-data-tenant": "contoso"},
            "size": "-1",
        });
        if let Some(body) = body {
            use base64::Engine;
            http["rawBody"] = base64::engine::general_purpose::STANDARD
                .encode(body)
                .into();
        }
        let request = serde_json::json!({"attributes": {"request": {"http": http}}});
        let run = grpcurl(
            &[
                "-plaintext",
                "-d",
                &request.to_string(),
                &s.sidecar.local_addr.to_string(),
                "envoy.service.auth.v3.Authorization/Check",
            ],
            None,
        );
        assert_eq!(run.code, Some(0), "{run:?}");
        serde_json::from_str::<serde_json::Value>(&run.stdout).unwrap()
    };
    let permitted = check(Some(&grpc_frame(&field(1, b"c-1"))));
    assert!(
        permitted["status"]["code"].as_i64().is_none(),
        "{permitted}"
    );
    let denied = check(Some(&grpc_frame(&field(1, b"c-3"))));
    assert_eq!(denied["status"]["code"], 7, "{denied}");
    let unsent = check(None);
    assert_eq!(unsent["status"]["code"], 7, "{unsent}");
    assert!(
        unsent["status"]["message"]
            .as_str()
            .unwrap()
            .contains("with_request_body"),
        "{unsent}"
    );
}

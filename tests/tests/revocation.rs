//! A revocation reaches what is open: calls the new revision no longer
//! permits end, within 5 s of the sidecar learning the revision; with the
//! server gone, `--max-stream-age` ends them once their answer expires.
//! Calls the change does not touch go on. SIGTERM drains open calls.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers: a failed setup must fail the test"
)]

use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use pb::customer_service_client::CustomerServiceClient;
use purposegate_demo_service::pb;
use purposegate_tests::app::FrameworkApp;
use purposegate_tests::attacks::http1_get;
use purposegate_tests::{
    AppStack, ServerProcess, SidecarProcess, TempDir, channel, default_policy_text,
    demo_behind_sidecar, replace_file, server_on_policy_file,
};
use tokio_stream::StreamExt;

/// The default policy without `provide` among the purposes customer data
/// may serve.
fn without_provide() -> String {
    let text = default_policy_text();
    let from = "    purposes: [provide, troubleshoot, improve]\n\n  - id: professional-services";
    assert!(text.contains(from), "the default policy changed shape");
    text.replace(
        from,
        "    purposes: [troubleshoot, improve]\n\n  - id: professional-services",
    )
}

/// The default policy with `ttl` seconds for each decision.
fn with_ttl(ttl: u32) -> String {
    default_policy_text().replace(
        "decisionTtlSeconds: 300",
        &format!("decisionTtlSeconds: {ttl}"),
    )
}

fn follow(purpose: &str) -> tonic::Request<pb::ExportCustomersRequest> {
    let mut request = tonic::Request::new(pb::ExportCustomersRequest {
        fail_after: 0,
        follow: true,
    });
    request
        .metadata_mut()
        .insert("x-purpose", purpose.parse().unwrap());
    request
        .metadata_mut()
        .insert("x-subject", "crm".parse().unwrap());
    request
}

/// Reads `n` records of an open feed.
async fn read(stream: &mut tonic::Streaming<pb::Customer>, n: usize) {
    for _ in 0..n {
        tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("a record within 5 s")
            .expect("the feed is open")
            .expect("a record, not an error");
    }
}

/// Reads the feed until it ends (at most `limit`); the status it ended
/// with and when.
async fn until_end(
    stream: &mut tonic::Streaming<pb::Customer>,
    limit: Duration,
) -> (tonic::Status, Instant) {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.next()).await {
            Err(_) => panic!("the feed was still open after {limit:?}"),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(status))) => return (status, Instant::now()),
            Ok(None) => return (tonic::Status::ok("ended"), Instant::now()),
        }
    }
}

#[tokio::test]
async fn a_revoked_purpose_ends_an_open_grpc_stream_and_others_go_on() {
    let dir = TempDir::new("revoke");
    let (server, policy) = server_on_policy_file(&dir, &default_policy_text());
    let (_demo, sidecar) = demo_behind_sidecar(&server.url(), &[], &[]);
    let mut client = CustomerServiceClient::new(channel(&sidecar.proxy_url()).await);
    let mut provide = client
        .export_customers(follow("provide"))
        .await
        .unwrap()
        .into_inner();
    let mut troubleshoot = client
        .export_customers(follow("troubleshoot"))
        .await
        .unwrap()
        .into_inner();
    read(&mut provide, 3).await;
    read(&mut troubleshoot, 3).await;

    let written = Instant::now();
    replace_file(&policy, &without_provide());
    let (status, ended) = until_end(&mut provide, Duration::from_secs(10)).await;
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("provide"),
        "the reason names what is no longer permitted: {status:?}"
    );
    let took = ended - written;
    assert!(
        took < Duration::from_secs(5),
        "the revoked stream ended {took:?} after the policy was written"
    );
    assert_eq!(
        status
            .metadata()
            .get("x-purposegate-decision")
            .and_then(|v| v.to_str().ok()),
        Some("NOT_APPLICABLE")
    );
    // The other purpose is untouched by the change: its feed goes on.
    read(&mut troubleshoot, 5).await;
    // And a new call for the revoked purpose is denied from the start.
    let again = client.export_customers(follow("provide")).await;
    let status = match again {
        Err(status) => status,
        Ok(response) => response.into_inner().next().await.unwrap().unwrap_err(),
    };
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
}

#[tokio::test]
async fn a_revoked_purpose_closes_an_open_http_feed() {
    let stack = AppStack::start(
        Some(&default_policy_text()),
        "routes:\n  - http: /stream\n    dataCategory: customer-data\n",
        &[],
    );
    let (sidecar, policy) = (&stack.sidecar, stack.policy.clone().unwrap());
    let proxy = sidecar.proxy_addr;
    let written = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(proxy).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "GET /stream HTTP/1.1\r\nHost: x\r\nx-purpose: provide\r\n\r\n"
        )
        .unwrap();
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        let mut ticks = 0;
        while ticks < 3 {
            line.clear();
            reader.read_line(&mut line).unwrap();
            if line.starts_with("tick") {
                ticks += 1;
            }
        }
        let written = Instant::now();
        replace_file(&policy, &without_provide());
        // The connection closes: reading ends (EOF or reset), it does not
        // time out.
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => assert!(
                    written.elapsed() < Duration::from_secs(8),
                    "still reading the feed"
                ),
            }
        }
        written.elapsed()
    })
    .await
    .unwrap();
    assert!(
        written < Duration::from_secs(5),
        "the feed closed {written:?} after the policy was written"
    );
    // A new request is refused.
    let answer = http1_get(proxy, "/stream", &[("x-purpose", "provide")]);
    assert_eq!(answer.status, 403, "{answer:?}");
}

#[tokio::test]
async fn without_the_server_an_open_stream_ends_once_its_answer_expires() {
    let dir = TempDir::new("stream-age");
    let (mut server, _) = server_on_policy_file(&dir, &with_ttl(1));
    let (_demo, sidecar) = demo_behind_sidecar(&server.url(), &["--max-stream-age", "1s"], &[]);
    let mut client = CustomerServiceClient::new(channel(&sidecar.proxy_url()).await);
    let mut feed = client
        .export_customers(follow("provide"))
        .await
        .unwrap()
        .into_inner();
    // Re-judged every second, from the cache or the server: still open.
    read(&mut feed, 25).await;

    server.signal("KILL");
    server.exited(Duration::from_secs(5)).await;
    let killed = Instant::now();
    let (status, ended) = until_end(&mut feed, Duration::from_secs(10)).await;
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("could not answer"), "{status:?}");
    // TTL 1 s + stream age 1 s + the PDP timeout, with room for a busy
    // machine.
    assert!(
        ended - killed < Duration::from_secs(5),
        "ended {:?} after the server died",
        ended - killed
    );
}

#[test]
fn sigterm_finishes_the_call_in_flight_and_refuses_new_ones() {
    let server = ServerProcess::start(&["--decision-log", "off"]);
    let app = FrameworkApp::start();
    let dir = TempDir::new("drain");
    let routes = dir.write(
        "routes.yaml",
        "routes:\n  - http: /slow\n    dataCategory: customer-data\n",
    );
    let mut sidecar = SidecarProcess::start(
        &server.url(),
        &[
            "--upstream",
            &app.url(),
            "--routes",
            &routes,
            "--drain",
            "5s",
        ],
        &[],
    );
    let proxy = sidecar.proxy_addr;
    let slow = std::thread::spawn(move || http1_get(proxy, "/slow", &[("x-purpose", "provide")]));
    // The call is in flight at the app (which takes 1 s) when SIGTERM comes.
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.seen().is_empty() {
        assert!(Instant::now() < deadline, "the slow call never arrived");
        std::thread::sleep(Duration::from_millis(10));
    }
    sidecar.signal("TERM");
    std::thread::sleep(Duration::from_millis(200));
    let refused = std::net::TcpStream::connect_timeout(&proxy, Duration::from_secs(1));
    assert!(
        refused.is_err(),
        "the proxy still accepts connections while draining"
    );
    let answer = slow.join().unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body, "slow done\n");
    assert_eq!(sidecar.wait_exit(Duration::from_secs(10)), Some(0));
}

#[tokio::test]
async fn a_revoked_call_sends_the_app_nothing_more() {
    // An upload the app answers at once and goes on reading: the response
    // is over, the request body is still flowing when the purpose is
    // revoked. Nothing more may reach the app after that.
    use bytes::Bytes;
    use http_body_util::StreamBody;
    use hyper::body::Frame;

    let stack = AppStack::start(
        Some(&default_policy_text()),
        "routes:\n  - http: /sink\n    dataCategory: customer-data\n",
        &[],
    );
    let policy = stack.policy.clone().unwrap();
    let mut sender =
        purposegate_tests::attacks::h2_from([127, 0, 0, 1].into(), stack.sidecar.proxy_addr).await;
    let (chunks, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let body = StreamBody::new(tokio_stream::StreamExt::map(
        tokio_stream::wrappers::ReceiverStream::new(rx),
        |b| Ok::<_, std::convert::Infallible>(Frame::data(b)),
    ));
    let request = hyper::Request::post("http://sidecar/sink")
        .header("x-purpose", "provide")
        .body(body)
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);

    let chunk = Bytes::from(vec![b'x'; 1000]);
    for _ in 0..10 {
        chunks.send(chunk.clone()).await.unwrap();
    }
    let (_, _) = purposegate_tests::eventually("the app reads the upload", || {
        let sunk = stack.app.sunk();
        async move { (sunk >= 10_000).then_some(()) }
    })
    .await;

    replace_file(&policy, &without_provide());
    // Keep sending: the sidecar resets the stream, so the upload is cut
    // off (its body is dropped and the channel closes) within 5 s.
    let revoked = Instant::now();
    let cut = loop {
        if chunks.send(chunk.clone()).await.is_err() {
            break revoked.elapsed();
        }
        assert!(
            revoked.elapsed() < Duration::from_secs(5),
            "the upload still flows 5 s after the revocation"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // And what the app read stops there.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let settled = stack.app.sunk();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(stack.app.sunk(), settled, "the app went on reading");
    let after = settled - 10_000;
    assert!(
        after <= 1000 * (cut.as_millis() as u64 / 20 + 2),
        "{after} bytes reached the app after the revocation (cut after {cut:?})"
    );
}

/// The default policy with obligations on customer data's permits.
fn with_obligation(retention: &str) -> String {
    let text = default_policy_text();
    let from = "    purposes: [provide, troubleshoot, improve]\n\n  - id: professional-services";
    assert!(text.contains(from), "the default policy changed shape");
    text.replace(
        from,
        &format!(
            "    purposes: [provide, troubleshoot, improve]\n    obligations:\n      - id: log-access\n        params: {{ retention: {retention} }}\n\n  - id: professional-services"
        ),
    )
}

#[tokio::test]
async fn changed_obligations_end_an_open_call() {
    let dir = TempDir::new("obligations-change");
    let (server, policy) = server_on_policy_file(&dir, &with_obligation("30d"));
    let (_demo, sidecar) =
        demo_behind_sidecar(&server.url(), &["--obligations", "log-access"], &[]);
    let mut client = CustomerServiceClient::new(channel(&sidecar.proxy_url()).await);
    let mut feed = client
        .export_customers(follow("provide"))
        .await
        .unwrap()
        .into_inner();
    read(&mut feed, 3).await;
    // Still permitted, but the app was told 30 days: the call ends, and a
    // new one learns the new terms.
    replace_file(&policy, &with_obligation("7d"));
    let (status, _) = until_end(&mut feed, Duration::from_secs(10)).await;
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("obligations changed"),
        "{status:?}"
    );
    let mut again = client
        .export_customers(follow("provide"))
        .await
        .unwrap()
        .into_inner();
    read(&mut again, 2).await;
}

/// An open feed of customer records for personalisation, of `tenant`'s
/// data.
fn personalising(tenant: &str) -> tonic::Request<pb::ExportCustomersRequest> {
    let mut request = follow("provide.personalization");
    request
        .metadata_mut()
        .insert("x-data-tenant", tenant.parse().unwrap());
    request
}

#[tokio::test]
async fn a_tenant_switching_personalisation_off_ends_its_open_streams_within_a_second() {
    let server = ServerProcess::start(&["--decision-log", "off", "--choices-writers", "*"]);
    let (_demo, sidecar) = demo_behind_sidecar(&server.url(), &[], &[]);
    let mut client = CustomerServiceClient::new(channel(&sidecar.proxy_url()).await);
    let mut contoso = client
        .export_customers(personalising("contoso"))
        .await
        .unwrap()
        .into_inner();
    let mut fabrikam = client
        .export_customers(personalising("fabrikam"))
        .await
        .unwrap()
        .into_inner();
    read(&mut contoso, 3).await;
    read(&mut fabrikam, 3).await;
    let mut choices = purposegate_proto::v1::choices_service_client::ChoicesServiceClient::new(
        channel(&server.url()).await,
    );
    choices
        .record_choice(purposegate_proto::v1::RecordChoiceRequest {
            tenant: "contoso".into(),
            purpose: "provide.personalization".into(),
            state: purposegate_proto::v1::ChoiceState::Withdrawn.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let written = Instant::now();
    let (status, ended) = until_end(&mut contoso, Duration::from_secs(10)).await;
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status
            .message()
            .contains("switched off by tenant `contoso`"),
        "{status:?}"
    );
    let took = ended - written;
    assert!(
        took < Duration::from_secs(1),
        "ended {took:?} after the write"
    );
    // Another tenant's feed goes on.
    read(&mut fabrikam, 3).await;
}

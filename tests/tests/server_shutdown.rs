//! The real `purposegate-server` stopping: SIGTERM turns health
//! NOT_SERVING, ends open streams and answers the call in flight before
//! exit 0; the drain time bounds a call that never finishes; SIGINT drains
//! the same way.

use std::time::Duration;

use pb::decision_service_client::DecisionServiceClient;
use purposegate_proto::v1 as pb;
use purposegate_tests::{ServerProcess, channel, check_request};
use tokio_stream::StreamExt;

/// SIGTERM: health turns NOT_SERVING, open streams (a policy watch and a
/// health watch) end cleanly, and the process exits 0 well before the
/// drain time, with the client still connected.
#[tokio::test]
async fn sigterm_turns_health_not_serving_ends_streams_and_exits_0() {
    let mut server = ServerProcess::start(&["--drain-seconds", "10"]);
    let channel = channel(&server.url()).await;
    for service in ["", "purposegate.v1.DecisionService"] {
        assert_eq!(
            purposegate_tests::health_status(channel.clone(), service).await,
            tonic_health::pb::health_check_response::ServingStatus::Serving
        );
    }
    let mut client = DecisionServiceClient::new(channel.clone());
    let mut watch = client
        .watch_policy(pb::WatchPolicyRequest {})
        .await
        .unwrap()
        .into_inner();
    let _first = watch.next().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let mut health_watch = health
        .watch(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let _serving = health_watch.next().await;
    let _ = client
        .check(check_request("provide", "customer-data"))
        .await
        .unwrap();

    let signalled = std::time::Instant::now();
    server.signal("TERM");

    let within = Duration::from_secs(5);
    let status = tokio::time::timeout(within, health_watch.next())
        .await
        .expect("health changes within 5 s")
        .expect("the health watch sends the change")
        .expect("not an error");
    assert_eq!(
        status.status(),
        tonic_health::pb::health_check_response::ServingStatus::NotServing
    );
    let health_end = tokio::time::timeout(within, health_watch.next())
        .await
        .expect("the health watch ends within 5 s");
    assert!(matches!(health_end, None | Some(Ok(_))), "{health_end:?}");
    let end = tokio::time::timeout(within, watch.next())
        .await
        .expect("the policy watch ends within 5 s");
    assert!(matches!(end, None | Some(Ok(_))), "{end:?}");

    let code = server.exited(within).await;
    let log = server.log().join("\n");
    assert_eq!(code, Some(0), "log:\n{log}");
    assert!(
        signalled.elapsed() < within,
        "took {:?}",
        signalled.elapsed()
    );
    assert!(!log.contains("drain time over"), "{log}");
}

/// A Check whose request is still arriving when SIGTERM comes is answered,
/// then the server exits 0.
#[tokio::test]
async fn a_call_in_flight_at_sigterm_is_answered() {
    let mut server = ServerProcess::start(&["--drain-seconds", "10"]);
    let (tx, call) = check_held_open(channel(&server.url()).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        server.wait_exit(Duration::from_millis(1)).is_none(),
        "the server must wait for the call in flight"
    );
    tx.send(check_request("provide", "customer-data"))
        .await
        .unwrap();
    drop(tx);
    let answer = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("answered within 5 s")
        .unwrap()
        .expect("the call in flight succeeds")
        .into_inner();
    assert_eq!(answer.decision(), pb::Decision::Permit);
    let code = server.exited(Duration::from_secs(5)).await;
    assert_eq!(code, Some(0), "log:\n{}", server.log().join("\n"));
}

/// The answer to a [`check_held_open`] call.
type HeldCheck = tokio::task::JoinHandle<Result<tonic::Response<pb::CheckResponse>, tonic::Status>>;

/// A Check whose headers go now and whose message goes when the caller
/// sends it: the server holds the call open, waiting for it.
fn check_held_open(
    channel: tonic::transport::Channel,
) -> (tokio::sync::mpsc::Sender<pb::CheckRequest>, HeldCheck) {
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::CheckRequest>(1);
    let mut grpc = tonic::client::Grpc::new(channel);
    let call = tokio::spawn(async move {
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        grpc.client_streaming(
            tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
            tonic::codegen::http::uri::PathAndQuery::from_static(
                "/purposegate.v1.DecisionService/Check",
            ),
            tonic_prost::ProstCodec::<pb::CheckRequest, pb::CheckResponse>::default(),
        )
        .await
    });
    (tx, call)
}

/// The drain time, given by its older variable name (read with a warning),
/// bounds how long a call that never finishes keeps the server up.
#[tokio::test]
async fn the_drain_time_bounds_a_call_that_never_finishes() {
    let mut server = ServerProcess::start_with_env(&[], &[("PURPOSEGATE_DRAIN_SECONDS", "1")]);
    let log = server.log().join("\n");
    assert!(log.contains("rename it to PURPOSEGATE_DRAIN"), "{log}");
    let (_tx, _call) = check_held_open(channel(&server.url()).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = std::time::Instant::now();
    server.signal("TERM");
    let code = server.exited(Duration::from_secs(8)).await;
    let took = signalled.elapsed();
    let log = server.log().join("\n");
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("drain time over"), "{log}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(6),
        "exited {took:?} after SIGTERM with a 1 s drain"
    );
}

/// Ctrl-C in a terminal is SIGINT: the same drain, exit 0.
#[test]
fn sigint_stops_the_server_with_exit_0() {
    let mut server = ServerProcess::start(&["--decision-log", "off"]);
    server.signal("INT");
    assert_eq!(
        server.wait_exit(std::time::Duration::from_secs(5)),
        Some(0),
        "{}",
        server.log().join("\n")
    );
    assert!(server.log().iter().any(|l| l.contains("shutting down")));
}

//! `WatchChoices` over the real server, and the sidecar that follows it:
//! a withdrawal evicts exactly the decisions of that data subject, within
//! a second of the commit, while every other subject's stay cached; a
//! sidecar whose watch is gone keeps nothing that read choices.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers: a failed setup must fail the test"
)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pb::choices_service_client::ChoicesServiceClient;
use purposegate_proto::v1 as pb;
use purposegate_tests::{CONSENT_POLICY, ServerProcess, SidecarProcess, TempDir, channel, consent};
use tokio_stream::StreamExt;

/// A GET through the sidecar for `marketing` on `subject`'s records: the
/// status.
fn get(proxy: SocketAddr, subject: &str) -> u16 {
    let mut stream = std::net::TcpStream::connect_timeout(&proxy, Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /records/1 HTTP/1.1\r\nHost: app\r\nx-purpose: marketing\r\nx-data-tenant: contoso\r\nx-data-subject: {subject}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// How long after `since` a GET for `subject` first answers `status`
/// (polled every 2 ms, for at most 5 s).
fn until(proxy: SocketAddr, subject: &str, status: u16, since: Instant) -> Duration {
    loop {
        if get(proxy, subject) == status {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(5),
            "{subject} never answered {status}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

struct Setup {
    dir: TempDir,
    server: ServerProcess,
    sidecar: SidecarProcess,
    app: purposegate_tests::app::FrameworkApp,
    log: String,
}

fn setup(name: &str, sidecar_args: &[&str]) -> Setup {
    setup_with(
        name,
        "routes:\n  - http: /records/\n    methods: [GET]\n    dataCategory: customer-data\n",
        sidecar_args,
    )
}

/// The server (any caller a writer), an app and its sidecar on `routes`.
fn setup_with(name: &str, routes: &str, sidecar_args: &[&str]) -> Setup {
    let dir = TempDir::new(name);
    let policy = dir.write("choices.yaml", CONSENT_POLICY);
    let routes = dir.write("routes.yaml", routes);
    let log = dir.path().join("decisions.log").display().to_string();
    let server = ServerProcess::start(&[
        "--policy",
        policy.as_str(),
        "--decision-log",
        log.as_str(),
        "--choices-writers",
        "*",
    ]);
    let app = purposegate_tests::app::FrameworkApp::start();
    let upstream = app.url();
    let mut args = vec!["--upstream", upstream.as_str(), "--routes", routes.as_str()];
    args.extend_from_slice(sidecar_args);
    let sidecar = SidecarProcess::start(&server.url(), &args, &[]);
    Setup {
        dir,
        server,
        sidecar,
        app,
        log,
    }
}

#[tokio::test]
async fn the_watch_streams_every_change_in_order_and_resumes_where_it_was() {
    let s = setup("choices-watch-stream", &[]);
    let mut choices = ChoicesServiceClient::new(channel(&s.server.url()).await);
    let mut watch = choices
        .watch_choices(pb::WatchChoicesRequest { after_revision: 0 })
        .await
        .unwrap()
        .into_inner();
    // From now: a heartbeat at the current revision first.
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!((first.tenant.as_str(), first.revision), ("", 0));
    for subject in ["u-1", "u-2", "u-1"] {
        choices
            .record_choice(consent(subject, pb::ChoiceState::Granted))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let change = watch.next().await.unwrap().unwrap();
        if !change.tenant.is_empty() {
            seen.push((change.data_subject, change.revision));
        }
    }
    assert_eq!(
        seen,
        [("u-1".into(), 1), ("u-2".into(), 2), ("u-1".into(), 3)]
    );
    // Quiet: heartbeats at the last revision sent, four a second.
    let start = Instant::now();
    let beat = watch.next().await.unwrap().unwrap();
    assert_eq!((beat.tenant.as_str(), beat.revision), ("", 3));
    assert!(start.elapsed() < Duration::from_millis(600));
    // Resumed from revision 1: the two after it, nothing before.
    let mut resumed = choices
        .watch_choices(pb::WatchChoicesRequest { after_revision: 1 })
        .await
        .unwrap()
        .into_inner();
    let next = resumed.next().await.unwrap().unwrap();
    assert_eq!((next.data_subject.as_str(), next.revision), ("u-2", 2));
    let next = resumed.next().await.unwrap().unwrap();
    assert_eq!((next.data_subject.as_str(), next.revision), ("u-1", 3));
    // From a revision the store never reached (it went back): everything.
    let mut ahead = choices
        .watch_choices(pb::WatchChoicesRequest {
            after_revision: 1000,
        })
        .await
        .unwrap()
        .into_inner();
    let flush = ahead.next().await.unwrap().unwrap();
    assert!(flush.everything, "{flush:?}");
    assert_eq!(flush.revision, 3);
}

#[tokio::test]
async fn a_withdrawal_evicts_only_its_subject_within_a_second_under_steady_load() {
    let s = setup("choices-watch-load", &[]);
    let proxy = s.sidecar.proxy_addr;
    let mut choices = ChoicesServiceClient::new(channel(&s.server.url()).await);
    let others: Vec<String> = (0..20).map(|i| format!("o-{i}")).collect();
    for subject in others.iter().map(String::as_str).chain(["u-42"]) {
        choices
            .record_choice(consent(subject, pb::ChoiceState::Granted))
            .await
            .unwrap();
    }
    for subject in &others {
        assert_eq!(get(proxy, subject), 200, "{subject}");
    }
    // Steady load: every other subject asked again and again.
    let stop = Arc::new(AtomicBool::new(false));
    let asked = Arc::new(AtomicU64::new(0));
    let load = {
        let (stop, asked, others) = (stop.clone(), asked.clone(), others.clone());
        std::thread::spawn(move || {
            let mut refused = 0;
            while !stop.load(Ordering::Relaxed) {
                for subject in &others {
                    if get(proxy, subject) != 200 {
                        refused += 1;
                    }
                    asked.fetch_add(1, Ordering::Relaxed);
                }
            }
            refused
        })
    };
    let lines_before = std::fs::read_to_string(&s.log).unwrap_or_default();
    let before = lines_before.lines().filter(|l| l.contains("\"o-")).count();
    let mut took = Vec::new();
    for _ in 0..100 {
        assert_eq!(get(proxy, "u-42"), 200);
        choices
            .record_choice(consent("u-42", pb::ChoiceState::Withdrawn))
            .await
            .unwrap();
        took.push(until(proxy, "u-42", 403, Instant::now()));
        choices
            .record_choice(consent("u-42", pb::ChoiceState::Granted))
            .await
            .unwrap();
        until(proxy, "u-42", 200, Instant::now());
    }
    stop.store(true, Ordering::Relaxed);
    let refused = load.join().unwrap();
    assert_eq!(refused, 0, "no other subject was refused");
    took.sort();
    let p99 = took[98];
    assert!(
        p99 < Duration::from_secs(1),
        "withdrawal enforced: p50 {:?}, p99 {p99:?}, max {:?}",
        took[49],
        took[99]
    );
    // The others stayed cached: their decisions were asked of the server
    // (each a decision-log line) for few of their calls.
    let asked = asked.load(Ordering::Relaxed);
    let lines =
        purposegate_tests::eventually("the log written", || {
            let text = std::fs::read_to_string(&s.log).unwrap_or_default();
            async move {
                (text.lines().filter(|l| l.contains("\"u-42\"")).count() >= 200).then_some(text)
            }
        })
        .await
        .0;
    let asked_server = lines.lines().filter(|l| l.contains("\"o-")).count() - before;
    let hit_ratio = 1.0 - asked_server as f64 / asked as f64;
    assert!(asked >= 200, "the load ran: {asked} calls");
    assert!(
        hit_ratio > 0.95,
        "hit ratio {hit_ratio:.3} ({asked_server} of {asked})"
    );
    drop(s.dir);
}

#[tokio::test]
async fn without_the_watch_nothing_that_read_choices_is_kept_or_served_stale() {
    let s = setup("choices-watch-gone", &["--stale-if-error", "60s"]);
    let proxy = s.sidecar.proxy_addr;
    let mut choices = ChoicesServiceClient::new(channel(&s.server.url()).await);
    choices
        .record_choice(consent("u-42", pb::ChoiceState::Granted))
        .await
        .unwrap();
    assert_eq!(get(proxy, "u-42"), 200);
    // A plain permit, read no choices: still served from the cache while
    // the PDP is away.
    let plain = |proxy: SocketAddr| {
        let mut stream = std::net::TcpStream::connect(proxy).unwrap();
        write!(
            stream,
            "GET /records/1 HTTP/1.1\r\nHost: app\r\nx-purpose: provide\r\nx-data-tenant: contoso\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response.split_whitespace().nth(1).unwrap_or("").to_string()
    };
    assert_eq!(plain(proxy), "200");
    drop(s.server);
    let gone = Instant::now();
    // The watch is gone: within its window and the answer's own TTL (1 s)
    // the marketing permit is no longer served, stale window or not.
    let took = loop {
        if get(proxy, "u-42") != 200 {
            break gone.elapsed();
        }
        assert!(gone.elapsed() < Duration::from_secs(5), "still served");
        std::thread::sleep(Duration::from_millis(2));
    };
    assert!(took < Duration::from_millis(2500), "{took:?}");
    assert_eq!(plain(proxy), "200", "the plain permit is still served");
    drop(s.dir);
}

#[tokio::test]
async fn a_route_reads_the_data_subject_from_the_path_the_app_routes_on() {
    let s = setup_with(
        "choices-segment",
        "routes:\n  - http: /customers/\n    methods: [GET]\n    dataCategory: customer-data\n    resource: { dataSubject: { pathSegment: 2 } }\n",
        &[],
    );
    let (sidecar, app) = (&s.sidecar, &s.app);
    let mut choices = ChoicesServiceClient::new(channel(&s.server.url()).await);
    choices
        .record_choice(consent("u-42", pb::ChoiceState::Granted))
        .await
        .unwrap();
    let get = |path: &str, extra: &[&str]| {
        let mut headers = vec!["x-purpose: marketing", "x-data-tenant: contoso"];
        headers.extend_from_slice(extra);
        purposegate_tests::contexts::proxy_get(sidecar, path, &headers)
    };
    assert_eq!(get("/customers/u-42/orders", &[]).0, 200);
    // The path, not the header, says whose data it is.
    let (status, _, body) = get("/customers/u-7/orders", &["x-data-subject: u-42"]);
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        get("/customers/u-42/orders", &["x-data-subject: u-7"]).0,
        200
    );
    // Escapes as the app's router decodes them.
    assert_eq!(get("/customers/u%2D42/orders", &[]).0, 200);
    let (status, _, body) = get("/customers/u%4042/orders", &[]);
    assert_eq!(status, 403, "{body}");
    // No second segment: refused, saying so.
    let (status, _, body) = get("/customers/", &[]);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("path segment 2"), "{body}");
    // The app was told the data subject that was decided on.
    let seen = app.seen();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(
        seen.iter().all(|s| s.cgi_all("x-data-subject") == ["u-42"]),
        "{seen:?}"
    );
    drop(s.dir);
}

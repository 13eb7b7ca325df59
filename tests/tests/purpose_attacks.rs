//! Purpose can only narrow, against an adversary, with the real binaries:
//! contexts only for the PEPs the server knows (mTLS identities), never
//! from a sidecar's local API; baggage stuffed to drop or replace the
//! context at the next hop; the ceiling in any of several `baggage`
//! headers through ext_authz; a rotated or lost key gone once its
//! contexts have expired; an open stream ended when its context expires.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers: a failed setup must fail the test"
)]

use std::time::{Duration, Instant};

use base64::Engine as _;
use purposegate_demo_service::pb as demo;
use purposegate_proto::v1 as pb;
use purposegate_tests::contexts::{
    Chain, asked_for_context, proxy_get, published_keys, signing_server,
};
use purposegate_tests::{
    DemoService, Pki, ServerProcess, SidecarProcess, TempDir, channel, check_request, ed25519_key,
    eventually, grpcurl, metric, repo_root, tls_channel,
};

const ROUTES: &str = "examples/customer-service/routes.yaml";

/// A sidecar asking `server` in front of the demo service's gRPC face,
/// with the example routes and `extra` flags.
fn demo_sidecar(server: &str, app: &DemoService, extra: &[&str]) -> SidecarProcess {
    let routes = repo_root().join(ROUTES).display().to_string();
    let upstream = format!("http://{}", app.grpc_addr);
    let mut args = vec!["--upstream", &upstream, "--routes", &routes];
    args.extend_from_slice(extra);
    SidecarProcess::start(server, &args, &[])
}

fn not_issued(server: &ServerProcess, reason: &str) -> f64 {
    metric(
        &server.metrics(),
        &format!("purposegate_purpose_contexts_not_issued_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn only_the_peps_the_server_knows_obtain_a_context() {
    // A key but no issuers: nobody is known to be a PEP.
    let dir = TempDir::new("issuers");
    let key = dir.path().join("purpose-key.pem").display().to_string();
    ed25519_key(&key);
    let lone = ServerProcess::start(&["--purpose-signing-key", &key, "--decision-log", "off"]);
    let answer = asked_for_context(&lone.url(), "provide").await;
    assert_eq!(answer.decision(), pb::Decision::Permit);
    assert!(answer.purpose_context.is_empty(), "{answer:?}");
    assert!(not_issued(&lone, "not-an-issuer") >= 1.0);
    assert!(
        lone.log()
            .iter()
            .any(|l| l.contains("no purpose context is issued")),
        "the server says so at start"
    );

    // Over mutual TLS, only a caller whose certificate names an issuer.
    let trust = Pki::new(dir.path(), "trust");
    let (cert, tls_key) = trust.issue("server", "IP:127.0.0.1,DNS:localhost");
    let server = ServerProcess::start(&[
        "--purpose-signing-key",
        &key,
        "--purpose-context-issuers",
        "spiffe://shop.test/ns/*/sa/sidecar,pep.shop.test",
        "--decision-log",
        "off",
        "--tls-cert",
        &cert,
        "--tls-key",
        &tls_key,
        "--tls-client-ca",
        &trust.ca(),
    ]);
    let ask = |identity: (String, String)| {
        let (addr, ca) = (server.addr, trust.ca());
        async move {
            let channel = tls_channel(addr, &ca, Some(identity)).await.unwrap();
            let mut client = pb::decision_service_client::DecisionServiceClient::new(channel);
            let mut request = check_request("provide", "customer-data");
            request.issue_purpose_context = true;
            client.check(request).await.unwrap().into_inner()
        }
    };
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let issuer_of = |token: &str| -> String {
        let payload = token.split('.').nth(1).unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&b64.decode(payload).unwrap()).unwrap();
        claims["i"].as_str().unwrap().to_string()
    };
    for (name, san, issuer) in [
        (
            "sidecar",
            "URI:spiffe://shop.test/ns/shop/sa/sidecar",
            Some("spiffe://shop.test/ns/shop/sa/sidecar"),
        ),
        ("pep", "DNS:PEP.shop.test", Some("pep.shop.test")),
        // A DNS name that is no host name names no one, though it spells
        // a sidecar's SPIFFE ID.
        ("posing", "DNS:spiffe://shop.test/ns/shop/sa/sidecar", None),
        ("app", "URI:spiffe://shop.test/ns/shop/sa/app", None),
        ("other", "DNS:app.shop.test", None),
        // Two URIs name no one; a URI below a sidecar's is not one.
        (
            "two",
            "URI:spiffe://shop.test/ns/shop/sa/sidecar,URI:spiffe://x/y",
            None,
        ),
        ("deep", "URI:spiffe://shop.test/ns/a/sa/b/sa/sidecar", None),
    ] {
        let answer = ask(trust.issue(name, san)).await;
        assert_eq!(answer.decision(), pb::Decision::Permit, "{name}");
        match issuer {
            Some(issuer) => assert_eq!(issuer_of(&answer.purpose_context), issuer, "{name}"),
            None => assert!(answer.purpose_context.is_empty(), "{name}: {answer:?}"),
        }
    }
    assert!(not_issued(&server, "not-an-issuer") >= 2.0);

    // A sidecar's local API never hands one out, whatever is asked.
    let anyone_dir = TempDir::new("issuers-anyone");
    let (anyone, _) = signing_server(&anyone_dir, &[]);
    assert!(
        anyone.log().iter().any(|l| l.contains("proves nothing")),
        "the server warns that contexts prove nothing with `*`"
    );
    let sidecar = SidecarProcess::start(&anyone.url(), &[], &[]);
    let mut local = pb::decision_service_client::DecisionServiceClient::new(
        channel(&sidecar.local_url()).await,
    );
    let mut request = check_request("provide", "customer-data");
    request.issue_purpose_context = true;
    let answer = local.check(request.clone()).await.unwrap().into_inner();
    assert_eq!(answer.decision(), pb::Decision::Permit);
    assert!(answer.purpose_context.is_empty(), "{answer:?}");
    let batch = local
        .check_batch(pb::CheckBatchRequest {
            requests: vec![request],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(batch.responses[0].purpose_context.is_empty());
}

#[tokio::test]
async fn stuffed_baggage_never_widens_the_purpose_at_the_next_hop() {
    let chain = Chain::start(
        "stuffing",
        &["--purpose-context-issuers", "*", "--decision-log", "off"],
    );
    let caller = ["x-purpose: troubleshoot", "x-subject: crm"];
    // An `improve` context the caller obtained from the server itself (it
    // may: `*`), to smuggle under a key that reads as ours.
    let wide = asked_for_context(&chain.server.url(), "improve").await;
    assert!(!wide.purpose_context.is_empty());
    let pad = format!("pad={}", "x".repeat(8000));
    let many: String = (0..200)
        .map(|i| format!("m{i}=v"))
        .collect::<Vec<_>>()
        .join(",");
    let halves = format!("a={},b={}", "x".repeat(4000), "y".repeat(4000));
    let stuffings = [
        ("one member of 8,000 bytes", pad.clone()),
        ("200 members", many.clone()),
        ("members of 4,000 bytes each", halves),
        ("200 members and 8,000 bytes", format!("{many},{pad}")),
        (
            "an encoded key",
            format!("purposegat%65={}", wide.purpose_context),
        ),
        (
            "an encoded key in upper case",
            format!("%50URPOSEGATE={}", wide.purpose_context),
        ),
        (
            "an encoded key after many members",
            format!("{many},purposegat%65={}", wide.purpose_context),
        ),
        (
            "a key past encoded spaces",
            format!("{}purposegate={}", "%20".repeat(12), wide.purpose_context),
        ),
        (
            "a key past a no-break space",
            format!("%C2%A0purposegate={}", wide.purpose_context),
        ),
        (
            "a key with a plus",
            format!("purposegate+={}", wide.purpose_context),
        ),
    ];
    let reached = chain.second.received();
    for (what, baggage) in &stuffings {
        let header = format!("baggage: {baggage}");
        let mut headers = caller.to_vec();
        headers.push(&header);
        // Widened at the second hop: denied there, whatever the stuffing.
        let (status, _, body) = proxy_get(
            &chain.first_sidecar,
            "/relay/customers/c-1?purpose=improve",
            &headers,
        );
        assert_eq!(status, 403, "{what}: {body}");
        assert!(
            body.contains("not within the inherited purpose `troubleshoot`"),
            "{what}: {body}"
        );
        // Narrowed: permitted, so the context did cross the app (its own
        // OpenTelemetry propagator) to the second sidecar.
        let (status, _, body) = proxy_get(
            &chain.first_sidecar,
            "/relay/customers/c-1?purpose=troubleshoot.security-incident",
            &headers,
        );
        assert_eq!(status, 200, "{what}: {body}");
    }
    assert_eq!(
        chain.second.received(),
        reached + stuffings.len(),
        "only the narrowed calls reached the second app"
    );
    // A subject made to make the context too long to sign: written as its
    // digest, the context is issued and the ceiling holds.
    let long_subject = format!("x-subject: {}", "\\".repeat(2000));
    let headers = ["x-purpose: troubleshoot", long_subject.as_str()];
    let (status, _, body) = proxy_get(
        &chain.first_sidecar,
        "/relay/customers/c-1?purpose=improve",
        &headers,
    );
    assert_eq!(status, 403, "{body}");
    let (status, _, body) = proxy_get(
        &chain.first_sidecar,
        "/relay/customers/c-1?purpose=troubleshoot.security-incident",
        &headers,
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        metric(
            &chain.first_sidecar.metrics(),
            "purposegate_sidecar_baggage_members_dropped_total"
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    // The same key twice at the first hop: refused there.
    let twice = format!(
        "baggage: purposegate={},purposegate={}",
        wide.purpose_context, wide.purpose_context
    );
    let (status, _, _) = proxy_get(
        &chain.first_sidecar,
        "/relay/customers/c-1?purpose=improve",
        &["x-purpose: provide", &twice],
    );
    assert_eq!(status, 403);
}

#[test]
fn ext_authz_finds_the_ceiling_in_any_baggage_header() {
    let dir = TempDir::new("extauthz-ceiling");
    let (server, _) = signing_server(&dir, &[]);
    let routes = repo_root().join(ROUTES).display().to_string();
    let sidecar = SidecarProcess::start(&server.url(), &["--routes", &routes], &[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let token = runtime
        .block_on(asked_for_context(&server.url(), "provide"))
        .purpose_context;
    eventually_blocking(|| !runtime.block_on(published_keys(&server.url())).is_empty());
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    let ceiling = format!("purposegate={token}");
    // grpcurl asks the sidecar's ext_authz about a GET of a customer with
    // these headers.
    let ext_authz = |headers: &[serde_json::Value]| -> serde_json::Value {
        let check = serde_json::json!({"attributes": {"request": {"http": {
            "method": "GET", "path": "/customers/c-1", "headerMap": {"headers": headers}
        }}}});
        let run = grpcurl(
            &[
                "-plaintext",
                "-d",
                &check.to_string(),
                &sidecar.local_addr.to_string(),
                "envoy.service.auth.v3.Authorization/Check",
            ],
            None,
        );
        assert_eq!(run.code, Some(0), "{run:?}");
        serde_json::from_str(&run.stdout).unwrap()
    };
    for place in 0..3 {
        let mut headers = vec![serde_json::json!({"key": "x-purpose", "rawValue": b64("improve")})];
        for i in 0..3 {
            let value = if i == place {
                ceiling.clone()
            } else {
                format!("other{i}=x")
            };
            headers.push(serde_json::json!({"key": "baggage", "rawValue": b64(&value)}));
        }
        let answer = ext_authz(&headers);
        assert_eq!(
            answer["status"]["code"], 7,
            "ceiling in header {place}: {answer}"
        );
        assert!(
            answer.to_string().contains("inherited purpose"),
            "ceiling in header {place}: {answer}"
        );
    }
    // Let through, the call goes on with the sidecar's baggage: ours
    // first, a look-alike gone.
    let headers = [
        serde_json::json!({"key": "x-purpose", "rawValue": b64("provide")}),
        serde_json::json!({"key": "baggage", "rawValue": b64("purposegat%65=v1.x.y,a=1")}),
        serde_json::json!({"key": "baggage", "rawValue": b64(&ceiling)}),
    ];
    let answer = ext_authz(&headers);
    let set = answer["okResponse"]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["header"]["key"] == "baggage")
        .unwrap_or_else(|| panic!("no baggage set: {answer}"));
    assert_eq!(set["header"]["value"], format!("{ceiling},a=1"), "{answer}");
}

fn eventually_blocking(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "not within 10 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn a_replaced_or_lost_key_goes_once_its_contexts_have_expired() {
    let dir = TempDir::new("rotation");
    let (server, key) = signing_server(&dir, &["--purpose-context-ttl", "2s"]);
    let url = server.url();
    let first = published_keys(&url).await;
    assert_eq!(first.len(), 1);
    // Replaced: both published, then the old one only until its contexts
    // have expired (TTL 2 s, plus a second, plus the second the file is
    // looked at).
    let next = dir.path().join("next.pem").display().to_string();
    ed25519_key(&next);
    std::fs::rename(&next, &key).unwrap();
    let (both, _) = eventually("the new key is published first", || async {
        let now = published_keys(&url).await;
        (now.len() == 2 && now[1] == first[0]).then_some(now)
    })
    .await;
    let rotated = Instant::now();
    let (_, _) = eventually("the old key is dropped", || async {
        let now = published_keys(&url).await;
        (now == [both[0].clone()]).then_some(())
    })
    .await;
    let gone_after = rotated.elapsed();
    assert!(
        gone_after <= Duration::from_secs(4) && gone_after >= Duration::from_millis(1500),
        "{gone_after:?}"
    );
    // Lost: no context is signed from the next look on, and the key goes
    // the same way.
    std::fs::remove_file(&key).unwrap();
    eventually("no context is signed", || async {
        asked_for_context(&url, "provide")
            .await
            .purpose_context
            .is_empty()
            .then_some(())
    })
    .await;
    assert!(not_issued(&server, "no-key") >= 1.0);
    eventually("no key is published", || async {
        published_keys(&url).await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_open_stream_ends_when_its_inherited_context_expires() {
    let dir = TempDir::new("stream-ceiling");
    let (server, _) = signing_server(&dir, &["--purpose-context-ttl", "3s"]);
    let app = DemoService::start();
    let sidecar = demo_sidecar(&server.url(), &app, &[]);
    let token = asked_for_context(&server.url(), "provide")
        .await
        .purpose_context;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let claims: serde_json::Value =
        serde_json::from_slice(&b64.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap();
    let expires = claims["e"].as_u64().unwrap();
    eventually("the sidecar knows the key", || async {
        let baggage = format!("baggage: purposegate={token}");
        let (status, _, _) = proxy_get(&sidecar, "/customers/c-1", &["x-subject: crm", &baggage]);
        (status == 200).then_some(())
    })
    .await;
    // A feed that would go on for ever, opened with the context.
    let mut client = demo::customer_service_client::CustomerServiceClient::new(
        channel(&sidecar.proxy_url()).await,
    );
    let mut request = tonic::Request::new(demo::ExportCustomersRequest {
        fail_after: 0,
        follow: true,
    });
    request
        .metadata_mut()
        .insert("baggage", format!("purposegate={token}").parse().unwrap());
    let mut feed = client.export_customers(request).await.unwrap().into_inner();
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(10), feed.message()).await {
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => panic!("the feed ended without a status"),
            Ok(Err(status)) => break status,
            Err(_) => panic!("the feed outlived its context by 10 s"),
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert_eq!(ended.code(), tonic::Code::PermissionDenied, "{ended:?}");
    assert!(ended.message().contains("inherited expired"), "{ended:?}");
    // Past its expiry second, and within a second after it.
    let late = now - (expires as f64 + 1.0);
    assert!(
        (-0.1..=1.1).contains(&late),
        "ended {late:.2} s after the expiry"
    );
}

#[tokio::test]
async fn a_service_takes_contexts_only_from_the_peps_it_names() {
    // Contexts from a plaintext server name no issuer: a service that takes
    // them only from its named PEPs refuses them; one that names none
    // takes them.
    let dir = TempDir::new("context-from");
    let (server, _) = signing_server(&dir, &[]);
    let app = DemoService::start();
    let picky = demo_sidecar(
        &server.url(),
        &app,
        &[
            "--purpose-context-from",
            "spiffe://shop.test/ns/orders/sa/*",
        ],
    );
    let open = demo_sidecar(&server.url(), &app, &[]);
    let token = asked_for_context(&server.url(), "provide")
        .await
        .purpose_context;
    let baggage = format!("baggage: purposegate={token}");
    let (status, _, _) = eventually("the open service takes it", || async {
        let got = proxy_get(&open, "/customers/c-1", &["x-subject: crm", &baggage]);
        (got.0 == 200).then_some(got)
    })
    .await
    .0;
    assert_eq!(status, 200);
    let (status, headers, _) = proxy_get(&picky, "/customers/c-1", &["x-subject: crm", &baggage]);
    assert_eq!(status, 403, "{headers}");
    assert!(headers.contains("--purpose-context-from"), "{headers}");
    assert!(
        metric(
            &picky.metrics(),
            "purposegate_sidecar_purpose_contexts_refused_total{reason=\"issuer\"}"
        )
        .unwrap_or(0.0)
            >= 1.0
    );
}

#[tokio::test]
async fn a_hop_that_cannot_pass_a_context_on_does_not_pass_the_call_on() {
    // Two servers with one key: the first signs for anyone, the second for
    // no one. A sidecar asking the second verifies a context the first
    // signed, but gets none of its own to pass on: the call is denied
    // rather than sent on with the wider ceiling it came with.
    let dir = TempDir::new("no-onward-context");
    let (signer, key) = signing_server(&dir, &[]);
    let silent = ServerProcess::start(&["--purpose-signing-key", &key, "--decision-log", "off"]);
    let app = DemoService::start();
    let sidecar = demo_sidecar(&silent.url(), &app, &[]);
    let token = asked_for_context(&signer.url(), "provide")
        .await
        .purpose_context;
    let baggage = format!("baggage: purposegate={token}");
    let (status, headers, _) = eventually("the sidecar knows the key", || async {
        let got = proxy_get(&sidecar, "/customers/c-1", &["x-subject: crm", &baggage]);
        (got.0 == 403 && got.1.contains("signed none for this hop")).then_some(got)
    })
    .await
    .0;
    assert_eq!(status, 403, "{headers}");
    assert_eq!(app.received(), 0);
    // Without a context the same call is judged as ever.
    let (status, _, _) = proxy_get(
        &sidecar,
        "/customers/c-1",
        &["x-purpose: provide", "x-subject: crm"],
    );
    assert_eq!(status, 200);
}

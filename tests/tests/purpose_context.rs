//! Purpose across services with the real binaries: a server signing
//! purpose contexts, two demo apps each behind its own sidecar, the first
//! relaying to the second with its baggage passed on by OpenTelemetry's
//! baggage propagator; contexts tampered with, expired, signed by another
//! key; a key rotation the sidecars follow; a service that requires one.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers: a failed setup must fail the test"
)]

use std::time::Duration;

use base64::Engine as _;
use purposegate_proto::v1 as pb;
use purposegate_tests::contexts::{Chain, asked_for_context, proxy_get, published_keys};
use purposegate_tests::{
    DemoService, ServerProcess, SidecarProcess, TempDir, curl, ed25519_key, eventually, openssl,
    repo_root,
};

const ROUTES: &str = "examples/customer-service/routes.yaml";

/// A token as the server writes it, for `claims`, signed with `key` by
/// openssl: what an attacker holding some key could make.
fn forge(dir: &TempDir, key: &str, claims: &serde_json::Value) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payload = b64.encode(claims.to_string());
    let message = dir.write("message", &payload);
    let signature = dir.path().join("signature").display().to_string();
    openssl(&[
        "pkeyutl", "-sign", "-inkey", key, "-rawin", "-in", &message, "-out", &signature,
    ]);
    format!(
        "v1.{payload}.{}",
        b64.encode(std::fs::read(&signature).unwrap())
    )
}

/// The key ids the server publishes, newest first.
async fn published(server: &ServerProcess) -> Vec<String> {
    published_keys(&server.url()).await
}

/// A context signed by the server itself, for `purpose` on customer data.
async fn issued(server: &ServerProcess, purpose: &str) -> String {
    let answer = asked_for_context(&server.url(), purpose).await;
    assert_eq!(answer.decision(), pb::Decision::Permit);
    assert!(answer.ttl_seconds <= 60, "{answer:?}");
    assert!(!answer.purpose_context.is_empty(), "{answer:?}");
    answer.purpose_context
}

fn get(sidecar: &SidecarProcess, path: &str, headers: &[&str]) -> (u16, String, String) {
    proxy_get(sidecar, path, headers)
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_purpose_travels_two_hops_and_can_only_narrow() {
    // Plaintext, so any caller is an issuer (the server warns that
    // contexts then prove nothing); purpose_attacks.rs tries mTLS issuers.
    let log_dir = TempDir::new("purpose-context-log");
    let log = log_dir.path().join("decisions.log").display().to_string();
    let chain = Chain::start(
        "purpose-context",
        &["--purpose-context-issuers", "*", "--decision-log", &log],
    );
    let (dir, key, server) = (&chain.dir, &chain.key, &chain.server);
    let (second, second_sidecar, first_sidecar) =
        (&chain.second, &chain.second_sidecar, &chain.first_sidecar);
    let caller = ["x-purpose: troubleshoot", "x-subject: crm"];

    // The keys reach the sidecars through WatchPolicy.
    let keys = published(server).await;
    assert_eq!(keys.len(), 1);

    // Narrowed downstream: permitted, the record comes back.
    let (status, _, body) = get(
        first_sidecar,
        "/relay/customers/c-1?purpose=troubleshoot.security-incident",
        &caller,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"id\":\"c-1\""), "{body}");
    // No purpose downstream: the inherited one.
    let (status, _, body) = get(first_sidecar, "/relay/customers/c-2", &caller);
    assert_eq!(status, 200, "{body}");
    let reached = second.received();
    assert_eq!(reached, 2);

    // Widened downstream: denied by the second sidecar, naming both, and
    // the second app never sees it.
    let (status, _, body) = get(
        first_sidecar,
        "/relay/customers/c-1?purpose=improve",
        &caller,
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("`improve` is not within the inherited purpose `troubleshoot`"),
        "{body}"
    );
    assert_eq!(second.received(), reached, "a widened call reached the app");
    // The decision log names the inherited purpose beside the asked one.
    let (line, _) = eventually("the widened call is logged", || async {
        std::fs::read_to_string(&log)
            .ok()?
            .lines()
            .find(|l| l.contains("\"purpose\":\"improve\""))
            .map(str::to_string)
    })
    .await;
    let line: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(line["inherited_purpose"], "troubleshoot", "{line}");
    assert_eq!(line["decision"], "DENY", "{line}");
    assert!(
        metric(
            &second_sidecar.metrics(),
            "purposegate_sidecar_purpose_contexts_inherited_total"
        ) >= 3.0
    );

    // Contexts an attacker makes: tampered, expired, another key, an
    // unknown key id; each refused with its reason, never reaching the app.
    let genuine = issued(server, "provide").await;
    // One character of the signature changed (not its last, whose low
    // bits base64 leaves unused).
    let mut tampered: Vec<char> = genuine.chars().collect();
    let at = tampered.len() - 10;
    tampered[at] = if tampered[at] == 'A' { 'B' } else { 'A' };
    let tampered: String = tampered.into_iter().collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = |kid: &str, expires: u64| serde_json::json!({"k": kid, "p": "provide", "c": "customer-data", "s": "crm", "r": "x", "e": expires});
    let expired = forge(dir, key, &claims(&keys[0], now - 10));
    let other_key = dir.path().join("other.pem").display().to_string();
    ed25519_key(&other_key);
    let other = forge(dir, &other_key, &claims(&keys[0], now + 60));
    let unknown = forge(dir, &other_key, &claims("0123456789abcdef", now + 60));
    for (token, says, label) in [
        (
            tampered.as_str(),
            "does not carry a valid signature",
            "forged",
        ),
        (expired.as_str(), "has expired", "expired"),
        (other.as_str(), "does not carry a valid signature", "forged"),
        (
            unknown.as_str(),
            "signed by a key the decision server does not publish",
            "unknown-key",
        ),
        ("v1.garbage", "cannot be read", "unparsable"),
    ] {
        let baggage = format!("baggage: userid=alice,purposegate={token}");
        let (status, headers, body) = get(
            second_sidecar,
            "/customers/c-1",
            &["x-purpose: provide", "x-subject: crm", &baggage],
        );
        assert_eq!(status, 403, "{label}: {body}");
        assert!(headers.contains(says), "{label}: {headers}");
        let refused = metric(
            &second_sidecar.metrics(),
            &format!("purposegate_sidecar_purpose_contexts_refused_total{{reason=\"{label}\"}}"),
        );
        assert!(refused >= 1.0, "{label}");
    }
    // Baggage the sidecar cannot read (bytes past ASCII): refused, not
    // passed on unread.
    let (status, headers, _) = get(
        second_sidecar,
        "/customers/c-1",
        &["x-purpose: provide", "baggage: purposegate=caf\u{e9}"],
    );
    assert_eq!(status, 403);
    assert!(
        headers.contains("header `baggage` holds bytes"),
        "{headers}"
    );
    // Twice in the baggage: refused.
    let twice = format!("baggage: purposegate={genuine},purposegate={genuine}");
    let (status, _, _) = get(
        second_sidecar,
        "/customers/c-1",
        &["x-purpose: provide", &twice],
    );
    assert_eq!(status, 403);
    assert_eq!(
        second.received(),
        reached,
        "a refused context reached the app"
    );
    // The genuine one, sent straight to the second sidecar: permitted.
    let baggage = format!("baggage: purposegate={genuine}");
    let (status, _, body) = get(
        second_sidecar,
        "/customers/c-1",
        &["x-subject: crm", &baggage],
    );
    assert_eq!(status, 200, "{body}");

    // The key rotates on the server; the sidecars follow without a call.
    let rotated = dir.path().join("rotated.pem").display().to_string();
    ed25519_key(&rotated);
    std::fs::copy(&rotated, dir.path().join("purpose-key.pem.tmp")).unwrap();
    std::fs::rename(dir.path().join("purpose-key.pem.tmp"), key).unwrap();
    let (keys_now, _) = eventually("the server publishes the new key", || async {
        let now = published(server).await;
        (now.len() == 2 && now[1] == keys[0]).then_some(now)
    })
    .await;
    let signed_new = forge(dir, &rotated, &claims(&keys_now[0], now + 60));
    let baggage = format!("baggage: purposegate={signed_new}");
    eventually("the sidecar verifies the new key", || async {
        let (status, _, _) = get(
            second_sidecar,
            "/customers/c-1",
            &["x-subject: crm", &baggage],
        );
        (status == 200).then_some(())
    })
    .await;
    // The old key's contexts still verify until they expire.
    let baggage = format!("baggage: purposegate={genuine}");
    let (status, _, _) = get(
        second_sidecar,
        "/customers/c-1",
        &["x-subject: crm", &baggage],
    );
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_service_that_requires_a_context_is_reached_only_downstream() {
    let dir = TempDir::new("purpose-required");
    let key = dir.path().join("purpose-key.pem").display().to_string();
    ed25519_key(&key);
    let server = ServerProcess::start(&[
        "--purpose-signing-key",
        &key,
        "--purpose-context-issuers",
        "*",
        "--decision-log",
        "off",
    ]);
    let app = DemoService::start();
    let upstream = format!("http://{}", app.grpc_addr);
    let routes = repo_root().join(ROUTES).display().to_string();
    let sidecar = SidecarProcess::start(
        &server.url(),
        &[
            "--upstream",
            &upstream,
            "--routes",
            &routes,
            "--require-purpose-context",
        ],
        &[],
    );
    let (status, headers, _) = get(
        &sidecar,
        "/customers/c-1",
        &["x-purpose: provide", "x-subject: crm"],
    );
    assert_eq!(status, 403);
    assert!(headers.contains("carries no purpose context"), "{headers}");
    assert_eq!(app.received(), 0);
    assert!(
        metric(
            &sidecar.metrics(),
            "purposegate_sidecar_purpose_contexts_missing_total"
        ) >= 1.0
    );
    let token = issued(&server, "provide").await;
    let baggage = format!("baggage: purposegate={token}");
    let (status, _, body) = get(&sidecar, "/customers/c-1", &["x-subject: crm", &baggage]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.received(), 1);
    tokio::time::sleep(Duration::from_millis(10)).await;

    // Per route: only the route that says so requires one.
    let routes_file = dir.write(
        "routes.yaml",
        "routes:\n  - http: /customers/\n    methods: [GET]\n    dataCategory: customer-data\n    requirePurposeContext: true\n  - http: /echo\n    methods: [POST]\n    dataCategory: service-generated-data\n",
    );
    let per_route = SidecarProcess::start(
        &server.url(),
        &["--upstream", &upstream, "--routes", &routes_file],
        &[],
    );
    let (status, _, _) = get(
        &per_route,
        "/customers/c-1",
        &["x-purpose: provide", "x-subject: crm"],
    );
    assert_eq!(status, 403);
    let echo = curl(&[
        "-X",
        "POST",
        "-H",
        "x-purpose: provide",
        "-H",
        "x-subject: crm",
        "--data-binary",
        "hi",
        &format!("{}/echo", per_route.proxy_url()),
    ]);
    assert_eq!(echo.status, 200, "{}", echo.body);
}

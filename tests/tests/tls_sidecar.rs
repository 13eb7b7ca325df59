//! Mutual TLS through the real sidecar with certificates made by the real
//! openssl: it talks to the server over mTLS, refuses plaintext callers,
//! strangers and a decision server it cannot verify, and takes a caller's
//! subject from its certificate's URI SAN.

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
    DemoService, Pki, ServerProcess, SidecarProcess, TempDir, demo_behind_sidecar, get_customer,
    grpcurl, metric, mtls_server, tls_channel,
};
use tonic::transport::Channel;

const CLAIMS_POLICY: &str = r#"
version: 1
name: mtls-claims
purposes:
  provide: Provide the service
  troubleshoot: Troubleshoot
dataCategories:
  customer-data: Customer data
  service-generated-data: Service-generated data
rules:
  - id: service
    effect: permit
    purposes: [provide, troubleshoot]
    dataCategories: [customer-data, service-generated-data]
claims:
  - id: billing
    subjects: ["spiffe://example.org/ns/shop/sa/billing"]
    purposes: [provide]
  - id: support
    subjects: [mallory]
    purposes: [provide, troubleshoot]
"#;

struct Stack {
    _server: ServerProcess,
    demo: DemoService,
    sidecar: SidecarProcess,
    trust: Pki,
    _dir: TempDir,
}

/// The demo app behind a sidecar with its own certificate from `trust`,
/// asking the server at `pdp` over mutual TLS.
fn tls_sidecar(pdp: std::net::SocketAddr, trust: &Pki, san: &str) -> (DemoService, SidecarProcess) {
    let (cert, key) = trust.issue("sidecar", san);
    demo_behind_sidecar(
        &format!("https://{pdp}"),
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &trust.ca(),
        ],
        &[],
    )
}

fn mtls_stack() -> Stack {
    let dir = TempDir::new("tls-sidecar");
    let trust = Pki::new(dir.path(), "trust");
    let policy = dir.write("policy.yaml", CLAIMS_POLICY);
    let (server, _) = mtls_server(&dir, &trust, &["--policy", &policy]);
    let (demo, sidecar) = tls_sidecar(
        server.addr,
        &trust,
        "IP:127.0.0.1,URI:spiffe://example.org/ns/shop/sa/purposegate-sidecar",
    );
    Stack {
        _server: server,
        demo,
        sidecar,
        trust,
        _dir: dir,
    }
}

async fn tls_client(stack: &Stack, leaf: &str, san: &str) -> CustomerServiceClient<Channel> {
    let identity = stack.trust.issue(leaf, san);
    CustomerServiceClient::new(
        tls_channel(stack.sidecar.proxy_addr, &stack.trust.ca(), Some(identity))
            .await
            .unwrap(),
    )
}

/// A caller with a trusted certificate (billing, who may provide) gets
/// its call through.
async fn billing_is_served(stack: &Stack) {
    let mut billing = tls_client(
        stack,
        "billing",
        "URI:spiffe://example.org/ns/shop/sa/billing",
    )
    .await;
    billing
        .get_customer(get_customer("provide", ""))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_sidecar_names_the_caller_by_its_certificate_not_its_headers() {
    let stack = mtls_stack();
    let mut billing = tls_client(
        &stack,
        "billing",
        "URI:spiffe://example.org/ns/shop/sa/billing",
    )
    .await;

    // billing may claim `provide`: the call goes through mTLS to the PDP
    // and on to the app.
    let customer = billing
        .get_customer(get_customer("provide", "mallory"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(customer.name, "Alan Turing");

    // Saying `x-subject: mallory` (who may troubleshoot) does not help:
    // the certificate says billing, and billing may not.
    let denied = billing
        .get_customer(get_customer("troubleshoot", "mallory"))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    assert!(
        denied
            .message()
            .contains("spiffe://example.org/ns/shop/sa/billing"),
        "{}",
        denied.message()
    );
    assert_eq!(
        denied.metadata().get("x-purposegate-rule-ids").unwrap(),
        "billing"
    );

    // A certificate with no URI SAN names no one: x-subject is still ignored.
    let mut nameless = tls_client(&stack, "nameless", "DNS:nameless.example.org").await;
    let denied = nameless
        .get_customer(get_customer("provide", "mallory"))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert!(
        denied.message().contains("names no subject"),
        "{}",
        denied.message()
    );
    // Several URI SANs are no SPIFFE ID: no subject either.
    let mut twofold = tls_client(
        &stack,
        "twofold",
        "URI:spiffe://example.org/ns/shop/sa/billing,URI:spiffe://example.org/ns/shop/sa/other",
    )
    .await;
    let denied = twofold
        .get_customer(get_customer("provide", "mallory"))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert!(
        denied.message().contains("names no subject"),
        "{}",
        denied.message()
    );
    assert_eq!(stack.demo.received(), 1, "only the permitted call arrived");
}

/// A routed, permitted call that fails before the sidecar judges it: a
/// transport error, never PERMISSION_DENIED, and nothing reaches the app.
async fn refused_at_the_door(channel: Result<Channel, tonic::transport::Error>) -> String {
    let Ok(channel) = channel else {
        return "no connection".to_string();
    };
    let status = CustomerServiceClient::new(channel)
        .get_customer(get_customer("provide", "crm"))
        .await
        .unwrap_err();
    assert_ne!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert_ne!(status.code(), tonic::Code::Ok);
    format!("{:?}", status.code())
}

#[tokio::test]
async fn the_sidecar_refuses_callers_without_a_trusted_certificate() {
    let stack = mtls_stack();
    let timeout = std::time::Duration::from_secs(3);
    // Plaintext h2c, on a call the routes permit.
    let plaintext = Channel::from_shared(stack.sidecar.proxy_url())
        .unwrap()
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect()
        .await;
    refused_at_the_door(plaintext).await;
    // TLS without a client certificate.
    let anonymous = tls_channel(stack.sidecar.proxy_addr, &stack.trust.ca(), None).await;
    refused_at_the_door(anonymous).await;
    // A certificate from another CA.
    let dir = TempDir::new("tls-stranger");
    let rogue = Pki::new(dir.path(), "rogue");
    let identity = rogue.issue("billing", "URI:spiffe://example.org/ns/shop/sa/billing");
    let stranger = tls_channel(stack.sidecar.proxy_addr, &stack.trust.ca(), Some(identity)).await;
    refused_at_the_door(stranger).await;
    assert_eq!(stack.demo.received(), 0, "a refused caller reached the app");
    let failures = metric(
        &stack.sidecar.metrics(),
        "purposegate_sidecar_tls_handshake_failures_total",
    )
    .unwrap();
    assert!(failures >= 2.0, "{failures} failed handshakes counted");

    // The trusted path still works after all three.
    billing_is_served(&stack).await;
    assert_eq!(stack.demo.received(), 1);
}

/// Envoy checks on the local port of a TLS sidecar: without a verified
/// principal, `x-subject` names no one.
#[test]
fn ext_authz_without_a_principal_names_no_subject_when_tls_is_on() {
    let stack = mtls_stack();
    let request = serde_json::json!({"attributes": {
        "request": {"http": {"method": "GET", "path": "/customers/c-1",
            "headers": {"x-purpose": "troubleshoot", "x-subject": "mallory"}}}
    }});
    let run = grpcurl(
        &[
            "-plaintext",
            "-d",
            &request.to_string(),
            &stack.sidecar.local_addr.to_string(),
            "envoy.service.auth.v3.Authorization/Check",
        ],
        None,
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("names no subject"), "{}", run.stdout);
}

/// The sidecar checks whom it asks: a decision server whose certificate is
/// from another CA, or for another name, gets no question, and every call
/// is denied (fail closed), never let through.
#[tokio::test]
async fn the_sidecar_refuses_a_pdp_it_cannot_verify() {
    // The first case is the control: the same setup with the right CA and
    // name permits, so the refusals below are the verification's doing.
    for (case, ca, san) in [
        (
            "the right CA and name",
            "trust",
            "IP:127.0.0.1,DNS:localhost",
        ),
        ("another CA", "rogue", "IP:127.0.0.1,DNS:localhost"),
        ("another name", "trust", "DNS:someone-else.example.org"),
    ] {
        let dir = TempDir::new("tls-wrong-pdp");
        let trust = Pki::new(dir.path(), "trust");
        let rogue = Pki::new(dir.path(), "rogue");
        let issuer = if ca == "rogue" { &rogue } else { &trust };
        let (server_cert, server_key) = issuer.issue("server", san);
        let server = ServerProcess::start(&[
            "--decision-log",
            "off",
            "--tls-cert",
            &server_cert,
            "--tls-key",
            &server_key,
        ]);
        let (demo, sidecar) = tls_sidecar(server.addr, &trust, "IP:127.0.0.1");
        let identity = trust.issue("caller", "URI:spiffe://example.org/ns/shop/sa/crm");
        let channel = tls_channel(sidecar.proxy_addr, &trust.ca(), Some(identity))
            .await
            .unwrap();
        let answer = CustomerServiceClient::new(channel)
            .get_customer(get_customer("provide", ""))
            .await;
        if ca == "trust" && san.starts_with("IP:") {
            assert!(answer.is_ok(), "{case}: {answer:?}");
            assert_eq!(demo.received(), 1, "{case}");
            continue;
        }
        let denied = answer.unwrap_err();
        assert_eq!(
            denied.code(),
            tonic::Code::PermissionDenied,
            "{case}: {denied:?}"
        );
        assert!(
            denied.message().contains("could not answer"),
            "{case}: {}",
            denied.message()
        );
        assert_eq!(demo.received(), 0, "{case}: a call went through");
    }
}

#[test]
fn the_sidecar_refuses_a_plaintext_pdp_when_tls_is_configured() {
    let dir = TempDir::new("tls-sidecar-flags");
    let trust = Pki::new(dir.path(), "trust");
    let (cert, key) = trust.issue("sidecar", "IP:127.0.0.1");
    let sidecar = |args: &[&str]| {
        let run = std::process::Command::new(purposegate_tests::binary("purposegate-sidecar"))
            .args(args)
            .output()
            .unwrap();
        (
            run.status.code(),
            String::from_utf8_lossy(&run.stderr).into_owned(),
        )
    };
    let (code, stderr) = sidecar(&[
        "--pdp",
        "http://127.0.0.1:50051",
        "--listen",
        "127.0.0.1:0",
        "--local-listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-client-ca",
        &trust.ca(),
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("plaintext but TLS is configured"),
        "{stderr}"
    );

    let (code, stderr) = sidecar(&["--tls-cert", &cert]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--tls-key"), "{stderr}");
}

#[tokio::test]
async fn idle_sockets_of_one_peer_cannot_take_every_handshake_slot() {
    let stack = mtls_stack();
    // 1,100 TCP connections from one address that never say a word.
    let attacker: std::net::IpAddr = [127, 0, 0, 2].into();
    let mut idle = Vec::new();
    let start = std::time::Instant::now();
    for _ in 0..1100 {
        if let Ok(socket) =
            purposegate_tests::attacks::connect_from(attacker, stack.sidecar.proxy_addr).await
        {
            idle.push(socket);
        }
    }
    // A real caller with a certificate is served meanwhile.
    billing_is_served(&stack).await;
    let refused = metric(
        &stack.sidecar.metrics(),
        r#"purposegate_sidecar_connections_refused_total{listener="proxy"}"#,
    )
    .unwrap();
    // The peer holds at most 128 at once; silent ones are closed after 5 s,
    // which frees places for later ones if connecting took that long.
    let rounds = 1 + start.elapsed().as_secs() / 5;
    let admitted_at_most = 128 * rounds;
    assert!(
        refused >= (1100 - admitted_at_most.min(1100)) as f64,
        "{refused} refused at the peer's cap in {rounds} rounds"
    );
    let peak = stack.sidecar.peak_resident_kib();
    assert!(peak < 64 * 1024, "{peak} KiB");
    drop(idle);
}

#[test]
fn with_mutual_tls_the_app_sees_only_the_certified_subject() {
    let dir = TempDir::new("tls-app");
    let trust = Pki::new(dir.path(), "trust");
    let policy = dir.write("policy.yaml", CLAIMS_POLICY);
    let (server, _) = mtls_server(&dir, &trust, &["--policy", &policy]);
    let app = purposegate_tests::app::FrameworkApp::start();
    let routes = dir.write(
        "routes.yaml",
        "routes:\n  - http: /records/\n    dataCategory: customer-data\n",
    );
    let (cert, key) = trust.issue(
        "sidecar",
        "IP:127.0.0.1,URI:spiffe://example.org/ns/shop/sa/sc",
    );
    let sidecar = SidecarProcess::start(
        &format!("https://{}", server.addr),
        &[
            "--upstream",
            &app.url(),
            "--routes",
            &routes,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &trust.ca(),
        ],
        &[],
    );
    // `/records/1` with a certificate issued for `san`, stating
    // `x-purpose: provide` and these subjects of its own.
    let call_as = |name: &str, san: &str, subjects: &[&str]| {
        let (cert, key) = trust.issue(name, san);
        let ca = trust.ca();
        let url = format!("https://{}/records/1", sidecar.proxy_addr);
        let mut args = vec![
            "--cacert",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
            "-H",
            "x-purpose: provide",
        ];
        for subject in subjects {
            args.extend(["-H", subject]);
        }
        args.push(&url);
        purposegate_tests::curl(&args)
    };
    let got = call_as(
        "billing",
        "URI:spiffe://example.org/ns/shop/sa/billing",
        &["x-subject: mallory", "x_subject: root", "X_SUBJECT: admin"],
    );
    assert_eq!(got.status, 200, "{got:?}");
    let seen = app.seen().pop().unwrap();
    assert_eq!(
        seen.cgi_all("x-subject"),
        ["spiffe://example.org/ns/shop/sa/billing"],
        "{seen:?}"
    );

    // A certificate whose URI SAN holds a control character names no one
    // (it could not be a header value; the caller's `x-subject` is not
    // believed either): this policy binds purposes to subjects, so the
    // call is denied and the app sees nothing of it.
    let calls_before = app.seen().len();
    let got = call_as(
        "odd",
        "URI:spiffe://example.org/ns/shop/sa/bil\u{1}ling",
        &["x-subject: mallory"],
    );
    assert_eq!(got.status, 403, "{got:?}");
    assert!(got.body.contains("names no subject"), "{got:?}");
    assert_eq!(app.seen().len(), calls_before);
}

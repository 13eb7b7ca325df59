//! Envoy external authorization on the sidecar's local port, called with
//! the real grpcurl (no proto file: the sidecar's reflection describes it).

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers: a failed setup must fail the test"
)]

use purposegate_tests::{ServerProcess, SidecarProcess, TempDir, grpcurl, repo_root};

/// The ext_authz answer for an HTTP request Envoy describes.
fn authorize(
    sidecar: &SidecarProcess,
    method: &str,
    path: &str,
    headers: serde_json::Value,
) -> serde_json::Value {
    authorize_raw(
        sidecar,
        &serde_json::json!({
            "attributes": {"request": {"http": {"method": method, "path": path, "headers": headers}}}
        }),
    )
}

/// The ext_authz answer for a whole `CheckRequest` in Envoy's JSON.
fn authorize_raw(sidecar: &SidecarProcess, request: &serde_json::Value) -> serde_json::Value {
    let run = grpcurl(
        &[
            "-plaintext",
            "-d",
            &request.to_string(),
            &sidecar.local_addr.to_string(),
            "envoy.service.auth.v3.Authorization/Check",
        ],
        None,
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    serde_json::from_str(&run.stdout).unwrap()
}

fn status_code(answer: &serde_json::Value) -> i64 {
    answer["status"]["code"].as_i64().unwrap_or(0)
}

#[test]
fn grpcurl_gets_ok_and_permission_denied_for_the_right_headers() {
    let server = ServerProcess::start(&["--decision-log", "off"]);
    let routes = repo_root()
        .join("examples/customer-service/routes.yaml")
        .display()
        .to_string();
    let sidecar = SidecarProcess::start(&server.url(), &["--routes", &routes], &[]);

    let list = grpcurl(
        &["-plaintext", &sidecar.local_addr.to_string(), "list"],
        None,
    );
    assert!(
        list.stdout
            .lines()
            .any(|l| l == "envoy.service.auth.v3.Authorization"),
        "{list:?}"
    );

    // OK: a permitted purpose on a routed HTTP path.
    let ok = authorize(
        &sidecar,
        "GET",
        "/customers/c-1?fields=name",
        serde_json::json!({"x-purpose": "provide", "x-subject": "crm"}),
    );
    assert_eq!(status_code(&ok), 0, "{ok}");
    assert!(ok.get("okResponse").is_some(), "{ok}");

    // PERMISSION_DENIED with the reason, rule ids and revision for Envoy to
    // pass on in its 403.
    let denied = authorize(
        &sidecar,
        "GET",
        "/customers/c-1",
        serde_json::json!({"x-purpose": "advertising"}),
    );
    assert_eq!(status_code(&denied), 7, "{denied}");
    assert_eq!(denied["deniedResponse"]["status"]["code"], "Forbidden");
    let headers = denied["deniedResponse"]["headers"].to_string();
    assert!(
        headers.contains("x-purposegate-rule-ids") && headers.contains("no-prohibited-uses"),
        "{headers}"
    );
    assert!(headers.contains("x-purposegate-revision"), "{headers}");

    // No purpose, no route, and a gRPC method judged by its path.
    let no_purpose = authorize(&sidecar, "GET", "/customers/c-1", serde_json::json!({}));
    assert_eq!(status_code(&no_purpose), 7, "{no_purpose}");
    let no_route = authorize(
        &sidecar,
        "GET",
        "/orders/1",
        serde_json::json!({"x-purpose": "provide"}),
    );
    assert_eq!(status_code(&no_route), 7, "{no_route}");
    let grpc = authorize(
        &sidecar,
        "POST",
        "/demo.v1.CustomerService/GetCustomer",
        serde_json::json!({"content-type": "application/grpc", "x-purpose": "troubleshoot"}),
    );
    assert_eq!(status_code(&grpc), 0, "{grpc}");
    let professional = authorize(
        &sidecar,
        "POST",
        "/demo.v1.CustomerService/GetCustomer",
        serde_json::json!({"content-type": "application/grpc", "x-purpose": "professional-services.planning"}),
    );
    assert_eq!(
        status_code(&professional),
        7,
        "customer data is not professional-services data: {professional}"
    );
}

#[test]
fn the_peer_principal_envoy_verified_replaces_x_subject() {
    let dir = TempDir::new("extauthz-principal");
    let policy = dir.write(
        "policy.yaml",
        r#"
version: 1
name: principals
purposes: { provide: Provide, troubleshoot: Troubleshoot }
dataCategories: { customer-data: Customer data }
rules:
  - { id: service, effect: permit, purposes: [provide, troubleshoot] }
claims:
  - { id: billing, subjects: ["spiffe://example.org/ns/shop/sa/billing"], purposes: [provide] }
  - { id: support, subjects: [mallory], purposes: [provide, troubleshoot] }
"#,
    );
    let server = ServerProcess::start(&["--decision-log", "off", "--policy", &policy]);
    let routes = repo_root()
        .join("examples/customer-service/routes.yaml")
        .display()
        .to_string();
    let sidecar = SidecarProcess::start(&server.url(), &["--routes", &routes], &[]);
    let request = |principal: &str| {
        serde_json::json!({"attributes": {
            "source": {"principal": principal},
            "request": {"http": {"method": "GET", "path": "/customers/c-1",
                "headers": {"x-purpose": "troubleshoot", "x-subject": "mallory"}}}
        }})
    };
    // No mutual TLS at Envoy: the header is all there is.
    let believed = authorize_raw(&sidecar, &request(""));
    assert_eq!(status_code(&believed), 0, "{believed}");
    // Envoy verified billing's certificate: billing may not troubleshoot,
    // whatever the header says.
    let denied = authorize_raw(
        &sidecar,
        &request("spiffe://example.org/ns/shop/sa/billing"),
    );
    assert_eq!(status_code(&denied), 7, "{denied}");
    let headers = denied["deniedResponse"]["headers"].to_string();
    assert!(headers.contains("billing"), "{headers}");
}

#[test]
fn ext_authz_reads_a_call_as_the_proxy_does() {
    let server = ServerProcess::start(&["--decision-log", "off"]);
    let routes = repo_root()
        .join("examples/customer-service/routes.yaml")
        .display()
        .to_string();
    let sidecar = SidecarProcess::start(&server.url(), &["--routes", &routes], &[]);
    let b64 = |text: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(text)
    };

    // A body on a GET: 400 for Envoy to send, never forwarded.
    let body = authorize(
        &sidecar,
        "GET",
        "/customers/c-1",
        serde_json::json!({"x-purpose": "provide", "content-length": "60"}),
    );
    assert_eq!(status_code(&body), 7, "{body}");
    assert_eq!(
        body["deniedResponse"]["status"]["code"], "BadRequest",
        "{body}"
    );

    // Every `baggage` value is read: a purpose context in the second one
    // is judged (here: unreadable, so refused), not skipped.
    let two = authorize_raw(
        &sidecar,
        &serde_json::json!({"attributes": {"request": {"http": {
            "method": "GET", "path": "/customers/c-1",
            "headerMap": {"headers": [
                {"key": "x-purpose", "rawValue": b64("provide")},
                {"key": "baggage", "rawValue": b64("userid=alice")},
                {"key": "baggage", "rawValue": b64("purposegate=v1.forged.x")}
            ]}
        }}}}),
    );
    assert_eq!(status_code(&two), 7, "{two}");

    // A method override in the query, in a spelling PHP reads.
    let query = authorize(
        &sidecar,
        "GET",
        "/customers/c-1?.method=DELETE",
        serde_json::json!({"x-purpose": "provide"}),
    );
    assert_eq!(status_code(&query), 7, "{query}");

    // Rewrite and client-address headers: Envoy is told to remove them
    // (but not `x-forwarded-for`, which Envoy sets itself).
    let ok = authorize(
        &sidecar,
        "GET",
        "/customers/c-1",
        serde_json::json!({"x-purpose": "provide", "x-original-host": "admin",
            "true-client-ip": "10.0.0.1", "x-forwarded-server": "admin",
            "x-forwarded-for": "10.1.1.1"}),
    );
    assert_eq!(status_code(&ok), 0, "{ok}");
    let removed = ok["okResponse"]["headersToRemove"].to_string();
    for name in ["x-original-host", "true-client-ip", "x-forwarded-server"] {
        assert!(removed.contains(name), "{name}: {ok}");
    }
    assert!(!removed.contains("x-forwarded-for"), "{ok}");
}

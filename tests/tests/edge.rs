//! The edge, tried as an attacker would: what the sidecar judged is what
//! the app gets. Behind the sidecar sits an app that behaves as real apps
//! do (it decodes and normalises paths before routing and reads headers the
//! CGI/WSGI way, `purposegate_tests::app`), or the demo gRPC app; requests
//! go out byte for byte. None may reach data without a permit.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers: a failed setup must fail the test"
)]

use prost::Message;
use purposegate_demo_service::pb;
use purposegate_tests::attacks::{PATHS_TO_SECRETS, grpc_frame, h2_request, http1_get, http1_raw};
use purposegate_tests::{AppStack, DemoService, ServerProcess, SidecarProcess, TempDir, grpcurl};

/// `/records/` is customer data (raw records); `/echo` service-generated
/// data; nothing else is routed (in particular not `/secrets/`).
const APP_ROUTES: &str = "routes:
  - http: /records/
    methods: [GET]
    dataCategory: customer-data
    resource: { deidentification: IDENTIFIED }
  - http: /echo
    dataCategory: service-generated-data
";

fn app_stack(policy: Option<&str>, routes: &str, extra: &[&str]) -> AppStack {
    AppStack::start(policy, routes, extra)
}

const PROVIDE: &[(&str, &str)] = &[("x-purpose", "provide"), ("x-subject", "crm")];

#[test]
fn paths_that_resolve_elsewhere_never_reach_data_over_http1() {
    let stack = app_stack(None, APP_ROUTES, &[]);
    let proxy = stack.sidecar.proxy_addr;
    // The route works: a permitted call reaches its record.
    let ok = http1_get(proxy, "/records/1", PROVIDE);
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.body, "record 1\n");

    for path in PATHS_TO_SECRETS {
        let answer = http1_get(proxy, path, PROVIDE);
        assert!(
            !answer.body.contains("SECRET"),
            "{path} reached a secret: {answer:?}"
        );
        assert_ne!(answer.status, 200, "{path}: {answer:?}");
    }
    assert!(
        stack.app.served_under("/secrets").is_empty(),
        "the app served secrets: {:?}",
        stack.app.served_under("/secrets")
    );
    // Whatever reached the app was already in the form the app resolves
    // it to: the sidecar forwarded the path it judged.
    for seen in stack.app.seen() {
        let path = seen.target.split('?').next().unwrap();
        assert_eq!(path, seen.path, "{seen:?}");
    }
}

#[test]
fn the_canonical_path_is_the_one_forwarded_and_prefixes_match_whole_segments() {
    let stack = app_stack(None, APP_ROUTES, &[]);
    let proxy = stack.sidecar.proxy_addr;
    for (sent, forwarded) in [
        ("/records/%31", "/records/1"),
        ("/records/a/../2", "/records/2"),
        ("//records///3", "/records/3"),
        ("/cust%6Fm/../records/4?x=%2F", "/records/4?x=%2F"),
    ] {
        let answer = http1_get(proxy, sent, PROVIDE);
        assert_eq!(answer.status, 200, "{sent}: {answer:?}");
        let seen = stack.app.seen().pop().unwrap();
        assert_eq!(seen.target, forwarded, "{sent}");
    }
    // `/echo` covers `/echo` and what lies below it, not `/echoes`.
    let echoes = http1_get(proxy, "/echoes", PROVIDE);
    assert_eq!(echoes.status, 403, "{echoes:?}");
    assert!(
        echoes.body.contains("no route covers GET `/echoes`"),
        "{echoes:?}"
    );
    assert!(stack.app.served_under("/echoes").is_empty());
    let refused = http1_get(proxy, "/records/..%2fsecrets/1", PROVIDE);
    assert!(
        refused.body.contains("has an encoded `/`"),
        "the refusal names what was wrong: {refused:?}"
    );
}

#[test]
fn a_target_of_a_query_alone_reaches_an_http2_app_with_its_path() {
    // `GET http://host?a=b` names no path: it is judged as `/`, and the app
    // gets `/?a=b`, over HTTP/2 too (where `:path` must start with `/`).
    let routes = "routes:
  - http: /
    methods: [GET]
    dataCategory: customer-data
    resource: { deidentification: IDENTIFIED }
";
    for protocol in ["http1", "http2"] {
        let stack = app_stack(None, routes, &["--upstream-protocol", protocol]);
        let proxy = stack.sidecar.proxy_addr;
        let answer = http1_raw(
            proxy,
            "GET http://app.example?a=b HTTP/1.1\r\nx-purpose: provide\r\nx-subject: crm",
        );
        assert_eq!(answer.status, 200, "{protocol}: {answer:?}");
        let seen = stack.app.seen().pop().unwrap();
        assert_eq!(seen.target, "/?a=b", "{protocol}: {seen:?}");
    }
}

#[tokio::test]
async fn paths_that_resolve_elsewhere_never_reach_data_over_http2() {
    let stack = app_stack(None, APP_ROUTES, &[]);
    let proxy = stack.sidecar.proxy_addr;
    let (status, _, body, _) = h2_request(proxy, "GET", "/records/1", PROVIDE, Vec::new())
        .await
        .unwrap();
    assert_eq!((status, &body[..]), (200, &b"record 1\n"[..]));
    let mut sent = 0;
    for path in PATHS_TO_SECRETS {
        // A few of these cannot even be written as an HTTP/2 `:path` by
        // this client; the rest go out as they are.
        match h2_request(proxy, "GET", path, PROVIDE, Vec::new()).await {
            Ok((status, _, body, _)) => {
                sent += 1;
                assert!(
                    !String::from_utf8_lossy(&body).contains("SECRET"),
                    "{path}: {status}"
                );
                assert_ne!(status, 200, "{path}");
            }
            Err(e) => assert!(e.starts_with("request:"), "{path}: {e}"),
        }
    }
    assert!(sent >= PATHS_TO_SECRETS.len() - 3, "only {sent} were sent");
    assert!(stack.app.served_under("/secrets").is_empty());
}

/// A gRPC route for the export (customer data) and an HTTP route for
/// everything else (anonymised diagnostics, which `lbo` may use).
const GRPC_AND_HTTP_ROUTES: &str = "routes:
  - grpc: /demo.v1.CustomerService/ExportCustomers
    dataCategory: customer-data
  - grpc: /demo.v1.CustomerService/Get*
    dataCategory: customer-data
  - http: /
    dataCategory: diagnostic-data
    resource: { deidentification: ANONYMIZED }
";

fn demo_stack(routes: &str) -> (ServerProcess, TempDir, DemoService, SidecarProcess) {
    let server = ServerProcess::start(&["--decision-log", "off"]);
    let dir = TempDir::new("edge-grpc");
    let routes = dir.write("routes.yaml", routes);
    let demo = DemoService::start();
    let upstream = format!("http://{}", demo.grpc_addr);
    let sidecar = SidecarProcess::start(
        &server.url(),
        &["--upstream", &upstream, "--routes", &routes],
        &[],
    );
    (server, dir, demo, sidecar)
}

#[tokio::test]
async fn a_grpc_method_is_judged_as_one_whatever_its_content_type_says() {
    let (_server, _dir, demo, sidecar) = demo_stack(GRPC_AND_HTTP_ROUTES);
    let export = grpc_frame(
        &pb::ExportCustomersRequest {
            fail_after: 0,
            follow: false,
        }
        .encode_to_vec(),
    );
    // The call works as gRPC for a purpose customer data may serve.
    let (status, head, body, trailers) = h2_request(
        sidecar.proxy_addr,
        "POST",
        "/demo.v1.CustomerService/ExportCustomers",
        &[
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("x-purpose", "provide"),
        ],
        export.clone(),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("Ada Lovelace"));
    assert_eq!(
        trailers.unwrap().get("grpc-status").unwrap(),
        "0",
        "{head:?}"
    );
    let before = demo.received();

    // `lbo.billing` may use anonymised diagnostics (the HTTP route) but
    // not customer data (the gRPC route): another content type must not
    // turn the method into an HTTP call.
    for content_type in [
        "text/plain",
        "application/json",
        "",
        "application/grpc+proto",
    ] {
        let mut headers = vec![("te", "trailers"), ("x-purpose", "lbo.billing")];
        if !content_type.is_empty() {
            headers.push(("content-type", content_type));
        }
        for method in ["ExportCustomers", "GetCustomer", "Echo"] {
            let path = format!("/demo.v1.CustomerService/{method}");
            let (status, head, body, trailers) =
                h2_request(sidecar.proxy_addr, "POST", &path, &headers, export.clone())
                    .await
                    .unwrap();
            let text = String::from_utf8_lossy(&body);
            assert!(
                !text.contains("Lovelace"),
                "{content_type:?} {method}: data came back"
            );
            let grpc_status = head
                .get("grpc-status")
                .or(trailers.as_ref().and_then(|t| t.get("grpc-status")))
                .map(|v| v.to_str().unwrap().to_string());
            assert!(
                status == 403 || grpc_status.as_deref() == Some("7"),
                "{content_type:?} {method}: {status} {head:?}"
            );
        }
    }
    // Over HTTP/1.1 the method is still the method.
    let h1 = http1_raw(
        sidecar.proxy_addr,
        "POST /demo.v1.CustomerService/ExportCustomers HTTP/1.1\r\ncontent-type: text/plain\r\nx-purpose: lbo.billing\r\ncontent-length: 0",
    );
    assert_eq!(h1.status, 403, "{h1:?}");
    assert_eq!(demo.received(), before, "a refused call reached the app");
}

#[test]
fn ext_authz_judges_the_method_and_the_canonical_path_as_the_proxy_does() {
    let (_server, _dir, _demo, sidecar) = demo_stack(GRPC_AND_HTTP_ROUTES);
    let ask = |http: serde_json::Value| -> serde_json::Value {
        let run = grpcurl(
            &[
                "-plaintext",
                "-d",
                &serde_json::json!({"attributes": {"request": {"http": http}}}).to_string(),
                &sidecar.local_addr.to_string(),
                "envoy.service.auth.v3.Authorization/Check",
            ],
            None,
        );
        assert_eq!(run.code, Some(0), "{run:?}");
        serde_json::from_str(&run.stdout).unwrap()
    };
    let code = |answer: &serde_json::Value| answer["status"]["code"].as_i64().unwrap_or(0);
    let reason = |answer: &serde_json::Value| answer["status"]["message"].to_string();

    let lbo_export = ask(serde_json::json!({
        "method": "POST", "path": "/demo.v1.CustomerService/ExportCustomers", "protocol": "HTTP/2",
        "headers": {"content-type": "text/plain", "x-purpose": "lbo.billing"}
    }));
    assert_eq!(code(&lbo_export), 7, "{lbo_export}");

    for path in ["/records/../secrets/1", "/a//b", "/a/%2e/b"] {
        let answer = ask(serde_json::json!({
            "method": "GET", "path": path,
            "headers": {"x-purpose": "lbo.billing"}
        }));
        assert_eq!(code(&answer), 7, "{path}: {answer}");
        assert!(
            reason(&answer).contains("not in canonical form"),
            "{answer}"
        );
    }
    let ambiguous = ask(serde_json::json!({
        "method": "GET", "path": "/records/..%2fsecrets/1",
        "headers": {"x-purpose": "lbo.billing"}
    }));
    assert!(reason(&ambiguous).contains("encoded `/`"), "{ambiguous}");

    // Repeated headers, as Envoy sends them raw, are refused.
    let twice = ask(serde_json::json!({
        "method": "GET", "path": "/metrics",
        "headerMap": {"headers": [
            {"key": "x-purpose", "rawValue": "bGJvLmJpbGxpbmc="},
            {"key": "x-purpose", "rawValue": "YWR2ZXJ0aXNpbmc="}
        ]}
    }));
    assert_eq!(code(&twice), 7, "{twice}");
    assert!(reason(&twice).contains("more than once"), "{twice}");
    // Joined by Envoy into one value with a comma: refused too.
    let joined = ask(serde_json::json!({
        "method": "GET", "path": "/metrics",
        "headers": {"x-purpose": "lbo.billing,advertising"}
    }));
    assert_eq!(code(&joined), 7, "{joined}");

    // A permitted call: the decided values are set, look-alikes removed.
    let ok = ask(serde_json::json!({
        "method": "GET", "path": "/metrics",
        "headers": {"x-purpose": "lbo.billing", "x_purpose": "advertising",
                    "x-purposegate-obligations": "[]", "x-data-deidentification": "identified"}
    }));
    assert_eq!(code(&ok), 0, "{ok}");
    let removed = ok["okResponse"]["headersToRemove"].to_string();
    assert!(removed.contains("x_purpose"), "{ok}");
    assert!(removed.contains("x-purposegate-obligations"), "{ok}");
    let set = ok["okResponse"]["headers"].to_string();
    assert!(
        set.contains("\"anonymized\""),
        "the route's fixed de-identification is what the app sees: {ok}"
    );
}

#[tokio::test]
async fn a_decided_header_counts_once_and_the_app_sees_only_what_was_decided() {
    let stack = app_stack(None, APP_ROUTES, &[]);
    let proxy = stack.sidecar.proxy_addr;

    // Twice, in either order, over either protocol: refused.
    for headers in [
        vec![("x-purpose", "provide"), ("x-purpose", "advertising")],
        vec![("x-purpose", "advertising"), ("X-Purpose", "provide")],
        vec![
            ("x-purpose", "provide"),
            ("x-subject", "crm"),
            ("x-subject", "root"),
        ],
        vec![
            ("x-purpose", "provide"),
            ("x-data-tenant", "a"),
            ("x-data-tenant", "b"),
        ],
        vec![
            ("x-purpose", "provide"),
            ("x-request-id", "1"),
            ("x-request-id", "2"),
        ],
    ] {
        let answer = http1_get(proxy, "/records/1", &headers);
        assert_eq!(answer.status, 403, "{headers:?}: {answer:?}");
        assert!(answer.body.contains("more than once"), "{answer:?}");
        let (status, _, _, _) = h2_request(proxy, "GET", "/records/1", &headers, Vec::new())
            .await
            .unwrap();
        assert_eq!(status, 403, "h2 {headers:?}");
    }
    assert!(stack.app.seen().is_empty(), "{:?}", stack.app.seen());

    // Look-alikes never reach the app; the decided values do.
    let answer = http1_get(
        proxy,
        "/records/1",
        &[
            ("x-purpose", "provide"),
            ("x_purpose", "advertising"),
            ("X_PURPOSE", "marketing"),
            ("x-subject", "crm"),
            ("x_subject", "root"),
            ("x-data-deidentification", "aggregated"),
            ("x_data_deidentification", "aggregated"),
            ("x-purposegate-obligations", "[{\"id\":\"none\"}]"),
            ("x_purposegate_decision", "PERMIT"),
            ("connection", "x-purpose, x-subject"),
        ],
    );
    assert_eq!(answer.status, 200, "{answer:?}");
    let seen = stack.app.seen().pop().unwrap();
    assert_eq!(seen.cgi_all("x-purpose"), ["provide"], "{seen:?}");
    assert_eq!(seen.cgi_all("x-subject"), ["crm"], "{seen:?}");
    // The route fixes the records as identified: the caller's claim that
    // they are aggregated is not what the app reads.
    assert_eq!(
        seen.cgi_all("x-data-deidentification"),
        ["identified"],
        "{seen:?}"
    );
    assert!(
        seen.cgi_all("x-purposegate-obligations").is_empty(),
        "{seen:?}"
    );
    assert!(
        seen.cgi_all("x-purposegate-decision").is_empty(),
        "{seen:?}"
    );

    // Only a look-alike states a purpose: the sidecar reads none.
    let only_underscore = http1_get(proxy, "/records/1", &[("x_purpose", "provide")]);
    assert_eq!(only_underscore.status, 403, "{only_underscore:?}");

    // Values that cannot be read as one thing.
    for (name, value) in [
        ("x-purpose", "provide,advertising".to_string()),
        ("x-subject", "s".repeat(3000)),
        ("x-purpose", "p".repeat(300)),
        ("x-data-origin", vec!["customer-data"; 65].join(",")),
    ] {
        let answer = http1_get(proxy, "/records/1", &[(name, &value)]);
        assert_eq!(answer.status, 403, "{name}: {answer:?}");
        assert!(
            answer.body.contains(&format!("header `{name}`")),
            "{answer:?}"
        );
    }
    let latin1 = http1_raw(
        proxy,
        "GET /records/1 HTTP/1.1\r\nx-purpose: provide\r\nx-subject: caf\u{e9}",
    );
    assert_eq!(latin1.status, 403, "{latin1:?}");
}

const OBLIGATION_POLICY: &str = "version: 1
name: obligations
purposes:
  provide: Provide the service
dataCategories:
  customer-data: Customer data
rules:
  - id: provide-with-log
    effect: permit
    purposes: [provide]
    dataCategories: [customer-data]
    obligations:
      - id: log-access
        params: { retention: 30d }
";

#[test]
fn the_caller_cannot_claim_obligations_the_sidecar_fulfils_them() {
    // A sidecar that fulfils nothing: a permit with an obligation is
    // denied, whatever the caller claims.
    let stack = app_stack(Some(OBLIGATION_POLICY), APP_ROUTES, &[]);
    let claimed = http1_get(
        stack.sidecar.proxy_addr,
        "/records/1",
        &[
            ("x-purpose", "provide"),
            ("x-supported-obligations", "log-access"),
        ],
    );
    assert_eq!(claimed.status, 403, "{claimed:?}");
    assert!(claimed.body.contains("log-access"), "{claimed:?}");
    assert!(stack.app.seen().is_empty());

    // Declared by the sidecar (flag): permitted, and the app is told.
    let stack = app_stack(
        Some(OBLIGATION_POLICY),
        APP_ROUTES,
        &["--obligations", "log-access"],
    );
    let ok = http1_get(stack.sidecar.proxy_addr, "/records/1", PROVIDE);
    assert_eq!(ok.status, 200, "{ok:?}");
    let seen = stack.app.seen().pop().unwrap();
    assert_eq!(
        seen.cgi_all("x-purposegate-obligations"),
        [r#"[{"id":"log-access","params":{"retention":"30d"}}]"#]
    );

    // Declared per route in the routes file.
    let per_route = APP_ROUTES.replace(
        "    resource: { deidentification: IDENTIFIED }\n",
        "    resource: { deidentification: IDENTIFIED }\n    obligations: [log-access]\n",
    );
    let stack = app_stack(Some(OBLIGATION_POLICY), &per_route, &[]);
    let ok = http1_get(stack.sidecar.proxy_addr, "/records/1", PROVIDE);
    assert_eq!(ok.status, 200, "{ok:?}");
}

#[test]
fn the_shipped_routes_fix_raw_records_as_identified() {
    // A caller of the demo cannot claim its raw records are aggregated
    // (which `lbo` may use): the routes file fixes what they are.
    let server = ServerProcess::start(&["--decision-log", "off"]);
    let (demo, sidecar) = purposegate_tests::demo_behind_sidecar(&server.url(), &[], &[]);
    let run = grpcurl(
        &[
            "-plaintext",
            "-import-path",
            "examples/customer-service/proto",
            "-proto",
            "demo/v1/customers.proto",
            "-H",
            "x-purpose: lbo.billing",
            "-H",
            "x-data-deidentification: aggregated",
            "-H",
            "x-data-group-size: 1000",
            "-d",
            r#"{"id":"c-1"}"#,
            &sidecar.proxy_addr.to_string(),
            "demo.v1.CustomerService/GetCustomer",
        ],
        None,
    );
    assert!(run.stderr.contains("PermissionDenied"), "{run:?}");
    assert_eq!(demo.received(), 0);
}

#[tokio::test]
async fn an_http2_caller_reaches_an_http1_app() {
    // The demo's HTTP API speaks only HTTP/1.1: the sidecar speaks the
    // app's protocol, whatever the caller spoke.
    let server = ServerProcess::start(&["--decision-log", "off"]);
    let demo = DemoService::start();
    let routes = purposegate_tests::repo_root()
        .join("examples/customer-service/routes.yaml")
        .display()
        .to_string();
    let sidecar = SidecarProcess::start(
        &server.url(),
        &[
            "--upstream",
            &format!("http://{}", demo.http_addr),
            "--routes",
            &routes,
        ],
        &[],
    );
    let (status, _, body, _) = h2_request(
        sidecar.proxy_addr,
        "GET",
        "/customers/c-1",
        &[("x-purpose", "provide")],
        Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("Ada Lovelace"));
}

/// Customer records under `/records/` (raw), and a catch-all for the
/// app's anonymised diagnostics, which `lbo.billing` may use.
const WITH_CATCH_ALL: &str = "routes:
  - http: /records/
    dataCategory: customer-data
    resource: { deidentification: IDENTIFIED }
  - http: /
    dataCategory: diagnostic-data
    resource: { deidentification: ANONYMIZED }
";

#[test]
fn a_path_the_app_reads_as_another_routes_is_refused() {
    let stack = app_stack(None, WITH_CATCH_ALL, &[]);
    let proxy = stack.sidecar.proxy_addr;
    let lbo = &[("x-purpose", "lbo.billing")];
    // The catch-all permits lbo; the records route does not.
    assert_eq!(http1_get(proxy, "/status", lbo).status, 200);
    assert_eq!(http1_get(proxy, "/records/1", lbo).status, 403);
    // Tomcat, Jetty and Spring drop `;params`; Express and ASP.NET ignore
    // case; Express serves `/records` as `/records/`. Each of these would
    // be judged by the catch-all and served as a record.
    for path in [
        "/records;x/1",
        "/records;/2",
        "/records/1;jsessionid=x",
        "/RECORDS/1",
        "/Records/2",
        "/records",
        "/RECORDS",
    ] {
        let answer = http1_get(proxy, path, lbo);
        assert_eq!(answer.status, 403, "{path}: {answer:?}");
    }
    assert!(stack.app.served_under("/records").is_empty());
    assert!(
        stack
            .app
            .seen()
            .iter()
            .all(|s| !s.path.to_lowercase().starts_with("/records")),
        "{:?}",
        stack.app.seen()
    );
    // HEAD is GET to apps: a route for GET covers it.
    let head = http1_raw(proxy, "HEAD /records/1 HTTP/1.1\r\nx-purpose: lbo.billing");
    assert_eq!(head.status, 403, "{head:?}");
}

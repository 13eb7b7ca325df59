//! Headers, parameters and trailers that would make the app serve
//! something other than what was judged: method overrides in every
//! spelling frameworks decode (refused), forwarding and rewrite headers
//! (removed; the sidecar says who called), the same in trailers, and a
//! method's path with a trailing slash (never judged by an HTTP route).
//! Behind the sidecar: the app of `purposegate_tests::app`, which reads
//! headers the CGI/WSGI way.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers: a failed setup must fail the test"
)]

use purposegate_tests::AppStack;
use purposegate_tests::attacks::{h2_request, http1_get, http1_raw};

/// `/records/` is customer data (raw records); `/echo` service-generated
/// data; nothing else is routed.
const APP_ROUTES: &str = "routes:
  - http: /records/
    methods: [GET]
    dataCategory: customer-data
    resource: { deidentification: IDENTIFIED }
  - http: /echo
    dataCategory: service-generated-data
";

fn app_stack(routes: &str) -> AppStack {
    AppStack::start(None, routes, &[])
}

const PROVIDE: &[(&str, &str)] = &[("x-purpose", "provide"), ("x-subject", "crm")];

#[test]
fn method_overrides_and_forwarding_headers_are_not_the_callers_to_set() {
    let stack = app_stack(APP_ROUTES);
    let proxy = stack.sidecar.proxy_addr;
    for (name, value) in [
        ("x-http-method-override", "DELETE"),
        ("X-HTTP-Method", "PUT"),
        ("x_method_override", "DELETE"),
    ] {
        let answer = http1_get(
            proxy,
            "/records/1",
            &[("x-purpose", "provide"), (name, value)],
        );
        assert_eq!(answer.status, 403, "{name}: {answer:?}");
        assert!(answer.body.contains("another method"), "{answer:?}");
    }
    let query = http1_get(proxy, "/records/1?_method=DELETE", PROVIDE);
    assert_eq!(query.status, 403, "{query:?}");
    assert!(stack.app.seen().is_empty());

    let ok = http1_get(
        proxy,
        "/records/1",
        &[
            ("x-purpose", "provide"),
            ("x-forwarded-for", "10.9.9.9"),
            ("x_forwarded_for", "10.8.8.8"),
            ("forwarded", "for=10.7.7.7"),
            ("x-real-ip", "10.6.6.6"),
            ("x-original-url", "/secrets/1"),
            ("x-forwarded-prefix", "/secrets"),
            ("x-forwarded-client-cert", "By=spiffe://evil"),
        ],
    );
    assert_eq!(ok.status, 200, "{ok:?}");
    let seen = stack.app.seen().pop().unwrap();
    assert_eq!(seen.cgi_all("x-forwarded-for"), ["127.0.0.1"], "{seen:?}");
    assert_eq!(seen.cgi_all("x-forwarded-proto"), ["http"]);
    for forged in [
        "forwarded",
        "x-real-ip",
        "x-original-url",
        "x-forwarded-prefix",
        "x-forwarded-client-cert",
    ] {
        assert!(seen.cgi_all(forged).is_empty(), "{forged}: {seen:?}");
    }
}

#[test]
fn trailers_cannot_carry_a_decided_header() {
    let routes = "routes:\n  - http: /upload\n    dataCategory: customer-data\n";
    let stack = app_stack(routes);
    let answer = http1_raw(
        stack.sidecar.proxy_addr,
        "POST /upload HTTP/1.1\r\nx-purpose: provide\r\nx-subject: crm\r\ntransfer-encoding: chunked\r\ntrailer: x-purpose, x-subject, x-checksum\r\n\r\n5\r\nhello\r\n0\r\nx-purpose: advertising\r\nx_subject: admin\r\nx-checksum: abc",
    );
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(answer.body.contains("received 5 bytes"), "{answer:?}");
    assert!(
        !answer.body.contains("advertising") && !answer.body.contains("admin"),
        "a decided header arrived in trailers: {answer:?}"
    );
    let seen = stack.app.seen().pop().unwrap();
    assert_eq!(seen.cgi_all("trailer"), ["x-checksum"], "{seen:?}");
}

#[tokio::test]
async fn a_method_override_in_any_spelling_a_framework_decodes_is_refused() {
    let stack = app_stack(APP_ROUTES);
    let proxy = stack.sidecar.proxy_addr;
    // PHP reads `.method`, ` method` and `[method` as `_method`; frameworks
    // decode `%5F` (and, some, twice); `_method[]` is the array `_method`.
    for query in [
        "_method=DELETE",
        "%5Fmethod=DELETE",
        "%5fmethod=DELETE",
        "%255Fmethod=DELETE",
        ".method=DELETE",
        "%2Emethod=DELETE",
        "+method=DELETE",
        "%20method=DELETE",
        "[method=DELETE",
        "_method[]=DELETE",
        "a=1;_method=DELETE",
        "_method%00=DELETE",
        "X-HTTP-Method-Override=DELETE",
        "x_http_method=PUT",
    ] {
        let path = format!("/records/1?{query}");
        let answer = http1_get(proxy, &path, PROVIDE);
        assert_eq!(answer.status, 403, "{query}: {answer:?}");
        assert!(answer.body.contains("method override"), "{answer:?}");
        let (status, _, _, _) = h2_request(proxy, "GET", &path, PROVIDE, Vec::new())
            .await
            .unwrap();
        assert_eq!(status, 403, "h2 {query}");
    }
    assert!(stack.app.seen().is_empty(), "{:?}", stack.app.seen());
    // A parameter that only looks alike passes.
    let ok = http1_get(proxy, "/records/1?my_method=x&method=y", PROVIDE);
    assert_eq!(ok.status, 200, "{ok:?}");
}

#[test]
fn rewrite_and_client_address_headers_never_reach_the_app() {
    let stack = app_stack(APP_ROUTES);
    let forged = [
        ("X-Original-Host", "admin.internal"),
        ("X-Forwarded-Server", "admin.internal"),
        ("X-Forwarded-Host", "admin.internal"),
        ("X_Forwarded_Scheme", "https"),
        ("True-Client-IP", "10.0.0.1"),
        ("X-Client-IP", "10.0.0.1"),
        ("CF-Connecting-IP", "10.0.0.1"),
        ("X-HTTP-Host-Override", "admin.internal"),
        ("X-Host", "admin.internal"),
        ("X-Rewrite-URL", "/secrets/1"),
        ("X-Original-URI", "/secrets/1"),
        ("X-Envoy-Original-Path", "/secrets/1"),
        ("X-Original-Method", "DELETE"),
        ("X-Script-Name", "/secrets"),
        ("Script-Name", "/records"),
    ];
    let mut headers = PROVIDE.to_vec();
    headers.extend(forged);
    let ok = http1_get(stack.sidecar.proxy_addr, "/records/1", &headers);
    assert_eq!(ok.status, 200, "{ok:?}");
    let seen = stack.app.seen().pop().unwrap();
    for (name, _) in forged {
        assert!(seen.cgi_all(name).is_empty(), "{name}: {seen:?}");
    }
    assert_eq!(seen.cgi_all("x-forwarded-for"), ["127.0.0.1"]);
}

#[test]
fn trailers_cannot_carry_an_override_or_a_forwarding_header() {
    let routes = "routes:\n  - http: /upload\n    dataCategory: customer-data\n";
    let stack = app_stack(routes);
    let answer = http1_raw(
        stack.sidecar.proxy_addr,
        "POST /upload HTTP/1.1\r\nx-purpose: provide\r\ntransfer-encoding: chunked\r\ntrailer: x-http-method-override, x-forwarded-for, x-original-url, content-length, x-checksum\r\n\r\n5\r\nhello\r\n0\r\nx-http-method-override: DELETE\r\nx-forwarded-for: 10.6.6.6\r\nx-original-url: /secrets/1\r\ncontent-length: 0\r\nhost: admin.internal\r\nx-checksum: abc",
    );
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(answer.body.contains("received 5 bytes"), "{answer:?}");
    for forged in [
        "DELETE",
        "10.6.6.6",
        "/secrets",
        "admin.internal",
        "content-length",
    ] {
        assert!(
            !answer.body.contains(forged),
            "{forged} arrived in trailers: {answer:?}"
        );
    }
    assert!(answer.body.contains("x-checksum=abc"), "{answer:?}");
    let seen = stack.app.seen().pop().unwrap();
    assert_eq!(seen.cgi_all("trailer"), ["x-checksum"], "{seen:?}");
}

#[tokio::test]
async fn a_method_path_with_a_trailing_slash_is_never_judged_by_an_http_route() {
    // A catch-all that would permit lbo.billing, beside a gRPC route that
    // would not: the method's path with a slash (or more) after it is
    // still a method's path.
    let routes = "routes:
  - grpc: /demo.v1.CustomerService/GetCustomer
    dataCategory: customer-data
  - http: /
    dataCategory: diagnostic-data
    resource: { deidentification: ANONYMIZED }
";
    let stack = app_stack(routes);
    let proxy = stack.sidecar.proxy_addr;
    let lbo = &[("x-purpose", "lbo.billing")];
    assert_eq!(http1_get(proxy, "/status", lbo).status, 200);
    for path in [
        "/demo.v1.CustomerService/GetCustomer/",
        "/demo.v1.CustomerService/GetCustomer//",
        "/demo.v1.CustomerService/GetCustomer/x",
    ] {
        let answer = http1_get(proxy, path, lbo);
        assert_eq!(answer.status, 403, "{path}: {answer:?}");
        let (status, _, _, _) = h2_request(proxy, "GET", path, lbo, Vec::new())
            .await
            .unwrap();
        assert_eq!(status, 403, "h2 {path}");
    }
    assert!(
        stack.app.served_under("/demo.v1").is_empty(),
        "{:?}",
        stack.app.seen()
    );
}

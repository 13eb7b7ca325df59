//! One reading of a call, shared by every face that judges calls (the
//! proxy and Envoy's ext_authz): what the call is, or why it cannot be read
//! as one thing. What is judged is what the app gets, so each step refuses
//! what an app could read differently:
//!
//! 1. a body on a method that has none (`GET`, `HEAD`, `DELETE`,
//!    `OPTIONS`, `TRACE`), unless its route allows one: an app that does
//!    not read it takes it for the next request on its connection, one no
//!    one judged (400, never let through, not even by `--dry-run`);
//! 2. `CONNECT`, which would make the sidecar a tunnel (400, never let
//!    through);
//! 3. a method override in the query, in any spelling a framework decodes
//!    to one ([`canonical::query_overrides_method`]);
//! 4. the path, made canonical ([`canonical::path`]); a face that cannot
//!    forward the canonical path (ext_authz: Envoy forwards its own)
//!    refuses a path that is not canonical already;
//! 5. the decided headers, each read once, method-override headers refused
//!    ([`Stated::read`]);
//! 6. the `baggage` values (every one of them: the purpose context), which
//!    must be readable;
//! 7. the table (gRPC or HTTP) by transport and shape, and the route.
//!
//! Nothing here asks anyone: the intercept step (`judge`) takes the
//! reading to the gate.

use std::borrow::Cow;

use crate::canonical;
use crate::headers::Stated;
use crate::refusal::Refusal;
use crate::routes::{Route, Routes, Table};

/// What a face knows of a call before reading it.
#[derive(Debug, Clone)]
pub struct Described<'a, H> {
    pub method: &'a str,
    /// The request path as it came, without the query.
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// The headers as (name, value), each repeat apart: a function that
    /// walks them, as often as asked.
    pub headers: H,
    /// Whether the call carries a body (any bytes, or framing that says
    /// bytes may come).
    pub body: bool,
    /// Whether the face forwards the canonical path itself (the proxy); if
    /// not, only a path that is canonical already can be judged as the one
    /// the app will get.
    pub forwards_canonical: bool,
}

/// A call read as one thing.
#[derive(Debug)]
pub struct Reading<'a, 'r> {
    /// The canonical path, without the query: the one judged and forwarded
    /// (borrowed from the call when it came canonical).
    pub path: Cow<'a, str>,
    pub table: Table,
    /// The route that covers the call; `None`: no route does, and the call
    /// is denied when judged.
    pub route: Option<&'r Route>,
    pub stated: Stated<'a>,
    /// The values of every `baggage` header.
    pub baggage: Vec<&'a str>,
    pub method: &'a str,
}

/// Whether `method` has a body by its definition: the methods whose body
/// RFC 9110 gives no meaning to (and `TRACE`, which must have none).
pub fn takes_body(method: &str) -> bool {
    !["GET", "HEAD", "DELETE", "OPTIONS", "TRACE"]
        .iter()
        .any(|m| m.eq_ignore_ascii_case(method))
}

/// Reads `call` against `routes`: the call, or the refusal.
pub fn read<'a, 'r, H, I>(
    routes: &'r Routes,
    call: Described<'a, H>,
) -> Result<Reading<'a, 'r>, Refusal>
where
    H: Fn() -> I,
    I: Iterator<Item = (&'a str, &'a [u8])>,
{
    let canonical = canonical::path(call.path);
    let grpc_content_type = (call.headers)()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        .is_some_and(|(_, value)| value.starts_with(b"application/grpc"));
    let table_and_route = canonical.as_ref().ok().map(|path| {
        let table = routes.table(path, grpc_content_type);
        (table, routes.route(table, call.method, path))
    });
    if call.body && !takes_body(call.method) {
        let allowed = matches!(&table_and_route, Some((_, Ok(Some(route)))) if route.allow_body);
        if !allowed {
            return Err(Refusal::malformed(format!(
                "a {} request carries no body, and this one has one; it is refused (an app that does not read it would take it for the next request)",
                call.method
            )));
        }
    }
    if call.method.eq_ignore_ascii_case("CONNECT") {
        // Never a request to forward, not even under `--dry-run`.
        return Err(Refusal::malformed("CONNECT is not proxied".to_string()));
    }
    if let Some(spelling) = call.query.and_then(canonical::query_overrides_method) {
        return Err(Refusal::refused(format!(
            "the query names `{spelling}`, which frameworks read as a method override: the app would run another method than the one judged; it is refused"
        )));
    }
    let path = canonical.map_err(|ambiguous| Refusal::refused(ambiguous.to_string()))?;
    if !call.forwards_canonical && path != call.path {
        return Err(Refusal::refused(format!(
            "the request path `{}` is not in canonical form (`{path}`); configure Envoy with normalize_path, merge_slashes and path_with_escaped_slashes_action: REJECT_REQUEST",
            call.path
        )));
    }
    let stated = Stated::read((call.headers)())
        .map_err(|unreadable| Refusal::refused(unreadable.to_string()))?;
    // A purpose context hidden where the sidecar cannot read it could
    // still reach the app: unreadable baggage is refused, not ignored.
    let mut baggage = Vec::new();
    for (name, value) in (call.headers)() {
        if name.eq_ignore_ascii_case("baggage") {
            let text = std::str::from_utf8(value)
                .ok()
                .filter(|v| v.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b)))
                .ok_or_else(|| {
                    Refusal::refused(
                        "header `baggage` holds bytes that are not visible ASCII; it is refused"
                            .to_string(),
                    )
                })?;
            baggage.push(text);
        }
    }
    let (table, route) = match table_and_route {
        Some((table, route)) => (table, route.map_err(Refusal::refused)?),
        None => (Table::Http, None),
    };
    Ok(Reading {
        path,
        table,
        route,
        stated,
        baggage,
        method: call.method,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refusal::RefusalKind;

    const ROUTES: &str = "routes:
  - grpc: /demo.v1.S/Get
    dataCategory: customer-data
  - http: /search
    methods: [GET]
    allowBody: true
    dataCategory: customer-data
  - http: /
    dataCategory: diagnostic-data
";

    type Headers<'a> = std::iter::Copied<std::slice::Iter<'a, (&'a str, &'a [u8])>>;

    fn call<'a>(
        method: &'a str,
        path: &'a str,
        headers: &'a [(&'a str, &'a [u8])],
        body: bool,
    ) -> Described<'a, impl Fn() -> Headers<'a>> {
        Described {
            method,
            path,
            query: None,
            headers: move || headers.iter().copied(),
            body,
            forwards_canonical: true,
        }
    }

    #[test]
    fn a_body_goes_only_where_the_method_or_the_route_takes_one() {
        let routes = Routes::parse("r.yaml", ROUTES).unwrap();
        for method in ["GET", "get", "HEAD", "DELETE", "OPTIONS", "TRACE"] {
            let refused = read(&routes, call(method, "/x", &[], true)).unwrap_err();
            assert_eq!(refused.kind, RefusalKind::Malformed, "{method}");
            assert!(refused.reason.contains("carries no body"), "{refused:?}");
            assert!(read(&routes, call(method, "/x", &[], false)).is_ok());
        }
        // Even before the path is read: an ambiguous path with a body is
        // malformed, never something `--dry-run` lets through.
        let refused = read(&routes, call("GET", "/a/..%2fb", &[], true)).unwrap_err();
        assert_eq!(refused.kind, RefusalKind::Malformed);
        assert!(read(&routes, call("POST", "/x", &[], true)).is_ok());
        assert!(read(&routes, call("GET", "/search", &[], true)).is_ok());
    }

    #[test]
    fn each_step_refuses_what_it_cannot_read_as_one_thing() {
        let routes = Routes::parse("r.yaml", ROUTES).unwrap();
        let reason = |c| read(&routes, c).unwrap_err().reason;
        let connect = read(&routes, call("CONNECT", "/x", &[], false)).unwrap_err();
        assert_eq!(connect.kind, RefusalKind::Malformed, "never let through");
        let mut with_query = call("GET", "/x", &[], false);
        with_query.query = Some("a=1&.method=DELETE");
        assert!(reason(with_query).contains("`.method`"));
        assert!(reason(call("GET", "/a/..%2fb", &[], false)).contains("encoded `/`"));
        let mut envoy = call("GET", "/a//b", &[], false);
        envoy.forwards_canonical = false;
        assert!(reason(envoy).contains("not in canonical form"));
        let twice: &[(&str, &[u8])] = &[("x-purpose", b"a"), ("X-Purpose", b"b")];
        assert!(reason(call("GET", "/x", twice, false)).contains("more than once"));
        let latin1: &[(&str, &[u8])] = &[("baggage", b"k=caf\xe9")];
        assert!(reason(call("GET", "/x", latin1, false)).contains("baggage"));
    }

    #[test]
    fn every_baggage_value_is_read_and_the_table_follows_the_shape() {
        let routes = Routes::parse("r.yaml", ROUTES).unwrap();
        let headers: &[(&str, &[u8])] = &[("baggage", b"a=1"), ("Baggage", b"purposegate=x")];
        let reading = read(&routes, call("POST", "/demo.v1.S/Get", headers, true)).unwrap();
        assert_eq!(reading.baggage, ["a=1", "purposegate=x"]);
        assert_eq!(reading.table, Table::Grpc);
        assert!(reading.route.is_some());
        // A method's path with a trailing slash is still a method's: no
        // HTTP route (not even the catch-all) judges it.
        let slash = read(&routes, call("POST", "/demo.v1.S/Get/", &[], true)).unwrap();
        assert_eq!(slash.table, Table::Grpc);
        assert!(slash.route.is_none());
    }
}

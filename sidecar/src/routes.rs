//! The routes file: which calls touch which data category.
//!
//! ```yaml
//! routes:
//!   - grpc: /demo.v1.CustomerService/GetCustomer   # method, globs allowed
//!     dataCategory: customer-data
//!     resource:                                      # optional, fixed
//!       deidentification: IDENTIFIED
//!       attributes: { system: crm }
//!       dataSubject: { grpcField: 1 }                # field 1 of the request
//!     obligations: [log-access]                      # what the app fulfils here
//!     requirePurposeContext: true                    # only downstream of a permit
//!   - http: /customers/                              # path prefix
//!     methods: [GET]                                 # optional; any if absent
//!     dataCategory: customer-data
//!   - http: /search
//!     methods: [GET]
//!     allowBody: true        # a GET here may carry a body (as Elasticsearch's)
//!     dataCategory: customer-data
//! ```
//!
//! A call whose method has no body (`GET`, `HEAD`, `DELETE`, `OPTIONS`,
//! `TRACE`) but carries one is refused unless its route says `allowBody`
//! (see the reading of a call, `reading.rs`).
//!
//! Routes match the canonical path ([`crate::canonical`]). The first
//! matching route of the call's table wins; a call on no route is denied.
//! Fixed resource fields of a route win over what the caller's headers say.
//!
//! Two tables, chosen by the call's transport and shape, never by a header
//! alone ([`Routes::table`]): a path a gRPC route covers is judged by the
//! gRPC routes whatever the call claims to be. A gRPC pattern's `*` and `?`
//! stay inside one path segment. An HTTP prefix matches whole segments:
//! `/echo` covers `/echo` and `/echo/x`, not `/echoes`; a prefix ending in
//! `/` covers what lies below it.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasherDefault;

use purposegate_engine::{Decoder, Deidentification, Diagnostics, IdHasher, Node, glob_slice};
use purposegate_proto::convert::deidentification_number;

use crate::canonical;
use crate::subject::{MAX_FIELD_DEPTH, MAX_FIELD_NUMBER, SubjectFrom};

/// What a route says about the data a call touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    matcher: Matcher,
    pub category: String,
    /// `pb::Deidentification` as a number, when fixed.
    pub deidentification: Option<i32>,
    pub owner_tenant: Option<String>,
    pub attributes: BTreeMap<String, String>,
    /// Obligations the app fulfils on this route (besides the sidecar's
    /// `--obligations`).
    pub obligations: Vec<String>,
    /// `requirePurposeContext: true`: a call without a valid purpose
    /// context is denied (as `--require-purpose-context` does everywhere).
    pub require_purpose_context: bool,
    /// `allowBody: true`: calls may carry a body whatever their method.
    pub allow_body: bool,
    /// `resource.dataSubject`: where the data subject is read instead of
    /// the `x-data-subject` header (a path segment as the app's router
    /// reads it, or a field of a gRPC call's first request message).
    pub data_subject: Option<SubjectFrom>,
}

/// Most path segments a route may read the data subject from.
pub const MAX_SUBJECT_SEGMENT: u64 = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Matcher {
    Grpc(String),
    Http {
        prefix: String,
        methods: Vec<String>,
    },
}

/// Which routes judge a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Grpc,
    Http,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    routes: Vec<Route>,
    /// Whether a route reads the data subject from a gRPC call's first
    /// request message: known once, not asked of every call.
    reads_messages: bool,
    /// gRPC routes without a wildcard, by method: the first in the file
    /// for each. A method's route is found without a pass over the file.
    /// Hashed fast, not keyed: the keys are the file's, which no caller
    /// chooses.
    exact_grpc: HashMap<String, usize, BuildHasherDefault<IdHasher>>,
    /// The places of the gRPC routes with a wildcard, in file order.
    glob_grpc: Vec<usize>,
}

impl Routes {
    pub fn parse(file: &str, text: &str) -> Result<Routes, Diagnostics> {
        let (mut d, root) = Decoder::read(file, text)?;
        let mut routes = Vec::new();
        if let Some(top) = d.fields(&root, "routes file", &["routes"]) {
            match top.get("routes") {
                None => d.error(root.span, "missing `routes`"),
                Some(list) => {
                    for (i, node) in d
                        .seq(list, "`routes`")
                        .unwrap_or_default()
                        .iter()
                        .enumerate()
                    {
                        if let Some(route) = decode_route(&mut d, node, i) {
                            routes.push(route);
                        }
                    }
                }
            }
        }
        let reads_messages = routes
            .iter()
            .any(|r| matches!(r.data_subject, Some(SubjectFrom::GrpcField(_))));
        let mut exact_grpc = HashMap::default();
        let mut glob_grpc = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            if let Matcher::Grpc(pattern) = &route.matcher {
                if pattern.contains(['*', '?']) {
                    glob_grpc.push(i);
                } else {
                    exact_grpc.entry(pattern.clone()).or_insert(i);
                }
            }
        }
        d.finish(Routes {
            routes,
            reads_messages,
            exact_grpc,
            glob_grpc,
        })
    }

    /// Adds `obligations` (the sidecar's `--obligations`: what the app
    /// fulfils everywhere) to every route.
    pub fn fulfilling(mut self, obligations: &[String]) -> Self {
        for route in &mut self.routes {
            for id in obligations
                .iter()
                .map(|o| o.trim())
                .filter(|o| !o.is_empty())
            {
                if !route.obligations.iter().any(|o| o == id) {
                    route.obligations.push(id.to_string());
                }
            }
        }
        self
    }

    /// The table that judges a call to the canonical `path`: gRPC when a
    /// gRPC route covers the path, when the call says it is gRPC
    /// (`content-type: application/grpc…`), or when the path has the shape
    /// of a method (`/package.Service/Method`, which gRPC over HTTP/2 and
    /// the Connect protocol over HTTP/1.1 both serve); HTTP otherwise. So a
    /// method sent with another content type is still judged as a method.
    pub fn table(&self, path: &str, grpc_content_type: bool) -> Table {
        if grpc_content_type || canonical::is_grpc_method(path) || self.grpc(path).is_some() {
            Table::Grpc
        } else {
            Table::Http
        }
    }

    /// The route of a gRPC call to the canonical `path` (`/pkg.Service/Method`).
    pub fn grpc(&self, path: &str) -> Option<&Route> {
        // The first in the file wins: a wildcard route before the exact
        // one, or the exact one.
        let exact = self.exact_grpc.get(path).copied();
        self.glob_grpc
            .iter()
            .copied()
            .take_while(|&i| exact.is_none_or(|e| i < e))
            .find(|&i| {
                self.routes
                    .get(i)
                    .is_some_and(|r| matches!(&r.matcher, Matcher::Grpc(p) if method_glob(p, path)))
            })
            .or(exact)
            .and_then(|i| self.routes.get(i))
    }

    /// The route of an HTTP request to the canonical `path`. `HEAD` is
    /// served as `GET` by frameworks, so a route for `GET` covers it.
    pub fn http(&self, method: &str, path: &str) -> Option<&Route> {
        let head = method.eq_ignore_ascii_case("HEAD");
        self.routes.iter().find(|r| match &r.matcher {
            Matcher::Http { prefix, methods } => {
                covers(prefix, path)
                    && (methods.is_empty()
                        || methods.iter().any(|m| {
                            m.eq_ignore_ascii_case(method)
                                || (head && m.eq_ignore_ascii_case("GET"))
                        }))
            }
            Matcher::Grpc(_) => false,
        })
    }

    /// The route of a call judged by `table`; an error naming the reading
    /// when the path, as many apps read it (without regard to case, with or
    /// without a trailing slash), falls to another route: the call would be
    /// judged by one route and served by another's handler.
    pub fn route(&self, table: Table, method: &str, path: &str) -> Result<Option<&Route>, String> {
        match table {
            Table::Grpc => Ok(self.grpc(path)),
            Table::Http => {
                let Some(route) = self.http(method, path) else {
                    return Ok(None);
                };
                for reading in other_readings(path) {
                    if let Some(other) = self.http(method, &reading) {
                        if !std::ptr::eq(other, route) {
                            return Err(format!(
                                "the request path `{path}` may be read by the app as `{reading}`, which another route covers; it is refused"
                            ));
                        }
                    }
                }
                Ok(Some(route))
            }
        }
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether any route reads the data subject from a gRPC call's first
    /// request message.
    pub fn reads_first_messages(&self) -> bool {
        self.reads_messages
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// How apps that ignore case or a trailing slash may read `path`.
fn other_readings(path: &str) -> Vec<String> {
    let toggle = |p: &str| match p.strip_suffix('/') {
        Some(stripped) if !stripped.is_empty() => stripped.to_string(),
        Some(_) => p.to_string(),
        None => format!("{p}/"),
    };
    let lower = path.to_ascii_lowercase();
    let mut readings = vec![toggle(path), toggle(&lower), lower];
    readings.retain(|r| r != path);
    readings
}

/// Whether the HTTP route `prefix` covers `path`, segment by segment.
fn covers(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
    }
}

/// Glob of a gRPC method: `*` matches a run and `?` one byte, both inside
/// one segment; `/` only matches `/`. No allocation.
pub fn method_glob(pattern: &str, path: &str) -> bool {
    let mut patterns = pattern.split('/');
    let mut segments = path.split('/');
    loop {
        match (patterns.next(), segments.next()) {
            (None, None) => return true,
            (Some(p), Some(s)) if segment_glob(p.as_bytes(), s.as_bytes()) => {}
            _ => return false,
        }
    }
}

/// Glob within one segment (no `/` on either side), byte by byte.
fn segment_glob(p: &[u8], t: &[u8]) -> bool {
    glob_slice(p, t, b'*', b'?')
}

fn decode_route(d: &mut Decoder<'_>, node: &Node, i: usize) -> Option<Route> {
    let what = format!("route #{}", i + 1);
    let f = d.fields(
        node,
        &what,
        &[
            "grpc",
            "http",
            "methods",
            "dataCategory",
            "resource",
            "obligations",
            "requirePurposeContext",
            "allowBody",
        ],
    )?;
    let matcher = match (f.get("grpc"), f.get("http")) {
        (Some(g), None) => {
            let pattern = d.text(g, &format!("{what}: `grpc`"))?;
            let shape = pattern
                .strip_prefix('/')
                .and_then(|rest| rest.split_once('/'))
                .filter(|(service, method)| {
                    !service.is_empty() && !method.is_empty() && !method.contains('/')
                });
            if shape.is_none() || pattern.contains(['%', '\\']) {
                d.error(
                    g.span,
                    format!("{what}: `grpc` is a method path like `/pkg.Service/Method`"),
                );
                return None;
            }
            if f.get("methods").is_some() {
                d.error(
                    node.span,
                    format!("{what}: `methods` belongs to `http` routes"),
                );
            }
            Matcher::Grpc(pattern)
        }
        (None, Some(h)) => {
            let prefix = d.text(h, &format!("{what}: `http`"))?;
            if !prefix.starts_with('/') {
                d.error(
                    h.span,
                    format!("{what}: `http` is a path prefix starting with `/`"),
                );
                return None;
            }
            match canonical::path(&prefix) {
                Ok(canonical) if canonical == prefix => {}
                Ok(canonical) => {
                    d.error(
                        h.span,
                        format!(
                            "{what}: `http` must be a canonical path; write `{canonical}` (calls are matched after normalisation)"
                        ),
                    );
                    return None;
                }
                Err(e) => {
                    d.error(h.span, format!("{what}: `http`: {e}"));
                    return None;
                }
            }
            // Paths under `/pkg.Service/` have a method's shape: gRPC
            // routes judge them, never this one. A prefix that covers only
            // such paths would never judge a call.
            let below = format!("{}/x", prefix.trim_end_matches('/'));
            if canonical::is_grpc_method(&below)
                && (prefix.ends_with('/') || canonical::is_grpc_method(&prefix))
            {
                d.error(
                    h.span,
                    format!(
                        "{what}: `http` prefix `{prefix}` names what looks like a gRPC service (`/package.Service/`): paths below it are judged by `grpc` routes only"
                    ),
                );
                return None;
            }
            let methods = match f.get("methods") {
                Some(m) => d.strings(m, &format!("{what}: `methods`"))?,
                None => Vec::new(),
            };
            Matcher::Http { prefix, methods }
        }
        _ => {
            d.error(
                node.span,
                format!("{what} needs exactly one of `grpc` or `http`"),
            );
            return None;
        }
    };
    let category = match f.get("dataCategory") {
        Some(n) => d.id(n, &format!("{what}: `dataCategory`"))?.0,
        None => {
            d.error(node.span, format!("{what} needs a `dataCategory`"));
            return None;
        }
    };
    let obligations = match f.get("obligations") {
        Some(n) => d
            .id_list(n, &format!("{what}: `obligations`"))
            .into_iter()
            .map(|(id, _)| id)
            .collect(),
        None => Vec::new(),
    };
    let require_purpose_context = match f.get("requirePurposeContext") {
        Some(n) => d.bool(n, &format!("{what}: `requirePurposeContext`"))?,
        None => false,
    };
    let allow_body = match f.get("allowBody") {
        Some(n) if matches!(matcher, Matcher::Grpc(_)) => {
            d.error(
                n.span,
                format!("{what}: `allowBody` belongs to `http` routes (gRPC calls carry bodies)"),
            );
            return None;
        }
        Some(n) => d.bool(n, &format!("{what}: `allowBody`"))?,
        None => false,
    };
    let mut route = Route {
        matcher,
        category,
        deidentification: None,
        owner_tenant: None,
        attributes: BTreeMap::new(),
        obligations,
        require_purpose_context,
        allow_body,
        data_subject: None,
    };
    if let Some(r) = f.get("resource") {
        let r = d.fields(
            r,
            &format!("{what}: `resource`"),
            &[
                "deidentification",
                "ownerTenant",
                "attributes",
                "dataSubject",
            ],
        )?;
        if let Some(n) = r.get("dataSubject") {
            route.data_subject = Some(decode_subject(d, n, &what, &route.matcher)?);
        }
        if let Some(n) = r.get("deidentification") {
            let name = d.text(n, &format!("{what}: `resource.deidentification`"))?;
            match Deidentification::parse(&name) {
                Some(state) => route.deidentification = Some(deidentification_number(state)),
                None => {
                    d.error(
                        n.span,
                        format!("{what}: unknown de-identification `{name}`"),
                    );
                    return None;
                }
            }
        }
        if let Some(n) = r.get("ownerTenant") {
            route.owner_tenant = Some(d.text(n, &format!("{what}: `resource.ownerTenant`"))?);
        }
        if let Some(n) = r.get("attributes") {
            route.attributes = d.string_map(n, &format!("{what}: `resource.attributes`"))?;
        }
    }
    Some(route)
}

/// `resource.dataSubject`: `{ pathSegment: N }` for `http` routes,
/// `{ grpcField: N | [N, …] }` for `grpc` routes.
fn decode_subject(
    d: &mut Decoder<'_>,
    node: &Node,
    what: &str,
    matcher: &Matcher,
) -> Option<SubjectFrom> {
    let label = format!("{what}: `resource.dataSubject`");
    let from = d.fields(node, &label, &["pathSegment", "grpcField"])?;
    let grpc = matches!(matcher, Matcher::Grpc(_));
    match (from.get("pathSegment"), from.get("grpcField")) {
        (Some(n), None) if !grpc => {
            let label = format!("{label}.pathSegment");
            let at = d.uint(n, &label, MAX_SUBJECT_SEGMENT)?;
            if at == 0 {
                d.error(n.span, format!("{label} counts from 1"));
                return None;
            }
            usize::try_from(at).ok().map(SubjectFrom::PathSegment)
        }
        (None, Some(n)) if grpc => {
            let label = format!("{label}.grpcField");
            let numbers = match &n.value {
                purposegate_engine::Value::Seq(items) => items.iter().collect(),
                _ => vec![n],
            };
            if numbers.is_empty() || numbers.len() > MAX_FIELD_DEPTH {
                d.error(
                    n.span,
                    format!(
                        "{label} is a field number or a list of 1 to {MAX_FIELD_DEPTH} of them"
                    ),
                );
                return None;
            }
            let mut field = Vec::with_capacity(numbers.len());
            for number in numbers {
                let at = d.uint(number, &label, MAX_FIELD_NUMBER)?;
                if at == 0 {
                    d.error(number.span, format!("{label}: field numbers count from 1"));
                    return None;
                }
                field.push(u32::try_from(at).ok()?);
            }
            Some(SubjectFrom::GrpcField(field))
        }
        (Some(n), None) => {
            d.error(
                n.span,
                format!("{label}.pathSegment belongs to `http` routes (a gRPC route reads a field: `grpcField`)"),
            );
            None
        }
        (None, Some(n)) => {
            d.error(
                n.span,
                format!("{label}.grpcField belongs to `grpc` routes (an `http` route reads a path segment: `pathSegment`)"),
            );
            None
        }
        _ => {
            d.error(
                node.span,
                format!("{label} needs one of `pathSegment` (http) or `grpcField` (grpc)"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests;

//! The routes file: which calls touch which data category.
//!
//! ```yaml
//! routes:
//!   - grpc: /demo.v1.CustomerService/GetCustomer   # method, globs allowed
//!     dataCategory: customer-data
//!     resource:                                      # optional, fixed
//!       deidentification: IDENTIFIED
//!       attributes: { system: crm }
//!   - http: /customers/                              # path prefix
//!     methods: [GET]                                 # optional; any if absent
//!     dataCategory: customer-data
//! ```
//!
//! The first matching route wins. A call on no route is denied. Fixed
//! resource fields of a route win over what the caller's headers say.

use std::collections::BTreeMap;

use purposegate_server::engine::decode::Decoder;
use purposegate_server::engine::yaml;
use purposegate_server::engine::{Deidentification, Diagnostics, glob};
use purposegate_server::grpc::convert::deidentification_number;

/// What a route says about the data a call touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    matcher: Matcher,
    pub category: String,
    /// `pb::Deidentification` as a number, when fixed.
    pub deidentification: Option<i32>,
    pub owner_tenant: Option<String>,
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Matcher {
    Grpc(String),
    Http {
        prefix: String,
        methods: Vec<String>,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    routes: Vec<Route>,
}

impl Routes {
    pub fn parse(file: &str, text: &str) -> Result<Routes, Diagnostics> {
        let root = yaml::parse(file, text).map_err(Diagnostics)?;
        let mut d = Decoder::new(file);
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
        if d.sink.diagnostics.is_empty() {
            Ok(Routes { routes })
        } else {
            Err(Diagnostics(d.sink.diagnostics))
        }
    }

    /// The route of a gRPC call to `path` (`/pkg.Service/Method`).
    pub fn grpc(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| match &r.matcher {
            Matcher::Grpc(pattern) => glob(pattern, path),
            Matcher::Http { .. } => false,
        })
    }

    /// The route of an HTTP request.
    pub fn http(&self, method: &str, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| match &r.matcher {
            Matcher::Http { prefix, methods } => {
                path.starts_with(prefix.as_str())
                    && (methods.is_empty()
                        || methods.iter().any(|m| m.eq_ignore_ascii_case(method)))
            }
            Matcher::Grpc(_) => false,
        })
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

fn decode_route(d: &mut Decoder<'_>, node: &yaml::Node, i: usize) -> Option<Route> {
    let what = format!("route #{}", i + 1);
    let f = d.fields(
        node,
        &what,
        &["grpc", "http", "methods", "dataCategory", "resource"],
    )?;
    let matcher = match (f.get("grpc"), f.get("http")) {
        (Some(g), None) => {
            let pattern = d.text(g, &format!("{what}: `grpc`"))?;
            if !pattern.starts_with('/') {
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
    let mut route = Route {
        matcher,
        category,
        deidentification: None,
        owner_tenant: None,
        attributes: BTreeMap::new(),
    };
    if let Some(r) = f.get("resource") {
        let r = d.fields(
            r,
            &format!("{what}: `resource`"),
            &["deidentification", "ownerTenant", "attributes"],
        )?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_load_strictly_and_match_in_order() {
        let text = "routes:\n  - grpc: /demo.v1.CustomerService/GetCustomer\n    dataCategory: customer-data\n    resource: { deidentification: PSEUDONYMIZED }\n  - grpc: /demo.v1.CustomerService/*\n    dataCategory: service-generated-data\n  - http: /customers/\n    methods: [GET]\n    dataCategory: customer-data\n";
        let routes = Routes::parse("routes.yaml", text).unwrap();
        assert_eq!(routes.len(), 3);
        let get = routes.grpc("/demo.v1.CustomerService/GetCustomer").unwrap();
        assert_eq!(get.category, "customer-data");
        assert_eq!(get.deidentification, Some(2));
        assert_eq!(
            routes
                .grpc("/demo.v1.CustomerService/Echo")
                .unwrap()
                .category,
            "service-generated-data"
        );
        assert!(routes.grpc("/other.Service/Get").is_none());
        assert!(routes.http("GET", "/customers/c-1").is_some());
        assert!(routes.http("DELETE", "/customers/c-1").is_none());
        assert!(routes.http("GET", "/orders").is_none());
    }

    #[test]
    fn bad_routes_name_the_place() {
        let err = Routes::parse(
            "r.yaml",
            "routes:\n  - grpc: demo/Get\n    dataCategory: c\n  - dataCategory: c\n  - http: /x\n    dataCategory: c\n    colour: red\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("r.yaml:2:11: route #1: `grpc` is a method path"),
            "{err}"
        );
        assert!(
            err.contains("route #2 needs exactly one of `grpc` or `http`"),
            "{err}"
        );
        assert!(
            err.contains("r.yaml:7:5: route #3: unknown key `colour`"),
            "{err}"
        );
    }
}

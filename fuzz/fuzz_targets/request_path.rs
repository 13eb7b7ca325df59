//! The sidecar's canonical request path and its route matching, from any
//! text: no panic; normalising twice changes nothing; a canonical path has
//! no dot segment, repeated slash or backslash; a path a route covers is
//! the path forwarded; a gRPC glob never spans a `/`.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use purposegate_sidecar::canonical;
use purposegate_sidecar::routes::{Routes, method_glob};

fn routes() -> Option<&'static Routes> {
    static ROUTES: OnceLock<Option<Routes>> = OnceLock::new();
    ROUTES
        .get_or_init(|| {
            Routes::parse(
                "routes.yaml",
                "routes:\n  - grpc: /demo.v1.CustomerService/Get*\n    dataCategory: customer-data\n  - grpc: /demo.*/*\n    dataCategory: service-generated-data\n  - http: /records/\n    dataCategory: customer-data\n  - http: /echo\n    dataCategory: service-generated-data\n  - http: /public\n    methods: [GET]\n    dataCategory: service-generated-data\n",
            )
            .ok()
        })
        .as_ref()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (raw, query) = match text.split_once('?') {
        Some((raw, query)) => (raw, Some(query)),
        None => (text, None),
    };
    if let Ok(path) = canonical::path(raw) {
        assert_eq!(canonical::path(&path).as_deref(), Ok(&*path));
        assert!(path.starts_with('/'));
        assert!(!path.contains("//") && !path.contains('\\'));
        assert!(path.split('/').all(|s| s != "." && s != ".."));
        if let Some(routes) = routes() {
            for grpc in [false, true] {
                let table = routes.table(&path, grpc);
                if let Ok(Some(_)) = routes.route(table, "GET", &path) {
                    let target = canonical::request_target(&path, query);
                    assert_eq!(target.split('?').next(), Some(&*path));
                }
            }
        }
    }
    if let Some((pattern, path)) = text.split_once('\n') {
        if method_glob(pattern, path) {
            assert_eq!(pattern.matches('/').count(), path.matches('/').count());
        }
    }
});

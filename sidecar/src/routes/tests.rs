use super::*;
use crate::subject::SubjectFrom;

#[test]
fn routes_load_strictly_and_match_in_order() {
    let text = "routes:\n  - grpc: /demo.v1.CustomerService/GetCustomer\n    dataCategory: customer-data\n    resource: { deidentification: PSEUDONYMIZED }\n    obligations: [log-access]\n  - grpc: /demo.v1.CustomerService/*\n    dataCategory: service-generated-data\n  - http: /customers/\n    methods: [GET]\n    dataCategory: customer-data\n";
    let routes = Routes::parse("routes.yaml", text).unwrap();
    assert_eq!(routes.len(), 3);
    let get = routes.grpc("/demo.v1.CustomerService/GetCustomer").unwrap();
    assert_eq!(get.category, "customer-data");
    assert_eq!(get.deidentification, Some(2));
    assert_eq!(get.obligations, ["log-access"]);
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
fn the_first_grpc_route_in_the_file_wins_exact_or_wildcard() {
    let route = |pattern: &str, category: &str| {
        format!("  - grpc: {pattern}\n    dataCategory: {category}\n")
    };
    let text = format!(
        "routes:\n{}{}{}{}{}",
        route("/a.S/Get", "first-exact"),
        route("/a.S/*", "wildcard"),
        route("/a.S/Get", "second-exact"),
        route("/a.S/Put", "after-wildcard"),
        route("/b.S/Ge?", "b-wildcard"),
    );
    let routes = Routes::parse("routes.yaml", &text).unwrap();
    let category = |path: &str| routes.grpc(path).map(|r| r.category.as_str());
    assert_eq!(category("/a.S/Get"), Some("first-exact"));
    assert_eq!(category("/a.S/Put"), Some("wildcard"));
    assert_eq!(category("/a.S/Other"), Some("wildcard"));
    assert_eq!(category("/b.S/Get"), Some("b-wildcard"));
    assert_eq!(category("/b.S/Gets"), None);
    assert_eq!(category("/a.S/Get/"), None);
}

#[test]
fn http_prefixes_match_whole_segments() {
    assert!(covers("/echo", "/echo"));
    assert!(covers("/echo", "/echo/"));
    assert!(covers("/echo", "/echo/x"));
    assert!(!covers("/echo", "/echoes"));
    assert!(!covers("/echo", "/ech"));
    assert!(covers("/customers/", "/customers/c-1"));
    assert!(!covers("/customers/", "/customers"));
    assert!(covers("/", "/anything/at/all"));
}

#[test]
fn grpc_globs_stay_inside_a_segment() {
    assert!(method_glob("/demo.v1.S/*", "/demo.v1.S/Get"));
    assert!(!method_glob("/demo.v1.S/*", "/demo.v1.S/Get/x"));
    assert!(!method_glob("/demo.*", "/demo.v1.S/Get"));
    assert!(method_glob("/demo.*/*", "/demo.v1.S/Get"));
    assert!(method_glob("/*/Get", "/a.B/Get"));
    assert!(!method_glob("/*/Get", "/a/b/Get"));
    assert!(method_glob("/a.B/Ge?", "/a.B/Get"));
    assert!(!method_glob("/a.B/Ge?", "/a.B/Ge/"));
    assert!(!method_glob("/a.B/Get", "/a.B/Gets"));
    assert!(method_glob("/a.B/*et*", "/a.B/GetCustomer"));
}

#[test]
fn the_table_follows_transport_and_shape_not_the_content_type_alone() {
    let routes = Routes::parse(
        "r.yaml",
        "routes:\n  - grpc: /demo.v1.CustomerService/ExportCustomers\n    dataCategory: customer-data\n  - http: /\n    dataCategory: service-generated-data\n",
    )
    .unwrap();
    let export = "/demo.v1.CustomerService/ExportCustomers";
    // Covered by a gRPC route: gRPC, whatever the call says.
    assert_eq!(routes.table(export, false), Table::Grpc);
    assert_eq!(routes.table("/Export", false), Table::Http);
    // An uncovered method is still a method: no HTTP route judges it.
    assert_eq!(
        routes.table("/demo.v1.CustomerService/Echo", false),
        Table::Grpc
    );
    assert_eq!(routes.table("/customers/c-1", false), Table::Http);
    assert_eq!(routes.table("/customers/c-1", true), Table::Grpc);
}

#[test]
fn a_path_another_route_covers_when_read_without_case_or_slash_is_refused() {
    let routes = Routes::parse(
        "r.yaml",
        "routes:\n  - http: /records/\n    methods: [GET]\n    dataCategory: customer-data\n  - http: /records\n    methods: [POST]\n    dataCategory: c2\n  - http: /\n    dataCategory: public\n",
    )
    .unwrap();
    assert_eq!(
        routes
            .route(Table::Http, "GET", "/records/1")
            .unwrap()
            .unwrap()
            .category,
        "customer-data"
    );
    assert!(routes.route(Table::Http, "GET", "/RECORDS/1").is_err());
    assert!(routes.route(Table::Http, "GET", "/Records/").is_err());
    assert_eq!(
        routes
            .route(Table::Http, "GET", "/public/x")
            .unwrap()
            .unwrap()
            .category,
        "public"
    );
    // HEAD is GET to the app.
    assert_eq!(
        routes
            .route(Table::Http, "HEAD", "/records/1")
            .unwrap()
            .unwrap()
            .category,
        "customer-data"
    );
}

#[test]
fn a_data_subject_segment_is_counted_from_one_and_bounded() {
    let ok = Routes::parse(
        "r.yaml",
        "routes:\n  - http: /customers/\n    dataCategory: c\n    resource: { dataSubject: { pathSegment: 2 } }\n",
    )
    .unwrap();
    assert_eq!(
        ok.http("GET", "/customers/u-1").unwrap().data_subject,
        Some(SubjectFrom::PathSegment(2))
    );
    assert!(!ok.reads_first_messages());
    for (bad, says) in [
        ("{ pathSegment: 0 }", "counts from 1"),
        ("{ pathSegment: 33 }", "between 0 and 32"),
        ("{ header: x-user }", "unknown key `header`"),
        (
            "{}",
            "needs one of `pathSegment` (http) or `grpcField` (grpc)",
        ),
        ("{ grpcField: 1 }", "belongs to `grpc` routes"),
    ] {
        let err = Routes::parse(
            "r.yaml",
            &format!("routes:\n  - http: /customers/\n    dataCategory: c\n    resource: {{ dataSubject: {bad} }}\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(says), "{bad}: {err}");
    }
}

#[test]
fn a_grpc_route_reads_a_field_by_its_numbers() {
    let route = |subject: &str| {
        Routes::parse(
            "r.yaml",
            &format!(
                "routes:\n  - grpc: /a.B/Get\n    dataCategory: c\n    resource: {{ dataSubject: {subject} }}\n"
            ),
        )
    };
    let one = route("{ grpcField: 1 }").unwrap();
    assert!(one.reads_first_messages());
    assert_eq!(
        one.grpc("/a.B/Get").unwrap().data_subject,
        Some(SubjectFrom::GrpcField(vec![1]))
    );
    assert_eq!(
        route("{ grpcField: [2, 1] }")
            .unwrap()
            .grpc("/a.B/Get")
            .unwrap()
            .data_subject,
        Some(SubjectFrom::GrpcField(vec![2, 1]))
    );
    for (bad, says) in [
        ("{ grpcField: 0 }", "count from 1"),
        ("{ grpcField: 536870912 }", "between 0 and 536870911"),
        ("{ grpcField: [] }", "a list of 1 to 8"),
        (
            "{ grpcField: [1, 2, 3, 4, 5, 6, 7, 8, 9] }",
            "a list of 1 to 8",
        ),
        ("{ grpcField: id }", "a whole number"),
        ("{ pathSegment: 2 }", "belongs to `http` routes"),
        ("{ grpcField: 1, pathSegment: 2 }", "needs one of"),
    ] {
        let err = route(bad).unwrap_err().to_string();
        assert!(err.contains(says), "{bad}: {err}");
    }
}

#[test]
fn bad_routes_name_the_place() {
    let err = Routes::parse(
        "r.yaml",
        "routes:\n  - grpc: demo/Get\n    dataCategory: c\n  - dataCategory: c\n  - http: /x\n    dataCategory: c\n    colour: red\n  - http: /a/../b\n    dataCategory: c\n  - http: /a%2fb\n    dataCategory: c\n  - grpc: /a.B/Get/x\n    dataCategory: c\n",
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
    assert!(
        err.contains("route #4: `http` must be a canonical path; write `/b`"),
        "{err}"
    );
    assert!(
        err.contains("route #5: `http`: the request path has an encoded `/`"),
        "{err}"
    );
    assert!(err.contains("route #6: `grpc` is a method path"), "{err}");
    let err = Routes::parse(
        "r.yaml",
        "routes:\n  - http: /demo.v1.S/\n    dataCategory: c\n  - http: /a.B/Get\n    dataCategory: c\n  - grpc: /a.B/Get\n    dataCategory: c\n    allowBody: true\n  - http: /index.html\n    dataCategory: c\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("route #1: `http` prefix `/demo.v1.S/` names what looks like a gRPC service"),
        "{err}"
    );
    assert!(err.contains("route #2: `http` prefix `/a.B/Get`"), "{err}");
    assert!(
        err.contains("route #3: `allowBody` belongs to `http` routes"),
        "{err}"
    );
    assert!(!err.contains("route #4"), "{err}");
}

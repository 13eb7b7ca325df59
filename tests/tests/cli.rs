//! The real `purposegate-server` binary's policy tools: `validate`, `test`
//! and `check`, with their exit codes and what they print.

use purposegate_tests::{TempDir, server_cli};

const POLICY: &str = "engine/policies/online-services-dpa.yaml";
const CASES: &str = "engine/policies/online-services-dpa_test.yaml";

#[test]
fn validate_accepts_the_default_policy() {
    let run = server_cli(&["validate", POLICY], None);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout.contains("valid policy `online-services-dpa`"),
        "{run:?}"
    );
}

#[test]
fn validate_names_file_line_and_the_nearest_purpose() {
    let dir = TempDir::new("validate");
    let text = std::fs::read_to_string(purposegate_tests::repo_root().join(POLICY))
        .unwrap_or_else(|e| panic!("{e}"))
        .replace(
            "purposes: [lbo]\n    when:\n",
            "purposes: [lbo.biling]\n    when:\n",
        );
    let path = dir.write("typo.yaml", &text);
    let run = server_cli(&["validate", &path], None);
    assert_eq!(run.code, Some(1), "{run:?}");
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains("lbo.biling"))
        .unwrap_or_else(|| panic!("no diagnostic: {run:?}"));
    assert!(line.starts_with(&format!("error: {path}:")), "{line}");
    assert!(line.contains("did you mean `lbo.billing`?"), "{line}");
    let place: Vec<&str> = line.trim_start_matches("error: ").splitn(4, ':').collect();
    assert!(
        place[1].parse::<u32>().is_ok() && place[2].parse::<u32>().is_ok(),
        "{line}"
    );
}

#[test]
fn validate_a_directory_of_policy_files() {
    let dir = TempDir::new("validate-dir");
    dir.write("a.yaml", "version: 1\nname: split\npurposes:\n  p: P\n");
    dir.write(
        "b.yaml",
        "version: 1\nrules:\n  - id: r\n    effect: permit\n    purposes: [p]\n",
    );
    dir.write("b_test.yaml", "this is a case file: [and skipped");
    let run = server_cli(&["validate", &dir.path().display().to_string()], None);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout.contains("1 purpose, 0 data categories, 1 rule"),
        "{run:?}"
    );
}

#[test]
fn a_duplicate_rule_id_does_not_hide_the_rules_other_problems() {
    let dir = TempDir::new("dup-and-more");
    let path = dir.write(
        "policy.yaml",
        "version: 1\nname: x\npurposes:\n  a: A\nrules:\n  - {id: r, effect: permit, purposes: [a]}\n  - {id: r, effect: deny, purposes: [b]}\n",
    );
    let run = server_cli(&["validate", &path], None);
    assert_eq!(run.code, Some(1), "{run:?}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains(":7:10: duplicate rule id `r`")),
        "{run:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(":7:38: rule `r`: unknown purpose `b`")),
        "{run:?}"
    );
    assert_eq!(lines.last(), Some(&"the policy is invalid: 2 problems"));
}

#[test]
fn a_broken_case_file_is_reported_in_line_order_without_a_summary_of_nothing() {
    let dir = TempDir::new("broken-cases");
    let cases = dir.write(
        "broken_test.yaml",
        "cases:\n  - name: one\n    request: { purpose: provide, resource: { category: customer-data, bogus: 1 } }\n  - name: two\n    decision: MAYBE\n",
    );
    let run = server_cli(&["test", POLICY, &cases], None);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        !run.stdout.contains("passed") && !run.stderr.contains("0 passed"),
        "{run:?}"
    );
    let lines: Vec<u32> = run
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("error: {cases}:")))
        .filter_map(|rest| rest.split(':').next()?.parse().ok())
        .collect();
    assert_eq!(lines.len(), 4, "{run:?}");
    assert!(lines.is_sorted(), "problems out of line order: {run:?}");
    assert_eq!(
        run.stderr.lines().last(),
        Some("no case was run: 1 case file could not be read"),
        "{run:?}"
    );
}

#[test]
fn bad_input_gives_a_clear_error_and_exit_1_never_a_panic() {
    let dir = TempDir::new("bad");
    for (name, text, says) in [
        ("malformed.yaml", "version: 1\nname: [x\n", "invalid YAML"),
        (
            "types.yaml",
            "version: 1\nname: x\npurposes: [a]\n",
            "must be a mapping",
        ),
        (
            "dup.yaml",
            "version: 1\nname: x\npurposes:\n  a: A\nrules:\n  - {id: r, effect: permit, purposes: [a]}\n  - {id: r, effect: deny, purposes: [a]}\n",
            "duplicate rule id `r`",
        ),
        (
            "empty-id.yaml",
            "version: 1\nname: x\npurposes:\n  a: A\nrules:\n  - {id: '', effect: permit, purposes: [a]}\n",
            "rule id must not be empty",
        ),
        (
            "cycle.yaml",
            "version: 1\nname: &n x\ndescription: *n\n",
            "aliases",
        ),
        ("binary.yaml", "\u{0}\u{1}\u{2}garbage", "error"),
        ("empty.yaml", "", "the policy file is empty"),
    ] {
        let path = dir.write(name, text);
        let run = server_cli(&["validate", &path], None);
        assert_eq!(run.code, Some(1), "{name}: {run:?}");
        assert!(run.stderr.contains(says), "{name}: {run:?}");
        assert!(!run.stderr.contains("panicked"), "{name}: {run:?}");
    }
    let run = server_cli(&["validate", "/nonexistent/policy.yaml"], None);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr
            .contains("cannot read `/nonexistent/policy.yaml`"),
        "{run:?}"
    );
}

#[test]
fn test_passes_the_default_policy_cases() {
    let run = server_cli(&["test", POLICY, CASES], None);
    assert_eq!(run.code, Some(0), "{run:?}");
    let last = run.stdout.lines().last().unwrap_or("");
    let passed: usize = last
        .strip_suffix(" passed, 0 failed")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("last line: {last:?}"));
    assert!(passed >= 40, "{last}");
}

#[test]
fn test_reports_a_wrong_expectation_readably() {
    let dir = TempDir::new("test");
    let cases = dir.write(
        "wrong_test.yaml",
        "cases:\n  - name: advertising is surely fine\n    request: { purpose: advertising, resource: { category: customer-data } }\n    decision: PERMIT\n  - name: provide is fine\n    request: { purpose: provide, resource: { category: customer-data } }\n    decision: PERMIT\n",
    );
    let run = server_cli(&["test", POLICY, &cases], None);
    assert_eq!(run.code, Some(1), "{run:?}");
    let fail = run
        .stdout
        .lines()
        .find(|l| l.starts_with("FAIL"))
        .unwrap_or_else(|| panic!("{run:?}"));
    assert!(
        fail.contains(&format!("{cases}:2 advertising is surely fine")),
        "{fail}"
    );
    assert!(fail.contains("got DENY, want PERMIT"), "{fail}");
    assert!(fail.contains("no-prohibited-uses"), "{fail}");
    assert_eq!(run.stdout.lines().last(), Some("1 passed, 1 failed"));
}

#[test]
fn check_from_flags_prints_the_decision_as_json() {
    let run = server_cli(
        &[
            "check",
            "--purpose",
            "provide",
            "--category",
            "customer-data",
            "--subject",
            "crm",
            "--request-id",
            "r1",
        ],
        None,
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    let json: serde_json::Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run:?}"));
    assert_eq!(json["decision"], "PERMIT");
    assert_eq!(json["ruleIds"], serde_json::json!(["online-services"]));
    assert_eq!(json["requestId"], "r1");
    assert_eq!(json["ttlSeconds"], 300);
    assert_eq!(json["policyRevision"].as_str().map(str::len), Some(16));
}

#[test]
fn check_from_json_on_stdin_takes_the_grpc_json_shape() {
    let request = r#"{"purpose":"professional-services.planning","subject":{"id":"consultant","tenant":"fabrikam"},
        "resource":{"category":"professional-services-data","owner_tenant":"contoso","groupSize":"5","deidentification":"IDENTIFIED"}}"#;
    let run = server_cli(&["check"], Some(request));
    assert_eq!(run.code, Some(0), "{run:?}");
    let json: serde_json::Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run:?}"));
    assert_eq!(json["decision"], "DENY");
    assert_eq!(
        json["ruleIds"],
        serde_json::json!(["no-cross-customer-delivery"])
    );
}

#[test]
fn check_rejects_invalid_requests_naming_the_field() {
    let run = server_cli(
        &["check"],
        Some(r#"{"purpose":"","resource":{"category":"customer-data"}}"#),
    );
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains("field `purpose` must not be empty"),
        "{run:?}"
    );
    let run = server_cli(
        &["check"],
        Some(r#"{"purpose":"provide","resource":{"category":7}}"#),
    );
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains("`resource.category` must be a string"),
        "{run:?}"
    );
    let run = server_cli(
        &["check"],
        Some("{\"purpose\": \"provide\",\n \"resource\": {\"category\": 7}}"),
    );
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr
            .contains("<stdin>:2:27: `resource.category` must be a string"),
        "JSON problems are placed where they are written: {run:?}"
    );
    let run = server_cli(&["check"], Some("{not json"));
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("invalid JSON"), "{run:?}");
    let run = server_cli(&["check"], Some(r#"{"purpose":"provide","resourse":{}}"#));
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("did you mean `resource`?"), "{run:?}");
}

#[test]
fn check_enforce_exits_3_on_anything_but_permit() {
    for (purpose, code) in [
        ("provide", 0),
        ("advertising", 3),
        ("lbo.billing", 3),
        ("nonsense", 3),
    ] {
        let run = server_cli(
            &[
                "check",
                "--enforce",
                "--purpose",
                purpose,
                "--category",
                "customer-data",
            ],
            None,
        );
        assert_eq!(run.code, Some(code), "{purpose}: {run:?}");
    }
}

#[test]
fn check_refuses_flags_and_json_together() {
    let run = server_cli(
        &["check", "--json", "-", "--purpose", "provide"],
        Some("{}"),
    );
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("cannot be used with"), "{run:?}");
}

#[test]
fn every_server_flag_reads_an_environment_variable_and_help_says_which() {
    let run = server_cli(&["--help"], None);
    assert_eq!(run.code, Some(0), "{run:?}");
    for (flag, var) in [
        ("--listen", "PURPOSEGATE_LISTEN"),
        ("--policy", "PURPOSEGATE_POLICY"),
        ("--metrics-listen", "PURPOSEGATE_METRICS_LISTEN"),
        ("--admin-listen", "PURPOSEGATE_ADMIN_LISTEN"),
        ("--tls-cert", "PURPOSEGATE_TLS_CERT"),
        ("--tls-key", "PURPOSEGATE_TLS_KEY"),
        ("--tls-client-ca", "PURPOSEGATE_TLS_CLIENT_CA"),
        ("--max-batch", "PURPOSEGATE_MAX_BATCH"),
        ("--drain", "PURPOSEGATE_DRAIN"),
        ("--decision-log", "PURPOSEGATE_DECISION_LOG"),
        ("--decision-log-queue", "PURPOSEGATE_DECISION_LOG_QUEUE"),
        ("--log-format", "PURPOSEGATE_LOG_FORMAT"),
    ] {
        // The flag's entry: its line and the indented lines under it.
        let start = run
            .stdout
            .find(&format!("  {flag} "))
            .unwrap_or_else(|| panic!("{flag} is not in --help:\n{}", run.stdout));
        let rest = &run.stdout[start + 2..];
        let end = rest.find("\n  -").unwrap_or(rest.len());
        // Help is wrapped at 100 columns: read it as one line.
        let entry = rest[..end].split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(entry.contains(&format!("[env: {var}=")), "{entry}");
    }
}

#[test]
fn every_sidecar_flag_reads_an_environment_variable() {
    let run: purposegate_tests::Run =
        std::process::Command::new(purposegate_tests::binary("purposegate-sidecar"))
            .arg("--help")
            .output()
            .unwrap()
            .into();
    assert_eq!(run.code, Some(0), "{run:?}");
    for var in [
        "PURPOSEGATE_SIDECAR_PDP",
        "PURPOSEGATE_SIDECAR_LISTEN",
        "PURPOSEGATE_SIDECAR_UPSTREAM",
        "PURPOSEGATE_SIDECAR_UPSTREAM_PROTOCOL",
        "PURPOSEGATE_SIDECAR_ROUTES",
        "PURPOSEGATE_SIDECAR_OBLIGATIONS",
        "PURPOSEGATE_SIDECAR_LOCAL_LISTEN",
        "PURPOSEGATE_SIDECAR_METRICS_LISTEN",
        "PURPOSEGATE_SIDECAR_PDP_TIMEOUT",
        "PURPOSEGATE_SIDECAR_STALE_IF_ERROR",
        "PURPOSEGATE_SIDECAR_CACHE_MAX_ENTRIES",
        "PURPOSEGATE_SIDECAR_CACHE_MAX_BYTES",
        "PURPOSEGATE_SIDECAR_CACHE_DENY_TTL",
        "PURPOSEGATE_SIDECAR_MAX_STREAM_AGE",
        "PURPOSEGATE_SIDECAR_MAX_BATCH",
        "PURPOSEGATE_SIDECAR_MAX_CALLS",
        "PURPOSEGATE_SIDECAR_MAX_CONNECTIONS",
        "PURPOSEGATE_SIDECAR_MAX_CONNECTIONS_PER_PEER",
        "PURPOSEGATE_SIDECAR_HEADER_READ_TIMEOUT",
        "PURPOSEGATE_SIDECAR_IDLE_TIMEOUT",
        "PURPOSEGATE_SIDECAR_MAX_HEADER_BYTES",
        "PURPOSEGATE_SIDECAR_MAX_CONCURRENT_STREAMS",
        "PURPOSEGATE_SIDECAR_DRY_RUN",
        "PURPOSEGATE_SIDECAR_DRAIN",
        "PURPOSEGATE_SIDECAR_LOG_FORMAT",
        "PURPOSEGATE_SIDECAR_TLS_CERT",
        "PURPOSEGATE_SIDECAR_TLS_KEY",
        "PURPOSEGATE_SIDECAR_TLS_CLIENT_CA",
    ] {
        assert!(
            run.stdout.contains(&format!("[env: {var}=")),
            "{var} missing:\n{}",
            run.stdout
        );
    }
    // No variable of the server's: exporting one for the server must not
    // change the sidecar beside it.
    assert!(
        !run.stdout.contains("[env: PURPOSEGATE_LISTEN"),
        "{}",
        run.stdout
    );
}

/// `validate` of a policy as an attacker (or a generator) writes it:
/// within a second, with its diagnostics or a clear size error.
#[test]
fn validate_is_quick_on_large_and_hostile_policies() {
    let dir = purposegate_tests::TempDir::new("large-policies");
    let timed = |name: &str, text: &str, args: &[&str], within: u64| {
        let path = dir.write(name, text);
        let start = std::time::Instant::now();
        let run = server_cli(&[&["validate"], args, &[&path]].concat(), None);
        let took = start.elapsed();
        assert!(
            took < std::time::Duration::from_secs(within),
            "{name}: {took:?}"
        );
        run
    };
    let run = |name: &str, text: &str| timed(name, text, &[], 1);
    let purposes = |n: usize, prefix: &str| -> String {
        (0..n)
            .map(|i| format!("  {prefix}-{i:06}: Purpose {i}\n"))
            .collect()
    };
    // Thousands of misspelled ids (254 KB and 508 KB): every problem
    // listed, hints for the first 50 only, in a time near linear in the
    // size (a quarter of a second in a debug build; loose for a loaded
    // machine); under a lowered limit, refused by size naming the flag.
    for (n, name) in [
        (4000, "misspelled-254k.yaml"),
        (8000, "misspelled-508k.yaml"),
    ] {
        let rules: String = (0..n)
            .map(|i| format!("  - id: r{i}\n    effect: permit\n    purposes: [purpos-{i:06}]\n"))
            .collect();
        let text = format!(
            "version: 1\nname: big\npurposes:\n{}dataCategories:\n  data: Data\nrules:\n{rules}",
            purposes(n, "purpose")
        );
        let out = timed(name, &text, &[], 5);
        assert_eq!(out.code, Some(1), "{out:?}");
        assert!(
            out.stderr
                .contains(&format!("the policy is invalid: {n} problems")),
            "{}",
            out.stderr.lines().last().unwrap_or("")
        );
        assert_eq!(out.stderr.matches("did you mean").count(), 50);
        let out = timed(name, &text, &["--max-policy-file-bytes", "128Ki"], 1);
        assert_eq!(out.code, Some(1), "{out:?}");
        assert!(
            out.stderr.contains(
                "a policy file may be at most 131072 bytes (128 KiB); raise --max-policy-file-bytes"
            ),
            "{out:?}"
        );
    }
    // A valid 2.2 MB policy of 160,000 purposes: valid, in a time near
    // linear in its size (loose for a debug build on a loaded machine).
    let text = format!(
        "version: 1\nname: huge\npurposes:\n{}dataCategories:\n  data: Data\nrules: []\n",
        purposes(160_000, "p")
    );
    assert!(text.len() > 2_000_000, "{}", text.len());
    let out = timed("huge.yaml", &text, &[], 30);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("160000 purposes"), "{}", out.stdout);

    // Within the size: 1,200 declared and 1,200 misspelled ids, every
    // problem reported at once, hints for the first ones.
    let rules: String = (0..1200)
        .map(|i| format!("  - id: r{i}\n    effect: permit\n    purposes: [purpos-{i:04}]\n"))
        .collect();
    let text = format!(
        "version: 1\nname: big\npurposes:\n{}dataCategories:\n  data: Data\nrules:\n{rules}",
        (0..1200)
            .map(|i| format!("  purpose-{i:04}: Purpose {i}\n"))
            .collect::<String>()
    );
    assert!(text.len() < 128 * 1024, "{}", text.len());
    let out = run("misspelled.yaml", &text);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr
            .contains("rule `r0`: unknown purpose `purpos-0000` (did you mean `purpose-0000`?)"),
        "{}",
        &out.stderr[..500.min(out.stderr.len())]
    );
    assert!(
        out.stderr.contains("the policy is invalid: 1200 problems"),
        "{}",
        out.stderr.lines().last().unwrap_or("")
    );
    // Duplicates among thousands of keys and list entries: found by hashing.
    let text = format!(
        "version: 1\nname: dup\npurposes:\n{}{}dataCategories:\n  data: Data\nrules:\n  - id: r\n    effect: permit\n    purposes: [{}]\n",
        (0..3000)
            .map(|i| format!("  p{i}: P\n"))
            .collect::<String>(),
        "  p0: again\n",
        (0..3000)
            .map(|i| format!("p{}", i % 1500))
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert!(text.len() < 128 * 1024, "{}", text.len());
    let out = run("duplicates.yaml", &text);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("duplicate key `p0`"),
        "{}",
        out.stderr.lines().next().unwrap_or("")
    );
    assert!(out.stderr.contains("`p0` is listed twice"));
}

#[test]
fn a_json_request_with_a_key_twice_is_refused() {
    let run = server_cli(
        &["check", "--json", "-"],
        Some(
            r#"{"purpose":"advertising","purpose":"provide","resource":{"category":"customer-data"}}"#,
        ),
    );
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("duplicate key `purpose`"), "{run:?}");
    assert!(run.stdout.is_empty(), "nothing was decided: {run:?}");
}

#[test]
fn the_sidecar_reads_its_old_variables_where_the_server_shares_none() {
    let server = purposegate_tests::ServerProcess::start(&["--decision-log", "off"]);
    // An old name the server does not share is a fallback, with a warning;
    // a server variable (here a bad value) is not the sidecar's at all.
    let sidecar = purposegate_tests::SidecarProcess::start(
        &server.url(),
        &[],
        &[
            ("PURPOSEGATE_UPSTREAM", "http://127.0.0.1:9"),
            ("PURPOSEGATE_METRICS_LISTEN", "not an address"),
            ("PURPOSEGATE_LISTEN", "not an address either"),
        ],
    );
    let log = sidecar.log().join("\n");
    assert!(log.contains(r#""upstream":"http://127.0.0.1:9/""#), "{log}");
    assert!(
        log.contains("rename it to PURPOSEGATE_SIDECAR_UPSTREAM"),
        "{log}"
    );
}

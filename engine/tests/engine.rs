#![allow(
    clippy::panic,
    reason = "helpers of tests: a failed setup must fail the test"
)]
#![allow(
    clippy::disallowed_methods,
    reason = "the tests read their fixture files; the engine itself reads none"
)]

//! Engine tests, data-driven: policies with case files for each semantic of
//! docs/semantics.md, the default policy's own cases, and invalid policies
//! with the exact diagnostics each must produce. One helper runs them all.

use std::path::{Path, PathBuf};

use purposegate_engine::{
    CaseFile, Decision, DecisionRequest, Diagnostics, Policy, PolicySource, Resource, Subject,
    default_policy,
};

fn dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(sub)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn load(path: &Path) -> Policy {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("policy");
    Policy::parse(name, &read(path)).unwrap_or_else(|d| panic!("{d}"))
}

/// Runs a case file against a policy; fails listing every failing case.
fn run_cases(policy: &Policy, cases_path: &Path) -> usize {
    let name = cases_path.display().to_string();
    let cases = CaseFile::parse(&name, &read(cases_path)).unwrap_or_else(|d| panic!("{d}"));
    let results = cases.run(policy);
    let failures: Vec<String> = results
        .iter()
        .filter(|r| !r.passed())
        .map(|r| r.describe_failure(&name))
        .collect();
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    assert!(!results.is_empty(), "{name} holds no cases");
    results.len()
}

/// `tests/semantics/NAME.yaml` against `tests/semantics/NAME_test.yaml`.
fn semantic(name: &str) {
    let policy = load(&dir("tests/semantics").join(format!("{name}.yaml")));
    run_cases(
        &policy,
        &dir("tests/semantics").join(format!("{name}_test.yaml")),
    );
}

/// Policy sources from `(file name, text)` pairs.
fn sources<'a>(files: &[(&'a str, &'a str)]) -> Vec<PolicySource<'a>> {
    files
        .iter()
        .map(|&(name, text)| PolicySource { name, text })
        .collect()
}

fn request(purpose: &str, category: &str) -> DecisionRequest {
    DecisionRequest {
        purpose: purpose.into(),
        resource: Resource {
            category: category.into(),
            ..Resource::default()
        },
        subject: Subject {
            id: "test".into(),
            ..Subject::default()
        },
        ..DecisionRequest::default()
    }
}

#[test]
fn semantic_1_permits_cover_descendant_purposes() {
    semantic("01-purpose-hierarchy");
}

#[test]
fn semantic_2_prohibitions_cover_ancestors_and_descendants() {
    semantic("02-prohibition-ancestors");
}

#[test]
fn semantic_3_rules_cover_descendant_categories() {
    semantic("03-category-hierarchy");
}

#[test]
fn semantic_4_derived_data_carries_its_origins_restrictions() {
    semantic("04-derived-data");
}

#[test]
fn semantic_5_deny_overrides_with_indeterminate_rules() {
    semantic("05-combining");
    semantic("05b-combining-no-permit");
}

#[test]
fn semantic_6_only_permit_lets_data_through() {
    for d in Decision::ALL {
        assert_eq!(d.is_permit(), d == Decision::Permit, "{d}");
    }
    // Every decision of the default policy's cases that is not PERMIT is
    // one a PEP must block.
    let policy = default_policy::load().unwrap_or_else(|d| panic!("{d}"));
    let blocked = policy.evaluate(&request("advertising", "customer-data"));
    assert!(!blocked.decision.is_permit());
}

#[test]
fn semantic_7_obligations_must_be_supported() {
    semantic("07-obligations");
}

#[test]
fn semantic_8_unknown_ids_are_not_applicable_and_empty_ids_invalid() {
    semantic("08-unknown-ids");
    let mut empty_purpose = request("", "customer-data");
    let err = empty_purpose.validate().map(|_| ()).unwrap_err();
    assert_eq!(err.to_string(), "field `purpose` must not be empty");
    empty_purpose.purpose = "provide".into();
    empty_purpose.resource.category.clear();
    let err = empty_purpose.validate().map(|_| ()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "field `resource.category` must not be empty"
    );
    // Asked anyway, the engine still answers with a value, never an error.
    let policy = default_policy::load().unwrap_or_else(|d| panic!("{d}"));
    let answer = policy.evaluate(&empty_purpose);
    assert_eq!(answer.decision, Decision::Indeterminate);
    assert!(
        answer.reason.to_string().contains("resource.category"),
        "{}",
        answer.reason
    );
}

#[test]
fn semantic_9_monitor_rules_report_but_never_decide() {
    semantic("09-monitor");
}

#[test]
fn semantic_10_every_answer_explains_itself() {
    let policy = default_policy::load().unwrap_or_else(|d| panic!("{d}"));
    for (purpose, category) in [
        ("provide", "customer-data"),
        ("advertising", "customer-data"),
        ("lbo.billing", "customer-data"),
        ("lbo.billing", "diagnostic-data"),
        ("nonsense", "customer-data"),
    ] {
        let answer = policy.evaluate(&request(purpose, category));
        assert_eq!(&answer.policy_revision, policy.revision());
        assert!(
            !answer.reason.to_string().is_empty(),
            "{purpose} on {category}"
        );
        assert!(
            !answer.reason.to_string().contains('\n'),
            "one line: {}",
            answer.reason
        );
        if matches!(
            answer.decision,
            Decision::Permit | Decision::Deny | Decision::Indeterminate
        ) {
            assert!(
                !answer.rule_ids.is_empty(),
                "{purpose} on {category}: {answer:?}"
            );
        }
        assert_eq!(answer.ttl_seconds, 300);
    }
}

#[test]
fn purposes_bound_to_identity() {
    semantic("12-claims");
}

#[test]
fn conditions_of_the_policy_format() {
    semantic("11-conditions");
}

#[test]
fn default_policy_passes_its_own_cases() {
    let policy = default_policy::load().unwrap_or_else(|d| panic!("{d}"));
    let n = run_cases(&policy, &dir("policies/online-services-dpa_test.yaml"));
    assert!(
        n >= 40,
        "the default policy needs at least 40 cases, has {n}"
    );
}

#[test]
fn default_policy_declares_exactly_the_contract_ids() {
    let policy = default_policy::load().unwrap_or_else(|d| panic!("{d}"));
    let purposes: Vec<&str> = policy.purposes().ids().collect();
    let mut want = vec![
        "provide",
        "provide.personalization",
        "troubleshoot",
        "troubleshoot.security-incident",
        "improve",
        "improve.product-fixes",
        "professional-services",
        "lbo",
        "profiling",
        "advertising",
        "market-research",
    ];
    for child in [
        "technical-support",
        "planning",
        "consulting",
        "guidance",
        "data-migration",
        "deployment",
        "solution-development",
    ] {
        want.push(Box::leak(
            format!("professional-services.{child}").into_boxed_str(),
        ));
    }
    for child in [
        "billing",
        "compensation",
        "internal-reporting",
        "fraud-defense",
        "core-functionality",
        "financial-reporting",
    ] {
        want.push(Box::leak(format!("lbo.{child}").into_boxed_str()));
    }
    let mut have = purposes.clone();
    have.sort_unstable();
    want.sort_unstable();
    assert_eq!(have, want);
    let categories: Vec<&str> = policy.categories().ids().collect();
    assert_eq!(
        categories,
        [
            "customer-data",
            "diagnostic-data",
            "service-generated-data",
            "professional-services-data"
        ]
    );
    let rules: Vec<&str> = policy.rules().iter().map(|r| &*r.id).collect();
    assert_eq!(
        rules,
        [
            "online-services",
            "professional-services",
            "no-cross-customer-delivery",
            "lbo-anonymized-diagnostic",
            "lbo-aggregated",
            "no-prohibited-uses"
        ]
    );
    assert_eq!(policy.settings().min_aggregation_group_size, 50);
    for (_, node) in policy.purposes().nodes().chain(policy.categories().nodes()) {
        assert!(
            node.description.len() > 10,
            "`{}` needs a description",
            node.id
        );
    }
    for rule in policy.rules() {
        assert!(
            rule.description.len() > 40,
            "rule `{}` needs a description",
            rule.id
        );
    }
}

/// Every `tests/invalid/NAME.yaml` must fail with exactly the diagnostics of
/// `NAME.expected`, all of them, and never panic.
#[test]
fn invalid_policies_report_every_problem_with_its_place() {
    let mut checked = 0;
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir("tests/invalid"))
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    entries.sort();
    let mut mismatches = Vec::new();
    for path in entries {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let expected = read(&path.with_extension("expected"));
        match Policy::parse(name, &read(&path)) {
            Ok(_) => mismatches.push(format!("{name}: loaded, but must fail")),
            Err(d) => {
                let got = format!("{d}\n");
                if got != expected {
                    mismatches.push(format!("{name}:\n--- got\n{got}--- want\n{expected}"));
                }
            }
        }
        checked += 1;
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    assert!(checked >= 10, "only {checked} invalid policies");
}

#[test]
fn a_misspelled_purpose_names_file_line_column_and_the_nearest_id() {
    let text = read(&dir("tests/invalid/misspelled-purpose.yaml"));
    let err: Diagnostics = Policy::parse("p.yaml", &text).map(|_| ()).unwrap_err();
    let first = err
        .iter()
        .next()
        .map(ToString::to_string)
        .unwrap_or_default();
    assert_eq!(
        first,
        "p.yaml:11:16: rule `lbo-aggregated`: unknown purpose `lbo.biling` (did you mean `lbo.billing`?)"
    );
}

#[test]
fn files_of_one_policy_merge_and_conflicts_are_errors() {
    let base = "version: 1\nname: split\npurposes:\n  provide: Provide\ndataCategories:\n  c: C\n";
    let rules = "version: 1\nrules:\n  - id: r\n    effect: permit\n    purposes: [provide]\n";
    let merged = Policy::load(&sources(&[("a.yaml", base), ("b.yaml", rules)]))
        .unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(merged.rules().len(), 1);
    // The same content in one file has the same revision.
    let single = Policy::parse(
        "all.yaml",
        &format!("{base}rules:\n  - id: r\n    effect: permit\n    purposes: [provide]\n"),
    )
    .unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(merged.revision(), single.revision());

    let conflicting = "version: 1\nname: other\npurposes:\n  provide: Again\nrules:\n  - id: r\n    effect: deny\n    purposes: [provide]\n";
    let err = Policy::load(&sources(&[
        ("a.yaml", base),
        ("b.yaml", rules),
        ("c.yaml", conflicting),
    ]))
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "c.yaml:2:7: policy name `other` conflicts with `split` at a.yaml:2:7\n\
         c.yaml:4:3: purpose `provide` is already declared at a.yaml:4:3\n\
         c.yaml:6:9: duplicate rule id `r` (first defined at b.yaml:3:9)"
    );
}

#[test]
fn garbage_input_never_panics() {
    for text in [
        "\0\0\0",
        "{{{{",
        "version: 1\nname: x\nrules: [[[[]]]]",
        "version: 1\nname: x\nrules:\n  - {id: r, effect: permit, purposes: [a], when: {not: {not: {not: {}}}}}",
        "version: 99999999999999999999999999999999999999999",
        &"a: [".repeat(5000),
        "\u{feff}version: 1",
        "version: 1\nname: x\npurposes: {a: A}\nrules: [{id: r, effect: permit, purposes: [a], when: {groupSize: {atLeast: -1}}}]",
    ] {
        let result = Policy::parse("garbage.yaml", text);
        assert!(result.is_err(), "{text:?} loaded");
    }
}

/// The explorer's matrix of the default policy: the cells the issue names,
/// and every cell agreeing with `evaluate` for its own requests.
#[test]
fn the_default_policy_matrix_agrees_with_evaluate() {
    use purposegate_engine::{CellKind, Decision, DecisionRequest, Resource};
    let policy = purposegate_engine::default_policy::load().unwrap();
    let matrix = policy.matrix();
    let cell = |p: &str, c: &str| {
        let row = matrix.purposes.iter().position(|x| &**x == p).unwrap();
        let col = matrix.categories.iter().position(|x| &**x == c).unwrap();
        &matrix.cells[row][col]
    };
    assert_eq!(cell("advertising", "customer-data").kind, CellKind::Deny);
    assert_eq!(cell("lbo", "diagnostic-data").kind, CellKind::Conditional);
    assert_eq!(cell("provide", "customer-data").kind, CellKind::Permit);
    let mut kinds = std::collections::BTreeMap::new();
    for row in &matrix.cells {
        for cell in row {
            *kinds.entry(cell.kind.as_str()).or_insert(0) += 1;
            let bare = DecisionRequest {
                purpose: cell.purpose.to_string(),
                resource: Resource {
                    category: cell.category.to_string(),
                    ..Resource::default()
                },
                ..DecisionRequest::default()
            };
            let answer = policy.evaluate(&bare);
            assert_eq!(
                answer.decision, cell.decision,
                "{}/{}",
                cell.purpose, cell.category
            );
            assert_eq!(answer.rule_ids, cell.rule_ids);
            assert_eq!(answer.reason.to_string(), cell.reason);
            // A purpose that depends on choices: a request naming no one
            // whose choices to read is INDETERMINATE; the cell shows what
            // the rules permit.
            if cell.choices.is_some() && answer.decision == Decision::Indeterminate {
                assert_eq!(cell.kind, CellKind::Permit, "{}", cell.purpose);
                continue;
            }
            match cell.kind {
                CellKind::Permit => assert_eq!(answer.decision, Decision::Permit),
                CellKind::Deny => assert_eq!(answer.decision, Decision::Deny),
                CellKind::NotApplicable => assert_eq!(answer.decision, Decision::NotApplicable),
                CellKind::Conditional => {
                    let yes = cell.permitted_example.as_ref().unwrap();
                    let no = cell.refused_example.as_ref().unwrap();
                    assert_eq!(policy.evaluate(yes).decision, Decision::Permit);
                    assert_ne!(policy.evaluate(no).decision, Decision::Permit);
                    assert!(!cell.rules.is_empty(), "a conditional cell names its rules");
                }
            }
        }
    }
    for kind in ["permit", "deny", "conditional", "not-applicable"] {
        assert!(kinds.contains_key(kind), "no {kind} cell: {kinds:?}");
    }
}

/// With `claims`, the matrix asks as a subject that may claim the purpose,
/// so its answers are what `evaluate` (and `Check`) give that subject.
#[test]
fn a_claims_policy_matrix_asks_as_a_permitted_claimant() {
    use purposegate_engine::{CellKind, Decision, Policy};
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/semantics/12-claims.yaml"),
    )
    .unwrap();
    let policy = Policy::parse("12-claims.yaml", &text).unwrap();
    let matrix = policy.matrix();
    let kind = |p: &str| {
        let row = matrix.purposes.iter().position(|x| &**x == p).unwrap();
        matrix.cells[row][0].kind
    };
    // crm may claim provide, support-* troubleshoot; nobody may claim lbo.
    assert_eq!(kind("provide"), CellKind::Permit);
    assert_eq!(kind("troubleshoot"), CellKind::Permit);
    assert_eq!(kind("lbo"), CellKind::Deny);
    let row = matrix.purposes.iter().position(|x| &**x == "lbo").unwrap();
    assert!(
        matrix.cells[row][0].reason.contains("claim"),
        "{}",
        matrix.cells[row][0].reason
    );
    for cell in matrix.cells.iter().flatten() {
        if cell.kind == CellKind::Permit {
            assert_eq!(cell.decision, Decision::Permit, "{}", cell.purpose);
        }
    }
}

#[test]
fn an_inherited_purpose_is_a_ceiling_narrowing_is_allowed() {
    let policy = default_policy::load().unwrap_or_else(|d| panic!("{d}"));
    let ask = |purpose: &str, inherited: &str| {
        let mut r = request(purpose, "customer-data");
        r.inherited_purpose = inherited.into();
        policy.evaluate(&r)
    };
    // The inherited purpose itself, and a narrower one: decided as ever.
    assert_eq!(ask("provide", "provide").decision, Decision::Permit);
    assert_eq!(
        ask("troubleshoot.security-incident", "troubleshoot").decision,
        Decision::Permit
    );
    // Wider or unrelated: denied, naming both, with no rule.
    let wider = ask("improve", "provide");
    assert_eq!(wider.decision, Decision::Deny);
    assert_eq!(
        wider.reason.to_string(),
        "`improve` is not within the inherited purpose `provide`"
    );
    assert!(wider.rule_ids.is_empty());
    let broader = ask("provide", "provide.personalization");
    assert_eq!(broader.decision, Decision::Deny);
    // The reverse question keeps to the ceiling too.
    let mut reverse = request("", "customer-data");
    reverse.inherited_purpose = "troubleshoot".into();
    let permitted = policy
        .permitted_purposes(&reverse)
        .unwrap_or_else(|e| panic!("{e}"));
    let purposes: Vec<&str> = permitted.purposes.iter().map(|p| &*p.purpose).collect();
    assert_eq!(purposes, ["troubleshoot", "troubleshoot.security-incident"]);
}

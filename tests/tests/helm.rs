//! The Helm chart through the real Helm engine (helm-python-sdk) and the
//! Kubernetes schemas (kubernetes-validate), by way of `helm/validate.sh`.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed setup must fail the test"
)]

use std::process::Command;

use purposegate_tests::{Run, repo_root};

fn validate(values: &[&str]) -> Run {
    Command::new(repo_root().join("helm/validate.sh"))
        .args(values.iter().map(|v| repo_root().join(v)))
        .output()
        .unwrap()
        .into()
}

#[test]
fn every_scenario_renders_lints_and_validates() {
    let run = validate(&[]);
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    for scenario in [
        "default-values.yaml",
        "tracing-values.yaml",
        "existing-policy-values.yaml",
        "no-injection-values.yaml",
        "autoscaling-values.yaml",
    ] {
        assert!(
            run.stdout
                .lines()
                .any(|l| l.starts_with("ok") && l.contains(scenario)),
            "{scenario}:\n{}",
            run.stdout
        );
    }
    assert!(run.stdout.contains("0 problem(s)"), "{}", run.stdout);
}

#[test]
fn a_broken_values_file_fails_naming_the_field() {
    let run = validate(&["tests/fixtures/helm/broken-values.yaml"]);
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("/replicaCount"), "{}", run.stdout);
    assert!(
        run.stdout.contains("/injection/failurePolicy"),
        "{}",
        run.stdout
    );

    let run = validate(&["tests/fixtures/helm/invalid-object-values.yaml"]);
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("Deployment")
            && run
                .stdout
                .contains("requiredDuringSchedulingIgnoredDuringExecution"),
        "{}",
        run.stdout
    );
}

//! The Python client in `examples/python/` (grpcio, installed by `.ci/test`
//! from PyPI) against the real server.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed setup must fail the test"
)]

use std::process::Command;

use purposegate_tests::{Run, ServerProcess, TempDir, repo_root};

fn python_check(server: &ServerProcess, args: &[&str]) -> Run {
    Command::new("python3")
        .arg(repo_root().join("examples/python/check.py"))
        .args(["--target", &server.addr.to_string()])
        .args(args)
        .output()
        .unwrap()
        .into()
}

/// The example run three times with a temp folder of its own (Python's
/// `tempfile` honours `TMPDIR`) leaves that folder empty: other tests that
/// run the example at the same time cannot be counted in.
#[test]
fn the_python_client_leaves_nothing_behind() {
    let server = ServerProcess::start(&["--decision-log", "off"]);
    let tmp = TempDir::new("python-tmp");
    for _ in 0..3 {
        let run: Run = Command::new("python3")
            .arg(repo_root().join("examples/python/check.py"))
            .args(["--target", &server.addr.to_string()])
            .args(["--purpose", "provide", "--category", "customer-data"])
            .env("TMPDIR", tmp.path())
            .output()
            .unwrap()
            .into();
        assert_eq!(run.code, Some(0), "{run:?}");
    }
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "the example left {left:?} behind");
}

#[test]
fn the_python_client_gets_decisions_from_the_server() {
    let server = ServerProcess::start(&["--decision-log", "off"]);

    let permit = python_check(
        &server,
        &[
            "--purpose",
            "provide",
            "--category",
            "customer-data",
            "--request-id",
            "py-1",
        ],
    );
    assert_eq!(permit.code, Some(0), "{permit:?}");
    let json: serde_json::Value = serde_json::from_str(&permit.stdout).unwrap();
    assert_eq!(json["decision"], "PERMIT");
    assert_eq!(json["ruleIds"], serde_json::json!(["online-services"]));
    assert_eq!(json["requestId"], "py-1");

    let deny = python_check(
        &server,
        &[
            "--purpose",
            "professional-services.consulting",
            "--category",
            "professional-services-data",
            "--tenant",
            "fabrikam",
            "--owner-tenant",
            "contoso",
        ],
    );
    assert_eq!(deny.code, Some(3), "{deny:?}");
    let json: serde_json::Value = serde_json::from_str(&deny.stdout).unwrap();
    assert_eq!(json["decision"], "DENY");
    assert_eq!(
        json["ruleIds"],
        serde_json::json!(["no-cross-customer-delivery"])
    );

    // The policy's spelling of a de-identification state, and the API's.
    for spelling in ["anonymized", "ANONYMIZED"] {
        let lbo = python_check(
            &server,
            &[
                "--purpose",
                "lbo.billing",
                "--category",
                "diagnostic-data",
                "--deidentification",
                spelling,
            ],
        );
        assert_eq!(lbo.code, Some(0), "{spelling}: {lbo:?}");
    }
    let wrong = python_check(
        &server,
        &[
            "--purpose",
            "provide",
            "--category",
            "customer-data",
            "--deidentification",
            "hidden",
        ],
    );
    assert_eq!(wrong.code, Some(2), "{wrong:?}");
    assert!(
        wrong.stderr.contains("is not a de-identification state"),
        "{wrong:?}"
    );
    assert!(!wrong.stderr.contains("Traceback"), "{wrong:?}");

    let invalid = python_check(&server, &["--purpose", "", "--category", "customer-data"]);
    assert_eq!(invalid.code, Some(1), "{invalid:?}");
    assert!(invalid.stderr.contains("INVALID_ARGUMENT"), "{invalid:?}");
    assert!(
        invalid.stderr.contains("field `purpose` must not be empty"),
        "{invalid:?}"
    );
}

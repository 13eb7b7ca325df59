//! `diff` as the tests run it: its JSON report, the cells it says widen,
//! and each example asked again of `check` under both policies.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test support: a failed setup must fail the test that asked for it"
)]

use serde_json::Value;

use crate::{Run, server_cli};

/// `diff --format json OLD NEW`: the run and the report.
pub fn diff_json(old: &str, new: &str) -> (Run, Value) {
    let run = server_cli(&["diff", "--format", "json", old, new], None);
    let report = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run:?}"));
    (run, report)
}

/// The widened cells of a diff report, as `purpose x category`.
pub fn widened(report: &Value) -> Vec<String> {
    let mut cells: Vec<String> = report["cells"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c.get("newlyPermitted").is_some())
        .map(|c| {
            format!(
                "{} x {}",
                c["purpose"].as_str().unwrap(),
                c["category"].as_str().unwrap()
            )
        })
        .collect();
    cells.sort();
    cells
}

/// Every widened cell's example is permitted by NEW and refused by OLD:
/// asked again of `check` on both policies.
pub fn confirm_examples(report: &Value, old: &str, new: &str) {
    for cell in report["cells"].as_array().unwrap() {
        let Some(example) = cell.get("newlyPermitted") else {
            continue;
        };
        let request = example["request"].to_string();
        let decide = |policy: &str| -> String {
            let run = server_cli(
                &["check", "--policy", policy, "--json", "-"],
                Some(&request),
            );
            assert_eq!(run.code, Some(0), "{run:?}");
            let answer: Value = serde_json::from_str(&run.stdout).unwrap();
            answer["decision"].as_str().unwrap().to_string()
        };
        assert_eq!(decide(new), "PERMIT", "{cell}");
        assert_ne!(decide(old), "PERMIT", "{cell}");
        assert_eq!(example["new"], "PERMIT");
        assert_ne!(example["old"], "PERMIT");
    }
}

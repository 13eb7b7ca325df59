#![allow(clippy::panic, reason = "a failed setup must fail the test")]

//! purposegate, Cedar and Rego decide the same generated requests alike,
//! so timing them side by side compares like with like.
//! (`cargo test -p purposegate-bench`; not part of the default test run.)

use purposegate_bench::{peers, requests};
use purposegate_engine::default_policy;

#[test]
fn all_three_engines_agree_on_500_generated_requests_covering_every_rule() {
    let policy = default_policy::load().unwrap_or_else(|d| panic!("{d}"));
    for seed in [1, 2, 3] {
        let generated = requests::generate(500, seed);
        let permits = peers::agreement(&policy, &generated).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            permits > 50 && permits < 450,
            "seed {seed}: {permits} permits of 500"
        );
    }
}

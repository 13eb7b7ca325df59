//! `purposegate-bench`: measures purposegate side by side with Cedar and
//! Rego on this machine, in one run, and writes `bench/results/latest.json`,
//! the SVG plots beside it and `BENCHMARKS.md`.
//!
//!     cargo run --release -p purposegate-bench
//!
//! `purposegate-bench cache` (or `engines`, `scaling`, `network`) measures
//! one part only and prints it, writing nothing: for working on that part.
//!
//! It first checks that the three engines agree on every generated request
//! (and stops if they do not: timing engines that decide differently would
//! compare nothing).

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::cast_precision_loss,
    reason = "a benchmark prints its progress and plots counts as floats"
)]

mod cachehit;
mod h2load;
mod net;
mod report;
mod scaling;

use std::path::PathBuf;
use std::process::ExitCode;

use purposegate_bench::peers::{Cedar, Rego};
use purposegate_bench::requests;
use purposegate_bench::timing::{Sample, per_op};
use purposegate_engine::default_policy;

/// Requests the engines must agree on before anything is timed.
const AGREEMENT_REQUESTS: usize = 2000;
/// Requests timed per engine.
const TIMED_REQUESTS: usize = 200;

/// The three engines: agreement on every generated request, then one
/// decision each on the same requests. The permits counted, and the samples.
fn engines(policy: &purposegate_engine::Policy) -> Result<(usize, Vec<Sample>), String> {
    let cedar = Cedar::new(policy)?;
    let mut rego = Rego::new(policy)?;

    // 1. Agreement.
    let all = requests::generate(AGREEMENT_REQUESTS, 7);
    let permits = purposegate_bench::peers::agreement(policy, &all)?;
    println!(
        "agreement: purposegate, Cedar and Rego decide all {AGREEMENT_REQUESTS} requests alike ({permits} permits); every rule is reached"
    );

    // 2. One decision, each engine, the same requests.
    let timed: Vec<_> = all.iter().take(TIMED_REQUESTS).cloned().collect();
    let rounds = 15;
    let mut ours: Vec<_> = timed.clone();
    let engine = Sample::new(
        "purposegate",
        per_op(&mut ours, rounds, 64, |r| {
            std::hint::black_box(policy.evaluate(std::hint::black_box(r)));
        }),
    );
    // The same decisions with the reason put into words, as the server
    // does for every answer it sends.
    let mut worded: Vec<_> = timed.clone();
    let engine_words = Sample::new(
        "purposegate, reason in words",
        per_op(&mut worded, rounds, 64, |r| {
            std::hint::black_box(policy.evaluate(std::hint::black_box(r)).reason.to_string());
        }),
    );
    let mut cedar_requests = timed
        .iter()
        .map(|r| cedar.request(r))
        .collect::<Result<Vec<_>, _>>()?;
    let cedar_sample = Sample::new(
        "Cedar",
        per_op(&mut cedar_requests, rounds, 16, |r| {
            std::hint::black_box(cedar.allows(std::hint::black_box(r)));
        }),
    );
    let mut rego_inputs = timed
        .iter()
        .map(Rego::input)
        .collect::<Result<Vec<_>, _>>()?;
    let mut rego_errors = 0usize;
    let rego_sample = Sample::new(
        "Rego (regorus)",
        per_op(&mut rego_inputs, rounds, 4, |input| {
            if rego.allows(std::hint::black_box(input)).is_err() {
                rego_errors += 1;
            }
        }),
    );
    if rego_errors > 0 {
        return Err(format!(
            "{rego_errors} Rego evaluations failed while timing"
        ));
    }
    for s in [&engine, &engine_words, &cedar_sample, &rego_sample] {
        println!(
            "{:>16}: median {:>8.0} ns, p99 {:>8.0} ns ({} runs)",
            s.name, s.median_ns, s.p99_ns, s.runs
        );
    }
    Ok((
        permits,
        vec![engine, engine_words, cedar_sample, rego_sample],
    ))
}

/// One part of the run, printed, nothing written.
fn run_part(part: &str) -> Result<(), String> {
    match part {
        "cache" => cachehit::run().map(drop),
        "scaling" => scaling::run().map(drop),
        "network" => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?
            .block_on(net::run())
            .map(drop),
        "engines" => engines(&default_policy::load().map_err(|d| d.to_string())?).map(drop),
        other => Err(format!(
            "no part `{other}`: say cache, engines, scaling or network (or nothing, for the whole run)"
        )),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("purposegate-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    if let Some(part) = std::env::args().nth(1) {
        return run_part(&part);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let policy = default_policy::load().map_err(|d| d.to_string())?;
    let (permits, engines) = engines(&policy)?;

    // 3. Scaling.
    let scaling = scaling::run()?;

    // 4. The sidecar's cache hit, in process.
    let cache_hit = cachehit::run()?;

    // 5. Over the network: server, sidecar, memory.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let network = runtime.block_on(net::run())?;

    report::write(
        &root,
        &report::Report {
            agreement_requests: AGREEMENT_REQUESTS,
            agreement_permits: permits,
            engines,
            scaling,
            cache_hit,
            network,
        },
    )
}

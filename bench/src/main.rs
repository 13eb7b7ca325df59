//! `purposegate-bench`: measures purposegate side by side with Cedar and
//! Rego on this machine, in one run, and writes `bench/results/latest.json`,
//! the SVG plots beside it and `BENCHMARKS.md`.
//!
//!     cargo run --release -p purposegate-bench
//!
//! `purposegate-bench cache` (or `engines`, `decide`, `scaling`, `network`) measures
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
mod choices;
mod fairness;
mod fanout;
mod h2load;
mod held;
mod instructions;
mod net;
mod report;
mod scaling;

use std::path::PathBuf;
use std::process::ExitCode;

use purposegate_bench::peers::{Cedar, Rego};
use purposegate_bench::requests;
use purposegate_bench::timing::{Sample, per_op, reference};
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

/// Pins the calling thread to the machine's last core; whether it could.
fn pin_to_one_core() -> bool {
    core_affinity::get_core_ids()
        .and_then(|cores| cores.last().copied())
        .is_some_and(core_affinity::set_for_current)
}

/// One part of the run, printed, nothing written.
fn run_part(part: &str) -> Result<(), String> {
    if !matches!(part, "network" | "held" | "fairness" | "choices" | "fanout") {
        pin_to_one_core();
    }
    match part {
        "cache" => cachehit::run().map(drop),
        "scaling" => scaling::run().map(drop),
        "network" => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?
            .block_on(net::run())
            .map(drop),
        "fairness" => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?
            .block_on(fairness::run())
            .map(drop),
        "choices" => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?
            .block_on(choices::run())
            .map(drop),
        "fanout" => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?
            .block_on(fanout::run())
            .map(drop),
        "held" => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?
            .block_on(async {
                let server = purposegate_tests::ServerProcess::start(&["--decision-log", "off"]);
                held::run(&server).await
            })
            .map(drop),
        "engines" => engines(&default_policy::load().map_err(|d| d.to_string())?).map(drop),
        "decide" => {
            // Only purposegate's decisions on the timed mix: the part to
            // run under a profiler (callgrind counts its instructions).
            let policy = default_policy::load().map_err(|d| d.to_string())?;
            let mut timed: Vec<_> = requests::generate(AGREEMENT_REQUESTS, 7)
                .into_iter()
                .take(TIMED_REQUESTS)
                .collect();
            let sample = Sample::new(
                "purposegate",
                per_op(&mut timed, 15, 64, |r| {
                    std::hint::black_box(policy.evaluate(std::hint::black_box(r)));
                }),
            );
            println!(
                "purposegate: median {:.0} ns, p99 {:.0} ns ({} runs)",
                sample.median_ns, sample.p99_ns, sample.runs
            );
            Ok(())
        }
        "instructions" => instructions::run().map(drop),
        // What `instructions` runs under callgrind: N decisions.
        "decide-count" => {
            let n = std::env::args()
                .nth(2)
                .and_then(|n| n.parse().ok())
                .ok_or("decide-count N: how many decisions")?;
            let mix: Vec<_> = requests::generate(AGREEMENT_REQUESTS, 7)
                .into_iter()
                .take(TIMED_REQUESTS)
                .collect();
            instructions::decide(&mix, n)
        }
        other => Err(format!(
            "no part `{other}`: say cache, engines, decide, scaling, network, fairness, choices, fanout, held or instructions (or nothing, for the whole run)"
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
    // The in-process parts run on one core: a thread the scheduler moves
    // between cores starts cold on the new one, and here that alone made
    // the same decision's median jump between about 270 and 460 ns from
    // one run to the next. Cedar and regorus are timed on the same core.
    let in_process = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let pinned = pin_to_one_core();
                // The machine's speed, gauged before and after each part.
                let mut machine = vec![reference("before the engines")];
                let (permits, engines) = engines(&policy)?;
                machine.push(reference("after the engines"));
                // 3. Scaling.
                let scaling = scaling::run()?;
                // 4. The sidecar's cache hit, in process.
                let cache_hit = cachehit::run()?;
                Ok::<_, String>((pinned, machine, permits, engines, scaling, cache_hit))
            })
            .join()
            .map_err(|_| "the in-process parts stopped".to_string())?
    });
    let (pinned, mut machine, permits, engines, scaling, cache_hit) = in_process?;
    println!("in-process parts pinned to one core: {pinned}");

    // 5. Over the network: server, sidecar, memory.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    machine.push(reference("before the network parts"));
    let network = runtime.block_on(net::run())?;
    let fairness = runtime.block_on(fairness::run())?;
    let choices = runtime.block_on(choices::run())?;
    let fanout = runtime.block_on(fanout::run())?;
    let instructions = if instructions::available() {
        Some(instructions::run()?)
    } else {
        println!("instructions: not counted, valgrind is not installed");
        None
    };
    machine.push(reference("after the network parts"));
    for m in &machine {
        println!("reference work {}: median {:.0} ns", m.name, m.median_ns);
    }

    report::write(
        &root,
        &report::Report {
            agreement_requests: AGREEMENT_REQUESTS,
            agreement_permits: permits,
            engines,
            scaling,
            cache_hit,
            network,
            fairness,
            choices,
            fanout,
            instructions,
            machine,
        },
    )
}

//! `purposegate-baseline`: one of the benchmark's baselines as a process of
//! its own, on a free loopback port it names in a JSON line on stderr
//! (`{"addr":"127.0.0.1:PORT"}`), as purposegate's own binaries do.
//!
//!     purposegate-baseline bare
//!     purposegate-baseline pass-through UPSTREAM_ADDR
//!     purposegate-baseline firehose
//!
//! `bare` answers every Check with what the default policy answers the
//! benchmark's request, in the same bytes the server would send.

#![allow(
    clippy::print_stderr,
    reason = "the bound address goes to stderr, where the harness reads it"
)]

use std::process::ExitCode;

use purposegate_bench::baseline;
use purposegate_engine::default_policy;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `--log-format json`, which the harness passes every binary, is how
    // this one speaks anyway.
    let words: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "--log-format" && *a != "json")
        .collect();
    match run(&words) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("purposegate-baseline: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(words: &[&str]) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        match words {
            ["bare"] => {
                let policy = default_policy::load().map_err(|d| d.to_string())?;
                let request =
                    purposegate_proto::convert::request(baseline::check_request_from("crm"), "")
                        .map_err(|e| e.to_string())?;
                let answer = purposegate_proto::convert::response(policy.evaluate(&request));
                eprintln!("{{\"addr\":\"{addr}\"}}");
                baseline::bare(listener, answer).await;
            }
            ["firehose"] => {
                eprintln!("{{\"addr\":\"{addr}\"}}");
                baseline::firehose(listener).await;
            }
            ["pass-through", upstream] => {
                let upstream = upstream
                    .parse()
                    .map_err(|e| format!("UPSTREAM `{upstream}`: {e}"))?;
                eprintln!("{{\"addr\":\"{addr}\"}}");
                baseline::pass_through(listener, upstream).await;
            }
            _ => {
                return Err(
                    "say `bare` or `pass-through UPSTREAM_ADDR` (e.g. 127.0.0.1:50061)".into(),
                );
            }
        }
        Ok(())
    })
}

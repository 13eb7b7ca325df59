//! `purposegate-server`: the decision server and the policy tools.
//!
//! Exit codes: 0 success; 1 an invalid policy, case file or request, or a
//! failing test case; 2 a usage error (from clap); 3 `check --enforce` on a
//! decision other than PERMIT.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::run(args)
}

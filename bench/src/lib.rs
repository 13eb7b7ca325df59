//! The benchmark harness: the default policy in purposegate, Cedar and
//! Rego, a generator of requests that covers every rule, and timing
//! helpers. Run it with `cargo run --release -p purposegate-bench`.

#![allow(
    clippy::print_stdout,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a benchmark prints its progress and turns counts into plotted floats"
)]

pub mod baseline;
pub mod peers;
pub mod requests;
pub mod timing;

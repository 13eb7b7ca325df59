#![allow(
    clippy::panic,
    reason = "test support: a failed setup must fail the test that asked for it"
)]
//! Helpers for the cross-binary tests: find the real binaries the workspace
//! built, run them, and read what they print.
//!
//! The binaries come from `cargo build --workspace --bins`, which `.ci/test`
//! runs before the tests; a test that cannot find one fails saying so.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

pub mod app;
pub mod attacks;
mod clients;
pub mod contexts;
pub mod decision_log;
pub mod diffs;
pub mod docs;
pub mod explorer;
mod fixtures;
pub mod floods;
mod peers;
mod pki;
pub mod postgres;
mod process;
pub mod python_apps;

pub use clients::*;
pub use fixtures::*;
pub use peers::*;
pub use pki::*;
pub use process::*;

//! purposegate's decision server: the gRPC decision API over the policy
//! engine (`purposegate-engine`, re-exported as [`engine`]), its reloads,
//! decision log, explorer and webhook, and the command line that validates,
//! tests and queries policies.

pub use purposegate_engine as engine;

pub mod audit;
pub mod authzen;
pub mod choices;
pub mod decide;
pub mod diff_report;
pub mod explorer;
pub mod grpc;
pub mod metrics;
pub mod policy_files;
pub mod purpose_context;
pub mod reload;
pub mod replay;
pub mod serve;
pub mod signing;
pub mod store;
pub mod webhook;
pub mod work;

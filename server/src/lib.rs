//! purposegate's decision server: the policy engine ([`engine`]) and the
//! command line that validates, tests and queries policies.

pub mod audit;
pub mod engine;
pub mod explorer;
pub mod grpc;
pub mod listen;
pub mod log;
pub mod metrics;
pub mod policy_files;
pub mod reload;
pub mod serve;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod units;
pub mod webhook;

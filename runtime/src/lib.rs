//! What every purposegate binary runs on, and nothing of what it decides:
//! logging, start and stop (signals, drain), the one accept path of every
//! port (caps, timeouts, reloading TLS), OpenTelemetry export, gRPC health
//! and reflection, and small HTTP faces as axum routers.
//!
//! **Architecture Invariant:** this crate knows neither the policy engine
//! nor the `purposegate.v1` API: whatever a span or a log line says about a
//! decision, the caller builds. `tests/architecture.rs` checks it from the
//! manifests.

pub mod grpc;
pub mod http;
pub mod listen;
pub mod log;
pub mod process;
pub mod shares;
pub mod telemetry;
pub mod tls;
pub mod units;

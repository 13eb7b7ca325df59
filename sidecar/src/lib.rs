//! The policy enforcement point beside a data service. Every face (proxy,
//! Envoy ext_authz, local decision API) asks the same [`gate::Gate`]: the
//! decision cache, then the PDP. Fail closed: only an answered PERMIT lets
//! data through. A library so the benchmark can time its parts in process.

pub mod cache;
pub mod canonical;
pub mod extauthz;
pub mod gate;
pub mod headers;
pub mod inherit;
pub mod intercept;
pub mod local;
pub mod metrics;
pub mod pdp;
pub mod proxy;
pub mod reading;
pub mod refusal;
pub mod routes;
pub mod strip;
pub mod subject;
pub mod supervise;
#[cfg(test)]
mod testing;

//! The `purposegate.v1` gRPC API, generated from
//! `proto/purposegate/v1/decision.proto`.
//!
//! Generated types stay at the gRPC edge: [`convert`] turns them into the
//! policy engine's own types and back, for the server and the sidecar
//! alike, and [`limits`] bounds the decision messages both read before
//! they are decoded.

pub mod changes;
pub mod context;
pub mod convert;
pub mod limits;

/// `purposegate.v1`: messages, `DecisionServiceClient`, `DecisionServiceServer`.
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
pub mod v1 {
    tonic::include_proto!("purposegate.v1");
}

/// The encoded `FileDescriptorSet` of `purposegate/v1/decision.proto`, for
/// gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/purposegate_descriptor.bin"));

//! The `purposegate.v1` gRPC API, generated from
//! `proto/purposegate/v1/decision.proto`.
//!
//! Generated types stay at the gRPC edge: the server converts them to the
//! policy engine's own types in one place.

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

//! A `CheckRequest` off the wire: decoded, converted at the gRPC edge,
//! evaluated against the default policy and answered, as the server does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use purposegate_proto::convert;
use purposegate_proto::v1 as pb;

fuzz_target!(|data: &[u8]| {
    let Some(policy) = purposegate_fuzz::default_policy() else {
        return;
    };
    let Ok(request) = pb::CheckRequest::decode(data) else {
        return;
    };
    let Ok(request) = convert::request(request, "") else {
        return;
    };
    let response = convert::response(policy.evaluate(&request));
    let _ = response.encode_to_vec();
});

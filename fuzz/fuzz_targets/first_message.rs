//! The data subject read from a gRPC call's first request message, from
//! any bytes: no panic; a subject read is visible ASCII within the limit;
//! and whenever the sidecar reads one, a real protobuf parser (prost)
//! that accepts the message reads the same value, at field 1 and at field
//! 1 of the message in field 2.
#![no_main]

use libfuzzer_sys::fuzz_target;
use purposegate_sidecar::subject::{first_message_end, in_first_message};

#[derive(Clone, PartialEq, prost::Message)]
struct Request {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(message, optional, tag = "2")]
    inner: Option<Inner>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Inner {
    #[prost(string, tag = "1")]
    id: String,
}

fuzz_target!(|data: &[u8]| {
    let parsed = first_message_end(data)
        .and_then(|end| data.get(5..end))
        .and_then(|message| <Request as prost::Message>::decode(message).ok());
    for field in [&[1][..], &[2, 1]] {
        if let Ok(subject) = in_first_message(data, field, 1 << 16) {
            assert!(subject.len() <= purposegate_engine::MAX_SUBJECT_ID_BYTES);
            assert!(subject.bytes().all(|b| b.is_ascii_graphic()));
            if let Some(parsed) = &parsed {
                let app = match field {
                    [1] => parsed.id.as_str(),
                    _ => parsed.inner.as_ref().map_or("", |i| i.id.as_str()),
                };
                assert_eq!(app, subject, "the app would read another subject");
            }
        }
    }
});

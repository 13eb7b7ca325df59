//! A `CheckBatch` is counted before it is decoded.
//!
//! Decoding a batch builds every request in it: 4 MB of empty requests
//! (two bytes each on the wire) become two million structs, hundreds of
//! megabytes, before any handler could look at the count. [`BatchLimit`]
//! reads the call's message (bounded by the message size limit), counts
//! its `requests` field on the wire without decoding them, and refuses a
//! batch over the limit, or one it cannot count (compressed, several
//! frames, not protobuf), with `INVALID_ARGUMENT`; only a batch within it
//! reaches the service.

use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, http};

/// Largest gRPC message accepted (tonic's default decoding limit), plus
/// the frame header.
const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024 + 5;

/// Wraps the gRPC routes of a port: calls to `path` with more than `max`
/// requests are refused before decoding.
#[derive(Debug, Clone)]
pub struct BatchLimit<S> {
    inner: S,
    path: &'static str,
    max: usize,
}

impl<S> BatchLimit<S> {
    pub fn new(inner: S, path: &'static str, max: usize) -> Self {
        BatchLimit { inner, path, max }
    }
}

impl<S> Service<http::Request<Incoming>> for BatchLimit<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Incoming>) -> Self::Future {
        // The service that was made ready serves this call; a clone takes
        // its place for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        if req.uri().path() != self.path {
            let future = inner.call(req.map(Body::new));
            return Box::pin(future);
        }
        let max = self.max;
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let bytes = match Limited::new(body, MAX_MESSAGE_BYTES).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(e) => {
                    let status = if e.is::<http_body_util::LengthLimitError>() {
                        Status::resource_exhausted(format!(
                            "the batch is larger than {} bytes",
                            MAX_MESSAGE_BYTES - 5
                        ))
                    } else {
                        Status::cancelled(format!("the batch did not arrive whole: {e}"))
                    };
                    return Ok(status.into_http());
                }
            };
            // What cannot be counted is not decoded either: a second frame
            // behind the first (which tonic would drain after decoding) or a
            // compressed one could carry any number of requests.
            match count_requests(&bytes) {
                Some(count) if count > max => {
                    return Ok(Status::invalid_argument(format!(
                        "field `requests` holds {count} requests; at most {max} are accepted (--max-batch)"
                    ))
                    .into_http());
                }
                Some(_) => {}
                None => {
                    return Ok(Status::invalid_argument(
                        "a CheckBatch must be one uncompressed protobuf message",
                    )
                    .into_http());
                }
            }
            inner
                .call(http::Request::from_parts(
                    parts,
                    Body::new(Full::new(bytes)),
                ))
                .await
        })
    }
}

/// How many `requests` (field 1) the one uncompressed gRPC message in
/// `body` holds; `None` when it cannot be counted (compressed, several
/// messages, not protobuf), and then it is refused.
pub fn count_requests(body: &[u8]) -> Option<usize> {
    let mut frame = body;
    if frame.remaining() < 5 || frame.get_u8() != 0 {
        return None;
    }
    let len = usize::try_from(frame.get_u32()).ok()?;
    if frame.len() != len {
        return None;
    }
    let mut message = Bytes::copy_from_slice(frame);
    let mut count = 0;
    while message.has_remaining() {
        let key = prost::encoding::decode_varint(&mut message).ok()?;
        let (field, wire_type) = (key >> 3, key & 7);
        match wire_type {
            0 => {
                prost::encoding::decode_varint(&mut message).ok()?;
            }
            1 | 5 => {
                let skip = if wire_type == 1 { 8 } else { 4 };
                if message.remaining() < skip {
                    return None;
                }
                message.advance(skip);
            }
            2 => {
                let len =
                    usize::try_from(prost::encoding::decode_varint(&mut message).ok()?).ok()?;
                if message.remaining() < len {
                    return None;
                }
                message.advance(len);
                if field == 1 {
                    count += 1;
                }
            }
            _ => return None,
        }
    }
    Some(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use purposegate_proto::v1 as pb;

    fn framed(message: &[u8]) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    #[test]
    fn requests_are_counted_on_the_wire() {
        let batch = pb::CheckBatchRequest {
            requests: vec![
                pb::CheckRequest {
                    purpose: "provide".into(),
                    ..Default::default()
                };
                3
            ],
        };
        assert_eq!(count_requests(&framed(&batch.encode_to_vec())), Some(3));
        // Two million empty requests: `0a 00` each, counted, not built.
        let bomb: Vec<u8> = [0x0a, 0x00].repeat(2_000_000);
        assert_eq!(count_requests(&framed(&bomb)), Some(2_000_000));
        assert_eq!(count_requests(&framed(&[])), Some(0));
    }

    #[test]
    fn what_cannot_be_counted_is_seen() {
        assert_eq!(count_requests(&[1, 0, 0, 0, 0]), None, "compressed");
        assert_eq!(count_requests(&framed(&[0x0a, 0x05, 1])), None, "short");
        assert_eq!(count_requests(&framed(&[0x0f])), None, "bad wire type");
        assert_eq!(count_requests(&[0, 0, 0]), None, "no frame");
    }
}

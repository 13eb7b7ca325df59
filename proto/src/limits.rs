//! Unary calls are read within limits before anything is decoded.
//!
//! Decoding builds every value a message holds: 4 MB of empty batch items
//! (two bytes each on the wire) become two million structs, hundreds of
//! megabytes, before a handler could look at the count. [`MessageLimits`]
//! wraps a port's gRPC routes and, for the unary methods it is told about,
//! reads the call's one message itself:
//!
//! 1. the frame header first: a compressed message, or one longer than the
//!    method's limit, is refused before its bytes are read;
//! 2. room for it in a budget shared by every call on the port (a wait of
//!    at most [`BUDGET_WAIT`], then `RESOURCE_EXHAUSTED`), held until the
//!    call is answered, so the bytes being read and decoded at once are
//!    bounded however many calls arrive;
//! 3. the message, and nothing after it (a second frame is refused);
//! 4. for a batch, its `requests` counted on the wire, refused past the
//!    limit.
//!
//! Only then is the message decoded, by the service as usual. Other
//! methods (streams, reflection, health) pass through untouched.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, http};

/// How long a call waits for room in the budget before it is refused.
pub const BUDGET_WAIT: Duration = Duration::from_secs(2);

/// The limits of one unary method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodLimit {
    /// `/package.Service/Method`.
    pub path: &'static str,
    /// Largest message, in bytes.
    pub max_bytes: usize,
    /// For a batch: most `requests` (field 1) it may hold.
    pub max_requests: Option<usize>,
}

/// Wraps the gRPC routes of a port: the methods in `limits` are read and
/// checked before they are decoded.
#[derive(Debug, Clone)]
pub struct MessageLimits<S> {
    inner: S,
    limits: Arc<[MethodLimit]>,
    /// Bytes of messages being read or answered at once, in KiB.
    budget: Arc<Semaphore>,
}

impl<S> MessageLimits<S> {
    /// `budget_bytes`: how many bytes of messages may be held at once.
    pub fn new(inner: S, limits: &[MethodLimit], budget_bytes: usize) -> Self {
        MessageLimits {
            inner,
            limits: limits.into(),
            budget: Arc::new(Semaphore::new(kib(budget_bytes))),
        }
    }
}

fn kib(bytes: usize) -> usize {
    bytes.div_ceil(1024).max(1)
}

impl<S> Service<http::Request<Incoming>> for MessageLimits<S>
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
        let Some(limit) = self
            .limits
            .iter()
            .find(|l| l.path == req.uri().path())
            .copied()
        else {
            let future = inner.call(req.map(Body::new));
            return Box::pin(future);
        };
        let budget = self.budget.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let (message, _room) = match read_message(body, limit.max_bytes, &budget).await {
                Ok(read) => read,
                Err(status) => return Ok(status.into_http()),
            };
            if let Some(max) = limit.max_requests {
                match count_requests(&message) {
                    Some(count) if count > max => {
                        return Ok(Status::invalid_argument(format!(
                            "field `requests` holds {count} requests; at most {max} are accepted (--max-batch)"
                        ))
                        .into_http());
                    }
                    Some(_) => {}
                    None => {
                        return Ok(Status::invalid_argument(
                            "the batch is not a protobuf message that can be read",
                        )
                        .into_http());
                    }
                }
            }
            // `_room` stays held until the call is answered.
            inner
                .call(http::Request::from_parts(
                    parts,
                    Body::new(Full::new(message)),
                ))
                .await
        })
    }
}

/// Reads the one uncompressed gRPC message of a unary call, at most
/// `max_bytes` long, with room for it in `budget`: the framed message and
/// the room.
async fn read_message(
    mut body: Incoming,
    max_bytes: usize,
    budget: &Arc<Semaphore>,
) -> Result<(Bytes, OwnedSemaphorePermit), Status> {
    let mut buf = BytesMut::new();
    let mut room: Option<OwnedSemaphorePermit> = None;
    let mut expected: Option<usize> = None;
    loop {
        if let (None, Some(mut header)) = (expected, buf.get(..5)) {
            let compressed = header.get_u8() != 0;
            let len = usize::try_from(header.get_u32()).unwrap_or(usize::MAX);
            if compressed {
                return Err(Status::unimplemented(
                    "compressed messages are not accepted; send them uncompressed",
                ));
            }
            if len > max_bytes {
                return Err(Status::out_of_range(format!(
                    "the message is {len} bytes; at most {max_bytes} are accepted"
                )));
            }
            let permits = u32::try_from(kib(len + 5)).unwrap_or(u32::MAX);
            match tokio::time::timeout(BUDGET_WAIT, budget.clone().acquire_many_owned(permits))
                .await
            {
                Ok(Ok(permit)) => room = Some(permit),
                _ => {
                    return Err(Status::resource_exhausted(
                        "too many messages are being read at once; try again",
                    ));
                }
            }
            expected = Some(len + 5);
        }
        if let Some(total) = expected {
            if buf.len() > total {
                return Err(Status::invalid_argument(
                    "a unary call carries one message; this one has more",
                ));
            }
        }
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    if buf.len() + data.len() > max_bytes + 5 + 5 {
                        return Err(Status::invalid_argument(
                            "a unary call carries one message; this one has more",
                        ));
                    }
                    buf.extend_from_slice(&data);
                }
            }
            Some(Err(e)) => {
                return Err(Status::cancelled(format!(
                    "the message did not arrive whole: {e}"
                )));
            }
            None => break,
        }
    }
    match (expected, room) {
        (Some(total), Some(room)) if buf.len() == total => Ok((buf.freeze(), room)),
        _ => Err(Status::invalid_argument(
            "the call ended before its message did",
        )),
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

/// Largest `Check` message: every field at its limit fits (about 110 KiB).
pub const MAX_CHECK_BYTES: usize = 128 * 1024;
/// Largest `CheckBatch` message: about 1,000 typical requests.
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// The largest `PolicyInfo` a client of ours reads (`GetPolicy`,
/// `WatchPolicy`): a policy at the server's 16 MiB limit, with its rule
/// texts, fits; gRPC's default of 4 MiB would cut off a sidecar from a
/// policy of 100,000 purposes (4 MB).
pub const MAX_POLICY_INFO_BYTES: usize = 64 * 1024 * 1024;
/// Bytes of `Check` and `CheckBatch` messages a port reads and answers at
/// once; calls beyond it wait (briefly) for room.
pub const MESSAGE_BUDGET_BYTES: usize = 8 * 1024 * 1024;

/// The limits of `Check` and `CheckBatch` on a port with `max_batch`.
pub fn decision_limits(max_batch: usize) -> [MethodLimit; 6] {
    let choices = |path| MethodLimit {
        path,
        max_bytes: MAX_CHECK_BYTES,
        max_requests: None,
    };
    [
        choices("/purposegate.v1.ChoicesService/RecordChoice"),
        choices("/purposegate.v1.ChoicesService/GetChoices"),
        choices("/purposegate.v1.ChoicesService/ChoiceHistory"),
        MethodLimit {
            path: "/purposegate.v1.DecisionService/Check",
            max_bytes: MAX_CHECK_BYTES,
            max_requests: None,
        },
        MethodLimit {
            path: "/purposegate.v1.DecisionService/PermittedPurposes",
            max_bytes: MAX_CHECK_BYTES,
            max_requests: None,
        },
        MethodLimit {
            path: "/purposegate.v1.DecisionService/CheckBatch",
            max_bytes: MAX_BATCH_BYTES,
            max_requests: Some(max_batch),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1 as pb;
    use prost::Message;

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

//! The first request message of a gRPC call, read before deciding when
//! its route reads the data subject there (`grpcField`): the body's
//! frames until the message is whole, within `--max-first-message-bytes`
//! and `--header-read-timeout`. The bytes read go on to the app first,
//! exactly as they came.

use std::time::Duration;

use bytes::Bytes;
use hyper::Request;
use hyper::body::{Frame, Incoming};

use super::BodyLook;
use crate::refusal::Refusal;
use crate::subject;

/// Reads `req`'s body into `look.first` until its first message is whole,
/// its prefix says it is over `max` bytes, or the body ends (what is read
/// is then judged, and refused, as it is). Refused when the call is not
/// binary protobuf, the body breaks or the message does not come within
/// `within`; what was read is kept in `look.first` all the same (so
/// `--dry-run` forwards the body whole).
pub(super) async fn read(
    req: &mut Request<Incoming>,
    look: &mut BodyLook,
    max: usize,
    within: Duration,
) -> Result<(), Refusal> {
    let content_type = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .map_or(&b""[..], |v| v.as_bytes());
    subject::readable_content_type(content_type).map_err(Refusal::refused)?;
    let mut read: Vec<u8> = match look.first.take().map(Frame::into_data) {
        Some(Ok(data)) => data.to_vec(),
        Some(Err(_)) | None => Vec::new(),
    };
    let whole = |read: &[u8]| {
        subject::first_message_end(read)
            .is_some_and(|end| read.len() >= end || end.saturating_sub(5) > max)
    };
    let present = look.present;
    let outcome = tokio::time::timeout(within, async {
        while present && !whole(&read) {
            match http_body_util::BodyExt::frame(req.body_mut()).await {
                None => break,
                Some(Err(e)) => {
                    return Err(Refusal::refused(format!(
                        "the call's body broke before its first request message was read: {e}"
                    )));
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => read.extend_from_slice(&data),
                    // Trailers before the message was whole: it never
                    // will be, and is judged cut short.
                    Err(_) => break,
                },
            }
        }
        Ok(())
    })
    .await;
    if !read.is_empty() {
        look.first = Some(Frame::data(Bytes::from(read)));
    }
    match outcome {
        Err(_) => Err(Refusal::idle(format!(
            "the first request message did not come within {within:?} (--header-read-timeout); the call is refused"
        ))),
        Ok(outcome) => outcome,
    }
}

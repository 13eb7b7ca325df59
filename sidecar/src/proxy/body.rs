//! The two bodies of a forwarded call, both under its supervisor: the
//! request body on its way to the app ([`GuardedRequest`]) and the response
//! body on its way back ([`ProxyBody`]). Each frame counts as progress (the
//! idle timeout); each ends the call when the supervisor says so; each
//! holds the call's place among those in flight.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use purposegate_runtime::shares::Share;

use super::reply::refusal_trailers;
use crate::supervise::{Revoked, Supervised};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The caller's request body on its way to the app: nothing at all when
/// the call carries none (so the app is sent no framing to misread),
/// otherwise the caller's bytes; fails once the call is ended (so the
/// app's stream is reset, or its connection closed), and drops from
/// trailers what the app must not read there ([`crate::strip`]).
#[derive(Debug)]
pub struct GuardedRequest {
    /// `None`: the call has no body.
    body: Option<Incoming>,
    /// A frame the proxy read before deciding, sent first.
    first: Option<Frame<Bytes>>,
    supervised: Supervised,
    /// The call's place among those in flight, held while either
    /// direction is open.
    _place: Arc<Share>,
}

impl GuardedRequest {
    /// `body`: the caller's body, after the frame read before deciding;
    /// `None` when the call has none.
    pub fn new(
        body: Option<(Option<Frame<Bytes>>, Incoming)>,
        supervised: Supervised,
        place: Arc<Share>,
    ) -> Self {
        let (first, body) = match body {
            Some((first, body)) => (first, Some(body)),
            None => (None, None),
        };
        GuardedRequest {
            body,
            first,
            supervised,
            _place: place,
        }
    }

    /// A frame of the caller's on its way: progress, and trailers without
    /// what the app must not read there.
    fn pass(&self, frame: Frame<Bytes>) -> Frame<Bytes> {
        self.supervised.moved();
        match frame.into_trailers() {
            Ok(mut trailers) => {
                crate::strip::request_trailers(&mut trailers);
                Frame::trailers(trailers)
            }
            Err(frame) => frame,
        }
    }
}

impl Body for GuardedRequest {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.body.is_none() {
            return Poll::Ready(None);
        }
        if let Poll::Ready(refusal) = this.supervised.poll_ended(cx) {
            return Poll::Ready(Some(Err(Box::new(Revoked(refusal.reason)))));
        }
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(this.pass(first))));
        }
        let Some(body) = this.body.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(this.pass(frame)))),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.body.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let first = self
            .first
            .as_ref()
            .and_then(Frame::data_ref)
            .map_or(0, |data| bytes::Buf::remaining(data) as u64);
        let rest = self
            .body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint);
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(first));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(first));
        }
        hint
    }
}

/// A response the proxy sends: the app's, streamed and supervised, or its
/// own.
#[derive(Debug)]
pub enum ProxyBody {
    Upstream {
        body: Incoming,
        /// Ends the call when its permit no longer holds, or it idles.
        supervised: Supervised,
        /// Whether an ended call is told in gRPC trailers (gRPC over
        /// HTTP/2), rather than by a reset.
        grpc_trailers: bool,
        /// The call's place among those in flight.
        _place: Arc<Share>,
    },
    Own(Full<Bytes>),
    /// Nothing more: the call was ended.
    Ended,
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut *self {
            ProxyBody::Upstream {
                body,
                supervised,
                grpc_trailers,
                ..
            } => {
                if let Poll::Ready(refusal) = supervised.poll_ended(cx) {
                    let grpc = *grpc_trailers;
                    // Dropping the app's body resets its stream.
                    *self = ProxyBody::Ended;
                    return Poll::Ready(Some(if grpc {
                        Ok(Frame::trailers(refusal_trailers(&refusal)))
                    } else {
                        // HTTP has no way to say it mid-body: the
                        // stream (HTTP/2) or connection (HTTP/1.1) is
                        // reset.
                        Err(Box::new(Revoked(refusal.reason)))
                    }));
                }
                match Pin::new(body).poll_frame(cx) {
                    Poll::Ready(None) => {
                        *self = ProxyBody::Ended;
                        Poll::Ready(None)
                    }
                    Poll::Ready(Some(frame)) => {
                        supervised.moved();
                        Poll::Ready(Some(frame.map_err(Into::into)))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
            ProxyBody::Own(full) => Pin::new(full)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(|never| match never {}))),
            ProxyBody::Ended => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream { body, .. } => body.is_end_stream(),
            ProxyBody::Own(full) => full.is_end_stream(),
            ProxyBody::Ended => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream { body, .. } => body.size_hint(),
            ProxyBody::Own(full) => full.size_hint(),
            ProxyBody::Ended => SizeHint::with_exact(0),
        }
    }
}

//! The app's side: connections to the app, each owned by one downstream
//! connection.
//!
//! No two callers' calls share a connection to the app. A caller's calls
//! go over connections made for its own connection to the sidecar (on
//! first use, closed with it), so nothing one caller does to them (a
//! stream it stops reading, which shuts flow-control windows; a request
//! the app misreads; an error that makes the app close or GOAWAY) reaches
//! another caller's calls, and no caller can ever receive an answer to a
//! request it did not make. The cost is a connection to the app per
//! caller connection, made once and reused for as long as the caller keeps
//! its connection (gRPC channels, keep-alive clients).
//!
//! Within one caller's HTTP/2 connection to the app, a stalled stream
//! stalls only itself: the connection's window is the stream window times
//! the streams a caller may open, so no number of stalled streams shuts
//! it. Each stream holds at most [`STREAM_WINDOW`] bytes the caller has
//! not taken yet; an HTTP/1.1 connection at most [`MAX_HTTP1_BUFFER`].

use std::sync::OnceLock;
use std::time::Duration;

use hyper::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Builder, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::UpstreamProtocol;
use super::body::GuardedRequest;

/// What the app may send of one stream before the caller has taken it.
pub const STREAM_WINDOW: u32 = 16 * 1024;
/// Idle HTTP/1.1 connections to the app one caller connection keeps: one,
/// as its calls come one at a time (an HTTP/2 caller with several open at
/// once makes more, which close after their call), so a caller cannot
/// park connections (and an app's threads) by the hundred.
const IDLE_PER_CALLER: usize = 1;
/// How long an idle connection to the app is kept, checked by a timer.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response head (and read buffer) from an HTTP/1.1 app, and so
/// what one call may hold of an answer its caller has not taken (nginx
/// takes 8 KiB of response head by default).
const MAX_HTTP1_BUFFER: usize = 16 * 1024;

pub type AppClient = Client<HttpConnector, GuardedRequest>;

/// How the sidecar reaches the app: its address, its protocol, and the
/// settings of every connection to it.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub uri: Uri,
    pub protocol: UpstreamProtocol,
    connector: HttpConnector,
    http1: Builder,
    http2: Builder,
}

impl Upstream {
    /// `streams`: how many streams one caller connection may have open
    /// (`--max-concurrent-streams`); the window of each connection to the
    /// app covers them all.
    pub fn new(uri: Uri, protocol: UpstreamProtocol, streams: u32) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let mut http1 = Client::builder(TokioExecutor::new());
        http1
            .pool_max_idle_per_host(IDLE_PER_CALLER)
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .http1_max_buf_size(MAX_HTTP1_BUFFER);
        let mut http2 = Client::builder(TokioExecutor::new());
        http2
            .http2_only(true)
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .http2_initial_stream_window_size(STREAM_WINDOW)
            .http2_initial_connection_window_size(STREAM_WINDOW.saturating_mul(streams.max(1)))
            .http2_max_send_buf_size(STREAM_WINDOW as usize);
        Upstream {
            uri,
            protocol,
            connector,
            http1,
            http2,
        }
    }

    /// Whether a call goes to the app over HTTP/2.
    pub fn http2(&self, grpc: bool) -> bool {
        match self.protocol {
            UpstreamProtocol::Auto => grpc,
            UpstreamProtocol::Http1 => false,
            UpstreamProtocol::Http2 => true,
        }
    }

    /// The client of `caller`'s connections to the app in the protocol
    /// given, made on first use.
    pub fn client<'c>(&self, caller: &'c AppConnections, http2: bool) -> &'c AppClient {
        let (cell, builder) = if http2 {
            (&caller.http2, &self.http2)
        } else {
            (&caller.http1, &self.http1)
        };
        cell.get_or_init(|| builder.build(self.connector.clone()))
    }
}

/// One caller connection's connections to the app, closed when it is
/// dropped (with that connection).
#[derive(Debug, Default)]
pub struct AppConnections {
    http1: OnceLock<AppClient>,
    http2: OnceLock<AppClient>,
}

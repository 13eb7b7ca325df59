//! Every HTTP listener's limits, set once, in one accept path.
//!
//! A caller controls when it connects, how fast it sends, how long it
//! stays and how large its headers are; left alone, one caller holds
//! sockets, memory and handshake slots until real callers are locked out.
//! [`serve`] bounds each of those for every connection of a listener, in
//! the order a connection meets them:
//!
//! 1. **connection cap**, then a **cap per peer address**: past either, the
//!    connection is closed at once (and counted), so one peer cannot take
//!    every slot;
//! 2. **first-byte timeout**: a socket that sends nothing is closed before
//!    it costs a TLS handshake or a parser;
//! 3. TLS, when configured (its own handshake timeout and cap);
//! 4. the HTTP parsers: **header-read timeout** and **header size** on
//!    HTTP/1.1 (hyper needs a timer for its timeout to run at all), header
//!    list size, **streams per connection**, flow-control windows and
//!    keep-alive pings on HTTP/2;
//! 5. **idle timeout**: a connection with no call open for that long is
//!    closed gracefully, whatever it sends (a preface alone, pings, half a
//!    request head).
//!
//! On shutdown the listener stops accepting, every connection is asked to
//! close gracefully (HTTP/2 GOAWAY, HTTP/1.1 `connection: close` after the
//! call in flight), and [`Served::drained`] resolves when the last one is
//! gone.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::shares::Shares;
use crate::tls::ServerTls;
pub use activity::TrackedBody;
use activity::{Activity, Signals, Tracked, watch_connection};
use stream::Stream;

mod activity;
mod stream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The limits of one listener. Each bounds what one caller can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once; past it new ones are closed at once.
    pub max_connections: usize,
    /// Connections open at once from one peer address.
    pub max_connections_per_peer: usize,
    /// How long a new connection may stay silent before its first byte.
    pub first_byte_timeout: Duration,
    /// How long an HTTP/1.1 request head may take to arrive (also the
    /// longest wait for the next request on a kept-alive connection).
    pub header_read_timeout: Duration,
    /// How long a connection may stay open with no call in progress.
    pub idle_timeout: Duration,
    /// Largest request head (HTTP/1.1) or header list (HTTP/2), in bytes.
    pub max_header_bytes: usize,
    /// Calls open at once on one HTTP/2 connection.
    pub max_concurrent_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_connections_per_peer: 128,
            first_byte_timeout: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_header_bytes: 32 * 1024,
            max_concurrent_streams: 100,
        }
    }
}

/// HTTP/2 flow-control windows: what a caller may send that no one has
/// read yet, per stream and per connection. Small, so that bodies waiting
/// for a decision (or for a slow app) cannot pile up in memory.
const STREAM_WINDOW: u32 = 64 * 1024;
const CONNECTION_WINDOW: u32 = 256 * 1024;
/// What one HTTP/2 stream may hold of its answer that the caller's window
/// or socket has not taken (hyper's default is 400 KiB): a caller that
/// stops reading holds at most this of the sidecar's memory per call.
const SEND_BUFFER: usize = 16 * 1024;
/// HTTP/2 pings find peers that vanished without closing.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection closed for idleness may take to say goodbye
/// (HTTP/2: GOAWAY and a ping the peer may never answer).
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// The pause after a failed accept, doubling to the longest.
const ACCEPT_PAUSE_FIRST: Duration = Duration::from_millis(10);
const ACCEPT_PAUSE_MAX: Duration = Duration::from_secs(1);
/// Most header fields in one HTTP/1.1 request head.
const MAX_HEADERS: usize = 128;

/// Which HTTP versions a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocols {
    Http1,
    /// HTTP/2 with prior knowledge (gRPC).
    Http2,
    /// Both, told apart by the HTTP/2 preface.
    Both,
}

/// A connection, as the services of a listener see it.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// With mutual TLS: the subject the caller's verified certificate
    /// names (empty if it names none).
    pub subject: Option<Arc<str>>,
    /// With mutual TLS: every name the caller's verified certificate gives
    /// it (URI SANs, then DNS SANs); empty without.
    pub names: Arc<[String]>,
    /// Closes this connection (see [`Closer`]).
    pub closer: Closer,
}

/// A service's way to end its own connection: asked to close gracefully
/// (HTTP/2 GOAWAY, HTTP/1.1 after the call in flight), the connection is
/// dropped [`CLOSE_GRACE`] later whatever its calls are doing. For what a
/// service cannot end otherwise: a call whose caller stopped reading, its
/// response stuck behind a shut flow-control window.
#[derive(Debug, Clone, Default)]
pub struct Closer(Arc<Notify>);

impl Closer {
    pub fn close(&self) {
        // Kept as a permit if the connection is not listening right now.
        self.0.notify_one();
    }

    /// Resolves once the connection was asked to close.
    pub async fn asked(&self) {
        self.0.notified().await;
    }
}

/// One listener's shared state.
#[derive(Debug)]
struct Shared {
    /// Connections open, and each peer's share of them.
    connections: Arc<Shares>,
    refused: Counter,
}

/// A listener being served; [`Served::drained`] waits for its connections
/// to end after shutdown.
#[derive(Debug, Clone)]
pub struct Served {
    shared: Arc<Shared>,
}

impl Served {
    /// Resolves once no connection is open (call it after shutdown began).
    pub async fn drained(&self) {
        self.shared.connections.emptied().await;
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.shared.connections.taken()
    }
}

/// Waits at most `within` for the connections of every listener in
/// `served` to end (call it after shutdown began); says how many were
/// still open when the time ran out. Every binary drains with it.
pub async fn drain(served: &[&Served], within: Duration) {
    let all = async {
        for listener in served {
            listener.drained().await;
        }
    };
    if tokio::time::timeout(within, all).await.is_err() {
        let open: usize = served.iter().map(|s| s.open_connections()).sum();
        warn!(
            seconds = within.as_secs_f64(),
            open, "drain time over; exiting with calls still open"
        );
    }
}

/// One face of a binary: what it is called in logs, its limits, its
/// protocols, its TLS, and the counter of connections it could not take
/// (closed at a cap, or a failed accept).
#[derive(Debug, Clone)]
pub struct Face {
    pub name: &'static str,
    pub limits: Limits,
    pub protocols: Protocols,
    pub tls: Option<ServerTls>,
    pub refused: Counter,
}

/// Serves `listener` as `face` until `shutdown` turns true: each
/// connection (TLS first, when the face has it) gets the service `make`
/// builds for it.
pub fn serve<M, S, B>(
    listener: tokio::net::TcpListener,
    face: Face,
    mut shutdown: watch::Receiver<bool>,
    make: M,
) -> Served
where
    M: Fn(&Peer) -> S + Send + Sync + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let Face {
        name: what,
        limits,
        protocols,
        tls,
        refused,
    } = face;
    let max = limits.max_connections.max(1);
    let limits = Limits {
        max_connections: max,
        max_connections_per_peer: limits.max_connections_per_peer.max(1),
        ..limits
    };
    let shared = Arc::new(Shared {
        connections: Shares::new(max, limits.max_connections_per_peer),
        refused,
    });
    let served = Served {
        shared: shared.clone(),
    };
    let make = Arc::new(make);
    tokio::spawn(async move {
        let mut pause = ACCEPT_PAUSE_FIRST;
        let mut warned: Option<Instant> = None;
        loop {
            let (stream, addr) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => {
                        pause = ACCEPT_PAUSE_FIRST;
                        accepted
                    }
                    Err(e) => {
                        // Out of file descriptors, say: never fatal, no busy
                        // loop while it lasts (the pause doubles up to a
                        // second), counted, and logged once a second.
                        shared.refused.inc();
                        if warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                            warn!(error = %e, "{what}: accept failed; backing off");
                            warned = Some(Instant::now());
                        }
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(ACCEPT_PAUSE_MAX);
                        continue;
                    }
                },
                () = until_down(&mut shutdown) => return,
            };
            let Ok(admission) = shared.connections.take(addr.ip()) else {
                shared.refused.inc();
                debug!(peer = %addr, "{what}: at the connection cap; connection closed");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (tls, make, shutdown) = (tls.clone(), make.clone(), shutdown.clone());
            tokio::spawn(async move {
                let _admission = admission;
                connection(stream, addr, tls, protocols, limits, shutdown, &*make, what).await;
            });
        }
    });
    served
}

#[allow(
    clippy::too_many_arguments,
    reason = "one connection's whole setting, passed down from `serve`"
)]
async fn connection<M, S, B>(
    stream: tokio::net::TcpStream,
    addr: SocketAddr,
    tls: Option<ServerTls>,
    protocols: Protocols,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
    make: &M,
    what: &'static str,
) where
    M: Fn(&Peer) -> S,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut first = [0u8; 1];
    match tokio::time::timeout(limits.first_byte_timeout, stream.peek(&mut first)).await {
        Ok(Ok(n)) if n > 0 => {}
        _ => {
            debug!(peer = %addr, "{what}: nothing sent in time; connection closed");
            return;
        }
    }
    let (stream, subject, names) = match tls {
        None => (Stream::Plain(stream), None, Arc::from([])),
        Some(tls) => {
            let Some(stream) = crate::tls::handshake(&tls, stream, addr, what).await else {
                return;
            };
            let certificates = stream.get_ref().1.peer_certificates();
            let subject = crate::tls::peer_subject(certificates);
            let names = crate::tls::peer_names(certificates);
            (
                Stream::Tls(Box::new(stream)),
                subject.map(Arc::from),
                Arc::from(names),
            )
        }
    };
    let closer = Closer::default();
    let service = make(&Peer {
        addr,
        subject,
        names,
        closer: closer.clone(),
    });
    let setting = Setting {
        protocols,
        limits,
        closer,
        addr,
        what,
    };
    http(stream, service, setting, shutdown).await;
}

/// What one connection is served with.
#[derive(Debug)]
struct Setting {
    protocols: Protocols,
    limits: Limits,
    closer: Closer,
    addr: SocketAddr,
    what: &'static str,
}

/// Serves the calls of one connection until it ends, it idles, its
/// service closes it, or shutdown asks it to close.
async fn http<S, B>(io: Stream, service: S, setting: Setting, shutdown: watch::Receiver<bool>)
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let Setting {
        protocols,
        limits,
        closer,
        addr,
        what,
    } = setting;
    let activity = Arc::new(Activity::new());
    let service = Tracked {
        inner: Arc::new(service),
        activity: activity.clone(),
    };
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(MAX_HEADERS);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_send_buf_size(SEND_BUFFER)
        .keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT);
    let builder = match protocols {
        Protocols::Http1 => builder.http1_only(),
        Protocols::Http2 => builder.http2_only(),
        Protocols::Both => builder,
    };
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    // What may end the connection is watched by a task of its own, so the
    // connection's task polls only the connection on each of its frames.
    let signals = Arc::new(Signals::default());
    let (_served, ended) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(watch_connection(
        signals.clone(),
        activity,
        limits.idle_timeout,
        (shutdown, closer),
        ended,
    ));
    let mut closing = false;
    let mut deadline: Option<Instant> = None;
    loop {
        tokio::select! {
            biased;
            result = conn.as_mut() => {
                if let Err(e) = result {
                    debug!(error = %e, peer = %addr, "{what}: connection ended");
                }
                return;
            }
            raised = signals.next() => {
                if raised & Signals::IDLE != 0 && !closing {
                    debug!(peer = %addr, "{what}: idle; closing the connection");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    deadline = Some(Instant::now() + CLOSE_GRACE);
                }
                if raised & Signals::DOWN != 0 && !closing {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                if raised & Signals::CLOSE != 0 && deadline.is_none() {
                    debug!(peer = %addr, "{what}: closed by its service");
                    if !closing {
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    deadline = Some(Instant::now() + CLOSE_GRACE);
                }
            }
            () = sleep_until_some(deadline) => return,
        }
    }
}

/// Resolves when `shutdown` turns true; never, if no one can turn it.
async fn until_down(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|&down| down).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A shutdown signal that never comes, for listeners that serve until the
/// process ends.
pub fn never() -> watch::Receiver<bool> {
    watch::channel(false).1
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;

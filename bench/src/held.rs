//! Calls held open: what the sidecar weighs with every one of its
//! `--max-calls` places (1,024 by default) held, from eight addresses of
//! 128 calls each (each address's whole share), the two worst ways:
//!
//! - **stalled downloads**: an app (over HTTP/1.1, a connection to it per
//!   call; over HTTP/2, one per caller connection) that streams as fast as it may (the
//!   `firehose` baseline, `purposegate_bench::baseline::firehose`),
//!   callers that never read, so every window and
//!   buffer on the way fills;
//! - **slow uploads**: callers that send one byte of the thousand they
//!   announced, so each call holds a connection of its own to the app.
//!
//! The sidecar's resident memory is read once the calls are all held and
//! the windows had time to fill.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use purposegate_tests::attacks::connect_from;
use purposegate_tests::{Daemon, ServerProcess, SidecarProcess, TempDir};

/// Addresses the calls come from, and the calls each holds (the default
/// `--max-calls-per-peer`).
const PEERS: u8 = 8;
const PER_PEER: usize = 128;
/// Streams per HTTP/2 connection a caller opens.
const PER_CONNECTION: usize = 64;

/// A request body that sends one byte and then holds the stream open.
fn one_byte_then_nothing()
-> StreamBody<tokio_stream::wrappers::ReceiverStream<Result<Frame<Bytes>, Infallible>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let _ = tx.try_send(Ok(Frame::data(Bytes::from_static(b"x"))));
    tokio::spawn(async move {
        let _held = tx;
        std::future::pending::<()>().await;
    });
    StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// Holds `PEERS` x `PER_PEER` calls through `proxy`: downloads never read
/// (`upload` false) or uploads never finished; the senders and responses
/// that keep them open, and how many were answered with 503.
async fn hold(
    proxy: SocketAddr,
    upload: bool,
) -> Result<(Vec<Box<dyn std::any::Any + Send>>, usize), String> {
    let mut kept: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
    let mut refused = 0;
    for peer in 0..PEERS {
        let from = IpAddr::from([127, 0, 1, peer + 1]);
        for _ in 0..PER_PEER / PER_CONNECTION {
            let stream = connect_from(from, proxy).await.map_err(|e| e.to_string())?;
            let (sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            for _ in 0..PER_CONNECTION {
                let request = hyper::Request::builder()
                    .method(if upload { "POST" } else { "GET" })
                    .uri("http://sidecar/held")
                    .header("x-purpose", "provide");
                if upload {
                    let request = request
                        .header("content-length", "1000")
                        .body(one_byte_then_nothing().boxed())
                        .map_err(|e| e.to_string())?;
                    let call = sender.clone().send_request(request);
                    // An upload is answered only when it ends: never.
                    kept.push(Box::new(tokio::spawn(call)));
                } else {
                    let request = request
                        .body(
                            http_body_util::Empty::<Bytes>::new()
                                .map_err(|never| match never {})
                                .boxed(),
                        )
                        .map_err(|e| e.to_string())?;
                    let mut sender = sender.clone();
                    let response =
                        tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
                            .await
                            .map_err(|_| "a held download was not answered in 10 s".to_string())?
                            .map_err(|e| e.to_string())?;
                    if response.status() == 503 {
                        refused += 1;
                    }
                    // Its body is kept and never read.
                    kept.push(Box::new(response));
                }
            }
            kept.push(Box::new(sender));
        }
    }
    Ok((kept, refused))
}

/// The sidecar's resident memory with every place held, each way.
pub async fn run(server: &ServerProcess) -> Result<Vec<crate::net::Memory>, String> {
    let app = Daemon::start("purposegate-baseline", &["firehose"], &[], &["addr"]);
    let dir = TempDir::new("bench-held");
    let routes = dir.write(
        "routes.yaml",
        "routes:\n  - http: /\n    dataCategory: customer-data\n    allowBody: true\n",
    );
    let upstream = format!("http://{}", app.addr("addr"));
    let mut out = Vec::new();
    for (upload, protocol, what) in [
        (false, "http1", "stalled downloads (HTTP/1.1 app)"),
        (false, "http2", "stalled downloads (HTTP/2 app)"),
        (true, "http1", "slow uploads (HTTP/1.1 app)"),
    ] {
        // A sidecar of its own each time, on its defaults.
        let sidecar = SidecarProcess::start(
            &server.url(),
            &[
                "--upstream",
                &upstream,
                "--routes",
                &routes,
                "--upstream-protocol",
                protocol,
            ],
            &[],
        );
        let (kept, refused) = hold(sidecar.proxy_addr, upload).await?;
        if refused > 0 {
            return Err(format!(
                "{refused} of the held {what} were refused: the figure would flatter the sidecar"
            ));
        }
        // Windows and buffers fill.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let held = PEERS as usize * PER_PEER;
        let resident_kib = sidecar.resident_kib();
        println!(
            "{:>34}: {:>7.1} MiB resident ({} KiB a call)",
            format!("sidecar, {held} calls held: {what}"),
            resident_kib as f64 / 1024.0,
            resident_kib / held as u64
        );
        out.push(crate::net::Memory {
            what: format!("sidecar, {held} calls held: {what}"),
            resident_kib,
        });
        drop(kept);
    }
    Ok(out)
}

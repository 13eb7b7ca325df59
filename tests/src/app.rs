//! An app that behaves as real web apps do, to put behind the sidecar.
//!
//! Real frameworks do not route on the raw request target: they decode it
//! (every `%XX`, once), treat `\` as `/` (IIS, some Windows stacks), drop
//! `;parameters` from segments (Tomcat), merge repeated slashes and resolve
//! dot segments, clamping at the root. And CGI/WSGI servers read headers by
//! their variable name, so `x_purpose` and `X-Purpose` are one header and
//! the last value wins. This app does all of that, serves data under the
//! path it resolved (`/records/…`, `/secrets/…`, a feed at `/stream`), and
//! records what it saw for each call, so a test can tell exactly what
//! reached it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// One call as the app saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// The request target as it arrived.
    pub target: String,
    /// The path as the app resolved it, which it serves.
    pub path: String,
    pub version: String,
    /// The headers as they arrived, in order.
    pub headers: Vec<(String, String)>,
}

impl Seen {
    /// What a CGI/WSGI app reads as `name`: the last value of every header
    /// whose name folds to the same variable (`_` or `-`, any case).
    pub fn cgi(&self, name: &str) -> Option<String> {
        self.cgi_all(name).pop()
    }

    /// Every value the app received under names that fold to `name`.
    pub fn cgi_all(&self, name: &str) -> Vec<String> {
        let key = cgi_name(name);
        self.headers
            .iter()
            .filter(|(n, _)| cgi_name(n) == key)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

fn cgi_name(name: &str) -> String {
    name.to_ascii_uppercase().replace('-', "_")
}

/// The path a lenient framework routes on.
pub fn resolve(target_path: &str) -> String {
    // Every `%XX` decoded once, as frameworks do before routing.
    let decoded = crate::attacks::percent_decode(target_path).replace('\\', "/");
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        let segment = segment.split(';').next().unwrap_or("");
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    format!("/{}", segments.join("/"))
}

type Body = BoxBody<Bytes, Infallible>;

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
    *r.status_mut() = status;
    r
}

/// The running app: its address and what it has seen.
#[derive(Debug, Clone)]
pub struct FrameworkApp {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    sunk: Arc<AtomicU64>,
}

impl FrameworkApp {
    /// Starts the app (HTTP/1.1 and HTTP/2) on a free loopback port, on a
    /// runtime of its own (so blocking test code cannot stall it); it runs
    /// until the test process ends.
    pub fn start() -> Self {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("local_addr: {e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("nonblocking: {e}"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sunk = Arc::new(AtomicU64::new(0));
        let app = FrameworkApp {
            addr,
            seen: seen.clone(),
            sunk: sunk.clone(),
        };
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("runtime: {e}"));
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)
                    .unwrap_or_else(|e| panic!("listener: {e}"));
                while let Ok((stream, _)) = listener.accept().await {
                    let app = app.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let app = app.clone();
                            async move { Ok::<_, Infallible>(serve(req, &app).await) }
                        });
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        });
        FrameworkApp { addr, seen, sunk }
    }

    /// `http://127.0.0.1:PORT`, for the sidecar's `--upstream`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every call the app has received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Bytes the app has read from request bodies sent to `/sink`.
    pub fn sunk(&self) -> u64 {
        self.sunk.load(Ordering::SeqCst)
    }

    /// The calls whose resolved path starts with `prefix`.
    pub fn served_under(&self, prefix: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.path.starts_with(prefix))
            .collect()
    }
}

async fn serve(req: Request<Incoming>, app: &FrameworkApp) -> Response<Body> {
    let log = &app.seen;
    let path = resolve(req.uri().path());
    let seen = Seen {
        method: req.method().to_string(),
        // As it came: `Display` would make `?a=b` into `/?a=b`.
        target: req
            .uri()
            .path_and_query()
            .map_or_else(|| "/".to_string(), |target| target.as_str().to_string()),
        path: path.clone(),
        version: format!("{:?}", req.version()),
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    };
    if let Ok(mut log) = log.lock() {
        log.push(seen);
    }
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    match segments.as_slice() {
        ["records", id] => text(StatusCode::OK, format!("record {id}\n")),
        ["secrets", id] => text(StatusCode::OK, format!("SECRET {id}\n")),
        ["slow"] => {
            tokio::time::sleep(Duration::from_secs(1)).await;
            text(StatusCode::OK, "slow done\n".to_string())
        }
        ["stream"] => {
            // A feed: a line every 100 ms until the caller goes away.
            let ticks = feed();
            Response::new(BodyExt::boxed(StreamBody::new(ticks)))
        }
        ["upload"] => {
            // The whole body, and the trailers it ended with.
            match req.into_body().collect().await {
                Ok(collected) => {
                    let trailers: Vec<String> = collected
                        .trailers()
                        .map(|t| {
                            t.iter()
                                .map(|(n, v)| {
                                    format!("{n}={}", String::from_utf8_lossy(v.as_bytes()))
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    text(
                        StatusCode::OK,
                        format!(
                            "received {} bytes; trailers: {}\n",
                            collected.to_bytes().len(),
                            trailers.join(",")
                        ),
                    )
                }
                Err(e) => text(StatusCode::BAD_REQUEST, format!("body: {e}\n")),
            }
        }
        ["sink"] => {
            // Answers at once and goes on reading the body, counting it:
            // an app whose response is done before its upload is.
            let sunk = app.sunk.clone();
            let mut body = req.into_body();
            tokio::spawn(async move {
                while let Some(Ok(frame)) = body.frame().await {
                    if let Some(data) = frame.data_ref() {
                        sunk.fetch_add(data.len() as u64, Ordering::SeqCst);
                    }
                }
            });
            text(StatusCode::OK, "sinking\n".to_string())
        }
        _ => text(StatusCode::OK, format!("ok {path}\n")),
    }
}

fn feed()
-> impl tokio_stream::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + Sync + 'static {
    let ticks =
        tokio_stream::StreamExt::throttle(tokio_stream::iter(0u64..), Duration::from_millis(100));
    tokio_stream::StreamExt::map(ticks, |n| {
        Ok(Frame::data(Bytes::from(format!("tick {n}\n"))))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_resolves_paths_as_lenient_frameworks_do() {
        assert_eq!(resolve("/records/../secrets/1"), "/secrets/1");
        assert_eq!(resolve("/records/%2e%2e/secrets/1"), "/secrets/1");
        assert_eq!(resolve("/records/%2E%2E%2Fsecrets%2F1"), "/secrets/1");
        assert_eq!(resolve("/records//..//secrets/1"), "/secrets/1");
        assert_eq!(resolve("/records/..%2fsecrets/1"), "/secrets/1");
        assert_eq!(resolve("/records/..%5csecrets/1"), "/secrets/1");
        assert_eq!(resolve("/records/..;/secrets/1"), "/secrets/1");
        assert_eq!(resolve("/../../secrets/1"), "/secrets/1");
    }
}

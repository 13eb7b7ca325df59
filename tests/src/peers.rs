//! Fake peers a test puts beside the binaries: an OTLP receiver that
//! keeps the spans it is sent, and a relay that delays every byte.

/// A real OTLP/gRPC trace receiver on a free loopback port (the
/// opentelemetry-proto tonic server), keeping every span it receives.
#[derive(Debug, Clone)]
pub struct OtlpReceiver {
    pub addr: std::net::SocketAddr,
    spans: std::sync::Arc<std::sync::Mutex<Vec<opentelemetry_proto::tonic::trace::v1::Span>>>,
}

#[derive(Debug, Clone)]
struct TraceSink(
    std::sync::Arc<std::sync::Mutex<Vec<opentelemetry_proto::tonic::trace::v1::Span>>>,
);

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService
    for TraceSink
{
    async fn export(
        &self,
        request: tonic::Request<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
        >,
    ) -> Result<
        tonic::Response<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse,
        >,
        tonic::Status,
    > {
        let spans = request
            .into_inner()
            .resource_spans
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans);
        if let Ok(mut all) = self.0.lock() {
            all.extend(spans);
        }
        Ok(tonic::Response::new(Default::default()))
    }
}

impl OtlpReceiver {
    /// Starts the receiver inside the current tokio runtime.
    pub async fn start() -> Self {
        use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;
        let (listener, addr) = loopback_listener().await;
        let spans = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = TraceSink(spans.clone());
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(sink))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        });
        OtlpReceiver { addr, spans }
    }

    /// `http://127.0.0.1:PORT`, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The spans received so far.
    pub fn spans(&self) -> Vec<opentelemetry_proto::tonic::trace::v1::Span> {
        self.spans.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// A TCP relay on loopback that holds every chunk for `delay` before
/// passing it on: a network (or a PDP) slower than a caller's timeout.
#[derive(Debug)]
pub struct SlowRelay {
    pub addr: std::net::SocketAddr,
}

impl SlowRelay {
    /// Starts relaying to `target` inside the current tokio runtime.
    pub async fn start(target: std::net::SocketAddr, delay: std::time::Duration) -> Self {
        let (listener, addr) = loopback_listener().await;
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    tokio::spawn(relay(ri, wo, delay));
                    relay(ro, wi, delay).await;
                });
            }
        });
        SlowRelay { addr }
    }
}

async fn relay(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: std::time::Duration,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        tokio::time::sleep(delay).await;
        if to
            .write_all(buf.get(..n).unwrap_or_default())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// A TCP relay in front of several servers, as a Kubernetes Service is:
/// each connection goes to the first of `targets` that accepts it, so
/// when one is gone, new connections reach the next.
#[derive(Debug)]
pub struct FailoverRelay {
    pub addr: std::net::SocketAddr,
}

impl FailoverRelay {
    /// Starts relaying inside the current tokio runtime.
    pub async fn start(targets: Vec<std::net::SocketAddr>) -> Self {
        let (listener, addr) = loopback_listener().await;
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let targets = targets.clone();
                tokio::spawn(async move {
                    for target in targets {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
                    }
                });
            }
        });
        FailoverRelay { addr }
    }
}

/// A listener on a free loopback port, and its address.
async fn loopback_listener() -> (tokio::net::TcpListener, std::net::SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"));
    (listener, addr)
}

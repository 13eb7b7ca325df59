//! Over loopback, with the real binaries (release builds beside this one):
//! the server's `Check` against a bare tonic RPC with the same messages,
//! the sidecar against direct and pass-through calls, and resident memory.

use std::time::{Duration, Instant};

use purposegate_demo_service::pb as demo;
use purposegate_proto::v1 as pb;
use purposegate_tests::{DemoService, ServerProcess, SidecarProcess, channel, repo_root};
use serde::Serialize;
use tonic::transport::Channel;

use purposegate_bench::timing::Sample;

/// Calls per sequential measurement.
const SEQUENTIAL: usize = 2000;
/// How long each throughput measurement runs.
const THROUGHPUT_FOR: Duration = Duration::from_millis(1500);

#[derive(Debug, Serialize)]
pub struct Throughput {
    pub name: String,
    pub in_flight: usize,
    pub calls_per_second: f64,
}

#[derive(Debug, Serialize)]
pub struct Memory {
    pub what: String,
    pub resident_kib: u64,
}

#[derive(Debug, Serialize, Default)]
pub struct Network {
    pub server: Vec<Sample>,
    pub throughput: Vec<Throughput>,
    pub sidecar: Vec<Sample>,
    pub memory: Vec<Memory>,
}

/// The request every network measurement sends, from subject `id`.
pub fn check_request_from(id: &str) -> pb::CheckRequest {
    pb::CheckRequest {
        purpose: "provide.personalization".into(),
        subject: Some(pb::Subject {
            id: id.into(),
            tenant: "contoso".into(),
            roles: vec![],
        }),
        resource: Some(pb::Resource {
            category: "customer-data".into(),
            owner_tenant: "contoso".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn check_request() -> pb::CheckRequest {
    check_request_from("crm")
}

/// A tonic server with the same service and messages as purposegate's,
/// answering a fixed response: the cost of the RPC alone.
#[derive(Debug, Clone)]
struct Bare {
    answer: pb::CheckResponse,
}

#[tonic::async_trait]
impl pb::decision_service_server::DecisionService for Bare {
    async fn check(
        &self,
        request: tonic::Request<pb::CheckRequest>,
    ) -> Result<tonic::Response<pb::CheckResponse>, tonic::Status> {
        std::hint::black_box(request.into_inner());
        Ok(tonic::Response::new(self.answer.clone()))
    }
    async fn check_batch(
        &self,
        _request: tonic::Request<pb::CheckBatchRequest>,
    ) -> Result<tonic::Response<pb::CheckBatchResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("bare"))
    }
    type WatchPolicyStream = tokio_stream::Empty<Result<pb::PolicyRevision, tonic::Status>>;
    async fn watch_policy(
        &self,
        _request: tonic::Request<pb::WatchPolicyRequest>,
    ) -> Result<tonic::Response<Self::WatchPolicyStream>, tonic::Status> {
        Ok(tonic::Response::new(tokio_stream::empty()))
    }
    async fn get_policy(
        &self,
        _request: tonic::Request<pb::GetPolicyRequest>,
    ) -> Result<tonic::Response<pb::PolicyInfo>, tonic::Status> {
        Err(tonic::Status::unimplemented("bare"))
    }
}

/// Starts the bare server on its own runtime thread; its address.
fn start_bare(answer: pb::CheckResponse) -> Result<std::net::SocketAddr, String> {
    crate::passthrough::serve_on_own_runtime(move |listener| async move {
        let _ = tonic::transport::Server::builder()
            .add_service(pb::decision_service_server::DecisionServiceServer::new(
                Bare { answer },
            ))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await;
    })
}

/// A way to make one call: the `usize` is the call's number.
type Call<'a> = Box<
    dyn FnMut(
            usize,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>,
        > + 'a,
>;

/// Sequential round trips of each path, interleaved call by call so every
/// path meets the same machine noise; after a warm-up.
async fn interleaved(paths: Vec<(&str, Call<'_>)>) -> Result<Vec<Sample>, String> {
    let mut paths = paths;
    for i in 0..200 {
        for (_, call) in paths.iter_mut() {
            call(i).await?;
        }
    }
    let mut values: Vec<Vec<f64>> = vec![Vec::with_capacity(SEQUENTIAL); paths.len()];
    for i in 0..SEQUENTIAL {
        for ((_, call), out) in paths.iter_mut().zip(values.iter_mut()) {
            let start = Instant::now();
            call(200 + i).await?;
            out.push(start.elapsed().as_nanos() as f64);
        }
    }
    let samples: Vec<Sample> = paths
        .iter()
        .zip(values)
        .map(|((name, _), v)| Sample::new(name, v))
        .collect();
    for s in &samples {
        println!(
            "{:>34}: p50 {:>7.1} us, p99 {:>7.1} us",
            s.name,
            s.median_ns / 1000.0,
            s.p99_ns / 1000.0
        );
    }
    Ok(samples)
}

/// Calls per second with `in_flight` calls always outstanding on one channel.
async fn throughput(
    name: &str,
    client: pb::decision_service_client::DecisionServiceClient<Channel>,
    in_flight: usize,
) -> Result<Throughput, String> {
    let deadline = Instant::now() + THROUGHPUT_FOR;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..in_flight {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                if client.check(check_request()).await.is_err() {
                    return Err("a call failed".to_string());
                }
                n += 1;
            }
            Ok(n)
        }));
    }
    let mut total = 0u64;
    for task in tasks {
        total += task.await.map_err(|e| e.to_string())??;
    }
    let rate = total as f64 / start.elapsed().as_secs_f64();
    println!("{name:>34}: {in_flight:>2} in flight: {rate:>8.0} calls/s");
    Ok(Throughput {
        name: name.to_string(),
        in_flight,
        calls_per_second: rate,
    })
}

/// The value of an unlabelled gauge in a Prometheus text.
fn gauge(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

pub async fn run() -> Result<Network, String> {
    let mut out = Network::default();

    // The server and the bare RPC.
    let server = ServerProcess::start(&["--decision-log", "off"]);
    out.memory.push(Memory {
        what: "server, idle".into(),
        resident_kib: server.resident_kib(),
    });
    let mut real =
        pb::decision_service_client::DecisionServiceClient::new(channel(&server.url()).await);
    let answer = real
        .check(check_request())
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let bare_addr = start_bare(answer)?;
    let bare = pb::decision_service_client::DecisionServiceClient::new(
        channel(&format!("http://{bare_addr}")).await,
    );
    let rpc =
        |client: &pb::decision_service_client::DecisionServiceClient<Channel>| -> Call<'static> {
            let client = client.clone();
            Box::new(move |_| {
                let mut client = client.clone();
                Box::pin(async move {
                    client
                        .check(check_request())
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                })
            })
        };
    out.server = interleaved(vec![
        ("bare tonic RPC", rpc(&bare)),
        ("purposegate Check", rpc(&real)),
    ])
    .await?;
    for in_flight in [1, 16, 64] {
        out.throughput
            .push(throughput("bare tonic RPC", bare.clone(), in_flight).await?);
        out.throughput
            .push(throughput("purposegate Check", real.clone(), in_flight).await?);
    }
    out.memory.push(Memory {
        what: "server, after the load".into(),
        resident_kib: server.resident_kib(),
    });

    // The sidecar paths to the demo app.
    let demo_app = DemoService::start();
    let routes = repo_root()
        .join("examples/customer-service/routes.yaml")
        .display()
        .to_string();
    let upstream = format!("http://{}", demo_app.grpc_addr);
    let sidecar = SidecarProcess::start(
        &server.url(),
        // Room for the 100,000 decisions the memory figure is taken with.
        &[
            "--upstream",
            &upstream,
            "--routes",
            &routes,
            "--cache-max-bytes",
            "64Mi",
        ],
        &[],
    );
    out.memory.push(Memory {
        what: "sidecar, idle".into(),
        resident_kib: sidecar.resident_kib(),
    });
    let pass_through = crate::passthrough::start(demo_app.grpc_addr)?;
    let direct = demo::customer_service_client::CustomerServiceClient::new(
        channel(&format!("http://{}", demo_app.grpc_addr)).await,
    );
    let proxied = demo::customer_service_client::CustomerServiceClient::new(
        channel(&format!("http://{pass_through}")).await,
    );
    let through_sidecar = demo::customer_service_client::CustomerServiceClient::new(
        channel(&sidecar.proxy_url()).await,
    );
    // `fresh_subject`: a new x-subject each call, so the sidecar's cache
    // misses and the PDP is asked.
    let get = |client: &demo::customer_service_client::CustomerServiceClient<Channel>,
               fresh_subject: bool|
     -> Call<'static> {
        let client = client.clone();
        Box::new(move |i| {
            let mut client = client.clone();
            Box::pin(async move {
                let mut request =
                    tonic::Request::new(demo::GetCustomerRequest { id: "c-1".into() });
                let m = request.metadata_mut();
                m.insert(
                    "x-purpose",
                    tonic::metadata::MetadataValue::from_static("provide"),
                );
                if fresh_subject {
                    if let Ok(subject) = format!("workload-{i}").parse() {
                        m.insert("x-subject", subject);
                    }
                }
                client
                    .get_customer(request)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
        })
    };
    out.sidecar = interleaved(vec![
        ("direct to the app", get(&direct, false)),
        ("plain pass-through proxy", get(&proxied, false)),
        ("sidecar, cache hit", get(&through_sidecar, false)),
        (
            "sidecar, cache miss (PDP asked)",
            get(&through_sidecar, true),
        ),
    ])
    .await?;

    // Memory with 100,000 cached decisions, filled through the local API.
    let mut local = pb::decision_service_client::DecisionServiceClient::new(
        channel(&sidecar.local_url()).await,
    );
    for batch in 0..100 {
        let requests = (0..1000)
            .map(|i| {
                let mut r = check_request();
                r.subject = Some(pb::Subject {
                    id: format!("fill-{batch}-{i}"),
                    ..Default::default()
                });
                r
            })
            .collect();
        local
            .check_batch(pb::CheckBatchRequest { requests })
            .await
            .map_err(|e| e.to_string())?;
    }
    let held = gauge(&sidecar.metrics(), "purposegate_sidecar_cache_entries").unwrap_or(0.0);
    if held < 100_000.0 {
        return Err(format!(
            "the sidecar holds {held} decisions after 100,000 distinct ones: the memory figure would flatter it"
        ));
    }
    out.memory.push(Memory {
        what: format!("sidecar, {held:.0} cached decisions"),
        resident_kib: sidecar.resident_kib(),
    });
    for m in &out.memory {
        println!(
            "{:>34}: {:>7.1} MiB resident",
            m.what,
            m.resident_kib as f64 / 1024.0
        );
    }
    drop(sidecar);
    drop(demo_app);
    drop(server);
    Ok(out)
}

//! Over loopback, with the real binaries (release builds beside this one):
//! the server's `Check` against a bare tonic RPC with the same messages,
//! the sidecar against direct and pass-through calls, and resident memory.

use std::time::{Duration, Instant};

use purposegate_demo_service::pb as demo;
use purposegate_proto::v1 as pb;
use purposegate_tests::{Daemon, DemoService, ServerProcess, SidecarProcess, channel, repo_root};
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
    /// HTTP/2 connections the calls are spread over.
    pub channels: usize,
    /// Calls always outstanding, over all channels.
    pub in_flight: usize,
    pub calls_per_second: f64,
    /// CPU seconds the serving process used per second of the run.
    pub server_cores: f64,
}

/// Channels and calls in flight of the throughput measurements.
pub const LEVELS: [(usize, usize); 7] = [
    (1, 1),
    (1, 16),
    (1, 64),
    (4, 16),
    (4, 64),
    (16, 16),
    (16, 64),
];

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
    /// h2load runs: every path at every number of streams.
    pub h2load: Vec<crate::h2load::Run>,
    pub memory: Vec<Memory>,
    /// Lines the server with the decision log on wrote during the run
    /// (chained; signed when openssl could make a key).
    pub decision_log_lines: usize,
    pub decision_log_signed: bool,
    /// Whether the sidecar was timed with an inherited purpose context.
    pub inherited_context: bool,
}

/// The request every network measurement sends, from subject `id`.
pub use purposegate_bench::baseline::check_request_from;

fn check_request() -> pb::CheckRequest {
    check_request_from("crm")
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

/// Calls per second with `in_flight` calls always outstanding, spread
/// over the channels of `clients`.
async fn throughput(
    name: &str,
    clients: &[pb::decision_service_client::DecisionServiceClient<Channel>],
    in_flight: usize,
    serving: &Daemon,
) -> Result<Throughput, String> {
    let cpu_before = serving.cpu_time();
    let deadline = Instant::now() + THROUGHPUT_FOR;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..in_flight {
        let Some(client) = clients.get(i % clients.len().max(1)) else {
            return Err("no channel to call on".into());
        };
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
    let elapsed = start.elapsed().as_secs_f64();
    let rate = total as f64 / elapsed;
    let server_cores = (serving.cpu_time() - cpu_before).as_secs_f64() / elapsed;
    let channels = clients.len();
    println!("{name:>34}: {channels:>2} channels, {in_flight:>2} in flight: {rate:>8.0} calls/s");
    Ok(Throughput {
        name: name.to_string(),
        channels,
        in_flight,
        calls_per_second: rate,
        server_cores,
    })
}

/// The h2load runs: direct, pass-through, the sidecar on hits and the
/// sidecar with about one call in ten a miss, at each number of streams.
async fn load_generator(
    server: &ServerProcess,
    demo_app: &DemoService,
    pass_through: std::net::SocketAddr,
    sidecar: &SidecarProcess,
    routes: &str,
) -> Result<Vec<crate::h2load::Run>, String> {
    use crate::h2load::{self, Target};
    if !h2load::available() {
        return Err(
            "h2load is not installed: `bench/run.sh` installs it (Debian's nghttp2-client)".into(),
        );
    }
    // A sidecar whose cache holds one decision: the calls to a second
    // method (one in twenty) and the call after each miss.
    let upstream = format!("http://{}", demo_app.grpc_addr);
    let missing = SidecarProcess::start(
        &server.url(),
        &[
            "--upstream",
            &upstream,
            "--routes",
            routes,
            "--cache-max-entries",
            "1",
        ],
        &[],
    );
    // Both methods are permitted through it: one real call each first, so
    // h2load's successes (gRPC answers a denial with HTTP 200) are permits.
    let mut client = demo::customer_service_client::CustomerServiceClient::new(
        channel(&missing.proxy_url()).await,
    );
    fn purpose<T>(mut r: tonic::Request<T>) -> tonic::Request<T> {
        r.metadata_mut().insert(
            "x-purpose",
            tonic::metadata::MetadataValue::from_static("provide"),
        );
        r
    }
    client
        .get_customer(purpose(tonic::Request::new(demo::GetCustomerRequest {
            id: "c-1".into(),
        })))
        .await
        .map_err(|e| format!("GetCustomer through the sidecar: {e}"))?;
    client
        .echo(purpose(tonic::Request::new(demo::EchoRequest {
            payload: b"c-1".to_vec(),
        })))
        .await
        .map_err(|e| format!("Echo through the sidecar: {e}"))?;
    let proxy = |s: &SidecarProcess| -> Result<std::net::SocketAddr, String> {
        s.proxy_url()
            .trim_start_matches("http://")
            .parse()
            .map_err(|e| format!("{e}"))
    };
    let targets = [
        (
            Target {
                name: "direct to the app",
                addr: demo_app.grpc_addr,
                mixed: false,
            },
            None,
        ),
        (
            Target {
                name: "plain pass-through proxy",
                addr: pass_through,
                mixed: false,
            },
            None,
        ),
        (
            Target {
                name: "sidecar, every call a hit",
                addr: proxy(sidecar)?,
                mixed: false,
            },
            Some(sidecar),
        ),
        (
            Target {
                name: "sidecar, about 10% misses",
                addr: proxy(&missing)?,
                mixed: true,
            },
            Some(&missing),
        ),
    ];
    let dir = purposegate_tests::TempDir::new("h2load");
    let counters = |s: &SidecarProcess| {
        let text = s.metrics();
        (
            gauge(&text, "purposegate_sidecar_cache_hits_total").unwrap_or(0.0),
            gauge(&text, "purposegate_sidecar_cache_misses_total").unwrap_or(0.0),
        )
    };
    let mut runs = Vec::new();
    for (round, streams) in
        (0..h2load::ROUNDS).flat_map(|round| h2load::STREAMS.map(|streams| (round, streams)))
    {
        for (target, sidecar) in &targets {
            let before = sidecar.map(counters);
            let cpu_before = sidecar.map(|s| s.cpu_time());
            let started = Instant::now();
            let mut run = h2load::run(dir.path(), target, streams)?;
            run.round = round;
            if let (Some(sidecar), Some(cpu_before)) = (sidecar, cpu_before) {
                run.sidecar_cores = Some(
                    (sidecar.cpu_time() - cpu_before).as_secs_f64()
                        / started.elapsed().as_secs_f64(),
                );
            }
            if run.failed > 0 {
                return Err(format!(
                    "{} of h2load's calls to {} failed",
                    run.failed, target.name
                ));
            }
            if let (Some(sidecar), Some((hits, misses))) = (sidecar, before) {
                let (hits_after, misses_after) = counters(sidecar);
                let (hits, misses) = (hits_after - hits, misses_after - misses);
                run.miss_share = Some(if hits + misses > 0.0 {
                    misses / (hits + misses)
                } else {
                    0.0
                });
            }
            println!(
                "{:>34}: h2load, {streams:>2} streams, round {}: {:>8.0} req/s, mean {}{}",
                run.path,
                round + 1,
                run.requests_per_second,
                run.latency[2],
                run.miss_share
                    .map_or(String::new(), |m| format!(", {:.1}% misses", m * 100.0))
            );
            runs.push(run);
        }
    }
    Ok(runs)
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

    // An Ed25519 key (openssl) for the decision log's checkpoints and
    // the purpose contexts.
    let log_dir = purposegate_tests::TempDir::new("bench-decision-log");
    let key = log_dir.path().join("log-key.pem").display().to_string();
    let signed = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out", &key])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    // The server and the bare RPC. With a key, permits the sidecar asks
    // for carry a purpose context, as a deployment that uses them does
    // (plaintext here, so any caller is an issuer).
    let mut server_args = vec!["--decision-log", "off"];
    if signed {
        server_args.extend([
            "--purpose-signing-key",
            key.as_str(),
            "--purpose-context-issuers",
            "*",
        ]);
    }
    let server = ServerProcess::start(&server_args);
    out.memory.push(Memory {
        what: "server, idle".into(),
        resident_kib: server.resident_kib(),
    });
    // The same server writing the chained decision log to a file, with
    // signed checkpoints: the chain is the writer thread's work, so the
    // call should not see it.
    let log_path = log_dir.path().join("decisions.log");
    let log = log_path.display().to_string();
    let mut logged_args = vec!["--decision-log", log.as_str()];
    if signed {
        logged_args.extend(["--decision-log-signing-key", key.as_str()]);
    }
    let logged_server = ServerProcess::start(&logged_args);
    out.decision_log_signed = signed;
    // The bare RPC in a process of its own, as the server is.
    let bare_process = Daemon::start("purposegate-baseline", &["bare"], &[], &["addr"]);
    let bare_url = format!("http://{}", bare_process.addr("addr"));
    let clients = |url: String, n: usize| async move {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(pb::decision_service_client::DecisionServiceClient::new(
                channel(&url).await,
            ));
        }
        out
    };
    let (real_all, bare_all) = (clients(server.url(), 16).await, clients(bare_url, 16).await);
    let (Some(real), Some(bare)) = (real_all.first().cloned(), bare_all.first().cloned()) else {
        return Err("no channel".into());
    };
    let logged = pb::decision_service_client::DecisionServiceClient::new(
        channel(&logged_server.url()).await,
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
        ("purposegate Check, chained decision log on", rpc(&logged)),
    ])
    .await?;
    drop(logged_server);
    out.decision_log_lines = std::fs::read_to_string(&log_path)
        .map(|t| t.lines().count())
        .unwrap_or(0);
    for (channels, in_flight) in LEVELS {
        let (Some(bare_some), Some(real_some)) =
            (bare_all.get(..channels), real_all.get(..channels))
        else {
            return Err("too few channels".into());
        };
        out.throughput
            .push(throughput("bare tonic RPC", bare_some, in_flight, &bare_process).await?);
        out.throughput
            .push(throughput("purposegate Check", real_some, in_flight, &server).await?);
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
    let pass_process = Daemon::start(
        "purposegate-baseline",
        &["pass-through", &demo_app.grpc_addr.to_string()],
        &[],
        &["addr"],
    );
    let pass_through = pass_process.addr("addr");
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
               fresh_subject: bool,
               baggage: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>|
     -> Call<'static> {
        let client = client.clone();
        Box::new(move |i| {
            let mut client = client.clone();
            let baggage = baggage.clone();
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
                if let Some(baggage) = baggage {
                    m.insert("baggage", baggage);
                }
                client
                    .get_customer(request)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
        })
    };
    // A purpose context as an upstream hop's sidecar forwards it: signed
    // by the server for `provide` on customer data.
    let inherited = if signed {
        let mut request = check_request();
        request.issue_purpose_context = true;
        // The purpose the calls below state, on the data they read.
        request.purpose = "provide".into();
        if let Some(resource) = request.resource.as_mut() {
            resource.category = "customer-data".into();
        }
        real.clone()
            .check(request)
            .await
            .ok()
            .map(|r| r.into_inner().purpose_context)
            .filter(|t| !t.is_empty())
            .and_then(|t| format!("purposegate={t}").parse().ok())
    } else {
        None
    };
    out.inherited_context = inherited.is_some();
    let mut paths = vec![
        ("direct to the app", get(&direct, false, None)),
        ("plain pass-through proxy", get(&proxied, false, None)),
        ("sidecar, cache hit", get(&through_sidecar, false, None)),
        (
            "sidecar, cache miss (PDP asked)",
            get(&through_sidecar, true, None),
        ),
    ];
    if inherited.is_some() {
        paths.push((
            "sidecar, cache hit with an inherited purpose context",
            get(&through_sidecar, false, inherited),
        ));
    }
    out.sidecar = interleaved(paths).await?;

    out.h2load = load_generator(&server, &demo_app, pass_through, &sidecar, &routes).await?;

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
    out.memory.extend(crate::held::run(&server).await?);
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

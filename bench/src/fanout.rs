//! Fan-out of choices: [`WATCHERS`] `WatchChoices` watchers (one HTTP/2
//! connection each, in this process) on one and on two release servers
//! sharing a throwaway PostgreSQL cluster (Debian's, `fsync=off`). One
//! withdrawal: the time from the moment it was sent (an upper bound of
//! its commit) to each watcher receiving it; then 1,000 withdrawals a
//! second for 10 s: the same lag, sampled, and the servers' CPU and
//! memory; then a replica killed under writes: the time until each of
//! its watchers, reconnecting to the other replica from its last
//! revision, has resumed, and whether any change was lost or came twice.
//! The figures of BENCHMARKS.md's fan-out section.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pb::choices_service_client::ChoicesServiceClient;
use purposegate_proto::v1 as pb;
use purposegate_tests::postgres::PostgresCluster;
use purposegate_tests::{CONSENT_POLICY, ServerProcess, TempDir, channel, consent};
use serde::Serialize;
use tokio_stream::StreamExt;

/// Watchers connected at once.
pub const WATCHERS: usize = 1_000;
/// Withdrawals a second under load, and for how long.
const RATE: u64 = 1_000;
const LOAD_FOR: Duration = Duration::from_secs(10);
/// Every this many revisions, each watcher notes when it got one.
const SAMPLE_EVERY: u64 = 10;

#[derive(Debug, Serialize, Default, Clone)]
pub struct Spread {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Watchers (or samples) that got it, of those that should have.
    pub reached: usize,
    pub expected: usize,
}

#[derive(Debug, Serialize, Default)]
pub struct FanoutBench {
    pub watchers: usize,
    /// One withdrawal, send to each watcher, one replica.
    pub one_replica: Spread,
    /// The same with the watchers split over two replicas, written through
    /// the first.
    pub two_replicas: Spread,
    /// Server memory per watcher (one replica: its resident memory with the
    /// watchers connected, less before, over their number).
    pub per_watcher_kib: f64,
    /// The 10,000-watcher estimate of the same server's memory.
    pub estimate_10k_mib: f64,
    /// Under `RATE` withdrawals a second on two replicas: lag, sampled.
    pub load: Spread,
    pub load_writes: u64,
    pub load_seconds: f64,
    /// Both replicas' CPU over the load, in cores, and peak resident MiB.
    pub load_cpu_cores: f64,
    pub load_peak_mib: u64,
    /// A replica killed under writes: until every one of its watchers
    /// resumed on the other.
    pub failover_ms: f64,
    pub failover_watchers: usize,
    /// Revisions a watcher skipped, or got twice, over the whole run.
    pub lost: u64,
    pub twice: u64,
}

/// What one watcher saw.
#[derive(Debug, Default)]
struct Seen {
    /// The last revision it got.
    last: u64,
    /// Revisions of changes, in order, with when they came: the sampled
    /// ones and the one being waited for.
    times: Vec<(u64, Instant)>,
    lost: u64,
    twice: u64,
    /// When it (re)connected and got its first message.
    resumed: Option<Instant>,
    /// Reconnections.
    reconnects: u32,
}

type Watched = Arc<Mutex<Seen>>;

/// A watcher: `urls[0]` first, the next one when a stream ends.
fn spawn_watcher(urls: Vec<String>, from: u64, seen: Watched) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut at = 0;
        let mut after = from;
        loop {
            let Some(url) = urls.get(at % urls.len().max(1)) else {
                return;
            };
            let Ok(endpoint) = tonic::transport::Channel::from_shared(url.clone()) else {
                return;
            };
            let Ok(connection) = endpoint
                .connect_timeout(Duration::from_secs(5))
                .connect()
                .await
            else {
                at += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let mut client = ChoicesServiceClient::new(connection);
            let Ok(stream) = client
                .watch_choices(pb::WatchChoicesRequest {
                    after_revision: after,
                })
                .await
            else {
                at += 1;
                continue;
            };
            let mut stream = stream.into_inner();
            let mut first = true;
            while let Some(Ok(change)) = stream.next().await {
                let now = Instant::now();
                let Ok(mut seen) = seen.lock() else { return };
                if first {
                    seen.resumed = Some(now);
                    first = false;
                }
                if change.tenant.is_empty() && !change.everything {
                    continue;
                }
                let expected = seen.last + 1;
                if seen.last != 0 && change.revision > expected {
                    seen.lost += change.revision - expected;
                } else if seen.last != 0 && change.revision < expected {
                    seen.twice += 1;
                }
                seen.last = seen.last.max(change.revision);
                after = seen.last;
                if change.revision % SAMPLE_EVERY == 0 || seen.times.is_empty() {
                    seen.times.push((change.revision, now));
                }
            }
            if let Ok(mut seen) = seen.lock() {
                seen.reconnects += 1;
            }
            at += 1;
        }
    })
}

fn spread(mut lags: Vec<Duration>, expected: usize) -> Spread {
    lags.sort();
    let at = |q: f64| {
        let i = ((lags.len() as f64 - 1.0) * q).round() as usize;
        lags.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    Spread {
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        max_ms: at(1.0),
        reached: lags.len(),
        expected,
    }
}

/// A release server on the database `url`, with room for every watcher.
fn server(policy: &str, url: &str) -> ServerProcess {
    ServerProcess::start(&[
        "--policy",
        policy,
        "--decision-log",
        "off",
        "--choices-db",
        url,
        "--choices-writers",
        "*",
        "--max-connections",
        "8192",
        "--max-connections-per-peer",
        "8192",
        "--max-watchers",
        "8192",
    ])
}

/// Connects `WATCHERS` watchers, `i`'s first URL `urls[i % len]`, from the
/// current revision; waits until each has its first message.
async fn connect_watchers(urls: &[String], from: u64) -> Result<Vec<Watched>, String> {
    let mut all = Vec::with_capacity(WATCHERS);
    for i in 0..WATCHERS {
        let seen: Watched = Arc::default();
        if let Ok(mut s) = seen.lock() {
            s.last = from;
        }
        let mut order: Vec<String> = urls.to_vec();
        order.rotate_left(i % urls.len().max(1));
        spawn_watcher(order, from, seen.clone());
        all.push(seen);
    }
    let start = Instant::now();
    while !all
        .iter()
        .all(|s| s.lock().is_ok_and(|s| s.resumed.is_some()))
    {
        if start.elapsed() > Duration::from_secs(60) {
            return Err("the watchers did not all connect within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(all)
}

/// Sends one withdrawal through `url`: when it was sent, and its revision.
async fn withdraw(
    client: &mut ChoicesServiceClient<tonic::transport::Channel>,
    subject: &str,
) -> Result<(Instant, u64), String> {
    let sent = Instant::now();
    let record = client
        .record_choice(consent(subject, pb::ChoiceState::Withdrawn))
        .await
        .map_err(|e| format!("RecordChoice: {e}"))?
        .into_inner();
    Ok((sent, record.revision))
}

/// How long after `sent` each watcher got `revision` (waiting up to 10 s).
async fn reach(all: &[Watched], revision: u64, sent: Instant) -> Spread {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10)
        && !all
            .iter()
            .all(|s| s.lock().is_ok_and(|s| s.last >= revision))
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let lags = all
        .iter()
        .filter_map(|s| {
            let s = s.lock().ok()?;
            s.times
                .iter()
                .find(|(r, _)| *r >= revision)
                .map(|(_, at)| at.saturating_duration_since(sent))
        })
        .collect();
    spread(lags, all.len())
}

/// Forgets what each watcher noted, keeping where it is.
fn clear(all: &[Watched]) {
    for s in all {
        if let Ok(mut s) = s.lock() {
            s.times.clear();
        }
    }
}

pub async fn run() -> Result<FanoutBench, String> {
    let dir = TempDir::new("bench-fanout");
    let policy = dir.write("policy.yaml", CONSENT_POLICY);
    let cluster = PostgresCluster::start();
    let mut bench = FanoutBench {
        watchers: WATCHERS,
        ..FanoutBench::default()
    };

    // One replica: one withdrawal, and the memory per watcher.
    {
        let url = cluster.database("one");
        let replica = server(&policy, &url);
        let urls = vec![replica.url()];
        let mut writer = ChoicesServiceClient::new(channel(&replica.url()).await);
        let (_, from) = withdraw(&mut writer, "warm").await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = replica.resident_kib();
        let all = connect_watchers(&urls, from).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = replica.resident_kib();
        bench.per_watcher_kib = after.saturating_sub(before) as f64 / WATCHERS as f64;
        bench.estimate_10k_mib =
            (after as f64 + bench.per_watcher_kib * 9.0 * WATCHERS as f64) / 1024.0;
        clear(&all);
        let (sent, revision) = withdraw(&mut writer, "u-1").await?;
        bench.one_replica = reach(&all, revision, sent).await;
        println!(
            "fan-out, 1 replica: {} watchers, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({}/{}); {:.1} KiB a watcher",
            WATCHERS,
            bench.one_replica.p50_ms,
            bench.one_replica.p99_ms,
            bench.one_replica.max_ms,
            bench.one_replica.reached,
            bench.one_replica.expected,
            bench.per_watcher_kib
        );
        let (lost, twice) = faults(&all);
        bench.lost += lost;
        bench.twice += twice;
    }

    // Two replicas: one withdrawal, the load, a replica killed.
    let url = cluster.database("two");
    let (a, b) = (server(&policy, &url), server(&policy, &url));
    let urls = vec![a.url(), b.url()];
    let mut writer = ChoicesServiceClient::new(channel(&a.url()).await);
    let (_, from) = withdraw(&mut writer, "warm").await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all = connect_watchers(&urls, from).await?;
    clear(&all);
    let (sent, revision) = withdraw(&mut writer, "u-1").await?;
    bench.two_replicas = reach(&all, revision, sent).await;
    println!(
        "fan-out, 2 replicas: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({}/{})",
        bench.two_replicas.p50_ms,
        bench.two_replicas.p99_ms,
        bench.two_replicas.max_ms,
        bench.two_replicas.reached,
        bench.two_replicas.expected
    );

    // The load: RATE withdrawals a second from 64 writers, through both.
    clear(&all);
    let cpu_before: Duration = [&a, &b].iter().map(|r| r.cpu_time()).sum();
    let sent_at: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let start = Instant::now();
    let writers = 64u64;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let url = if w % 2 == 0 { a.url() } else { b.url() };
        let sent_at = sent_at.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = ChoicesServiceClient::new(channel(&url).await);
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 * writers / RATE));
            let mut written = 0u64;
            while start.elapsed() < LOAD_FOR {
                tick.tick().await;
                let subject = format!("u-{}", w * 1_000_000 + written);
                if let Ok((sent, revision)) = withdraw(&mut client, &subject).await {
                    if let Ok(mut map) = sent_at.lock() {
                        map.insert(revision, sent);
                    }
                    written += 1;
                }
            }
            written
        }));
    }
    let mut peak = 0;
    while start.elapsed() < LOAD_FOR {
        tokio::time::sleep(Duration::from_millis(200)).await;
        peak = peak.max([&a, &b].iter().map(|r| r.resident_kib()).sum::<u64>());
    }
    for t in tasks {
        bench.load_writes += t.await.unwrap_or(0);
    }
    bench.load_seconds = start.elapsed().as_secs_f64();
    let last = sent_at
        .lock()
        .map(|m| m.keys().copied().max().unwrap_or(0))
        .unwrap_or(0);
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(10)
        && !all.iter().all(|s| s.lock().is_ok_and(|s| s.last >= last))
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cpu_after: Duration = [&a, &b].iter().map(|r| r.cpu_time()).sum();
    bench.load_cpu_cores =
        (cpu_after.saturating_sub(cpu_before)).as_secs_f64() / bench.load_seconds;
    bench.load_peak_mib = peak / 1024;
    let sent_at = sent_at.lock().map(|m| m.clone()).unwrap_or_default();
    let mut lags = Vec::new();
    let mut expected = 0;
    for s in &all {
        if let Ok(s) = s.lock() {
            for (revision, at) in s.times.iter().filter(|(r, _)| r % SAMPLE_EVERY == 0) {
                if let Some(sent) = sent_at.get(revision) {
                    lags.push(at.saturating_duration_since(*sent));
                }
            }
            expected += sent_at.keys().filter(|r| *r % SAMPLE_EVERY == 0).count();
        }
    }
    bench.load = spread(lags, expected);
    println!(
        "fan-out under {} withdrawals in {:.1} s: lag p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({}/{} samples); CPU {:.2} cores, peak {} MiB",
        bench.load_writes,
        bench.load_seconds,
        bench.load.p50_ms,
        bench.load.p99_ms,
        bench.load.max_ms,
        bench.load.reached,
        bench.load.expected,
        bench.load_cpu_cores,
        bench.load_peak_mib
    );

    // A replica killed while writes go on through the other: its watchers
    // reconnect to the survivor from their last revision.
    let orphans: Vec<Watched> = all.iter().skip(1).step_by(2).cloned().collect();
    let before_kill: Vec<u32> = orphans
        .iter()
        .map(|s| s.lock().map_or(0, |s| s.reconnects))
        .collect();
    let writing = tokio::spawn({
        let url = a.url();
        async move {
            let mut client = ChoicesServiceClient::new(channel(&url).await);
            let begin = Instant::now();
            let mut last = 0;
            let mut i = 0u64;
            while begin.elapsed() < Duration::from_secs(3) {
                if let Ok((_, r)) = withdraw(&mut client, &format!("f-{i}")).await {
                    last = r;
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            last
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed = Instant::now();
    b.signal("KILL");
    let resumed = Instant::now();
    while resumed.elapsed() < Duration::from_secs(20)
        && !orphans.iter().zip(&before_kill).all(|(s, n)| {
            s.lock()
                .is_ok_and(|s| s.reconnects > *n && s.resumed.is_some_and(|at| at > killed))
        })
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    bench.failover_ms = orphans
        .iter()
        .filter_map(|s| s.lock().ok()?.resumed)
        .filter(|at| *at > killed)
        .map(|at| at.duration_since(killed).as_secs_f64() * 1e3)
        .fold(0.0, f64::max);
    bench.failover_watchers = orphans.len();
    let last = writing.await.unwrap_or(0);
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(10)
        && !all.iter().all(|s| s.lock().is_ok_and(|s| s.last >= last))
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (lost, twice) = faults(&all);
    bench.lost += lost;
    bench.twice += twice;
    println!(
        "replica killed: {} watchers resumed on the other within {:.0} ms; {} revisions lost, {} twice, over the whole run",
        bench.failover_watchers, bench.failover_ms, bench.lost, bench.twice
    );
    drop(b);
    Ok(bench)
}

/// Revisions skipped and received twice, summed over `all`.
fn faults(all: &[Watched]) -> (u64, u64) {
    all.iter()
        .filter_map(|s| s.lock().ok().map(|s| (s.lost, s.twice)))
        .fold((0, 0), |(l, t), (a, b)| (l + a, t + b))
}

//! Load from a real load generator: h2load (nghttp2's) drives unary gRPC
//! `GetCustomer` calls at the demo app directly, through the plain
//! pass-through proxy and through the sidecar (every call a cache hit; then
//! about one call in ten a miss), at 1, 16 and 64 concurrent streams on one
//! connection, in [`ROUNDS`] interleaved rounds (every path at every number
//! of streams, then again), so that a burst of load on the shared host
//! falls on every path alike and the report can judge the median and say
//! how far the rounds spread. Requests per second and latency are as
//! h2load prints them.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use serde::Serialize;

/// Concurrent streams of each run.
pub const STREAMS: [usize; 3] = [1, 16, 64];
/// Seconds each run measures, after a second of warm-up.
pub const SECONDS: u32 = 2;
/// Interleaved rounds of every run.
pub const ROUNDS: usize = 3;

/// One h2load run, as it reported it.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub path: String,
    pub streams: usize,
    /// Which of the [`ROUNDS`] this run was (from 0).
    pub round: usize,
    pub requests_per_second: f64,
    pub succeeded: u64,
    pub failed: u64,
    /// `time for request`: min, max, mean and sd, as printed (`123us`).
    pub latency: [String; 4],
    /// The share of the calls the sidecar's cache missed, from its counters
    /// (sidecar runs only).
    pub miss_share: Option<f64>,
    /// CPU seconds the sidecar used per second of the run (warm-up
    /// included; sidecar runs only).
    pub sidecar_cores: Option<f64>,
}

/// What one path is: its name, where h2load sends the calls, and whether
/// some calls go to a second method (a different question for the cache).
#[derive(Debug, Clone)]
pub struct Target {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub mixed: bool,
}

/// Whether h2load can be run here.
pub fn available() -> bool {
    Command::new("h2load")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs h2load once: `streams` concurrent streams on one connection at
/// `target`, for [`SECONDS`] after a second of warm-up. `dir` holds the
/// request body and URI list.
pub fn run(dir: &Path, target: &Target, streams: usize) -> Result<Run, String> {
    // GetCustomerRequest { id: "c-1" } in a gRPC frame: uncompressed,
    // five bytes of message. EchoRequest's `payload` is the same field 1,
    // so the same bytes are a valid Echo call.
    let body = dir.join("get-customer.grpc");
    std::fs::write(&body, [0, 0, 0, 0, 5, 0x0a, 3, b'c', b'-', b'1']).map_err(|e| e.to_string())?;
    let base = format!("http://{}", target.addr);
    let uris = dir.join(format!("uris-{}.txt", target.name.replace([' ', ','], "-")));
    // Mixed: one call in twenty is Echo; with a one-entry cache, it and the
    // GetCustomer after it miss: about one call in ten.
    let mut list = String::new();
    for i in 0..20 {
        let method = if target.mixed && i == 19 {
            "Echo"
        } else {
            "GetCustomer"
        };
        list.push_str(&format!("{base}/demo.v1.CustomerService/{method}\n"));
    }
    std::fs::write(&uris, list).map_err(|e| e.to_string())?;
    let out = Command::new("h2load")
        .args(["-c", "1", "-m", &streams.to_string()])
        .args(["-D", &SECONDS.to_string(), "--warm-up-time", "1"])
        .args(["-H", "content-type: application/grpc"])
        .args(["-H", "te: trailers"])
        .args(["-H", "x-purpose: provide"])
        .arg("-d")
        .arg(&body)
        .arg("-i")
        .arg(&uris)
        .output()
        .map_err(|e| format!("h2load: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        return Err(format!(
            "h2load failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    parse(&text, target.name, streams)
}

/// Reads h2load's summary.
fn parse(text: &str, path: &str, streams: usize) -> Result<Run, String> {
    let unreadable = || format!("h2load printed what this cannot read:\n{text}");
    let rps = text
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix("finished in ")?;
            let field = rest.split(", ").nth(1)?;
            field.strip_suffix(" req/s")?.trim().parse::<f64>().ok()
        })
        .ok_or_else(unreadable)?;
    let count = |word: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with("requests: "))?;
        line.split(", ").find_map(|part| {
            let part = part.trim_start_matches("requests: ");
            let (n, what) = part.split_once(' ')?;
            (what == word).then(|| n.parse().ok())?
        })
    };
    let latency = text
        .lines()
        .find_map(|l| {
            let rest = l.trim_start().strip_prefix("time for request:")?;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            Some([
                fields.first()?.to_string(),
                fields.get(1)?.to_string(),
                fields.get(2)?.to_string(),
                fields.get(3)?.to_string(),
            ])
        })
        .ok_or_else(unreadable)?;
    Ok(Run {
        path: path.to_string(),
        streams,
        round: 0,
        requests_per_second: rps,
        succeeded: count("succeeded").ok_or_else(unreadable)?,
        failed: count("failed").ok_or_else(unreadable)?,
        latency,
        miss_share: None,
        sidecar_cores: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_h2load_prints() {
        let printed = "starting benchmark...\n\
finished in 3.00s, 12345.67 req/s, 1.23MB/s\n\
requests: 37037 total, 37037 started, 37030 done, 37030 succeeded, 7 failed, 0 errored, 0 timeout\n\
status codes: 37030 2xx, 0 3xx, 0 4xx, 0 5xx\n\
                     min         max         mean         sd        +/- sd\n\
time for request:      123us      4.56ms       234us        56us    78.90%\n";
        let run = parse(printed, "direct", 16).unwrap();
        assert_eq!(run.requests_per_second, 12345.67);
        assert_eq!((run.succeeded, run.failed), (37030, 7));
        assert_eq!(run.latency, ["123us", "4.56ms", "234us", "56us"]);
    }
}

//! Instructions, not seconds: what one engine decision, one call through
//! the sidecar on a cache hit and one call through the plain pass-through
//! proxy execute, counted by valgrind's callgrind. A count is the same on
//! a quiet host and a busy one, so a change that adds work shows even
//! where timings are noise.
//!
//! Each figure is the difference of two runs that differ only in how many
//! calls (or decisions) they make, divided by that difference: start-up,
//! warm-up and shutdown cancel out. The proxies run whole, as release
//! binaries under callgrind, and h2load sends them sequential unary
//! `GetCustomer` calls on one connection.
//!
//!     bench/run.sh instructions

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use purposegate_tests::{DemoService, ServerProcess, TempDir, binary, repo_root};
use serde::Serialize;

/// Decisions in the smaller and the larger engine run.
const DECISIONS: (u64, u64) = (20_000, 40_000);
/// Calls in the smaller and the larger proxy run.
const CALLS: (u64, u64) = (500, 1_500);

#[derive(Debug, Clone, Serialize)]
pub struct Instructions {
    /// One decision of the default policy on the engines' mix.
    pub decision: f64,
    /// One unary call through the sidecar, a cache hit, in the sidecar.
    pub sidecar_hit: f64,
    /// The same call through the plain pass-through proxy, in it.
    pub pass_through: f64,
}

/// Whether valgrind is here.
pub fn available() -> bool {
    Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The program callgrind counts for the engine: `n` decisions of the
/// default policy on `mix`, in turn.
pub fn decide(mix: &[purposegate_engine::DecisionRequest], n: u64) -> Result<(), String> {
    let policy = purposegate_engine::default_policy::load().map_err(|d| d.to_string())?;
    for r in mix.iter().cycle().take(usize::try_from(n).unwrap_or(0)) {
        std::hint::black_box(policy.evaluate(std::hint::black_box(r)));
    }
    Ok(())
}

/// What callgrind says the program ran (its `Collected :` line), from
/// valgrind's log at `log`.
fn collected(log: &Path) -> Result<u64, String> {
    let text = std::fs::read_to_string(log).map_err(|e| format!("{}: {e}", log.display()))?;
    text.lines()
        .find_map(|l| {
            let (_, count) = l.split_once("Collected :")?;
            count.trim().parse().ok()
        })
        .ok_or_else(|| format!("callgrind counted nothing:\n{text}"))
}

fn callgrind(log: &Path) -> Command {
    let mut valgrind = Command::new("valgrind");
    valgrind
        .arg("--tool=callgrind")
        .arg("--callgrind-out-file=/dev/null")
        .arg(format!("--log-file={}", log.display()));
    valgrind
}

/// Instructions of `purposegate-bench decide N`.
fn decisions(dir: &Path, n: u64) -> Result<u64, String> {
    let log = dir.join(format!("decide-{n}.log"));
    let status = callgrind(&log)
        .arg(binary("purposegate-bench"))
        .args(["decide-count", &n.to_string()])
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("valgrind: {e}"))?;
    if !status.success() {
        return Err(format!("valgrind decide-count {n}: {status}"));
    }
    collected(&log)
}

/// `n` sequential calls at `addr` by h2load; how many succeeded.
fn calls(dir: &Path, addr: &str, n: u64) -> Result<u64, String> {
    let body = dir.join("get-customer.grpc");
    std::fs::write(&body, [0, 0, 0, 0, 5, 0x0a, 3, b'c', b'-', b'1']).map_err(|e| e.to_string())?;
    let out = Command::new("h2load")
        .args(["-n", &n.to_string(), "-c", "1", "-m", "1"])
        .args(["-H", "content-type: application/grpc"])
        .args(["-H", "te: trailers"])
        .args(["-H", "x-purpose: provide"])
        .arg("-d")
        .arg(&body)
        .arg(format!("http://{addr}/demo.v1.CustomerService/GetCustomer"))
        .output()
        .map_err(|e| format!("h2load: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| {
            let (_, rest) = l.split_once("status codes: ")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .ok_or_else(|| format!("h2load printed what this cannot read:\n{text}"))
}

/// A proxy started under callgrind: warmed up (its cache filled), given
/// `n` calls, stopped; its instructions.
fn proxied(
    dir: &Path,
    name: &str,
    (mut proxy, addr, log): (Child, String, std::path::PathBuf),
    n: u64,
) -> Result<u64, String> {
    let addr = addr.as_str();
    let outcome = (|| {
        // Under callgrind a start takes seconds: until the first call
        // succeeds.
        let deadline = Instant::now() + Duration::from_secs(120);
        while calls(dir, addr, 1).unwrap_or(0) != 1 {
            if Instant::now() > deadline {
                return Err(format!(
                    "{name} did not answer under callgrind within 120 s"
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        calls(dir, addr, 20)?;
        let ok = calls(dir, addr, n)?;
        if ok != n {
            return Err(format!("{name}: {ok} of {n} calls succeeded"));
        }
        Ok(())
    })();
    let _ = Command::new("kill")
        .args(["-TERM", &proxy.id().to_string()])
        .status();
    let _ = proxy.wait();
    outcome?;
    collected(&log)
}

/// A proxy under callgrind: the process, its address, valgrind's log.
type Counted = (Child, String, std::path::PathBuf);

/// The sidecar in front of `app`, asking `pdp`, under callgrind logging
/// to `log`.
fn sidecar(log: std::path::PathBuf, pdp: &str, app: &str) -> Result<Counted, String> {
    let addr = purposegate_tests::free_addr().to_string();
    let local = purposegate_tests::free_addr().to_string();
    let metrics = purposegate_tests::free_addr().to_string();
    let routes = repo_root().join("examples/customer-service/routes.yaml");
    let child = callgrind(&log)
        .arg(binary("purposegate-sidecar"))
        .args(["--pdp", pdp, "--upstream", &format!("http://{app}")])
        .arg("--routes")
        .arg(routes)
        .args(["--listen", &addr, "--local-listen", &local])
        .args(["--metrics-listen", &metrics, "--log-format", "json"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("valgrind: {e}"))?;
    Ok((child, addr, log))
}

/// The pass-through proxy in front of `app` under callgrind logging to
/// `log` (its address from the JSON line it prints on stderr).
fn pass_through(log: std::path::PathBuf, app: &str) -> Result<Counted, String> {
    let mut child = callgrind(&log)
        .arg(binary("purposegate-baseline"))
        .args(["pass-through", app])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("valgrind: {e}"))?;
    // Its first line on stderr (valgrind's own go to its log).
    let mut line = String::new();
    if let Some(err) = child.stderr.take() {
        let mut err = BufReader::new(err);
        let _ = err.read_line(&mut line);
        // The rest is drained, so the proxy never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    }
    let addr = serde_json::from_str::<serde_json::Value>(&line)
        .ok()
        .and_then(|v| v.get("addr")?.as_str().map(String::from))
        .ok_or_else(|| format!("the pass-through proxy printed {line:?}"))?;
    Ok((child, addr, log))
}

fn per_one(small: u64, large: u64, (a, b): (u64, u64)) -> f64 {
    large.saturating_sub(small) as f64 / b.saturating_sub(a).max(1) as f64
}

/// Counts all three.
pub fn run() -> Result<Instructions, String> {
    if !available() {
        return Err("valgrind is not installed (bench/run.sh installs it)".into());
    }
    let dir = TempDir::new("instructions");
    let d = dir.path();
    let decision = per_one(
        decisions(d, DECISIONS.0)?,
        decisions(d, DECISIONS.1)?,
        DECISIONS,
    );
    println!("instructions: one decision {decision:.0}");
    let server = ServerProcess::start(&["--decision-log", "off"]);
    let app = DemoService::start();
    let app_addr = app.grpc_addr.to_string();
    let pdp = server.url();
    let hits = |n: u64| -> Result<u64, String> {
        let log = d.join(format!("sidecar-{n}.log"));
        proxied(d, "sidecar", sidecar(log, &pdp, &app_addr)?, n)
    };
    let sidecar_hit = per_one(hits(CALLS.0)?, hits(CALLS.1)?, CALLS);
    let passed = |n: u64| -> Result<u64, String> {
        let log = d.join(format!("pass-through-{n}.log"));
        proxied(d, "pass-through", pass_through(log, &app_addr)?, n)
    };
    let pass_through = per_one(passed(CALLS.0)?, passed(CALLS.1)?, CALLS);
    println!(
        "instructions: one sidecar hit {sidecar_hit:.0}, one pass-through call {pass_through:.0} ({:.2}x)",
        sidecar_hit / pass_through.max(1.0)
    );
    Ok(Instructions {
        decision,
        sidecar_hit,
        pass_through,
    })
}

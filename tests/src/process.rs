//! The real binaries as processes: found (and refused when stale), run
//! once (`server_cli`) or as daemons on free loopback ports whose bound
//! addresses are read from their JSON logs.

use super::*;

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
    /// Where AuthZEN is served, unless `--authzen-listen off`.
    pub authzen_addr: Option<std::net::SocketAddr>,
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
        if !args.contains(&"--authzen-listen") {
            all.extend(["--authzen-listen", "127.0.0.1:0"]);
        }
        all.extend_from_slice(args);
        let mut keys = vec!["addr", "metrics_addr"];
        if !all.windows(2).any(|w| w == ["--admin-listen", "off"]) {
            keys.push("admin_addr");
        }
        if !all.windows(2).any(|w| w == ["--authzen-listen", "off"]) {
            keys.push("authzen_addr");
        }
        let daemon = Daemon::start("purposegate-server", &all, env, &keys);
        ServerProcess {
            addr: daemon.addr("addr"),
            metrics_addr: daemon.addr("metrics_addr"),
            admin_addr: keys
                .contains(&"admin_addr")
                .then(|| daemon.addr("admin_addr")),
            authzen_addr: keys
                .contains(&"authzen_addr")
                .then(|| daemon.addr("authzen_addr")),
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

    /// `http://127.0.0.1:PORT` of the AuthZEN API.
    pub fn authzen_url(&self) -> String {
        format!(
            "http://{}",
            self.authzen_addr
                .unwrap_or_else(|| panic!("the server was started with --authzen-listen off"))
        )
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
        Self::start_with(&[])
    }

    /// Like [`DemoService::start`], with `args` added (`--downstream`).
    pub fn start_with(args: &[&str]) -> Self {
        let mut all = vec!["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let daemon = Daemon::start(
            "purposegate-demo-service",
            &all,
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

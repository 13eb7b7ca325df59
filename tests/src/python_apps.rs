//! Apps no one here wrote, to put behind the sidecar: Python's own
//! `http.server` keeping connections alive and leaving bodies unread
//! (`tests/apps/plain_app.py`), and a grpcio service
//! (`tests/apps/grpc_app.py`). Each prints its port, then one JSON line
//! per request it parsed, so a test knows exactly what reached it.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running Python app, killed on drop.
#[derive(Debug)]
pub struct PythonApp {
    child: Child,
    pub addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl PythonApp {
    /// `http.server` on a free loopback port (`tests/apps/plain_app.py`).
    pub fn plain() -> Self {
        Self::start("plain_app.py")
    }

    /// The grpcio service on a free loopback port (`tests/apps/grpc_app.py`).
    pub fn grpc() -> Self {
        Self::start("grpc_app.py")
    }

    fn start(script: &str) -> Self {
        let path = crate::repo_root().join("tests/apps").join(script);
        let mut child = Command::new("python3")
            .arg("-u")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("python3 {}: {e}", path.display()));
        let stdout = child
            .stdout
            .take()
            .unwrap_or_else(|| panic!("no stdout pipe"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let sink = seen.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if let Some(port) = value.get("port").and_then(serde_json::Value::as_u64) {
                    let _ = port_tx.send(port);
                } else if let Ok(mut seen) = sink.lock() {
                    seen.push(value);
                }
            }
        });
        let port = port_rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("{script} did not print its port within 30 s")
            });
        let port = u16::try_from(port).unwrap_or_else(|_| panic!("port {port}"));
        PythonApp {
            child,
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            seen,
        }
    }

    /// `http://127.0.0.1:PORT`, for the sidecar's `--upstream`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request the app has parsed so far, once its output has been
    /// still for 200 ms (at most 3 s): what it printed reaches the test
    /// through a pipe.
    pub fn seen(&self) -> Vec<serde_json::Value> {
        let count = || self.seen.lock().map(|s| s.len()).unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut last = count();
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let now = count();
            if now == last || Instant::now() >= deadline {
                break;
            }
            last = now;
        }
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The paths of every request the app parsed.
    pub fn paths(&self) -> Vec<String> {
        self.seen()
            .iter()
            .filter_map(|s| s.get("path").and_then(serde_json::Value::as_str))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for PythonApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server on its default policy, a Python app and a sidecar in front
/// of it on `routes`, with `extra` flags.
#[derive(Debug)]
pub struct PythonStack {
    pub server: crate::ServerProcess,
    pub app: PythonApp,
    pub sidecar: crate::SidecarProcess,
    pub dir: crate::TempDir,
}

impl PythonStack {
    pub fn start(app: PythonApp, routes: &str, extra: &[&str]) -> Self {
        let server = crate::ServerProcess::start(&["--decision-log", "off"]);
        let dir = crate::TempDir::new("python-stack");
        let routes = dir.write("routes.yaml", routes);
        let upstream = app.url();
        // What these stacks try is the proxy (framing, isolation), not a
        // decision point that a loaded machine makes slow: a re-judgement
        // of an open call must not time out.
        let mut args = vec![
            "--upstream",
            upstream.as_str(),
            "--routes",
            routes.as_str(),
            "--pdp-timeout",
            "5s",
        ];
        args.extend_from_slice(extra);
        let sidecar = crate::SidecarProcess::start(&server.url(), &args, &[]);
        PythonStack {
            server,
            app,
            sidecar,
            dir,
        }
    }
}

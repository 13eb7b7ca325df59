//! What tests set up: temporary directories, free ports, the server on a
//! policy file or with mutual TLS, the demo app behind a sidecar, policy
//! texts.

use super::*;

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

/// The server with mutual TLS: its certificate from `trust`, client
/// certificates checked against a copy of `trust`'s CA in `dir` (its path
/// returned, so a test can rotate it); `extra` flags after those.
pub fn mtls_server(dir: &TempDir, trust: &Pki, extra: &[&str]) -> (ServerProcess, String) {
    let (cert, key) = trust.issue("server", "IP:127.0.0.1,DNS:localhost");
    // The client CA bundle is its own file, so the test can rotate it.
    let clients_ca = dir.path().join("clients-ca.pem").display().to_string();
    std::fs::copy(trust.ca(), &clients_ca).unwrap_or_else(|e| panic!("{clients_ca}: {e}"));
    let mut args = vec![
        "--decision-log",
        "off",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-client-ca",
        &clients_ca,
    ];
    args.extend_from_slice(extra);
    (ServerProcess::start(&args), clients_ca)
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

/// A policy of `n` purposes as an organisation writes one: areas of ten
/// (an area and its nine tasks), twenty categories and 200 rules on
/// purposes spread over the tree (a quarter of them prohibitions).
pub fn organisation_policy(n: usize) -> String {
    let mut text = String::from("version: 1\nname: organisation\npurposes:\n");
    let mut ids = Vec::with_capacity(n);
    let mut area = 0;
    while ids.len() < n {
        let root = format!("area-{area:05}");
        text.push_str(&format!("  {root}: Area {area} of the organisation\n"));
        ids.push(root.clone());
        for task in 0..9 {
            if ids.len() >= n {
                break;
            }
            let id = format!("{root}.task-{task}");
            text.push_str(&format!("  {id}: Task {task} of area {area}\n"));
            ids.push(id);
        }
        area += 1;
    }
    text.push_str("dataCategories:\n");
    for c in 0..20 {
        text.push_str(&format!("  cat-{c}: Category {c}\n"));
    }
    text.push_str("rules:\n");
    for i in 0..200 {
        let effect = if i % 4 == 0 { "deny" } else { "permit" };
        let (Some(a), Some(b)) = (
            ids.get((i * 497) % ids.len()),
            ids.get((i * 1009 + 3) % ids.len()),
        ) else {
            panic!("a policy of no purposes");
        };
        text.push_str(&format!(
            "  - id: rule-{i}\n    effect: {effect}\n    dataCategories: [cat-{}]\n    purposes: [{a}, {b}]\n",
            i % 20
        ));
    }
    text
}

/// The server on the policy file `policy`, taking choices from any
/// caller, logging no decisions, with `extra` flags.
pub fn choices_server(policy: &str, extra: &[&str]) -> ServerProcess {
    let mut args = vec![
        "--policy",
        policy,
        "--decision-log",
        "off",
        "--choices-writers",
        "*",
    ];
    args.extend_from_slice(extra);
    ServerProcess::start(&args)
}

/// A policy where `marketing` of `customer-data` needs each data subject's
/// consent, and `provide` needs no choice.
pub const CONSENT_POLICY: &str = "version: 1
name: choices
purposes:
  provide: Provide the service
  marketing: Marketing
dataCategories:
  customer-data: Customer data
rules:
  - id: customer-data-uses
    effect: permit
    purposes: [provide, marketing]
    dataCategories: [customer-data]
choices:
  - purposes: [marketing]
    by: data-subject
    basis: consent
";

/// `contoso`'s data subject `subject` records `state` on `marketing`, by
/// consent (the choice [`CONSENT_POLICY`] reads).
pub fn consent(
    subject: &str,
    state: purposegate_proto::v1::ChoiceState,
) -> purposegate_proto::v1::RecordChoiceRequest {
    purposegate_proto::v1::RecordChoiceRequest {
        tenant: "contoso".into(),
        data_subject: subject.into(),
        purpose: "marketing".into(),
        state: state.into(),
        basis: "consent".into(),
        ..Default::default()
    }
}

/// A `Check` of `marketing` on `contoso`'s `customer-data` of `subject`.
pub fn marketing_check(subject: &str) -> purposegate_proto::v1::CheckRequest {
    let mut request = check_request("marketing", "customer-data");
    if let Some(resource) = request.resource.as_mut() {
        resource.owner_tenant = "contoso".into();
        resource.data_subject = subject.into();
    }
    request
}

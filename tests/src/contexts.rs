//! Purpose contexts in tests: what the server publishes and signs, a GET
//! through a sidecar, and the two-hop chain (a server signing contexts,
//! two demo apps each behind its own sidecar, the first relaying to the
//! second with its baggage passed on by OpenTelemetry's propagator).

use purposegate_proto::v1 as pb;

use crate::{DemoService, ServerProcess, SidecarProcess, TempDir, channel, curl, repo_root};

/// The key ids the server at `url` publishes, newest first.
pub async fn published_keys(url: &str) -> Vec<String> {
    let mut client = pb::decision_service_client::DecisionServiceClient::new(channel(url).await);
    let info = client
        .get_policy(pb::GetPolicyRequest {})
        .await
        .unwrap_or_else(|e| panic!("GetPolicy: {e}"))
        .into_inner();
    info.purpose_context_keys
        .into_iter()
        .map(|k| k.key_id)
        .collect()
}

/// The server's answer to a plaintext `Check` for `purpose` on customer
/// data that asks for a purpose context.
pub async fn asked_for_context(url: &str, purpose: &str) -> pb::CheckResponse {
    let mut client = pb::decision_service_client::DecisionServiceClient::new(channel(url).await);
    let mut request = crate::check_request(purpose, "customer-data");
    request.issue_purpose_context = true;
    client
        .check(request)
        .await
        .unwrap_or_else(|e| panic!("Check: {e}"))
        .into_inner()
}

/// GET through a sidecar's proxy with `headers`: (status, headers, body).
pub fn proxy_get(sidecar: &SidecarProcess, path: &str, headers: &[&str]) -> (u16, String, String) {
    let url = format!("{}{path}", sidecar.proxy_url());
    let mut args = vec![];
    for h in headers {
        args.extend(["-H", *h]);
    }
    args.push(url.as_str());
    let got = curl(&args);
    (got.status, got.headers, got.body)
}

/// A server signing purpose contexts with a key in `dir`, and two demo
/// apps behind their sidecars, the first relaying to the second.
#[derive(Debug)]
pub struct Chain {
    pub dir: TempDir,
    /// The server's signing key file.
    pub key: String,
    pub server: ServerProcess,
    pub first: DemoService,
    pub first_sidecar: SidecarProcess,
    pub second: DemoService,
    pub second_sidecar: SidecarProcess,
}

impl Chain {
    /// The chain, the server started with `server_args` besides its key.
    pub fn start(tag: &str, server_args: &[&str]) -> Self {
        let dir = TempDir::new(tag);
        let key = dir.path().join("purpose-key.pem").display().to_string();
        crate::ed25519_key(&key);
        let mut args = vec!["--purpose-signing-key", key.as_str()];
        args.extend_from_slice(server_args);
        let server = ServerProcess::start(&args);
        let routes = repo_root()
            .join("examples/customer-service/routes.yaml")
            .display()
            .to_string();
        let second = DemoService::start();
        let second_upstream = format!("http://{}", second.grpc_addr);
        let second_sidecar = SidecarProcess::start(
            &server.url(),
            &["--upstream", &second_upstream, "--routes", &routes],
            &[],
        );
        let downstream = second_sidecar.proxy_addr.to_string();
        let first = DemoService::start_with(&["--downstream", &downstream]);
        let first_upstream = format!("http://{}", first.grpc_addr);
        let first_sidecar = SidecarProcess::start(
            &server.url(),
            &["--upstream", &first_upstream, "--routes", &routes],
            &[],
        );
        Chain {
            dir,
            key,
            server,
            first,
            first_sidecar,
            second,
            second_sidecar,
        }
    }
}

/// A plaintext server signing purpose contexts for any caller (`*`) with
/// a new key in `dir`, and `extra` flags; the key file's path.
pub fn signing_server(dir: &TempDir, extra: &[&str]) -> (ServerProcess, String) {
    let key = dir.path().join("purpose-key.pem").display().to_string();
    crate::ed25519_key(&key);
    let mut args = vec![
        "--purpose-signing-key",
        key.as_str(),
        "--purpose-context-issuers",
        "*",
        "--decision-log",
        "off",
    ];
    args.extend_from_slice(extra);
    (ServerProcess::start(&args), key)
}

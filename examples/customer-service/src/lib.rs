//! A demo customer-records service: gRPC (`demo.v1.CustomerService`) and a
//! small HTTP/1.1 API, to put the purposegate sidecar in front of. Every
//! call it receives is logged (`received`), so a test can tell whether a
//! denied call reached it.

use std::pin::Pin;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode, body::Incoming};
use tokio_stream::Stream;
use tonic::Status;
use tracing::info;

/// `demo.v1`: messages, client and server.
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
pub mod pb {
    tonic::include_proto!("demo.v1");
}

/// The encoded descriptor set of `demo/v1/customers.proto`, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/demo_descriptor.bin"));

/// The records every demo instance holds.
pub fn customers() -> Vec<pb::Customer> {
    [
        ("c-1", "Ada Lovelace", "ada@contoso.example", "contoso"),
        ("c-2", "Grace Hopper", "grace@contoso.example", "contoso"),
        ("c-3", "Alan Turing", "alan@fabrikam.example", "fabrikam"),
        (
            "c-4",
            "Katherine Johnson",
            "katherine@fabrikam.example",
            "fabrikam",
        ),
        (
            "c-5",
            "Edsger Dijkstra",
            "edsger@tailspin.example",
            "tailspin",
        ),
    ]
    .into_iter()
    .map(|(id, name, email, tenant)| pb::Customer {
        id: id.into(),
        name: name.into(),
        email: email.into(),
        tenant: tenant.into(),
    })
    .collect()
}

#[derive(Debug, Default, Clone)]
pub struct CustomerService;

#[tonic::async_trait]
impl pb::customer_service_server::CustomerService for CustomerService {
    async fn get_customer(
        &self,
        request: tonic::Request<pb::GetCustomerRequest>,
    ) -> Result<tonic::Response<pb::Customer>, Status> {
        let id = request.into_inner().id;
        info!(method = "GetCustomer", %id, "received");
        customers()
            .into_iter()
            .find(|c| c.id == id)
            .map(tonic::Response::new)
            .ok_or_else(|| Status::not_found(format!("no customer `{id}`")))
    }

    type ExportCustomersStream =
        Pin<Box<dyn Stream<Item = Result<pb::Customer, Status>> + Send + 'static>>;

    async fn export_customers(
        &self,
        request: tonic::Request<pb::ExportCustomersRequest>,
    ) -> Result<tonic::Response<Self::ExportCustomersStream>, Status> {
        let request = request.into_inner();
        let fail_after = request.fail_after as usize;
        info!(
            method = "ExportCustomers",
            fail_after,
            follow = request.follow,
            "received"
        );
        let all = customers();
        if request.follow {
            let feed = tokio_stream::StreamExt::throttle(
                tokio_stream::iter(all.into_iter().cycle().map(Ok)),
                std::time::Duration::from_millis(100),
            );
            return Ok(tonic::Response::new(Box::pin(feed)));
        }
        let items: Vec<Result<pb::Customer, Status>> = if fail_after > 0 {
            let mut items: Vec<_> = all.into_iter().take(fail_after).map(Ok).collect();
            let mut status = Status::aborted(format!("export stopped after {fail_after} records"));
            if let Ok(value) = fail_after.to_string().parse() {
                status.metadata_mut().insert("x-demo-exported", value);
            }
            items.push(Err(status));
            items
        } else {
            all.into_iter().map(Ok).collect()
        };
        Ok(tonic::Response::new(Box::pin(tokio_stream::iter(items))))
    }

    async fn echo(
        &self,
        request: tonic::Request<pb::EchoRequest>,
    ) -> Result<tonic::Response<pb::EchoResponse>, Status> {
        let payload = request.into_inner().payload;
        info!(method = "Echo", bytes = payload.len(), "received");
        Ok(tonic::Response::new(pb::EchoResponse { payload }))
    }
}

/// Where `GET /relay/customers/{id}` reads the record: the second
/// service's sidecar (`--downstream HOST:PORT`).
pub static DOWNSTREAM: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The HTTP/1.1 API: `GET /customers/{id}` (JSON), `POST /echo` (the body
/// back) and `GET /relay/customers/{id}?purpose=P` (the record read from
/// the downstream service for purpose P, the call's W3C baggage passed on
/// as an OpenTelemetry-instrumented app does).
pub async fn http(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    info!(method = %method, %path, "received");
    let (status, body) = match (&method, path.as_str()) {
        (&Method::GET, p) if p.starts_with("/relay/customers/") => {
            let id = p.trim_start_matches("/relay/customers/").to_string();
            relay(&req, &id).await
        }
        // HEAD as GET, as web frameworks serve it (hyper sends no body).
        (&Method::GET | &Method::HEAD, p) if p.starts_with("/customers/") => {
            let id = p.trim_start_matches("/customers/");
            match customers().into_iter().find(|c| c.id == id) {
                Some(c) => (StatusCode::OK, Bytes::from(customer_json(&c))),
                None => (
                    StatusCode::NOT_FOUND,
                    Bytes::from(format!("no customer `{id}`\n")),
                ),
            }
        }
        (&Method::POST, "/echo") => (StatusCode::OK, req.into_body().collect().await?.to_bytes()),
        _ => (StatusCode::NOT_FOUND, Bytes::from_static(b"not found\n")),
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    Ok(response)
}

/// A customer as JSON, its keys in the order of the gRPC message (a
/// `serde_json` map's order depends on the features it is built with).
fn customer_json(c: &pb::Customer) -> String {
    let text = |s: &str| serde_json::Value::from(s).to_string();
    format!(
        r#"{{"id":{},"name":{},"email":{},"tenant":{}}}"#,
        text(&c.id),
        text(&c.name),
        text(&c.email),
        text(&c.tenant)
    )
}

/// Reads customer `id` from the downstream service for the purpose the
/// query names (none: the downstream hop inherits it), carrying the
/// caller's baggage on: extracted from the incoming headers into an
/// OpenTelemetry context and injected into the outgoing call by the
/// standard baggage propagator.
async fn relay(req: &Request<Incoming>, id: &str) -> (StatusCode, Bytes) {
    use opentelemetry::propagation::TextMapPropagator;
    let Some(downstream) = DOWNSTREAM.get() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Bytes::from_static(b"no --downstream service\n"),
        );
    };
    let purpose = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("purpose="))
        .unwrap_or("")
        .to_string();
    let incoming: std::collections::HashMap<String, String> = req
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let propagator = opentelemetry_sdk::propagation::BaggagePropagator::new();
    let cx = propagator.extract(&incoming);
    let mut outgoing = std::collections::HashMap::new();
    propagator.inject_context(&cx, &mut outgoing);
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(format!("/customers/{id}"))
        .header("host", downstream.as_str())
        .header("x-subject", "demo-relay");
    if !purpose.is_empty() {
        request = request.header("x-purpose", purpose.as_str());
    }
    for (k, v) in &outgoing {
        request = request.header(k.as_str(), v.as_str());
    }
    let Ok(request) = request.body(Full::new(Bytes::new())) else {
        return (
            StatusCode::BAD_REQUEST,
            Bytes::from_static(b"bad request\n"),
        );
    };
    match send(downstream, request).await {
        Ok((status, body)) => (status, body),
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            Bytes::from(format!("the downstream service did not answer: {e}\n")),
        ),
    }
}

/// One HTTP/1.1 request on a connection of its own.
async fn send(
    addr: &str,
    request: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), Box<dyn std::error::Error + Send + Sync>> {
    let stream = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::TcpStream::connect(addr),
    )
    .await??;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let response = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        sender.send_request(request),
    )
    .await??;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

//! The policy explorer as its tests drive it: one HTTP request with curl,
//! `/api/policy` read, a request in the JSON form the explorer shows asked
//! of gRPC `Check`, and a candidate policy that widens known cells.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test support: a failed setup must fail the test that asked for it"
)]

use purposegate_proto::v1 as pb;
use serde_json::Value;

use crate::{ServerProcess, channel, curl, default_policy_text};

/// One HTTP/1.1 request to the explorer with curl: (status, headers, body).
pub fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
    body: Option<&str>,
) -> (u16, String, String) {
    let url = format!("http://{addr}{path}");
    // curl's own HEAD (-I) knows no body follows.
    let mut args = if method == "HEAD" {
        vec!["-I"]
    } else {
        vec!["-X", method]
    };
    for h in headers {
        args.extend(["-H", h]);
    }
    if let Some(body) = body {
        args.extend(["--data-binary", body]);
    }
    args.push(&url);
    let got = curl(&args);
    (got.status, got.headers, got.body)
}

pub fn policy_json(server: &ServerProcess) -> Value {
    let (status, _, body) = http(server.admin_addr.unwrap(), "GET", "/api/policy", &[], None);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// A request in its JSON form (the explorer's examples, the CLI's input)
/// as the protobuf message, for `Check` over gRPC.
pub fn to_proto(json: &Value) -> pb::CheckRequest {
    let text = |v: &Value| v.as_str().unwrap_or("").to_string();
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().map(text).collect())
            .unwrap_or_default()
    };
    let map = |v: &Value| -> std::collections::HashMap<String, String> {
        v.as_object()
            .map(|o| o.iter().map(|(k, v)| (k.clone(), text(v))).collect())
            .unwrap_or_default()
    };
    let resource = &json["resource"];
    let deidentification = match resource["deidentification"].as_str() {
        None => pb::Deidentification::Unspecified,
        Some(name) => pb::Deidentification::from_str_name(&name.to_uppercase().replace('-', "_"))
            .unwrap_or_else(|| panic!("no state {name}")),
    };
    pb::CheckRequest {
        subject: Some(pb::Subject {
            id: text(&json["subject"]["id"]),
            tenant: text(&json["subject"]["tenant"]),
            roles: list(&json["subject"]["roles"]),
        }),
        resource: Some(pb::Resource {
            category: text(&resource["category"]),
            owner_tenant: text(&resource["ownerTenant"]),
            data_subject: text(&resource["dataSubject"]),
            deidentification: deidentification.into(),
            group_size: resource["groupSize"].as_u64().unwrap_or(0),
            origin: list(&resource["origin"]),
            attributes: map(&resource["attributes"]),
        }),
        purpose: text(&json["purpose"]),
        action: String::new(),
        context: Some(pb::Context {
            customer_instruction: text(&json["context"]["customerInstruction"]),
            attributes: map(&json["context"]["attributes"]),
        }),
        supported_obligations: list(&json["supportedObligations"]),
        request_id: String::new(),
        ..Default::default()
    }
}

/// What gRPC `Check` answers for a request in its JSON form: decision,
/// rule ids and reason.
pub async fn check_over_grpc(
    server: &ServerProcess,
    request: &Value,
) -> (String, Vec<String>, String) {
    let answer =
        pb::decision_service_client::DecisionServiceClient::new(channel(&server.url()).await)
            .check(to_proto(request))
            .await
            .unwrap()
            .into_inner();
    (
        answer.decision().as_str_name().to_string(),
        answer.rule_ids.clone(),
        answer.reason,
    )
}

/// The default policy with a rule that permits billing on customer data
/// whatever its state: customer data for billing widened (and diagnostic
/// data derived from it).
pub fn billing_anything() -> String {
    format!(
        "{}\n  - id: billing-anything\n    effect: permit\n    dataCategories: [customer-data]\n    purposes: [lbo.billing]\n",
        default_policy_text().trim_end()
    )
}

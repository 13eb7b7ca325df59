//! Sidecar injection: from an `AdmissionReview` (admission.k8s.io/v1) for
//! a Pod to the review's answer, with a JSONPatch that adds the sidecar.
//!
//! Pure: bytes in, bytes out. A pod is injected when it is selected (its
//! label `purposegate.io/inject: enabled`, or its namespace's when the
//! webhook is called on the namespace path), not disabled by
//! `purposegate.io/inject: disabled`, and has no sidecar yet.

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, HTTPGetAction, Pod, Probe,
    ResourceRequirements, SeccompProfile, SecurityContext, TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube_core::DynamicObject;
use kube_core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use serde_json::{Value, json};

/// The pod label (and namespace label) that selects injection.
pub const INJECT_LABEL: &str = "purposegate.io/inject";
/// The app's port the sidecar forwards to.
pub const UPSTREAM_PORT_ANNOTATION: &str = "purposegate.io/upstream-port";
/// The ConfigMap holding the routes file (key `routes.yaml`).
pub const ROUTES_ANNOTATION: &str = "purposegate.io/routes";
/// The name of the injected container.
pub const SIDECAR_NAME: &str = "purposegate-sidecar";
const ROUTES_VOLUME: &str = "purposegate-routes";
const ROUTES_DIR: &str = "/etc/purposegate/routes";

/// What to do when a review cannot be acted on (the webhook's
/// `failurePolicy`): let the pod in with a warning, or refuse it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FailurePolicy {
    Ignore,
    Fail,
}

/// How injected sidecars are configured.
#[derive(Debug, Clone)]
pub struct SidecarTemplate {
    pub image: String,
    pub pdp: String,
    pub cpu_request: String,
    pub memory_request: String,
    pub memory_limit: String,
    pub failure_policy: FailurePolicy,
}

/// How the pod came to the webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Selected by its own label: it must say `enabled`.
    PodLabel,
    /// Selected by its namespace's label: any pod not `disabled`.
    Namespace,
}

/// Answers a review. `Err` only for a body that is not an AdmissionReview
/// at all (no request to answer): the HTTP layer replies 400.
pub fn review(
    body: &[u8],
    template: &SidecarTemplate,
    selection: Selection,
) -> Result<Vec<u8>, String> {
    let review: AdmissionReview<DynamicObject> = serde_json::from_slice(body)
        .map_err(|e| format!("the body is not an AdmissionReview: {e}"))?;
    let request: AdmissionRequest<DynamicObject> = review
        .try_into()
        .map_err(|_| "the AdmissionReview has no `request`".to_string())?;
    let response = respond(&request, template, selection);
    encode(response)
}

fn respond(
    request: &AdmissionRequest<DynamicObject>,
    template: &SidecarTemplate,
    selection: Selection,
) -> AdmissionResponse {
    let allowed = AdmissionResponse::from(request);
    let cannot = |problem: String| -> AdmissionResponse {
        let response = AdmissionResponse::from(request);
        match template.failure_policy {
            FailurePolicy::Fail => response.deny(format!("purposegate: {problem}")),
            FailurePolicy::Ignore => with_warning(
                response,
                format!("purposegate: {problem}; no sidecar injected"),
            ),
        }
    };
    if request.kind.kind != "Pod" {
        return with_warning(
            allowed,
            format!(
                "purposegate: a {} is not a Pod; nothing injected",
                request.kind.kind
            ),
        );
    }
    let Some(object) = &request.object else {
        return cannot("the review carries no pod".to_string());
    };
    let pod: Pod = match serde_json::to_value(object).and_then(serde_json::from_value) {
        Ok(pod) => pod,
        Err(e) => return cannot(format!("the pod cannot be read: {e}")),
    };
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let selected = match (labels.get(INJECT_LABEL).map(String::as_str), selection) {
        (Some("disabled"), _) => false,
        (Some("enabled"), _) => true,
        (_, Selection::Namespace) => true,
        (_, Selection::PodLabel) => false,
    };
    let spec = pod.spec.clone().unwrap_or_default();
    if !selected || spec.containers.iter().any(|c| c.name == SIDECAR_NAME) {
        return allowed;
    }
    let upstream_port = match annotations.get(UPSTREAM_PORT_ANNOTATION) {
        None => 8080,
        Some(text) => match text.trim().parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => {
                return cannot(format!(
                    "annotation `{UPSTREAM_PORT_ANNOTATION}` must be a port number, found `{text}`"
                ));
            }
        },
    };
    let routes = annotations
        .get(ROUTES_ANNOTATION)
        .map(|s| s.trim().to_string());
    if let Some(name) = &routes {
        if !is_dns_label(name) {
            return cannot(format!(
                "annotation `{ROUTES_ANNOTATION}` must name a ConfigMap, found `{name}`"
            ));
        }
    }
    let patch = patch(
        &spec,
        &sidecar(template, upstream_port, routes.is_some()),
        routes.as_deref(),
    );
    match allowed.with_patch(patch) {
        Ok(response) => response,
        Err(e) => cannot(format!("the patch cannot be written: {e}")),
    }
}

fn with_warning(mut response: AdmissionResponse, warning: String) -> AdmissionResponse {
    response.warnings.get_or_insert_with(Vec::new).push(warning);
    response
}

/// The review with `response`, as the API server reads it: the patch as a
/// base64 string (kube-core writes it as a list of numbers).
fn encode(response: AdmissionResponse) -> Result<Vec<u8>, String> {
    let mut value = serde_json::to_value(response.into_review())
        .map_err(|e| format!("cannot write the review: {e}"))?;
    if let Some(patch) = value.pointer_mut("/response/patch") {
        let bytes: Vec<u8> = serde_json::from_value(patch.take()).unwrap_or_default();
        *patch = Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
    serde_json::to_vec(&value).map_err(|e| format!("cannot write the review: {e}"))
}

/// A Kubernetes object name of the DNS-label kind.
fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn sidecar(template: &SidecarTemplate, upstream_port: u16, routes: bool) -> Container {
    let mut args = vec![
        "--pdp".to_string(),
        template.pdp.clone(),
        "--listen".to_string(),
        "0.0.0.0:15001".to_string(),
        "--local-listen".to_string(),
        "127.0.0.1:15002".to_string(),
        "--metrics-listen".to_string(),
        "0.0.0.0:15090".to_string(),
        "--upstream".to_string(),
        format!("http://127.0.0.1:{upstream_port}"),
        "--log-format".to_string(),
        "json".to_string(),
    ];
    if routes {
        args.push("--routes".to_string());
        args.push(format!("{ROUTES_DIR}/routes.yaml"));
    }
    let quantity = |q: &str| Quantity(q.to_string());
    Container {
        name: SIDECAR_NAME.to_string(),
        image: Some(template.image.clone()),
        // The image holds both binaries; its entrypoint is the server.
        command: Some(vec!["/usr/local/bin/purposegate-sidecar".to_string()]),
        args: Some(args),
        ports: Some(vec![
            ContainerPort {
                name: Some("pg-proxy".into()),
                container_port: 15001,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("pg-metrics".into()),
                container_port: 15090,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
        ]),
        liveness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(15001),
                ..TCPSocketAction::default()
            }),
            period_seconds: Some(10),
            ..Probe::default()
        }),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/metrics".into()),
                port: IntOrString::Int(15090),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(5),
            ..Probe::default()
        }),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), quantity(&template.cpu_request)),
                ("memory".to_string(), quantity(&template.memory_request)),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".to_string(),
                quantity(&template.memory_limit),
            )])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(65532),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: routes.then(|| {
            vec![VolumeMount {
                name: ROUTES_VOLUME.into(),
                mount_path: ROUTES_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            }]
        }),
        ..Container::default()
    }
}

fn patch(
    spec: &k8s_openapi::api::core::v1::PodSpec,
    sidecar: &Container,
    routes: Option<&str>,
) -> json_patch::Patch {
    let mut operations = vec![json!({
        "op": "add",
        "path": "/spec/containers/-",
        "value": sidecar,
    })];
    if let Some(config_map) = routes {
        let volume = Volume {
            name: ROUTES_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map.to_string(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        };
        operations.push(if spec.volumes.as_ref().is_some_and(|v| !v.is_empty()) {
            json!({"op": "add", "path": "/spec/volumes/-", "value": volume})
        } else {
            json!({"op": "add", "path": "/spec/volumes", "value": [volume]})
        });
    }
    // These are well-formed operations by construction.
    serde_json::from_value(Value::Array(operations)).unwrap_or_default()
}

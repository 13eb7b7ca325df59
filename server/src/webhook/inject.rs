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
    CSIVolumeSource, Capabilities, ConfigMapVolumeSource, Container, ContainerPort, HTTPGetAction,
    Pod, Probe, ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext,
    TCPSocketAction, Volume, VolumeMount,
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
/// The sidecar's ports in the pod: proxy, local decision API, metrics. An
/// app on one of them would have the sidecar forward calls to itself.
pub const SIDECAR_PORTS: [u16; 3] = [PROXY_PORT, LOCAL_PORT, METRICS_PORT];
const PROXY_PORT: u16 = 15001;
const LOCAL_PORT: u16 = 15002;
const METRICS_PORT: u16 = 15090;
const SIDECAR_COMMAND: &str = "/usr/local/bin/purposegate-sidecar";
const ROUTES_VOLUME: &str = "purposegate-routes";
const ROUTES_DIR: &str = "/etc/purposegate/routes";
const TLS_VOLUME: &str = "purposegate-tls";
const TLS_DIR: &str = "/etc/purposegate/tls";

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
    pub tls: SidecarTls,
}

/// Where an injected sidecar's certificate (`tls.crt`, `tls.key`) and CA
/// bundle (`ca.crt`) come from, for mutual TLS with the decision server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SidecarTls {
    /// Plaintext to the decision server.
    Off,
    /// A CSI driver that issues each pod its own certificate (cert-manager's
    /// csi-driver-spiffe: `spiffe.csi.cert-manager.io`).
    Csi { driver: String },
    /// A Secret of that name in the pod's namespace.
    Secret { name: String },
}

/// How the pod came to the webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Selected by its own label: it must say `enabled`.
    PodLabel,
    /// Selected by its namespace's label: any pod not `disabled`.
    Namespace,
}

/// Most values (objects, arrays, scalars) a review may hold, and how
/// deep it may nest: a Pod's review holds a few thousand, a few levels
/// deep; these keep a hostile body from costing more than a few megabytes.
const MAX_JSON_VALUES: usize = 20_000;
const MAX_JSON_DEPTH: usize = 32;

/// Counts a JSON text's values and depth with a scan of its bytes, before
/// anything is built from it.
fn json_within_limits(body: &[u8]) -> Result<(), String> {
    let (mut values, mut depth, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                values += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(format!(
                        "the review nests deeper than {MAX_JSON_DEPTH} levels"
                    ));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b',' | b':' => values += 1,
            _ => {}
        }
        if values > MAX_JSON_VALUES {
            return Err(format!(
                "the review holds more than {MAX_JSON_VALUES} values"
            ));
        }
    }
    Ok(())
}

/// Answers a review. `Err` only for a body that is not an AdmissionReview
/// at all (no request to answer): the HTTP layer replies 400.
pub fn review(
    body: &[u8],
    template: &SidecarTemplate,
    selection: Selection,
) -> Result<Vec<u8>, String> {
    json_within_limits(body)?;
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
    if !selected {
        return allowed;
    }
    if let Some(existing) = spec.containers.iter().find(|c| c.name == SIDECAR_NAME) {
        let ours = existing.image.as_deref() == Some(template.image.as_str())
            && existing.command.as_deref() == Some(&[SIDECAR_COMMAND.to_string()][..]);
        return if ours {
            allowed
        } else {
            with_warning(
                allowed,
                format!(
                    "purposegate: the pod already has a container named `{SIDECAR_NAME}` that is not this sidecar; nothing injected, so its calls are not enforced (rename that container)"
                ),
            )
        };
    }
    let upstream_port = match annotations.get(UPSTREAM_PORT_ANNOTATION) {
        None => 8080,
        Some(text) => match text.trim().parse::<u16>() {
            Ok(port) if SIDECAR_PORTS.contains(&port) => {
                return cannot(format!(
                    "annotation `{UPSTREAM_PORT_ANNOTATION}` is `{port}`, one of the sidecar's own ports ({}): the sidecar would forward calls to itself",
                    SIDECAR_PORTS.map(|p| p.to_string()).join(", ")
                ));
            }
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
        &template.tls,
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
        format!("0.0.0.0:{PROXY_PORT}"),
        "--local-listen".to_string(),
        format!("127.0.0.1:{LOCAL_PORT}"),
        "--metrics-listen".to_string(),
        format!("0.0.0.0:{METRICS_PORT}"),
        "--upstream".to_string(),
        format!("http://127.0.0.1:{upstream_port}"),
        "--log-format".to_string(),
        "json".to_string(),
    ];
    if routes {
        args.push("--routes".to_string());
        args.push(format!("{ROUTES_DIR}/routes.yaml"));
    }
    let tls = template.tls != SidecarTls::Off;
    if tls {
        for (flag, file) in [
            ("--tls-cert", "tls.crt"),
            ("--tls-key", "tls.key"),
            ("--tls-client-ca", "ca.crt"),
        ] {
            args.push(flag.to_string());
            args.push(format!("{TLS_DIR}/{file}"));
        }
    }
    let mut mounts = Vec::new();
    if routes {
        mounts.push(VolumeMount {
            name: ROUTES_VOLUME.into(),
            mount_path: ROUTES_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    if tls {
        mounts.push(VolumeMount {
            name: TLS_VOLUME.into(),
            mount_path: TLS_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    let quantity = |q: &str| Quantity(q.to_string());
    Container {
        name: SIDECAR_NAME.to_string(),
        image: Some(template.image.clone()),
        // The image holds both binaries; its entrypoint is the server.
        command: Some(vec![SIDECAR_COMMAND.to_string()]),
        args: Some(args),
        ports: Some(vec![
            ContainerPort {
                name: Some("pg-proxy".into()),
                container_port: PROXY_PORT.into(),
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("pg-metrics".into()),
                container_port: METRICS_PORT.into(),
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
        ]),
        liveness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(PROXY_PORT.into()),
                ..TCPSocketAction::default()
            }),
            period_seconds: Some(10),
            ..Probe::default()
        }),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/metrics".into()),
                port: IntOrString::Int(METRICS_PORT.into()),
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
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
        ..Container::default()
    }
}

fn patch(
    spec: &k8s_openapi::api::core::v1::PodSpec,
    sidecar: &Container,
    routes: Option<&str>,
    tls: &SidecarTls,
) -> json_patch::Patch {
    let mut operations = vec![json!({
        "op": "add",
        "path": "/spec/containers/-",
        "value": sidecar,
    })];
    let mut volumes = Vec::new();
    if let Some(config_map) = routes {
        volumes.push(Volume {
            name: ROUTES_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map.to_string(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    match tls {
        SidecarTls::Off => {}
        SidecarTls::Csi { driver } => volumes.push(Volume {
            name: TLS_VOLUME.into(),
            csi: Some(CSIVolumeSource {
                driver: driver.clone(),
                read_only: Some(true),
                ..CSIVolumeSource::default()
            }),
            ..Volume::default()
        }),
        SidecarTls::Secret { name } => volumes.push(Volume {
            name: TLS_VOLUME.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(name.clone()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        }),
    }
    let mut has_volumes = spec.volumes.as_ref().is_some_and(|v| !v.is_empty());
    for volume in volumes {
        operations.push(if has_volumes {
            json!({"op": "add", "path": "/spec/volumes/-", "value": volume})
        } else {
            json!({"op": "add", "path": "/spec/volumes", "value": [volume]})
        });
        has_volumes = true;
    }
    // These are well-formed operations by construction.
    serde_json::from_value(Value::Array(operations)).unwrap_or_default()
}

#[cfg(test)]
mod tests;

//! The sidecar injection webhook of the real server over HTTPS, fed real
//! AdmissionReview JSON with the real curl; the patched pod is checked
//! against the Kubernetes schema with kubernetes-validate.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers: a failed setup must fail the test"
)]

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use purposegate_tests::{Daemon, Pki, TempDir, curl, repo_root};
use serde_json::Value;

fn fixture(name: &str) -> std::path::PathBuf {
    repo_root().join("tests/fixtures/admission").join(name)
}

/// The webhook's certificate for `127.0.0.1`, renewed in place with a new
/// common name.
fn certificate(pki: &Pki, common_name: &str) -> (String, String) {
    pki.issue_named("webhook", common_name, "IP:127.0.0.1")
}

struct Webhook {
    daemon: Daemon,
    pki: Pki,
    _dir: TempDir,
}

impl Webhook {
    fn start(failure_policy: &str) -> Self {
        Self::start_with(
            failure_policy,
            &["--sidecar-pdp", "http://purposegate.purposegate.svc:50051"],
        )
    }

    fn start_with(failure_policy: &str, extra: &[&str]) -> Self {
        let dir = TempDir::new("webhook");
        let pki = Pki::new(dir.path(), "webhook");
        let (cert, key) = certificate(&pki, "purposegate-webhook-1");
        let mut args = vec![
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--decision-log",
            "off",
            "--webhook-listen",
            "127.0.0.1:0",
            "--webhook-cert",
            &cert,
            "--webhook-key",
            &key,
            "--webhook-failure-policy",
            failure_policy,
            "--sidecar-image",
            "registry.example/purposegate:test",
            "--authzen-listen",
            "off",
        ];
        args.extend_from_slice(extra);
        let daemon = Daemon::start("purposegate-server", &args, &[], &["addr", "webhook_addr"]);
        Webhook {
            daemon,
            pki,
            _dir: dir,
        }
    }

    /// POSTs `body` with curl; (HTTP status, body).
    fn post(&self, path: &str, body: &Path) -> (u16, String) {
        let url = format!("https://{}{path}", self.daemon.addr("webhook_addr"));
        let data = format!("@{}", body.display());
        let got = curl(&[
            "--cacert",
            &self.pki.ca(),
            // No `100 Continue` first, whatever the size.
            "-H",
            "Expect:",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &data,
            &url,
        ]);
        (got.status, got.body)
    }

    /// The `response` of the review for a fixture.
    fn review(&self, path: &str, fixture_name: &str) -> Value {
        let (status, body) = self.post(path, &fixture(fixture_name));
        assert_eq!(status, 200, "{body}");
        let review: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(review["kind"], "AdmissionReview");
        review["response"].clone()
    }
}

fn request_uid(fixture_name: &str) -> Value {
    let review: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(fixture_name)).unwrap()).unwrap();
    review["request"]["uid"].clone()
}

/// The decoded JSONPatch of a response; the API server wants base64.
fn decoded_patch(response: &Value) -> json_patch::Patch {
    assert_eq!(response["patchType"], "JSONPatch");
    let encoded = response["patch"]
        .as_str()
        .expect("the patch is a base64 string");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn pod_of(fixture_name: &str) -> Value {
    let review: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(fixture_name)).unwrap()).unwrap();
    review["request"]["object"].clone()
}

#[test]
fn a_labelled_pod_gets_the_sidecar_and_validates_against_the_kubernetes_schema() {
    let webhook = Webhook::start("fail");
    let response = webhook.review("/inject", "labelled.json");
    assert_eq!(response["uid"], request_uid("labelled.json"));
    assert_eq!(response["allowed"], true);
    let patch = decoded_patch(&response);
    let mut pod = pod_of("labelled.json");
    json_patch::patch(&mut pod, &patch).unwrap();

    let containers = pod["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 2);
    let sidecar = &containers[1];
    assert_eq!(sidecar["name"], "purposegate-sidecar");
    assert_eq!(sidecar["image"], "registry.example/purposegate:test");
    assert_eq!(sidecar["command"][0], "/usr/local/bin/purposegate-sidecar");
    let args: Vec<&str> = sidecar["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let arg = |flag: &str| args[args.iter().position(|a| *a == flag).unwrap() + 1];
    assert_eq!(arg("--pdp"), "http://purposegate.purposegate.svc:50051");
    assert_eq!(arg("--upstream"), "http://127.0.0.1:9000");
    assert_eq!(arg("--routes"), "/etc/purposegate/routes/routes.yaml");
    assert_eq!(sidecar["securityContext"]["runAsNonRoot"], true);
    assert_eq!(sidecar["securityContext"]["readOnlyRootFilesystem"], true);
    assert!(sidecar["readinessProbe"].is_object() && sidecar["livenessProbe"].is_object());
    assert!(sidecar["resources"]["requests"]["memory"].is_string());
    let volumes = pod["spec"]["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 2, "the pod's own volume stays");
    assert_eq!(volumes[1]["configMap"]["name"], "customers-routes");

    assert_valid_pod(&pod);
}

/// The patched pod is a valid Pod for Kubernetes 1.30.
fn assert_valid_pod(pod: &Value) {
    let dir = TempDir::new("patched-pod");
    let path = dir.write("pod.json", &serde_json::to_string_pretty(pod).unwrap());
    let check = Command::new("kubernetes-validate")
        .args(["-k", "1.30.0", "--strict", &path])
        .output()
        .expect("kubernetes-validate is installed (pip install kubernetes-validate)");
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn with_mutual_tls_a_sidecar_gets_its_certificate_from_the_csi_driver() {
    let webhook = Webhook::start_with(
        "fail",
        &[
            "--sidecar-pdp",
            "https://purposegate.purposegate.svc:50051",
            "--sidecar-tls",
            "spiffe-csi",
        ],
    );
    let response = webhook.review("/inject", "labelled.json");
    let mut pod = pod_of("labelled.json");
    json_patch::patch(&mut pod, &decoded_patch(&response)).unwrap();
    let sidecar = &pod["spec"]["containers"][1];
    let args = sidecar["args"].to_string();
    assert!(
        args.contains("\"--tls-cert\",\"/etc/purposegate/tls/tls.crt\""),
        "{args}"
    );
    assert!(args.contains("https://purposegate.purposegate.svc:50051"));
    let tls_volume = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "purposegate-tls")
        .unwrap();
    assert_eq!(tls_volume["csi"]["driver"], "spiffe.csi.cert-manager.io");
    assert_valid_pod(&pod);
}

#[test]
fn the_sidecars_tls_and_its_pdp_address_must_agree() {
    for (pdp, tls) in [
        ("https://purposegate.purposegate.svc:50051", "off"),
        ("http://purposegate.purposegate.svc:50051", "secret"),
    ] {
        let run = purposegate_tests::server_cli(
            &[
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
                "--admin-listen",
                "off",
                "--webhook-listen",
                "127.0.0.1:0",
                "--webhook-cert",
                "/nonexistent.crt",
                "--webhook-key",
                "/nonexistent.key",
                "--sidecar-pdp",
                pdp,
                "--sidecar-tls",
                tls,
            ],
            None,
        );
        assert_eq!(run.code, Some(1), "{run:?}");
        assert!(run.stderr.contains("--sidecar-pdp"), "{}", run.stderr);
    }
}

#[test]
fn unlabelled_disabled_and_already_injected_pods_are_left_alone() {
    let webhook = Webhook::start("fail");
    for (path, name) in [
        ("/inject", "unlabelled.json"),
        ("/inject", "disabled.json"),
        ("/inject-namespace", "disabled.json"),
        ("/inject", "already-injected.json"),
        ("/inject-namespace", "already-injected.json"),
    ] {
        let response = webhook.review(path, name);
        assert_eq!(response["uid"], request_uid(name), "{name}");
        assert_eq!(response["allowed"], true, "{name}");
        assert!(response.get("patch").is_none(), "{path} {name}: {response}");
        // A container of the sidecar's name that this webhook did not
        // make: the pod is admitted unenforced, and the user is told.
        if name == "already-injected.json" {
            assert!(
                response["warnings"][0]
                    .as_str()
                    .unwrap()
                    .contains("not this sidecar"),
                "{response}"
            );
        }
    }
}

#[test]
fn a_pod_in_a_selected_namespace_is_injected_unless_disabled() {
    let webhook = Webhook::start("fail");
    let response = webhook.review("/inject-namespace", "namespace-selected.json");
    let mut pod = pod_of("namespace-selected.json");
    json_patch::patch(&mut pod, &decoded_patch(&response)).unwrap();
    let sidecar = &pod["spec"]["containers"][1];
    assert_eq!(sidecar["name"], "purposegate-sidecar");
    assert!(
        sidecar["args"]
            .to_string()
            .contains("http://127.0.0.1:8080"),
        "the default upstream port: {sidecar}"
    );
    assert!(
        pod["spec"].get("volumes").is_none(),
        "no routes annotation, no volume"
    );
    // The same pod through the pod-label path: not selected.
    let response = webhook.review("/inject", "namespace-selected.json");
    assert!(response.get("patch").is_none());
}

#[test]
fn bad_reviews_get_clear_answers_per_failure_policy_and_the_server_keeps_serving() {
    let strict = Webhook::start("fail");
    let response = strict.review("/inject", "bad-port.json");
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("purposegate.io/upstream-port") && message.contains("`http`"),
        "{message}"
    );

    let lenient = Webhook::start("ignore");
    let response = lenient.review("/inject", "bad-port.json");
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none());
    assert!(
        response["warnings"][0]
            .as_str()
            .unwrap()
            .contains("no sidecar injected"),
        "{response}"
    );

    let response = lenient.review("/inject", "not-a-pod.json");
    assert_eq!(response["allowed"], true);
    assert!(
        response["warnings"][0]
            .as_str()
            .unwrap()
            .contains("not a Pod"),
        "{response}"
    );

    for name in ["no-request.json", "not-json.txt"] {
        let (status, body) = strict.post("/inject", &fixture(name));
        assert_eq!(status, 400, "{name}: {body}");
        assert!(body.contains("AdmissionReview"), "{name}: {body}");
    }
    // Still serving.
    let response = strict.review("/inject", "labelled.json");
    assert_eq!(response["allowed"], true);
}

#[test]
fn a_renewed_certificate_is_served_without_a_restart() {
    let webhook = Webhook::start("fail");
    let subject = |webhook: &Webhook| {
        let out = Command::new("curl")
            .args(["-sv", "--cacert", &webhook.pki.ca()])
            .arg(format!(
                "https://{}/healthz",
                webhook.daemon.addr("webhook_addr")
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .find(|l| l.contains("subject:"))
            .unwrap_or_default()
            .to_string()
    };
    assert!(subject(&webhook).contains("purposegate-webhook-1"));
    // File times have a 1 s grain on some file systems.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    certificate(&webhook.pki, "purposegate-webhook-2");
    assert!(subject(&webhook).contains("purposegate-webhook-2"));
}

#[test]
fn hostile_reviews_are_refused_within_limits() {
    let webhook = Webhook::start("fail");
    let dir = TempDir::new("hostile-reviews");
    // 8 MiB: past the body limit.
    let big = dir.write("big.json", &format!("[{}]", "[],".repeat(2_800_000)));
    let (status, body) = webhook.post("/inject", Path::new(&big));
    assert_eq!(status, 400, "{body}");
    // 400 KiB of nested empty arrays: within the size, past the values.
    let nested = dir.write("nested.json", &format!("[{}[]]", "[],".repeat(130_000)));
    let (status, body) = webhook.post("/inject", Path::new(&nested));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("more than 20000 values"), "{body}");
    let deep = dir.write(
        "deep.json",
        &format!("{}{}", "[".repeat(5000), "]".repeat(5000)),
    );
    let (status, body) = webhook.post("/inject", Path::new(&deep));
    assert_eq!(status, 400, "{body}");
    let peak = webhook.daemon.peak_resident_kib();
    assert!(peak < 64 * 1024, "{peak} KiB");
    // Still answering real reviews.
    let response = webhook.review("/inject", "labelled.json");
    assert_eq!(response["allowed"], true);
}

#[test]
fn wrong_methods_and_paths_are_told_what_is_served() {
    let webhook = Webhook::start("fail");
    let url = |path: &str| format!("https://{}{path}", webhook.daemon.addr("webhook_addr"));
    let ca = webhook.pki.ca();
    let got = curl(&["--cacert", &ca, &url("/inject")]);
    assert_eq!(got.status, 405, "{got:?}");
    assert!(got.headers.contains("allow: post"), "{got:?}");
    let got = curl(&["--cacert", &ca, "-X", "PUT", &url("/inject-namespace")]);
    assert_eq!(got.status, 405, "{got:?}");
    assert!(got.headers.contains("allow: post"), "{got:?}");
    let got = curl(&["--cacert", &ca, "--head", &url("/healthz")]);
    assert_eq!(got.status, 200, "{got:?}");
    let got = curl(&["--cacert", &ca, "-X", "POST", &url("/healthz")]);
    assert_eq!(got.status, 405, "{got:?}");
    assert!(got.headers.contains("allow: get, head"), "{got:?}");
    let got = curl(&["--cacert", &ca, &url("/mutate")]);
    assert_eq!(got.status, 404, "{got:?}");
    assert!(!got.headers.contains("allow:"), "{got:?}");
    assert!(got.body.contains("/inject or /inject-namespace"), "{got:?}");
}

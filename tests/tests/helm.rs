//! The Helm chart through the real Helm engine (helm-python-sdk) and the
//! Kubernetes schemas (kubernetes-validate), by way of `helm/validate.sh`.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers: a failed setup must fail the test"
)]

use std::process::Command;

use purposegate_tests::{Run, repo_root};

fn validate(values: &[&str]) -> Run {
    Command::new(repo_root().join("helm/validate.sh"))
        .args(values.iter().map(|v| repo_root().join(v)))
        .output()
        .unwrap()
        .into()
}

#[test]
fn every_scenario_renders_lints_and_validates() {
    let run = validate(&[]);
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    for scenario in [
        "default-values.yaml",
        "tracing-values.yaml",
        "existing-policy-values.yaml",
        "no-injection-values.yaml",
        "autoscaling-values.yaml",
        "mtls-values.yaml",
        "mtls-cert-manager-values.yaml",
        "network-policy-values.yaml",
        "purpose-contexts-values.yaml",
        "choices-postgres-values.yaml",
    ] {
        assert!(
            run.stdout
                .lines()
                .any(|l| l.starts_with("ok") && l.contains(scenario)),
            "{scenario}:\n{}",
            run.stdout
        );
    }
    assert!(run.stdout.contains("0 problem(s)"), "{}", run.stdout);
}

#[test]
fn a_broken_values_file_fails_naming_the_field() {
    let run = validate(&["tests/fixtures/helm/broken-values.yaml"]);
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("/replicaCount"), "{}", run.stdout);
    assert!(
        run.stdout.contains("/injection/failurePolicy"),
        "{}",
        run.stdout
    );

    let run = validate(&["tests/fixtures/helm/invalid-object-values.yaml"]);
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("Deployment")
            && run
                .stdout
                .contains("requiredDuringSchedulingIgnoredDuringExecution"),
        "{}",
        run.stdout
    );
}

/// The objects the chart renders with `values` (a file under the repo),
/// as JSON; `Err` with Helm's message when it refuses to render.
fn render(values: &str) -> Result<Vec<serde_json::Value>, String> {
    const SCRIPT: &str = r#"
import json, sys
import helm_python as helm
import yaml
chart = helm.Chart.load(sys.argv[1])
with open(sys.argv[2]) as f:
    values = helm.values_from_yaml(f.read()) or {}
try:
    manifests = chart.render(values, name="purposegate", namespace="purposegate", is_install=True)
except Exception as e:
    print(e, file=sys.stderr)
    sys.exit(1)
docs = [d for t, text in sorted(manifests.items()) if not t.endswith("NOTES.txt")
        for d in yaml.safe_load_all(text) if d]
print(json.dumps(docs))
"#;
    let out = Command::new("python3")
        .args(["-c", SCRIPT])
        .arg(repo_root().join("helm/purposegate"))
        .arg(repo_root().join(values))
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&out.stdout).unwrap())
}

fn object<'a>(docs: &'a [serde_json::Value], kind: &str, name: &str) -> &'a serde_json::Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn mutual_tls_is_switched_on_in_values() {
    let docs = render("helm/purposegate/ci/mtls-values.yaml").unwrap();
    let server = &object(&docs, "Deployment", "purposegate")["spec"]["template"]["spec"];
    let args = server["containers"][0]["args"].to_string();
    for arg in [
        "--tls-cert=/etc/purposegate/tls/tls.crt",
        "--tls-client-ca=/etc/purposegate/tls/ca.crt",
        "--sidecar-pdp=https://purposegate.purposegate.svc:50051",
        "--sidecar-tls=spiffe-csi",
    ] {
        assert!(args.contains(arg), "{arg}: {args}");
    }
    assert!(
        server["volumes"]
            .to_string()
            .contains("\"secretName\":\"purposegate-server-tls\""),
        "{}",
        server["volumes"]
    );
    // The kubelet's gRPC probe cannot speak TLS.
    assert!(server["containers"][0]["readinessProbe"]["tcpSocket"].is_object());

    let docs = render("helm/purposegate/ci/mtls-cert-manager-values.yaml").unwrap();
    let certificate = object(&docs, "Certificate", "purposegate-tls");
    assert_eq!(certificate["spec"]["issuerRef"]["name"], "purposegate-ca");
    let args = object(&docs, "Deployment", "purposegate")["spec"]["template"]["spec"]["containers"]
        [0]["args"]
        .to_string();
    assert!(args.contains("--sidecar-tls=secret"), "{args}");

    let refused = render("tests/fixtures/helm/tls-without-certificate-values.yaml").unwrap_err();
    assert!(
        refused.contains("tls.enabled needs tls.secretName"),
        "{refused}"
    );
}

#[test]
fn network_policies_keep_callers_on_the_sidecar_and_the_webhook_to_the_api_server() {
    let docs = render("helm/purposegate/ci/network-policy-values.yaml").unwrap();
    for namespace in ["crm", "billing"] {
        let policy = docs
            .iter()
            .find(|d| d["kind"] == "NetworkPolicy" && d["metadata"]["namespace"] == namespace)
            .unwrap_or_else(|| panic!("no NetworkPolicy in {namespace}"));
        assert_eq!(
            policy["spec"]["podSelector"]["matchLabels"]["purposegate.io/inject"],
            "enabled"
        );
        let ports: Vec<i64> = policy["spec"]["ingress"][0]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["port"].as_i64().unwrap())
            .collect();
        assert_eq!(ports, [15001, 15090], "only the sidecar's ports");
    }
    let server = object(&docs, "NetworkPolicy", "purposegate");
    let webhook_rule = server["spec"]["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["ports"][0]["port"] == "webhook")
        .unwrap();
    assert_eq!(webhook_rule["from"][0]["ipBlock"]["cidr"], "10.0.0.0/24");
    // On by default: the server's ports and nothing else.
    let docs = render("helm/purposegate/ci/default-values.yaml").unwrap();
    object(&docs, "NetworkPolicy", "purposegate");
}

#[test]
fn the_authzen_port_is_served_and_reached_like_grpc() {
    let docs = render("helm/purposegate/ci/default-values.yaml").unwrap();
    let server = &object(&docs, "Deployment", "purposegate")["spec"]["template"]["spec"];
    let args = server["containers"][0]["args"].to_string();
    assert!(args.contains("--authzen-listen=0.0.0.0:8181"), "{args}");
    assert!(
        server["containers"][0]["ports"]
            .to_string()
            .contains(r#""containerPort":8181,"name":"authzen""#),
        "{}",
        server["containers"][0]["ports"]
    );
    let service = object(&docs, "Service", "purposegate");
    assert!(
        service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "authzen" && p["port"] == 8181),
        "{service}"
    );
    // Reached by whoever may call gRPC.
    let policy = object(&docs, "NetworkPolicy", "purposegate");
    assert!(
        policy["spec"]["ingress"][0]["ports"]
            .to_string()
            .contains(r#""port":"authzen""#),
        "{policy}"
    );
}

#[test]
fn purpose_contexts_are_signed_for_the_sidecars_only() {
    let docs = render("helm/purposegate/ci/purpose-contexts-values.yaml").unwrap();
    let server = &object(&docs, "Deployment", "purposegate")["spec"]["template"]["spec"];
    let args = server["containers"][0]["args"].to_string();
    for arg in [
        "--purpose-signing-key=/etc/purposegate/purpose-key/key.pem",
        "--purpose-context-ttl=30s",
        // The sidecars' own identity, which no app holds.
        "--purpose-context-issuers=spiffe://cluster.local/purposegate-sidecar/*",
    ] {
        assert!(args.contains(arg), "{arg}: {args}");
    }
    assert!(
        server["volumes"]
            .to_string()
            .contains("\"secretName\":\"purposegate-purpose-key\""),
        "{}",
        server["volumes"]
    );
    // Without a key, nothing of it.
    let docs = render("helm/purposegate/ci/default-values.yaml").unwrap();
    let args = object(&docs, "Deployment", "purposegate")["spec"]["template"]["spec"]["containers"]
        [0]["args"]
        .to_string();
    assert!(!args.contains("--purpose"), "{args}");
    // A key without issuers: no default could tell a sidecar from its app.
    let refused =
        render("tests/fixtures/helm/purpose-key-without-issuers-values.yaml").unwrap_err();
    assert!(
        refused.contains("purposeContexts.issuers must name"),
        "{refused}"
    );
}

#[test]
fn choices_are_shared_through_postgres_or_kept_to_one_replica() {
    let docs = render("helm/purposegate/ci/choices-postgres-values.yaml").unwrap();
    let deployment = object(&docs, "Deployment", "purposegate");
    assert_eq!(deployment["spec"]["replicas"], 3);
    let server = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert!(
        server["args"]
            .to_string()
            .contains("--choices-writers=spiffe://cluster.local/ns/consent/sa/consent-platform"),
        "{}",
        server["args"]
    );
    let env = server["env"].as_array().unwrap();
    let url = env
        .iter()
        .find(|e| e["name"] == "PURPOSEGATE_CHOICES_DB")
        .unwrap_or_else(|| panic!("{env:?}"));
    assert_eq!(
        url["valueFrom"]["secretKeyRef"]["name"],
        "purposegate-choices-db"
    );
    assert_eq!(url["valueFrom"]["secretKeyRef"]["key"], "url");
    assert!(
        server["args"]
            .to_string()
            .contains("--choices-db-ca=/etc/purposegate/choices-db-ca/ca.crt"),
        "{}",
        server["args"]
    );
    assert!(
        deployment["spec"]["template"]["spec"]["volumes"]
            .to_string()
            .contains("\"secretName\":\"purposegate-choices-db-ca\""),
        "{}",
        deployment["spec"]["template"]["spec"]["volumes"]
    );
    // Writers without a shared database: one replica, or no render.
    let refused = render("tests/fixtures/helm/choices-in-memory-replicas-values.yaml").unwrap_err();
    assert!(refused.contains("choices.database.urlSecret"), "{refused}");
    let one = render("tests/fixtures/helm/choices-in-memory-one-replica-values.yaml").unwrap();
    let deployment = object(&one, "Deployment", "purposegate");
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert!(
        !deployment["spec"]["template"]["spec"]["containers"][0]["env"]
            .to_string()
            .contains("PURPOSEGATE_CHOICES_DB")
    );
}

use super::*;

fn template(tls: SidecarTls) -> SidecarTemplate {
    SidecarTemplate {
        image: "registry.example/purposegate:test".into(),
        pdp: "https://purposegate.purposegate.svc:50051".into(),
        cpu_request: "50m".into(),
        memory_request: "32Mi".into(),
        memory_limit: "128Mi".into(),
        failure_policy: FailurePolicy::Fail,
        tls,
    }
}

/// The labelled pod of the test fixtures, changed by `edit`.
fn review_of(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut review: Value = serde_json::from_str(include_str!(
        "../../../../tests/fixtures/admission/labelled.json"
    ))
    .unwrap();
    edit(&mut review["request"]["object"]);
    serde_json::to_vec(&review).unwrap()
}

fn response(body: &[u8], template: &SidecarTemplate) -> Value {
    let answer = review(body, template, Selection::PodLabel).unwrap();
    serde_json::from_slice::<Value>(&answer).unwrap()["response"].clone()
}

fn patched(response: &Value) -> Value {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().unwrap())
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    let mut pod: Value = serde_json::from_str(include_str!(
        "../../../../tests/fixtures/admission/labelled.json"
    ))
    .unwrap();
    let mut pod = pod["request"]["object"].take();
    json_patch::patch(&mut pod, &patch).unwrap();
    pod
}

#[test]
fn hostile_json_is_refused_before_it_is_built() {
    let many = format!("[{}]", vec!["[]"; 100_000].join(","));
    assert!(
        review(
            many.as_bytes(),
            &template(SidecarTls::Off),
            Selection::PodLabel
        )
        .unwrap_err()
        .contains("more than 20000 values")
    );
    let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
    assert!(
        review(
            deep.as_bytes(),
            &template(SidecarTls::Off),
            Selection::PodLabel
        )
        .unwrap_err()
        .contains("deeper than 32")
    );
    // A real review passes.
    let body = review_of(|_| {});
    assert!(review(&body, &template(SidecarTls::Off), Selection::PodLabel).is_ok());
    // Brackets inside strings are text.
    assert!(
        json_within_limits(br#"{"a":"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}"#)
            .is_ok()
    );
}

#[test]
fn an_upstream_port_of_the_sidecar_itself_is_refused() {
    for port in SIDECAR_PORTS {
        let body = review_of(|pod| {
            pod["metadata"]["annotations"][UPSTREAM_PORT_ANNOTATION] =
                Value::String(port.to_string());
        });
        let r = response(&body, &template(SidecarTls::Off));
        assert_eq!(r["allowed"], false, "{port}: {r}");
        assert!(
            r["status"]["message"]
                .as_str()
                .unwrap()
                .contains("one of the sidecar's own ports"),
            "{r}"
        );
    }
}

#[test]
fn a_container_of_the_sidecars_name_that_is_not_ours_is_warned_about() {
    let stranger = review_of(|pod| {
        pod["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": SIDECAR_NAME, "image": "evil/proxy:1"}));
    });
    let r = response(&stranger, &template(SidecarTls::Off));
    assert_eq!(r["allowed"], true);
    assert!(r.get("patch").is_none());
    assert!(
        r["warnings"][0]
            .as_str()
            .unwrap()
            .contains("not this sidecar"),
        "{r}"
    );

    let ours = review_of(|pod| {
        pod["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({
                "name": SIDECAR_NAME,
                "image": "registry.example/purposegate:test",
                "command": [SIDECAR_COMMAND],
            }));
    });
    let r = response(&ours, &template(SidecarTls::Off));
    assert_eq!(r["allowed"], true);
    assert!(r.get("warnings").is_none(), "{r}");
}

#[test]
fn sidecars_get_their_certificate_from_a_csi_driver_or_a_secret() {
    let body = review_of(|_| {});
    let pod = patched(&response(
        &body,
        &template(SidecarTls::Csi {
            driver: "spiffe.csi.cert-manager.io".into(),
        }),
    ));
    let sidecar = &pod["spec"]["containers"][1];
    let args = sidecar["args"].to_string();
    for flag in ["--tls-cert", "--tls-key", "--tls-client-ca", "https://"] {
        assert!(args.contains(flag), "{flag}: {args}");
    }
    assert!(sidecar["volumeMounts"].to_string().contains(TLS_DIR));
    let volumes = pod["spec"]["volumes"].to_string();
    assert!(volumes.contains("spiffe.csi.cert-manager.io"), "{volumes}");
    assert!(volumes.contains("customers-routes"), "{volumes}");

    let pod = patched(&response(
        &body,
        &template(SidecarTls::Secret {
            name: "sidecar-tls".into(),
        }),
    ));
    assert!(
        pod["spec"]["volumes"]
            .to_string()
            .contains("\"secretName\":\"sidecar-tls\"")
    );
}

//! Mutual TLS on the real server with certificates made by the real
//! openssl: it refuses plaintext and strangers, picks up rotated files,
//! and says which TLS flag is missing. The sidecar's side is
//! `tls_sidecar.rs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers: a failed setup must fail the test"
)]

use purposegate_tests::{Pki, Run, TempDir, eventually, grpcurl, metric, mtls_server};

const CHECK: &str =
    r#"{"purpose":"provide","subject":{"id":"crm"},"resource":{"category":"customer-data"}}"#;

/// `grpcurl` with the given TLS flags, calling `Check` on `addr`.
fn check_over(addr: std::net::SocketAddr, tls: &[&str]) -> Run {
    let target = addr.to_string();
    let mut args = tls.to_vec();
    // A refused client retries until its connect timeout.
    args.extend_from_slice(&[
        "-connect-timeout",
        "2",
        "-d",
        CHECK,
        &target,
        "purposegate.v1.DecisionService/Check",
    ]);
    grpcurl(&args, None)
}

fn permitted(run: &Run) -> bool {
    run.code == Some(0) && run.stdout.contains("\"decision\": \"PERMIT\"")
}

#[tokio::test]
async fn the_server_refuses_plaintext_and_strangers_and_follows_rotated_files() {
    let dir = TempDir::new("tls-server");
    let trust = Pki::new(dir.path(), "trust");
    let rogue = Pki::new(dir.path(), "rogue");
    let (server, clients_ca) = mtls_server(&dir, &trust, &[]);
    let (client_cert, client_key) =
        trust.issue("client", "URI:spiffe://example.org/ns/shop/sa/sidecar");
    let (rogue_cert, rogue_key) =
        rogue.issue("client", "URI:spiffe://example.org/ns/shop/sa/sidecar");
    let trusted = [
        "-cacert",
        &trust.ca(),
        "-cert",
        &client_cert,
        "-key",
        &client_key,
    ];
    let stranger = [
        "-cacert",
        &trust.ca(),
        "-cert",
        &rogue_cert,
        "-key",
        &rogue_key,
    ];

    // Connections that never start their handshake hold up no one.
    let _silent: Vec<std::net::TcpStream> = (0..3)
        .map(|_| std::net::TcpStream::connect(server.addr).unwrap())
        .collect();
    let answer = check_over(server.addr, &trusted);
    assert!(permitted(&answer), "{answer:?}");

    let plaintext = check_over(server.addr, &["-plaintext"]);
    assert_ne!(
        plaintext.code,
        Some(0),
        "plaintext was served: {plaintext:?}"
    );
    let anonymous = check_over(server.addr, &["-cacert", &trust.ca()]);
    assert_ne!(
        anonymous.code,
        Some(0),
        "a client without a certificate was served: {anonymous:?}"
    );
    let refused = check_over(server.addr, &stranger);
    assert_ne!(
        refused.code,
        Some(0),
        "a certificate of another CA was accepted: {refused:?}"
    );
    // None of that hurt the server, and each was counted.
    assert!(permitted(&check_over(server.addr, &trusted)));
    let failures = metric(
        &server.metrics(),
        "purposegate_tls_handshake_failures_total",
    )
    .unwrap();
    assert!(failures >= 3.0, "{failures} failed handshakes counted");

    // Rotate everything to the other CA, the way a Secret update swaps
    // files: the next connection sees the new server certificate and the
    // new client CA, without a restart.
    rogue.issue("server", "IP:127.0.0.1,DNS:localhost");
    let (new_cert, new_key) = (
        dir.path().join("rogue-server.crt"),
        dir.path().join("rogue-server.key"),
    );
    std::fs::copy(&new_key, dir.path().join("trust-server.key.swap")).unwrap();
    std::fs::copy(&new_cert, dir.path().join("trust-server.crt.swap")).unwrap();
    std::fs::rename(
        dir.path().join("trust-server.key.swap"),
        dir.path().join("trust-server.key"),
    )
    .unwrap();
    std::fs::rename(
        dir.path().join("trust-server.crt.swap"),
        dir.path().join("trust-server.crt"),
    )
    .unwrap();
    std::fs::copy(rogue.ca(), format!("{clients_ca}.swap")).unwrap();
    std::fs::rename(format!("{clients_ca}.swap"), &clients_ca).unwrap();
    let rotated = [
        "-cacert",
        &rogue.ca(),
        "-cert",
        &rogue_cert,
        "-key",
        &rogue_key,
    ];
    eventually("the rotated certificate and client CA are used", || async {
        permitted(&check_over(server.addr, &rotated)).then_some(())
    })
    .await;
    // The client CA was rotated too: the old CA's client certificate, with
    // the server's new CA trusted, is refused.
    let old_client = [
        "-cacert",
        &rogue.ca(),
        "-cert",
        &client_cert,
        "-key",
        &client_key,
    ];
    let old = check_over(server.addr, &old_client);
    assert_ne!(
        old.code,
        Some(0),
        "the old client CA still verifies: {old:?}"
    );

    // A broken rewrite keeps the last good files in use, and says so.
    std::fs::write(&clients_ca, "not a certificate").unwrap();
    eventually(
        "the broken client CA is noticed, logged and not used",
        || async {
            (permitted(&check_over(server.addr, &rotated))
                && server.log().iter().any(|l| l.contains("cannot be loaded")))
            .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn the_server_flags_say_what_is_missing() {
    let run = purposegate_tests::server_cli(&["--tls-cert", "/nonexistent.pem"], None);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("--tls-key"), "{}", run.stderr);

    let dir = TempDir::new("tls-flags");
    let junk = dir.write("junk.pem", "junk");
    let run = purposegate_tests::server_cli(
        &[
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "off",
            "--tls-cert",
            &junk,
            "--tls-key",
            &junk,
        ],
        None,
    );
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("junk.pem"), "{}", run.stderr);
}

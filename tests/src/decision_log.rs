//! Parts the decision log tests share: a server run that writes a log,
//! `verify-log` runs, keys, and the edits an attacker without the key can
//! make (re-sealing the chain).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers: a failed setup must fail the test"
)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use pb::decision_service_client::DecisionServiceClient;
use purposegate_proto::v1 as pb;
use serde_json::Value;

use crate::{
    Run, ServerProcess, TempDir, channel, check_request, ed25519_key, openssl, server_cli,
};

/// Asks `requests` of a server writing its decision log to `log` with
/// `extra` flags, then stops it (SIGTERM) so every line is written.
pub async fn logged_run(log: &Path, extra: &[&str], requests: Vec<pb::CheckRequest>) {
    let mut server = logging_server(log, extra);
    ask(&server, requests).await;
    server.signal("TERM");
    assert_eq!(server.exited(Duration::from_secs(10)).await, Some(0));
}

/// A server writing its decision log to `log`.
pub fn logging_server(log: &Path, extra: &[&str]) -> ServerProcess {
    let path = log.display().to_string();
    let mut args = vec![
        "--decision-log",
        path.as_str(),
        "--authzen-listen",
        "off",
        "--admin-listen",
        "off",
    ];
    args.extend_from_slice(extra);
    ServerProcess::start(&args)
}

/// Asks `requests` of `server`, one after another.
pub async fn ask(server: &ServerProcess, requests: Vec<pb::CheckRequest>) {
    let mut client = DecisionServiceClient::new(channel(&server.url()).await);
    for request in requests {
        client.check(request).await.unwrap();
    }
}

pub fn professional(subject_tenant: &str, owner: &str, id: &str) -> pb::CheckRequest {
    let mut r = check_request(
        "professional-services.technical-support",
        "professional-services-data",
    );
    r.subject.as_mut().unwrap().tenant = subject_tenant.into();
    r.resource.as_mut().unwrap().owner_tenant = owner.into();
    r.request_id = id.into();
    r
}

/// Three cross-customer deliveries (DENY), two same-customer ones and one
/// online-services read (PERMIT), one advertising (DENY).
pub fn known_requests() -> Vec<pb::CheckRequest> {
    vec![
        professional("contoso", "fabrikam", "cross-1"),
        professional("contoso", "fabrikam", "cross-2"),
        professional("contoso", "tailspin", "cross-3"),
        professional("contoso", "contoso", "same-1"),
        professional("fabrikam", "fabrikam", "same-2"),
        check_request("provide", "customer-data"),
        check_request("advertising", "customer-data"),
    ]
}

/// `verify-log` of `files` with `flags` (`--public-key`, …).
pub fn verify(files: &[&Path], flags: &[&str]) -> Run {
    let mut args: Vec<String> = vec!["verify-log".into()];
    args.extend(flags.iter().map(|f| f.to_string()));
    args.extend(files.iter().map(|f| f.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    server_cli(&args, None)
}

/// `verify-log --format json`: the run and its finding's type, if any.
pub fn verify_json(files: &[&Path], flags: &[&str]) -> (Run, Option<String>, Value) {
    let mut all = vec!["--format", "json"];
    all.extend_from_slice(flags);
    let run = verify(files, &all);
    let report: Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run:?}"));
    let kind = report["failure"]["type"].as_str().map(str::to_string);
    (run, kind, report)
}

/// Asserts `verify-log` fails with a finding of type `kind`.
pub fn fails_as(files: &[&Path], flags: &[&str], kind: &str) -> Value {
    let (run, got, report) = verify_json(files, flags);
    assert_eq!(run.code, Some(1), "want {kind}: {run:?}");
    assert_eq!(got.as_deref(), Some(kind), "{report:#}");
    report
}

/// Asserts `verify-log` fails with a finding of type `kind` whose words
/// hold `words`.
pub fn fails_saying(files: &[&Path], flags: &[&str], kind: &str, words: &str) -> Value {
    let report = fails_as(files, flags, kind);
    let what = report["failure"]["what"].as_str().unwrap_or_default();
    assert!(what.contains(words), "want {words:?}: {report:#}");
    report
}

/// Asserts `verify-log` passes.
pub fn passes(files: &[&Path], flags: &[&str]) -> Value {
    let (run, got, report) = verify_json(files, flags);
    assert_eq!(run.code, Some(0), "{got:?}: {report:#}");
    report
}

/// An Ed25519 key pair made by openssl: (private, public) PEM paths.
pub fn key_pair(dir: &TempDir, name: &str) -> (String, String) {
    let private = dir.path().join(format!("{name}.pem")).display().to_string();
    let public = dir
        .path()
        .join(format!("{name}.pub.pem"))
        .display()
        .to_string();
    ed25519_key(&private);
    openssl(&["pkey", "-in", &private, "-pubout", "-out", &public]);
    (private, public)
}

pub fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

pub fn write_lines(path: &Path, lines: &[String]) -> PathBuf {
    std::fs::write(
        path,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
    path.to_path_buf()
}

/// The hash a line would carry after `prev`.
pub fn seal_hash(prev: &str, line: &str) -> String {
    use sha2::{Digest, Sha256};
    let cut = line.rfind(",\"hash\":\"").unwrap();
    let body = format!("{}}}", &line[..cut]);
    Sha256::new()
        .chain_update(prev.as_bytes())
        .chain_update(body.as_bytes())
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The hash a line carries.
pub fn hash_of(line: &str) -> String {
    let v: Value = serde_json::from_str(line).unwrap();
    v["hash"].as_str().unwrap().to_string()
}

/// Re-seals `lines` from `from` on as the writer would: what an attacker
/// who knows the format (but not the key) can do. A checkpoint is made to
/// name the new head (its signature cannot be).
pub fn reseal(lines: &mut [String], from: usize) {
    let mut prev: String = if from == 0 {
        "0".repeat(64)
    } else {
        hash_of(&lines[from - 1])
    };
    for line in lines.iter_mut().skip(from) {
        let v: Value = serde_json::from_str(line).unwrap();
        if let Some(head) = v["checkpoint"]["head"].as_str() {
            *line = line.replace(head, &prev);
        }
        let hash = seal_hash(&prev, line);
        let cut = line.rfind(",\"hash\":\"").unwrap();
        *line = format!("{},\"hash\":\"{hash}\"}}", &line[..cut]);
        prev = hash;
    }
}

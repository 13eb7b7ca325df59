//! The decision log written by the real server through every honest
//! sequence — restarts, rotations, crashes while writing, oversized
//! requests, signing turned on, idle hours — verifies with the real
//! `verify-log` (attacks are in decision_log_attacks.rs).

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
use purposegate_tests::decision_log::{
    ask, fails_as, key_pair, known_requests, lines_of, logged_run, logging_server, passes, verify,
    verify_json,
};
use purposegate_tests::{ServerProcess, TempDir, channel, check_request, eventually};
use serde_json::Value;

#[tokio::test]
async fn the_chain_continues_across_a_restart_and_a_rotation() {
    let dir = TempDir::new("chain");
    let log = dir.path().join("decisions.log");
    logged_run(&log, &[], known_requests()).await;
    logged_run(&log, &[], known_requests()).await;
    let lines = lines_of(&log);
    assert!(
        lines[8].contains("\"chain\":\"continued\",\"prev_seq\":8"),
        "{}",
        lines[8]
    );
    let run = verify(&[&log], &[]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout.contains("OK: 16 lines in 1 file, seq 1 to 16"),
        "{run:?}"
    );

    // Rotation by size: the file renamed FILE.<seq>, a new one names the
    // last hash of the one before.
    let rotated = dir.path().join("rotated.log");
    let many: Vec<pb::CheckRequest> = (0..4).flat_map(|_| known_requests()).collect();
    logged_run(&rotated, &["--decision-log-max-bytes", "4Ki"], many).await;
    let mut files = rotated_files(dir.path(), "rotated.log.");
    assert!(files.len() >= 2, "{files:?}");
    for f in &files {
        assert!(
            std::fs::metadata(f).unwrap().len() <= 4096,
            "{}",
            f.display()
        );
    }
    assert!(lines_of(&rotated)[0].contains("\"chain\":\"rotated\""));
    files.push(rotated.clone());
    let all: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let run = verify(&all, &[]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout.contains(&format!(
            "OK: {} lines in {} files",
            4 * 7 + 1 + files.len() - 1,
            files.len()
        )),
        "{run:?}"
    );
    // A file left out in the middle: removed.
    let gap: Vec<&Path> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, p)| *p)
        .collect();
    let report = fails_as(&gap, &[], "removed");
    assert!(
        report["failure"]["what"]
            .as_str()
            .unwrap()
            .contains("does not continue the chain"),
        "{report}"
    );

    // The file moved away while the server runs (logrotate): the next
    // lines go to a new file at the path that continues the chain.
    let moved = dir.path().join("moved.log");
    let mut server = logging_server(&moved, &[]);
    ask(&server, vec![check_request("provide", "customer-data")]).await;
    eventually("the first decision is written", || async {
        (lines_of(&moved).len() == 2).then_some(())
    })
    .await;
    let aside = dir.path().join("moved.log.1");
    std::fs::rename(&moved, &aside).unwrap();
    // The writer looks at the path at least once a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ask(&server, vec![check_request("improve", "customer-data")]).await;
    server.signal("TERM");
    assert_eq!(server.exited(Duration::from_secs(10)).await, Some(0));
    let new_lines = lines_of(&moved);
    assert!(
        new_lines[0].contains("\"chain\":\"rotated\",\"prev_seq\":2"),
        "{new_lines:?}"
    );
    let run = verify(&[&aside, &moved], &[]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout.contains("OK: 4 lines in 2 files, seq 1 to 4"),
        "{run:?}"
    );
}

/// The files whose name begins with `prefix`, oldest first (by when
/// they were last written, as `ls -rt` lists them).
fn rotated_files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| (e.metadata().unwrap().modified().unwrap(), e.path()))
        .collect();
    files.sort();
    files.into_iter().map(|(_, p)| p).collect()
}

#[tokio::test]
async fn a_signed_log_verifies_across_restarts_and_rotations_and_ends_closed() {
    let dir = TempDir::new("signed");
    let (private, public) = key_pair(&dir, "log-key");
    let (_, other_public) = key_pair(&dir, "other-key");
    let log = dir.path().join("decisions.log");
    let signing = [
        "--decision-log-signing-key",
        &private,
        "--decision-log-checkpoint-lines",
        "3",
    ];
    logged_run(&log, &signing, known_requests()).await;
    let lines = lines_of(&log);
    let checkpoints = lines
        .iter()
        .filter(|l| l.contains("\"checkpoint\":"))
        .count();
    assert!(checkpoints >= 3, "{lines:?}");
    let last: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(last["checkpoint"]["closing"], true, "{last}");
    let key = ["--public-key", public.as_str()];
    let report = passes(&[&log], &key);
    assert_eq!(report["signed"], checkpoints);
    assert_eq!(report["closed"], true);
    let run = verify(&[&log], &key);
    assert!(
        run.stdout.contains(&format!(
            "signatures: {checkpoints} checkpoints verified, signed by key "
        )),
        "{run:?}"
    );

    // A restart continues from the closing checkpoint, leaving nothing out;
    // a rotation by size goes on signing.
    let mut more = signing.to_vec();
    more.extend(["--decision-log-max-bytes", "8Ki"]);
    let many: Vec<pb::CheckRequest> = (0..3).flat_map(|_| known_requests()).collect();
    logged_run(&log, &more, many).await;
    let continued = lines_of(&log)
        .into_iter()
        .chain(
            rotated_files(dir.path(), "decisions.log.")
                .iter()
                .flat_map(|f| lines_of(f)),
        )
        .find(|l| l.contains("\"chain\":\"continued\""))
        .unwrap();
    assert!(!continued.contains("left_out"), "{continued}");
    let mut files = rotated_files(dir.path(), "decisions.log.");
    assert!(!files.is_empty());
    files.push(log.clone());
    let all: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let report = passes(&all, &key);
    assert!(report["notes"].as_array().unwrap().is_empty(), "{report:#}");

    // Without the key: counted, not verified. Another key: forged.
    let run = verify(&[&log], &[]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout.contains("not verified (give --public-key)"),
        "{run:?}"
    );
    let report = fails_as(&all, &["--public-key", &other_public], "forged");
    assert!(
        report["failure"]["what"]
            .as_str()
            .unwrap()
            .contains("not a given --public-key"),
        "{report}"
    );
}

/// The bytes of the log `name` and its rotated files in `dir`.
fn bytes_of(dir: &Path, name: &str) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with(name))
        // A file the server renames meanwhile is counted under its new name.
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Many callers at once, so the writer is writing when the process dies.
async fn hammer(server: &ServerProcess, calls: usize) {
    let channel = channel(&server.url()).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let mut client = DecisionServiceClient::new(channel.clone());
        tasks.push(tokio::spawn(async move {
            for j in 0..calls {
                let mut request = check_request(
                    if j % 3 == 0 { "advertising" } else { "provide" },
                    "customer-data",
                );
                request.request_id = format!("r-{i}-{j}-{}", "x".repeat(200));
                if client.check(request).await.is_err() {
                    return;
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

#[tokio::test]
async fn crashes_while_writing_leave_a_log_that_verifies_with_a_note() {
    let dir = TempDir::new("crashes");
    let (private, public) = key_pair(&dir, "log-key");
    for (name, signing) in [
        (
            "signed.log",
            vec!["--decision-log-signing-key", private.as_str()],
        ),
        // Without a key, synced after every batch.
        ("plain.log", vec!["--decision-log-sync", "batch"]),
    ] {
        let log = dir.path().join(name);
        let mut flags = signing.clone();
        flags.extend([
            "--decision-log-checkpoint-lines",
            "50",
            "--decision-log-max-bytes",
            "32Ki",
        ]);
        for round in 0..6u64 {
            let mut server = logging_server(&log, &flags);
            let written = bytes_of(dir.path(), name);
            let load = hammer(&server, 100_000);
            // Killed while the callers are still asking, once this run has
            // written enough to rotate (however slow the machine).
            let grown = eventually("the run writes 48 KiB", || async {
                (bytes_of(dir.path(), name) > written + 48 * 1024).then_some(())
            });
            let kill = async {
                grown.await;
                tokio::time::sleep(Duration::from_millis(round * 30)).await;
            };
            tokio::select! {
                () = load => panic!("the callers stopped before the kill"),
                () = kill => {}
            }
            server.signal("KILL");
            let _ = server.exited(Duration::from_secs(10)).await;
            // A power cut: the last write reached the disk in part. Only
            // what was written since the last sync can be lost: with a key,
            // the lines after the last checkpoint.
            // (Killed while rotating, the path may hold no file at all.)
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let last = text.lines().last().unwrap_or_default().to_string();
            if !last.contains("\"checkpoint\":") && last.len() > 17 && text.ends_with('\n') {
                let len = std::fs::metadata(&log).unwrap().len();
                let file = std::fs::OpenOptions::new().write(true).open(&log).unwrap();
                file.set_len(len - 17).unwrap();
            }
        }
        logged_run(&log, &flags, known_requests()).await;
        let mut files = rotated_files(dir.path(), &format!("{name}."));
        assert!(!files.is_empty(), "{name}: no rotation");
        files.push(log.clone());
        let all: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
        let text: String = files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect();
        // Every restart continued the chain, or (killed while it began a
        // new file) started one in a new file.
        let restarts = ["continued", "started"]
            .map(|how| text.matches(&format!("\"chain\":\"{how}\"")).count());
        assert_eq!(restarts[0] + restarts[1], 7, "{name}: {restarts:?}");
        assert!(
            text.matches("\"torn\":true").count() >= 2,
            "{name}: no cut line"
        );
        if !signing.contains(&"--decision-log-signing-key") {
            // Without a key the chain alone: every cut line accounted for.
            let report = passes(&all, &[]);
            let notes = report["notes"].to_string();
            assert!(!notes.contains("edited"), "{report:#}");
            continue;
        }
        let key = ["--public-key", public.as_str()];
        let open = ["--public-key", public.as_str(), "--allow-open-end"];
        let report = passes(&all, &open);
        let notes = report["notes"].to_string();
        assert!(notes.contains("crash"), "{report:#}");
        // Strictly, a run that did not close is a finding: lines no
        // checkpoint signs, or an end at a checkpoint that was not the
        // last; never an edit.
        let (run, kind, report) = verify_json(&all, &key);
        assert_eq!(run.code, Some(1), "{report:#}");
        assert!(
            matches!(kind.as_deref(), Some("unsigned" | "truncated")),
            "{report:#}"
        );
    }
}

#[tokio::test]
async fn an_oversized_request_is_logged_cut_and_the_chain_holds() {
    let dir = TempDir::new("oversized");
    let (private, public) = key_pair(&dir, "log-key");
    let log = dir.path().join("decisions.log");
    let mut huge = check_request("provide", "customer-data");
    // Control characters are written escaped, six bytes each: a line of
    // about 400 KiB.
    let value = "\u{1}".repeat(1000);
    let resource = huge.resource.as_mut().unwrap();
    for i in 0..32 {
        resource.attributes.insert(format!("a{i}"), value.clone());
    }
    let context = huge.context.get_or_insert_default();
    for i in 0..32 {
        context.attributes.insert(format!("c{i}"), value.clone());
    }
    let signing = ["--decision-log-signing-key", private.as_str()];
    logged_run(
        &log,
        &signing,
        vec![huge.clone(), check_request("advertising", "customer-data")],
    )
    .await;
    let lines = lines_of(&log);
    let line = lines.iter().find(|l| l.contains("\"truncated\"")).unwrap();
    let cut: Value = serde_json::from_str(line).unwrap();
    assert!(
        cut["truncated"]["bytes"].as_u64().unwrap() > 256 * 1024,
        "{cut}"
    );
    assert!(line.len() <= 64 * 1024 + 200);
    assert_eq!(cut["decision"], "PERMIT");
    // A graceful restart and a crash after it: the chain holds.
    logged_run(&log, &signing, vec![huge.clone()]).await;
    let mut server = logging_server(&log, &signing);
    ask(&server, vec![huge]).await;
    server.signal("KILL");
    let _ = server.exited(Duration::from_secs(10)).await;
    logged_run(&log, &signing, known_requests()).await;
    passes(&[&log], &["--public-key", &public, "--allow-open-end"]);
    passes(&[&log], &[]);
    // Its question is not whole: replay says so rather than ask a cut one.
    let log = log.display().to_string();
    let policy = "engine/policies/online-services-dpa.yaml";
    let run = purposegate_tests::server_cli(
        &["replay", "--format", "json", "--policy", policy, &log],
        None,
    );
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(
        report["unreplayed_reasons"]
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.starts_with("cut when it was logged")),
        "{report:#}"
    );
}

#[tokio::test]
async fn signing_turned_on_for_an_unsigned_log_begins_a_signed_file() {
    let dir = TempDir::new("turn-on");
    let (private, public) = key_pair(&dir, "log-key");
    let log = dir.path().join("decisions.log");
    logged_run(&log, &[], known_requests()).await;
    let before = lines_of(&log);
    logged_run(
        &log,
        &["--decision-log-signing-key", &private],
        known_requests(),
    )
    .await;
    let aside = rotated_files(dir.path(), "decisions.log.set-aside.");
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(lines_of(&aside[0]), before);
    let first = &lines_of(&log)[0];
    assert!(
        first.contains("\"chain\":\"started\"") && first.contains("moved aside"),
        "{first}"
    );
    passes(&[&log], &["--public-key", &public]);
    passes(&[&aside[0]], &[]);
}

#[tokio::test]
async fn an_idle_log_is_checkpointed_and_its_checkpoints_kept_elsewhere() {
    let dir = TempDir::new("idle");
    let (private, public) = key_pair(&dir, "log-key");
    let log = dir.path().join("decisions.log");
    let mut server = logging_server(
        &log,
        &[
            "--decision-log-signing-key",
            &private,
            "--decision-log-checkpoint-interval",
            "1s",
        ],
    );
    ask(&server, vec![check_request("provide", "customer-data")]).await;
    eventually("two checkpoints while idle", || async {
        let n = std::fs::read_to_string(&log)
            .unwrap()
            .matches("\"checkpoint\":")
            .count();
        (n >= 2).then_some(())
    })
    .await;
    server.signal("TERM");
    assert_eq!(server.exited(Duration::from_secs(10)).await, Some(0));
    // The process log holds every checkpoint's line, to pass as --expect.
    let expects: Vec<String> = server
        .log()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["expect"].as_str().map(str::to_string))
        .collect();
    assert!(expects.len() >= 3, "{:?}", server.log());
    let mut flags = vec!["--public-key".to_string(), public.clone()];
    for e in &expects {
        flags.extend(["--expect".to_string(), e.clone()]);
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    passes(&[&log], &flags);
}

#[tokio::test]
async fn every_decision_shaped_answer_is_written_with_who_asked_how() {
    let dir = TempDir::new("faces");
    let log = dir.path().join("decisions.log");
    let path = log.display().to_string();
    let mut server = ServerProcess::start(&["--decision-log", &path]);
    // AuthZEN: three kinds of subject with one id.
    let authzen = purposegate_tests::AuthZenClient::new(&server.authzen_url());
    for kind in ["user", "workload", "device"] {
        let body = serde_json::json!({
            "subject": {"type": kind, "id": "crm"},
            "action": {"name": "provide"},
            "resource": {"type": "customer-data", "id": "c-1"},
        });
        assert_eq!(authzen.post("/access/v1/evaluation", &body).await.0, 200);
    }
    let search = serde_json::json!({
        "subject": {"type": "user", "id": "crm"},
        "action": {},
        "resource": {"type": "customer-data", "id": "c-1"},
    });
    assert_eq!(
        authzen.post("/access/v1/search/action", &search).await.0,
        200
    );
    // gRPC's reverse question.
    let mut client = DecisionServiceClient::new(channel(&server.url()).await);
    let mut reverse = check_request("", "customer-data");
    reverse.purpose.clear();
    client.permitted_purposes(reverse).await.unwrap();
    // The explorer's try form, both questions.
    let admin = server.admin_addr.unwrap();
    let (status, _) = purposegate_tests::http_get(
        admin,
        "/?purpose=advertising&category=customer-data&subject=crm",
    );
    assert_eq!(status, 200);
    let (status, _) = purposegate_tests::http_get(admin, "/?category=customer-data&subject=crm");
    assert_eq!(status, 200);
    server.signal("TERM");
    assert_eq!(server.exited(Duration::from_secs(10)).await, Some(0));
    let lines: Vec<Value> = lines_of(&log)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &Value| v.get("via").is_some())
        .collect();
    let seen: Vec<(String, String)> = lines
        .iter()
        .map(|v| {
            (
                v["via"].as_str().unwrap().to_string(),
                v["subject_type"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("authzen.evaluation", "user"),
        ("authzen.evaluation", "workload"),
        ("authzen.evaluation", "device"),
        ("authzen.search.action", "user"),
        ("grpc.PermittedPurposes", ""),
        ("explorer.try", ""),
        ("explorer.try", ""),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(seen, want, "{lines:#?}");
    // The reverse question's answer is the purposes permitted.
    let reverse = &lines[4];
    assert!(reverse.get("decision").is_none(), "{reverse}");
    assert!(
        reverse["permitted"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "provide"),
        "{reverse}"
    );
    assert_eq!(lines[5]["decision"], "DENY", "{}", lines[5]);
    passes(&[&log], &[]);
}

#[tokio::test]
async fn rotated_files_past_the_kept_number_are_deleted_and_the_rest_verifies() {
    let dir = TempDir::new("keep");
    let (private, public) = key_pair(&dir, "log-key");
    let log = dir.path().join("decisions.log");
    let many: Vec<pb::CheckRequest> = (0..6).flat_map(|_| known_requests()).collect();
    let flags = [
        "--decision-log-signing-key",
        private.as_str(),
        "--decision-log-max-bytes",
        "4Ki",
        "--decision-log-keep",
        "2",
    ];
    logged_run(&log, &flags, many).await;
    let mut files = rotated_files(dir.path(), "decisions.log.");
    assert_eq!(files.len(), 2, "{files:?}");
    files.push(log.clone());
    let all: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let report = passes(&all, &["--public-key", &public]);
    assert!(report["follows_seq"].as_u64().unwrap() > 0, "{report:#}");
    // The flag needs a size to rotate at.
    let run = purposegate_tests::server_cli(&["--decision-log-keep", "2"], None);
    assert_eq!(run.code, Some(2), "{run:?}");
}

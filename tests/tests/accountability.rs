//! Accountability with the real binaries: `diff` on policy changes whose
//! effect is known, `replay` of a log the real server wrote, and
//! `verify-log` on real logs and on copies an attacker edited.

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
use purposegate_tests::diffs::{confirm_examples, diff_json, widened};
use purposegate_tests::{
    Run, ServerProcess, TempDir, channel, check_request, default_policy_text,
    default_policy_without_prohibition, ed25519_key, eventually, openssl, server_cli,
};
use serde_json::Value;

const POLICY: &str = "engine/policies/online-services-dpa.yaml";

#[test]
fn diff_finds_a_permit_widened_by_a_new_rule() {
    let dir = TempDir::new("diff-new-rule");
    let new = dir.write(
        "new.yaml",
        &format!(
            "{}\n  - id: billing-anything\n    effect: permit\n    dataCategories: [customer-data]\n    purposes: [lbo.billing]\n",
            default_policy_text().trim_end()
        ),
    );
    let (run, report) = diff_json(POLICY, &new);
    assert_eq!(run.code, Some(1), "{run:?}");
    // Customer data for billing, and (semantic 4) anonymised diagnostic
    // data derived from it, which customer data's own rule held back.
    assert_eq!(
        widened(&report),
        [
            "lbo.billing x customer-data",
            "lbo.billing x diagnostic-data"
        ]
    );
    assert_eq!(report["widened"], 2);
    assert_eq!(report["narrowed"], 0);
    let cell = &report["cells"][0];
    assert_eq!(cell["old"], "conditional");
    assert_eq!(cell["new"], "permit");
    assert_eq!(
        cell["newlyPermitted"]["newRuleIds"],
        serde_json::json!(["billing-anything"])
    );
    assert_eq!(report["rules"][0]["id"], "billing-anything");
    assert_eq!(report["rules"][0]["change"], "added");
    confirm_examples(&report, POLICY, &new);

    // The text and the Markdown say the same.
    let text = server_cli(&["diff", POLICY, &new], None);
    assert_eq!(text.code, Some(1));
    assert!(
        text.stdout
            .contains("  lbo.billing x customer-data: conditional -> permit, widens"),
        "{text:?}"
    );
    assert!(
        text.stdout.contains(
            "result: this change widens what data may be used for: 2 cells newly permit requests"
        ),
        "{text:?}"
    );
    let md = server_cli(&["diff", "--format", "markdown", POLICY, &new], None);
    assert_eq!(md.code, Some(1));
    assert!(
        md.stdout
            .contains("| `lbo.billing` | `customer-data` | conditional | permit | widens |"),
        "{md:?}"
    );
}

#[test]
fn diff_finds_a_prohibition_removed() {
    let dir = TempDir::new("diff-no-prohibition");
    let new = dir.write(
        "new.yaml",
        &default_policy_text().replace(
            "    purposes: [professional-services]\n    when: { sameTenant: false }\n",
            "    purposes: [professional-services]\n    when: { sameTenant: false }\n    mode: monitor\n",
        ),
    );
    let (run, report) = diff_json(POLICY, &new);
    assert_eq!(run.code, Some(1), "{run:?}");
    let mut want: Vec<String> = [
        "professional-services",
        "professional-services.technical-support",
        "professional-services.planning",
        "professional-services.consulting",
        "professional-services.guidance",
        "professional-services.data-migration",
        "professional-services.deployment",
        "professional-services.solution-development",
    ]
    .iter()
    .map(|p| format!("{p} x professional-services-data"))
    .collect();
    want.sort();
    assert_eq!(widened(&report), want);
    // The rule that refused it before is the one set to monitor.
    for cell in report["cells"].as_array().unwrap() {
        assert_eq!(
            cell["newlyPermitted"]["oldRuleIds"],
            serde_json::json!(["no-cross-customer-delivery"]),
            "{cell}"
        );
    }
    confirm_examples(&report, POLICY, &new);

    // Removing a prohibition that no permit stands behind newly permits
    // nothing: advertising becomes not applicable, still refused.
    let lifted = dir.write("lifted.yaml", &default_policy_without_prohibition());
    let (run, report) = diff_json(POLICY, &lifted);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(report["widened"], 0);
    assert!(
        report["cells"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["purpose"] == "advertising"
                && c["old"] == "deny"
                && c["new"] == "not-applicable"),
        "{report}"
    );
    assert_eq!(report["rules"][0]["change"], "removed");
}

#[test]
fn diff_finds_a_condition_loosened() {
    let dir = TempDir::new("diff-loosened");
    let new = dir.write(
        "new.yaml",
        &default_policy_text()
            .replace("minAggregationGroupSize: 50", "minAggregationGroupSize: 10"),
    );
    let (run, report) = diff_json(POLICY, &new);
    assert_eq!(run.code, Some(1), "{run:?}");
    // Every LBO on every category: diagnostic data too, where it is
    // derived from another category (anonymised is enough for diagnostic
    // data itself, not for its origin).
    let mut want = Vec::new();
    for p in [
        "lbo",
        "lbo.billing",
        "lbo.compensation",
        "lbo.internal-reporting",
        "lbo.fraud-defense",
        "lbo.core-functionality",
        "lbo.financial-reporting",
    ] {
        for c in [
            "customer-data",
            "diagnostic-data",
            "service-generated-data",
            "professional-services-data",
        ] {
            want.push(format!("{p} x {c}"));
        }
    }
    want.sort();
    assert_eq!(widened(&report), want);
    for cell in report["cells"].as_array().unwrap() {
        assert_eq!(
            (&cell["old"], &cell["new"]),
            (&"conditional".into(), &"conditional".into())
        );
        let k = cell["newlyPermitted"]["request"]["resource"]["groupSize"]
            .as_u64()
            .unwrap();
        assert!((10..50).contains(&k), "{cell}");
    }
    assert_eq!(
        report["other"],
        serde_json::json!(["setting `minAggregationGroupSize`: 50 -> 10"])
    );
    confirm_examples(&report, POLICY, &new);
}

#[test]
fn diff_of_a_rename_changes_no_flow_and_exits_0() {
    let dir = TempDir::new("diff-rename");
    let new = dir.write(
        "new.yaml",
        &default_policy_text().replace("  - id: online-services\n", "  - id: online-services-v2\n"),
    );
    let (run, report) = diff_json(POLICY, &new);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(report["cells"], serde_json::json!([]));
    assert_eq!(report["widened"], 0);
    let changes: Vec<(String, String)> = report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().into(),
                r["change"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            ("online-services-v2".to_string(), "added".to_string()),
            ("online-services".to_string(), "removed".to_string())
        ]
    );
    let text = server_cli(&["diff", POLICY, &new], None);
    assert!(
        text.stdout.contains("result: nothing is newly permitted"),
        "{text:?}"
    );

    // The same policy: no change at all.
    let same = server_cli(&["diff", POLICY, POLICY], None);
    assert_eq!(same.code, Some(0), "{same:?}");
    assert!(same.stdout.contains("no change"), "{same:?}");
}

#[test]
fn diff_of_an_invalid_policy_exits_2_with_its_diagnostics() {
    let dir = TempDir::new("diff-invalid");
    let bad = dir.write(
        "bad.yaml",
        &default_policy_text().replace("purposes: [lbo]\n", "purposes: [lbo.biling]\n"),
    );
    let run = server_cli(&["diff", POLICY, &bad], None);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr.contains("did you mean `lbo.billing`?"),
        "{run:?}"
    );
    assert!(run.stdout.is_empty(), "{run:?}");
}

/// Asks `requests` of a server writing its decision log to `log` with
/// `extra` flags, then stops it (SIGTERM) so every line is written.
async fn logged_run(log: &Path, extra: &[&str], requests: Vec<pb::CheckRequest>) {
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
    let mut server = ServerProcess::start(&args);
    let mut client = DecisionServiceClient::new(channel(&server.url()).await);
    for request in requests {
        client.check(request).await.unwrap();
    }
    server.signal("TERM");
    assert_eq!(server.exited(Duration::from_secs(10)).await, Some(0));
}

fn professional(subject_tenant: &str, owner: &str, id: &str) -> pb::CheckRequest {
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
fn known_requests() -> Vec<pb::CheckRequest> {
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

#[tokio::test]
async fn replay_counts_what_a_changed_policy_would_flip_in_a_real_log() {
    let dir = TempDir::new("replay");
    let log = dir.path().join("decisions.log");
    logged_run(&log, &[], known_requests()).await;
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text.lines().find(|l| l.contains("\"cross-1\"")).unwrap();
    let line: Value = serde_json::from_str(line).unwrap();
    // The whole question is in the line.
    assert_eq!(line["tenant"], "contoso");
    assert_eq!(line["owner_tenant"], "fabrikam");
    assert_eq!(line["purpose"], "professional-services.technical-support");

    // Without the cross-customer rule the three denials become permits.
    let new = dir.write(
        "new.yaml",
        &default_policy_text().replace(
            "    purposes: [professional-services]\n    when: { sameTenant: false }\n",
            "    purposes: [professional-services]\n    when: { sameTenant: false }\n    mode: monitor\n",
        ),
    );
    let logs = log.display().to_string();
    let run = server_cli(
        &["replay", "--policy", &new, "--format", "json", &logs],
        None,
    );
    assert_eq!(run.code, Some(1), "{run:?}");
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["decisions"], 7);
    assert_eq!(report["flipped"], 3);
    assert_eq!(report["newly_permitted"], 3);
    assert_eq!(report["unreplayed"], 0);
    assert_eq!(report["flips"][0]["from"], "DENY");
    assert_eq!(report["flips"][0]["to"], "PERMIT");
    assert_eq!(report["flips"][0]["decisions"], 3);
    assert_eq!(
        report["flips"][0]["examples"][0]["request"]["requestId"],
        "cross-1"
    );
    assert_eq!(
        report["cells"],
        serde_json::json!([{
            "purpose": "professional-services.technical-support",
            "category": "professional-services-data",
            "from": "DENY", "to": "PERMIT", "decisions": 3
        }])
    );
    let text = server_cli(&["replay", "--policy", &new, &logs], None);
    assert!(
        text.stdout
            .contains("flipped: 3 decisions, 3 of them newly permitted"),
        "{text:?}"
    );
    assert!(
        text.stdout.contains("  DENY -> PERMIT: 3 decisions"),
        "{text:?}"
    );

    // Under the policy that wrote it, nothing flips.
    let same = server_cli(&["replay", "--policy", POLICY, &logs], None);
    assert_eq!(same.code, Some(0), "{same:?}");
    assert!(
        same.stdout.contains("replayed 7 decisions (7 lines)"),
        "{same:?}"
    );
    assert!(same.stdout.contains("no decision flips"), "{same:?}");
}

#[tokio::test]
async fn replay_says_which_redacted_fields_it_lacked() {
    let dir = TempDir::new("replay-redacted");
    // Subjects hashed (no rule reads them) and both tenants hashed (equal
    // stays equal): every line replays.
    let hashed = dir.path().join("hashed.log");
    logged_run(
        &hashed,
        &[
            "--decision-log-redact",
            "subject=hash,tenant=hash,owner_tenant=hash",
        ],
        known_requests(),
    )
    .await;
    let text = std::fs::read_to_string(&hashed).unwrap();
    assert!(
        !text.contains("contoso") && !text.contains("\"crm\""),
        "{text}"
    );
    let run = server_cli(
        &["replay", "--policy", POLICY, &hashed.display().to_string()],
        None,
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("replayed 7 decisions"), "{run:?}");

    // The owner dropped: the tenancy rule cannot be decided again.
    let dropped = dir.path().join("dropped.log");
    logged_run(
        &dropped,
        &["--decision-log-redact", "owner_tenant"],
        known_requests(),
    )
    .await;
    let run = server_cli(
        &["replay", "--policy", POLICY, &dropped.display().to_string()],
        None,
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("not replayed: 7 lines"), "{run:?}");
    assert!(
        run.stdout
            .contains("lacks `owner_tenant` (redacted by the log), which the policy reads"),
        "{run:?}"
    );
    // A field that cannot be hashed is refused at start.
    let bad = server_cli(&["--decision-log-redact", "group_size=hash"], None);
    assert_eq!(bad.code, Some(2), "{bad:?}");
    assert!(
        bad.stderr.contains("`group_size` can only be dropped"),
        "{bad:?}"
    );
}

fn verify(files: &[&Path], key: Option<&str>) -> Run {
    let mut args: Vec<String> = vec!["verify-log".into()];
    if let Some(key) = key {
        args.extend(["--public-key".into(), key.into()]);
    }
    args.extend(files.iter().map(|f| f.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    server_cli(&args, None)
}

/// An Ed25519 key pair made by openssl: (private, public) PEM paths.
fn key_pair(dir: &TempDir, name: &str) -> (String, String) {
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

fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) -> PathBuf {
    std::fs::write(
        path,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
    path.to_path_buf()
}

/// Re-seals `lines` from `from` on as the writer would: what an attacker
/// who knows the format (but not the key) can do.
fn reseal(lines: &mut [String], from: usize) {
    use sha2::{Digest, Sha256};
    let mut prev: String = if from == 0 {
        "0".repeat(64)
    } else {
        let v: Value = serde_json::from_str(&lines[from - 1]).unwrap();
        v["hash"].as_str().unwrap().to_string()
    };
    for line in lines.iter_mut().skip(from) {
        // A checkpoint is made to name the new head (its signature cannot be).
        let v: Value = serde_json::from_str(line).unwrap();
        if let Some(head) = v["checkpoint"]["head"].as_str() {
            *line = line.replace(head, &prev);
        }
        let cut = line.rfind(",\"hash\":\"").unwrap();
        let body = format!("{}}}", &line[..cut]);
        let hash: String = Sha256::new()
            .chain_update(prev.as_bytes())
            .chain_update(body.as_bytes())
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        *line = format!("{},\"hash\":\"{hash}\"}}", &line[..cut]);
        prev = hash;
    }
}

#[tokio::test]
async fn verify_log_names_the_line_an_attacker_touched() {
    let dir = TempDir::new("verify");
    let log = dir.path().join("decisions.log");
    logged_run(&log, &[], known_requests()).await;
    let ok = verify(&[&log], None);
    assert_eq!(ok.code, Some(0), "{ok:?}");
    assert!(
        ok.stdout
            .contains("OK: 8 lines in 1 file, seq 1 to 8\nhead: "),
        "{ok:?}"
    );
    let lines = lines_of(&log);
    assert_eq!(lines.len(), 8);

    let fails = |name: &str, lines: &[String], line: usize, what: &str| {
        let copy = write_lines(&dir.path().join(name), lines);
        let run = verify(&[&copy], None);
        assert_eq!(run.code, Some(1), "{name}: {run:?}");
        let want = format!("FAIL: {}:{line}: {what}", copy.display());
        assert!(
            run.stdout.contains(&want),
            "{name}: want {want:?} in {run:?}"
        );
    };
    // A denial turned into a permit.
    let mut edited = lines.clone();
    edited[2] = edited[2].replace("\"DENY\"", "\"PERMIT\"");
    assert_ne!(edited, lines);
    fails("edited", &edited, 3, "edited");
    // A line taken out.
    let mut removed = lines.clone();
    removed.remove(3);
    fails("removed", &removed, 4, "removed: seq 4 is missing");
    // A line slipped in with the seq of the one it precedes.
    let mut inserted = lines.clone();
    let forged = lines[4].replace("same-1", "same-9");
    assert_ne!(forged, lines[4]);
    inserted.insert(4, forged);
    fails("inserted", &inserted, 5, "inserted");
    // Two lines swapped.
    let mut swapped = lines.clone();
    swapped.swap(2, 3);
    fails("swapped", &swapped, 3, "reordered");
    // The file cut inside its last line.
    let cut = dir.path().join("cut");
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::write(&cut, &text[..text.len() - 20]).unwrap();
    let run = verify(&[&cut], None);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stdout
            .contains(&format!("FAIL: {}:8: cut short", cut.display())),
        "{run:?}"
    );
    // A file that cannot be read.
    let run = verify(&[&dir.path().join("nothing")], None);
    assert_eq!(run.code, Some(2), "{run:?}");
}

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
    let run = verify(&[&log], None);
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
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.display().to_string().contains("rotated.log."))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    for f in &files {
        assert!(
            std::fs::metadata(f).unwrap().len() <= 4096,
            "{}",
            f.display()
        );
    }
    let first_of_current = &lines_of(&rotated)[0];
    assert!(
        first_of_current.contains("\"chain\":\"rotated\""),
        "{first_of_current}"
    );
    files.push(rotated.clone());
    let all: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let run = verify(&all, None);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout.contains(&format!(
            "OK: {} lines in {} files",
            4 * 7 + 1 + files.len() - 1,
            files.len()
        )),
        "{run:?}"
    );
    // A file left out in the middle breaks the chain there.
    let gap: Vec<&Path> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, p)| *p)
        .collect();
    let run = verify(&gap, None);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stdout.contains("does not continue the chain"),
        "{run:?}"
    );

    // The file moved away while the server runs (logrotate): the next
    // lines go to a new file at the path that continues the chain.
    let moved = dir.path().join("moved.log");
    let path = moved.display().to_string();
    let mut server = ServerProcess::start(&["--decision-log", &path, "--authzen-listen", "off"]);
    let mut client = DecisionServiceClient::new(channel(&server.url()).await);
    client
        .check(check_request("provide", "customer-data"))
        .await
        .unwrap();
    eventually("the first decision is written", || async {
        (lines_of(&moved).len() == 2).then_some(())
    })
    .await;
    let aside = dir.path().join("moved.log.1");
    std::fs::rename(&moved, &aside).unwrap();
    // The writer looks at the path at least once a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    client
        .check(check_request("improve", "customer-data"))
        .await
        .unwrap();
    server.signal("TERM");
    assert_eq!(server.exited(Duration::from_secs(10)).await, Some(0));
    let new_lines = lines_of(&moved);
    assert!(
        new_lines[0].contains("\"chain\":\"rotated\",\"prev_seq\":2"),
        "{new_lines:?}"
    );
    let run = verify(&[&aside, &moved], None);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout.contains("OK: 4 lines in 2 files, seq 1 to 4"),
        "{run:?}"
    );
}

#[tokio::test]
async fn signed_checkpoints_verify_and_a_forged_one_does_not() {
    let dir = TempDir::new("signed");
    let (private, public) = key_pair(&dir, "log-key");
    let (_, other_public) = key_pair(&dir, "other-key");
    let log = dir.path().join("decisions.log");
    logged_run(
        &log,
        &[
            "--decision-log-signing-key",
            &private,
            "--decision-log-checkpoint-lines",
            "3",
        ],
        known_requests(),
    )
    .await;
    let lines = lines_of(&log);
    let checkpoints = lines
        .iter()
        .filter(|l| l.contains("\"checkpoint\":"))
        .count();
    assert!(checkpoints >= 3, "{lines:?}");
    let run = verify(&[&log], Some(&public));
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout.contains(&format!(
            "signatures: {checkpoints} checkpoints verified, signed by key "
        )),
        "{run:?}"
    );
    // At shutdown the head is signed: nothing is left unsigned.
    assert!(
        lines.last().unwrap().contains("\"checkpoint\":"),
        "{lines:?}"
    );

    // A restart continues the chain it signed itself.
    logged_run(
        &log,
        &["--decision-log-signing-key", &private],
        known_requests(),
    )
    .await;
    let run = verify(&[&log], Some(&public));
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        lines_of(&log)
            .iter()
            .any(|l| l.contains("\"chain\":\"continued\""))
    );
    // A log someone else wrote (sealed, but never signed by this key) is
    // not continued, so the server's checkpoints never vouch for it.
    let planted = dir.path().join("planted.log");
    let mut fake = lines[..3].to_vec();
    fake.retain(|l| !l.contains("\"checkpoint\":"));
    fake[1] = fake[1].replace("\"DENY\"", "\"PERMIT\"");
    reseal(&mut fake, 0);
    write_lines(&planted, &fake);
    logged_run(
        &planted,
        &["--decision-log-signing-key", &private],
        known_requests(),
    )
    .await;
    let run = verify(&[&planted], Some(&public));
    assert_eq!(
        run.code,
        Some(1),
        "the server vouched for a planted log: {run:?}"
    );
    assert!(
        lines_of(&planted)
            .iter()
            .any(|l| l.contains("not follow a checkpoint this server's key signed"))
    );

    // Without the key: counted, not verified.
    let run = verify(&[&log], None);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout.contains("not verified (give --public-key)"),
        "{run:?}"
    );
    // Another key: refused.
    let run = verify(&[&log], Some(&other_public));
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stdout.contains("which is not a given --public-key"),
        "{run:?}"
    );

    // An attacker edits a denial and re-seals the chain from there: the
    // chain holds, the next checkpoint's signature does not.
    let mut forged = lines.clone();
    let at = forged.iter().position(|l| l.contains("\"DENY\"")).unwrap();
    forged[at] = forged[at].replace("\"DENY\"", "\"PERMIT\"");
    reseal(&mut forged, at);
    let copy = write_lines(&dir.path().join("forged.log"), &forged);
    let chain_only = verify(&[&copy], None);
    assert_eq!(
        chain_only.code,
        Some(0),
        "the re-sealed chain holds: {chain_only:?}"
    );
    let run = verify(&[&copy], Some(&public));
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stdout
            .contains("forged: this checkpoint's signature does not verify"),
        "{run:?}"
    );
    // A checkpoint forged outright (its signature replaced) is refused too.
    let mut fake = lines.clone();
    let cp = fake
        .iter()
        .position(|l| l.contains("\"checkpoint\":"))
        .unwrap();
    let v: Value = serde_json::from_str(&fake[cp]).unwrap();
    let sig = v["checkpoint"]["signature"].as_str().unwrap();
    let mut other = sig.chars().rev().collect::<String>();
    other = other.replace('=', "A");
    fake[cp] = fake[cp].replace(sig, &other);
    reseal(&mut fake, cp);
    let copy = write_lines(&dir.path().join("fake.log"), &fake);
    let run = verify(&[&copy], Some(&public));
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stdout
            .contains(&format!("FAIL: {}:{}: forged", copy.display(), cp + 1)),
        "{run:?}"
    );
}

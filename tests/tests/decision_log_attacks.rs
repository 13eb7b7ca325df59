//! Attacks on the decision log by someone who can write its files but
//! does not hold the signing key, tried against the real server and the
//! real `verify-log` and `replay`: each ends in a non-zero exit with the
//! finding's type.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers: a failed setup must fail the test"
)]

use std::io::Write as _;
use std::time::Duration;

use purposegate_tests::decision_log::{
    ask, fails_as, fails_saying, hash_of, key_pair, known_requests, lines_of, logged_run,
    logging_server, passes, reseal, seal_hash, verify, write_lines,
};
use purposegate_tests::{TempDir, default_policy_text, eventually, server_cli};
use serde_json::Value;

/// A signed log of one closed run: (dir, log, private key, public key).
async fn signed_log(tag: &str) -> (TempDir, std::path::PathBuf, String, String) {
    let dir = TempDir::new(tag);
    let (private, public) = key_pair(&dir, "log-key");
    let log = dir.path().join("decisions.log");
    restart_signed(&log, &private).await;
    (dir, log, private, public)
}

/// A directory, its log's path and a key pair.
fn keyed(tag: &str) -> (TempDir, std::path::PathBuf, String, String) {
    let dir = TempDir::new(tag);
    let (private, public) = key_pair(&dir, "log-key");
    let log = dir.path().join("decisions.log");
    (dir, log, private, public)
}

/// Flags signing with `private`, a checkpoint every three lines.
fn every_three(private: &str) -> [&str; 4] {
    [
        "--decision-log-signing-key",
        private,
        "--decision-log-checkpoint-lines",
        "3",
    ]
}

/// The server run again on `log`, signing with `private`.
async fn restart_signed(log: &std::path::Path, private: &str) {
    logged_run(
        log,
        &["--decision-log-signing-key", private],
        known_requests(),
    )
    .await;
}

/// `line` with `"DENY"` turned into `"PERMIT"`.
fn permit(line: &str) -> String {
    assert!(line.contains("\"DENY\""), "{line}");
    line.replace("\"DENY\"", "\"PERMIT\"")
}

#[tokio::test]
async fn typed_findings_name_the_line_an_attacker_touched() {
    let dir = TempDir::new("typed");
    let log = dir.path().join("decisions.log");
    logged_run(&log, &[], known_requests()).await;
    let lines = lines_of(&log);
    assert_eq!(lines.len(), 8);
    passes(&[&log], &[]);
    let check = |name: &str, lines: &[String], line: u64, kind: &str| {
        let copy = write_lines(&dir.path().join(name), lines);
        let report = fails_as(&[&copy], &[], kind);
        assert_eq!(report["failure"]["line"], line, "{name}: {report:#}");
    };
    let mut edited = lines.clone();
    edited[2] = permit(&edited[2]);
    check("edited", &edited, 3, "edited");
    let mut removed = lines.clone();
    removed.remove(3);
    check("removed", &removed, 4, "removed");
    let mut inserted = lines.clone();
    inserted.insert(4, lines[4].replace("same-1", "same-9"));
    check("inserted", &inserted, 5, "inserted");
    let mut swapped = lines.clone();
    swapped.swap(2, 3);
    check("swapped", &swapped, 3, "reordered");
    // A file cut inside its last line, and a file that cannot be read.
    let cut = dir.path().join("cut");
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::write(&cut, &text[..text.len() - 20]).unwrap();
    fails_as(&[&cut], &[], "truncated");
    assert_eq!(verify(&[&dir.path().join("nothing")], &[]).code, Some(2));
}

#[tokio::test]
async fn lines_appended_after_a_graceful_shutdown_are_never_signed() {
    let (dir, log, private, public) = signed_log("appended").await;
    let key = ["--public-key", public.as_str()];
    let lines = lines_of(&log);
    // Forged decisions after the closing checkpoint, sealed into the chain.
    let mut forged = lines.clone();
    let deny = lines.iter().find(|l| l.contains("\"DENY\"")).unwrap();
    for n in 0..3 {
        let seq = forged.len() + 1;
        let line = permit(deny).replacen(
            &format!(
                "{{\"seq\":{}",
                serde_json::from_str::<Value>(deny).unwrap()["seq"]
            ),
            &format!("{{\"seq\":{seq}"),
            1,
        );
        forged.push(line.replace("cross-", &format!("forged-{n}-")));
        let at = forged.len() - 1;
        reseal(&mut forged, at);
    }
    write_lines(&log, &forged);
    fails_as(&[&log], &key, "inserted");
    // The server restarts on it: it continues from its own closing
    // checkpoint and leaves the forgery out, which stays a finding.
    restart_signed(&log, &private).await;
    let after = lines_of(&log);
    let opener = &after[forged.len()];
    assert!(opener.contains("\"left_out\":{\"lines\":3"), "{opener}");
    fails_saying(&[&log], &key, "inserted", "closing checkpoint");
    fails_as(
        &[&log],
        &["--public-key", &public, "--allow-open-end"],
        "inserted",
    );
    drop(dir);
}

#[tokio::test]
async fn an_edit_in_the_unsigned_tail_after_a_crash_is_never_signed() {
    let dir = TempDir::new("crash-edit");
    let (private, public) = key_pair(&dir, "log-key");
    let log = dir.path().join("decisions.log");
    let signing = ["--decision-log-signing-key", private.as_str()];
    let mut server = logging_server(&log, &signing);
    ask(&server, known_requests()).await;
    eventually("the decisions are written", || async {
        (lines_of(&log).len() >= 9).then_some(())
    })
    .await;
    server.signal("KILL");
    let _ = server.exited(Duration::from_secs(10)).await;
    // The attacker turns a denial in the unsigned tail into a permit and
    // seals the chain again.
    let mut lines = lines_of(&log);
    let at = lines.iter().position(|l| l.contains("\"DENY\"")).unwrap();
    lines[at] = permit(&lines[at]);
    reseal(&mut lines, at);
    write_lines(&log, &lines);
    logged_run(&log, &signing, known_requests()).await;
    let key = ["--public-key", public.as_str()];
    fails_saying(&[&log], &key, "unsigned", "signed by no one");
    // Allowed open (a crash), it passes only saying the lines are signed
    // by no one; no checkpoint covers the edited line.
    let report = passes(&[&log], &["--public-key", &public, "--allow-open-end"]);
    assert!(
        report["notes"]
            .to_string()
            .contains("no checkpoint signs them"),
        "{report:#}"
    );
    let after = lines_of(&log);
    let edited_hash = hash_of(&after[at]);
    assert!(
        after
            .iter()
            .all(|l| !l.contains(&format!("\"head\":\"{edited_hash}\""))),
        "a checkpoint signs the edited line"
    );
    // A left-out line edited after the restart no longer matches the
    // digest the restart recorded (and a checkpoint signed).
    let mut later = after.clone();
    later[at] = later[at].replace("cross-", "xross-");
    assert_ne!(later[at], after[at]);
    let copy = write_lines(&dir.path().join("later.log"), &later);
    fails_as(
        &[&copy],
        &["--public-key", &public, "--allow-open-end"],
        "edited",
    );
}

#[tokio::test]
async fn a_file_replaced_around_a_copied_checkpoint_is_neither_continued_nor_verified() {
    let (dir, log, private, public) = signed_log("replaced").await;
    let key = ["--public-key", public.as_str()];
    let lines = lines_of(&log);
    let cp_line = lines
        .iter()
        .rev()
        .find(|l| l.contains("\"checkpoint\":"))
        .unwrap();
    let cp: Value = serde_json::from_str(cp_line).unwrap();
    let signed = &cp["checkpoint"];
    // One line both a `rotated` opener and the copied checkpoint.
    let both = format!(
        "{{\"seq\":{},\"time\":\"t\",\"chain\":\"rotated\",\"prev_seq\":{},\"prev\":\"{}\",\"checkpoint\":{signed},\"hash\":\"x\"}}",
        signed["seq"].as_u64().unwrap() + 1,
        signed["seq"],
        signed["head"].as_str().unwrap(),
    );
    let deny = lines.iter().find(|l| l.contains("\"DENY\"")).unwrap();
    let mut fake = vec![both, permit(deny)];
    let mut prev = signed["head"].as_str().unwrap().to_string();
    for line in &mut fake {
        let hash = seal_hash(&prev, line);
        let cut = line.rfind(",\"hash\":\"").unwrap();
        *line = format!("{},\"hash\":\"{hash}\"}}", &line[..cut]);
        prev = hash;
    }
    let replaced = write_lines(&dir.path().join("replaced.log"), &fake);
    fails_as(&[&replaced], &key, "edited");
    // The opener and the copied checkpoint on lines of their own.
    let opener = fake[0].replace(&format!(",\"checkpoint\":{signed}"), "");
    let hash = seal_hash(signed["head"].as_str().unwrap(), &opener);
    let cut = opener.rfind(",\"hash\":\"").unwrap();
    let mut apart = vec![
        format!("{},\"hash\":\"{hash}\"}}", &opener[..cut]),
        cp_line.clone(),
    ];
    // Numbered as the line after the opener.
    let seq = cp["seq"].as_u64().unwrap();
    apart[1] = apart[1].replacen(
        &format!("{{\"seq\":{seq}"),
        &format!("{{\"seq\":{}", seq + 1),
        1,
    );
    reseal(&mut apart, 1);
    let apart_path = write_lines(&dir.path().join("apart.log"), &apart);
    fails_as(&[&apart_path], &key, "forged");
    // The server restarted on the replaced file does not continue it: it
    // moves it aside and starts a new chain.
    std::fs::copy(&replaced, &log).unwrap();
    restart_signed(&log, &private).await;
    assert!(
        lines_of(&log)[0].contains("moved aside"),
        "{:?}",
        lines_of(&log)
    );
    passes(&[&log], &key);
}

#[tokio::test]
async fn a_log_cut_back_shows_as_truncated() {
    let (dir, log, private, public) = keyed("cut-back");
    let signing = every_three(&private);
    let mut server = logging_server(&log, &signing);
    ask(&server, known_requests()).await;
    server.signal("TERM");
    assert_eq!(server.exited(Duration::from_secs(10)).await, Some(0));
    let expects: Vec<String> = server
        .log()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["expect"].as_str().map(str::to_string))
        .collect();
    let first_run = lines_of(&log);
    logged_run(&log, &signing, known_requests()).await;
    let key = ["--public-key", public.as_str()];
    let lines = lines_of(&log);
    passes(&[&log], &key);
    // Back to an earlier periodic checkpoint: no closing checkpoint.
    let periodic = lines
        .iter()
        .rposition(|l| l.contains("\"closing\":false"))
        .unwrap();
    let cut = write_lines(&dir.path().join("periodic.log"), &lines[..=periodic]);
    fails_as(&[&cut], &key, "truncated");
    // The closing checkpoint taken off: lines signed by no one.
    let cut = write_lines(&dir.path().join("unclosed.log"), &lines[..lines.len() - 1]);
    fails_saying(&[&cut], &key, "unsigned", "closing");
    // The whole second run taken off ends at a closing checkpoint: only a
    // checkpoint kept elsewhere shows the loss.
    let cut = write_lines(&dir.path().join("one-run.log"), &first_run);
    passes(&[&cut], &key);
    let mut flags = key.to_vec();
    let more_expects: Vec<String> = lines
        .iter()
        .filter(|l| l.contains("\"closing\":true"))
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            format!("{}:{}", v["seq"], v["hash"].as_str().unwrap())
        })
        .collect();
    assert!(!expects.is_empty());
    for e in expects.iter().chain(&more_expects) {
        flags.extend(["--expect", e.as_str()]);
    }
    passes(&[&log], &flags);
    fails_as(&[&cut], &flags, "truncated");
    let bad = server_cli(&["verify-log", "--expect", "7:nothex", "x"], None);
    assert_eq!(bad.code, Some(2), "{bad:?}");
    assert!(bad.stderr.contains("64 hex digits"), "{bad:?}");
}

#[tokio::test]
async fn replicas_sharing_a_key_cannot_vouch_for_each_other() {
    let dir = TempDir::new("replicas");
    let (private, public) = key_pair(&dir, "shared-key");
    let (a, b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    for (log, origin) in [(&a, "replica-a"), (&b, "replica-b")] {
        logged_run(
            log,
            &[
                "--decision-log-signing-key",
                &private,
                "--decision-log-origin",
                origin,
            ],
            known_requests(),
        )
        .await;
    }
    let key = ["--public-key", public.as_str()];
    passes(&[&a], &["--public-key", &public, "--origin", "replica-a"]);
    fails_as(
        &[&b],
        &["--public-key", &public, "--origin", "replica-a"],
        "forged",
    );
    // B's lines spliced after A's closed run: another log's checkpoints.
    let mut spliced = lines_of(&a);
    spliced.extend(lines_of(&b));
    let spliced = write_lines(&dir.path().join("spliced.log"), &spliced);
    let (run, _, _) = purposegate_tests::decision_log::verify_json(&[&spliced], &key);
    assert_eq!(run.code, Some(1), "{run:?}");
    // Replica A restarted on B's log does not continue it.
    std::fs::copy(&b, &a).unwrap();
    logged_run(
        &a,
        &[
            "--decision-log-signing-key",
            &private,
            "--decision-log-origin",
            "replica-a",
        ],
        known_requests(),
    )
    .await;
    assert!(lines_of(&a)[0].contains("moved aside"));
    let bad = server_cli(&["--decision-log-origin", "a\nb"], None);
    assert_eq!(bad.code, Some(2), "{bad:?}");
}

#[tokio::test]
async fn an_overlong_line_stops_neither_verify_log_nor_replay() {
    let dir = TempDir::new("overlong");
    let log = dir.path().join("decisions.log");
    logged_run(&log, &[], known_requests()).await;
    let lines = lines_of(&log);
    // 8 MiB of one line, then the log's own lines again.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&log)
        .unwrap();
    writeln!(file, "{}", lines[0]).unwrap();
    writeln!(file, "{{\"decision\":\"{}\"}}", "x".repeat(8 << 20)).unwrap();
    for line in &lines[1..] {
        writeln!(file, "{line}").unwrap();
    }
    drop(file);
    let report = fails_as(&[&log], &[], "inserted");
    assert_eq!(report["oversized"], 1, "{report:#}");
    // replay reads on past it: the denials after it are asked again, and
    // the cross-customer ones are now permitted.
    let policy = dir.path().join("monitor.yaml");
    let text = default_policy_text().replace(
        "    purposes: [professional-services]\n    when: { sameTenant: false }\n",
        "    purposes: [professional-services]\n    when: { sameTenant: false }\n    mode: monitor\n",
    );
    std::fs::write(&policy, text).unwrap();
    let (policy, log) = (policy.display().to_string(), log.display().to_string());
    let run = server_cli(
        &["replay", "--format", "json", "--policy", &policy, &log],
        None,
    );
    let out: Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run:?}"));
    assert_eq!(out["unreplayed"], 1, "{out:#}");
    assert_eq!(out["decisions"], 7, "{out:#}");
    assert_eq!(out["newly_permitted"], 3, "{out:#}");
    assert_eq!(run.code, Some(1), "{run:?}");
}

/// Seals `lines` after `prev` as the writer would (an attacker can).
fn sealed_after(prev: &str, lines: &mut [String]) {
    let mut prev = prev.to_string();
    for line in lines.iter_mut() {
        let hash = seal_hash(&prev, line);
        let cut = line.rfind(",\"hash\":\"").unwrap();
        *line = format!("{},\"hash\":\"{hash}\"}}", &line[..cut]);
        prev = hash;
    }
}

#[tokio::test]
async fn a_made_up_history_under_a_copied_checkpoint_is_never_continued() {
    // A fabricated chain, then a copy of the genuine closing checkpoint
    // whose `hash` names the fabrication's last line (the signature does
    // not cover `hash`): the restarted server must not continue from it.
    let (dir, log, private, public) = signed_log("made-up").await;
    let lines = lines_of(&log);
    let mut fake: Vec<String> = (1..=5)
        .map(|seq| {
            if seq == 1 {
                format!("{{\"seq\":1,\"time\":\"t\",\"chain\":\"started\",\"prev_seq\":0,\"prev\":\"{}\",\"hash\":\"x\"}}", "0".repeat(64))
            } else {
                format!("{{\"seq\":{seq},\"time\":\"t\",\"subject\":\"FABRICATED\",\"purpose\":\"advertising\",\"category\":\"customer-data\",\"decision\":\"PERMIT\",\"hash\":\"x\"}}")
            }
        })
        .collect();
    sealed_after(&"0".repeat(64), &mut fake);
    let closing = lines.last().unwrap().clone();
    let copied = format!(
        "{},\"hash\":\"{}\"}}",
        &closing[..closing.rfind(",\"hash\":\"").unwrap()],
        hash_of(fake.last().unwrap())
    );
    let mut planted = lines.clone();
    planted.push(copied);
    write_lines(&log, &planted);
    restart_signed(&log, &private).await;
    let after = lines_of(&log);
    let opener = after
        .iter()
        .find(|l| l.contains("\"chain\":\"continued\""))
        .unwrap();
    assert!(
        opener.contains(&format!("\"prev\":\"{}\"", hash_of(&closing))),
        "the restart continued from a checkpoint it did not seal: {opener}"
    );
    // The fabrication followed by the server's later lines is no log.
    let at = after.iter().position(|l| l == opener).unwrap();
    let mut spliced = fake.clone();
    spliced.extend(after[at..].iter().cloned());
    let copy = write_lines(&dir.path().join("spliced.log"), &spliced);
    let (run, _, report) = purposegate_tests::decision_log::verify_json(
        &[&copy],
        &["--public-key", &public, "--allow-open-end"],
    );
    assert_eq!(run.code, Some(1), "{report:#}");
}

#[tokio::test]
async fn a_cut_or_a_front_removed_stays_a_finding_after_a_restart() {
    let (dir, log, private, public) = keyed("cut-restart");
    let signing = every_three(&private);
    logged_run(&log, &signing, known_requests()).await;
    let lines = lines_of(&log);
    // Cut back to a periodic checkpoint, then the server restarted on it.
    let periodic = lines
        .iter()
        .position(|l| l.contains("\"closing\":false") && !l.contains("\"from\":1,\"seq\":1,"))
        .unwrap();
    write_lines(&log, &lines[..=periodic]);
    logged_run(&log, &signing, known_requests()).await;
    let key = ["--public-key", public.as_str()];
    fails_saying(&[&log], &key, "truncated", "did not close");
    // The front of the file cut up to the restart's opener.
    let after = lines_of(&log);
    let at = after
        .iter()
        .position(|l| l.contains("\"chain\":\"continued\""))
        .unwrap();
    let front = write_lines(&dir.path().join("front.log"), &after[at..]);
    fails_as(
        &[&front],
        &["--public-key", &public, "--allow-open-end"],
        "removed",
    );
    // Signed lines edited, then a forged restart claiming to leave them
    // out (a new chain, or a continuation from an earlier checkpoint).
    let mut edited = lines[..].to_vec();
    let deny = edited.iter().position(|l| l.contains("\"DENY\"")).unwrap();
    edited[deny] = permit(&edited[deny]);
    let offset: usize = edited.iter().map(|l| l.len() + 1).sum();
    let mut started = vec![format!(
        "{{\"seq\":1,\"time\":\"t\",\"chain\":\"started\",\"prev_seq\":0,\"prev\":\"{}\",\"left_out\":{{\"lines\":0,\"bytes\":{offset},\"sha256\":\"\",\"torn\":false}},\"hash\":\"x\"}}",
        "0".repeat(64)
    )];
    sealed_after(&"0".repeat(64), &mut started);
    let mut forged = edited.clone();
    forged.extend(started);
    let copy = write_lines(&dir.path().join("new-chain.log"), &forged);
    fails_as(
        &[&copy],
        &["--public-key", &public, "--allow-open-end"],
        "edited",
    );
    // …or a restart from the first checkpoint that says it left out all
    // after it, signed checkpoints included.
    use sha2::{Digest, Sha256};
    let first_cp = edited
        .iter()
        .position(|l| l.contains("\"checkpoint\":"))
        .unwrap();
    let after: Vec<&String> = edited[first_cp + 1..].iter().collect();
    let mut run = Sha256::new();
    for line in &after {
        run.update(Sha256::digest(format!("{line}\n").as_bytes()));
    }
    let digest: String = run.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let bytes: usize = after.iter().map(|l| l.len() + 1).sum();
    let cp: Value = serde_json::from_str(&edited[first_cp]).unwrap();
    let prev = cp["hash"].as_str().unwrap();
    let mut continued = vec![format!(
        "{{\"seq\":{},\"time\":\"t\",\"chain\":\"continued\",\"prev_seq\":{},\"prev\":\"{prev}\",\"left_out\":{{\"lines\":{},\"bytes\":{bytes},\"sha256\":\"{digest}\",\"torn\":false}},\"hash\":\"x\"}}",
        cp["seq"].as_u64().unwrap() + 1,
        cp["seq"],
        after.len()
    )];
    sealed_after(prev, &mut continued);
    let mut forged = edited.clone();
    forged.extend(continued);
    let copy = write_lines(&dir.path().join("continued.log"), &forged);
    fails_as(
        &[&copy],
        &["--public-key", &public, "--allow-open-end"],
        "edited",
    );
}

//! `replay`: a decision log asked again under a policy, the report
//! printed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use purposegate_server::policy_files::{self, PolicyLimitArgs};

use purposegate_server::engine::plural;

use super::{ReportFormat, err, out, report_policy_error};

pub fn replay(
    policy_path: &Path,
    format: ReportFormat,
    logs: &[PathBuf],
    limits: &PolicyLimitArgs,
) -> ExitCode {
    let policy = match policy_files::read_policy(policy_path, &limits.limits()) {
        Ok(p) => p,
        Err(e) => {
            report_policy_error(&e);
            return ExitCode::from(2);
        }
    };
    let report = match purposegate_server::replay::replay(&policy, logs) {
        Ok(r) => r,
        Err(e) => {
            err(&format!("error: {e}"));
            return ExitCode::from(2);
        }
    };
    match format {
        ReportFormat::Json => match serde_json::to_string_pretty(&report) {
            Ok(json) => out(&json),
            Err(e) => {
                err(&format!("error: cannot print the report: {e}"));
                return ExitCode::from(2);
            }
        },
        ReportFormat::Text => print_replay(&report),
    }
    if report.newly_permitted > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn print_replay(r: &purposegate_server::replay::Replay) {
    let n = |count: u64, one: &str, many: &str| plural(count as usize, one, many);
    let revisions: Vec<String> = r
        .logged_revisions
        .iter()
        .map(|(rev, count)| format!("{rev} ({count})"))
        .collect();
    out(&format!(
        "replayed {} ({}) under `{}` (revision {}){}",
        n(r.decisions, "decision", "decisions"),
        n(r.lines, "line", "lines"),
        r.policy,
        r.revision,
        if revisions.is_empty() {
            String::new()
        } else {
            format!(", logged under revision {}", revisions.join(", "))
        }
    ));
    if r.flipped == 0 {
        out("no decision flips");
    } else {
        out(&format!(
            "flipped: {}, {} of them newly permitted",
            n(r.flipped, "decision", "decisions"),
            r.newly_permitted
        ));
        for flip in &r.flips {
            out(&format!(
                "  {} -> {}: {}",
                flip.from,
                flip.to,
                n(flip.decisions, "decision", "decisions")
            ));
            for e in &flip.examples {
                let request = serde_json::to_string(&e.request).unwrap_or_default();
                let rules = |ids: &[String]| {
                    if ids.is_empty() {
                        String::new()
                    } else {
                        format!(" by {}", ids.join(", "))
                    }
                };
                out(&format!("    {}: {request}", e.place));
                out(&format!(
                    "      was {}{}, now {}{}: {}",
                    e.was,
                    rules(&e.was_rule_ids),
                    e.now,
                    rules(&e.now_rule_ids),
                    e.now_reason
                ));
            }
        }
        out("by cell:");
        for c in &r.cells {
            out(&format!(
                "  {} x {}: {} -> {}, {}",
                c.purpose,
                c.category,
                c.from,
                c.to,
                n(c.decisions, "decision", "decisions")
            ));
        }
    }
    if r.unreplayed > 0 {
        out(&format!(
            "not replayed: {}",
            n(r.unreplayed, "line", "lines")
        ));
        for (why, count) in &r.unreplayed_reasons {
            out(&format!("  {why}: {}", n(*count, "line", "lines")));
        }
        for u in &r.unreplayed_lines {
            out(&format!("  {}: {}", u.place, u.why));
        }
    }
    let not_listed = [
        (r.revisions_not_listed, "revisions"),
        (r.cells_not_listed, "cells"),
        (r.reasons_not_listed, "reasons"),
    ];
    for (count, what) in not_listed.into_iter().filter(|(c, _)| *c > 0) {
        out(&format!(
            "not listed: {} past the first 1,000 distinct {what}",
            n(count, "decision", "decisions")
        ));
    }
    if r.other_lines > 0 || r.dropped_in_log > 0 {
        out(&format!(
            "not decisions: {} (chain starts, checkpoints, drops, reverse questions); the log says {} dropped",
            n(r.other_lines, "line", "lines"),
            n(r.dropped_in_log, "decision was", "decisions were")
        ));
    }
}

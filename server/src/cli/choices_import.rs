//! `purposegate-server choices import`: choices exported from elsewhere (a
//! consent platform, another store) written into a choices database in one
//! transaction, each line its own event: all of them or, at the first bad
//! line, none. Into a database no server has open.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use purposegate_server::choices::{NewChoice, SqliteChoices, now, validate};
use purposegate_server::engine::{ChoiceState, default_policy};
use purposegate_server::policy_files::{self, PolicyError, PolicyLimitArgs};
use serde::Deserialize;

use super::{err, out};

#[derive(Debug, Args)]
pub(crate) struct ImportArgs {
    /// The choices database (created if missing), as `--choices-db` names
    /// it; no server may have it open.
    #[arg(long)]
    choices_db: PathBuf,
    /// The policy whose purposes the choices name [default: the embedded
    /// default policy].
    #[arg(long)]
    policy: Option<PathBuf>,
    #[command(flatten)]
    limits: PolicyLimitArgs,
    /// Who the events say recorded them.
    #[arg(long, default_value = "import")]
    recorded_by: String,
    /// JSON lines, one choice each: `tenant`, `dataSubject`, `purpose`,
    /// `state` (granted, withdrawn, objected, restricted), `expiresAt`
    /// (RFC 3339), `basis`, `evidence` (`-` or nothing: stdin).
    file: Option<PathBuf>,
}

/// One line of the file.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Line {
    tenant: String,
    #[serde(default)]
    data_subject: String,
    #[serde(default)]
    purpose: String,
    state: String,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    basis: String,
    #[serde(default)]
    evidence: std::collections::BTreeMap<String, String>,
}

/// Longest line read, in bytes: ids, basis and evidence are bounded well
/// below it.
const MAX_LINE_BYTES: usize = 64 * 1024;

pub(crate) fn import(args: ImportArgs) -> ExitCode {
    let policy = match &args.policy {
        Some(path) => policy_files::read_policy(path, &args.limits.limits()),
        None => default_policy::load().map_err(PolicyError::Invalid),
    };
    let policy = match policy {
        Ok(policy) => policy,
        Err(e) => {
            super::report_policy_error(&e);
            return ExitCode::from(2);
        }
    };
    let input: Box<dyn BufRead> = match args.file.as_deref() {
        None => Box::new(std::io::stdin().lock()),
        Some(p) if p.as_os_str() == "-" => Box::new(std::io::stdin().lock()),
        Some(p) => match std::fs::File::open(p) {
            Ok(f) => Box::new(std::io::BufReader::new(f)),
            Err(e) => {
                err(&format!("error: cannot read {}: {e}", p.display()));
                return ExitCode::from(2);
            }
        },
    };
    if purposegate_server::choices::is_postgres(&args.choices_db) {
        err(
            "error: choices import writes into an SQLite database; a PostgreSQL database shared by running servers takes choices through RecordChoice",
        );
        return ExitCode::from(2);
    }
    let store = match SqliteChoices::open(&args.choices_db) {
        Ok(store) => store,
        Err(e) => {
            err(&format!("error: {e}"));
            return ExitCode::from(2);
        }
    };
    let at = now();
    let mut lines = input.split(b'\n').enumerate();
    let choices = std::iter::from_fn(|| {
        loop {
            let (i, line) = lines.next()?;
            let n = i + 1;
            let line = match line {
                Ok(line) => line,
                Err(e) => return Some(Err(format!("line {n}: cannot be read: {e}"))),
            };
            if line.len() > MAX_LINE_BYTES {
                return Some(Err(format!(
                    "line {n}: {} bytes long; at most {MAX_LINE_BYTES} are read",
                    line.len()
                )));
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Some(choice(&line, &policy, at).map_err(|e| format!("line {n}: {e}")));
        }
    });
    match store.import(choices, &args.recorded_by, at) {
        Ok((count, revision)) => {
            out(&format!(
                "imported {count} choices; the database is at revision {revision}"
            ));
            ExitCode::SUCCESS
        }
        Err(e) => {
            err(&format!("error: {e}; nothing was imported"));
            ExitCode::from(1)
        }
    }
}

fn choice(
    line: &[u8],
    policy: &purposegate_server::engine::Policy,
    at: i64,
) -> Result<NewChoice, String> {
    let line: Line = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    let state = line
        .state
        .strip_prefix("CHOICE_STATE_")
        .unwrap_or(&line.state)
        .to_ascii_lowercase();
    let state = ChoiceState::parse(&state).ok_or_else(|| {
        format!(
            "unknown state `{}`; expected granted, withdrawn, objected or restricted",
            line.state
        )
    })?;
    let expires_at = line
        .expires_at
        .as_deref()
        .map(super::choices::parse_time)
        .transpose()?;
    let choice = NewChoice {
        tenant: line.tenant,
        data_subject: line.data_subject,
        purpose: line.purpose,
        state,
        expires_at,
        basis: line.basis,
        evidence: line.evidence,
    };
    validate(&choice, policy, at).map_err(|e| e.to_string())?;
    Ok(choice)
}

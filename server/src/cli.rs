//! The command line: `validate`, `test` and `check`.

mod choices;
mod choices_import;
mod replay;
mod verify_log;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use purposegate_server::engine::{
    self, CaseFile, Context, Decision, DecisionRequest, Deidentification, Policy, Resource,
    Subject, default_policy, plural,
};
use purposegate_server::policy_files::{self, PolicyError, PolicyLimitArgs};
use purposegate_server::serve::{self, ServeArgs};

/// purposegate decision server: decides whether data may be processed for a
/// stated purpose.
///
/// With no command it serves the decision API (gRPC) on --listen.
#[derive(Debug, Parser)]
#[command(
    name = "purposegate-server",
    version,
    about,
    long_about = None,
    args_conflicts_with_subcommands = true,
    term_width = 100
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a policy file or directory; print every problem with
    /// file:line:column. Exit 0 if valid, 1 if not.
    Validate {
        /// A policy file, or a directory whose *.yaml files form one policy.
        path: PathBuf,
        #[command(flatten)]
        limits: PolicyLimitArgs,
    },
    /// Run a policy's test cases. Prints each failing case with what it got
    /// and wanted, then `N passed, M failed`; exit 1 on any failure.
    Test {
        /// A policy file, or a directory whose *.yaml files form one policy.
        policy: PathBuf,
        /// A case file, or a directory of *_test.yaml case files.
        cases: PathBuf,
        /// Print every case, not only the failing ones.
        #[arg(short, long)]
        verbose: bool,
        #[command(flatten)]
        limits: PolicyLimitArgs,
    },
    /// Decide one request, given as flags or as JSON (the protobuf JSON of
    /// CheckRequest, as grpcurl takes it) on stdin or from --json; print the
    /// decision as JSON.
    Check(Box<CheckArgs>),
    /// What a policy change does to data flows: per purpose x data
    /// category, the old and new state and a request the new policy
    /// permits and the old does not (decided by both, asking every
    /// request either policy can tell apart); then rules, purposes and
    /// categories added, removed and changed. Exit 0 when nothing is
    /// newly permitted, 1 when something is or when it cannot tell (a
    /// cell with more requests to ask than its budget), 2 on an invalid
    /// policy.
    Diff {
        /// The policy before the change: a file or a directory.
        old: PathBuf,
        /// The policy after it.
        new: PathBuf,
        /// `text` for a terminal, `json` for tools, `markdown` for a pull
        /// request comment.
        #[arg(long, value_enum, default_value_t = DiffFormat::Text)]
        format: DiffFormat,
        #[command(flatten)]
        limits: PolicyLimitArgs,
    },
    /// Decide every request of decision log files again under a policy;
    /// report the decisions that would flip, by kind (a denial becoming a
    /// permit first) and by purpose x category, with examples, and the
    /// lines that could not be replayed and why. Exit 1 if any logged
    /// refusal would now be permitted, 2 on an invalid policy or a file
    /// that cannot be read.
    Replay {
        /// The policy to decide under: a file or a directory.
        #[arg(long)]
        policy: PathBuf,
        /// `text` for people, `json` for tools.
        #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
        format: ReportFormat,
        /// Decision log files.
        #[arg(required = true, value_name = "LOG")]
        logs: Vec<PathBuf>,
        #[command(flatten)]
        limits: PolicyLimitArgs,
    },
    /// Check the decision log's hash chain, signed checkpoints and what
    /// every restart left out. Give the files in order (rotated ones
    /// first). Prints OK with the count and head hash and exits 0; exits 1
    /// on a finding, typed: edited, removed, inserted, reordered,
    /// truncated, unsigned or forged; 2 if a file cannot be read.
    VerifyLog(verify_log::VerifyLogArgs),
    /// Record and read choices on a running server (its ChoicesService):
    /// what tenants configured and what data subjects said. Exit 0 on an
    /// answer, 1 when the server refused, 2 when it could not be asked.
    #[command(subcommand)]
    Choices(choices::ChoicesCommand),
}

/// How a report is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ReportFormat {
    Text,
    Json,
}

/// How `diff` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DiffFormat {
    Text,
    Json,
    Markdown,
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// Policy file or directory [default: the embedded default policy].
    #[arg(long, env = "PURPOSEGATE_POLICY")]
    policy: Option<PathBuf>,
    #[command(flatten)]
    limits: PolicyLimitArgs,
    /// Read the request as JSON from FILE (`-` for stdin).
    #[arg(long, value_name = "FILE", conflicts_with = "request")]
    json: Option<PathBuf>,
    /// Exit 3 unless the decision is PERMIT.
    #[arg(long)]
    enforce: bool,
    #[command(flatten)]
    request: RequestFlags,
}

/// A request given as flags.
#[derive(Debug, Args)]
#[group(id = "request", multiple = true)]
struct RequestFlags {
    /// Purpose of processing, e.g. `troubleshoot.security-incident`.
    #[arg(long)]
    purpose: Option<String>,
    /// Data category, e.g. `customer-data`.
    #[arg(long)]
    category: Option<String>,
    /// Subject (workload or principal) id.
    #[arg(long)]
    subject: Option<String>,
    /// The customer the subject acts for.
    #[arg(long)]
    tenant: Option<String>,
    /// A role of the subject (repeatable).
    #[arg(long = "role")]
    roles: Vec<String>,
    /// The customer who owns the data.
    #[arg(long)]
    owner_tenant: Option<String>,
    /// Whose data it is, within the owner tenant (their choices are read
    /// where the policy makes a purpose depend on them).
    #[arg(long)]
    data_subject: Option<String>,
    /// De-identification: identified, pseudonymized, unlinked-pseudonymized,
    /// anonymized or aggregated.
    #[arg(long, value_parser = parse_deidentification)]
    deidentification: Option<Deidentification>,
    /// Smallest group size (k) of aggregated data.
    #[arg(long)]
    group_size: Option<u64>,
    /// A category the data was derived from (repeatable).
    #[arg(long = "origin")]
    origins: Vec<String>,
    /// A resource attribute KEY=VALUE (repeatable).
    #[arg(long = "resource-attribute", value_parser = parse_pair)]
    resource_attributes: Vec<(String, String)>,
    /// Reference to the customer's documented instruction.
    #[arg(long)]
    customer_instruction: Option<String>,
    /// A context attribute KEY=VALUE (repeatable).
    #[arg(long = "context-attribute", value_parser = parse_pair)]
    context_attributes: Vec<(String, String)>,
    /// An obligation the caller can fulfil (repeatable).
    #[arg(long = "supported-obligation")]
    supported_obligations: Vec<String>,
    /// What is done to the data (recorded, not decided on).
    #[arg(long)]
    action: Option<String>,
    /// Correlation id echoed in the answer.
    #[arg(long)]
    request_id: Option<String>,
    /// The purpose inherited from upstream (a purpose context): --purpose
    /// must be it or a descendant of it.
    #[arg(long)]
    inherited_purpose: Option<String>,
}

fn parse_deidentification(s: &str) -> Result<Deidentification, String> {
    Deidentification::parse(s).ok_or_else(|| {
        let names = Deidentification::ALL.map(Deidentification::as_str);
        format!("unknown state `{s}`; expected one of {}", names.join(", "))
    })
}

pub(crate) fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Some(Command::Validate { path, limits }) => validate(&path, &limits),
        Some(Command::Test {
            policy,
            cases,
            verbose,
            limits,
        }) => test(&policy, &cases, verbose, &limits),
        Some(Command::Check(args)) => check(*args),
        Some(Command::Diff {
            old,
            new,
            format,
            limits,
        }) => diff(&old, &new, format, &limits),
        Some(Command::Replay {
            policy,
            format,
            logs,
            limits,
        }) => replay::replay(&policy, format, &logs, &limits),
        Some(Command::VerifyLog(args)) => verify_log::verify_log(args),
        Some(Command::Choices(command)) => choices::run(command),
        None => serve::run(cli.serve),
    }
}

/// Writes a line to stdout; a closed pipe is not worth a panic.
pub(crate) fn out(line: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

pub(crate) fn err(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

pub(crate) fn report_policy_error(e: &PolicyError) {
    match e {
        PolicyError::Invalid(diagnostics) => {
            for d in diagnostics
                .iter()
                .take(purposegate_server::engine::MAX_SHOWN)
            {
                err(&format!("error: {d}"));
            }
            let n = diagnostics.len();
            if n > purposegate_server::engine::MAX_SHOWN {
                err(&format!(
                    "error: ... and {}",
                    plural(
                        n - purposegate_server::engine::MAX_SHOWN,
                        "more problem",
                        "more problems"
                    )
                ));
            }
            err(&format!(
                "the policy is invalid: {}",
                plural(n, "problem", "problems")
            ));
        }
        other => err(&format!("error: {other}")),
    }
}

fn validate(path: &Path, limits: &PolicyLimitArgs) -> ExitCode {
    match policy_files::read_policy(path, &limits.limits()) {
        Ok(policy) => {
            out(&format!(
                "{}: valid policy `{}` (revision {}): {}, {}, {}",
                path.display(),
                policy.name(),
                policy.revision(),
                plural(policy.purposes().len(), "purpose", "purposes"),
                plural(
                    policy.categories().len(),
                    "data category",
                    "data categories"
                ),
                plural(policy.rules().len(), "rule", "rules"),
            ));
            ExitCode::SUCCESS
        }
        Err(e) => {
            report_policy_error(&e);
            ExitCode::FAILURE
        }
    }
}

/// Case files: the file itself, or every `*_test.yaml` in a directory.
fn case_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries =
        std::fs::read_dir(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with("_test.yaml") || n.ends_with("_test.yml"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!(
            "`{}` holds no `*_test.yaml` case files",
            path.display()
        ));
    }
    Ok(files)
}

fn test(
    policy_path: &Path,
    cases_path: &Path,
    verbose: bool,
    limits: &PolicyLimitArgs,
) -> ExitCode {
    let policy = match policy_files::read_policy(policy_path, &limits.limits()) {
        Ok(p) => p,
        Err(e) => {
            report_policy_error(&e);
            return ExitCode::FAILURE;
        }
    };
    let files = match case_files(cases_path) {
        Ok(f) => f,
        Err(e) => {
            err(&format!("error: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let (mut passed, mut failed, mut broken) = (0usize, 0usize, 0usize);
    for file in files {
        let name = file.display().to_string();
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                err(&format!("error: cannot read `{name}`: {e}"));
                broken += 1;
                continue;
            }
        };
        let cases = match CaseFile::parse(&name, &text) {
            Ok(c) => c,
            Err(diagnostics) => {
                for d in diagnostics.iter() {
                    err(&format!("error: {d}"));
                }
                broken += 1;
                continue;
            }
        };
        for result in cases.run(&policy) {
            if result.passed() {
                passed += 1;
                if verbose {
                    out(&format!(
                        "ok   {name}:{} {}: {}",
                        result.case.span.line, result.case.name, result.got.decision
                    ));
                }
            } else {
                failed += 1;
                out(&result.describe_failure(&name));
            }
        }
    }
    if broken > 0 {
        // A summary of the cases that ran would read as a result for the
        // whole suite: say instead that some were never run.
        let files = plural(broken, "case file", "case files");
        if passed + failed == 0 {
            err(&format!("no case was run: {files} could not be read"));
        } else {
            err(&format!(
                "{passed} passed, {failed} failed; the cases of {files} were not run: \
                 {} could not be read",
                if broken == 1 { "it" } else { "they" }
            ));
        }
    } else {
        out(&format!("{passed} passed, {failed} failed"));
    }
    if failed > 0 || broken > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn check(args: CheckArgs) -> ExitCode {
    let policy = match &args.policy {
        Some(path) => policy_files::read_policy(path, &args.limits.limits()),
        None => default_policy::load().map_err(PolicyError::Invalid),
    };
    let policy: Policy = match policy {
        Ok(p) => p,
        Err(e) => {
            report_policy_error(&e);
            return ExitCode::FAILURE;
        }
    };
    let request = match request_of(&args) {
        Ok(r) => r,
        Err(e) => {
            err(&format!("error: {e}"));
            return ExitCode::FAILURE;
        }
    };
    if let Err(invalid) = request.validate() {
        err(&format!("error: invalid request: {invalid}"));
        return ExitCode::FAILURE;
    }
    let evaluation = policy.evaluate(&request);
    match serde_json::to_string_pretty(&evaluation) {
        Ok(json) => out(&json),
        Err(e) => {
            err(&format!("error: cannot print the decision: {e}"));
            return ExitCode::FAILURE;
        }
    }
    if args.enforce && evaluation.decision != Decision::Permit {
        return ExitCode::from(3);
    }
    ExitCode::SUCCESS
}

fn request_of(args: &CheckArgs) -> Result<DecisionRequest, String> {
    let from_flags = DecisionRequest::from(&args.request);
    let json_from = match &args.json {
        Some(path) => Some(path.clone()),
        None if from_flags == DecisionRequest::default() => {
            if std::io::stdin().is_terminal() {
                return Err(
                    "give the request as flags (--purpose, --category, ...) or as JSON on stdin"
                        .to_string(),
                );
            }
            Some(PathBuf::from("-"))
        }
        None => None,
    };
    if let Some(path) = json_from {
        let (name, text) = if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| format!("cannot read stdin: {e}"))?;
            ("<stdin>".to_string(), text)
        } else {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
            (path.display().to_string(), text)
        };
        return engine::request_from_json_text(&name, text.as_bytes()).map_err(|d| d.to_string());
    }
    Ok(from_flags)
}

impl From<&RequestFlags> for DecisionRequest {
    fn from(a: &RequestFlags) -> Self {
        DecisionRequest {
            subject: Subject {
                id: a.subject.clone().unwrap_or_default(),
                tenant: a.tenant.clone().unwrap_or_default(),
                roles: a.roles.clone(),
            },
            resource: Resource {
                category: a.category.clone().unwrap_or_default(),
                owner_tenant: a.owner_tenant.clone().unwrap_or_default(),
                data_subject: a.data_subject.clone().unwrap_or_default(),
                deidentification: a.deidentification,
                group_size: a.group_size.filter(|&k| k != 0),
                origin: a.origins.clone(),
                attributes: a
                    .resource_attributes
                    .iter()
                    .cloned()
                    .collect::<BTreeMap<_, _>>(),
            },
            purpose: a.purpose.clone().unwrap_or_default(),
            action: a.action.clone().unwrap_or_default(),
            context: Context {
                customer_instruction: a.customer_instruction.clone().unwrap_or_default(),
                attributes: a
                    .context_attributes
                    .iter()
                    .cloned()
                    .collect::<BTreeMap<_, _>>(),
            },
            supported_obligations: a.supported_obligations.clone(),
            request_id: a.request_id.clone().unwrap_or_default(),
            inherited_purpose: a.inherited_purpose.clone().unwrap_or_default(),
        }
    }
}

fn diff(old: &Path, new: &Path, format: DiffFormat, limits: &PolicyLimitArgs) -> ExitCode {
    let limits = limits.limits();
    let (old, new) = match (
        policy_files::read_policy(old, &limits),
        policy_files::read_policy(new, &limits),
    ) {
        (Ok(old), Ok(new)) => (old, new),
        (old, new) => {
            for e in [old.err(), new.err()].into_iter().flatten() {
                report_policy_error(&e);
            }
            return ExitCode::from(2);
        }
    };
    let diff = old.diff(&new);
    let shown = match format {
        DiffFormat::Text => purposegate_server::diff_report::text(&diff),
        DiffFormat::Markdown => purposegate_server::diff_report::markdown(&diff),
        DiffFormat::Json => match serde_json::to_string_pretty(&diff) {
            Ok(json) => json,
            Err(e) => {
                err(&format!("error: cannot print the diff: {e}"));
                return ExitCode::from(2);
            }
        },
    };
    out(shown.trim_end());
    if diff.widens() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

//! Writes the seed corpus of every fuzz target (`fuzz/`) from the
//! project's test files: `fuzz-seeds <repo root> <corpus dir>`. Lives here,
//! not in `fuzz/`, because everything there is built with coverage
//! instrumentation that only links against libFuzzer.
//!
//! - `policy`: every policy and case file (`engine/policies`,
//!   `engine/tests/semantics`, `engine/tests/invalid`);
//! - `request_text`: each case's request as JSON;
//! - `check_request`: each case's request as protobuf bytes;
//! - `uri_sans`: the PEM certificates under `fuzz/seeds/`, as DER;
//! - `request_path`: the attack paths of the edge tests, and gRPC globs
//!   with a path to match (`pattern\npath`).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use prost::Message;
use purposegate_engine::{CaseFile, DecisionRequest, Deidentification};
use purposegate_proto::v1 as pb;

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn to_proto(request: &DecisionRequest) -> pb::CheckRequest {
    let deidentification = match request.resource.deidentification {
        None => pb::Deidentification::Unspecified,
        Some(Deidentification::Identified) => pb::Deidentification::Identified,
        Some(Deidentification::Pseudonymized) => pb::Deidentification::Pseudonymized,
        Some(Deidentification::UnlinkedPseudonymized) => {
            pb::Deidentification::UnlinkedPseudonymized
        }
        Some(Deidentification::Anonymized) => pb::Deidentification::Anonymized,
        Some(Deidentification::Aggregated) => pb::Deidentification::Aggregated,
    };
    pb::CheckRequest {
        subject: Some(pb::Subject {
            id: request.subject.id.clone(),
            tenant: request.subject.tenant.clone(),
            roles: request.subject.roles.clone(),
        }),
        resource: Some(pb::Resource {
            category: request.resource.category.clone(),
            owner_tenant: request.resource.owner_tenant.clone(),
            data_subject: request.resource.data_subject.clone(),
            deidentification: deidentification.into(),
            group_size: request.resource.group_size.unwrap_or(0),
            origin: request.resource.origin.clone(),
            attributes: request.resource.attributes.clone().into_iter().collect(),
        }),
        purpose: request.purpose.clone(),
        action: request.action.clone(),
        context: Some(pb::Context {
            customer_instruction: request.context.customer_instruction.clone(),
            attributes: request.context.attributes.clone().into_iter().collect(),
        }),
        supported_obligations: request.supported_obligations.clone(),
        request_id: request.request_id.clone(),
        inherited_purpose: request.inherited_purpose.clone(),
        issue_purpose_context: false,
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(name);
    std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn run(root: &Path, corpus: &Path) -> Result<usize, String> {
    let mut written = 0;
    let sources = [
        "engine/policies",
        "engine/tests/semantics",
        "engine/tests/invalid",
    ];
    for source in sources {
        for file in yaml_files(&root.join(source)) {
            let text =
                std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let stem = file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            write(
                &corpus.join("policy"),
                &format!("{stem}.yaml"),
                text.as_bytes(),
            )?;
            written += 1;
            let Ok(cases) = CaseFile::parse(&file.display().to_string(), &text) else {
                continue;
            };
            for (n, case) in cases.cases.iter().enumerate() {
                let json = serde_json::to_vec(&case.request).map_err(|e| e.to_string())?;
                write(
                    &corpus.join("request_text"),
                    &format!("{stem}-{n}.json"),
                    &json,
                )?;
                let proto = to_proto(&case.request).encode_to_vec();
                write(
                    &corpus.join("check_request"),
                    &format!("{stem}-{n}.pb"),
                    &proto,
                )?;
                written += 2;
            }
        }
    }
    for file in std::fs::read_dir(root.join("fuzz/seeds"))
        .map_err(|e| format!("fuzz/seeds: {e}"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
    {
        let text =
            std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let base64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(base64.as_bytes())
            .map_err(|e| format!("{}: not PEM: {e}", file.display()))?;
        let name = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        write(&corpus.join("uri_sans"), &format!("{name}.der"), &der)?;
        written += 1;
    }
    let globs = [
        "/demo.v1.CustomerService/*\n/demo.v1.CustomerService/GetCustomer",
        "/demo.*/*\n/demo.v1.S/Get/x",
        "/*/Get?\n/a.B/Gets",
    ];
    let paths = purposegate_tests::attacks::PATHS_TO_SECRETS
        .iter()
        .map(|p| format!("{p}?q=1"))
        .chain(globs.iter().map(ToString::to_string));
    for (n, seed) in paths.enumerate() {
        write(
            &corpus.join("request_path"),
            &format!("path-{n}.txt"),
            seed.as_bytes(),
        )?;
        written += 1;
    }
    Ok(written)
}

#[allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool reports on stdout and stderr"
)]
fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(root), Some(corpus)) = (args.next(), args.next()) else {
        eprintln!("usage: fuzz-seeds <repo root> <corpus dir>");
        return std::process::ExitCode::from(2);
    };
    match run(Path::new(&root), Path::new(&corpus)) {
        Ok(n) => {
            println!("{n} seeds written to {corpus}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fuzz-seeds: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

//! Reading a policy from disk: one file, or a directory whose `*.yaml`
//! files together form one policy (`*_test.yaml` case files are skipped).
//! This is the I/O edge in front of the engine's pure loader.

use std::fmt;
use std::path::{Path, PathBuf};

use clap::Args;

use crate::engine::{Diagnostics, Policy, PolicyLimits, PolicySource};

/// How large a policy may be: the flags of `serve` and of every command
/// that reads a policy, each with the environment variable it reads.
#[derive(Debug, Clone, Copy, Args)]
pub struct PolicyLimitArgs {
    /// Largest policy, all its files together (e.g. 16Mi, 64Mi); a larger
    /// one is refused with its size before it is read.
    #[arg(long, env = "PURPOSEGATE_MAX_POLICY_BYTES", value_name = "BYTES", default_value = "16Mi", value_parser = purposegate_runtime::units::parse_bytes)]
    pub max_policy_bytes: usize,
    /// Largest policy file (e.g. 16Mi); a larger one is refused with its
    /// size before it is read. A file may hold one value (a scalar, a list,
    /// a mapping) for every 8 bytes of it.
    #[arg(long, env = "PURPOSEGATE_MAX_POLICY_FILE_BYTES", value_name = "BYTES", default_value = "16Mi", value_parser = purposegate_runtime::units::parse_bytes)]
    pub max_policy_file_bytes: usize,
}

impl PolicyLimitArgs {
    /// The engine's limits, naming these flags in their errors.
    pub fn limits(&self) -> PolicyLimits {
        PolicyLimits {
            max_file_bytes: self.max_policy_file_bytes,
            max_bytes: self.max_policy_bytes,
            file_flag: "--max-policy-file-bytes",
            policy_flag: "--max-policy-bytes",
        }
    }
}

/// Why a policy could not be read.
#[derive(Debug)]
pub enum PolicyError {
    /// A file or directory could not be read.
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A directory holds no policy files.
    Empty { path: PathBuf },
    /// The files were read but are not a valid policy.
    Invalid(Diagnostics),
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyError::Io { path, error } => {
                write!(f, "cannot read `{}`: {error}", path.display())
            }
            PolicyError::Empty { path } => write!(
                f,
                "`{}` holds no policy files (`*.yaml` other than `*_test.yaml`)",
                path.display()
            ),
            PolicyError::Invalid(d) => write!(f, "{d}"),
        }
    }
}

impl std::error::Error for PolicyError {}

/// Whether `path` names a policy file (not a test case file).
pub fn is_policy_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let yaml = name.ends_with(".yaml") || name.ends_with(".yml");
    let test = name.ends_with("_test.yaml") || name.ends_with("_test.yml");
    yaml && !test && !name.starts_with('.')
}

/// The files that make up the policy at `path`, sorted by name.
pub fn policy_files(path: &Path) -> Result<Vec<PathBuf>, PolicyError> {
    let io = |error| PolicyError::Io {
        path: path.to_path_buf(),
        error,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(io)? {
        let entry = entry.map_err(io)?;
        let p = entry.path();
        if is_policy_file(&p) && p.is_file() {
            files.push(p);
        }
    }
    if files.is_empty() {
        return Err(PolicyError::Empty {
            path: path.to_path_buf(),
        });
    }
    files.sort();
    Ok(files)
}

/// Reads and loads the policy at `path` (a file or a directory) within
/// `limits`.
pub fn read_policy(path: &Path, limits: &PolicyLimits) -> Result<Policy, PolicyError> {
    let files = policy_files(path)?;
    // Files too large to be a policy, alone or together, are not read into
    // memory at all.
    let mut total: u64 = 0;
    for file in &files {
        let size = std::fs::metadata(file)
            .map_err(|error| PolicyError::Io {
                path: file.clone(),
                error,
            })?
            .len();
        if size > limits.max_file_bytes as u64 {
            return Err(PolicyError::Invalid(Diagnostics(vec![
                limits.file_too_large(&file.display().to_string(), size),
            ])));
        }
        total = total.saturating_add(size);
    }
    if total > limits.max_bytes as u64 {
        let first = files.first().map(|f| f.display().to_string());
        return Err(PolicyError::Invalid(Diagnostics(vec![
            limits.policy_too_large(first.as_deref().unwrap_or("<policy>"), total),
        ])));
    }
    let mut texts = Vec::with_capacity(files.len());
    for file in &files {
        let text = std::fs::read_to_string(file).map_err(|error| PolicyError::Io {
            path: file.clone(),
            error,
        })?;
        texts.push((file.display().to_string(), text));
    }
    let sources: Vec<PolicySource<'_>> = texts
        .iter()
        .map(|(name, text)| PolicySource { name, text })
        .collect();
    // A file that grew between the look and the read is refused here.
    Policy::load_within(&sources, limits).map_err(PolicyError::Invalid)
}

//! Reading a policy from disk: one file, or a directory whose `*.yaml`
//! files together form one policy (`*_test.yaml` case files are skipped).
//! This is the I/O edge in front of the engine's pure loader.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::engine::{Diagnostics, MAX_POLICY_FILE_BYTES, Policy, PolicySource, file_too_large};

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

/// Reads and loads the policy at `path` (a file or a directory).
pub fn read_policy(path: &Path) -> Result<Policy, PolicyError> {
    let files = policy_files(path)?;
    let mut texts = Vec::with_capacity(files.len());
    for file in &files {
        let io = |error| PolicyError::Io {
            path: file.clone(),
            error,
        };
        // A file too large to be a policy is not read into memory at all.
        let size = std::fs::metadata(file).map_err(io)?.len();
        if size > MAX_POLICY_FILE_BYTES as u64 {
            return Err(PolicyError::Invalid(Diagnostics(vec![file_too_large(
                &file.display().to_string(),
                size,
            )])));
        }
        let text = std::fs::read_to_string(file).map_err(io)?;
        texts.push((file.display().to_string(), text));
    }
    let sources: Vec<PolicySource<'_>> = texts
        .iter()
        .map(|(name, text)| PolicySource { name, text })
        .collect();
    Policy::load(&sources).map_err(PolicyError::Invalid)
}

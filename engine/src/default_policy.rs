//! The embedded default policy: the purpose rules of a cloud provider's
//! online-services data-processing terms (explained in docs/default-policy.md).

use super::{Diagnostics, Policy};

/// The file name the default policy is reported under.
pub const FILE: &str = "online-services-dpa.yaml";

/// The default policy's text.
pub const TEXT: &str = include_str!("../policies/online-services-dpa.yaml");

/// Loads the default policy.
pub fn load() -> Result<Policy, Diagnostics> {
    Policy::parse(FILE, TEXT)
}

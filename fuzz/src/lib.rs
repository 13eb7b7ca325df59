//! What the fuzz targets share.

use std::sync::OnceLock;

use purposegate_engine::{Policy, default_policy};

/// The embedded default policy, loaded once.
pub fn default_policy() -> Option<&'static Policy> {
    static POLICY: OnceLock<Option<Policy>> = OnceLock::new();
    POLICY.get_or_init(|| default_policy::load().ok()).as_ref()
}

//! What changed in the choices store lately, as `WatchChoices` reports it:
//! a bounded record of the last changes (tenant, data subject, revision),
//! kept by the server's cache of choices and by each sidecar's decision
//! cache to answer one question safely: may an answer that read the
//! choices at revision R be kept, or did one of its choices change since?
//!
//! An answer read at R is known current when R is at or past the last
//! flush (a gap in the revisions, or a restart of the watch) and no
//! change after R touches its tenant (the tenant's own configuration) or
//! its data subject. When the record no longer reaches back to R, it is
//! not known, and the answer is used once instead of kept.

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};

/// Changes remembered: enough for every answer in flight when they came.
pub const REMEMBERED: usize = 4096;

/// One change, by keyed digests of its tenant and data subject.
#[derive(Debug, Clone, Copy)]
struct Change {
    tenant: u64,
    /// `None`: the tenant's own configuration changed.
    subject: Option<u64>,
    revision: u64,
}

/// The last [`REMEMBERED`] changes, and the revision before which nothing
/// is known.
#[derive(Debug)]
pub struct RecentChanges {
    changes: VecDeque<Change>,
    /// Answers read before this revision cannot be told current.
    floor: u64,
    /// The last revision recorded or flushed to.
    last: u64,
    hasher: RandomState,
}

impl Default for RecentChanges {
    fn default() -> Self {
        Self::new()
    }
}

impl RecentChanges {
    pub fn new() -> Self {
        RecentChanges {
            changes: VecDeque::new(),
            floor: 0,
            last: 0,
            hasher: RandomState::new(),
        }
    }

    /// The keyed digest of a tenant or data subject id.
    pub fn digest(&self, tenant: &str, subject: &str) -> (u64, Option<u64>) {
        let tenant_digest = self.hasher.hash_one(tenant);
        let subject_digest = (!subject.is_empty()).then(|| self.hasher.hash_one((tenant, subject)));
        (tenant_digest, subject_digest)
    }

    /// The last revision recorded or flushed to.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Remembers that `(tenant, subject)` changed at `revision`; the
    /// oldest change is forgotten past [`REMEMBERED`], and with it what
    /// can be told about answers read before it.
    pub fn record(&mut self, tenant: &str, subject: &str, revision: u64) {
        let (tenant, subject) = self.digest(tenant, subject);
        if self.changes.len() >= REMEMBERED {
            if let Some(gone) = self.changes.pop_front() {
                self.floor = self.floor.max(gone.revision);
            }
        }
        // Kept in revision order, which `unchanged_since` relies on: a
        // change recorded late (a writer's, after the follower brought
        // a later one) goes to its place, not to the back.
        let at = self
            .changes
            .iter()
            .rposition(|c| c.revision <= revision)
            .map_or(0, |i| i + 1);
        self.changes.insert(
            at,
            Change {
                tenant,
                subject,
                revision,
            },
        );
        self.last = self.last.max(revision);
    }

    /// Everything may have changed up to `revision` (a gap, a new watch):
    /// nothing read before it can be told current.
    pub fn flush(&mut self, revision: u64) {
        self.changes.clear();
        self.floor = self.floor.max(revision);
        self.last = self.last.max(revision);
    }

    /// Whether choices of `(tenant, subject)` read at `revision` are known
    /// current: read at or after the floor, and changed by nothing
    /// remembered since. With `tenant_wide`, a change of the tenant's own
    /// configuration counts too (a decision reads both; a cache of one
    /// subject's choices reads only the subject's).
    pub fn unchanged_since(
        &self,
        tenant: &str,
        subject: &str,
        revision: u64,
        tenant_wide: bool,
    ) -> bool {
        if revision < self.floor {
            return false;
        }
        let (tenant, subject) = self.digest(tenant, subject);
        !self
            .changes
            .iter()
            .rev()
            .take_while(|c| c.revision > revision)
            .any(|c| {
                c.tenant == tenant && (c.subject == subject || (tenant_wide && c.subject.is_none()))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_after_the_read_makes_it_unknown() {
        let mut recent = RecentChanges::new();
        recent.record("acme", "u-1", 5);
        assert!(recent.unchanged_since("acme", "u-1", 5, true));
        assert!(!recent.unchanged_since("acme", "u-1", 4, true));
        assert!(recent.unchanged_since("acme", "u-2", 4, true));
        assert!(recent.unchanged_since("other", "u-1", 4, true));
    }

    #[test]
    fn a_change_recorded_late_still_makes_reads_before_it_unknown() {
        let mut recent = RecentChanges::new();
        // u-1's change at 11 is recorded before u-2's at 10.
        recent.record("acme", "u-1", 11);
        recent.record("acme", "u-2", 10);
        assert!(!recent.unchanged_since("acme", "u-1", 10, true));
        assert!(!recent.unchanged_since("acme", "u-2", 9, true));
        assert!(recent.unchanged_since("acme", "u-1", 11, true));
    }

    #[test]
    fn the_tenant_s_own_change_touches_every_subject_when_tenant_wide() {
        let mut recent = RecentChanges::new();
        recent.record("acme", "", 7);
        assert!(!recent.unchanged_since("acme", "u-1", 6, true));
        assert!(recent.unchanged_since("acme", "u-1", 6, false));
        assert!(!recent.unchanged_since("acme", "", 6, false));
    }

    #[test]
    fn what_is_forgotten_or_flushed_is_unknown() {
        let mut recent = RecentChanges::new();
        for revision in 1..=(REMEMBERED as u64 + 10) {
            recent.record("acme", "busy", revision);
        }
        assert!(!recent.unchanged_since("acme", "quiet", 5, true));
        assert!(recent.unchanged_since("acme", "quiet", 20, true));
        recent.flush(9000);
        assert!(!recent.unchanged_since("acme", "quiet", 8999, true));
        assert!(recent.unchanged_since("acme", "quiet", 9000, true));
        assert_eq!(recent.last(), 9000);
    }
}

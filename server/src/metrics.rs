//! Prometheus metrics of the decision server, served as text on
//! `--metrics-listen` at `/metrics`.
//!
//! Counters are created up front and handed to the parts that bump them, so
//! the request path does one atomic add (and one histogram observation), no
//! label lookup and no allocation.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::engine::{Decision, Policy};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabel {
    decision: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    name: String,
    revision: String,
}

/// Every metric of the server. Cheap to clone: all parts are shared.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Indexed like [`Decision::ALL`].
    decisions: [Counter; 4],
    check_seconds: Histogram,
    batch_size: Histogram,
    pub reloads_succeeded: Counter,
    pub reloads_failed: Counter,
    pub decision_log_dropped: Counter,
    pub decision_log_write_errors: Counter,
    pub spans_dropped: Counter,
    pub tls_handshake_failures: Counter,
    policy: Family<PolicyLabels, Gauge>,
    connections_refused: Family<ListenerLabel, Counter>,
    pub watchers_refused: Counter,
    /// Permits asked for a purpose context that carry none, by why.
    pub purpose_contexts_not_issued: Family<ReasonLabel, Counter>,
    /// Decisions made without the choices they needed: the store did not
    /// answer within a second.
    choices_unread: Counter,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("purposegate");
        let by_decision: Family<DecisionLabel, Counter> = Family::default();
        let decisions = Decision::ALL.map(|d| {
            by_decision
                .get_or_create(&DecisionLabel {
                    decision: d.as_str(),
                })
                .clone()
        });
        registry.register(
            "decisions",
            "Decisions made, by decision value",
            by_decision,
        );
        // 10 µs to about 0.65 s.
        let check_seconds = Histogram::new(exponential_buckets(0.000_01, 2.0, 17));
        registry.register(
            "check_duration_seconds",
            "Time to answer a Check or CheckBatch call, from receipt to answer",
            check_seconds.clone(),
        );
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "check_batch_size",
            "Requests per CheckBatch call",
            batch_size.clone(),
        );
        let reloads: Family<ResultLabel, Counter> = Family::default();
        let reloads_succeeded = reloads
            .get_or_create(&ResultLabel { result: "success" })
            .clone();
        let reloads_failed = reloads
            .get_or_create(&ResultLabel { result: "failure" })
            .clone();
        registry.register("policy_reloads", "Policy reloads, by result", reloads);
        let decision_log_dropped = Counter::default();
        registry.register(
            "decision_log_dropped",
            "Decision-log lines dropped because the queue was full",
            decision_log_dropped.clone(),
        );
        let decision_log_write_errors = Counter::default();
        registry.register(
            "decision_log_write_errors",
            "Decision-log lines that could not be written",
            decision_log_write_errors.clone(),
        );
        let spans_dropped = Counter::default();
        registry.register(
            "spans_dropped",
            "Trace spans dropped because the export queue was full",
            spans_dropped.clone(),
        );
        let tls_handshake_failures = Counter::default();
        registry.register(
            "tls_handshake_failures",
            "Connections to the gRPC port that never completed a TLS handshake (plaintext, no or an untrusted certificate, a stall)",
            tls_handshake_failures.clone(),
        );
        let policy: Family<PolicyLabels, Gauge> = Family::default();
        registry.register(
            "policy_info",
            "The serving policy: 1 for its name and revision",
            policy.clone(),
        );
        let connections_refused: Family<ListenerLabel, Counter> = Family::default();
        registry.register(
            "connections_refused",
            "Connections closed at once because a listener or its peer was at its connection cap",
            connections_refused.clone(),
        );
        let watchers_refused = Counter::default();
        registry.register(
            "policy_watchers_refused",
            "WatchPolicy calls refused because --max-watchers were open",
            watchers_refused.clone(),
        );
        let purpose_contexts_not_issued: Family<ReasonLabel, Counter> = Family::default();
        registry.register(
            "purpose_contexts_not_issued",
            "Permits asked for a purpose context that carry none, by why: not-an-issuer (the caller is not among --purpose-context-issuers), no-key (no signing key, or its file cannot be read), too-long (the subject does not fit a baggage member)",
            purpose_contexts_not_issued.clone(),
        );
        let choices_unread = Counter::default();
        registry.register(
            "choices_unread",
            "Decisions made without the choices they needed, because the choices store did not answer within a second (INDETERMINATE where they were needed)",
            choices_unread.clone(),
        );
        registry.register(
            "log_lines_dropped",
            "Log lines dropped because stderr could not take them fast enough",
            purposegate_runtime::log::dropped_lines(),
        );
        Metrics {
            choices_unread,
            connections_refused,
            watchers_refused,
            purpose_contexts_not_issued,
            registry: Arc::new(registry),
            decisions,
            check_seconds,
            batch_size,
            reloads_succeeded,
            reloads_failed,
            decision_log_dropped,
            decision_log_write_errors,
            spans_dropped,
            tls_handshake_failures,
            policy,
        }
    }

    pub fn decided(&self, decision: Decision) {
        if let Some(i) = Decision::ALL.iter().position(|d| *d == decision) {
            if let Some(counter) = self.decisions.get(i) {
                counter.inc();
            }
        }
    }

    pub fn choices_unread(&self) {
        self.choices_unread.inc();
    }

    pub fn answered(&self, took: Duration) {
        self.check_seconds.observe(took.as_secs_f64());
    }

    pub fn batch(&self, size: usize) {
        self.batch_size.observe(size as f64);
    }

    /// Marks `policy` as the serving one.
    pub fn serving(&self, policy: &Policy) {
        self.policy.clear();
        self.policy
            .get_or_create(&PolicyLabels {
                name: policy.name().to_string(),
                revision: policy.revision().to_string(),
            })
            .set(1);
    }

    /// The counter of connections `listener` closed at a cap.
    pub fn connections_refused(&self, listener: &'static str) -> Counter {
        self.connections_refused
            .get_or_create(&ListenerLabel { listener })
            .clone()
    }

    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    /// Keeps `policy_info` on the serving revision.
    pub fn follow(&self, mut policies: watch::Receiver<Arc<Policy>>) {
        let metrics = self.clone();
        tokio::spawn(async move {
            loop {
                let policy = policies.borrow_and_update().clone();
                metrics.serving(&policy);
                if policies.changed().await.is_err() {
                    return;
                }
            }
        });
    }
}

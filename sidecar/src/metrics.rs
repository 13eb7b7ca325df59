//! The sidecar's Prometheus metrics, served on `--metrics-listen`.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Counters of the decision cache.
#[derive(Debug, Clone, Default)]
pub struct CacheMetrics {
    pub hits: Counter,
    pub misses: Counter,
    pub stale: Counter,
    pub coalesced: Counter,
    pub evictions: Counter,
    pub pdp_errors: Counter,
    /// Decisions held now.
    pub entries: Gauge,
    /// Bytes they take, as the cache counts them.
    pub bytes: Gauge,
}

/// Every metric of the sidecar.
#[derive(Debug, Clone)]
pub struct SidecarMetrics {
    pub registry: Arc<Registry>,
    pub cache: CacheMetrics,
    /// Counters of the cache of `PermittedPurposes` answers.
    pub purposes_cache: CacheMetrics,
    /// Spans a full export queue turned away.
    pub spans_dropped: Counter,
    /// Callers of the proxy that never completed a TLS handshake.
    pub tls_handshake_failures: Counter,
    /// Connections closed at a listener's cap, by listener.
    connections_refused: Family<Vec<(String, String)>, Counter>,
    /// Purpose contexts inherited, refused and missing.
    pub contexts: crate::inherit::ContextMetrics,
}

impl SidecarMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("purposegate_sidecar");
        let cache = CacheMetrics::default();
        register_cache(&mut registry, "cache", "Decisions", &cache);
        registry.register(
            "pdp_errors",
            "PDP calls that failed or timed out",
            cache.pdp_errors.clone(),
        );
        // The answers of PermittedPurposes have a cache of their own; a PDP
        // error counts once, whichever question failed.
        let purposes_cache = CacheMetrics {
            pdp_errors: cache.pdp_errors.clone(),
            ..CacheMetrics::default()
        };
        register_cache(
            &mut registry,
            "purposes_cache",
            "Answers of PermittedPurposes",
            &purposes_cache,
        );
        let spans_dropped = Counter::default();
        registry.register(
            "spans_dropped",
            "Decision spans dropped because the export queue was full",
            spans_dropped.clone(),
        );
        let tls_handshake_failures = Counter::default();
        registry.register(
            "tls_handshake_failures",
            "Connections to the proxy that never completed a TLS handshake (plaintext, no or an untrusted certificate, a stall)",
            tls_handshake_failures.clone(),
        );
        let connections_refused = Family::<Vec<(String, String)>, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections closed at once because a listener or its peer was at its connection cap",
            connections_refused.clone(),
        );
        registry.register(
            "log_lines_dropped",
            "Log lines dropped because stderr could not take them fast enough",
            purposegate_runtime::log::dropped_lines(),
        );
        let contexts = crate::inherit::ContextMetrics::default();
        registry.register(
            "purpose_contexts_inherited",
            "Calls that carried a valid purpose context (their purpose the ceiling)",
            contexts.inherited.clone(),
        );
        registry.register(
            "purpose_contexts_refused",
            "Purpose contexts refused, by reason (forged, expired, unparsable, unknown-key)",
            contexts.refused.clone(),
        );
        registry.register(
            "purpose_contexts_missing",
            "Calls denied because they carried no purpose context where one is required",
            contexts.missing.clone(),
        );
        registry.register(
            "baggage_members_dropped",
            "Members of callers' baggage dropped to keep it within the W3C limits (8,192 bytes, 180 members, 4,096 bytes a member), so the purpose context survives every propagator",
            contexts.baggage_trimmed.clone(),
        );
        SidecarMetrics {
            contexts,
            registry: Arc::new(registry),
            cache,
            purposes_cache,
            spans_dropped,
            tls_handshake_failures,
            connections_refused,
        }
    }
}

/// Registers the counters and gauges of one cache as `{prefix}_hits`, ...;
/// `what` names what it holds, for the help texts.
fn register_cache(registry: &mut Registry, prefix: &str, what: &str, cache: &CacheMetrics) {
    for (name, help, counter) in [
        ("hits", format!("{what} served from the cache"), &cache.hits),
        (
            "misses",
            format!("{what} not in the cache (asked of the PDP or coalesced)"),
            &cache.misses,
        ),
        (
            "stale_serves",
            format!(
                "Expired {} served because the PDP could not be reached",
                what.to_lowercase()
            ),
            &cache.stale,
        ),
        (
            "coalesced_waits",
            "Misses that waited for an identical request's PDP call".to_string(),
            &cache.coalesced,
        ),
        (
            "evictions",
            format!(
                "{what} evicted to keep the cache within --cache-max-entries and --cache-max-bytes"
            ),
            &cache.evictions,
        ),
    ] {
        registry.register(format!("{prefix}_{name}"), help, counter.clone());
    }
    registry.register(
        format!("{prefix}_entries"),
        format!("{what} held in the cache"),
        cache.entries.clone(),
    );
    registry.register(
        format!("{prefix}_bytes"),
        format!(
            "Bytes the cached {} take, as the cache counts them (bounded by --cache-max-bytes)",
            what.to_lowercase()
        ),
        cache.bytes.clone(),
    );
}

impl SidecarMetrics {
    /// The counter of connections `listener` closed at a cap.
    pub fn connections_refused(&self, listener: &str) -> Counter {
        self.connections_refused
            .get_or_create(&vec![("listener".to_string(), listener.to_string())])
            .clone()
    }
}

impl Default for SidecarMetrics {
    fn default() -> Self {
        Self::new()
    }
}

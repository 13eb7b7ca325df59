//! The purpose a call inherits: the signed purpose context in its W3C
//! `baggage` (entry `purposegate`), verified with the keys the decision
//! server publishes (followed through `WatchPolicy`, so no call is made).
//! A valid context's purpose is the call's ceiling: the question carries
//! it as `inherited_purpose` and the PDP denies anything wider. A forged,
//! expired, unreadable or unknown-key context is refused and counted; a
//! call with none is judged as ever, unless a purpose context is required
//! (`--require-purpose-context`, or `requirePurposeContext` on its route).

use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use purposegate_proto::context::{self, Claims, Keys, Refused};
use purposegate_proto::v1 as pb;

/// The label of a refused context.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// Counters of purpose contexts.
#[derive(Debug, Clone, Default)]
pub struct ContextMetrics {
    /// Calls that carried a valid context.
    pub inherited: Counter,
    /// Contexts refused, by why.
    pub refused: Family<ReasonLabel, Counter>,
    /// Calls without one where one is required.
    pub missing: Counter,
}

#[derive(Debug)]
pub struct Inheritance {
    keys: ArcSwap<Keys>,
    /// `--require-purpose-context`.
    pub require: bool,
    metrics: ContextMetrics,
}

impl Inheritance {
    pub fn new(require: bool, metrics: ContextMetrics) -> Self {
        Inheritance {
            keys: ArcSwap::from_pointee(Keys::default()),
            require,
            metrics,
        }
    }

    /// The keys the server published (`GetPolicy`, `WatchPolicy`).
    pub fn set_keys(&self, published: &[pb::PurposeContextKey]) {
        self.keys
            .store(std::sync::Arc::new(Keys::from_published(published)));
    }

    /// The verified context of a call whose `baggage` header values are
    /// `baggage`; `None` when it carries none; the reason when it is
    /// refused.
    pub fn read(&self, baggage: &[&str]) -> Result<Option<Claims>, String> {
        let entries = context::baggage_entries(baggage.iter().copied());
        let token = match entries.as_slice() {
            [] => return Ok(None),
            [one] => *one,
            _ => {
                self.count(Refused::Unparsable);
                return Err(
                    "the baggage entry `purposegate` is given more than once; it is refused"
                        .to_string(),
                );
            }
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        match self.keys.load().verify(token, now) {
            Ok(claims) => {
                self.metrics.inherited.inc();
                Ok(Some(claims))
            }
            Err(refused) => {
                self.count(refused);
                Err(format!("{}; the call is denied", refused.describe()))
            }
        }
    }

    /// A call with no context on a route (or a sidecar) that requires one.
    pub fn missing(&self) -> String {
        self.metrics.missing.inc();
        "the call carries no purpose context (baggage `purposegate`); this service is reached \
         only downstream of a permitted call"
            .to_string()
    }

    fn count(&self, refused: Refused) {
        self.metrics
            .refused
            .get_or_create(&ReasonLabel {
                reason: refused.as_str(),
            })
            .inc();
    }
}

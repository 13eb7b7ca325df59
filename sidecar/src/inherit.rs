//! The purpose a call inherits: the signed purpose context in its W3C
//! `baggage` (entry `purposegate`), verified with the keys the decision
//! server publishes (followed through `WatchPolicy`, so no call is made).
//! A valid context's purpose is the call's ceiling: the question carries
//! it as `inherited_purpose` and the PDP denies anything wider. A forged,
//! expired, unreadable or unknown-key context is refused and counted; a
//! call with none is judged as ever, unless a purpose context is required
//! (`--require-purpose-context`, or `requirePurposeContext` on its route).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// Members of callers' baggage dropped to keep it within the W3C
    /// limits (so the context survives every propagator).
    pub baggage_trimmed: Counter,
}

/// Bytes of verified tokens remembered; past it, they are forgotten at
/// once (and verified again as they come).
const VERIFIED_BYTES: usize = 1024 * 1024;

#[derive(Debug)]
pub struct Inheritance {
    keys: ArcSwap<Keys>,
    /// Tokens whose signature held, with their claims: a context seen
    /// again costs a lookup, not a signature check. Cleared when the keys
    /// change; expiry is checked on every use.
    verified: dashmap::DashMap<Box<str>, Arc<Claims>>,
    verified_bytes: AtomicUsize,
    /// `--require-purpose-context`.
    pub require: bool,
    /// `--purpose-context-from`: the issuers (the PEPs a context names,
    /// `i`) whose contexts this service accepts; empty: any the server
    /// signed for.
    from: Vec<String>,
    metrics: ContextMetrics,
}

impl Inheritance {
    pub fn new(require: bool, metrics: ContextMetrics) -> Self {
        Inheritance {
            keys: ArcSwap::from_pointee(Keys::default()),
            verified: dashmap::DashMap::new(),
            verified_bytes: AtomicUsize::new(0),
            require,
            from: Vec::new(),
            metrics,
        }
    }

    /// Accepts only contexts issued to a PEP matching one of `globs`
    /// (`--purpose-context-from`; empty: any).
    pub fn from_issuers(mut self, globs: &[String]) -> Self {
        self.from = globs
            .iter()
            .map(|g| g.trim().to_string())
            .filter(|g| !g.is_empty())
            .collect();
        self
    }

    /// The verified `claims`, unless their issuer is not one this service
    /// accepts contexts from.
    fn accepted(&self, claims: Arc<Claims>) -> Result<Option<Arc<Claims>>, String> {
        if self.from.is_empty()
            || self
                .from
                .iter()
                .any(|glob| purposegate_engine::glob(glob, &claims.issuer))
        {
            self.metrics.inherited.inc();
            return Ok(Some(claims));
        }
        self.metrics
            .refused
            .get_or_create(&ReasonLabel { reason: "issuer" })
            .inc();
        Err(format!(
            "the purpose context (baggage `purposegate`) was issued to `{}`, not to a PEP this service takes contexts from (--purpose-context-from); the call is denied",
            claims.issuer
        ))
    }

    /// The keys the server published (`GetPolicy`, `WatchPolicy`).
    pub fn set_keys(&self, published: &[pb::PurposeContextKey]) {
        self.keys.store(Arc::new(Keys::from_published(published)));
        // A key no longer published verifies nothing remembered either.
        self.verified.clear();
        self.verified_bytes.store(0, Ordering::Relaxed);
    }

    /// The verified context of a call whose `baggage` header values are
    /// `baggage`; `None` when it carries none; the reason when it is
    /// refused.
    pub fn read(&self, baggage: &[&str]) -> Result<Option<Arc<Claims>>, String> {
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
        if let Some(claims) = self.verified.get(token).map(|c| c.clone()) {
            if claims.expires >= now {
                return self.accepted(claims);
            }
            self.verified.remove(token);
        }
        match self.keys.load().verify(token, now) {
            Ok(claims) => {
                let claims = Arc::new(claims);
                self.remember(token, &claims);
                self.accepted(claims)
            }
            Err(refused) => {
                self.count(refused);
                Err(format!("{}; the call is denied", refused.describe()))
            }
        }
    }

    fn remember(&self, token: &str, claims: &Arc<Claims>) {
        let size = 2 * token.len() + 256;
        if self.verified_bytes.fetch_add(size, Ordering::Relaxed) + size > VERIFIED_BYTES {
            self.verified.clear();
            self.verified_bytes.store(size, Ordering::Relaxed);
        }
        self.verified.insert(token.into(), claims.clone());
    }

    /// `members` of a caller's baggage were dropped for the limits.
    pub fn trimmed(&self, members: usize) {
        if members > 0 {
            self.metrics
                .baggage_trimmed
                .inc_by(u64::try_from(members).unwrap_or(u64::MAX));
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

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    #[test]
    fn a_verified_context_is_remembered_until_the_keys_change() {
        let key = Ed25519KeyPair::from_seed_unchecked(&[7; 32]).unwrap();
        let published = [pb::PurposeContextKey {
            key_id: "k".into(),
            public_key: key.public_key().as_ref().to_vec(),
        }];
        let inheritance = Inheritance::new(false, ContextMetrics::default());
        let claims = Claims {
            key_id: "k".into(),
            purpose: "provide".into(),
            category: "customer-data".into(),
            subject: "crm".into(),
            revision: "r".into(),
            expires: u64::MAX,
            issuer: String::new(),
        };
        let token = context::encode(&claims, |m| key.sign(m).as_ref().to_vec());
        let baggage = format!("purposegate={token}");
        // No keys yet: refused.
        assert!(inheritance.read(&[&baggage]).is_err());
        inheritance.set_keys(&published);
        let read = inheritance.read(&[&baggage]).unwrap().unwrap();
        assert_eq!(read.purpose, "provide");
        assert_eq!(inheritance.verified.len(), 1);
        assert_eq!(inheritance.metrics.inherited.get(), 1);
        // Seen again: from memory, the same claims.
        assert_eq!(inheritance.read(&[&baggage]).unwrap().unwrap(), read);
        // The keys change: forgotten, and refused under keys that lack it.
        inheritance.set_keys(&[]);
        assert!(inheritance.verified.is_empty());
        assert!(inheritance.read(&[&baggage]).is_err());
        // None in the baggage: none inherited.
        assert_eq!(inheritance.read(&["userid=alice"]).unwrap(), None);
        // Only from the PEPs this service takes contexts from.
        let picky = Inheritance::new(false, ContextMetrics::default())
            .from_issuers(&["spiffe://shop/ns/a/sa/*".to_string()]);
        picky.set_keys(&published);
        let refused = picky.read(&[&baggage]).unwrap_err();
        assert!(refused.contains("--purpose-context-from"), "{refused}");
        let mut from_a = claims.clone();
        from_a.issuer = "spiffe://shop/ns/a/sa/sidecar".into();
        let token = context::encode(&from_a, |m| key.sign(m).as_ref().to_vec());
        assert!(
            picky
                .read(&[&format!("purposegate={token}")])
                .unwrap()
                .is_some()
        );
    }
}

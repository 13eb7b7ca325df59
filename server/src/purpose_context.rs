//! Purpose contexts on the server: the key that signs them
//! (`--purpose-signing-key`, Ed25519 PKCS#8 PEM), followed on disk so a
//! rotation needs no restart; who may obtain them
//! (`--purpose-context-issuers`, the PEPs' mTLS identities); and the public
//! keys published through `GetPolicy` and `WatchPolicy`.
//!
//! - A context is signed on a `PERMIT` asked with `issue_purpose_context`
//!   by a caller among the issuers; it names that caller (`i`). Otherwise
//!   the permit carries none, counted by why
//!   (`purposegate_purpose_contexts_not_issued_total{reason}`).
//! - The answer's `ttl_seconds` is held to the context's life, so a PEP
//!   never caches an expired one.
//! - A replaced key stays published until the last context it signed has
//!   expired (`--purpose-context-ttl` and a second after it was replaced),
//!   then is dropped; a key file removed or unreadable stops signing at
//!   once (logged, counted) and its key is dropped the same way.
//!
//! The token's format is `purposegate_proto::context`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use purposegate_proto::context::{self, Claims};
use purposegate_proto::v1 as pb;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::metrics::ReasonLabel;
use crate::signing::Signer;

/// How often the key file is looked at.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Who may obtain purpose contexts: globs over the mTLS identities of the
/// callers (their certificate's one SPIFFE ID, its DNS names that are
/// plain host names), `*` for anyone, plaintext callers included. In a glob,
/// `*` and `?` stay inside one `/`-separated segment.
#[derive(Debug, Clone, Default)]
pub struct Issuers {
    globs: Vec<String>,
}

impl Issuers {
    pub fn new(globs: &[String]) -> Self {
        Issuers {
            globs: globs
                .iter()
                .map(|g| g.trim().to_string())
                .filter(|g| !g.is_empty())
                .collect(),
        }
    }

    /// Whether anyone may obtain contexts (`*`).
    pub fn anyone(&self) -> bool {
        self.globs.iter().any(|g| g == "*")
    }

    pub fn is_empty(&self) -> bool {
        self.globs.is_empty()
    }

    /// The caller's name that makes it an issuer; `None` when it is none.
    /// With `*`, its first name (empty for a plaintext caller).
    pub fn issuer<'n>(&self, names: &'n [String]) -> Option<&'n str> {
        if self.anyone() {
            return Some(names.first().map_or("", String::as_str));
        }
        names
            .iter()
            .find(|name| self.globs.iter().any(|glob| segment_glob(glob, name)))
            .map(String::as_str)
    }
}

/// A glob whose `*` and `?` stay inside one `/`-separated segment, so
/// `spiffe://td/ns/*/sa/pep` is not also `spiffe://td/ns/a/sa/b/sa/pep`.
fn segment_glob(glob: &str, name: &str) -> bool {
    let mut globs = glob.split('/');
    let mut parts = name.split('/');
    loop {
        match (globs.next(), parts.next()) {
            (None, None) => return true,
            (Some(g), Some(p)) if purposegate_engine::glob(g, p) => {}
            _ => return false,
        }
    }
}

/// A published key, and when it goes (for a key replaced or lost: when
/// the last context it signed has expired).
#[derive(Debug, Clone)]
struct Published {
    key: pb::PurposeContextKey,
    until: Option<Instant>,
}

#[derive(Debug, Default)]
struct KeySet {
    signer: Option<Arc<Signer>>,
    /// What the key file held when `signer` was read from it.
    pem: Vec<u8>,
    /// The newest first.
    published: Vec<Published>,
}

/// The signing key, the published keys (swapped whole on a change) and
/// the issuers.
#[derive(Debug)]
pub struct PurposeKeys {
    keys: ArcSwap<KeySet>,
    /// How long a context is valid after it is issued.
    ttl: Duration,
    issuers: Issuers,
    not_issued: Family<ReasonLabel, Counter>,
    /// Bumped whenever the published keys change, for `WatchPolicy`.
    changed: watch::Sender<u64>,
}

impl PurposeKeys {
    /// No key: no context is issued, none is published.
    pub fn off(not_issued: Family<ReasonLabel, Counter>) -> Arc<Self> {
        Arc::new(PurposeKeys {
            keys: ArcSwap::from_pointee(KeySet::default()),
            ttl: Duration::ZERO,
            issuers: Issuers::default(),
            not_issued,
            changed: watch::channel(0).0,
        })
    }

    /// The keys the flags say: `path` read (an error names the file) and
    /// followed, or none; `issuers`, who may obtain contexts.
    pub fn from_flags(
        path: Option<&std::path::Path>,
        ttl: Duration,
        issuers: &[String],
        not_issued: Family<ReasonLabel, Counter>,
    ) -> Result<Arc<Self>, String> {
        let Some(path) = path else {
            return Ok(Self::off(not_issued));
        };
        let issuers = Issuers::new(issuers);
        if issuers.anyone() {
            warn!(
                "--purpose-context-issuers '*': any caller obtains purpose contexts, plaintext ones included; a context then proves nothing about who asked"
            );
        } else if issuers.is_empty() {
            warn!(
                "--purpose-signing-key without --purpose-context-issuers: no caller is known to be a PEP, so no purpose context is issued"
            );
        }
        let keys = Self::load(path, ttl, issuers, not_issued)
            .map_err(|e| format!("--purpose-signing-key: {e}"))?;
        keys.follow(path.to_path_buf());
        Ok(keys)
    }

    /// Reads the key at `path`; an error names the file.
    fn load(
        path: &std::path::Path,
        ttl: Duration,
        issuers: Issuers,
        not_issued: Family<ReasonLabel, Counter>,
    ) -> Result<Arc<Self>, String> {
        let pem =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let signer = Signer::from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))?;
        let published = vec![Published {
            key: published(&signer),
            until: None,
        }];
        info!(key_id = signer.key_id(), "signing purpose contexts");
        Ok(Arc::new(PurposeKeys {
            keys: ArcSwap::from_pointee(KeySet {
                signer: Some(Arc::new(signer)),
                pem,
                published,
            }),
            ttl,
            issuers,
            not_issued,
            changed: watch::channel(0).0,
        }))
    }

    /// The public keys to publish, the newest first.
    pub fn published(&self) -> Vec<pb::PurposeContextKey> {
        self.keys
            .load()
            .published
            .iter()
            .map(|p| p.key.clone())
            .collect()
    }

    /// Announces each change of the published keys.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn not_issued(&self, reason: &'static str) {
        self.not_issued.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Signs a context into `response` (a `PERMIT`) for the question's
    /// purpose, category and subject, if `caller` (its mTLS names) is an
    /// issuer; holds the answer's TTL to the context's.
    pub fn attach(
        &self,
        response: &mut pb::CheckResponse,
        stated: (String, String, String),
        caller: &[String],
    ) {
        let keys = self.keys.load();
        let Some(signer) = &keys.signer else {
            self.not_issued("no-key");
            return;
        };
        let Some(issuer) = self.issuers.issuer(caller) else {
            self.not_issued("not-an-issuer");
            return;
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let (purpose, category, subject) = stated;
        let claims = Claims {
            key_id: signer.key_id().to_string(),
            purpose,
            category,
            subject: bounded(subject),
            revision: response.policy_revision.clone(),
            expires: now + self.ttl.as_secs(),
            issuer: bounded(issuer.to_string()),
        };
        let token = context::encode(&claims, |m| signer.sign_raw(m));
        if token.len() > context::MAX_TOKEN_BYTES {
            // A subject too long for a baggage member: no context, and
            // the downstream hop decides on its own.
            self.not_issued("too-long");
            return;
        }
        response.purpose_context = token;
        // A second short of the context's life: its expiry counts whole
        // seconds, and a PEP starts counting when the answer arrives.
        let life = u32::try_from(self.ttl.as_secs().saturating_sub(1)).unwrap_or(u32::MAX);
        response.ttl_seconds = response.ttl_seconds.min(life);
    }

    /// How long a key replaced or lost stays published: until the last
    /// context it signed has expired.
    fn retire_at(&self) -> Instant {
        Instant::now() + self.ttl + Duration::from_secs(1)
    }

    /// Follows the key file, once a second: a changed, valid key becomes
    /// the signer and is published first, the one before it until its
    /// contexts have expired; an invalid one is logged and the current key
    /// kept; a file removed or unreadable stops signing.
    fn follow(self: &Arc<Self>, path: PathBuf) {
        let keys = self.clone();
        tokio::spawn(async move {
            let mut failed: Option<Vec<u8>> = None;
            loop {
                tokio::time::sleep(LOOK_EVERY).await;
                keys.drop_retired();
                let current = keys.keys.load_full();
                let pem = match tokio::fs::read(&path).await {
                    Ok(pem) => pem,
                    Err(e) => {
                        if current.signer.is_some() {
                            warn!(error = %e, path = %path.display(), "the purpose signing key cannot be read: no purpose context is signed until it can");
                            keys.stop_signing(&current);
                        }
                        continue;
                    }
                };
                if pem == current.pem || failed.as_ref() == Some(&pem) {
                    continue;
                }
                match Signer::from_pem(&pem) {
                    Ok(signer) => {
                        keys.rotate(&current, signer, pem);
                        failed = None;
                    }
                    Err(e) => {
                        warn!(error = %e, path = %path.display(), "the new purpose signing key is not used");
                        failed = Some(pem);
                    }
                }
            }
        });
    }

    /// `signer` signs from now on, published first; the keys before it go
    /// when their contexts have expired.
    fn rotate(&self, current: &KeySet, signer: Signer, pem: Vec<u8>) {
        let until = self.retire_at();
        let mut published = vec![Published {
            key: published(&signer),
            until: None,
        }];
        published.extend(
            current
                .published
                .iter()
                .filter(|p| p.key.key_id != signer.key_id())
                .map(|p| Published {
                    key: p.key.clone(),
                    until: Some(p.until.map_or(until, |u| u.min(until))),
                }),
        );
        info!(key_id = signer.key_id(), "purpose signing key rotated");
        self.keys.store(Arc::new(KeySet {
            signer: Some(Arc::new(signer)),
            pem,
            published,
        }));
        self.changed.send_modify(|n| *n += 1);
    }

    /// No key signs; the ones published go when their contexts have
    /// expired.
    fn stop_signing(&self, current: &KeySet) {
        let until = self.retire_at();
        self.keys.store(Arc::new(KeySet {
            signer: None,
            pem: Vec::new(),
            published: current
                .published
                .iter()
                .map(|p| Published {
                    key: p.key.clone(),
                    until: Some(p.until.map_or(until, |u| u.min(until))),
                })
                .collect(),
        }));
    }

    /// Drops the published keys whose contexts have all expired.
    fn drop_retired(&self) {
        let current = self.keys.load_full();
        let now = Instant::now();
        if !current
            .published
            .iter()
            .any(|p| p.until.is_some_and(|u| u <= now))
        {
            return;
        }
        let published: Vec<Published> = current
            .published
            .iter()
            .filter(|p| p.until.is_none_or(|u| u > now))
            .cloned()
            .collect();
        info!(
            dropped = current.published.len() - published.len(),
            "purpose signing keys whose contexts have all expired are no longer published"
        );
        self.keys.store(Arc::new(KeySet {
            signer: current.signer.clone(),
            pem: current.pem.clone(),
            published,
        }));
        self.changed.send_modify(|n| *n += 1);
    }
}

/// A name as a context writes it: itself, or past 256 bytes `sha256:` and
/// the hex of its digest (the purpose and category are ids of at most 256
/// bytes already), so no caller can make a token too long to issue.
fn bounded(name: String) -> String {
    use sha2::Digest as _;
    if name.len() <= 256 {
        return name;
    }
    let digest = sha2::Sha256::digest(name.as_bytes());
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn published(signer: &Signer) -> pb::PurposeContextKey {
    pb::PurposeContextKey {
        key_id: signer.key_id().to_string(),
        public_key: signer.public_key(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_are_written_as_their_digest() {
        assert_eq!(bounded("crm".into()), "crm");
        let long = "\\".repeat(2048);
        let written = bounded(long);
        assert!(
            written.starts_with("sha256:") && written.len() == 71,
            "{written}"
        );
    }

    #[test]
    fn issuers_are_callers_whose_names_match() {
        let issuers = Issuers::new(&[
            "spiffe://shop/ns/*/sa/sidecar".into(),
            "pep.internal".into(),
        ]);
        let sidecar = ["spiffe://shop/ns/a/sa/sidecar".to_string()];
        assert_eq!(issuers.issuer(&sidecar), Some(sidecar[0].as_str()));
        let by_dns = ["spiffe://x/other".to_string(), "pep.internal".to_string()];
        assert_eq!(issuers.issuer(&by_dns), Some("pep.internal"));
        assert_eq!(
            issuers.issuer(&["spiffe://shop/ns/a/sa/app".to_string()]),
            None
        );
        // A plaintext caller has no name: only `*` lets it be one.
        assert_eq!(issuers.issuer(&[]), None);
        assert_eq!(Issuers::new(&["*".into()]).issuer(&[]), Some(""));
        assert_eq!(Issuers::new(&[]).issuer(&sidecar), None);
    }
}

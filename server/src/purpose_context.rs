//! Purpose contexts on the server: the key that signs them
//! (`--purpose-signing-key`, Ed25519 PKCS#8 PEM), followed on disk so a
//! rotation needs no restart, and the public keys published through
//! `GetPolicy` and `WatchPolicy` (the newest first, the one before kept so
//! contexts it signed verify until they expire). A context is signed on a
//! `PERMIT` asked with `issue_purpose_context`, and the answer's
//! `ttl_seconds` is held to the context's life so a PEP never caches an
//! expired one. The token's format is `purposegate_proto::context`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use purposegate_proto::context::{self, Claims};
use purposegate_proto::v1 as pb;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::signing::Signer;

/// How often the key file is looked at.
const LOOK_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct KeySet {
    signer: Option<Arc<Signer>>,
    /// What the key file held when `signer` was read from it.
    pem: Vec<u8>,
    published: Vec<pb::PurposeContextKey>,
}

/// The signing key and the published keys, swapped whole on a rotation.
#[derive(Debug)]
pub struct PurposeKeys {
    keys: ArcSwap<KeySet>,
    /// How long a context is valid after it is issued.
    ttl: Duration,
    /// Bumped on every rotation, for `WatchPolicy` streams.
    changed: watch::Sender<u64>,
}

impl PurposeKeys {
    /// No key: no context is issued, none is published.
    pub fn off() -> Arc<Self> {
        Arc::new(PurposeKeys {
            keys: ArcSwap::from_pointee(KeySet::default()),
            ttl: Duration::ZERO,
            changed: watch::channel(0).0,
        })
    }

    /// Reads the key at `path`; an error names the file.
    pub fn load(path: &std::path::Path, ttl: Duration) -> Result<Arc<Self>, String> {
        let pem =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let signer = Signer::from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))?;
        let published = vec![published(&signer)];
        info!(key_id = signer.key_id(), "signing purpose contexts");
        Ok(Arc::new(PurposeKeys {
            keys: ArcSwap::from_pointee(KeySet {
                signer: Some(Arc::new(signer)),
                pem,
                published,
            }),
            ttl,
            changed: watch::channel(0).0,
        }))
    }

    /// The public keys to publish, the newest first.
    pub fn published(&self) -> Vec<pb::PurposeContextKey> {
        self.keys.load().published.clone()
    }

    /// Announces each rotation.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Signs a context into `response` (a `PERMIT`) for the question's
    /// purpose, category and subject, and holds its TTL to the context's.
    pub fn attach(
        &self,
        response: &mut pb::CheckResponse,
        purpose: String,
        category: String,
        subject: String,
    ) {
        let keys = self.keys.load();
        let Some(signer) = &keys.signer else { return };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = Claims {
            key_id: signer.key_id().to_string(),
            purpose,
            category,
            subject,
            revision: response.policy_revision.clone(),
            expires: now + self.ttl.as_secs(),
        };
        let token = context::encode(&claims, |m| signer.sign_raw(m));
        if token.len() > context::MAX_TOKEN_BYTES {
            // A subject too long for a baggage member: no context, and
            // the downstream hop decides on its own.
            return;
        }
        response.purpose_context = token;
        // A second short of the context's life: its expiry counts whole
        // seconds, and a PEP starts counting when the answer arrives.
        let life = u32::try_from(self.ttl.as_secs().saturating_sub(1)).unwrap_or(u32::MAX);
        response.ttl_seconds = response.ttl_seconds.min(life);
    }

    /// Follows the key file: a changed, valid key becomes the signer and
    /// is published first, the one before it second; an invalid one is
    /// logged and the current key kept.
    pub fn follow(self: &Arc<Self>, path: PathBuf) {
        let keys = self.clone();
        tokio::spawn(async move {
            let mut failed: Option<Vec<u8>> = None;
            loop {
                tokio::time::sleep(LOOK_EVERY).await;
                let Ok(pem) = tokio::fs::read(&path).await else {
                    continue;
                };
                let current = keys.keys.load_full();
                if pem == current.pem || failed.as_ref() == Some(&pem) {
                    continue;
                }
                match Signer::from_pem(&pem) {
                    Ok(signer) => {
                        let mut published = vec![published(&signer)];
                        published.extend(
                            current
                                .published
                                .first()
                                .filter(|k| k.key_id != signer.key_id())
                                .cloned(),
                        );
                        info!(key_id = signer.key_id(), "purpose signing key rotated");
                        keys.keys.store(Arc::new(KeySet {
                            signer: Some(Arc::new(signer)),
                            pem,
                            published,
                        }));
                        keys.changed.send_modify(|n| *n += 1);
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
}

fn published(signer: &Signer) -> pb::PurposeContextKey {
    pb::PurposeContextKey {
        key_id: signer.key_id().to_string(),
        public_key: signer.public_key(),
    }
}

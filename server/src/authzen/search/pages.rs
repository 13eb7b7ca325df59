//! Action search's pages: the computed answers kept per (question,
//! revision), bounded in bytes, and the page tokens, keyed with a random
//! key of this process so a token is checked before any work.
//!
//! A token is `base64url("pg2:<offset>:<limit>:<revision>:<mac>")`, the
//! MAC an HMAC-SHA256 (first 16 bytes) over the question's digest, the
//! revision, the offset and the limit. It continues only the question it
//! was given for, at the process that gave it, while the policy keeps that
//! revision: anything else is refused before the question is read.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use ring::hmac;
use ring::rand::SystemRandom;

use super::super::call::Refusal;
use crate::engine::PermittedPurposes;

/// The SHA-256 digest of a search's question (its entities).
pub(in crate::authzen) type Question = [u8; 32];

/// Bytes of computed answers kept at most.
const MAX_KEPT_BYTES: usize = 16 * 1024 * 1024;

const TOKEN_VERSION: &str = "pg2";

/// Bytes of the MAC a token carries.
const MAC_BYTES: usize = 16;

/// What a valid token continues.
#[derive(Debug, PartialEq, Eq)]
pub(in crate::authzen) struct Given {
    pub offset: usize,
    pub limit: usize,
}

/// The page tokens' key and the answers kept for paging.
#[derive(Debug)]
pub(in crate::authzen) struct Pages {
    key: hmac::Key,
    kept: Mutex<Kept>,
    max_bytes: usize,
}

/// Computed answers by (question, revision), oldest first out.
#[derive(Debug, Default)]
struct Kept {
    answers: HashMap<(Question, Arc<str>), Arc<PermittedPurposes>>,
    order: VecDeque<((Question, Arc<str>), usize)>,
    bytes: usize,
}

impl Pages {
    /// A new key from the system's random source.
    pub(in crate::authzen) fn new() -> Result<Self, String> {
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new()).map_err(|_| {
            "cannot make the key of AuthZEN's page tokens: the system's random source failed"
                .to_string()
        })?;
        Ok(Pages {
            key,
            kept: Mutex::new(Kept::default()),
            max_bytes: MAX_KEPT_BYTES,
        })
    }

    /// The answer computed before for `question` under `revision`.
    pub(in crate::authzen) fn answer(
        &self,
        question: &Question,
        revision: &Arc<str>,
    ) -> Option<Arc<PermittedPurposes>> {
        let kept = self.kept.lock().ok()?;
        kept.answers.get(&(*question, revision.clone())).cloned()
    }

    /// Keeps `answer` for `question` under its revision; answers of
    /// another revision are dropped (no token can continue them), and the
    /// oldest go while the bytes kept would pass the bound.
    pub(in crate::authzen) fn keep(&self, question: Question, answer: &Arc<PermittedPurposes>) {
        let size = bytes_of(answer);
        if size > self.max_bytes {
            return;
        }
        let Ok(mut kept) = self.kept.lock() else {
            return;
        };
        let revision = answer.policy_revision.clone();
        if kept.order.front().is_some_and(|((_, r), _)| *r != revision) {
            *kept = Kept::default();
        }
        let key = (question, revision);
        if kept.answers.contains_key(&key) {
            return;
        }
        while kept.bytes + size > self.max_bytes {
            let Some((old, bytes)) = kept.order.pop_front() else {
                break;
            };
            kept.answers.remove(&old);
            kept.bytes = kept.bytes.saturating_sub(bytes);
        }
        kept.answers.insert(key.clone(), answer.clone());
        kept.order.push_back((key, size));
        kept.bytes += size;
    }

    fn mac(&self, question: &Question, revision: &str, offset: usize, limit: usize) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(TOKEN_VERSION.as_bytes());
        ctx.update(question);
        ctx.update(&(revision.len() as u64).to_le_bytes());
        ctx.update(revision.as_bytes());
        ctx.update(&(offset as u64).to_le_bytes());
        ctx.update(&(limit as u64).to_le_bytes());
        ctx.sign()
    }

    /// A token for the page of `question` from `offset`, `limit` results
    /// long, under `revision`.
    pub(in crate::authzen) fn write_token(
        &self,
        question: &Question,
        revision: &str,
        offset: usize,
        limit: usize,
    ) -> String {
        let tag = self.mac(question, revision, offset, limit);
        let mac = tag.as_ref().get(..MAC_BYTES).unwrap_or_default();
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("{TOKEN_VERSION}:{offset}:{limit}:{revision}:{hex}"))
    }

    /// The page `token` continues, if this process gave it for `question`
    /// and the policy still has the revision it was given under.
    pub(in crate::authzen) fn read_token(
        &self,
        token: &str,
        question: &Question,
        current: &str,
    ) -> Result<Given, Refusal> {
        let foreign = || {
            Refusal::bad(
                "`page.token` is not a token this server gave out for this search: a token continues only the search it was given for (the same subject, resource and context), at the server that gave it",
            )
        };
        // A token this process writes is far shorter.
        if token.len() > 512 {
            return Err(foreign());
        }
        let text = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(foreign)?;
        let mut parts = text.split(':');
        let (Some(TOKEN_VERSION), Some(offset), Some(limit), Some(revision), Some(mac), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(foreign());
        };
        let offset: usize = offset.parse().map_err(|_| foreign())?;
        let limit: usize = limit.parse().map_err(|_| foreign())?;
        let mac = unhex(mac).ok_or_else(foreign)?;
        let want = self.mac(question, revision, offset, limit);
        let want = want.as_ref().get(..MAC_BYTES).unwrap_or_default();
        if mac.len() != MAC_BYTES || !same_bytes(&mac, want) {
            return Err(foreign());
        }
        if revision != current {
            return Err(Refusal::bad(format!(
                "`page.token` was given under policy revision {revision}, and the server now serves {current}: the answer may have changed, so ask again from the first page (without `page.token`)"
            )));
        }
        Ok(Given { offset, limit })
    }
}

/// Compares in time independent of where the bytes differ.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

/// What an answer holds in memory, roughly (ids are counted though the
/// policy shares them).
fn bytes_of(answer: &PermittedPurposes) -> usize {
    let each: usize = answer
        .purposes
        .iter()
        .map(|p| {
            96 + p.purpose.len()
                + p.rule_ids.iter().map(|r| 16 + r.len()).sum::<usize>()
                + p.obligations
                    .iter()
                    .map(|o| {
                        64 + o.id.len()
                            + o.params
                                .iter()
                                .map(|(k, v)| 48 + k.len() + v.len())
                                .sum::<usize>()
                    })
                    .sum::<usize>()
        })
        .sum();
    256 + each
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::PermittedPurpose;

    fn answer(revision: &str, n: usize) -> Arc<PermittedPurposes> {
        Arc::new(PermittedPurposes {
            purposes: (0..n)
                .map(|i| PermittedPurpose {
                    purpose: Arc::from(format!("p{i}")),
                    rule_ids: vec![Arc::from("r")],
                    obligations: Vec::new(),
                })
                .collect(),
            policy_revision: Arc::from(revision),
            ttl_seconds: 60,
            request_id: String::new(),
        })
    }

    #[test]
    fn a_token_continues_only_its_question_revision_and_process() {
        let pages = Pages::new().unwrap();
        let (q, other) = ([7u8; 32], [8u8; 32]);
        let token = pages.write_token(&q, "rev1", 2, 2);
        assert_eq!(
            pages.read_token(&token, &q, "rev1").map_err(|r| r.message),
            Ok(Given {
                offset: 2,
                limit: 2
            })
        );
        assert!(
            pages
                .read_token(&token, &other, "rev1")
                .is_err_and(|r| r.message.contains("not a token this server gave out"))
        );
        assert!(
            pages
                .read_token(&token, &q, "rev2")
                .is_err_and(|r| r.message.contains("ask again from the first page"))
        );
        let elsewhere = Pages::new().unwrap();
        assert!(elsewhere.read_token(&token, &q, "rev1").is_err());
        // Tampered: another offset with the same MAC.
        let text = String::from_utf8(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&token)
                .unwrap(),
        )
        .unwrap();
        let forged =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text.replacen(":2:", ":0:", 1));
        for bad in ["", "!!", "cGcxOjI", forged.as_str(), &"A".repeat(600)] {
            assert!(pages.read_token(bad, &q, "rev1").is_err(), "{bad}");
        }
    }

    #[test]
    fn answers_are_kept_per_revision_within_the_bound() {
        let mut pages = Pages::new().unwrap();
        pages.max_bytes = bytes_of(&answer("r1", 10)) * 2;
        pages.keep([1; 32], &answer("r1", 10));
        pages.keep([2; 32], &answer("r1", 10));
        assert!(pages.answer(&[1; 32], &Arc::from("r1")).is_some());
        pages.keep([3; 32], &answer("r1", 10));
        assert!(
            pages.answer(&[1; 32], &Arc::from("r1")).is_none(),
            "oldest out"
        );
        assert!(pages.answer(&[3; 32], &Arc::from("r1")).is_some());
        assert!(pages.answer(&[3; 32], &Arc::from("r2")).is_none());
        pages.keep([4; 32], &answer("r2", 1));
        assert!(
            pages.answer(&[2; 32], &Arc::from("r1")).is_none(),
            "revision dropped"
        );
        pages.keep([5; 32], &answer("r2", 1000));
        assert!(
            pages.answer(&[5; 32], &Arc::from("r2")).is_none(),
            "too big"
        );
        let kept = pages.kept.lock().unwrap();
        assert!(kept.bytes <= pages.max_bytes);
    }
}

//! The purpose context: a token the decision server signs on a permit and
//! a sidecar passes downstream in the W3C `baggage` entry `purposegate`,
//! so the next hop inherits the purpose as its ceiling.
//!
//! ```text
//! purposegate=v1.<payload>.<signature>
//! ```
//!
//! `payload` is base64url (no padding) of a JSON object: `k` the key id,
//! `p` the purpose, `c` the data category, `s` the subject, `r` the policy
//! revision, `e` the expiry (Unix seconds), `i` the issuer (the mTLS
//! identity of the PEP that asked for it; empty when it had none). `signature` is base64url of
//! the Ed25519 signature of the payload's bytes as written (base64url
//! text), so a verifier checks before it decodes. Both characters sets are
//! plain baggage value octets: no percent-encoding is needed.

use std::collections::HashMap;

use base64::Engine as _;
use ring::signature::{ED25519, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use crate::v1 as pb;

/// The baggage entry's key.
pub const BAGGAGE_KEY: &str = "purposegate";
/// The token's version prefix.
const VERSION: &str = "v1";
/// The longest token read: a W3C baggage list-member is at most 4,096
/// bytes.
pub const MAX_TOKEN_BYTES: usize = 4000;

/// What a purpose context states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(rename = "k")]
    pub key_id: String,
    #[serde(rename = "p")]
    pub purpose: String,
    #[serde(rename = "c")]
    pub category: String,
    #[serde(rename = "s")]
    pub subject: String,
    #[serde(rename = "r")]
    pub revision: String,
    /// Unix seconds after which the context is expired.
    #[serde(rename = "e")]
    pub expires: u64,
    /// Who asked for it: the PEP's mTLS identity, as the server saw it.
    #[serde(rename = "i", default)]
    pub issuer: String,
}

/// Why a purpose context is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not a token of this format.
    Unparsable,
    /// Signed by a key the sidecar does not know.
    UnknownKey,
    /// The signature does not hold (edited, or signed by another key).
    Forged,
    Expired,
}

impl Refused {
    /// The label of `purposegate_sidecar_purpose_contexts_refused_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Unparsable => "unparsable",
            Refused::UnknownKey => "unknown-key",
            Refused::Forged => "forged",
            Refused::Expired => "expired",
        }
    }

    /// Why, in words, for the refusal's reason.
    pub fn describe(self) -> &'static str {
        match self {
            Refused::Unparsable => "the purpose context (baggage `purposegate`) cannot be read",
            Refused::UnknownKey => {
                "the purpose context (baggage `purposegate`) is signed by a key the decision server does not publish"
            }
            Refused::Forged => {
                "the purpose context (baggage `purposegate`) does not carry a valid signature"
            }
            Refused::Expired => "the purpose context (baggage `purposegate`) has expired",
        }
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

/// Writes the token for `claims`, signed by `sign` (the raw signature of
/// the bytes it is given).
pub fn encode(claims: &Claims, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let json = serde_json::to_vec(claims).unwrap_or_default();
    let payload = b64().encode(json);
    let signature = b64().encode(sign(payload.as_bytes()));
    format!("{VERSION}.{payload}.{signature}")
}

/// The keys a verifier knows, by id.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    keys: HashMap<String, Vec<u8>>,
}

impl Keys {
    /// From what `GetPolicy` or `WatchPolicy` publishes.
    pub fn from_published(published: &[pb::PurposeContextKey]) -> Self {
        Keys {
            keys: published
                .iter()
                .filter(|k| k.public_key.len() == 32)
                .map(|k| (k.key_id.clone(), k.public_key.clone()))
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The claims of `token` if a known key signed it and it has not
    /// expired at `now` (Unix seconds).
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, Refused> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Refused::Unparsable);
        }
        let mut parts = token.split('.');
        let (Some(VERSION), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Refused::Unparsable);
        };
        let json = b64().decode(payload).map_err(|_| Refused::Unparsable)?;
        let signature = b64().decode(signature).map_err(|_| Refused::Unparsable)?;
        let claims: Claims = serde_json::from_slice(&json).map_err(|_| Refused::Unparsable)?;
        let key = self.keys.get(&claims.key_id).ok_or(Refused::UnknownKey)?;
        UnparsedPublicKey::new(&ED25519, key)
            .verify(payload.as_bytes(), &signature)
            .map_err(|_| Refused::Forged)?;
        if claims.expires < now {
            return Err(Refused::Expired);
        }
        Ok(claims)
    }
}

/// The `purposegate` entries of W3C `baggage` header values: the values
/// as written (properties after `;` dropped), or why the header cannot be
/// read. More than one entry is refused by the caller.
pub fn baggage_entries<'a>(values: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    values
        .flat_map(|v| v.split(','))
        .filter_map(|member| {
            let (key, value) = member.split_once('=')?;
            (key.trim() == BAGGAGE_KEY).then(|| value.split(';').next().unwrap_or("").trim())
        })
        .collect()
}

/// What the sidecar forwards as baggage keeps within the limits every
/// OpenTelemetry SDK applies when it reads a header, so none drops any of
/// it: 8,192 bytes in all (W3C; past it Python's drops the whole header),
/// 64 members (the Rust SDK's limit; W3C allows 180, Go's 180) and 4,096
/// bytes a member (W3C).
pub const MAX_BAGGAGE_BYTES: usize = 8192;
pub const MAX_BAGGAGE_MEMBERS: usize = 64;
pub const MAX_MEMBER_BYTES: usize = 4096;

/// Whether `b` is a `tchar` (RFC 9110): what a W3C baggage key is made of.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$&'*+-.^_`|~".contains(&b)
}

/// Whether `b` may stand in a member after its key: a W3C `baggage-octet`
/// (no space, `"`, `,`, `;` or `\` inside a value), or what separates
/// values and properties (`=`, `;`, spaces around them).
fn is_member_char(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e)
        || matches!(b, b'=' | b';' | b' ' | b'\t')
}

/// A key as some reader may take it: `+` as a space, percent-decoded,
/// trimmed of whitespace (Unicode's too), in lower case.
fn as_read(key: &str) -> String {
    let bytes = key.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = |at: usize| {
            bytes
                .get(at)
                .and_then(|c| char::from(*c).to_digit(16))
                .and_then(|d| u8::try_from(d).ok())
        };
        match (b, hex(i + 1), hex(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                decoded.push(h * 16 + l);
                i += 3;
            }
            (b'+', _, _) => {
                decoded.push(b' ');
                i += 1;
            }
            _ => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).trim().to_lowercase()
}

/// Whether a caller's baggage member goes on: a W3C member (its key a
/// token, the rest baggage octets) that no reader could take for ours (its
/// key, however decoded, does not hold `purposegate`). Anything else is
/// dropped, so nothing an SDK would re-encode, reject or read as our entry
/// reaches the app.
fn passes(member: &str) -> bool {
    let (key, rest) = member.split_once('=').unwrap_or((member, ""));
    let key = key.trim_matches([' ', '\t']);
    !key.is_empty()
        && key.bytes().all(is_token_char)
        && rest.bytes().all(is_member_char)
        && !as_read(key).contains(BAGGAGE_KEY)
}

/// The `baggage` a permitted call is forwarded with, the sidecar's own:
/// the `purposegate` entry first (`token`; none when the call carries no
/// context), then the caller's other members in order while they fit the
/// limits above (a member too long, or one past the count or the bytes, is
/// dropped); every member that is not a clean W3C member, or whose key
/// could be read as `purposegate` in any spelling, is dropped. Returns the
/// value (empty: send none) and how many of the caller's members were
/// dropped.
pub fn owned_baggage<'a>(
    values: impl Iterator<Item = &'a str>,
    token: Option<&str>,
) -> (String, usize) {
    let mut out = String::new();
    let mut members = 0;
    if let Some(token) = token {
        out.push_str(BAGGAGE_KEY);
        out.push('=');
        out.push_str(token);
        members = 1;
    }
    let mut dropped = 0;
    for member in values.flat_map(|v| v.split(',')).map(str::trim) {
        if member.is_empty() {
            continue;
        }
        let own = member
            .split_once('=')
            .is_some_and(|(key, _)| key.trim() == BAGGAGE_KEY);
        if own {
            continue;
        }
        let grown = out.len() + usize::from(!out.is_empty()) + member.len();
        if !passes(member)
            || member.len() > MAX_MEMBER_BYTES
            || members >= MAX_BAGGAGE_MEMBERS
            || grown > MAX_BAGGAGE_BYTES
        {
            dropped += 1;
            continue;
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(member);
        members += 1;
    }
    (out, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    fn pair(seed: u8) -> Ed25519KeyPair {
        Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap()
    }

    fn claims() -> Claims {
        Claims {
            key_id: "k1".into(),
            purpose: "provide".into(),
            category: "customer-data".into(),
            subject: "spiffe://cluster.local/ns/a/sa/crm".into(),
            revision: "700985de9b1f6f02".into(),
            expires: 1_000,
            issuer: "spiffe://test/sidecar".into(),
        }
    }

    fn keys(key: &Ed25519KeyPair) -> Keys {
        Keys::from_published(&[pb::PurposeContextKey {
            key_id: "k1".into(),
            public_key: key.public_key().as_ref().to_vec(),
        }])
    }

    #[test]
    fn a_signed_context_verifies_and_every_forgery_is_named() {
        let key = pair(1);
        let token = encode(&claims(), |m| key.sign(m).as_ref().to_vec());
        assert!(token.starts_with("v1."), "{token}");
        assert!(token.len() < 400, "{}", token.len());
        let keys = keys(&key);
        assert_eq!(keys.verify(&token, 999), Ok(claims()));
        assert_eq!(keys.verify(&token, 1_001), Err(Refused::Expired));
        // Another key signed it.
        let other = pair(2);
        let forged = encode(&claims(), |m| other.sign(m).as_ref().to_vec());
        assert_eq!(keys.verify(&forged, 999), Err(Refused::Forged));
        // The payload edited (a wider purpose), the signature kept.
        let parts: Vec<&str> = token.split('.').collect();
        let mut wider = claims();
        wider.purpose = "improve".into();
        let edited = format!(
            "v1.{}.{}",
            b64().encode(serde_json::to_vec(&wider).unwrap()),
            parts[2]
        );
        assert_eq!(keys.verify(&edited, 999), Err(Refused::Forged));
        let mut unknown = claims();
        unknown.key_id = "k9".into();
        let unknown = encode(&unknown, |m| key.sign(m).as_ref().to_vec());
        assert_eq!(keys.verify(&unknown, 999), Err(Refused::UnknownKey));
        for bad in [
            "",
            "v1",
            "v1.x.y",
            "v2.a.b",
            "v1.a.b.c",
            &"v1.".repeat(2000),
        ] {
            assert_eq!(keys.verify(bad, 999), Err(Refused::Unparsable), "{bad}");
        }
    }

    #[test]
    fn baggage_entries_are_found_and_ours_goes_first() {
        let values = ["userid=alice, purposegate=v1.a.b;prop=1", "other=x"];
        assert_eq!(baggage_entries(values.into_iter()), ["v1.a.b"]);
        assert_eq!(
            owned_baggage(values.into_iter(), Some("v1.c.d")),
            ("purposegate=v1.c.d,userid=alice,other=x".to_string(), 0)
        );
        assert_eq!(
            owned_baggage(std::iter::empty(), Some("t")),
            ("purposegate=t".to_string(), 0)
        );
        assert_eq!(
            owned_baggage(["a=1"].into_iter(), None),
            ("a=1".to_string(), 0)
        );
        let twice = ["purposegate=a", "purposegate=b"];
        assert_eq!(baggage_entries(twice.into_iter()).len(), 2);
    }

    #[test]
    fn look_alike_keys_go_and_stuffing_cannot_push_ours_out() {
        for alike in [
            "purposegat%65=x",
            "%70urposegate=x",
            "PurposeGate=x",
            " purposegate =x",
            "purposegate%20=x",
            "PURPOSEGATE;p=1",
            "%20%20%20%20%20%20%20%20%20%20purposegate=x",
            "%C2%A0purposegate=x",
            "purposegate+=x",
            "purposegate_v2=x",
            "a b=x",
            "quoted=\"x\"",
            "back=x\\y",
        ] {
            let (out, _) = owned_baggage([alike, "keep=1"].into_iter(), Some("t"));
            assert_eq!(out, "purposegate=t,keep=1", "{alike}");
            let (out, _) = owned_baggage([alike].into_iter(), None);
            assert_eq!(out, "", "{alike}");
        }
        // Too long in all, too many members, one member too long: ours
        // stays first and the whole stays within every limit.
        let big = format!("pad={}", "x".repeat(3000));
        let many: Vec<String> = (0..400).map(|i| format!("m{i}=v")).collect();
        let huge = format!("huge={}", "y".repeat(5000));
        let mut values: Vec<&str> = vec![big.as_str(), big.as_str(), big.as_str(), &huge];
        values.extend(many.iter().map(String::as_str));
        let (out, dropped) = owned_baggage(values.into_iter(), Some("v1.token"));
        assert!(out.starts_with("purposegate=v1.token,"), "{}", &out[..40]);
        assert!(out.len() <= MAX_BAGGAGE_BYTES, "{}", out.len());
        assert!(out.split(',').count() <= MAX_BAGGAGE_MEMBERS);
        assert!(!out.contains("huge="));
        assert!(dropped > 300, "{dropped}");
        // Members with properties and encoded values pass as they are.
        let (out, dropped) = owned_baggage(["userid=al%20ice;p=1", "n=1"].into_iter(), Some("t"));
        assert_eq!(
            (out.as_str(), dropped),
            ("purposegate=t,userid=al%20ice;p=1,n=1", 0)
        );
    }
}

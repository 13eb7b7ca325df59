//! The hash chain of the decision log.
//!
//! Every line is a JSON object that begins with its `seq` and ends with
//! its `hash`:
//!
//! ```text
//! {"seq":42, …the line's other keys…,"hash":"<64 hex digits>"}
//! ```
//!
//! `hash` is the SHA-256, in lowercase hex, of the hash of the line before
//! (its 64 hex digits; 64 zeros before the first line of a chain) followed
//! by the line's bytes with its `,"hash":"…"` member removed. Editing,
//! removing, inserting or reordering a line therefore breaks the chain at
//! that line; the writer computes it, off the request path.

use sha2::{Digest, Sha256};

/// The hash before the first line of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a sealed line ends with, before the hash's hex digits.
const HASH_KEY: &[u8] = b",\"hash\":\"";
/// Bytes a seal adds after the line's own members: the key, 64 hex digits
/// and `"}`.
pub(crate) const SEAL_BYTES: usize = HASH_KEY.len() + 64 + 2;

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The chain's position: the seq and hash of the last line written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub seq: u64,
    pub head: String,
}

impl Default for Chain {
    fn default() -> Self {
        Chain {
            seq: 0,
            head: GENESIS.to_string(),
        }
    }
}

/// The hash of a line's `body` (its bytes without the hash member) after
/// `prev`.
pub fn link(prev: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(body);
    hex(&h.finalize())
}

impl Chain {
    /// Turns a serialized JSON object (`{…}`, without `seq`) into the next
    /// line of the chain, newline included.
    pub fn seal(&mut self, object: &[u8]) -> Vec<u8> {
        let inner = object
            .strip_prefix(b"{")
            .and_then(|o| o.strip_suffix(b"}"))
            .unwrap_or_default();
        let seq = self.seq.saturating_add(1);
        let mut line = Vec::with_capacity(object.len() + 24 + SEAL_BYTES);
        line.extend_from_slice(format!("{{\"seq\":{seq}").as_bytes());
        if !inner.is_empty() {
            line.push(b',');
            line.extend_from_slice(inner);
        }
        line.push(b'}');
        let hash = link(&self.head, &line);
        line.pop();
        line.extend_from_slice(HASH_KEY);
        line.extend_from_slice(hash.as_bytes());
        line.extend_from_slice(b"\"}\n");
        self.seq = seq;
        self.head = hash;
        line
    }
}

/// A line read back: its seq, the bytes its hash covers, and its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub seq: u64,
    pub body: Vec<u8>,
    pub hash: String,
}

impl Sealed {
    /// Whether the line's hash is the link from `prev`.
    pub fn follows(&self, prev: &str) -> bool {
        link(prev, &self.body) == self.hash
    }
}

/// Reads a line (without its newline) as sealed: `{"seq":N,` first,
/// `,"hash":"<hex>"}` last. Says what is wrong otherwise.
pub fn unseal(line: &[u8]) -> Result<Sealed, &'static str> {
    let rest = line
        .strip_prefix(b"{\"seq\":")
        .ok_or("it does not begin with its `seq`")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let seq = std::str::from_utf8(rest.get(..digits).unwrap_or_default())
        .ok()
        .and_then(|d| d.parse::<u64>().ok())
        .ok_or("its `seq` is not a number")?;
    let cut = line
        .len()
        .checked_sub(SEAL_BYTES)
        .ok_or("it ends without its `hash`")?;
    let (members, seal) = line.split_at(cut);
    let hash = seal
        .strip_prefix(HASH_KEY)
        .and_then(|s| s.strip_suffix(b"\"}"))
        .filter(|h| {
            h.iter()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        })
        .ok_or("it ends without its `hash`")?;
    let mut body = members.to_vec();
    body.push(b'}');
    Ok(Sealed {
        seq,
        body,
        hash: String::from_utf8_lossy(hash).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_lines_read_back_and_chain() {
        let mut chain = Chain::default();
        let first = chain.seal(br#"{"decision":"PERMIT"}"#);
        let second = chain.seal(br#"{"decision":"DENY"}"#);
        let text = String::from_utf8(first.clone()).unwrap();
        assert!(
            text.starts_with(r#"{"seq":1,"decision":"PERMIT","hash":""#),
            "{text}"
        );
        let one = unseal(first.strip_suffix(b"\n").unwrap()).unwrap();
        let two = unseal(second.strip_suffix(b"\n").unwrap()).unwrap();
        assert_eq!((one.seq, two.seq), (1, 2));
        assert!(one.follows(GENESIS));
        assert!(two.follows(&one.hash));
        assert!(!two.follows(GENESIS));
        assert_eq!(chain.head, two.hash);
        // Valid JSON, whatever the seal.
        let v: serde_json::Value = serde_json::from_slice(&second).unwrap();
        assert_eq!(v["hash"], two.hash.as_str());
    }

    #[test]
    fn unsealed_lines_say_what_is_missing() {
        assert!(unseal(br#"{"decision":"PERMIT"}"#).is_err());
        assert!(unseal(br#"{"seq":1,"decision":"PERMIT"}"#).is_err());
        assert!(unseal(br#"{"seq":x}"#).is_err());
    }
}

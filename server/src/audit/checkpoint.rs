//! The lines the decision log writes about itself, written and read in
//! this one place: the opener that begins every run of the writer (a
//! segment) and the signed checkpoint.
//!
//! A line is exactly one kind: a decision, the answer to the reverse
//! question, a drop note, an opener or a checkpoint; a line carrying the marks of two is not one the writer
//! wrote.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::chain::Chain;
use crate::signing::{PublicKey, Signer};

/// The label every checkpoint signature begins with.
const LABEL: &str = "purposegate decision log checkpoint v2";

/// How an opener began its segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum How {
    /// A new chain (a new file, or one whose end the writer could not
    /// continue: what came before is left out).
    Started,
    /// After a restart, from the writer's own last checkpoint (with a
    /// key) or the file's last line (without).
    Continued,
    /// The first line of a file after the one before was moved away.
    Rotated,
}

/// The bytes between the line an opener continues from and the opener,
/// which the writer did not continue: a line cut short by a crash, lines
/// after its last checkpoint it cannot vouch for, or a file's content
/// before a new chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeftOut {
    pub lines: u64,
    pub bytes: u64,
    /// The SHA-256 of the lines' SHA-256s (each line with its newline).
    pub sha256: String,
    /// Whether the last of them was cut short (the writer ended it).
    pub torn: bool,
}

/// The first line of a segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opener {
    pub time: String,
    pub chain: How,
    pub prev_seq: u64,
    pub prev: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left_out: Option<LeftOut>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Opener {
    pub fn prev(&self) -> Chain {
        Chain {
            seq: self.prev_seq,
            head: self.prev.clone(),
        }
    }
}

/// What a checkpoint signs: the line before it, the segment it closes or
/// continues, who wrote the log and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed {
    /// The log's identity: replicas sharing a key cannot vouch for each
    /// other's logs.
    pub origin: String,
    /// The seq of the segment's opener: the signer wrote every line from
    /// it to `seq`.
    pub from: u64,
    pub seq: u64,
    pub head: String,
    /// Seconds within which the next checkpoint is due.
    pub every_s: u64,
    /// The writer's last line: nothing follows until it starts again.
    pub closing: bool,
    pub key_id: String,
    pub signature: String,
}

/// A checkpoint line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub time: String,
    pub checkpoint: Signed,
}

/// What the signature covers.
fn message(
    origin: &str,
    from: u64,
    before: &Chain,
    time: &str,
    every_s: u64,
    closing: bool,
) -> Vec<u8> {
    let end = if closing { "closing" } else { "open" };
    format!(
        "{LABEL}\n{origin}\n{from}\n{}\n{}\n{time}\n{every_s}\n{end}\n",
        before.seq, before.head
    )
    .into_bytes()
}

/// What a checkpoint is about, before it is signed.
#[derive(Debug, Clone)]
pub struct Draft<'a> {
    pub origin: &'a str,
    pub from: u64,
    pub before: &'a Chain,
    pub time: String,
    pub every_s: u64,
    pub closing: bool,
}

impl Checkpoint {
    pub fn sign(draft: Draft<'_>, signer: &Signer) -> Self {
        let signature = signer.sign(&message(
            draft.origin,
            draft.from,
            draft.before,
            &draft.time,
            draft.every_s,
            draft.closing,
        ));
        Checkpoint {
            time: draft.time,
            checkpoint: Signed {
                origin: draft.origin.to_string(),
                from: draft.from,
                seq: draft.before.seq,
                head: draft.before.head.clone(),
                every_s: draft.every_s,
                closing: draft.closing,
                key_id: signer.key_id().to_string(),
                signature,
            },
        }
    }

    /// Whether `key` made its signature.
    pub fn verifies(&self, key: &PublicKey) -> bool {
        let c = &self.checkpoint;
        let before = Chain {
            seq: c.seq,
            head: c.head.clone(),
        };
        c.key_id == key.key_id()
            && key.verifies(
                &message(&c.origin, c.from, &before, &self.time, c.every_s, c.closing),
                &c.signature,
            )
    }
}

/// What a line of the log is.
#[derive(Debug, Clone)]
pub enum Kind {
    Decision,
    /// The answer to the reverse question: the purposes permitted.
    Permitted,
    /// A batch's decisions (`batch.rs`).
    Batch,
    Dropped,
    Opener(Opener),
    Checkpoint(Box<Checkpoint>),
}

/// The marks that make a line a kind.
const MARKS: [&str; 6] = [
    "decision",
    "permitted",
    "batch",
    "dropped",
    "chain",
    "checkpoint",
];

/// What kind of line a parsed line is, or why it is none the writer
/// writes.
pub fn kind_of(line: &Map<String, Value>) -> Result<Kind, String> {
    let marks: Vec<&str> = MARKS
        .into_iter()
        .filter(|m| line.contains_key(*m))
        .collect();
    let strip = || {
        let mut rest = line.clone();
        rest.remove("seq");
        rest.remove("hash");
        Value::Object(rest)
    };
    match marks.as_slice() {
        ["decision"] => Ok(Kind::Decision),
        ["permitted"] => Ok(Kind::Permitted),
        ["batch"] => Ok(Kind::Batch),
        ["dropped"] => Ok(Kind::Dropped),
        ["chain"] => serde_json::from_value(strip())
            .map(Kind::Opener)
            .map_err(|e| format!("an opener the writer did not write ({e})")),
        ["checkpoint"] => serde_json::from_value(strip())
            .map(|c| Kind::Checkpoint(Box::new(c)))
            .map_err(|e| format!("a checkpoint the writer did not write ({e})")),
        [] => Err("a line of no kind the writer writes".to_string()),
        several => Err(format!(
            "a line with the marks of several kinds ({}): no line is two",
            several.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Signer {
        let pem = crate::signing::tests_support::private_pem();
        Signer::from_pem(pem.as_bytes()).unwrap()
    }

    #[test]
    fn a_checkpoint_verifies_only_as_signed() {
        let signer = key();
        let public = PublicKey::of(&signer);
        let before = Chain {
            seq: 7,
            head: "ab".into(),
        };
        let draft = Draft {
            origin: "host:/var/log/d.log",
            from: 1,
            before: &before,
            time: "2026-12-07T00:00:00.000000Z".into(),
            every_s: 60,
            closing: false,
        };
        let c = Checkpoint::sign(draft, &signer);
        assert!(c.verifies(&public));
        for change in [
            |c: &mut Checkpoint| c.checkpoint.origin = "other:/var/log/d.log".into(),
            |c: &mut Checkpoint| c.checkpoint.from = 2,
            |c: &mut Checkpoint| c.checkpoint.seq = 8,
            |c: &mut Checkpoint| c.checkpoint.closing = true,
            |c: &mut Checkpoint| c.checkpoint.every_s = 3600,
            |c: &mut Checkpoint| c.time = "2026-12-08T00:00:00.000000Z".into(),
        ] {
            let mut forged = c.clone();
            change(&mut forged);
            assert!(!forged.verifies(&public), "{forged:?}");
        }
    }

    #[test]
    fn a_line_is_one_kind() {
        let parse = |text: &str| {
            let Value::Object(map) = serde_json::from_str(text).unwrap() else {
                panic!()
            };
            kind_of(&map)
        };
        assert!(matches!(
            parse(r#"{"seq":1,"decision":"PERMIT"}"#),
            Ok(Kind::Decision)
        ));
        let opener =
            r#"{"seq":1,"time":"t","chain":"rotated","prev_seq":4,"prev":"ab","hash":"x"}"#;
        assert!(matches!(parse(opener), Ok(Kind::Opener(_))));
        let both =
            r#"{"seq":1,"time":"t","chain":"rotated","prev_seq":4,"prev":"ab","checkpoint":{}}"#;
        let err = parse(both).unwrap_err();
        assert!(err.contains("several kinds"), "{err}");
        assert!(parse(r#"{"seq":1}"#).is_err());
        assert!(
            parse(r#"{"seq":1,"time":"t","chain":"sideways","prev_seq":4,"prev":"ab"}"#).is_err()
        );
    }
}

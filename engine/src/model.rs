//! The policy model after loading: purpose and data category trees, rules
//! with their conditions, and settings. Ids are resolved to indices into
//! the trees; the written ids are kept for explanations and the revision.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use serde::Serialize;

use super::diagnostic::plural;

/// The only policy format version this engine reads.
pub const POLICY_VERSION: u64 = 1;

/// Index of a node in a [`Taxonomy`].
pub type NodeIdx = u32;

/// The hasher of tables built once from configuration (the policy's ids,
/// the sidecar's routes): fast (FxHash's multiply and rotate, eight bytes
/// at a time) rather than keyed. A caller does not write such a table;
/// its ids only look up, and a lookup cannot make a fixed table any slower
/// for others.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl IdHasher {
    const K: u64 = 0xf135_7aea_2e62_a9c5;

    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(26) ^ word).wrapping_mul(Self::K);
    }
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            if let Some(head) = word.get_mut(..rest.len()) {
                head.copy_from_slice(rest);
            }
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 56));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        // The table reads the top bits: fold the high bits down as well.
        self.0 ^ (self.0 >> 29)
    }
}

/// A tree of dotted ids: the purposes, or the data categories. Parents are
/// implied by the dots (`lbo.billing` is a child of `lbo`).
#[derive(Debug, Clone)]
pub struct Taxonomy {
    /// "purpose" or "data category", for messages.
    kind: &'static str,
    nodes: Vec<TaxonomyNode>,
    by_id: HashMap<Arc<str>, NodeIdx, BuildHasherDefault<IdHasher>>,
}

/// One purpose or data category.
#[derive(Debug, Clone, Serialize)]
pub struct TaxonomyNode {
    pub id: Arc<str>,
    pub description: String,
    #[serde(skip)]
    pub parent: Option<NodeIdx>,
    #[serde(skip)]
    pub children: Vec<NodeIdx>,
}

impl Taxonomy {
    /// Builds a tree from `(id, description)` pairs whose parents are all
    /// declared (the loader checks that first). Declaration order is kept.
    pub(crate) fn new(kind: &'static str, declared: Vec<(String, String)>) -> Self {
        let mut nodes: Vec<TaxonomyNode> = Vec::with_capacity(declared.len());
        let mut by_id: HashMap<Arc<str>, NodeIdx, BuildHasherDefault<IdHasher>> =
            HashMap::with_capacity_and_hasher(declared.len(), BuildHasherDefault::default());
        for (id, description) in declared {
            let id: Arc<str> = Arc::from(id);
            let Ok(idx) = NodeIdx::try_from(nodes.len()) else {
                break;
            };
            by_id.insert(id.clone(), idx);
            nodes.push(TaxonomyNode {
                id,
                description,
                parent: None,
                children: Vec::new(),
            });
        }
        for idx in 0..nodes.len() {
            let parent = nodes
                .get(idx)
                .and_then(|n| parent_id(&n.id))
                .and_then(|p| by_id.get(p).copied());
            if let Some(parent) = parent {
                if let Some(node) = nodes.get_mut(idx) {
                    node.parent = Some(parent);
                }
                if let (Some(p), Ok(child)) =
                    (nodes.get_mut(parent as usize), NodeIdx::try_from(idx))
                {
                    p.children.push(child);
                }
            }
        }
        Taxonomy { kind, nodes, by_id }
    }

    pub fn kind(&self) -> &'static str {
        self.kind
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn lookup(&self, id: &str) -> Option<NodeIdx> {
        self.by_id.get(id).copied()
    }

    pub fn node(&self, idx: NodeIdx) -> Option<&TaxonomyNode> {
        self.nodes.get(idx as usize)
    }

    pub fn id(&self, idx: NodeIdx) -> &str {
        self.nodes.get(idx as usize).map_or("", |n| &n.id)
    }

    pub fn nodes(&self) -> impl Iterator<Item = (NodeIdx, &TaxonomyNode)> {
        (0..).zip(self.nodes.iter())
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.nodes.iter().map(|n| &*n.id)
    }

    /// Nodes without a parent, in declaration order.
    pub fn roots(&self) -> impl Iterator<Item = NodeIdx> + '_ {
        self.nodes()
            .filter(|(_, n)| n.parent.is_none())
            .map(|(i, _)| i)
    }

    /// Every node in tree order: each root in declaration order, then its
    /// subtree, children in declaration order (depth first).
    pub fn tree_order(&self) -> Vec<NodeIdx> {
        let mut out = Vec::with_capacity(self.nodes.len());
        let mut stack: Vec<NodeIdx> = self.roots().collect();
        stack.reverse();
        while let Some(idx) = stack.pop() {
            out.push(idx);
            if let Some(node) = self.node(idx) {
                stack.extend(node.children.iter().rev());
            }
        }
        out
    }

    /// `idx` and each of its ancestors, innermost first.
    pub fn self_and_ancestors(&self, idx: NodeIdx) -> impl Iterator<Item = NodeIdx> + '_ {
        std::iter::successors(Some(idx), move |&i| self.node(i).and_then(|n| n.parent))
    }

    /// `idx` and every node below it.
    pub fn self_and_descendants(&self, idx: NodeIdx) -> Vec<NodeIdx> {
        let mut out = vec![idx];
        let mut next = 0;
        while let Some(&i) = out.get(next) {
            if let Some(node) = self.node(i) {
                out.extend_from_slice(&node.children);
            }
            next += 1;
        }
        out
    }

    /// Whether `ancestor` is `idx` or one of its ancestors.
    pub fn covers(&self, ancestor: NodeIdx, idx: NodeIdx) -> bool {
        self.self_and_ancestors(idx).any(|i| i == ancestor)
    }
}

/// The parent of a dotted id: `lbo` for `lbo.billing`, none for `lbo`.
/// Whether purpose `purpose` is within `ceiling`: the same purpose or a
/// descendant of it in the tree the dots make (`provide.personalization`
/// is within `provide`; `provide` is not within `provide.personalization`,
/// nor `provider` within `provide`). The question a purpose inherited from
/// upstream asks of the purpose a hop states.
pub fn purpose_within(purpose: &str, ceiling: &str) -> bool {
    match purpose.strip_prefix(ceiling) {
        Some("") => !ceiling.is_empty(),
        Some(rest) => rest.starts_with('.') && !ceiling.is_empty(),
        None => false,
    }
}

pub fn parent_id(id: &str) -> Option<&str> {
    id.rfind('.').map(|at| id.get(..at).unwrap_or(""))
}

/// How far data is de-identified, ordered from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Deidentification {
    Identified,
    Pseudonymized,
    UnlinkedPseudonymized,
    Anonymized,
    Aggregated,
}

impl Deidentification {
    pub const ALL: [Deidentification; 5] = [
        Deidentification::Identified,
        Deidentification::Pseudonymized,
        Deidentification::UnlinkedPseudonymized,
        Deidentification::Anonymized,
        Deidentification::Aggregated,
    ];

    /// The policy spelling: `unlinked-pseudonymized`.
    pub fn as_str(self) -> &'static str {
        match self {
            Deidentification::Identified => "identified",
            Deidentification::Pseudonymized => "pseudonymized",
            Deidentification::UnlinkedPseudonymized => "unlinked-pseudonymized",
            Deidentification::Anonymized => "anonymized",
            Deidentification::Aggregated => "aggregated",
        }
    }

    /// The API spelling: `UNLINKED_PSEUDONYMIZED`.
    pub fn api_name(self) -> &'static str {
        match self {
            Deidentification::Identified => "IDENTIFIED",
            Deidentification::Pseudonymized => "PSEUDONYMIZED",
            Deidentification::UnlinkedPseudonymized => "UNLINKED_PSEUDONYMIZED",
            Deidentification::Anonymized => "ANONYMIZED",
            Deidentification::Aggregated => "AGGREGATED",
        }
    }

    /// Accepts either spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|d| d.as_str() == s || d.api_name() == s)
    }
}

impl fmt::Display for Deidentification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Permit,
    Deny,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Permit => "permit",
            Effect::Deny => "deny",
        }
    }
}

/// `enforce` rules decide; `monitor` rules are only reported (semantic 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    Monitor,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Monitor => "monitor",
        }
    }
}

/// Something a PEP must do when acting on a permit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Obligation {
    pub id: Arc<str>,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub params: std::collections::BTreeMap<String, String>,
}

/// Policy-wide settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    /// K: the smallest group size at which aggregated data is no longer
    /// linkable to individuals.
    pub min_aggregation_group_size: u64,
    /// How long a PEP may cache a decision.
    pub decision_ttl_seconds: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            min_aggregation_group_size: 50,
            decision_ttl_seconds: 300,
        }
    }
}

/// A rule as loaded.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    pub id: Arc<str>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub effect: Effect,
    /// Purpose ids as written.
    pub purposes: Vec<Arc<str>>,
    /// Category ids as written; empty means every category.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub data_categories: Vec<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when: Option<Condition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unless: Option<Condition>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub obligations: Vec<Obligation>,
    pub mode: Mode,
    /// Resolved `purposes`.
    #[serde(skip)]
    pub purpose_idx: Vec<NodeIdx>,
    /// Resolved `data_categories`.
    #[serde(skip)]
    pub category_idx: Vec<NodeIdx>,
}

/// A de-identification test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum StateTest {
    Exactly(Deidentification),
    AtLeast(Deidentification),
}

/// Presence of the customer's documented instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    Present,
    Absent,
}

/// A condition of a rule's `when` or `unless`. A mapping with several keys
/// is loaded as [`Condition::All`] of them.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Condition {
    SameTenant(bool),
    Deidentification(StateTest),
    GroupSizeAtLeast {
        min: u64,
        /// The setting it came from, if it named one.
        #[serde(skip_serializing_if = "Option::is_none")]
        setting: Option<String>,
    },
    OriginWithin {
        categories: Vec<Arc<str>>,
        #[serde(skip)]
        category_idx: Vec<NodeIdx>,
    },
    SubjectId(Vec<String>),
    SubjectRole(Vec<String>),
    Context {
        key: String,
        values: Vec<String>,
    },
    Resource {
        key: String,
        values: Vec<String>,
    },
    CustomerInstruction(Presence),
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
}

/// Values of one list a condition in words shows; the rest are counted.
pub const LISTED_IN_WORDS: usize = 10;

impl Condition {
    /// The condition in words a privacy officer can read.
    ///
    /// A long list is shown by its first [`LISTED_IN_WORDS`] values and a
    /// count of the rest: the words stay readable, and their size bounded.
    pub fn describe(&self) -> String {
        fn list(values: &[String]) -> String {
            let mut shown: Vec<String> = values
                .iter()
                .take(LISTED_IN_WORDS)
                .map(|v| format!("`{v}`"))
                .collect();
            if values.len() > LISTED_IN_WORDS {
                shown.push(plural(values.len() - LISTED_IN_WORDS, "other", "others"));
            }
            shown.join(" or ")
        }
        match self {
            Condition::SameTenant(true) => {
                "the subject acts for the customer who owns the data".to_string()
            }
            Condition::SameTenant(false) => {
                "the subject acts for a customer other than the one who owns the data".to_string()
            }
            Condition::Deidentification(StateTest::Exactly(s)) => format!("the data is {s}"),
            Condition::Deidentification(StateTest::AtLeast(s)) => {
                format!("the data is at least {s}")
            }
            Condition::GroupSizeAtLeast { min, setting } => match setting {
                Some(name) => format!("each group holds at least {min} individuals ({name})"),
                None => format!("each group holds at least {min} individuals"),
            },
            Condition::OriginWithin { categories, .. } => {
                let mut names: Vec<String> = categories
                    .iter()
                    .take(LISTED_IN_WORDS)
                    .map(|c| format!("`{c}`"))
                    .collect();
                if categories.len() > LISTED_IN_WORDS {
                    names.push(plural(
                        categories.len() - LISTED_IN_WORDS,
                        "other",
                        "others",
                    ));
                }
                format!("the data was derived only from {}", names.join(", "))
            }
            Condition::SubjectId(ids) => format!("the subject is {}", list(ids)),
            Condition::SubjectRole(roles) => format!("the subject has role {}", list(roles)),
            Condition::Context { key, values } => {
                format!("context `{key}` is {}", list(values))
            }
            Condition::Resource { key, values } => {
                format!("data attribute `{key}` is {}", list(values))
            }
            Condition::CustomerInstruction(Presence::Present) => {
                "the customer's documented instruction is given".to_string()
            }
            Condition::CustomerInstruction(Presence::Absent) => {
                "no customer instruction is given".to_string()
            }
            Condition::All(parts) => parts
                .iter()
                .map(Condition::describe)
                .collect::<Vec<_>>()
                .join(" and "),
            Condition::Any(parts) => {
                let inner: Vec<String> = parts.iter().map(Condition::describe).collect();
                format!("either {}", inner.join(", or "))
            }
            Condition::Not(inner) => format!("not ({})", inner.describe()),
        }
    }
}

impl Rule {
    /// The rule in one sentence, e.g. "deny `advertising` on every data
    /// category unless the customer's documented instruction is given".
    pub fn describe(&self) -> String {
        let purposes: Vec<String> = self.purposes.iter().map(|p| format!("`{p}`")).collect();
        let categories = if self.data_categories.is_empty() {
            "every data category".to_string()
        } else {
            let c: Vec<String> = self
                .data_categories
                .iter()
                .map(|c| format!("`{c}`"))
                .collect();
            c.join(", ")
        };
        let mut out = format!(
            "{} {} on {}",
            self.effect.as_str(),
            purposes.join(", "),
            categories
        );
        if let Some(when) = &self.when {
            out.push_str(" when ");
            out.push_str(&when.describe());
        }
        if let Some(unless) = &self.unless {
            out.push_str(" unless ");
            out.push_str(&unless.describe());
        }
        if self.mode == Mode::Monitor {
            out.push_str(" (monitor only)");
        }
        out
    }
}

/// Who may claim which purposes (the policy's `claims` section): a subject
/// matching one of `subjects` (globs) may ask for the listed purposes and
/// their descendants.
#[derive(Debug, Clone, Serialize)]
pub struct Claim {
    pub id: Arc<str>,
    pub subjects: Vec<String>,
    pub purposes: Vec<Arc<str>>,
    #[serde(skip)]
    pub purpose_idx: Vec<NodeIdx>,
}

#[cfg(test)]
mod purpose_tests {
    use super::purpose_within;

    #[test]
    fn a_purpose_is_within_itself_and_its_ancestors_only() {
        assert!(purpose_within("provide", "provide"));
        assert!(purpose_within("provide.personalization", "provide"));
        assert!(purpose_within("a.b.c", "a"));
        assert!(!purpose_within("provide", "provide.personalization"));
        assert!(!purpose_within("improve", "provide"));
        // A shared prefix is not a parent.
        assert!(!purpose_within("provider", "provide"));
        assert!(!purpose_within("provide", ""));
        assert!(!purpose_within("", "provide"));
    }
}

//! A loaded policy, compiled into an index, with its revision.
//!
//! The index answers "which rules could apply to purpose P on category C"
//! with one AND of two bit sets, so a decision never scans rules that cannot
//! apply: for each purpose, the rules whose purposes cover it (a permit
//! covers the listed purpose and its descendants; a deny also covers the
//! listed purpose's ancestors), and for each category, the rules whose
//! categories cover it.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::choices::ChoicesPolicy;
use super::model::{Claim, Effect, Mode, NodeIdx, Rule, Settings, Taxonomy};

/// Index of a rule in policy order.
pub type RuleIdx = u32;

/// A compiled, immutable policy. Cloning it shares it (one `Arc`): a
/// decision's reason keeps the policy it was made under, to be put into
/// words when shown.
#[derive(Debug, Clone)]
pub struct Policy {
    inner: Arc<Compiled>,
}

#[derive(Debug)]
struct Compiled {
    name: Arc<str>,
    description: String,
    revision: Arc<str>,
    settings: Settings,
    purposes: Taxonomy,
    categories: Taxonomy,
    rules: Vec<Rule>,
    /// `None` when the policy has no `claims` section: any subject may
    /// claim any purpose.
    claims: Option<Vec<Claim>>,
    /// Which purposes depend on what tenants and data subjects chose.
    choices: ChoicesPolicy,
    index: RuleIndex,
    /// The purposes in tree order (`Taxonomy::tree_order`), for the
    /// reverse question.
    purpose_order: Vec<NodeIdx>,
}

/// What a policy binds purposes to besides its rules: who may claim them,
/// and which depend on choices.
#[derive(Debug, Default)]
pub(crate) struct Bindings {
    pub(crate) claims: Option<Vec<Claim>>,
    pub(crate) choices: ChoicesPolicy,
}

impl Policy {
    pub(crate) fn new(
        name: String,
        description: String,
        settings: Settings,
        purposes: Taxonomy,
        categories: Taxonomy,
        rules: Vec<Rule>,
        bindings: Bindings,
    ) -> Self {
        let revision = revision_of(
            &name,
            &description,
            &settings,
            &purposes,
            &categories,
            &rules,
            &bindings,
        );
        let Bindings { claims, choices } = bindings;
        let index = RuleIndex::build(&purposes, &categories, &rules);
        let purpose_order = purposes.tree_order();
        Policy {
            inner: Arc::new(Compiled {
                name: Arc::from(name),
                description,
                revision: Arc::from(revision),
                settings,
                purposes,
                categories,
                rules,
                claims,
                choices,
                index,
                purpose_order,
            }),
        }
    }

    pub fn name(&self) -> &Arc<str> {
        &self.inner.name
    }

    pub fn description(&self) -> &str {
        &self.inner.description
    }

    /// The content hash of the policy: equal for equal content however it
    /// is formatted, commented, ordered in its maps or split into files.
    pub fn revision(&self) -> &Arc<str> {
        &self.inner.revision
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    pub fn purposes(&self) -> &Taxonomy {
        &self.inner.purposes
    }

    pub fn categories(&self) -> &Taxonomy {
        &self.inner.categories
    }

    pub fn rules(&self) -> &[Rule] {
        &self.inner.rules
    }

    /// Who may claim which purposes, if the policy says.
    pub fn claims(&self) -> Option<&[Claim]> {
        self.inner.claims.as_deref()
    }

    /// Which purposes depend on choices (empty when the policy says
    /// nothing of them).
    pub fn choices(&self) -> &ChoicesPolicy {
        &self.inner.choices
    }

    pub fn rule(&self, idx: RuleIdx) -> Option<&Rule> {
        self.inner.rules.get(idx as usize)
    }

    pub(crate) fn has_monitor_rules(&self) -> bool {
        self.inner.index.has_monitor
    }

    /// Every purpose in tree order, worked out once per policy.
    pub(crate) fn purpose_order(&self) -> &[NodeIdx] {
        &self.inner.purpose_order
    }

    /// The class of `purpose`: purposes of one class have the same
    /// candidate rules on every category (see `RuleIndex`), and how many
    /// classes there are.
    pub(crate) fn purpose_class(&self, purpose: NodeIdx) -> (usize, usize) {
        let index = &self.inner.index;
        let class = index
            .purpose_class
            .get(purpose as usize)
            .map_or(index.classes, |&c| c as usize);
        (class, index.classes)
    }

    /// Whether rule `rule` could apply on `category` (its categories
    /// cover it, or it names none).
    pub(crate) fn rule_on_category(&self, rule: RuleIdx, category: NodeIdx) -> bool {
        let words = self.inner.index.words;
        self.inner
            .index
            .by_category
            .get(category as usize * words + rule as usize / 64)
            .is_some_and(|w| w & (1u64 << (rule % 64)) != 0)
    }

    /// Rules that could apply to `purpose` on `category`, in policy order.
    pub(crate) fn candidates(&self, purpose: NodeIdx, category: NodeIdx) -> Candidates<'_> {
        let words = self.inner.index.words;
        let start_p = purpose as usize * words;
        let start_c = category as usize * words;
        let p = self
            .inner
            .index
            .by_purpose
            .get(start_p..start_p + words)
            .unwrap_or(&[]);
        let c = self
            .inner
            .index
            .by_category
            .get(start_c..start_c + words)
            .unwrap_or(&[]);
        Candidates {
            purpose: p,
            category: c,
            word: 0,
            current: match (p.first(), c.first()) {
                (Some(a), Some(b)) => a & b,
                _ => 0,
            },
        }
    }
}

/// Iterator over the set bits of `purpose & category`.
#[derive(Debug)]
pub(crate) struct Candidates<'a> {
    purpose: &'a [u64],
    category: &'a [u64],
    word: usize,
    current: u64,
}

impl Iterator for Candidates<'_> {
    type Item = RuleIdx;

    fn next(&mut self) -> Option<RuleIdx> {
        loop {
            if self.current != 0 {
                let bit = self.current.trailing_zeros();
                self.current &= self.current - 1;
                return RuleIdx::try_from(self.word * 64 + bit as usize).ok();
            }
            self.word += 1;
            let (Some(p), Some(c)) = (self.purpose.get(self.word), self.category.get(self.word))
            else {
                return None;
            };
            self.current = p & c;
        }
    }
}

/// Bit sets of rules per purpose and per category, flattened.
#[derive(Debug, Clone)]
struct RuleIndex {
    /// u64 words per set.
    words: usize,
    by_purpose: Vec<u64>,
    by_category: Vec<u64>,
    has_monitor: bool,
    /// Purposes with the same set of candidate rules share a class: the
    /// rules decide them alike on every category, so the reverse question
    /// runs one pass per class instead of one per purpose.
    purpose_class: Vec<u32>,
    classes: usize,
}

impl RuleIndex {
    fn build(purposes: &Taxonomy, categories: &Taxonomy, rules: &[Rule]) -> Self {
        let words = rules.len().div_ceil(64).max(1);
        let mut by_purpose = vec![0u64; purposes.len() * words];
        let mut by_category = vec![0u64; categories.len() * words];
        let set = |sets: &mut Vec<u64>, node: NodeIdx, rule: usize| {
            if let Some(w) = sets.get_mut(node as usize * words + rule / 64) {
                *w |= 1u64 << (rule % 64);
            }
        };
        for (r, rule) in rules.iter().enumerate() {
            for &p in &rule.purpose_idx {
                // Semantic 1: a rule applies to its purposes' descendants.
                for q in purposes.self_and_descendants(p) {
                    set(&mut by_purpose, q, r);
                }
                // Semantic 2: a prohibition also applies to the ancestors,
                // since the broader purpose would include the prohibited one.
                if rule.effect == Effect::Deny {
                    for q in purposes.self_and_ancestors(p) {
                        set(&mut by_purpose, q, r);
                    }
                }
            }
            // Semantic 3: a rule on category C applies to C and descendants;
            // a rule without categories applies to every category.
            if rule.category_idx.is_empty() {
                for (c, _) in categories.nodes() {
                    set(&mut by_category, c, r);
                }
            } else {
                for &c in &rule.category_idx {
                    for d in categories.self_and_descendants(c) {
                        set(&mut by_category, d, r);
                    }
                }
            }
        }
        let mut seen: BTreeMap<&[u64], u32> = BTreeMap::new();
        let purpose_class: Vec<u32> = by_purpose
            .chunks(words)
            .map(|row| {
                let next = u32::try_from(seen.len()).unwrap_or(u32::MAX);
                *seen.entry(row).or_insert(next)
            })
            .collect();
        let classes = seen.len();
        RuleIndex {
            words,
            by_purpose,
            by_category,
            has_monitor: rules.iter().any(|r| r.mode == Mode::Monitor),
            purpose_class,
            classes,
        }
    }
}

/// The canonical content of a policy, hashed for its revision. Maps are
/// sorted so map order in the files does not matter; rule order does, as it
/// orders the rule ids of every answer.
#[derive(Serialize)]
struct Canonical<'a> {
    version: u64,
    name: &'a str,
    description: &'a str,
    settings: &'a Settings,
    purposes: BTreeMap<&'a str, &'a str>,
    data_categories: BTreeMap<&'a str, &'a str>,
    rules: &'a [Rule],
    #[serde(skip_serializing_if = "Option::is_none")]
    claims: Option<&'a [Claim]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    choices: Option<&'a ChoicesPolicy>,
}

fn revision_of(
    name: &str,
    description: &str,
    settings: &Settings,
    purposes: &Taxonomy,
    categories: &Taxonomy,
    rules: &[Rule],
    bindings: &Bindings,
) -> String {
    let tree = |t: &'_ Taxonomy| -> BTreeMap<String, String> {
        t.nodes()
            .map(|(_, n)| (n.id.to_string(), n.description.clone()))
            .collect()
    };
    let purposes = tree(purposes);
    let categories = tree(categories);
    let canonical = Canonical {
        version: super::model::POLICY_VERSION,
        name,
        description,
        settings,
        purposes: purposes
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
        data_categories: categories
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
        rules,
        claims: bindings.claims.as_deref(),
        choices: (!bindings.choices.is_empty()).then_some(&bindings.choices),
    };
    // Serialising plain data to a Vec cannot fail; an empty input would
    // still give a stable (if useless) hash rather than a panic.
    let bytes = serde_json::to_vec(&canonical).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    let mut hex = String::with_capacity(16);
    for byte in digest.iter().take(8) {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}
